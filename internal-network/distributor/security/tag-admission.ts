import { existsSync } from 'node:fs';
import { z } from 'zod';
import { DeviceIdSchema } from '../../../shared/contract/primitives.ts';
import { readRegularFileSync, replaceFileDurablySync } from '../../../shared/durable-fs.ts';
import { FieldStreamError } from '../../../shared/errors.ts';
import { LimitedLog } from '../../../shared/limited-log.ts';
import { appendLinesSync } from '../../../shared/line-file.ts';
import { TIMINGS } from '../../../shared/limits.ts';
import type { Logger } from '../../../shared/logger.ts';

/**
 * The tag value an event is stored under when its own value is not admitted. The contract's
 * eventType and severity hold only [A-Za-z0-9._-] (shared/contract/payloads.ts), so no device can
 * send `~other`: a point under it is always one the admission moved, never a device's own.
 */
export const OVERFLOW_TAG_VALUE = '~other';

export interface TagAdmissionOptions {
  /** the tag's name, for logs and metrics (`event_type`, `severity`) */
  tag: string;
  /** most values one device may use at once (LIMITS.eventTypesPerDevice, severitiesPerDevice) */
  perDevice: number;
  /** most distinct values of the fleet at once (LIMITS.eventTypesTotal, severitiesTotal) */
  total: number;
  /** where the values admitted are remembered across restarts (a JSON object a line) */
  file: string;
  /** milliseconds after which a device's value it has not used is forgotten (TIMINGS.eventTagAdmissionTtlMs) */
  ttlMs?: number;
  /** tests: the clock */
  now?: () => number;
  /**
   * Reads the file and never writes it: admits() then admits only what the file holds, nothing new.
   * For `fieldstream-admin dead-letters replay`, which reads a distributor's file while that
   * distributor may be running: two processes appending to one file, or one compacting it under the
   * other's appends, would lose values the distributor admitted (dead-letter-replay.ts).
   */
  readOnly?: boolean;
}

/** One line of the file: device `d` used value `v`, last written at `at` (epoch ms). */
const LineSchema = z.object({
  d: DeviceIdSchema,
  v: z.string().min(1).max(64).regex(/^[A-Za-z0-9._-]+$/),
  at: z.number().int().min(0),
});

/**
 * Which values of a tag a device chooses (an event's `event_type` or `severity`) the distributor
 * stores as tag values. Each value of a tag is a series in InfluxDB, and InfluxDB 1.x refuses a
 * tag's new values past `max-values-per-tag` (100,000 by default), for every device: a device
 * inventing event types (the gateway lets one send 5,000 messages/s) reached it in a minute, after
 * which every device's events of any new type were dead-lettered for good. The values must stay tags
 * (dashboards and the console group by them), so they are bounded: a device keeps the values it
 * uses; a value new to it is admitted while it uses fewer than `perDevice` values and the fleet
 * fewer than `total` (a value another device already uses costs the fleet nothing). Past either, the
 * caller stores the event all the same, under {@link OVERFLOW_TAG_VALUE}, with the device's value in
 * a field (event-tags.ts): nothing is lost, only its grouping. Bounded per device, not only per
 * fleet, so that one device's series (its types times its severities) stay bounded too, and one
 * device alone cannot use up the fleet's room.
 *
 * Each (device, value) is remembered in the distributor's state folder, appended before anything
 * is stored under it (a crash in between leaves a value counted with no series, never a series
 * uncounted), with when it was last used; a restart does not open the bound again. A value a device
 * has not used for `ttlMs` is forgotten for it, making room: a device's types change with its
 * firmware. The file is compacted at each start and once it holds four lines per value; a line
 * the schema refuses (damaged) is skipped and logged.
 */
export class TagAdmission {
  /** `device\nvalue` → when last used (epoch ms) */
  private readonly used = new Map<string, number>();
  /** `device\nvalue` → when last written to the file: written again once half a TTL later */
  private readonly written = new Map<string, number>();
  /** device → values it uses */
  private readonly perDevice = new Map<string, number>();
  /** value → devices using it */
  private readonly perValue = new Map<string, number>();
  private readonly ttlMs: number;
  private readonly now: () => number;
  private lines = 0;
  /** the file's name synced since it was made (line-file.ts appendLinesSync) */
  private readonly named = new Set<string>();
  private lastSweep = -Infinity;
  /** `device` → when its overflow was last logged */
  private readonly loggedAt = new Map<string, number>();
  private readonly overflowLog: LimitedLog;
  readonly stats = { overflowed: 0, forgotten: 0, damagedLines: 0 };

