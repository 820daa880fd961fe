import { FieldStreamError } from '../../../../shared/errors.ts';
import { definitions, resolve, type Definitions } from './definitions.ts';
import { behind, type Digest } from './duplicates.ts';
import type { HeldDefinitions } from './held.ts';
import { bytesOf, duplicate, key, type HostOutcome, type NodeSession } from './host-types.ts';
import { lifecycleEvent, toReadings, type FieldAt } from './mapping.ts';
import { nameDefinitions } from './naming.ts';
import { QUALITY, type SparkplugMetric, type SparkplugPayload } from './payload.ts';
import type { RebirthRequests } from './rebirth.ts';
import type { ReorderBuffers } from './reorder.ts';
import type { SparkplugTopic } from './topic.ts';
import { metricValue } from './values.ts';

/** What of the Sparkplug host (host.ts) the messages within a session use. */
export interface SequencedParts {
  readonly sessions: ReadonlyMap<string, NodeSession>;
  readonly held: HeldDefinitions;
  readonly reorder: ReorderBuffers;
  readonly rebirths: RebirthRequests;
  /** devices born at once per edge node at most (HostOptions.maxDevicesPerNode) */
  readonly maxDevicesPerNode: number;
  /** whether to record the field each value went to (HostOutcome.used; HostOptions.recordFields) */
  readonly recordFields: boolean;
}

/**
 * The messages of the Sparkplug host (host.ts) that carry its session's seq after the NBIRTH that
 * started it (§5.9, §6.4.2): NDATA, DBIRTH, DDATA and DDEATH, each checked against the next seq (held
 * for reorder, a duplicate, or a gap), then taken: a device born or dead, and the metrics of births
 * and data as fields of readings (fields, the NBIRTH's too). The sessions' births and deaths, and the
 * rebirth requests a refusal makes, are the host's.
 */
export class SequencedMessages {
  constructor(private readonly o: SequencedParts) {}

  /** NDATA, DBIRTH, DDATA, DDEATH: within the session of a born edge node, in seq order. */
  next(t: SparkplugTopic, p: SparkplugPayload, now: number, out: HostOutcome, digest: Digest | undefined): void {
    const s = this.o.sessions.get(key(t.group, t.edge));
    if (!s) throw new FieldStreamError('SPARKPLUG_NOT_BORN', `${t.type} from edge node ${t.group}/${t.edge}, which has no current birth`);
    if (s.stale) throw new FieldStreamError('SPARKPLUG_NOT_BORN', `${t.type} from edge node ${t.group}/${t.edge}, whose rebirth is awaited after a gap`);
    if (p.seq === undefined) throw new FieldStreamError('SPARKPLUG_PAYLOAD_INVALID', `${t.type} without seq`);
    const expected = (s.seq + 1) % 256;
    if (p.seq !== expected) {
      // The bytes of a message read at that seq: sent again without DUP (mqtt.js after a lost PUBACK,
      // duplicates.ts), not a gap. Its session goes on; it is not stored again.
      if (behind(s.seq, p.seq) && s.digests.read(p.seq, digest)) throw duplicate(t, `seq ${p.seq} with the bytes read at it was read already (the last is ${s.seq})`);
      if (this.o.reorder.hold(key(t.group, t.edge), s, { t, p, digest }, expected, now)) {
        out.held = true;
        return;
      }
      s.stale = true;
      this.o.reorder.drop(key(t.group, t.edge), 'SPARKPLUG_SEQ_GAP', `held messages of ${t.group}/${t.edge} discarded: seq ${p.seq} is a gap`, out);
      throw new FieldStreamError('SPARKPLUG_SEQ_GAP', `${t.type} of ${t.group}/${t.edge} has seq ${p.seq}, expected ${expected}`);
    }
    this.take(s, t, p, p.seq, now, out, true, digest);
  }

  /**
   * An NDATA, DBIRTH, DDATA or DDEATH carrying the next seq of session `s`: the current one
   * (`current`), or its previous one for a message sent again (resend.ts), whose births' room is made
   * among the previous sessions only.
   */
  take(s: NodeSession, t: SparkplugTopic, p: SparkplugPayload, seq: number, now: number, out: HostOutcome, current: boolean, digest: Digest | undefined): void {
    s.seq = seq;
    s.digests.set(seq, digest);
    const at = p.timestamp ?? now;
    if (t.type === 'NDATA') {
      this.fields(t, p, s.defs, now, out);
      return;
    }
    const device = t.device as string;
    if (t.type === 'DBIRTH') {
      // A new device id past the bound is refused (its seq is taken: no gap, no rebirth, which would
      // only bring the same births again); a rebirth of a device already born is taken.
      const maxDevices = this.o.maxDevicesPerNode;
      if (!s.devices.has(device) && s.devices.size >= maxDevices) {
        throw new FieldStreamError('SPARKPLUG_TOO_MANY_DEVICES', `DBIRTH of ${t.group}/${t.edge}/${device} refused: the edge node has ${maxDevices} devices born already`);
      }
      let defs: Definitions;
      try {
        defs = definitions(p.metrics);
        nameDefinitions(defs, { group: t.group, edge: t.edge, device });
        const what = `DBIRTH of ${t.group}/${t.edge}/${device}`;
        const freed = s.devices.get(device)?.bytes ?? 0;
        // The edge node's session with this device's birth in place of its old one: held to its share.
        const session = bytesOf(s) - freed + defs.bytes;
        if (current) this.o.held.room(what, defs.bytes, freed, session);
        else this.o.held.roomPrevious(`${what} sent again`, defs.bytes, key(t.group, t.edge), freed, session);
        // In force before its values are read, as for an NBIRTH (lifecycle.ts, nodeBirth).
        s.devices.set(device, defs);
        this.o.held.recount(key(t.group, t.edge), out);
        if (current) this.o.held.fitPrevious(key(t.group, t.edge));
        this.fields(t, p, defs, now, out);
      } catch (err) {
        // The device was born again with definitions that could not be read: the old ones no longer
        // name what it sends. Dropped, its DDATA is refused (not born) until a valid DBIRTH.
        s.devices.delete(device);
        throw err;
      }
      out.events.push(lifecycleEvent('dbirth', t, at, { metrics: defs.byName.size }));
      return;
    }
    const defs = s.devices.get(device);
    if (!defs) throw new FieldStreamError('SPARKPLUG_NOT_BORN', `${t.type} from device ${t.group}/${t.edge}/${device}, which has no current birth`);
    if (t.type === 'DDATA') {
      this.fields(t, p, defs, now, out);
      return;
    }
    s.devices.delete(device);
    devicesDied(t, [device], at, out);
  }

