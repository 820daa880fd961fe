import { X509Certificate } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { isIP } from 'node:net';
import { createCertificateAuthority, type KeyAndCert } from './certificates.ts';
import { pkiPaths } from './layout.ts';

/**
 * The DMZ broker's trust anchor: what its clients (the gateways; inside, the bridge and the broker
 * exporter) trust for that broker, and nothing else does.
 *
 * Why not the CA: Mosquitto checks no CRL for a bridge's remote side (`crlfile` is for the clients
 * of a listener; a bridge has only bridge_cafile/bridge_capath), so a bridge trusting the CA takes
 * any unexpired certificate of it that names the DMZ broker's host, revoked or not: the DMZ broker's
 * own, and the edge certificate, which names the same domain. Both keys lie on the DMZ server; a
 * copy taken in a compromise of it stayed good for 825 days.
 *
 * So `--renew-dmz` (onboarding.ts) issues the DMZ broker's certificate from a CA of its own, made
 * for that one certificate and whose key is never written (it signs nothing else, ever: a one-shot
 * CA, pathLen 0), and the broker's clients trust that CA's certificate alone
 * (dmz/dmz-broker-ca.crt, internal/dmz-broker-ca.crt). Each renewal makes a new one: every older
 * broker certificate, and every certificate of the main CA, stops verifying for them, which is the
 * revocation a bridge can do.
 *
 * The anchor's certificate travels in dmz/mosquitto.crt after the broker's own (a chain the broker
 * sends, which verifies as well), so the two files are written as one and the anchor files are
 * made again from it on every run of the set-up: a run killed between them cannot leave a broker
 * certificate its clients refuse. A certificate file of one certificate (every set made before
 * this, and a new set until its first --renew-dmz) is the main CA's: its anchor is the CA itself,
 * as the clients trusted before.
 *
 * The gateway's certificate is anchored the same way (dmz/gateway-ca.crt, which Caddy trusts alone
 * for its hop to the gateways), for the same reason: Caddy checks no CRL there. That certificate
 * was also the gateway's client certificate to the DMZ broker, which verifies its clients with the
 * main CA (and its CRL: a revoked one is refused), not with an anchor of the gateway; so the
 * gateway's client identity is a certificate of its own, dmz/gateway-client (layout.ts), always
 * of the main CA, and dmz/gateway is its server certificate to Caddy.
 */

/** The certificates of a PEM file, in order, each as its own PEM block. */
export function pemBlocks(pem: string): string[] {
  return [...pem.matchAll(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)].map((m) => `${m[0]}\n`);
}

/** Whether two PEM certificates are one; a damaged one (no certificate) is the same as none. */
export function sameCertificate(a: string, b: string): boolean {
  const ca = parsed(a);
  const cb = parsed(b);
  return ca !== undefined && cb !== undefined && ca.raw.equals(cb.raw);
}

/**
 * A PEM block as a certificate, or undefined when it is none: a file of the set damaged on disk (a
 * block torn, cut short) is what the set-up issues or writes again, not an OpenSSL error without a
 * code that stopped every run until someone removed the file.
 */
function parsed(pem: string): X509Certificate | undefined {
  try {
    return new X509Certificate(pem);
  } catch {
    return undefined;
  }
}

/**
 * A DMZ certificate whose verifiers read no CRL, and so are given an anchor of its own (see above):
 * the DMZ broker's (the bridge; the gateways and the broker exporter alike), and the gateway's,
 * which Caddy checks on its hop to the gateways (`EDGE_HOP=mtls`: reverse_proxy's
 * tls_trusted_ca_certs reads no CRL either, so a stolen gateway certificate of the CA passed as a
 * gateway for whoever could intercept that hop inside the rebuilt DMZ). The logic is the same for
 * both; only the files differ.
 */
export interface AnchoredCertificate {
  /** its SERVICE_CERTS file (layout.ts) */
  file: string;
  /** what the one-shot CA's name says it is for */
  label: string;
  /** what verifies the certificate with its anchor */
  verifiers: string;
  /** its anchor's files below `root`, by the server that mounts each */
  anchorFiles(root: string): Readonly<Record<string, string>>;
}

export const ANCHORED_CERTIFICATES: readonly AnchoredCertificate[] = [
  { file: 'dmz/mosquitto', label: 'DMZ broker', verifiers: 'the bridge, the gateways and the broker exporter', anchorFiles: (root) => pkiPaths(root).dmzBrokerCa },
  { file: 'dmz/gateway', label: 'gateway', verifiers: 'Caddy, on its hop to the gateways', anchorFiles: (root) => ({ dmz: pkiPaths(root).gatewayCa }) },
];

