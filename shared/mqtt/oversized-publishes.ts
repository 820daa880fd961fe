import { Transform, type Duplex, type TransformCallback, type Writable } from 'node:stream';
import type { MqttClient } from 'mqtt';
import { FieldStreamError } from '../errors.ts';
import type { Logger } from '../logger.ts';

/** A PUBLISH over the bound, skipped unread: its topic and its remaining length (bytes). */
export interface SkippedPublish {
  topic: string;
  length: number;
}

/** bytes: a PUBLISH's topic length, the longest topic, and a packet id (MQTT 3.1.1 §3.3.2) */
const PREFIX_MAX_BYTES = 2 + 0xffff + 2;

/**
 * Skips, as their bytes arrive, the PUBLISH packets at QoS 0 or 1 whose remaining length is above
 * `maxBytes`, and hands the rest of the connection to mqtt.js untouched: its parser (mqtt-packet)
 * would buffer such a packet whole, up to MQTT's 256 MB, before anything looks at it. Of a skipped
 * packet only its topic and packet id are kept (64 KiB at most); one at QoS 1 is acknowledged here
 * (PUBACK), as one taken and refused would be; `skipped` is told of each, the connection kept.
 *
 * Why not close the connection (limitIncomingPackets, which the broker exporter uses): a broker
 * hands a retained message to every new subscription, so one such packet published retained under
 * a topic subscribed came again on every connection, each closed before anything else was read:
 * one publish kept the client off its broker for good. Any other packet over the bound (no
 * legitimate one comes near it), a malformed length, or a PUBLISH at QoS 2 (which the client never
 * subscribes to) still closes the connection (MQTT_PACKET_TOO_LARGE, logged here).
 *
 * Call it on a client made with `manualConnect`, before its connect(): each connection's stream is
 * made by the client's stream builder, and the filter goes where mqtt.js pipes that stream.
 */
export function skipOversizedPublishes(client: MqttClient, maxBytes: number, log: Logger, skipped: (p: SkippedPublish) => void): void {
  // Not in mqtt.js's types, but how it makes each connection's stream and reads it (client.js, mqtt 5: stream.pipe(writable)).
  const c = client as unknown as { stream?: Duplex; streamBuilder?: (client: MqttClient) => Duplex };
  const build = c.streamBuilder;
  if (typeof build !== 'function' || c.stream) throw new Error('skipOversizedPublishes needs a client not connected yet (manualConnect), made by mqtt.js 5');
  c.streamBuilder = (cl) => {
    const stream = build(cl);
    const filter = publishFilter(maxBytes, stream, log, skipped);
    const pipe = stream.pipe;
    stream.pipe = function <T extends NodeJS.WritableStream>(dest: T, options?: { end?: boolean }): T {
      pipe.call(stream, filter as unknown as Writable);
      return filter.pipe(dest, options);
    };
    return stream;
  };
}

/**
 * MQTT's framing (3.1.1 §2.2): a byte of type and flags, the remaining length (1 to 4 bytes, 7 bits
 * each, least significant first), then that many bytes. A packet within the bound passes as it
 * came; its fixed header is held only until its length is known (5 bytes at most).
 */
function publishFilter(maxBytes: number, stream: Duplex, log: Logger, skipped: (p: SkippedPublish) => void): Transform {
  let header: number[] = [];
  let length = 0;
  let shift = 1;
  /** bytes of the current packet's body still to pass (state 'pass') or to drop (state 'skip') */
  let body = 0;
  let state: 'type' | 'length' | 'pass' | 'prefix' | 'skip' | 'closed' = 'type';
  let prefix: Buffer[] = [];
  let prefixBytes = 0;
  let qos = 0;
  const refuse = (message: string) => {
    state = 'closed';
    const err = new FieldStreamError('MQTT_PACKET_TOO_LARGE', message, { length, maxBytes });
    log.warn({ code: err.code, length, maxBytes }, err.message);
    stream.destroy(err);
  };
  /** The topic (and packet id) of a skipped PUBLISH, once its first bytes are in: true when complete. */
  const readPrefix = (): boolean => {
    const p = prefix.length === 1 ? (prefix[0] as Buffer) : Buffer.concat(prefix);
    prefix = [p];
    if (p.length < 2) return false;
    const need = 2 + p.readUInt16BE(0) + (qos > 0 ? 2 : 0);
    if (need > length) {
      refuse(`The broker sent a PUBLISH of ${length} bytes whose topic does not fit in it: connection closed`);
      return false;
    }
    if (p.length < need) return false;
    const topic = p.subarray(2, 2 + p.readUInt16BE(0)).toString('utf8');
    if (qos === 1) {
      const id = p.readUInt16BE(need - 2);
      // PUBACK (MQTT 3.1.1 §3.4): unacknowledged, the broker kept it in flight, and with 20 of them
      // (Mosquitto's max_inflight_messages) it sent this client no more QoS 1 message.
      stream.write(Buffer.from([0x40, 0x02, id >> 8, id & 0xff]));
    }
    body = length - p.length;
    prefix = [];
    state = 'skip';
    skipped({ topic, length });
    return true;
  };
  return new Transform({
    transform(chunk: Buffer, _enc, done: TransformCallback) {
      const out: Buffer[] = [];
      let i = 0;
      while (i < chunk.length && state !== 'closed') {
        if (state === 'pass' || state === 'skip') {
          const n = Math.min(body, chunk.length - i);
          if (state === 'pass') out.push(chunk.subarray(i, i + n));
          body -= n;
          i += n;
          if (body === 0) state = 'type';
          continue;
        }
        if (state === 'prefix') {
          const n = Math.min(PREFIX_MAX_BYTES - prefixBytes, length - prefixBytes, chunk.length - i);
          prefix.push(chunk.subarray(i, i + n));
          prefixBytes += n;
          i += n;
          // readPrefix moves on to 'skip' once the topic and packet id are in (they fit in
          // PREFIX_MAX_BYTES), or closes the connection when they cannot fit in the packet.
          if (readPrefix() && body === 0) state = 'type';
          continue;
        }
        const byte = chunk[i++] as number;
        header.push(byte);
        if (state === 'type') {
          state = 'length';
          length = 0;
          shift = 1;
          continue;
        }
        length += (byte & 0x7f) * shift;
        shift *= 128;
        if (byte & 0x80) {
          if (header.length === 5) refuse('The broker sent a packet whose remaining length is malformed: connection closed');
          continue;
        }
        const type = (header[0] as number) >> 4;
        qos = ((header[0] as number) >> 1) & 3;
        if (length <= maxBytes) {
          out.push(Buffer.from(header));
          header = [];
          body = length;
          state = body > 0 ? 'pass' : 'type';
          continue;
        }
        header = [];
        if (type !== 3 || qos > 1) {
          refuse(`The broker began an MQTT packet of ${length} bytes, more than the ${maxBytes} read from it: connection closed`);
          continue;
        }
        prefixBytes = 0;
        state = 'prefix';
      }
      done(null, out.length === 0 ? undefined : out.length === 1 ? out[0] : Buffer.concat(out));
    },
  });
}
