import { X509Certificate } from 'node:crypto';
import { existsSync, readFileSync, renameSync, statSync, chmodSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { makeDirDurablySync, readRegularFileSync, removeFileDurablySync, replaceFileDurablySync } from '../shared/durable-fs.ts';
import { FieldStreamError } from '../shared/errors.ts';
import { createCertificateAuthority, issueCertificate, type KeyAndCert } from './certificates.ts';
import { anchoredCertificate, hasOwnAnchor, oneShotCa, withNamesOf, type AnchoredCertificate } from './dmz-anchor.ts';
import { ensureDmzAnchors, ensureRevokedDevicesList, ensureStoredFeedKey } from './set-files.ts';
import { DMZ_SERVICE_FILES, pkiPaths, REVOCABLE_SERVICE_CERTS, SERVICE_CERTS, type ServiceCertSpec } from './layout.ts';
import { caKeyExists, caUnreadable, DomainSchema, isHostName, isServerCopy, namesMissing, pairHolds, readPkiMeta } from './set-meta.ts';
import { refuseChangedCa, refuseWhileRestoring } from './restore-mark.ts';
import { readChoiceInputs, refuseChangedInputs } from './setup-inputs.ts';
import { recordIssued, revokedAnyOf, revokedSerialsPath, revokeServiceCertificatesLocked, underPkiLocks, writeRevocations } from './revocation.ts';

/** days */
export const VALIDITY_DAYS = { ca: 3650, service: 825, device: 730 } as const;

// Read by the device bundles, fieldstream-admin and npm start through this module, as before.
export { PkiMetaSchema, readPkiMeta } from './set-meta.ts';

export interface SetupOptions {
  domain: string;
  /** Replace an existing CA (the old one is moved aside, never deleted). */
  newCa?: boolean;
  /** Re-issue service certificates that already exist. */
  renew?: boolean;
  /**
   * Recover from a compromise of the DMZ server: issue the DMZ's service certificates (edge,
   * gateway, DMZ broker) again, the broker's from a new anchor of its own (dmz-anchor.ts), and
   * revoke every earlier one. Devices keep their certificates. Ignored with a new CA, which makes
   * every earlier certificate useless already.
   */
  renewDmz?: boolean;
  /**
   * A leaked internal client certificate (the `consumer`'s given to another tool, say): issue these
   * (by CN, REVOCABLE_SERVICE_CERTS) again and revoke every earlier certificate of each, leaving
   * every other certificate as it is. Ignored with a new CA, as renewDmz is.
   */
  renewServices?: readonly string[];
  /** more names for the public edge certificate: each DMZ server's own name when there are several */
  edgeHosts?: readonly string[];
  dmzBrokerHosts?: readonly string[];
  internalBrokerHosts?: readonly string[];
  /** told of each lock another command holds when the files are to be written, before the wait */
  onWait?: (lock: string) => void;
}

export interface SetupReport {
  ca: 'created' | 'reused' | 'replaced';
  created: string[];
  kept: string[];
  replacedCaDir?: string;
  /** --renew-dmz: the serials of the DMZ's service certificates revoked now */
  revoked?: string[];
  /**
   * --renew-dmz: the DMZ certificates that were not on this machine (certs/dmz/ moved to the DMZ
   * server), so the names they had could not be kept: each new one names what was asked for now.
   */
  namesNotKept?: Array<{ file: string; names: string[] }>;
  /** a new CA's set-up killed midway was finished: every service certificate issued again under that CA */
  finishedNewCa?: boolean;
  /** renewServices: each certificate issued again, with the serials of its earlier ones revoked now */
  revokedServices?: Array<{ file: string; serials: string[] }>;
}

/** Writes a private key readable by its owner only, and a certificate readable by all. */
export function writeKeyAndCert(paths: { cert: string; key: string }, kc: KeyAndCert, record?: { root: string; name: string }): void {
  if (record) recordIssued(record.root, record.name, kc.certPem);
  makeDirDurablySync(dirname(paths.key), 0o755);
  replaceFileDurablySync(paths.key, kc.keyPem, 0o600);
  replaceFileDurablySync(paths.cert, kc.certPem, 0o644);
}

/**
 * The ids in internal/revoked-devices.txt, read as the distributor, the command API and the console
 * read it (internal-network/shared/device-keys.ts): a line's blanks around the id and a CR are not
 * part of it. A list edited by hand (an editor's CRLF, an indented id) is what they refuse; read
 * here line for line, the device was renewed and its signing key registered again.
 */
export function readRevokedDevices(root: string): Set<string> {
  const path = pkiPaths(root).revokedDevices;
  // None: nothing revoked; nor in a folder in its place, which Docker makes for a bind-mounted file
  // missing on a compose host, as the services read it. Anything else not a file (a FIFO, a link to
  // a device) is refused (FILE_NOT_REGULAR), never read as an empty list: that would take every
  // revoked device for a valid one (devices list, renew, add).
  const kind = statSync(path, { throwIfNoEntry: false });
  if (kind === undefined || kind.isDirectory()) return new Set();
  return new Set(readRegularFileSync(path, 'utf8').split('\n').map((l) => l.trim()).filter(Boolean));
}

export function isRevoked(root: string, deviceId: string): boolean {
  return readRevokedDevices(root).has(deviceId);
}

export function loadCa(root: string): KeyAndCert {
  const p = pkiPaths(root);
  if (!caKeyExists(root)) {
    throw new FieldStreamError('PKI_CA_MISSING', `No CA in ${p.caDir}; run scripts/generate-certificates.sh DOMAIN first.`);
  }
  if (!existsSync(p.caCert)) {
    // Made by a version that wrote the key first and was killed before the certificate (see
    // setupPki), or the certificate was removed: generate-certificates.sh cannot mend it alone.
    throw new FieldStreamError(
      'PKI_CA_MISSING',
      `${p.caKey} is there without its certificate ${p.caCert}. If ${p.publicCa} is that CA's certificate, copy it there; otherwise (a set-up killed while it wrote the CA, which signed nothing yet) run scripts/generate-certificates.sh DOMAIN --new-ca.`,
    );
  }
  try {
    return { keyPem: readFileSync(p.caKey, 'utf8'), certPem: readFileSync(p.caCert, 'utf8') };
  } catch (err) {
    throw caUnreadable(root, err);
  }
}

export function setupPki(root: string, options: SetupOptions): SetupReport {
  const domain = DomainSchema.safeParse(options.domain);
  if (!domain.success || !isHostName(options.domain)) throw new FieldStreamError('PKI_INVALID_NAME', `DOMAIN ${JSON.stringify(options.domain)} is not a DNS name.`);
  for (const h of [...(options.edgeHosts ?? []), ...(options.dmzBrokerHosts ?? []), ...(options.internalBrokerHosts ?? [])]) {
    if (!isHostName(h)) {
      throw new FieldStreamError('PKI_INVALID_NAME', `Host ${JSON.stringify(h)} is not a DNS name or IP address.`);
    }
  }
  const serviceFiles = [...new Set(options.renewServices ?? [])].map((name) => {
    const file = REVOCABLE_SERVICE_CERTS.get(name);
    if (file === undefined) throw new FieldStreamError('PKI_INVALID_NAME', `${JSON.stringify(name)} is not an internal service's client certificate (${[...REVOCABLE_SERVICE_CERTS.keys()].join(', ')}).`);
    return file;
  });
  const p = pkiPaths(root);
  // Checked again under the locks, where everything is written; here before the keys are made.
  refuseWhileRestoring(root);
  const caExists = caKeyExists(root);
  // On a server's copy (no CA here), a set-up made a new CA and issued every certificate again over
  // the deployment's, which the other servers and the devices then refused. Only --new-ca says so.
  if (!caExists && options.newCa !== true && isServerCopy(root)) {
    const was = domainOfSet(root);
    throw new FieldStreamError(
      'PKI_CA_KEY_MISSING',
      `${root} holds a deployment's certificates (${p.publicCa}${was !== undefined ? `, set up for ${was}` : ''}) but not its CA (${p.caDir}): a server's copy. Nothing was changed. ` +
        'Run this on the machine that keeps the CA and copy the files here again, or run it with --new-ca to make a new CA here (every service certificate and device certificate issued again).',
    );
  }
  // What the choices below are made from, compared under the locks before anything is written.
  const seen = readChoiceInputs(root);
  // A new CA whose set-up was killed before it had issued every service certificate (the marker is
  // written before the CA's files and removed last): the certificates found beside it are of the CA
  // it replaced, so this run finishes that set-up, re-issuing them all, as --new-ca would have.
  // Kept, they were certificates the services' new ca.crt does not verify.
  const finishingNewCa = caExists && options.newCa !== true && existsSync(p.caReissuePending);
  const sansOf = (spec: ServiceCertSpec) =>
    spec.sans?.({
      domain: domain.data,
      edgeHosts: options.edgeHosts ?? [],
      dmzBrokerHosts: options.dmzBrokerHosts ?? [],
      internalBrokerHosts: options.internalBrokerHosts ?? [],
    });
  // A server certificate kept from an earlier set-up (npm start's, for localhost) must name what is
  // asked for now: kept beside a new domain, it would fail the devices' and the bridge's hostname
  // checks while fieldstream-pki.json and new device bundles point at the new name. Refused before
  // anything is written; --renew re-issues them (under the same CA), --new-ca with a new CA.
  // With --renew-dmz the DMZ's are issued again (with the names they had), so only the others are checked.
  const renewDmz = options.renewDmz === true && caExists && options.newCa !== true && !finishingNewCa;
  const renewServices = caExists && options.newCa !== true && !finishingNewCa ? serviceFiles : [];
  if (caExists && !options.renew && !options.newCa && !finishingNewCa) {
    const lacking = SERVICE_CERTS.filter((spec) => !(renewDmz && DMZ_SERVICE_FILES.includes(spec.file))).flatMap((spec) => {
      const paths = p.service(spec.file);
      const sans = sansOf(spec);
      // A pair that does not hold (a damaged file) is issued again below, with these names.
      if (!sans || !pairHolds(paths)) return [];
      const missing = namesMissing(readFileSync(paths.cert, 'utf8'), sans);
      return missing.length > 0 ? [`${spec.file}.crt lacks ${missing.join(', ')}`] : [];
    });
    if (lacking.length > 0) {
      const was = domainOfSet(root);
      throw new FieldStreamError(
        'PKI_NAMES_MISSING',
        `The service certificates in ${root} were issued for other names (${was ? `set up for ${was}` : 'an earlier set-up'}): ${lacking.join('; ')}. ` +
          'Nothing was changed. Run again with --renew to re-issue the service certificates for these names under the existing CA, ' +
          `or with --new-ca for a new CA as well (the choice for a deployment when npm start made this folder: its development CA also signed the certificates of the development devices in ${join(root, 'devices')}/).`,
      );
    }
  }
  // 0755 whatever the umask, as every folder in it: one others may write lets them rename ca/ or a
  // folder of keys away and put their own in its place.
  makeDirDurablySync(root, 0o755);
  const report: SetupReport = { ca: 'reused', created: [], kept: [], ...(finishingNewCa ? { finishedNewCa: true } : {}) };

  // Every key is made here, before the locks (an RSA key takes a while; the locks are held for
  // milliseconds: shared/dir-lock.ts); what is written, under them below.
  const newCa = !caExists || options.newCa === true;
  const ca: KeyAndCert = newCa ? createCertificateAuthority(`FieldStream CA (${domain.data})`, VALIDITY_DAYS.ca) : loadCa(root);
  if (newCa) report.ca = caExists ? 'replaced' : 'created';

  // A new CA invalidates every certificate the old one signed (and none found beside a CA made now
  // can be of it): re-issue them all.
  const renew = options.renew === true || report.ca !== 'reused' || finishingNewCa;
  // The DMZ broker's and the gateway's certificates come from an anchor of their own at a
  // --renew-dmz, and ever after (dmz-anchor.ts), whether the DMZ's files are still here or not;
  // from the main CA in a set that never had one, and with a new CA.
  const caKept = report.ca === 'reused' && !finishingNewCa;
  const dmzRevoked = caKept && revokedAnyOf(root, DMZ_SERVICE_FILES);
  const ownAnchor = (a: AnchoredCertificate) => renewDmz || (caKept && hasOwnAnchor(root, a, ca.certPem, dmzRevoked));
  // The same deployment (fieldstream-pki.json names the domain asked for): a certificate issued
  // again keeps every name of the one it replaces, as --renew-dmz's do. Issued with what this run was
  // given alone, a --renew (what a certificate near its expiry takes) or a --new-ca without the
  // --edge-host and --dmz-broker-host names of the set-up dropped them, and the devices and the
  // bridge dialling those names failed their host name checks. Another domain is another
  // deployment: its certificates name what is given now.
  let previousDomain: string | undefined;
  try {
    previousDomain = readPkiMeta(root)?.domain;
  } catch {
    previousDomain = undefined; // damaged: written again by this run, with the names given now
  }
  const sameDeployment = previousDomain === domain.data;
  const issued: Array<{ spec: ServiceCertSpec; kc: KeyAndCert }> = [];
  for (const spec of SERVICE_CERTS) {
    const paths = p.service(spec.file);
    const dmz = renewDmz && DMZ_SERVICE_FILES.includes(spec.file);
    if (!renew && !dmz && !renewServices.includes(spec.file) && pairHolds(paths)) {
      report.kept.push(spec.file);
      continue;
    }
    const computed = sansOf(spec);
    const keptNames = computed && (dmz || sameDeployment) ? withNamesOf(paths.cert, computed) : undefined;
    const sans = keptNames ?? computed;
    // Only a certificate that takes the hosts of the set-up (the edge's, the DMZ broker's) can lack some.
    const takesHosts = spec.sans?.({ domain: domain.data, edgeHosts: ['host.invalid'], dmzBrokerHosts: ['host.invalid'], internalBrokerHosts: [] }).includes('host.invalid') === true;
    if (computed && dmz && takesHosts && keptNames === undefined) {
      (report.namesNotKept ??= []).push({ file: spec.file, names: [...new Set(computed)] });
    }
    const options = {
      commonName: spec.commonName,
      organizationalUnit: 'services',
      role: spec.role,
      subjectAltNames: sans ? [...new Set(sans)] : [],
      validityDays: VALIDITY_DAYS.service,
    } as const;
    const anchored = anchoredCertificate(spec.file);
    if (anchored && ownAnchor(anchored)) {
      // The anchor's key signs this one certificate and is dropped with this scope.
      const anchor = oneShotCa(anchored, domain.data, VALIDITY_DAYS.service + 1);
      const kc = issueCertificate(anchor, options);
      issued.push({ spec, kc: { keyPem: kc.keyPem, certPem: kc.certPem + anchor.certPem } });
    } else {
      issued.push({ spec, kc: issueCertificate(ca, options) });
    }
  }
  const revoking = [...(renewDmz ? DMZ_SERVICE_FILES : []), ...renewServices];

  // Under both locks, in one go, as every other command that writes here: a certificate's issue, a
  // revocation or a token's change meanwhile neither mixes its writes with these (a CRL, a revoked
  // devices' list or a certificate of the CA replaced here) nor is undone by them, a backup reads
  // the set before or after, and a restore's mark keeps this out. Refused (PKI_BUSY), writing
  // nothing, if what was read above changed while the keys were made: the choices were made from it.
  underPkiLocks(
    root,
    () => {
      if (!newCa) refuseChangedCa(root, ca.certPem);
      refuseChangedInputs(root, seen);
      if (caExists && newCa) {
        const aside = `${p.caDir}.replaced-${new Date().toISOString().replace(/[:.]/g, '-')}`;
        renameSync(p.caDir, aside);
        report.replacedCaDir = aside;
      }
      if (newCa) {
        makeDirDurablySync(p.caDir, 0o700);
        chmodSync(p.caDir, 0o700);
        replaceFileDurablySync(p.caReissuePending, `${new Date().toISOString()}\n`, 0o600);
        // The certificate before the key: the key is what says a CA exists (caExists above), so a run
        // killed between the two leaves no CA, and the next run makes one. Key first, a kill between
        // them left a key without its certificate, which every later run (npm start's too) refused
        // with PKI_CA_MISSING. Nothing is signed before both are in place.
        replaceFileDurablySync(p.caCert, ca.certPem, 0o644);
        replaceFileDurablySync(p.caKey, ca.keyPem, 0o600);
      }
      replaceFileDurablySync(p.publicCa, ca.certPem, 0o644);
      replaceFileDurablySync(p.meta, JSON.stringify({ domain: domain.data, createdAt: new Date().toISOString() }, null, 2) + '\n', 0o644);
      // Of the names revoked: the certificates in place before the new ones, should the CA's log lack one.
      const current = revoking.flatMap((name) => {
        const cert = p.service(name).cert;
        return statSync(cert, { throwIfNoEntry: false })?.isFile() ? [{ name, pem: readFileSync(cert, 'utf8') }] : [];
      });
      // The anchored certificates and their anchor files as one: a concurrent --renew-dmz's pair is
      // never overwritten half, nor a backup given them apart.
      for (const { spec, kc } of issued) {
        writeKeyAndCert(p.service(spec.file), kc, { root, name: spec.file });
        report.created.push(spec.file);
      }
      if (revoking.length > 0) {
        // As a device's renewal: the new certificates recorded and in place, then everything of
        // those names issued before them revoked, CRL and gateways' list written.
        const keep = new Set(issued.map(({ kc }) => new X509Certificate(kc.certPem).serialNumber.toUpperCase()));
        const revoked = revokeServiceCertificatesLocked(root, new Set(revoking), current, keep);
        const serialsOf = (files: readonly string[]) => revoked.filter((r) => files.includes(r.name)).map((r) => r.serial);
        if (renewDmz) report.revoked = serialsOf(DMZ_SERVICE_FILES);
        if (renewServices.length > 0) report.revokedServices = renewServices.map((file) => ({ file, serials: serialsOf([file]) }));
      }
      ensureDmzAnchors(root, ca.certPem, report);
      ensureStoredFeedKey(root, renew, report);
      ensureRevokedDevicesList(root, report);
      // The folders the compose files mount, which fill later (a device's signing key, the device tokens
      // file): made now, so that they are copied to the servers with the rest. One missing at the first
      // `up` is made by Docker, as root's: the owner of certs/ could not put a key there, and a key root
      // put there (0600) the services could not read, refusing that device's messages as unknown.
      makeDirDurablySync(dirname(p.deviceKeyRegistry('x')), 0o700);
      makeDirDurablySync(join(root, 'dmz', 'tokens'), 0o755); // device-tokens.ts tokenPaths' folder
      // The CRL and revoked-serial list exist from the start: the brokers' configuration names them. A
      // set made before the list moved to dmz/revocation/ gets it there now, from the revocation log,
      // so an upgrade never leaves the gateways without the certificates revoked so far.
      if (!existsSync(join(root, 'ca.crl')) || !existsSync(revokedSerialsPath(root)) || !caKept) writeRevocations(root);
      removeFileDurablySync(p.caReissuePending);
    },
    options.onWait,
  );
  return report;
}

/** The domain fieldstream-pki.json names, for a message: undefined when it is not there or is damaged. */
function domainOfSet(root: string): string | undefined {
  try {
    return readPkiMeta(root)?.domain;
  } catch {
    return undefined;
  }
}
