import { existsSync } from 'node:fs';
import { z } from 'zod';
import { GatewayIdSchema } from '../../../shared/contract/envelope.ts';
import { readRegularFileSync, replaceFileDurablySync } from '../../../shared/durable-fs.ts';
import { FieldStreamError } from '../../../shared/errors.ts';
import { LimitedLog } from '../../../shared/limited-log.ts';
import { appendLinesSync } from '../../../shared/line-file.ts';
import { TIMINGS } from '../../../shared/limits.ts';
import type { Logger } from '../../../shared/logger.ts';

export interface GatewayAdmissionOptions {
  /** DISTRIBUTOR_GATEWAYS: the gateway ids known; non-empty, only these are admitted */
  listed: readonly string[];
  /** DISTRIBUTOR_MAX_GATEWAYS: without a list, the most distinct gateway ids admitted at once */
  max: number;
  /** where, without a list, the ids admitted are remembered across restarts (`id time` a line) */
  file: string;
  /** milliseconds after which an id not heard from is forgotten (TIMINGS.gatewayAdmissionTtlMs) */
  ttlMs?: number;
  /** tests: the clock */
  now?: () => number;
}

/**
 * Which gateway ids the distributor stores anything under. A gateway's id is the DMZ's word (the
 * topic and the envelope name it; no key on the internal network proves it), and what is stored of
 * a gateway's presence (`gateway_status`) and of a device's (`device_status`) is tagged with it:
 * one InfluxDB series, one PostgreSQL key, one line of the console's fleet per id. A compromised DMZ
 * inventing ids without end grew them without bound. So either the operator lists the gateways
 * (DISTRIBUTOR_GATEWAYS: nothing else is admitted), or at most DISTRIBUTOR_MAX_GATEWAYS ids are
 * admitted at once, each remembered in the distributor's state folder with when it was last heard
 * from (a restart does not open the bound again), and any id past them is refused
 * (SECURITY_UNKNOWN_GATEWAY: counted, logged, not stored).
 *
 * An id not heard from for TIMINGS.gatewayAdmissionTtlMs is forgotten, making room: a gateway's id
 * is new at each of its starts unless GATEWAY_ID is set (its default is the host name with a random
 * suffix; neither compose file sets it, and Kubernetes' autoscaler adds and removes gateways), so
 * ids remembered for ever filled the bound with the gateways' own restarts, and every gateway
 * started after that was refused. The bound is thus on the ids live at once, and on new ids per
 * TTL: a DMZ inventing them adds at most DISTRIBUTOR_MAX_GATEWAYS series each TTL, which the
 * database's retention ends as it ends those of the gateways' restarts.
 *
 * A reading through a gateway carries the gateway's id in no tag (points.ts) and is taken whatever
 * it names: its device's signature is what is trusted, and refusing it would only hold real data back.
 */
export class GatewayAdmission {
  /** id → when last heard from (epoch ms); without a list */
  private readonly heard = new Map<string, number>();
  /** id → when it was last written to the file: an id heard from is written again once half a TTL later */
  private readonly written = new Map<string, number>();
  private readonly listed: ReadonlySet<string>;
  private readonly ttlMs: number;
  private readonly now: () => number;
  private lines = 0;
  /** the file's name synced since it was made (line-file.ts appendLinesSync) */
  private readonly named = new Set<string>();
  private readonly refusedLog: LimitedLog;
  private fullLogged = false;
  readonly stats = { refused: 0, forgotten: 0 };

  constructor(
    private readonly o: GatewayAdmissionOptions,
    private readonly log: Logger,
  ) {
    this.refusedLog = new LimitedLog(log, { level: 'warn', maxPerWindow: 10, windowMs: TIMINGS.floodLogIntervalMs, what: 'gateway ids refused' });
    this.listed = new Set(o.listed);
    this.ttlMs = o.ttlMs ?? TIMINGS.gatewayAdmissionTtlMs;
    this.now = o.now ?? Date.now;
    if (this.listed.size > 0) return;
    const now = this.now();
    // The most recently heard first, so that a lowered DISTRIBUTOR_MAX_GATEWAYS keeps those.
    const entries = [...readEntries(o.file, now, log)].filter(([, at]) => now - at <= this.ttlMs).sort((x, y) => y[1] - x[1]).slice(0, o.max);
    for (const [id, at] of entries) {
      this.heard.set(id, at);
      this.written.set(id, at);
    }
    // Compacted at each start: the ids forgotten (and a line a crash cut short) go.
    this.compact();
  }

