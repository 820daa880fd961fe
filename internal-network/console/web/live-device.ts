import { CONSOLE } from '../../../shared/limits.ts';
import type { DeviceDetail } from './live.ts';
import { liveReading, liveRow } from './live-snapshot.ts';

/** Characters of a command's parameters or result the device page shows (json(v, 120), public/pages/device.js). */
const COMMAND_SHOWN_CHARS = 120;

/** The lists a `device` event may leave items out of, in the order they give way (oldest items first). */
const GIVE_WAY = ['anomalies', 'security', 'events', 'commands', 'numericFields'] as const;
type ListName = (typeof GIVE_WAY)[number];

/** JSON text of `v` cut to what the page shows of it, ending in "…". */
function shown(v: unknown): string {
  const text = JSON.stringify(v) ?? '';
  return text.length > COMMAND_SHOWN_CHARS ? `${text.slice(0, COMMAND_SHOWN_CHARS)}…` : text;
}

/** A command (the command API's record) as the page shows it: past CONSOLE.liveDeviceCommandMaxBytes,
 * its parameters and result as their JSON text cut to what the page shows, and `cut: true`. */
function liveCommand(c: unknown): unknown {
  if (!c || typeof c !== 'object' || Buffer.byteLength(JSON.stringify(c)) <= CONSOLE.liveDeviceCommandMaxBytes) return c;
  const r = c as Record<string, unknown>;
  const out: Record<string, unknown> = { ...r, cut: true };
  if (r.params !== undefined) out.params = shown(r.params);
  const response = r.response;
  if (response && typeof response === 'object') {
    const res = response as Record<string, unknown>;
    out.response = { ...res, ...(res.result !== undefined ? { result: shown(res.result) } : {}) };
  }
  return out;
}

/**
 * A device page's `device` event, within CONSOLE.liveSnapshotPartMaxBytes as every other event of
 * its stream: its detail was as large as its readings, events and commands (a reading of
 * LIMITS.readingMaxFields fields of LIMITS.stringMaxChars characters is megabytes), and a page on the
 * slowest link promised never had it within its silence, reconnecting for ever. Its latest reading
 * keeps every field (strings cut) when the event fits with it; else it, the row, health and events
 * are bounded as the fleet's rows (liveRow: values cut, fields left out
 * counted in `omitted`; the latest and health marked `cut`, and the page reads the whole from GET
 * /api/devices/:id); a large command has its parameters and result cut to what the page shows.
 * Then, while it is over the budget, the oldest items of its lists give way, anomalies first
 * (GIVE_WAY), each list's count of left out items in `omitted`.
 */
export function deviceEventText(detail: DeviceDetail): string {
  const budget = CONSOLE.liveSnapshotPartMaxBytes;
  const lists: Record<ListName, unknown[]> = {
    numericFields: [...detail.numericFields],
    commands: detail.commands.map(liveCommand),
    // Fields bounded as a row's; the event's type and severity kept.
    events: detail.events.map((e) => ({ ...e, ...liveReading(e) })),
    security: [...detail.security],
    anomalies: [...detail.anomalies],
  };
  // Every field of the latest reading, its strings cut, when the whole event fits with it: the page
  // charts each numeric field from it, and a device of a hundred numeric fields passes the row's
  // 2,000 characters (its charts of the fields left out stopped until a reload). Else cut as a row.
  let latest = liveReading(detail.latest, true, Number.POSITIVE_INFINITY);
  let health = liveReading(detail.health, true);
  const row = liveRow(detail.row);
  const omitted: Partial<Record<ListName, number>> = {};
  const text = () => `event: device\ndata: ${JSON.stringify({ ...detail, row, latest, health, ...lists, ...(Object.keys(omitted).length > 0 ? { omitted } : {}) })}\n\n`;
  let t = text();
  if (Buffer.byteLength(t) > budget) {
    latest = liveReading(detail.latest, true);
    t = text();
  }
  for (const name of GIVE_WAY) {
    const list = lists[name];
    // Each item's bytes and its comma counted off, then measured again: `omitted` takes a few.
    while (Buffer.byteLength(t) > budget && list.length > 0) {
      let over = Buffer.byteLength(t) - budget;
      while (over > 0 && list.length > 0) {
        over -= Buffer.byteLength(JSON.stringify(list.pop()) ?? '') + 1;
        omitted[name] = (omitted[name] ?? 0) + 1;
      }
      t = text();
    }
  }
  // Only a row, latest reading and health each at their bounds with nothing else left: the readings' fields give way too.
  if (Buffer.byteLength(t) > budget) {
    const none = (r: DeviceDetail['latest']) => r && { time: r.time, fields: {}, omitted: Object.keys(r.fields).length, cut: true as const };
    health = none(detail.health);
    t = text();
    if (Buffer.byteLength(t) > budget) {
      latest = none(detail.latest);
      t = text();
    }
  }
  return t;
}
