import { FieldStreamError } from '../../../shared/errors.ts';
import { LIMITS } from '../../../shared/limits.ts';

/**
 * The packets of the local MQTT input's connections, as mqtt-packet's Parser (one per aedes client)
 * reads them: their size bounded on each connection (limitPacketSize) and the bytes of packets begun
 * and not yet whole bounded across all connections (HeldPackets), both checked as a packet's length
 * arrives, before its bytes are buffered.
 */

/**
 * The bytes of a packet begun and not yet whole in an aedes client's parser (a fixed header read
 * and its payload awaited counts, with 0 bytes held), or undefined when none is begun (or the
 * parser is not one this knows: then nothing is cut off).
 */
export function partialPacketBytes(aedesClient: unknown): number | undefined {
  const parser = (aedesClient as { _parser?: Partial<PacketParser> } | null)?._parser;
  const held = parser?._list?.length;
  const length = parser?.packet?.length;
  if (typeof held !== 'number' || typeof length !== 'number') return undefined;
  return held > 0 || length !== -1 ? held : undefined;
}

/** What limitPacketSize and partialPacketBytes use of mqtt-packet's Parser (aedes's client holds one per connection). */
interface PacketParser {
  packet: { length: number; cmd?: string };
  on(event: 'packet', listener: () => void): unknown;
  /** the bytes read and not yet parsed (a BufferList) */
  _list: { length: number };
  _parseLength(): boolean;
  _emitError(err: Error): void;
}

/**
 * Refuses, on one aedes client (what `aedes.handle(socket)` returns), any MQTT packet whose remaining
 * length is above `maxBytes`, as soon as its fixed header is read: neither aedes nor mqtt-packet has
 * a maximum-packet-size option, and mqtt-packet's Parser otherwise buffers up to MQTT's 256 MB
 * before it parses. The length is still read by mqtt-packet (its `_parseLength` step); the refusal
 * goes through the parser's own error path, on which aedes closes the connection. Returns false when
 * the client has no such parser (a changed aedes), which authorizePublish's payload check then backs.
 */
export function limitPacketSize(aedesClient: unknown, maxBytes: number, onRefused: (err: FieldStreamError) => void, held?: HeldPackets): boolean {
  const parser = (aedesClient as { _parser?: Partial<PacketParser> } | null)?._parser;
  if (!parser || typeof parser._parseLength !== 'function' || typeof parser._emitError !== 'function' || typeof parser.on !== 'function' || typeof parser.packet !== 'object') return false;
  const p = parser as PacketParser;
  const parseLength = p._parseLength.bind(p);
  p._parseLength = () => {
    if (!parseLength()) return false;
    const err =
      p.packet.length > maxBytes
        ? new FieldStreamError('FIELD_INPUT_INVALID', `MQTT ${p.packet.cmd ?? ''} packet of ${p.packet.length} bytes is larger than ${maxBytes}: connection closed`)
        : held?.take(aedesClient as object, p.packet.length);
    if (!err) return true;
    onRefused(err);
    p._emitError(err);
    return false;
  };
  // A packet whole is no longer held here (aedes reads no more of its connection while it handles it).
  if (held) p.on('packet', () => held.release(aedesClient as object));
  return true;
}

/**
 * The bytes of the packets begun and not yet whole on all the local MQTT input's connections, each
 * counted by its remaining length from when that length arrives until the packet is whole or its
 * connection gone: at most LIMITS.localMqttHeldMaxBytes. Each connection is bounded on its own
 * (LIMITS.localMqttMaxPacketBytes, TIMINGS.localMqttPacketIdleTimeoutMs), but not their sum: a
 * program sending 8 MiB of a packet and then a byte a minute held those 8 MiB for as long as it
 * liked, as many times as it opened connections. A packet of at most
 * LIMITS.localMqttUncountedPacketBytes is not counted (readings as sensors send them, PINGREQ):
 * held packets filling the room delay no small reading, and those are bounded by the number of
 * connections (LIMITS.localMqttMaxConnections).
 */
export class HeldPackets {
  /** by aedes client (one per connection): the bytes of its packet begun */
  private readonly byClient = new Map<object, number>();
  private total = 0;

