import { readdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { FieldStreamError } from '../shared/errors.ts';
import { pkiPaths } from './layout.ts';
import { readRevokedDevices } from './onboarding.ts';
import { readIssuedRecords } from './revocation.ts';

/** A folder's entry names; none when it is not there yet. */
function names(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

/**
 * Refuses (PKI_INVALID_NAME) a NEW device id that differs from a device this PKI knows only by
 * case: "Sensor-1" beside "sensor-1". Device ids are case-sensitive everywhere FieldStream compares
 * them, but they are also folder and file names, and on a case-insensitive file system (macOS's
 * default, Windows', an SMB share holding the file storage) the two are one: the second device's
 * certificate folder was the first's, its signing key in the internal registry was the first's
 * (ensureSigningKey found one "already there", so either device could sign as the other), and the
 * distributor stored both devices' files in one folder. Known: a device folder, a registered
 * signing key, a certificate ever issued (the CA's log, which survives a removed folder), a token
 * and a revocation. An id known exactly (a renewal, or twins made before this check) is not refused.
 */
export function refuseCaseTwin(root: string, deviceId: string, tokenIds: Iterable<string>): void {
  const p = pkiPaths(root);
  const known = new Set<string>([
    ...names(dirname(p.device('x').dir)),
    ...names(dirname(p.deviceKeyRegistry('x'))).filter((n) => n.endsWith('.key')).map((n) => n.slice(0, -'.key'.length)),
    ...readIssuedRecords(root).filter((r) => r.name.startsWith('devices/')).map((r) => r.name.slice('devices/'.length)),
    ...readRevokedDevices(root),
    ...tokenIds,
  ]);
  if (known.has(deviceId)) return;
  const folded = deviceId.toLowerCase();
  const twin = [...known].find((id) => id.toLowerCase() === folded);
  if (twin === undefined) return;
  throw new FieldStreamError(
    'PKI_INVALID_NAME',
    `DEVICE_ID ${JSON.stringify(deviceId)} differs from the known device ${twin} only by case: on a case-insensitive file system (macOS, Windows, an SMB share) the two would share one folder, one signing key and one folder of files. Choose another id.`,
    { deviceId, twin },
  );
}
