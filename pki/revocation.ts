import { X509Certificate } from 'node:crypto';
import { closeSync, constants, existsSync, fstatSync, fsyncSync, ftruncateSync, mkdirSync, openSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { z } from 'zod';
import { readUpToSync, replaceFileDurablySync } from '../shared/durable-fs.ts';
import { DeviceIdSchema } from '../shared/contract/primitives.ts';
import { FieldStreamError } from '../shared/errors.ts';
import { withPkiLock } from './pki-lock.ts';
import { LIMITS, TIMINGS } from '../shared/limits.ts';
import { appendLinesSync, closeFailedOnStderr, readLinesSync } from '../shared/line-file.ts';
import { BACKDATE_MINUTES, createCrl } from './certificates.ts';
import { verifyCrl } from '../shared/security/crl.ts';
import { pkiPaths } from './layout.ts';
import { revokeDeviceToken, tokenPaths } from './device-tokens.ts';
import { isRevoked } from './onboarding.ts';
import { refuseWhileRestoring } from './restore-mark.ts';
import { caKeyExists } from './set-meta.ts';

/**
 * Revocation. The CA keeps a log of every certificate it issued (ca/issued.jsonl) and of what it
 * revoked (ca/revoked.jsonl). Revoking a device revokes every certificate ever issued to it and
 * produces, from that log:
 *
 * - ca.crl: a CRL signed by the CA (certificates.ts, createCrl), for the Mosquitto brokers'
 *   `crlfile` (Mosquitto reads it at start only: restart the brokers after a revocation);
 * - dmz/revocation/revoked-serials.txt: the revoked serial numbers, which the gateway re-reads within
 *   seconds (in a folder of its own: the file is replaced by renaming, which a container sees only
 *   through a folder mount, never through a mount of the file itself)
 *   and enforces on new and existing connections (Caddy 2.6 cannot check a CRL itself);
 * - the removal of the device's signing key from the internal registry, and its id in
 *   internal/revoked-devices.txt, so the distributor refuses its messages even if a compromised
 *   DMZ forwards them;
 * - for a device with a device token, the token's hash leaves dmz/tokens/device-tokens.json (marked
 *   revoked), which the gateways re-read within seconds as well.
 */
export interface IssuedRecord {
  name: string;
  serial: string;
  notAfter: string;
  subject: string;
}

export function recordIssued(root: string, name: string, certPem: string): void {
  const cert = new X509Certificate(certPem);
  const line: IssuedRecord = { name, serial: cert.serialNumber.toUpperCase(), notAfter: cert.validTo, subject: cert.subject };
  appendRecords(join(pkiPaths(root).caDir, 'issued.jsonl'), JSON.stringify(line) + '\n', IssuedRecordSchema);
}

const IssuedRecordSchema = z.object({ name: z.string(), serial: z.string(), notAfter: z.string(), subject: z.string() });
const RevokedRecordSchema = IssuedRecordSchema.extend({ revokedAt: z.string() });

/**
 * Appends to one of the CA's logs, the torn end of an append that never finished (see readLines)
 * cut off first: appended after, it would be a damaged line in the middle, which stops every
 * reading of the log. A whole record without its newline is kept (appendLinesSync starts a line).
 */
function appendRecords(path: string, lines: string, schema: z.ZodType): void {
  if (existsSync(path)) {
    const fd = openSync(path, constants.O_RDWR | constants.O_NONBLOCK);
    try {
      if (!fstatSync(fd).isFile()) throw new FieldStreamError('FILE_NOT_REGULAR', `${path} is not a regular file (a folder, a FIFO, a device, or a link to one): not read. Move it away.`, { path });
      // Only its end is read (read whole, a log damaged into an endless line ran the tool out of
      // memory): a torn append is shorter than a record, so an end longer than
      // LIMITS.pkiLogLineMaxBytes without a line break is damage, not cut off on a guess.
      const { size } = fstatSync(fd);
      const tail = readUpToSync(fd, Math.max(0, size - LIMITS.pkiLogLineMaxBytes - 1), Math.min(size, LIMITS.pkiLogLineMaxBytes + 1));
      const end = tail.lastIndexOf(0x0a) + 1;
      if (end === 0 && size > LIMITS.pkiLogLineMaxBytes) throw tooLong(path);
      if (end < tail.length && !parseRecord(tail.toString('utf8', end), schema).success) {
        ftruncateSync(fd, size - (tail.length - end));
        fsyncSync(fd);
      }
    } finally {
      closeSync(fd);
    }
  }
  closeFailedOnStderr(path, appendLinesSync(path, lines, 0o600, new Set()));
}

/** A line of a CA log longer than any record: damage (CONFIG_INVALID, as any line that is no record). */
function tooLong(path: string): FieldStreamError {
  return new FieldStreamError('CONFIG_INVALID', `${path} holds a line longer than ${LIMITS.pkiLogLineMaxBytes} bytes: no record of the CA's (damaged?). Restore the log from a backup.`, { path });
}

/** Whether the file at `path` is empty or ends with a line break (its last line whole). */
function endsWithNewline(path: string): boolean {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const { size } = fstatSync(fd);
    return size === 0 || readUpToSync(fd, size - 1, 1)[0] === 0x0a;
  } finally {
    closeSync(fd);
  }
}

