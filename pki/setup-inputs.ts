import { readFileSync, statSync } from 'node:fs';
import { FieldStreamError } from '../shared/errors.ts';
import { ANCHORED_CERTIFICATES } from './dmz-anchor.ts';
import { DMZ_SERVICE_FILES, pkiPaths, SERVICE_CERTS } from './layout.ts';
import { revokedAnyOf } from './revocation.ts';

/**
 * What setupPki chooses from, read before its keys are made: the CA's files (and its unfinished
 * set-up's marker), the service certificates and keys (kept or issued again, their names), the DMZ
 * anchors' files, and whether DMZ certificates were ever revoked (an anchor of their own). Each file
 * as its bytes, undefined when absent.
 */
export function readChoiceInputs(root: string): Map<string, string | boolean | undefined> {
  const p = pkiPaths(root);
  const files = [
    p.caKey,
    p.caCert,
    p.caReissuePending,
    ...SERVICE_CERTS.flatMap((spec) => Object.values(p.service(spec.file))),
    ...ANCHORED_CERTIFICATES.flatMap((a) => Object.values(a.anchorFiles(root))),
  ];
  const read = (path: string) => (statSync(path, { throwIfNoEntry: false })?.isFile() ? readFileSync(path, 'latin1') : undefined);
  let dmzRevoked: boolean | string;
  try {
    dmzRevoked = revokedAnyOf(root, DMZ_SERVICE_FILES);
  } catch (err) {
    dmzRevoked = (err as Error).message; // a damaged log: refused where it is read for a choice
  }
  return new Map<string, string | boolean | undefined>([...files.map((f) => [f, read(f)] as const), ['the revocation log', dmzRevoked]]);
}

/** PKI_BUSY when any of `seen` (readChoiceInputs) is not what it is now: another command changed it. */
export function refuseChangedInputs(root: string, seen: ReadonlyMap<string, string | boolean | undefined>): void {
  const now = readChoiceInputs(root);
  const changed = [...seen].filter(([what, was]) => now.get(what) !== was).map(([what]) => what);
  if (changed.length > 0) {
    throw new FieldStreamError(
      'PKI_BUSY',
      `${changed.slice(0, 3).join(', ')}${changed.length > 3 ? ` and ${changed.length - 3} more` : ''} changed while the keys were made (another set-up, a new CA, a revocation or a restore meanwhile); nothing was written: run the command again.`,
    );
  }
}