  constructor(
    private readonly o: TagAdmissionOptions,
    private readonly log: Logger,
  ) {
    this.ttlMs = o.ttlMs ?? TIMINGS.eventTagAdmissionTtlMs;
    this.now = o.now ?? Date.now;
    // Once per device and tag per TIMINGS.eventTagOverflowLogMs (loggedAt), and, across devices, a
    // few lines per window: a fleet of hostile devices is not a line each.
    this.overflowLog = new LimitedLog(log, { level: 'warn', maxPerWindow: 10, windowMs: TIMINGS.eventTagOverflowLogMs, what: `events stored under ${o.tag}=${OVERFLOW_TAG_VALUE}` });
    const now = this.now();
    // The most recently used first, so that lowered bounds keep those.
    const entries = [...this.read(now)].filter(([, at]) => now - at <= this.ttlMs).sort((x, y) => y[1] - x[1]);
    for (const [key, at] of entries) {
      const [device, value] = split(key);
      if (!this.room(device, value)) continue;
      this.add(key, device, value, at);
      this.written.set(key, at);
    }
    // Compacted at each start: the values forgotten, the damaged lines and a line a crash cut short go.
    if (!o.readOnly) this.compact();
  }

  /**
   * Whether `device`'s events may be stored under `value` as this tag's value; a value new to the
   * device is admitted (and remembered) while there is room. False: counted and logged (limited).
   */
  admits(device: string, value: string): boolean {
    const now = this.now();
    const key = `${device}\n${value}`;
    const at = this.used.get(key);
    if (this.o.readOnly) {
      if (this.holds(device, value)) return true;
      this.overflowed(device, value, now);
      return false;
    }
    if (at !== undefined && now - at <= this.ttlMs) {
      this.used.set(key, now);
      // Written again once half a TTL passed: after a restart it is forgotten no sooner than half a TTL after it was last used.
      if (now - (this.written.get(key) ?? 0) >= this.ttlMs / 2) this.remember(key, device, value, now);
      return true;
    }
    if (at !== undefined) this.drop(key, device, value);
    if (!this.room(device, value) && now - this.lastSweep >= TIMINGS.eventTagAdmissionSweepMs) this.forgetUnused(now);
    if (this.room(device, value)) {
      this.add(key, device, value, now);
      try {
        this.remember(key, device, value, now);
      } catch (err) {
        // Not in the file, not counted: kept in memory, the value was admitted without a write at
        // its message's retry, its events stored, and a restart did not count it (the bound open
        // again by as many). A line the disk took though the append failed (line-file.ts
        // FILE_APPEND_UNCERTAIN) counts it after a restart, a value with no series: the safe side.
        this.used.delete(key);
        decrement(this.perDevice, device);
        decrement(this.perValue, value);
        throw err;
      }
      return true;
    }
    this.overflowed(device, value, now);
    return false;
  }

  /**
   * Whether `device`'s `value` is admitted now (used within the TTL), without admitting it or
   * marking it used: what the dead-letter replay asks of each distributor's slot.
   */
  holds(device: string, value: string): boolean {
    const at = this.used.get(`${device}\n${value}`);
    return at !== undefined && this.now() - at <= this.ttlMs;
  }

  /** (device, value) pairs remembered. */
  get size(): number {
    return this.used.size;
  }

  /** Distinct values remembered across the fleet. */
  get values(): number {
    return this.perValue.size;
  }

  private room(device: string, value: string): boolean {
    if ((this.perDevice.get(device) ?? 0) >= this.o.perDevice) return false;
    return this.perValue.has(value) || this.perValue.size < this.o.total;
  }

  private add(key: string, device: string, value: string, at: number): void {
    this.used.set(key, at);
    this.perDevice.set(device, (this.perDevice.get(device) ?? 0) + 1);
    this.perValue.set(value, (this.perValue.get(value) ?? 0) + 1);
  }

  private drop(key: string, device: string, value: string): void {
    this.used.delete(key);
    this.written.delete(key);
    decrement(this.perDevice, device);
    decrement(this.perValue, value);
    this.stats.forgotten++;
  }