/** The anchored certificate of a SERVICE_CERTS file, if it is one. */
export function anchoredCertificate(file: string): AnchoredCertificate | undefined {
  return ANCHORED_CERTIFICATES.find((a) => a.file === file);
}

/**
 * A CA of its own for one DMZ certificate (see above): its key is returned to sign that
 * certificate and is then dropped by the caller. Its name carries the time of issue, so that no two
 * generations share a subject (OpenSSL looks issuers up by name).
 */
export function oneShotCa(a: AnchoredCertificate, domain: string, validityDays: number): KeyAndCert {
  return createCertificateAuthority(`FieldStream ${a.label} CA (${domain}, ${new Date().toISOString()})`, validityDays);
}

/**
 * The anchor of `a`'s certificate as it is in `root`: the one-shot CA that follows the certificate
 * in its file and issued it, or the main CA when that issued it. Undefined when there is no such
 * certificate, or it is neither's.
 */
export function anchorOf(root: string, a: AnchoredCertificate, caPem: string): string | undefined {
  const cert = pkiPaths(root).service(a.file).cert;
  if (statSync(cert, { throwIfNoEntry: false })?.isFile() !== true) return undefined;
  const [leafPem, ...rest] = pemBlocks(readFileSync(cert, 'utf8'));
  const leaf = leafPem === undefined ? undefined : parsed(leafPem);
  if (leaf === undefined) return undefined;
  const last = rest.at(-1);
  const issuer = last === undefined ? undefined : parsed(last);
  if (issuer !== undefined && leaf.checkIssued(issuer) && leaf.verify(issuer.publicKey)) return last;
  const ca = new X509Certificate(caPem);
  return leaf.checkIssued(ca) && leaf.verify(ca.publicKey) ? pemBlocks(caPem)[0] : undefined;
}

/**
 * Whether `a`'s verifiers are given an anchor of its own already (a --renew-dmz ran):
 * `dmzRevoked` (the CA's revocation log holds DMZ certificates: revocation.ts revokedAnyOf), or
 * the certificate, or one of its anchor files, is of an anchor other than the CA. Once they are,
 * the certificate is never issued by the main CA again, or an older one of that CA (one stolen
 * before the renewal) would be trusted again, and for the DMZ broker the edge's too. Not the
 * certificate alone: the DMZ's files need not stay on the machine that keeps the CA (certs/dmz/
 * moved to the DMZ server), and the log goes with the CA wherever they go.
 */
export function hasOwnAnchor(root: string, a: AnchoredCertificate, caPem: string, dmzRevoked: boolean): boolean {
  if (dmzRevoked) return true;
  const anchor = anchorOf(root, a, caPem);
  if (anchor !== undefined && !sameCertificate(anchor, caPem)) return true;
  return Object.values(a.anchorFiles(root)).some((file) => {
    if (statSync(file, { throwIfNoEntry: false })?.isFile() !== true) return false;
    const [pem] = pemBlocks(readFileSync(file, 'utf8'));
    return pem !== undefined && !sameCertificate(pem, caPem);
  });
}

/** The text form of an IP address, so that "::1" and "0:0:0:0:0:0:0:1" are one name. */
function canonicalIp(ip: string): string {
  return isIP(ip) === 6 ? new URL(`http://[${ip}]/`).hostname.slice(1, -1) : ip;
}

/**
 * `names`, with the DNS names and IP addresses of the certificate at `certPath` that they lack:
 * a DMZ certificate issued again after a compromise answers to everything the old one did (the
 * --edge-host and --dmz-broker-host names given at the set-up, which the recovery's command need
 * not repeat), or devices and the bridge would fail their host name checks. Undefined when there
 * is no certificate there to read them from (not on this machine, or damaged).
 */
export function withNamesOf(certPath: string, names: readonly string[]): string[] | undefined {
  if (!existsSync(certPath)) return undefined;
  const [pem] = pemBlocks(readFileSync(certPath, 'utf8'));
  const cert = pem === undefined ? undefined : parsed(pem);
  if (cert === undefined) return undefined;
  const old = (cert.subjectAltName ?? '')
    .split(', ')
    .flatMap((entry) => {
      if (entry.startsWith('DNS:')) return [entry.slice(4)];
      if (entry.startsWith('IP Address:')) return [canonicalIp(entry.slice(11))];
      return [];
    });
  const have = new Set(names.map((n) => (isIP(n) ? canonicalIp(n) : n.toLowerCase())));
  return [...names, ...old.filter((n) => !have.has(isIP(n) ? n : n.toLowerCase()))];
}