function parseRecord<S extends z.ZodType>(line: string, schema: S) {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    value = undefined;
  }
  return schema.safeParse(value);
}

/**
 * What is wrong with the text of one of the CA's logs (ca/issued.jsonl, ca/revoked.jsonl), as
 * readLines reads it, or undefined when it reads: a backup takes and a restore writes only a log
 * that every later revocation can read.
 */
export function caLogProblem(text: string, log: 'issued' | 'revoked'): string | undefined {
  const schema = log === 'issued' ? IssuedRecordSchema : RevokedRecordSchema;
  const lines = text.split('\n');
  lines.pop(); // an append that never finished: passed over, as readLines does
  const bad = lines.findIndex((l) => l !== '' && !parseRecord(l, schema).success);
  return bad < 0 ? undefined : `line ${bad + 1} is not a record of the CA's`;
}

/** The records of a JSON-lines file of the CA's, each checked; a damaged line stops with its place. */
function readLines<S extends z.ZodType>(path: string, schema: S): z.infer<S>[] {
  if (!existsSync(path)) return [];
  const parse = (l: string) => parseRecord(l, schema);
  // A line at a time, none held longer than LIMITS.pkiLogLineMaxBytes (undefined), never the whole
  // log: read whole, one damaged into an endless line ran the tools out of memory. The last line is
  // yielded without its newline too; '' stands for the end after a final newline, as split gave.
  const lines: string[] = [];
  for (const line of readLinesSync(path, LIMITS.pkiLogLineMaxBytes)) {
    if (line === undefined) throw tooLong(path);
    lines.push(line);
  }
  if (endsWithNewline(path)) lines.push('');
  // What follows the last newline ('' when the file ends with one) is an append that never finished
  // (a full disk, a kill: appendLinesSync writes a record and its newline at once, and the next
  // append cuts such an end off first: appendRecords). Its operation reported no success, so it is
  // no record; unreadable, it is passed over rather than blocking every later revocation until
  // someone edits the file. Whole, it is taken. A damaged line before it still stops everything: a
  // record of the CA lost in the middle could be a revocation.
  const tail = lines.pop() as string;
  const records = lines.filter(Boolean).map((l, i) => {
    const r = parse(l);
    // Read, but its content is wrong: CONFIG_INVALID (CONFIG_FILE_UNREADABLE's advice, the path and
    // its permissions, would not fit).
    if (!r.success) throw new FieldStreamError('CONFIG_INVALID', `${path}, line ${i + 1}: not a record of the CA's (damaged?)`);
    return r.data as z.infer<S>;
  });
  const last = tail === '' ? undefined : parse(tail);
  if (last?.success) records.push(last.data as z.infer<S>);
  return records;
}

/**
 * One revocation, one publication of the lists, or one device certificate's issue, at a time, under
 * CERTS/.revocations.lock (shared/dir-lock.ts): two revocations at once each read the log, made
 * their CRL from it, and the slower one renamed its older CRL over the other's, which then lacked a
 * revocation both had reported; a certificate issued while a revocation of its device ran escaped it.
 * Nothing while a restore writes the folder (restore-mark.ts): PKI_RESTORE_RUNNING.
 */
export function underRevocationLock<T>(root: string, fn: () => T): T {
  const lock = pkiPaths(root).revocationsLock;
  const busy = () => new FieldStreamError('PKI_BUSY', `${lock} stayed in place for ${TIMINGS.adminLockWaitMs} ms: another command is revoking a device or publishing the revocations.`);
  return withPkiLock(root, lock, TIMINGS.adminLockWaitMs, busy, () => {
    refuseWhileRestoring(root);
    return fn();
  });
}

