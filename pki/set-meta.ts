import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { isIP } from 'node:net';
import { z } from 'zod';
import { FieldStreamError } from '../shared/errors.ts';
import { pkiPaths } from './layout.ts';

/**
 * The set's domain and the host names its certificates carry (onboarding.ts), fieldstream-pki.json,
 * which records the domain, and whether a service's key and certificate are a pair it may keep.
 */

export const DomainSchema = z
  .string()
  .min(1)
  .max(253)
  .regex(/^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/, 'must be a DNS name');

export const PkiMetaSchema = z.object({ domain: DomainSchema, createdAt: z.string() });

/**
 * The set's fieldstream-pki.json (its domain, which every device bundle points at); undefined when
 * there is none. One that is not JSON or not the schema's is CONFIG_INVALID, with what mends it:
 * the set-up writes it again.
 */
export function readPkiMeta(root: string): z.infer<typeof PkiMetaSchema> | undefined {
  const p = pkiPaths(root);
  let text: string;
  try {
    text = readFileSync(p.meta, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    throw new FieldStreamError('CONFIG_FILE_UNREADABLE', `Cannot read ${p.meta} (${code ?? (err as Error).message}).`, { path: p.meta }, { cause: err });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    value = undefined;
  }
  const parsed = PkiMetaSchema.safeParse(value);
  if (!parsed.success) {
    throw new FieldStreamError(
      'CONFIG_INVALID',
      `${p.meta} is damaged (not {"domain": DNS name, "createdAt": date}); nothing was changed. Run scripts/generate-certificates.sh DOMAIN, with the domain this set was made for: it writes the file again and keeps the CA and certificates.`,
      { path: p.meta },
    );
  }
  return parsed.data;
}

/**
 * Whether `name` is an IP address, or a DNS name that does not look like one: digits and dots only
 * (192.0.2.256, 192.0.2.07) or a colon is an address mistyped, which went into the certificate as a
 * DNS name that no client dialling the address meant would match.
 */
export function isHostName(name: string): boolean {
  if (isIP(name) !== 0) return true;
  return !/^[0-9.]+$/.test(name) && !name.includes(':') && DomainSchema.safeParse(name).success;
}

/**
 * Whether a service's key and certificate are there and make a pair. A run killed between the two
 * renames of a re-issue (writeKeyAndCert) leaves the new key beside the old certificate: kept, the
 * service could not start with them (a key that is not its certificate's), and every later run
 * kept them too. A file that is no key or certificate (damaged) is no pair either: issued again.
 * One that cannot be read (EACCES: a key of another user) is an error, not replaced unseen.
 */
export function pairHolds(paths: { cert: string; key: string }): boolean {
  const read = (path: string): Buffer | undefined => {
    try {
      return readFileSync(path);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return undefined;
      throw new FieldStreamError('CONFIG_FILE_UNREADABLE', `Cannot read ${path} (${code ?? (err as Error).message}): run this as the owner of the certificates folder.`, { path }, { cause: err });
    }
  };
  const cert = read(paths.cert);
  const key = read(paths.key);
  if (cert === undefined || key === undefined) return false;
  try {
    return new X509Certificate(cert).checkPrivateKey(createPrivateKey(key));
  } catch {
    return false;
  }
}

/** The names of `names` (DNS names, IP addresses) that a certificate does not carry. */
export function namesMissing(certPem: string, names: readonly string[]): string[] {
  const cert = new X509Certificate(certPem);
  return names.filter((n) => (isIP(n) ? cert.checkIP(n) : cert.checkHost(n, { subject: 'never' })) === undefined);
}

/**
 * Whether the CA's key is there. A CA folder this user may not look into (ca/ is 0700, its owner's:
 * the set made with sudo, the command run without) is CONFIG_FILE_UNREADABLE, not "no CA": taken for
 * none, the commands said to make one with generate-certificates.sh, which then died on the same
 * folder with a stack trace.
 */
export function caKeyExists(root: string): boolean {
  const p = pkiPaths(root);
  try {
    return statSync(p.caKey, { throwIfNoEntry: false }) !== undefined;
  } catch (err) {
    throw caUnreadable(root, err);
  }
}

/**
 * Whether `root` is a server's copy of a deployment's certificates: the CA's public certificate
 * (certs/ca.crt) or the set's fieldstream-pki.json without the CA's folder (certs/ca/), as the DMZ
 * and internal servers get them (docs/deployment.md). The CA's folder is what says the CA is kept
 * here: a set-up killed before the CA's key was written leaves the folder (its key is written before
 * certs/ca.crt and fieldstream-pki.json, and a --new-ca makes the new folder before either), so it
 * is never taken for a copy.
 */
export function isServerCopy(root: string): boolean {
  const p = pkiPaths(root);
  const there = (path: string) => statSync(path, { throwIfNoEntry: false }) !== undefined;
  return !there(p.caDir) && (there(p.publicCa) || there(p.meta));
}

/** CONFIG_FILE_UNREADABLE for the CA's files, with what mends a permission error: the folder's owner. */
export function caUnreadable(root: string, err: unknown): FieldStreamError {
  const p = pkiPaths(root);
  const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
  return new FieldStreamError(
    'CONFIG_FILE_UNREADABLE',
    `The CA's key ${p.caKey} cannot be read (${code}): run this as the owner of ${p.caDir} (the user that ran scripts/generate-certificates.sh; with sudo if that was root).`,
    { path: p.caKey },
    { cause: err },
  );
}