  /** Whether anything may be stored under `gatewayId`; without a list, admits (and remembers) a new id while there is room. */
  admits(gatewayId: string): boolean {
    if (this.listed.size > 0) {
      if (this.listed.has(gatewayId)) return true;
      return this.refuse(gatewayId);
    }
    const now = this.now();
    const at = this.heard.get(gatewayId);
    if (at !== undefined && now - at <= this.ttlMs) {
      this.heard.set(gatewayId, now);
      // Written again once half a TTL passed: after a restart it is forgotten no sooner than half a TTL after it was last heard from.
      if (now - (this.written.get(gatewayId) ?? 0) >= this.ttlMs / 2) this.remember(gatewayId, now);
      return true;
    }
    if (at !== undefined || this.heard.size >= this.o.max) this.forgetSilent(now);
    if (this.heard.size < this.o.max) {
      // Remembered before anything is stored under it: a crash in between leaves one id counted
      // that has no series yet, never a series that the bound does not count.
      this.remember(gatewayId, now);
      this.heard.set(gatewayId, now);
      return true;
    }
    if (!this.fullLogged) {
      this.fullLogged = true;
      this.log.error(
        { code: 'SECURITY_UNKNOWN_GATEWAY', max: this.o.max, file: this.o.file, ttlMs: this.ttlMs },
        'DISTRIBUTOR_MAX_GATEWAYS gateway ids heard from lately: any new id is refused until one falls silent; list the real gateways in DISTRIBUTOR_GATEWAYS',
      );
    }
    return this.refuse(gatewayId);
  }

  /** Gateway ids admitted. */
  get size(): number {
    return this.listed.size > 0 ? this.listed.size : this.heard.size;
  }

  private refuse(gatewayId: string): false {
    this.stats.refused++;
    this.refusedLog.write({ code: 'SECURITY_UNKNOWN_GATEWAY', gatewayId }, 'security: a gateway id not admitted (DISTRIBUTOR_GATEWAYS, DISTRIBUTOR_MAX_GATEWAYS); its presence is not stored');
    return false;
  }

  private forgetSilent(now: number): void {
    for (const [id, at] of this.heard) {
      if (now - at <= this.ttlMs) continue;
      this.heard.delete(id);
      this.written.delete(id);
      this.stats.forgotten++;
    }
  }

  private remember(gatewayId: string, now: number): void {
    this.written.set(gatewayId, now);
    // The file holds a line per writing: rewritten whole, with one line per id, once it holds four per id.
    if (this.lines >= 4 * this.o.max) {
      this.heard.set(gatewayId, now);
      this.compact();
      return;
    }
    const closeFailed = appendLinesSync(this.o.file, `${gatewayId} ${now}\n`, 0o600, this.named);
    if (closeFailed) this.log.warn({ code: 'FILE_CLOSE_FAILED', err: closeFailed.message, path: this.o.file }, 'gateway admission file synced, its close failed; the line counts as written');
    this.lines++;
  }

  private compact(): void {
    const ids = [...this.heard];
    if (ids.length === 0 && !existsSync(this.o.file)) return;
    replaceFileDurablySync(this.o.file, ids.map(([id, at]) => `${id} ${at}\n`).join(''));
    this.lines = ids.length;
  }
}

/**
 * A line of the file: a gateway id, a space and when it was last heard from (epoch ms); an earlier
 * version's has the id alone. Checked, as the file may be damaged (a block a power cut left as
 * zeros) or edited: taken as it came, any text was an admitted id, holding a place of the bound.
 */
const LineSchema = z.union([
  z.tuple([GatewayIdSchema, z.string().regex(/^\d{1,16}$/).transform(Number)]),
  z.tuple([GatewayIdSchema]).transform(([id]) => [id, undefined] as const),
]);

/** The ids of `file` with when each was last heard from; a line without a time (an earlier version's) counts as heard `now`; a damaged one is skipped and said. */
function readEntries(file: string, now: number, log: Logger): Map<string, number> {
  let text: string;
  try {
    text = readRegularFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return new Map();
    throw new FieldStreamError('CONFIG_FILE_UNREADABLE', `The admitted gateway ids (${file}) cannot be read: ${(err as Error).message}`);
  }
  // A line cut short by a crash during its append is no id that was admitted: the last line counts
  // only when its newline made it to disk.
  const lines = text.split('\n');
  lines.pop();
  const out = new Map<string, number>();
  let damaged = 0;
  for (const line of lines) {
    if (line === '') continue;
    const parsed = LineSchema.safeParse(line.split(' '));
    if (!parsed.success) {
      damaged++;
      continue;
    }
    const [id, at] = parsed.data;
    out.set(id, Math.max(out.get(id) ?? 0, Math.min(at ?? now, now)));
  }
  if (damaged > 0) log.warn({ file, damagedLines: damaged }, 'damaged lines of the admitted gateway ids skipped, and left out of the file written again now');
  return out;
}