/**
 * Both admin locks, in the order every command takes them (.revocations.lock, then .tokens.lock, as
 * a device token's issue, a backup and a restore's mark do), for what writes files that both guard:
 * generate-certificates.sh's CA, its public copy, fieldstream-pki.json and the internal network's
 * files, which a backup reads and a restore writes under them. Held, as each is, for milliseconds
 * (shared/dir-lock.ts): what takes long (keys) is made before. Nothing while a restore writes the
 * folder (PKI_RESTORE_RUNNING). `onWait` is told of each lock found held, before its wait.
 */
export function underPkiLocks<T>(root: string, fn: () => T, onWait?: (lock: string) => void): T {
  const p = pkiPaths(root);
  const busy = (lock: string) => () =>
    new FieldStreamError('PKI_BUSY', `${lock} stayed in place for ${TIMINGS.adminLockWaitMs} ms: another command is revoking a device, issuing a certificate, changing the tokens file, backing up or restoring.`);
  const locked = <R>(lock: string, inner: () => R) => withPkiLock(root, lock, TIMINGS.adminLockWaitMs, busy(lock), inner, () => onWait?.(lock));
  return locked(p.revocationsLock, () =>
    locked(p.tokensLock, () => {
      refuseWhileRestoring(root);
      return fn();
    }),
  );
}

export function revokeDevice(root: string, deviceId: string): { serials: string[]; token: boolean } {
  return underRevocationLock(root, () => revokeDeviceLocked(root, deviceId));
}

function revokeDeviceLocked(root: string, deviceId: string): { serials: string[]; token: boolean } {
  // Checked here, whoever calls: "dev-c/" (a shell's completion of certs/devices/dev-c/) found the
  // certificate through join() and revoked its serial, but removed no key "dev-c/.key" and listed
  // "dev-c/" as revoked: the internal side went on believing dev-c.
  if (!DeviceIdSchema.safeParse(deviceId).success) throw new FieldStreamError('PKI_INVALID_NAME', `"${deviceId}" is not a device id: it must start with a letter or digit and hold only letters, digits, ".", "_" and "-".`);
  const p = pkiPaths(root);
  if (!caKeyExists(root)) throw new FieldStreamError('PKI_CA_MISSING', `No CA in ${p.caDir}.`);
  const issued = readIssuedRecords(root).filter((r) => r.name === `devices/${deviceId}`);
  const current = p.device(deviceId).cert;
  // The current certificate adds its serial should the log lack it (a set older than the log). One
  // that cannot be read (truncated, not PEM) is passed over: the log holds every serial issued, each
  // recorded before its certificate is written, and a damaged file must not keep the device valid,
  // as its parse error stopped the revocation before anything was revoked.
  const serial = existsSync(current) ? serialOf(readFileSync(current)) : undefined;
  if (serial !== undefined && !issued.some((r) => r.serial === serial)) issued.push({ name: `devices/${deviceId}`, serial, notAfter: '', subject: '' });
  // A tokens file that cannot be read or changed must not keep a device valid: its certificates
  // are revoked all the same, and so is it inside (signing key, revoked list), and the token's
  // failure is reported after (revoke again once fixed). Without a certificate, only the device's
  // own files tell this machine it is a device (a token device's token and signing key): an id
  // with none of them is refused as before, nothing listed.
  let token = false;
  let tokenFailure: FieldStreamError | undefined;
  try {
    token = revokeDeviceToken(root, deviceId);
  } catch (err) {
    if (!(err instanceof FieldStreamError)) throw err;
    if (issued.length === 0 && !existsSync(tokenPaths(root, deviceId).token) && !existsSync(p.deviceKeyRegistry(deviceId))) throw err;
    tokenFailure = err;
  }
  if (issued.length === 0 && !token && !tokenFailure) throw new FieldStreamError('ADMIN_UNKNOWN_DEVICE', `No certificate or token was issued to device ${deviceId}.`);
  appendRevocationsLocked(root, issued);

  // The internal side forgets the device's signing key and remembers that it was revoked.
  rmSync(p.deviceKeyRegistry(deviceId), { force: true });
  const revokedDevices = p.revokedDevices;
  mkdirSync(dirname(revokedDevices), { recursive: true, mode: 0o755 });
  if (!isRevoked(root, deviceId)) closeFailedOnStderr(revokedDevices, appendLinesSync(revokedDevices, `${deviceId}\n`, 0o644, new Set()));

  writeRevocations(root);
  if (tokenFailure) {
    const done = issued.length > 0 ? `Device ${deviceId}'s certificates are revoked (${issued.length})` : `Device ${deviceId}'s signing key is removed and it is listed as revoked`;
    throw new FieldStreamError(
      tokenFailure.code,
      `${done}, but a device token of it could not be: ${tokenFailure.message} Fix the tokens file and revoke the device again.`,
      tokenFailure.details,
      { cause: tokenFailure },
    );
  }
  return { serials: issued.map((r) => r.serial), token };
}