  /**
   * A DBIRTH, NDATA or DDATA whose payload could not be decoded (payload.ts refused it: malformed,
   * past a bound such as a String value too long, a string not UTF-8), refused with `err` (in `out`).
   * Within a current session that awaits no rebirth, its seq, unknown, is taken as the next one, the
   * seq the edge node gave it (§6.4.2, tck-id-payloads-sequence-num-incrementing: each message after
   * the NBIRTH carries one more than the last): untaken, the message after it was a gap, the session
   * stale and every message of the edge node refused until the NBIRTH the gap asked for, and for a
   * DBIRTH that rebirth brought the same DBIRTH again, every 5 s for as long as the edge node ran.
   * Were it another seq (out of order), the next message is a gap all the same, and asks at once.
   * Data is then refused alone, as one whose value contradicts its data type is (values.ts). A DBIRTH
   * is one refused for what it holds (take): the device's definitions dropped, its DDATA refused as
   * not born, and a rebirth asked, less and less often while it comes back the same (rebirth.ts).
   * The bytes of the message read last are a duplicate.
   */
  unreadable(t: SparkplugTopic, err: FieldStreamError, now: number, out: HostOutcome, digest: Digest | undefined): void {
    const k = key(t.group, t.edge);
    const s = this.o.sessions.get(k);
    if (!s || s.stale) return;
    if (s.digests.read(s.seq, digest)) {
      out.refused = duplicate(t, `the bytes of seq ${s.seq} were read already`);
      return;
    }
    const seq = (s.seq + 1) % 256;
    s.seq = seq;
    s.digests.set(seq, digest);
    if (t.type === 'DBIRTH') {
      s.devices.delete(t.device as string);
      this.o.rebirths.refused(k, now, false);
      if (!this.o.rebirths.heldOff(k, now)) this.o.rebirths.ask(t.group, t.edge, now, err.message, out);
    }
    this.o.reorder.release(k, now, out);
  }

  /** The metrics of a birth or data message as fields of readings, resolved against `defs`. */
  fields(t: SparkplugTopic, p: SparkplugPayload, defs: Definitions, now: number, out: HostOutcome, keep: (m: SparkplugMetric) => boolean = () => true): void {
    const fields: FieldAt[] = [];
    for (const m of p.metrics) {
      if (!keep(m)) continue;
      const def = resolve(m, defs, t);
      // §6.4.7 is_transient: a value not to be stored as history.
      if (m.isTransient) {
        out.skipped++;
        continue;
      }
      // §6.4.9.1: a value of BAD or STALE quality is no measurement (a failed sensor, a PLC no longer
      // read, the last value kept): stored, it stood in the series as one, indistinguishable from the
      // real ones. Skipped and counted; a value of GOOD quality, or with none, is stored.
      if (m.quality === QUALITY.BAD || m.quality === QUALITY.STALE) {
        out.skipped++;
        continue;
      }
      // The birth's data type, not the one a data message may repeat (§6.4.7: it MUST be in the
      // birth, tck-id-payloads-metric-datatype-req, and SHOULD NOT be in NDATA/DDATA,
      // -datatype-not-req): read by a type of its own, a Double's metric carried a string into
      // a number's field, and the database refused the reading with every metric of the message.
      // A value whose member contradicts the birth's type is refused (values.ts).
      const v = metricValue(def.datatype, m.raw, m.isNull);
      const field = this.o.held.names.field(def, p.seq);
      if ('skip' in v || field === undefined) {
        out.skipped++;
        continue;
      }
      fields.push({ field, value: v.value, at: m.timestamp ?? p.timestamp ?? now });
      if (this.o.recordFields) (out.used ??= new Map()).set(def, { field, seq: p.seq });
    }
    out.readings.push(...toReadings(fields));
  }
}

/**
 * Devices of edge node `t` dead at `at`: the event a DDEATH records, one each. A DDEATH names one
 * device (take); an NDEATH ends every device its session has born (lifecycle.ts, nodeDeath): Sparkplug
 * 3.0.0 "Edge Node Session Termination", its devices are offline with it
 * (tck-id-operational-behavior-edge-node-termination-host-action-ndeath-devices-offline); so does an
 * NBIRTH taken for the session it replaces (lifecycle.ts, nodeBirth): its devices are STALE until born
 * again in the new session (Sparkplug 3.0.0, NBIRTH payload).
 */
export function devicesDied(t: Pick<SparkplugTopic, 'group' | 'edge'>, devices: Iterable<string>, at: number, out: HostOutcome): void {
  for (const device of devices) out.events.push(lifecycleEvent('ddeath', { group: t.group, edge: t.edge, device }, at));
}
