import type { EventPayload, TimeseriesPayload } from '../../../../shared/contract/payloads.ts';
import { FIELD_NAME_PATTERN, type Scalar } from '../../../../shared/contract/primitives.ts';
import { LIMITS } from '../../../../shared/limits.ts';

/**
 * How Sparkplug becomes FieldStream data (docs/field-client.md, "Sparkplug B input").
 *
 * Every reading of a device is stored in one series (measurement `readings`, tag `device` = the
 * FieldStream device id), so the edge node and device a metric comes from travel in the field
 * name: `<group>.<edge>[.<device>].<metric>`, the metric name's `/` folders becoming `.` and any
 * other character a field name cannot hold (FIELD_NAME_PATTERN) becoming `_`. So
 * `Plant1/Line4/NDATA/PLC7` metric `Inputs/Temp` is the field `Plant1.Line4.Inputs.Temp`, and the
 * same metric of device `Press` under it `Plant1.Line4.Press.Inputs.Temp`. A name longer than a
 * field name may be is skipped and counted rather than cut (two cut names could collide). This
 * name is not one to one (`A.B`/`C` and `A`/`B.C`, metrics `x/y` and `x.y`): the host gives a
 * name two metrics share to one of them and a suffixed one to the others (names.ts).
 *
 * Metrics of one message become one reading per distinct timestamp (the metric's own, else the
 * payload's, else the moment it arrived), at most LIMITS.readingMaxFields fields and
 * LIMITS.sparkplugReadingMaxBytes bytes as JSON each.
 */
export function fieldName(group: string, edge: string, device: string | undefined, metric: string): string | undefined {
  const clean = (s: string) => s.replace(/[^A-Za-z0-9_.-]/g, '_');
  const parts = [group, edge, ...(device === undefined ? [] : [device]), metric.split('/').map(clean).join('.')].map((p, i) => (i < 3 ? clean(p) : p));
  let name = parts.join('.');
  if (!/^[A-Za-z_]/.test(name)) name = `_${name}`;
  return FIELD_NAME_PATTERN.test(name) ? name : undefined;
}

export interface FieldAt {
  field: string;
  value: Scalar;
  /** epoch milliseconds */
  at: number;
}

/** bytes. What a reading takes as JSON besides its fields: its braces and `"timestamp":<ms>`. */
const READING_BASE_BYTES = 32;

/**
 * bytes. What field `name` with `value` adds to a reading as JSON (UTF-8): `"name":value,`. Field
 * names are ASCII (FIELD_NAME_PATTERN), a number or boolean is as long as its text; a string is
 * measured escaped, where a control character takes six bytes and a character past U+007F up to 3.
 */
function fieldBytes(name: string, value: Scalar): number {
  const v = typeof value === 'string' ? Buffer.byteLength(JSON.stringify(value), 'utf8') : String(value).length;
  return name.length + 4 + v;
}

/**
 * Fields to readings: one per timestamp, split when more than a reading may hold, in fields
 * (LIMITS.readingMaxFields) or in bytes as JSON (LIMITS.sparkplugReadingMaxBytes): a reading the queue
 * refused for its size took the whole batch it was in with it.
 */
export function toReadings(fields: readonly FieldAt[]): TimeseriesPayload[] {
  const byTime = new Map<number, Array<{ r: Record<string, Scalar>; n: number; bytes: number }>>();
  const max = LIMITS.readingMaxFields - 1; // one is the timestamp
  for (const f of fields) {
    let list = byTime.get(f.at);
    if (!list) byTime.set(f.at, (list = [{ r: {}, n: 0, bytes: READING_BASE_BYTES }]));
    let last = list[list.length - 1] as { r: Record<string, Scalar>; n: number; bytes: number };
    // A field named twice at one time (a metric repeated in a message) keeps its last value.
    if (f.field in last.r) {
      last.bytes -= fieldBytes(f.field, last.r[f.field] as Scalar);
      delete last.r[f.field];
      last.n--;
    }
    const bytes = fieldBytes(f.field, f.value);
    if (last.n > 0 && (last.n >= max || last.bytes + bytes > LIMITS.sparkplugReadingMaxBytes)) list.push((last = { r: {}, n: 0, bytes: READING_BASE_BYTES }));
    last.r[f.field] = f.value;
    last.n++;
    last.bytes += bytes;
  }
  const out: TimeseriesPayload[] = [];
  for (const [at, list] of [...byTime].sort((a, b) => a[0] - b[0])) for (const { r } of list) out.push({ ...r, timestamp: at });
  return out;
}

export type LifecycleKind = 'nbirth' | 'ndeath' | 'dbirth' | 'ddeath' | 'rebirth_requested';

/**
 * A birth, a death or a rebirth request as an event: `eventType` `sparkplug.<kind>`, the edge node
 * (and device) in the fields `sp_group`, `sp_edge_node` and `sp_device` (not `device`: that is the
 * tag naming the FieldStream device), the birth's `bd_seq` and number of
 * metrics where they apply, at the message's timestamp.
 */
export function lifecycleEvent(
  kind: LifecycleKind,
  where: { group: string; edge: string; device?: string | undefined },
  at: number,
  extra: { bdSeq?: number; metrics?: number; reason?: string } = {},
): EventPayload {
  const who = where.device === undefined ? `edge node ${where.group}/${where.edge}` : `device ${where.group}/${where.edge}/${where.device}`;
  const text: Record<LifecycleKind, string> = {
    nbirth: `${who} born`,
    dbirth: `${who} born`,
    ndeath: `${who} died`,
    ddeath: `${who} died`,
    rebirth_requested: `rebirth of ${who} requested: ${extra.reason ?? ''}`,
  };
  return {
    eventType: `sparkplug.${kind}`,
    severity: kind === 'ndeath' || kind === 'ddeath' || kind === 'rebirth_requested' ? 'warning' : 'info',
    message: text[kind].slice(0, LIMITS.stringMaxChars),
    timestamp: at,
    sp_group: where.group,
    sp_edge_node: where.edge,
    ...(where.device === undefined ? {} : { sp_device: where.device }),
    ...(extra.bdSeq === undefined ? {} : { bd_seq: extra.bdSeq }),
    ...(extra.metrics === undefined ? {} : { metrics: extra.metrics }),
  };
}