/**
 * Revokes every certificate the CA's log records under one of `names` (service certificate files,
 * "dmz/gateway"), and the serials of `current` (the certificates in place before, should the log
 * lack one: a set older than the log), but those in `keep` (the ones just issued in their place),
 * and writes the CRL and the gateways' list. The caller holds the revocation lock
 * (underRevocationLock) across the issue of the new certificates and this, as a device's renewal
 * does. Returns what it revoked now: each serial with the name it was issued under.
 */
export function revokeServiceCertificatesLocked(
  root: string,
  names: ReadonlySet<string>,
  current: ReadonlyArray<{ name: string; pem: string }>,
  keep: ReadonlySet<string>,
): Array<{ name: string; serial: string }> {
  const issued = readIssuedRecords(root).filter((r) => names.has(r.name));
  for (const c of current) {
    const serial = serialOf(Buffer.from(c.pem));
    if (serial !== undefined && !issued.some((r) => r.serial === serial)) issued.push({ name: c.name, serial, notAfter: '', subject: '' });
  }
  // Whole and synced before the lists are written from them, as a device's revocation.
  const unique = appendRevocationsLocked(root, issued.filter((r) => !keep.has(r.serial)));
  writeRevocations(root);
  return unique.map((r) => ({ name: r.name, serial: r.serial }));
}

/** Every record of the CA's log of issued certificates (ca/issued.jsonl); a damaged line: CONFIG_INVALID. */
export function readIssuedRecords(root: string): IssuedRecord[] {
  return readLines(join(pkiPaths(root).caDir, 'issued.jsonl'), IssuedRecordSchema);
}

/** The serials the CA's revocation log (ca/revoked.jsonl) holds; a damaged line: CONFIG_INVALID. */
export function readRevokedSerials(root: string): Set<string> {
  return new Set(readLines(join(pkiPaths(root).caDir, 'revoked.jsonl'), RevokedRecordSchema).map((r) => r.serial));
}

/**
 * Appends to the revocation log the records of `records` it does not hold yet (each serial once),
 * dated now, and returns them. Every revocation goes through here (a device's, its superseded
 * certificates', a service's), under the revocation lock, and then writes the CRL and the gateways'
 * list from the log (writeRevocations). Whole, synced, on lines of their own (line-file.ts):
 * "Revoked" is said once they survive a power cut.
 */
export function appendRevocationsLocked(root: string, records: readonly IssuedRecord[]): IssuedRecord[] {
  const revokedPath = join(pkiPaths(root).caDir, 'revoked.jsonl');
  const already = readRevokedSerials(root);
  const now = new Date().toISOString();
  const fresh = [...new Map(records.filter((r) => !already.has(r.serial)).map((r) => [r.serial, r])).values()];
  if (fresh.length > 0) appendRecords(revokedPath, fresh.map((r) => JSON.stringify({ ...r, revokedAt: now }) + '\n').join(''), RevokedRecordSchema);
  return fresh;
}

/**
 * Whether the CA's revocation log holds a certificate of one of `names` (service certificate files):
 * for the DMZ's, a --renew-dmz ran under this CA, whose earlier DMZ broker and edge certificates
 * (stolen, maybe) the bridge could take again if the CA were ever its anchor once more
 * (pki/dmz-anchor.ts). The log stays with the CA (and in its backups) wherever the DMZ's files go.
 */
export function revokedAnyOf(root: string, names: readonly string[]): boolean {
  return readLines(join(pkiPaths(root).caDir, 'revoked.jsonl'), RevokedRecordSchema).some((r) => names.includes(r.name));
}

/** A certificate's serial (upper-case hex), or undefined when the bytes are not a certificate. */
export function serialOf(pem: Buffer): string | undefined {
  try {
    return new X509Certificate(pem).serialNumber.toUpperCase();
  } catch {
    return undefined;
  }
}

/** Where the gateways' list of revoked serials is written. */
export const revokedSerialsPath = (root: string) => join(root, 'dmz', 'revocation', 'revoked-serials.txt');

/** Writes ca.crl and dmz/revocation/revoked-serials.txt from the revocation log (also with nothing revoked). */
export function publishRevocations(root: string): void {
  underRevocationLock(root, () => writeRevocations(root));
}

