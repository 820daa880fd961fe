import { generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { isIP } from 'node:net';
import forge from 'node-forge';
import { FieldStreamError } from '../shared/errors.ts';

/**
 * X.509 issuance with node-forge. forge builds the certificates; keys are generated and the
 * certificates signed by Node's crypto (native: a signature takes about a millisecond, where forge's
 * JavaScript RSA takes tens). Everything is RSA-2048 with SHA-256 signatures, which Mosquitto,
 * Caddy, OpenSSL and every TLS stack on a field device accept.
 */

export interface KeyAndCert {
  keyPem: string;
  certPem: string;
}

/** 'both': a service that serves TLS and also authenticates as a client (the edge proxy, the gateway). */
export type CertificateRole = 'server' | 'client' | 'both';

export interface IssueOptions {
  commonName: string;
  /** OU: "devices" for field devices, "services" for our own components. */
  organizationalUnit: 'devices' | 'services';
  role: CertificateRole;
  /** DNS names and IP addresses (server certificates). */
  subjectAltNames?: readonly string[];
  /** days */
  validityDays: number;
  /** an existing key pair to certify instead of a new one (the benchmark's many simulated devices share one) */
  keyPair?: KeyPair;
}

export interface KeyPair {
  publicPem: string;
  privatePem: string;
}

const ORGANIZATION = 'FieldStream';
/** minutes. Backdating absorbs small clock differences between the issuer and the verifier (a CRL's thisUpdate too: revocation.ts). */
export const BACKDATE_MINUTES = 5;

export function newKeyPair(): KeyPair {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return {
    publicPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
  };
}

function serialNumber(): string {
  // RFC 5280 §4.1.2.2: positive, at most 20 octets; random so serials never repeat across CAs.
  return '01' + randomBytes(15).toString('hex');
}

/**
 * Signs a certificate built by forge with the issuer's key, natively: the same steps as forge's
 * cert.sign (RFC 5280 §4.1.1.2-3: the signature algorithm is set in both places it appears, then
 * the DER of the TBSCertificate is signed).
 */
function signCertificate(cert: forge.pki.Certificate, issuerKeyPem: string): void {
  const oid = forge.pki.oids.sha256WithRSAEncryption as string;
  cert.signatureOid = oid;
  cert.siginfo.algorithmOid = oid;
  // getTBSCertificate is part of forge's pki API but missing from its type declarations.
  const tbs = (forge.pki as unknown as { getTBSCertificate(c: forge.pki.Certificate): forge.asn1.Asn1 }).getTBSCertificate(cert);
  (cert as unknown as { tbsCertificate: forge.asn1.Asn1 }).tbsCertificate = tbs;
  const der = Buffer.from(forge.asn1.toDer(tbs).getBytes(), 'binary');
  cert.signature = sign('sha256', der, issuerKeyPem).toString('binary');
}

/** `days` from now; never past `until` (the issuer's own end: a certificate is worth nothing after its CA's). */
function validity(cert: forge.pki.Certificate, days: number, until?: Date): void {
  const now = Date.now();
  cert.validity.notBefore = new Date(now - BACKDATE_MINUTES * 60_000);
  cert.validity.notAfter = new Date(Math.min(now + days * 86_400_000, until?.getTime() ?? Infinity));
}

export function createCertificateAuthority(commonName: string, validityDays: number): KeyAndCert {
  const keys = newKeyPair();
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(keys.publicPem);
  cert.serialNumber = serialNumber();
  validity(cert, validityDays);
  const subject = [
    { name: 'commonName', value: commonName },
    { name: 'organizationName', value: ORGANIZATION },
  ];
  cert.setSubject(subject);
  cert.setIssuer(subject);
  cert.setExtensions([
    // pathLen 0: this CA signs end-entity certificates only, never another CA.
    { name: 'basicConstraints', cA: true, pathLenConstraint: 0, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  signCertificate(cert, keys.privatePem);
  return { keyPem: keys.privatePem, certPem: forge.pki.certificateToPem(cert) };
}

export function issueCertificate(ca: KeyAndCert, options: IssueOptions): KeyAndCert {
  const caCert = forge.pki.certificateFromPem(ca.certPem);
  // Every verifier checks the CA's dates with the certificate's: under an expired CA a certificate
  // is refused everywhere (the command that issued it reported success), and one running past the
  // CA's end claimed days that no verifier gives it.
  const caEnd = caCert.validity.notAfter;
  if (caEnd.getTime() <= Date.now()) {
    const name = caCert.subject.getField('CN')?.value as string | undefined;
    throw new FieldStreamError(
      'PKI_CA_EXPIRED',
      `The CA${name ? ` "${name}"` : ''} expired on ${caEnd.toISOString()}: nothing it signs is accepted, so nothing was issued. Make a new CA (scripts/generate-certificates.sh DOMAIN --new-ca, which issues every service certificate again) and issue each device's certificate again under it (scripts/generate-client-cert.sh DEVICE_ID --renew).`,
    );
  }
  const keys = options.keyPair ?? newKeyPair();
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(keys.publicPem);
  cert.serialNumber = serialNumber();
  validity(cert, options.validityDays, caEnd);
  cert.setSubject([
    { name: 'commonName', value: options.commonName },
    { name: 'organizationName', value: ORGANIZATION },
    { shortName: 'OU', value: options.organizationalUnit },
  ]);
  cert.setIssuer(caCert.subject.attributes);
  const extensions: object[] = [
    { name: 'basicConstraints', cA: false, critical: true },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    // EKU limits what the key may be used for: a device key cannot serve TLS, a server key cannot
    // log in as a client (RFC 5280 §4.2.1.12).
    { name: 'extKeyUsage', serverAuth: options.role !== 'client', clientAuth: options.role !== 'server' },
    { name: 'subjectKeyIdentifier' },
    { name: 'authorityKeyIdentifier', keyIdentifier: caCert.generateSubjectKeyIdentifier().getBytes() },
  ];
  const sans = options.subjectAltNames ?? [];
  if (sans.length > 0) {
    extensions.push({
      name: 'subjectAltName',
      altNames: sans.map((name) => (isIP(name) ? { type: 7, ip: name } : { type: 2, value: name })),
    });
  }
  cert.setExtensions(extensions);
  signCertificate(cert, ca.keyPem);
  return { keyPem: keys.privatePem, certPem: forge.pki.certificateToPem(cert) };
}

/**
 * The CA's end when it comes before `days` from `now`: a certificate issued now for that long ends
 * with its CA instead (issueCertificate), which only a new CA mends. Undefined when the CA covers them.
 */
export function caEndBefore(caPem: string, days: number, now = Date.now()): Date | undefined {
  const end = forge.pki.certificateFromPem(caPem).validity.notAfter;
  return end.getTime() < now + days * 86_400_000 ? end : undefined;
}

/** What the onboarding commands say when caEndBefore finds the CA ending first. */
export function caEndWarning(end: Date, days: number): string {
  return `Warning: the CA expires on ${end.toISOString()}: the certificates issued now end then, not ${days} days from now (none outlives its CA). Make a new CA before it ends (scripts/generate-certificates.sh DOMAIN --new-ca) and issue each device's certificate again under it (scripts/generate-client-cert.sh DEVICE_ID --renew).`;
}

export interface CertificateSummary {
  commonName: string | undefined;
  organizationalUnit: string | undefined;
  notAfter: Date;
  serialNumber: string;
}

export function describeCertificate(certPem: string): CertificateSummary {
  const cert = forge.pki.certificateFromPem(certPem);
  const field = (short: string) => cert.subject.getField(short)?.value as string | undefined;
  return {
    commonName: field('CN'),
    organizationalUnit: field('OU'),
    notAfter: cert.validity.notAfter,
    serialNumber: cert.serialNumber,
  };
}

export interface CrlEntry {
  /** the certificate's serial number, hexadecimal */
  serial: string;
  revokedAt: Date;
}

/** A positive DER INTEGER's content from a hexadecimal serial: even length, no redundant leading zero, a zero before a high bit. */
function serialBytes(hex: string): string {
  let h = hex.toLowerCase().replace(/^0+/, '');
  if (h.length % 2) h = '0' + h;
  if (h === '') h = '00';
  if (parseInt(h.slice(0, 2), 16) >= 0x80) h = '00' + h;
  return forge.util.hexToBytes(h);
}

/**
 * A CRL (RFC 5280 §5) of the CA, built with forge's ASN.1 and signed natively, as certificates are
 * here: version 2, sha256WithRSAEncryption, the CA's subject as issuer, each revoked serial with its
 * date, and the extensions authorityKeyIdentifier (§5.2.1) and cRLNumber (§5.2.3). Made in the
 * process: `npm start`, which makes its certificates (and an empty CRL) at its first start, needs
 * nothing but Node.js, where `openssl ca -gencrl` needed an openssl binary on the PATH.
 */
export function createCrl(ca: KeyAndCert, o: { entries: readonly CrlEntry[]; crlNumber: number; thisUpdate: Date; nextUpdate: Date }): string {
  const { asn1 } = forge;
  const U = asn1.Class.UNIVERSAL;
  const seq = (value: forge.asn1.Asn1[]) => asn1.create(U, asn1.Type.SEQUENCE, true, value);
  const oid = (id: string) => asn1.create(U, asn1.Type.OID, false, asn1.oidToDer(id).getBytes());
  const integer = (bytes: string) => asn1.create(U, asn1.Type.INTEGER, false, bytes);
  const octets = (inner: forge.asn1.Asn1) => asn1.create(U, asn1.Type.OCTETSTRING, false, asn1.toDer(inner).getBytes());
  // §5.1.2.4: UTCTime through 2049, GeneralizedTime from 2050
  const time = (d: Date) =>
    d.getUTCFullYear() < 2050 ? asn1.create(U, asn1.Type.UTCTIME, false, asn1.dateToUtcTime(d)) : asn1.create(U, asn1.Type.GENERALIZEDTIME, false, asn1.dateToGeneralizedTime(d));
  const caCert = forge.pki.certificateFromPem(ca.certPem);
  const algorithm = () => seq([oid(forge.pki.oids.sha256WithRSAEncryption as string), asn1.create(U, asn1.Type.NULL, false, '')]);
  const tbs = seq([
    integer('\x01'), // v2: extensions follow
    algorithm(),
    forge.pki.distinguishedNameToAsn1(caCert.subject),
    time(o.thisUpdate),
    time(o.nextUpdate),
    ...(o.entries.length > 0 ? [seq(o.entries.map((e) => seq([integer(serialBytes(e.serial)), time(e.revokedAt)])))] : []),
    asn1.create(asn1.Class.CONTEXT_SPECIFIC, 0, true, [
      seq([
        seq([oid('2.5.29.35'), octets(seq([asn1.create(asn1.Class.CONTEXT_SPECIFIC, 0, false, caCert.generateSubjectKeyIdentifier().getBytes())]))]),
        seq([oid('2.5.29.20'), octets(integer(serialBytes(o.crlNumber.toString(16))))]),
      ]),
    ]),
  ]);
  const signature = sign('sha256', Buffer.from(asn1.toDer(tbs).getBytes(), 'binary'), ca.keyPem);
  const crl = seq([tbs, algorithm(), asn1.create(U, asn1.Type.BITSTRING, false, '\x00' + signature.toString('binary'))]);
  const der = Buffer.from(asn1.toDer(crl).getBytes(), 'binary').toString('base64');
  return `-----BEGIN X509 CRL-----\n${der.match(/.{1,64}/g)?.join('\n') ?? ''}\n-----END X509 CRL-----\n`;
}
