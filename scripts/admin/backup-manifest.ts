import { posix } from 'node:path';
import { z } from 'zod';
import { DeviceIdSchema } from '../../shared/contract/primitives.ts';
import { TokensFileSchema } from '../../shared/security/device-token.ts';
import { PkiMetaSchema } from '../../pki/onboarding.ts';
import { caLogProblem, CrlNumberSchema } from '../../pki/revocation.ts';
import { LIMITS } from '../../shared/limits.ts';
import { RESTORE_MARK_NAME } from '../../shared/restore-marks.ts';

/**
 * What a FieldStream backup archive holds, and how each file is named in it.
 *
 * An archive is a gzip tar with `manifest.json` first, then each file at
 * `files/ROOT/PATH` (a backup writes the manifest as a gzip member of its own in front of the
 * files' member: it can only be made once every file was read; a restore needs it first, to check
 * each entry's declared size against it before reading the entry, and refuses a file before it;
 * archives of earlier versions, one member with folder entries, restore alike).
 * ROOT says which folder of the installation it belongs to, PATH is its
 * place below that folder (always "/"-separated, never absolute, never "." or ".."). A restore
 * writes a file to that folder of the target installation, whatever the folders were called where
 * the backup was made.
 */
export const BACKUP_FORMAT = 'fieldstream-backup';
export const BACKUP_VERSION = 1;
export const MANIFEST_NAME = 'manifest.json';
export const FILES_PREFIX = 'files/';

/** certs: CERTS_DIR; distributor-state: DISTRIBUTOR_STATE_DIR; command-state: the file COMMAND_STATE_PATH */
export const ROOTS = ['certs', 'distributor-state', 'command-state'] as const;
export type Root = (typeof ROOTS)[number];

/** The one name the command journal has in an archive (the file itself may be called anything). */
export const COMMAND_JOURNAL_NAME = 'commands.jsonl';

export const KINDS = ['ca', 'revocations', 'device-keys', 'device-tokens', 'stored-feed-key', 'devices', 'service-certificates', 'replay-windows', 'command-journal'] as const;
export type Kind = (typeof KINDS)[number];

export const ManifestFileSchema = z.object({
  root: z.enum(ROOTS),
  path: z.string().min(1).max(1024),
  kind: z.enum(KINDS),
  /** bytes */
  size: z.number().int().min(0),
  /** permission bits the file had, restored with it (0600 for keys) */
  mode: z.number().int().min(0).max(0o777),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
});
export type ManifestFile = z.infer<typeof ManifestFileSchema>;

export const ManifestSchema = z
  .object({
    format: z.literal(BACKUP_FORMAT),
    version: z.literal(BACKUP_VERSION),
    /** when the backup was made */
    created: z.iso.datetime(),
    /** where each root was on the machine the backup was made on (for the operator; a restore ignores it) */
    source: z.object({ certs: z.string(), 'distributor-state': z.string(), 'command-state': z.string() }),
    /** files of each kind */
    contents: z.partialRecord(z.enum(KINDS), z.number().int().min(0)),
    files: z.array(ManifestFileSchema).max(LIMITS.backupMaxFiles),
  })
  .strict();
export type Manifest = z.infer<typeof ManifestSchema>;

/** Just enough to tell a FieldStream backup of another version from something else. */
export const ManifestHeadSchema = z.object({ format: z.literal(BACKUP_FORMAT), version: z.number().int() });

/**
 * A relative "/"-separated path that stays below its folder: no leading "/", no "." or ".."
 * segment, no empty segment, no backslash or control character (a "\" is a separator on Windows).
 */
export function isSafeRelativePath(path: string): boolean {
  if (path.length === 0 || path.length > 1024 || path.startsWith('/') || path.includes('\\')) return false;
  if (/[\u0000-\u001f\u007f]/.test(path)) return false;
  if (posix.normalize(path) !== path) return false;
  return path.split('/').every((s) => s !== '' && s !== '.' && s !== '..');
}

/** Whether `path` names a restore's mark (shared/restore-marks.ts), in any folder. */
export const isRestoreMark = (path: string): boolean => posix.basename(path) === RESTORE_MARK_NAME;

export function archiveName(f: { root: Root; path: string }): string {
  return `${FILES_PREFIX}${f.root}/${f.path}`;
}

const SERVICE_FILE = /^(dmz|internal)\/[A-Za-z0-9][A-Za-z0-9._-]*\.(crt|key)$/;
const CA_FILES = new Set(['ca/ca.key', 'ca/ca.crt', 'ca/issued.jsonl', 'ca/revoked.jsonl', 'ca/crl-number', 'ca.crt', 'fieldstream-pki.json']);
const REVOCATION_FILES = new Set(['ca.crl', 'dmz/revocation/revoked-serials.txt', 'internal/revoked-devices.txt']);
const TOKENS_FILE = 'dmz/tokens/device-tokens.json';
const STORED_FEED_KEY_FILE = 'internal/stored-feed.key';

