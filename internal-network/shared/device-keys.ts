import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { DeviceIdSchema } from '../../shared/contract/primitives.ts';
import { TIMINGS } from '../../shared/limits.ts';
import { parseSigningKey } from '../../shared/security/message-auth.ts';

/**
 * The internal network's registry of device signing keys: DIR/DEVICE_ID.key, written by
 * scripts/generate-client-cert.sh, removed by scripts/revoke-device.sh. A device's key is what the
 * internal side believes, whatever the DMZ says. Changes are picked up without a restart: within a
 * second, or for a key file overwritten in place, within ten (see get).
 */
export interface KeyRecheck {
  /** milliseconds a looked-up key is trusted before the folder is looked at again */
  recheckMs: number;
  /** milliseconds before a key's own file is looked at again while the folder is unchanged */
  fileRecheckMs: number;
}

interface CachedKey {
  key: Buffer | undefined;
  /** when it was last confirmed (epoch ms) */
  checkedAt: number;
  /** when its file was last looked at (epoch ms) */
  statAt: number;
  /** its file's mtime then */
  mtimeMs: number;
  /** the folder's mtime then */
  folderMtimeMs: number;
}

export class DeviceKeyRegistry {
  private readonly cache = new Map<string, CachedKey>();
  private revoked = { ids: new Set<string>(), checkedAt: 0 };
  private folder = { mtimeMs: -1, checkedAt: -Infinity };

  constructor(
    private readonly dir: string,
    private readonly revokedFile?: string,
    private readonly timing: KeyRecheck = { recheckMs: TIMINGS.deviceKeyRecheckMs, fileRecheckMs: TIMINGS.deviceKeyFileRecheckMs },
  ) {}

  /** Revoked devices are refused even if a key of theirs is still around. */
  isRevoked(deviceId: string): boolean {
    return this.revokedIds().has(deviceId);
  }

  /** The revoked list (re-read at most every TIMINGS.deviceKeyRecheckMs). */
  revokedIds(): ReadonlySet<string> {
    const now = Date.now();
    if (this.revokedFile && now - this.revoked.checkedAt >= this.timing.recheckMs) {
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

  /**
   * A key is looked at again after `recheckMs`, at the cost of one look at the folder for every
   * device: a key added, removed or replaced by a rename (as copying tools and editors do) changes
   * the folder, and only then is the device's own file looked at. A file overwritten in place does
   * not change the folder: each file is looked at again after `fileRecheckMs` regardless. (A look
   * at each device's file every second cost the distributor a system call per message of a fleet
   * of devices sending once a second: docs/performance.md.)
   */
  get(deviceId: string): Buffer | undefined {
    if (!DeviceIdSchema.safeParse(deviceId).success) return undefined;
    const now = Date.now();
    const hit = this.cache.get(deviceId);
    if (hit && now - hit.checkedAt < this.timing.recheckMs) return hit.key;
    const folderMtimeMs = this.folderMtime(now);
    if (hit && hit.folderMtimeMs === folderMtimeMs && now - hit.statAt < this.timing.fileRecheckMs) {
      hit.checkedAt = now;
      return hit.key;
    }
    const path = join(this.dir, `${deviceId}.key`);
    let key: Buffer | undefined;
    let mtimeMs = 0;
    try {
      mtimeMs = statSync(path).mtimeMs;
      key = hit && hit.mtimeMs === mtimeMs ? hit.key : parseSigningKey(readFileSync(path, 'utf8'));
    } catch {
      key = undefined;
    }
    this.cache.set(deviceId, { key, checkedAt: now, statAt: now, mtimeMs, folderMtimeMs });
    return key;
  }

  /** The folder's mtime, looked at most once every `recheckMs` (-1: no folder). */
  private folderMtime(now: number): number {
    if (now - this.folder.checkedAt >= this.timing.recheckMs) {
      let mtimeMs = -1;
      try {
        mtimeMs = statSync(this.dir).mtimeMs;
      } catch {
        /* no keys yet */
      }
      this.folder = { mtimeMs, checkedAt: now };
    }
    return this.folder.mtimeMs;
  }
}
