import { closeSync, existsSync, fsyncSync, openSync, readFileSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { FieldStreamError } from '../../../shared/errors.ts';
import { LimitedLog } from '../../../shared/limited-log.ts';
import { TIMINGS } from '../../../shared/limits.ts';
import type { Logger } from '../../../shared/logger.ts';

export interface GatewayAdmissionOptions {
  /** DISTRIBUTOR_GATEWAYS: the gateway ids known; non-empty, only these are admitted */
  listed: readonly string[];
  /** DISTRIBUTOR_MAX_GATEWAYS: without a list, the most distinct gateway ids admitted */
  max: number;
  /** where, without a list, the ids admitted are remembered across restarts (one per line) */
  file: string;
}

/**
 * Which gateway ids the distributor stores anything under. A gateway's id is the DMZ's word (the
 * topic and the envelope name it; no key on the internal network proves it), and what is stored of
 * a gateway's presence (`gateway_status`) and of a device's (`device_status`) is tagged with it:
 * one InfluxDB series, one PostgreSQL key, one line of the console's fleet per id. A compromised DMZ
 * inventing ids without end grew them without bound. So either the operator lists the gateways
 * (DISTRIBUTOR_GATEWAYS: nothing else is admitted), or the first DISTRIBUTOR_MAX_GATEWAYS ids seen
 * are admitted and remembered in the distributor's state folder (a restart does not open the bound
 * again), and any id past them is refused (SECURITY_UNKNOWN_GATEWAY: counted, logged, not stored).
 * A reading through a gateway carries the gateway's id in no tag (points.ts) and is taken whatever
 * it names: its device's signature is what is trusted, and refusing it would only hold real data back.
 */
export class GatewayAdmission {
  private readonly admitted: Set<string>;
  private readonly refusedLog: LimitedLog;
  private fullLogged = false;
  readonly stats = { refused: 0 };

  constructor(
    private readonly o: GatewayAdmissionOptions,
    private readonly log: Logger,
  ) {
    this.refusedLog = new LimitedLog(log, { level: 'warn', maxPerWindow: 10, windowMs: TIMINGS.floodLogIntervalMs, what: 'gateway ids refused' });
    if (o.listed.length > 0) {
      this.admitted = new Set(o.listed);
      return;
    }
    this.admitted = new Set(readIds(o.file).slice(0, o.max));
  }

  /** Whether anything may be stored under `gatewayId`; without a list, admits (and remembers) a new id while there is room. */
  admits(gatewayId: string): boolean {
    if (this.admitted.has(gatewayId)) return true;
    if (this.o.listed.length === 0 && this.admitted.size < this.o.max) {
      // Remembered before anything is stored under it: a crash in between leaves one id counted
      // that has no series yet, never a series that the bound does not count.
      appendDurably(this.o.file, `${gatewayId}\n`);
      this.admitted.add(gatewayId);
      return true;
    }
    this.stats.refused++;
    if (this.o.listed.length === 0 && !this.fullLogged) {
      this.fullLogged = true;
      this.log.error({ code: 'SECURITY_UNKNOWN_GATEWAY', max: this.o.max, file: this.o.file }, 'DISTRIBUTOR_MAX_GATEWAYS gateway ids admitted: any new id is refused; list the real gateways in DISTRIBUTOR_GATEWAYS');
    }
    this.refusedLog.write({ code: 'SECURITY_UNKNOWN_GATEWAY', gatewayId }, 'security: a gateway id not admitted (DISTRIBUTOR_GATEWAYS, DISTRIBUTOR_MAX_GATEWAYS); its presence is not stored');
    return false;
  }

  /** Gateway ids admitted. */
  get size(): number {
    return this.admitted.size;
  }
}

function readIds(file: string): string[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new FieldStreamError('CONFIG_FILE_UNREADABLE', `The admitted gateway ids (${file}) cannot be read: ${(err as Error).message}`);
  }
  // A line cut short by a crash during its append is no id that was admitted: the last line counts
  // only when its newline made it to disk.
  const lines = text.split('\n');
  lines.pop();
  return [...new Set(lines.filter((l) => l !== ''))];
}

function appendDurably(file: string, text: string): void {
  const created = !existsSync(file);
  const fd = openSync(file, 'a');
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  // A file just made is on disk only once its folder's entry is (fsync(2)).
  if (created) {
    const dir = openSync(dirname(file), 'r');
    try {
      fsyncSync(dir);
    } finally {
      closeSync(dir);
    }
  }
}
