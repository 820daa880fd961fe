import type { Duplex } from 'node:stream';
import type { MqttClient } from 'mqtt';
import { FieldStreamError } from '../errors.ts';
import type { Logger } from '../logger.ts';

/**
 * Closes `client`'s connection as soon as its broker begins a packet whose remaining length is
 * above `maxBytes`. mqtt.js has no such bound for what a broker sends: its parser (mqtt-packet)
 * buffers a packet whole, up to MQTT's 256 MB, before anything looks at it, and its
 * `maximumPacketSize` is checked only then. A broker the service does not trust (the DMZ broker,
 * which the broker exporter dials) could so take all its memory with one PUBLISH.
 *
 * The bytes are read beside mqtt.js, on each connection's stream from its first byte: the stream
 * the client holds now, and each its stream builder makes for a reconnect. The refusal destroys
 * the stream with a FieldStreamError (MQTT_PACKET_TOO_LARGE, logged here), which mqtt.js reports
 * as the client's 'error' before it closes and reconnects.
 */
export function limitIncomingPackets(client: MqttClient, maxBytes: number, log: Logger): void {
  const watch = (stream: Duplex | undefined) => {
    if (!stream) return;
    const read = packetLengths(maxBytes, (length) => {
      stream.off('data', read);
      const err = new FieldStreamError('MQTT_PACKET_TOO_LARGE', `The broker began an MQTT packet of ${length} bytes, more than the ${maxBytes} read from it: connection closed`, { length, maxBytes });
      log.warn({ code: err.code, length, maxBytes }, err.message);
      stream.destroy(err);
    });
    stream.on('data', read);
  };
  // Not in mqtt.js's types, but how it makes each connection's stream (client.js, mqtt 5).
  const c = client as unknown as { stream?: Duplex; streamBuilder?: (client: MqttClient) => Duplex };
  const build = c.streamBuilder;
  if (typeof build === 'function') {
    c.streamBuilder = (cl) => {
      const stream = build(cl);
      // Before mqtt.js pipes it, and before any byte can arrive (a socket reads later, not now).
      watch(stream);
      return stream;
    };
  }
  watch(c.stream);
}

/**
 * A reader of MQTT's framing (3.1.1 §2.2, 5.0 §2.1): each packet is a byte of type and flags, its
 * remaining length (1 to 4 bytes, 7 bits each, least significant first, the high bit saying more
 * follow), then that many bytes. Calls `refuse` once the length read so far is above `maxBytes`
 * (it only grows with more bytes), or is longer than 4 bytes (malformed).
 */
export function packetLengths(maxBytes: number, refuse: (length: number) => void): (chunk: Buffer) => void {
  let body = 0; // bytes of the current packet's body still to come
  let inLength = false; // reading a remaining length
  let length = 0;
  let shift = 1;
  let lengthBytes = 0;
  let refused = false;
  return (chunk) => {
    for (let i = 0; i < chunk.length && !refused; ) {
      if (body > 0) {
        const n = Math.min(body, chunk.length - i);
        body -= n;
        i += n;
        continue;
      }
      const byte = chunk[i++] as number;
      if (!inLength) {
        inLength = true;
        length = 0;
        shift = 1;
        lengthBytes = 0;
        continue;
      }
      length += (byte & 0x7f) * shift;
      shift *= 128;
      lengthBytes++;
      if (length > maxBytes || (byte & 0x80 && lengthBytes === 4)) {
        refused = true;
        refuse(length);
        return;
      }
      if ((byte & 0x80) === 0) {
        inLength = false;
        body = length;
      }
    }
  };
}
