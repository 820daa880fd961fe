import type { MqttClient } from 'mqtt';

/** What the watch reads of a connection's stream: a net.Socket's or tls.TLSSocket's counters. */
interface ReadCounters {
  bytesRead?: unknown;
  readableLength?: unknown;
  readableHighWaterMark?: unknown;
}

/**
 * Keeps a consumer's connection judged by what its socket reads from the broker, not by the packets
 * mqtt.js hands over.
 *
 * mqtt.js hands a connection's packets over one at a time, the next only after the consumer's
 * callback, i.e. after the message in progress was written: the broker's PINGRESP waits behind it,
 * and behind a backlog of messages, and mqtt.js, counting only the packets it handled, gives the
 * connection up 1.5 keepalives after the last one. That dropped connections under a backlog (every
 * ~46 s in the fleet benchmark) and whenever the store was frozen for longer (each time one more
 * copy of the message in progress delivered again). Kept alive regardless instead, by pings sent
 * during a message, a connection that died without a word (a network partition, the broker's host
 * frozen: no FIN, no RST) went unnoticed until the message was written: retried for as long as the
 * store was down though the broker delivers it again on the next connection, which came that late.
 *
 * So: while connected, a ping every half keepalive, and every quarter keepalive a look at the bytes
 * the socket has read. Any, and mqtt.js's keepalive timer is started again; none for 1.5 keepalives
 * (MQTT 5 §3.1.2.10: a PINGRESP not received in reasonable time), and mqtt.js's timer closes the
 * connection (its "Keepalive timeout"): the consumer's message in progress is abandoned, and the
 * broker delivers it again on the next connection.
 *
 * A socket holding back (its buffer full behind mqtt.js, which takes nothing during a message: a
 * backlog larger than the two buffers) reads nothing more: the broker's answers wait in the kernel
 * behind the backlog. That is no silence of the broker's, and counts as a sign of life; the
 * connection is judged again once the socket reads. A stream that keeps no count of bytes read (not
 * a socket; the distributor's MQTT_URL is mqtts, a TLS socket) cannot be judged so: it is kept, its
 * mqtt.js timer started again at each look, as a message in progress kept it before.
 */
export function watchBrokerLiveness(mqtt: MqttClient): void {
  let timer: NodeJS.Timeout | undefined;
  const stop = () => {
    clearInterval(timer);
    timer = undefined;
  };
  const start = () => {
    stop();
    // seconds: the broker's Server Keep Alive if it set one (MQTT 5 §3.2.2.3.14), else ours
    const keepaliveMs = mqtt.keepalive * 1000;
    if (!(keepaliveMs > 0)) return;
    const stream = mqtt.stream as unknown as ReadCounters;
    const bytesRead = () => (typeof stream.bytesRead === 'number' ? stream.bytesRead : undefined);
    const holdingBack = () =>
      typeof stream.readableLength === 'number' && typeof stream.readableHighWaterMark === 'number' && stream.readableLength >= stream.readableHighWaterMark;
    let read = bytesRead();
    let pinged = Date.now();
    timer = setInterval(() => {
      const now = Date.now();
      const readNow = bytesRead();
      if (readNow === undefined || readNow !== read || holdingBack()) mqtt.reschedulePing(true);
      read = readNow;
      if (now - pinged >= keepaliveMs / 2 && mqtt.connected) {
        pinged = now;
        mqtt.sendPing();
      }
    }, keepaliveMs / 4);
    timer.unref();
  };
  mqtt.on('connect', start);
  mqtt.on('close', stop);
  if (mqtt.connected) start();
}
