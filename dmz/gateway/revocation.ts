import { readFileSync, statSync } from 'node:fs';
import { TIMINGS } from '../../shared/limits.ts';
import type { Logger } from '../../shared/logger.ts';

/**
 * The revoked certificate serials (GATEWAY_REVOKED_SERIALS_FILE, written by
 * scripts/revoke-device.sh). Re-read when it changes, within two seconds and without a restart;
 * `onChange` then lets the gateway close connections of certificates revoked meanwhile.
 */
export class RevokedSerials {
  private serials = new Set<string>();
  private mtimeMs = -1;
  private readonly timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly path: string | undefined,
    private readonly log: Logger,
    private readonly onChange: (revoked: ReadonlySet<string>) => void = () => undefined,
  ) {
    if (!path) return;
    this.reload();
    this.timer = setInterval(() => this.reload(), TIMINGS.revokedSerialsReloadMs);
    this.timer.unref();
  }

  has(serial: string): boolean {
    return this.serials.has(serial.toUpperCase());
  }

  close(): void {
    clearInterval(this.timer);
  }

  private reload(): void {
    if (!this.path) return;
    let mtimeMs: number;
    try {
      mtimeMs = statSync(this.path).mtimeMs;
    } catch {
      if (this.mtimeMs !== 0) this.log.warn({ path: this.path }, 'revoked-serials file missing: no certificate is treated as revoked');
      this.mtimeMs = 0;
      this.serials = new Set();
      return;
    }
    if (mtimeMs === this.mtimeMs) return;
    this.mtimeMs = mtimeMs;
    this.serials = new Set(
      readFileSync(this.path, 'utf8')
        .split('\n')
        .map((l) => l.trim().toUpperCase())
        .filter((l) => /^[0-9A-F]+$/.test(l)),
    );
    this.log.info({ revoked: this.serials.size }, 'revoked certificate serials loaded');
    this.onChange(this.serials);
  }
}
