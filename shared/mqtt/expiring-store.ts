import { Store, type MqttClient } from 'mqtt';

type Put = Parameters<Store['put']>;
type Del = Parameters<Store['del']>;

/**
 * mqtt.js's outgoing store, with each stored PUBLISH's Message Expiry Interval (MQTT 5 §3.3.2.3.3)
 * counting down while it waits for its PUBACK. mqtt.js sends what is unacknowledged again at its
 * next connection exactly as first sent: with the interval it had then, counted again from the
 * resend. A message cut off by a broker away for longer than its expiry reached the broker after
 * it, and was held there for a whole interval more. Here it goes again with what remains of its
 * interval, or not at all once that has passed: `expired` is called with its packet identifier.
 */
export class ExpiringStore extends Store {
  /** performance.now() by which each stored publish with an expiry must be sent, by packet identifier */
  private readonly deadlines = new Map<number, number>();

  constructor(private readonly expired: (messageId: number) => void) {
    super();
  }

  override put(packet: Put[0], cb: Put[1]): this {
    const interval = packet.cmd === 'publish' ? packet.properties?.messageExpiryInterval : undefined;
    if (packet.messageId !== undefined) {
      if (interval !== undefined) this.deadlines.set(packet.messageId, performance.now() + interval * 1000);
      else this.deadlines.delete(packet.messageId);
    }
    return super.put(packet, cb);
  }

  override del(packet: Del[0], cb: Del[1]): this {
    if (packet.messageId !== undefined) this.deadlines.delete(packet.messageId);
    return super.del(packet, cb);
  }

  /** What mqtt.js sends again at a connection: the interval of each publish as it is now, the expired left out. */
  override createStream(): ReturnType<Store['createStream']> {
    const now = performance.now();
    for (const [messageId, deadline] of [...this.deadlines]) {
      const left = Math.ceil((deadline - now) / 1000);
      if (left > 0) {
        super.get({ messageId }, (_err, packet) => {
          if (packet?.cmd === 'publish') packet.properties = { ...packet.properties, messageExpiryInterval: left };
        });
        continue;
      }
      this.deadlines.delete(messageId);
      super.del({ messageId }, () => undefined);
      this.expired(messageId);
    }
    return super.createStream();
  }
}

/**
 * Gives `client` an ExpiringStore as its outgoing store (kept if the client makes its stores again).
 * A publish dropped as expired is ended with an error for its sender, and waits no more for a PUBACK
 * (a graceful end waits for every one outstanding).
 */
export function keepExpiryOnResend(client: MqttClient): void {
  const store = new ExpiringStore((messageId) => {
    const outgoing = client.outgoing[messageId];
    delete client.outgoing[messageId];
    outgoing?.cb(new Error('its Message Expiry Interval passed before it could be sent again; dropped'));
  });
  client.options.outgoingStore = store;
  client.outgoingStore = store;
}
