import { randomBytes } from 'node:crypto';
import { readFileSync, rmdirSync, statSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { makeDirDurablySync, replaceFileDurablySync } from '../shared/durable-fs.ts';
import { FieldStreamError } from '../shared/errors.ts';
import { ANCHORED_CERTIFICATES, anchorOf, pemBlocks, sameCertificate, type AnchoredCertificate } from './dmz-anchor.ts';
import { DMZ_SERVICE_FILES, pkiPaths } from './layout.ts';
import { revokedAnyOf } from './revocation.ts';

/**
 * The files of a set beside its certificates that a set-up keeps when they are there and makes when
 * they are not (onboarding.ts setupPki, under its locks): the DMZ's anchors, the stored feed's key,
 * the revoked devices' list; each also where Docker left a folder in its place.
 */

/** What a set-up reports of these files: each one made, or kept as it was. */
export interface KeptOrCreated {
  created: string[];
  kept: string[];
}

/**
 * The anchors of the DMZ broker's and the gateway's certificates (dmz-anchor.ts): the broker's one
 * copy in dmz/ for the gateways and one in internal/ for the bridge and the broker exporter, the
 * gateway's in dmz/ for Caddy; each made again from its certificate's file whenever it differs: a
 * set made before these files gets them (the main CA, which issued its certificates), and a run
 * killed between a new certificate and its anchor files is mended by the next. All are checked
 * before any is written.
 */
export function ensureDmzAnchors(root: string, caPem: string, report: KeptOrCreated): void {
  const anchors = ANCHORED_CERTIFICATES.map((a) => ({ a, anchor: checkedAnchor(root, a, caPem) }));
  for (const { a, anchor } of anchors) {
    for (const [where, path] of Object.entries(a.anchorFiles(root))) {
      const name = `${where}/${basename(path)}`;
      const st = replaceDockersFolder(path, `the anchor of ${a.file}.crt`);
      const held = st ? pemBlocks(readFileSync(path, 'utf8')) : [];
      if (held.length === 1 && sameCertificate(held[0] as string, anchor)) {
        report.kept.push(name);
        continue;
      }
      makeDirDurablySync(dirname(path), 0o755);
      replaceFileDurablySync(path, anchor, 0o644);
      report.created.push(name);
    }
  }
}

/** The anchor of `a`'s certificate, refused (PKI_DMZ_ANCHOR_MISSING) when it may not be one. */
function checkedAnchor(root: string, a: AnchoredCertificate, caPem: string): string {
  const anchor = anchorOf(root, a, caPem);
  const cert = pkiPaths(root).service(a.file).cert;
  if (anchor === undefined) {
    throw new FieldStreamError('PKI_DMZ_ANCHOR_MISSING', `${cert} is not a certificate of this CA nor of an anchor of its own: run scripts/generate-certificates.sh DOMAIN --renew-dmz to issue the DMZ's certificates again.`);
  }
  // A certificate of the CA after DMZ certificates of it were revoked (one put back by hand, the
  // stolen one, say; or a gateway's kept from a --renew-dmz made before the gateway had an anchor):
  // the CA as the anchor would let its verifiers, which check no CRL, take every such certificate
  // again. Nothing is written.
  if (sameCertificate(anchor, caPem) && revokedAnyOf(root, DMZ_SERVICE_FILES)) {
    throw new FieldStreamError(
      'PKI_DMZ_ANCHOR_MISSING',
      `${cert} is a certificate of the CA, whose DMZ certificates were revoked (--renew-dmz): what verifies it (${a.verifiers}) must not trust the CA for it again. Run scripts/generate-certificates.sh DOMAIN --renew-dmz to issue the DMZ's certificates again.`,
    );
  }
  return anchor;
}

/**
 * The stored feed's key (internal-network/shared/stored-feed-auth.ts): 32 random bytes as 64 hex
 * digits, 0600, written durably as every key here is. Made when missing (a set made before the key
 * existed gets it on the next run) and made anew with the service keys (`renew`: --renew, a new
 * CA), which are copied to the internal server together; kept otherwise, as a distributor and a
 * console holding different keys refuse each other's messages.
 */
export function ensureStoredFeedKey(root: string, renew: boolean, report: KeptOrCreated): void {
  const path = pkiPaths(root).storedFeedKey;
  const name = 'internal/stored-feed.key';
  const st = replaceDockersFolder(path, 'the stored-feed key');
  if (st && !renew) {
    report.kept.push(name);
    return;
  }
  makeDirDurablySync(dirname(path), 0o755);
  replaceFileDurablySync(path, randomBytes(32).toString('hex') + '\n', 0o600);
  report.created.push(name);
}

/**
 * The revoked devices' list exists from the start, empty, as the CRL does: docker-compose.internal.yml
 * mounts it into the distributor, the console and the command API, and a first `up` before any
 * revocation would otherwise leave a folder there, which the services read as "nothing revoked"
 * and into which a later revocation could not write. Kept whenever it is there (`renew` too:
 * a new CA does not un-revoke a device).
 */
export function ensureRevokedDevicesList(root: string, report: KeptOrCreated): void {
  const path = pkiPaths(root).revokedDevices;
  const name = 'internal/revoked-devices.txt';
  if (replaceDockersFolder(path, 'the revoked devices\' list')) {
    report.kept.push(name);
    return;
  }
  makeDirDurablySync(dirname(path), 0o755);
  replaceFileDurablySync(path, '', 0o644);
  report.created.push(name);
}

/**
 * Docker makes a folder where a file it is to bind-mount is missing: an empty one is what an `up`
 * before this run left, and is taken away so that the file can be made. Returns the file's stat
 * when a file is there, undefined when none (any more).
 */
function replaceDockersFolder(path: string, what: string): ReturnType<typeof statSync> | undefined {
  const st = statSync(path, { throwIfNoEntry: false });
  if (!st?.isDirectory()) return st;
  try {
    rmdirSync(path);
  } catch (err) {
    throw new FieldStreamError('CONFIG_FILE_UNREADABLE', `${path} is a folder, not ${what} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); move it away and run again.`, { path });
  }
  return undefined;
}
