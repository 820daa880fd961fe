import type { Scalar } from '../../../shared/contract/primitives.ts';
import { CONSOLE } from '../../../shared/limits.ts';
import type { DeviceRow, SecurityUpdate, TimedFields } from '../fleet/types.ts';

/** A device row as a live stream sends it (docs/console.md): its last reading bounded. */
export type LiveRow = Omit<DeviceRow, 'lastReading'> & { lastReading: (TimedFields & { omitted?: number }) | null };

/** Characters the fleet page writes out for a value (fieldsSummary, public/format.js), at least. A
 * number or boolean is counted as one: never more than it shows, so no field it shows is left out. */
const shownChars = (v: Scalar) => (typeof v === 'string' ? Math.min(v.length, CONSOLE.liveRowValueMaxChars) : 1);
/** " · " between two fields, and the space between a field's name and its value */
const SEPARATOR_CHARS = 3;

/**
 * A row with no more of its last reading than the fleet page shows of it (its hover text):
 * string values cut at CONSOLE.liveRowValueMaxChars (ending in "…", so the page cuts them where it
 * would the whole value), and fields past CONSOLE.liveRowReadingMaxChars of the page's text left
 * out (counted in `omitted`; what is kept is over the limit, so the page ends it in "…" as it would
 * the whole). A reading may hold 256 fields of 128-character names and values of 64 Ki characters:
 * a row of megabytes, when a snapshot part must reach a slow link within seconds. The row itself
 * is returned when nothing is cut. A device page's `device` event carries it bounded the same way
 * (live-device.ts); the page reads the whole reading from GET /api/devices/:id.
 */
export function liveRow(row: DeviceRow): LiveRow {
  const bounded = liveReading(row.lastReading);
  return bounded === row.lastReading ? row : { ...row, lastReading: bounded };
}

/** A reading bounded as a row's (liveRow): the reading itself when nothing is cut, else a copy with
 * `omitted` (fields left out, if any) and `cut: true` when `mark` (a device page's, which offers the
 * whole reading then). */
export function liveReading<R extends TimedFields | null>(reading: R, mark = false, maxChars: number = CONSOLE.liveRowReadingMaxChars): R | (TimedFields & { omitted?: number; cut?: true }) {
  if (reading === null) return reading;
  const max = CONSOLE.liveRowValueMaxChars;
  const names = Object.keys(reading.fields);
  // Counted first, copied only when something is cut or left out: most readings are neither, and
  // every changed row goes through here for every stream at each flush.
  let chars = 0;
  let kept = 0;
  let cut = false;
  for (const name of names) {
    if (chars > maxChars) break;
    const v = reading.fields[name]!;
    chars += (kept > 0 ? SEPARATOR_CHARS : 0) + name.length + 1 + shownChars(v);
    kept++;
    if (typeof v === 'string' && v.length > max) cut = true;
  }
  if (!cut && kept === names.length) return reading;
  // No prototype: a field may be called `__proto__` (the contract allows the name).
  const fields: Record<string, Scalar> = Object.create(null) as Record<string, Scalar>;
  for (let i = 0; i < kept; i++) {
    const name = names[i]!;
    const v = reading.fields[name]!;
    fields[name] = typeof v === 'string' && v.length > max ? `${v.slice(0, max)}…` : v;
  }
  const bounded: TimedFields & { omitted?: number; cut?: true } = { time: reading.time, fields };
  if (kept < names.length) bounded.omitted = names.length - kept;
  if (mark) bounded.cut = true;
  return bounded;
}

/** Bytes of an event's own lines around its rows: `event: snapshot-part\ndata: {"devices":[` and `]}\n\n`. */
const EVENT_OVERHEAD_BYTES = 64;

/**
 * A snapshot `{devices, total, ...rest}` as the texts to write, each once the socket has taken the
 * one before. `inParts` (a page that asked for them): one event each, `snapshot-part` `{devices}`
 * then `snapshot-end` with the last rows and the rest, or a single `snapshot` when the fleet fits
 * in one. Otherwise (a page of an earlier version, which knows only `snapshot`): one `snapshot` event
 * written in the same pieces. A part holds at most CONSOLE.liveSnapshotRowsPerEvent rows and ends
 * before the row that would take it past CONSOLE.liveSnapshotPartMaxBytes (one row at least); in
 * parts, the last rows and `rest` are within it too, or the rows go in a part of their own (`rest`
 * being bounded by the caller: live.ts).
 */
