import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { DeviceIdSchema } from '../../shared/contract/primitives.ts';
import { TIMINGS } from '../../shared/limits.ts';
import { parseSigningKey } from '../../shared/security/message-auth.ts';

/**
 * The internal network's registry of device signing keys: DIR/DEVICE_ID.key, written by
 * scripts/generate-client-cert.sh, removed by scripts/revoke-device.sh. A device's key is what the
 * internal side believes, whatever the DMZ says. Changes are picked up within a few seconds,
 * without a restart.
 */
export class DeviceKeyRegistry {
  private readonly cache = new Map<string, { key: Buffer | undefined; checkedAt: number; mtimeMs: number }>();
  private revoked = { ids: new Set<string>(), checkedAt: 0 };

  constructor(
    private readonly dir: string,
    private readonly revokedFile?: string,
  ) {}

  /** Revoked devices are refused even if a key of theirs is still around. */
  isRevoked(deviceId: string): boolean {
    return this.revokedIds().has(deviceId);
  }

  /** The revoked list (re-read at most every TIMINGS.deviceKeyRecheckMs). */
  revokedIds(): ReadonlySet<string> {
    const now = Date.now();
    if (this.revokedFile && now - this.revoked.checkedAt >= TIMINGS.deviceKeyRecheckMs) {
      let ids = new Set<string>();
      try {
        ids = new Set(readFileSync(this.revokedFile, 'utf8').split('\n').map((l) => l.trim()).filter(Boolean));
      } catch {
        /* nothing revoked yet */
      }
      this.revoked = { ids, checkedAt: now };
    }
    return this.revoked.ids;
  }

  /** Every device with a registered key (DIR/DEVICE_ID.key), whatever else is in the folder. */
  registered(): string[] {
    try {
      return readdirSync(this.dir)
        .filter((f) => f.endsWith('.key'))
        .map((f) => f.slice(0, -'.key'.length))
        .filter((id) => DeviceIdSchema.safeParse(id).success);
    } catch {
      return [];
    }
  }

  get(deviceId: string): Buffer | undefined {
    if (!DeviceIdSchema.safeParse(deviceId).success) return undefined;
    const now = Date.now();
    const hit = this.cache.get(deviceId);
    if (hit && now - hit.checkedAt < TIMINGS.deviceKeyRecheckMs) return hit.key;
    const path = join(this.dir, `${deviceId}.key`);
    let key: Buffer | undefined;
    let mtimeMs = 0;
    try {
      mtimeMs = statSync(path).mtimeMs;
      key = hit && hit.mtimeMs === mtimeMs ? hit.key : parseSigningKey(readFileSync(path, 'utf8'));
    } catch {
      key = undefined;
    }
    this.cache.set(deviceId, { key, checkedAt: now, mtimeMs });
    return key;
  }
}