/** publishRevocations for a caller that holds the revocation lock already (underPkiLocks). */
export function writeRevocations(root: string): void {
  const p = pkiPaths(root);
  const revoked = readLines(join(p.caDir, 'revoked.jsonl'), RevokedRecordSchema);
  const serialsPath = revokedSerialsPath(root);
  // 0755 whatever the umask: where others may write, they could rename the list away and un-revoke.
  mkdirSync(dirname(serialsPath), { recursive: true, mode: 0o755 });
  replaceFileDurablySync(serialsPath, revoked.map((r) => `${r.serial}\n`).join(''), 0o644);

  // A private CA's CRL: valid ten years, made again at every revocation. An entry whose
  // certificate's expiry is unknown (a certificate the log lacked) is listed all the same.
  // thisUpdate backdated as certificates are: OpenSSL refuses a CRL dated after its own clock
  // (CRL_NOT_YET_VALID), and with it every certificate it checks, so a broker or a device whose
  // clock was a little behind this machine's refused every peer for that while.
  const now = new Date();
  const crlNumber = nextCrlNumber(join(p.caDir, 'crl-number'), revoked.length);
  const ca = loadCaFiles(p);
  const crl = createCrl(ca, {
    entries: revoked.map((r) => ({ serial: r.serial, revokedAt: new Date(r.revokedAt) })),
    crlNumber,
    thisUpdate: new Date(nextThisUpdate(now.getTime(), previousThisUpdate(join(root, 'ca.crl'), ca.certPem))),
    nextUpdate: new Date(now.getTime() + 3650 * 86_400_000),
  });
  replaceFileDurablySync(join(root, 'ca.crl'), crl, 0o644);
}

/** milliseconds: a CRL's thisUpdate lies at least this far before the clock (see nextThisUpdate) */
const CRL_BACKDATE_MIN_MS = 60_000;

/**
 * A new CRL's thisUpdate (epoch ms): BACKDATE_MINUTES before `now`, and a second past the CRL it
 * replaces (`previous`). Devices and gateways tell a newer CRL by a later thisUpdate (the gateway
 * hands its CRL to a device holding an older one: dmz/gateway/crl-delivery.ts), and its time has
 * whole seconds (UTCTime, RFC 5280 §5.1.2.4): two revocations within one second, a script's, made two
 * CRLs of one date, and a device holding the first never got the second. Never later than
 * CRL_BACKDATE_MIN_MS before `now` (a CRL dated after a peer's clock is refused by OpenSSL): past
 * some 240 revocations in four minutes, two CRLs may share a second again.
 */
export function nextThisUpdate(now: number, previous: number | undefined): number {
  const backdated = now - BACKDATE_MINUTES * 60_000;
  if (previous === undefined) return backdated;
  return Math.max(backdated, Math.min(previous + 1000, now - CRL_BACKDATE_MIN_MS));
}

/** The thisUpdate (epoch ms) of the CA's CRL at `path`; undefined when there is none or it is not the CA's. */
function previousThisUpdate(path: string, caPem: string): number | undefined {
  try {
    return verifyCrl(readFileSync(path), caPem).thisUpdate.getTime();
  } catch {
    return undefined;
  }
}

/** A CRL number as kept in ca/crl-number: a positive integer, one line. */
export const CrlNumberSchema = z.string().trim().regex(/^[1-9][0-9]{0,15}$/).transform(Number);

/**
 * The number of the next CRL, kept in `path` (written before the CRL, so a process killed between
 * the two skips a number rather than repeating one). RFC 5280 §5.2.3: a CA's CRL numbers increase
 * with each CRL it issues; they were the count of revocations plus one, which a revocation that
 * added no serial (a token-only device, a revocation run again) repeated. Past the highest that
 * count could have given (revocations + 1), for sets made before this file.
 */
function nextCrlNumber(path: string, revocations: number): number {
  let last = 0;
  if (existsSync(path)) {
    const parsed = CrlNumberSchema.safeParse(readFileSync(path, 'utf8'));
    if (!parsed.success) throw new FieldStreamError('CONFIG_INVALID', `${path} does not hold a CRL number (a positive integer): put the number of the CRL last issued there, or remove it.`);
    last = parsed.data;
  }
  const next = Math.max(last, revocations + 1) + 1;
  replaceFileDurablySync(path, `${next}\n`, 0o644);
  return next;
}

function loadCaFiles(p: ReturnType<typeof pkiPaths>): { keyPem: string; certPem: string } {
  return { keyPem: readFileSync(p.caKey, 'utf8'), certPem: readFileSync(p.caCert, 'utf8') };
}