export function* snapshotTexts(rows: readonly DeviceRow[], rest: Record<string, unknown>, inParts: boolean): Generator<string> {
  const budget = CONSOLE.liveSnapshotPartMaxBytes;
  const per = CONSOLE.liveSnapshotRowsPerEvent;
  // JSON.stringify leaves no raw newline, so one data line carries an event.
  const tail = `],${JSON.stringify({ total: rows.length, ...rest }).slice(1)}\n\n`;
  let part: string[] = [];
  let bytes = EVENT_OVERHEAD_BYTES;
  let first = true;
  // A piece of the one event goes when it would make a part: as much waits for the socket either way.
  for (const row of rows) {
    const text = JSON.stringify(liveRow(row));
    const size = Buffer.byteLength(text) + 1;
    if (part.length > 0 && (part.length >= per || bytes + size > budget)) {
      yield inParts ? `event: snapshot-part\ndata: {"devices":[${part.join(',')}]}\n\n` : `${first ? 'event: snapshot\ndata: {"devices":[' : ','}${part.join(',')}`;
      first = false;
      part = [];
      bytes = EVENT_OVERHEAD_BYTES;
    }
    part.push(text);
    bytes += size;
  }
  if (inParts) {
    // The last rows and the rest together within the budget too, or the rows go in a part of their own.
    if (part.length > 0 && bytes + Buffer.byteLength(tail) > budget) {
      yield `event: snapshot-part\ndata: {"devices":[${part.join(',')}]}\n\n`;
      first = false;
      part = [];
    }
    yield `event: ${first ? 'snapshot' : 'snapshot-end'}\ndata: {"devices":[${part.join(',')}${tail}`;
  }
  else yield `${first ? 'event: snapshot\ndata: {"devices":[' : ','}${part.join(',')}${tail}`;
}

/** Items in order, grouped so that each group with `fixed` bytes around it is within
 * CONSOLE.liveSnapshotPartMaxBytes (one item at least). */
function groups(items: readonly string[], fixed: number): string[][] {
  const budget = CONSOLE.liveSnapshotPartMaxBytes;
  const out: string[][] = [];
  let part: string[] = [];
  let bytes = fixed;
  for (const item of items) {
    // the comma before it counted whether or not there is one
    const size = Buffer.byteLength(item) + 1;
    if (part.length > 0 && bytes + size > budget) {
      out.push(part);
      part = [];
      bytes = fixed;
    }
    part.push(item);
    bytes += size;
  }
  if (part.length > 0) out.push(part);
  return out;
}

/**
 * Items (each already JSON) as events `{"<key>":[items]}` (`{"<key>":{items}}` for an object's
 * members, `"name":value`), each of at most CONSOLE.liveSnapshotPartMaxBytes with its
 * `event:`/`data:` lines and one item at least: none of them, none. What a stream sends after its
 * snapshot (the rows that changed within a flush, a busy fleet's every row; the security events,
 * counts and anomalies of an attack) comes within the same budget as a part of it, so a page on the
 * slowest link promised hears from its stream within its silence whatever the fleet does. Each
 * event stands on its own: a page applies them one after the other, as it would the one.
 *
 * `members`: numbers every event carries beside the items (`total`: how many there were in all).
 * `newestFirst`: the items are events newest first, which a page puts before those it holds
 * (store.js): the oldest go first, so that the page holds them all newest first, each event's
 * newest first as ever.
 */
export function* boundedEvents(
  event: string,
  key: string,
  items: readonly string[],
  { brackets = '[]', newestFirst = false, members }: { brackets?: '[]' | '{}'; newestFirst?: boolean; members?: Record<string, number> } = {},
): Generator<string> {
  const head = `event: ${event}\ndata: {${JSON.stringify(key)}:${brackets[0]}`;
  // `members`: a few more of the event's members, in each event (counted in its budget).
  const more = members ? Object.entries(members).map(([k, v]) => `,${JSON.stringify(k)}:${JSON.stringify(v)}`).join('') : '';
  const foot = `${brackets[1]}${more}}\n\n`;
  const fixed = Buffer.byteLength(head) + Buffer.byteLength(foot);
  if (!newestFirst) {
    for (const part of groups(items, fixed)) yield `${head}${part.join(',')}${foot}`;
    return;
  }
  for (const part of groups([...items].reverse(), fixed)) yield `${head}${part.reverse().join(',')}${foot}`;
}

/**
 * A `security` update as events within the budget: the one event it was when it fits (the usual
 * case), else its events (newest first, as boundedEvents puts them), the per-device counts that
 * changed, and last the counts per reason, how many devices have any and how many events of each
 * source there were. Under an attack across the
 * fleet every device's count changes within a flush: one event of them was megabytes.
 */
export function* securityEvents(update: SecurityUpdate): Generator<string> {
  const whole = `event: security\ndata: ${JSON.stringify(update)}\n\n`;
  if (Buffer.byteLength(whole) <= CONSOLE.liveSnapshotPartMaxBytes) {
    yield whole;
    return;
  }
  yield* boundedEvents('security', 'events', update.events.map((e) => JSON.stringify(e)), { newestFirst: true });
  yield* boundedEvents('security', 'byDevice', Object.entries(update.byDevice).map(([id, n]) => `${JSON.stringify(id)}:${n}`), { brackets: '{}' });
  yield `event: security\ndata: ${JSON.stringify({ byReason: update.byReason, devices: update.devices, recentTotal: update.recentTotal, reportedTotal: update.reportedTotal })}\n\n`;
}
