import { readFileSync } from 'node:fs';
import { FieldStreamError } from '../../shared/errors.ts';
import { TIMINGS } from '../../shared/limits.ts';
import type { Logger } from '../../shared/logger.ts';
import { stampOf } from '../../shared/reloaded-file.ts';

/**
 * The revoked certificate serials (GATEWAY_REVOKED_SERIALS_FILE, written by
 * scripts/revoke-device.sh). Re-read when it changes, within two seconds and without a restart;
 * `onChange` then lets the gateway close connections of certificates revoked meanwhile.
 *
 * Revocation only ever adds to the list (a new CA starts a new one, with a restart of the
 * gateways that trust it), so what was read stays in force when the file cannot be read, is gone
 * or reads empty: a folder or a permission mistake, a copy caught half-way (`cp` truncates first),
 * or a file renamed away for a moment would otherwise let every revoked device back in for as long,
 * and an error thrown from the timer would have ended the gateway. A file lacking serials read
 * before (an older copy, the list of a restored folder) adds what it holds to them.
 *
 * At start there is nothing read yet to keep: a file that is there but cannot be read (a folder, no
 * permission, an I/O error) throws CONFIG_FILE_UNREADABLE and the gateway does not start, rather
 * than let every revoked certificate in until it can be read. A missing one is an empty list.
 */
export class RevokedSerials {
  private serials = new Set<string>();
  /** the version of the file last taken (shared/reloaded-file.ts stampOf: inode, size, mtime) */
  private stamp: string | undefined;
  /** the last problem logged, so that one that lasts is logged once */
  private problem: string | undefined;
  private readonly timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly path: string | undefined,
    private readonly log: Logger,
    private readonly onChange: (revoked: ReadonlySet<string>) => void = () => undefined,
  ) {
    if (!path) return;
    this.reload(true);
    this.timer = setInterval(() => this.reload(), TIMINGS.revokedSerialsReloadMs);
    this.timer.unref();
  }

  has(serial: string): boolean {
    return this.serials.has(serial.toUpperCase());
  }

  close(): void {
    clearInterval(this.timer);
  }

  /** `atStart`: a file that is there but cannot be read throws CONFIG_FILE_UNREADABLE (see the class). */
  private reload(atStart = false): void {
    if (!this.path) return;
    let stamp: string;
    let text: string;
    try {
      // Not the mtime alone: a copy that keeps the old one (cp -p, rsync -t, a restore) or an
      // append within one tick of a coarse clock went unnoticed, its serials never revoked.
      stamp = stampOf(this.path);
      if (stamp === this.stamp) return;
      text = readFileSync(this.path, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (atStart && code !== 'ENOENT') {
        throw new FieldStreamError('CONFIG_FILE_UNREADABLE', `GATEWAY_REVOKED_SERIALS_FILE ${this.path} cannot be read (${code ?? (err as Error).message}); fix the path or its permissions.`, { path: this.path });
      }
      // Read again at the next look (the stamp not taken): the list read last stays in force.
      this.report(`unreadable: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, this.serials.size === 0 ? 'revoked-serials file cannot be read: no certificate is treated as revoked until it can' : 'revoked-serials file cannot be read: the serials read last stay revoked');
      return;
    }
    const serials = new Set(
      text
        .split('\n')
        .map((l) => l.trim().toUpperCase())
        .filter((l) => /^[0-9A-F]+$/.test(l)),
    );
    const dropped = [...this.serials].filter((s) => !serials.has(s));
    this.stamp = stamp;
    if (dropped.length > 0) {
      // Half-written, an older copy, or the list of a restored folder with revocations made since:
      // what it lacks stays revoked, and what it adds is taken. Refused whole, a certificate revoked
      // after a restore kept connecting until the gateways restarted.
      this.report(`dropped ${dropped.length}`, 'revoked-serials file lacks serials read before (being written? an older copy? a restore?): they stay revoked; the serials it adds are taken');
      for (const s of dropped) serials.add(s);
    } else {
      this.problem = undefined;
    }
    if (serials.size === this.serials.size && this.serials.size > 0) return;
    this.serials = serials;
    this.log.info({ revoked: this.serials.size }, 'revoked certificate serials loaded');
    this.onChange(this.serials);
  }

  private report(problem: string, message: string): void {
    if (this.problem === problem) return;
    this.problem = problem;
    this.log.warn({ code: 'CONFIG_FILE_UNREADABLE', path: this.path, problem, revoked: this.serials.size }, message);
  }
}