  /** Counts a packet of `bytes` begun on this client's connection; FIELD_INPUT_BUSY when there is no room for it. */
  take(client: object, bytes: number): FieldStreamError | undefined {
    this.release(client);
    if (bytes <= LIMITS.localMqttUncountedPacketBytes) return undefined;
    if (this.total + bytes > LIMITS.localMqttHeldMaxBytes) {
      return new FieldStreamError(
        'FIELD_INPUT_BUSY',
        `MQTT packet of ${bytes} bytes: ${this.total} bytes of packets are arriving on other connections, and at most ${LIMITS.localMqttHeldMaxBytes} are held at once; connection closed, send it again shortly`,
      );
    }
    this.byClient.set(client, bytes);
    this.total += bytes;
    return undefined;
  }

  /** What this client's connection held is no longer held: its packet is whole, or the connection gone. */
  release(client: object): void {
    const bytes = this.byClient.get(client);
    if (bytes === undefined) return;
    this.byClient.delete(client);
    this.total -= bytes;
  }

  /** bytes held now */
  get bytes(): number {
    return this.total;
  }
}

/**
 * The topic filters each connection of the local MQTT input holds, at most
 * LIMITS.localMqttMaxSubscriptions each. aedes keeps every filter a connection subscribes to in
 * memory until it unsubscribes or goes, with no bound of its own: a program subscribing to
 * `spam/1`, `spam/2`, ... in a loop (one SUBSCRIBE of up to 8 MiB holds hundreds of thousands) grew
 * the broker until the device ran out of memory. Counted here as each is granted. aedes has no hook
 * for UNSUBSCRIBE: once the bound is reached, the filters the aedes client no longer holds (its
 * `subscriptions`) are let go, but for those granted in this turn of the event loop (one
 * SUBSCRIBE's), which it may not have added yet.
 */
export class HeldFilters {
  /** by aedes client: its filters, each with the turn it was granted in */
  private readonly byClient = new WeakMap<object, { filters: Map<string, number>; refused: boolean }>();
  private turn = 0;
  private turnEnds = false;

  /** Whether `client` may hold `topic` too (one it holds already: always); counted if so. */
  admit(client: object, topic: string): boolean {
    let held = this.byClient.get(client);
    if (!held) this.byClient.set(client, (held = { filters: new Map(), refused: false }));
    const turn = this.currentTurn();
    if (held.filters.has(topic)) return true;
    if (held.filters.size >= LIMITS.localMqttMaxSubscriptions) {
      const now = (client as { subscriptions?: Record<string, unknown> }).subscriptions;
      if (now) for (const [t, at] of held.filters) if (at < turn && !Object.hasOwn(now, t)) held.filters.delete(t);
      if (held.filters.size >= LIMITS.localMqttMaxSubscriptions) return false;
    }
    held.filters.set(topic, turn);
    return true;
  }

  /** True the first time `client` is refused one (to log it once per connection). */
  firstRefusal(client: object): boolean {
    const held = this.byClient.get(client);
    if (!held || held.refused) return false;
    held.refused = true;
    return true;
  }

  private currentTurn(): number {
    if (!this.turnEnds) {
      this.turnEnds = true;
      setImmediate(() => {
        this.turn++;
        this.turnEnds = false;
      });
    }
    return this.turn;
  }
}

/**
 * Keeps none of the payloads of the QoS 2 publishes awaiting their PUBREL on `broker` (an aedes
 * instance). aedes publishes a QoS 2 message as it arrives, then keeps it until its PUBREL only to
 * know that its packet identifier is in use: a copy sent again before the PUBREL is answered PUBREC
 * and not published again (MQTT 3.1.1 §4.3.3, MQTT-4.3.3-2; aedes lib/handlers/publish.js and
 * pubrel.js look the packet up, never its payload). Kept whole, a program that never sent PUBREL
 * held up to aedes's maxInflightInbound (1,000) messages of up to LIMITS.localMqttMaxPacketBytes
 * on each of its connections, out of reach of LIMITS.localMqttHeldMaxBytes (which counts packets
 * not yet whole). Returns false when the broker has no such store (a changed aedes).
 */
export function keepNoQos2Payloads(broker: unknown): boolean {
  const persistence = (broker as { persistence?: { incomingStorePacket?: unknown } } | null)?.persistence;
  const store = persistence?.incomingStorePacket;
  if (!persistence || typeof store !== 'function') return false;
  persistence.incomingStorePacket = (client: unknown, packet: object, ...rest: unknown[]): unknown => store.call(persistence, client, { ...packet, payload: NO_PAYLOAD }, ...rest);
  return true;
}

const NO_PAYLOAD = Buffer.alloc(0);