/**
 * What a file below a root is, or undefined when a backup leaves it out. The same rule decides
 * what a backup takes and what a restore accepts, so a restore never writes a file that a backup
 * would not have taken (a key into bundles/, a file beside the CA). Below the certificates folder
 * (pki/layout.ts): the CA, its logs of issued and revoked certificates and the number of its last CRL; the revocations
 * (CRL, revoked serials, revoked devices); the registry of device signing keys; the device tokens'
 * hashes; the stored feed's key; each device's certificate, key, signing key and token; the services' certificates and keys. Left out: bundles/
 * (made again from the rest by `devices renew`), CAs set aside by --new-ca, temporary files.
 */
export function classify(root: Root, path: string): Kind | undefined {
  if (!isSafeRelativePath(path)) return undefined;
  if (root === 'command-state') return path === COMMAND_JOURNAL_NAME ? 'command-journal' : undefined;
  // The distributor's state folder holds its replay windows (replay/windows-N.snap and .log) and the
  // ids of its earlier broker sessions.
  // Not the leases of its slots (state-lease.ts): restored with a fresh time, one would look held.
  // Nor a restore's mark (shared/restore-marks.ts): it says the folder is half restored, and a
  // backup refuses such a folder (RESTORE_INCOMPLETE); restored, it would keep the services down.
  if (root === 'distributor-state') return /\.tmp(-|$)/.test(path) || /(^|\/)(lease\.json|\.claiming)(\/|$)/.test(path) || isRestoreMark(path) ? undefined : 'replay-windows';
  if (CA_FILES.has(path)) return 'ca';
  if (REVOCATION_FILES.has(path)) return 'revocations';
  // The device tokens' hashes and marks of revocation (pki/device-tokens.ts): without them a token
  // device cannot be revoked, and the next token issued writes a file of that one device only.
  if (path === TOKENS_FILE) return 'device-tokens';
  // The stored feed's key (internal-network/shared/stored-feed-auth.ts): a kind of its own, not a
  // service certificate's key, though it lies beside them. Restored, the distributors and the
  // console of the rebuilt server share it again; a new one would do too, on both at once.
  if (path === STORED_FEED_KEY_FILE) return 'stored-feed-key';
  const key = /^internal\/device-keys\/([^/]+)\.key$/.exec(path);
  if (key) return DeviceIdSchema.safeParse(key[1]).success ? 'device-keys' : undefined;
  const device = /^devices\/([^/]+)\/(client\.crt|client\.key|signing\.key|device\.token)$/.exec(path);
  if (device) return DeviceIdSchema.safeParse(device[1]).success ? 'devices' : undefined;
  if (SERVICE_FILE.test(path)) return 'service-certificates';
  return undefined;
}

/** Folders a restore creates readable by their owner only (as the onboarding creates them). */
export function isPrivateDir(root: Root, dir: string): boolean {
  return root === 'certs' && (dir === 'ca' || dir === 'internal/device-keys');
}

const fromJson = (text: string): unknown => {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
};

/** The files below the certificates folder that the tooling and the services read with a schema. */
const CONTENT_CHECKS: Readonly<Record<string, (text: string) => string | undefined>> = {
  'fieldstream-pki.json': (t) => (PkiMetaSchema.safeParse(fromJson(t)).success ? undefined : 'not {"domain": DNS name, "createdAt": date}'),
  'dmz/tokens/device-tokens.json': (t) => (TokensFileSchema.safeParse(fromJson(t)).success ? undefined : 'not a device tokens file'),
  'ca/crl-number': (t) => (CrlNumberSchema.safeParse(t).success ? undefined : 'not a CRL number'),
  'ca/issued.jsonl': (t) => caLogProblem(t, 'issued'),
  'ca/revoked.jsonl': (t) => caLogProblem(t, 'revoked'),
};

/**
 * What is wrong with the content of a file a backup takes, for the files read with a schema, or
 * undefined. One rule for both: a backup does not take such a file damaged (found then, it can be
 * mended from what is in place), and a restore does not write one (a hostile or damaged archive):
 * written, every later revocation, issue or `devices` command stopped on it.
 */
export function isContentChecked(root: Root, path: string): boolean {
  return root === 'certs' && Object.hasOwn(CONTENT_CHECKS, path);
}

export function contentProblem(root: Root, path: string, data: Buffer): string | undefined {
  const check = isContentChecked(root, path) ? CONTENT_CHECKS[path] : undefined;
  return check?.(data.toString('utf8'));
}