  private forgetUnused(now: number): void {
    this.lastSweep = now;
    for (const [key, at] of this.used) {
      if (now - at <= this.ttlMs) continue;
      const [device, value] = split(key);
      this.drop(key, device, value);
    }
    for (const [device, at] of this.loggedAt) if (now - at >= TIMINGS.eventTagOverflowLogMs) this.loggedAt.delete(device);
  }

  private overflowed(device: string, value: string, now: number): void {
    this.stats.overflowed++;
    const last = this.loggedAt.get(device);
    if (last !== undefined && now - last < TIMINGS.eventTagOverflowLogMs) return;
    // Bounded by the devices that overflowed in the last window: older entries go at the sweeps, and here past a size.
    if (this.loggedAt.size >= 4 * this.o.total) this.loggedAt.clear();
    this.loggedAt.set(device, now);
    this.overflowLog.write(
      {
        deviceId: device,
        tag: this.o.tag,
        value,
        deviceValues: this.perDevice.get(device) ?? 0,
        perDevice: this.o.perDevice,
        fleetValues: this.perValue.size,
        total: this.o.total,
      },
      `security: a device's ${this.o.tag} past the bound of its values; its events are stored under ${this.o.tag}=${OVERFLOW_TAG_VALUE}, the value in the field ${this.o.tag}_value`,
      now,
    );
  }

  private remember(key: string, device: string, value: string, now: number): void {
    // The file holds a line per writing: rewritten whole, with one line per pair, once it holds four per pair.
    if (this.lines >= 4 * Math.max(this.used.size, 256)) {
      this.compact();
      return;
    }
    const closeFailed = appendLinesSync(this.o.file, line(device, value, now), 0o600, this.named);
    // Once written only: set before, a refused line was taken as written, and not tried again.
    this.written.set(key, now);
    if (closeFailed) this.log.warn({ code: 'FILE_CLOSE_FAILED', err: closeFailed.message, path: this.o.file }, 'tag admission file synced, its close failed; the line counts as written');
    this.lines++;
  }

  private compact(): void {
    if (this.used.size === 0 && !existsSync(this.o.file)) return;
    const out: string[] = [];
    for (const [key, at] of this.used) {
      const [device, value] = split(key);
      out.push(line(device, value, at));
      this.written.set(key, at);
    }
    replaceFileDurablySync(this.o.file, out);
    this.lines = out.length;
  }

  /** The pairs of the file with when each was last used; a damaged line skipped and logged. */
  private read(now: number): Map<string, number> {
    let text: string;
    try {
      text = readRegularFileSync(this.o.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return new Map();
      throw new FieldStreamError('CONFIG_FILE_UNREADABLE', `The admitted ${this.o.tag} values (${this.o.file}) cannot be read: ${(err as Error).message}`);
    }
    // A line cut short by a crash during its append is no value that was admitted: the last line
    // counts only when its newline made it to disk.
    const lines = text.split('\n');
    lines.pop();
    const out = new Map<string, number>();
    for (const [i, raw] of lines.entries()) {
      if (raw === '') continue;
      let parsed: z.infer<typeof LineSchema> | undefined;
      try {
        const r = LineSchema.safeParse(JSON.parse(raw));
        if (r.success) parsed = r.data;
      } catch {
        // not JSON: damaged, as below
      }
      if (parsed === undefined) {
        this.stats.damagedLines++;
        if (this.stats.damagedLines <= 10) this.log.warn({ file: this.o.file, line: i + 1, tag: this.o.tag }, 'a damaged line of the admitted event tag values skipped');
        continue;
      }
      const key = `${parsed.d}\n${parsed.v}`;
      out.set(key, Math.max(out.get(key) ?? 0, Math.min(parsed.at, now)));
    }
    if (this.stats.damagedLines > 10) this.log.warn({ file: this.o.file, tag: this.o.tag, damagedLines: this.stats.damagedLines }, 'damaged lines of the admitted event tag values skipped');
    return out;
  }
}

function line(device: string, value: string, at: number): string {
  return `${JSON.stringify({ d: device, v: value, at })}\n`;
}

function split(key: string): [string, string] {
  const i = key.indexOf('\n');
  return [key.slice(0, i), key.slice(i + 1)];
}

function decrement(map: Map<string, number>, key: string): void {
  const n = (map.get(key) ?? 0) - 1;
  if (n <= 0) map.delete(key);
  else map.set(key, n);
}
