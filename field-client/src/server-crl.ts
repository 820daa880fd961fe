import { verify, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { checkServerIdentity, type PeerCertificate } from 'node:tls';
import forge from 'node-forge';
import { FieldStreamError } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';

/**
 * The CRL the field client checks the server's certificate against (FIELD_CRL_FILE; unset, the
 * `ca.crl` beside FIELD_CA_FILE when there is one: the device bundle's certs/ca.crl). A server
 * certificate of the CRL's CA whose serial it lists is refused in the TLS handshake, before anything
 * is sent: the old edge certificate after `generate-certificates.sh DOMAIN --renew-dmz`, whose key a
 * compromise of the DMZ gave away (SECURITY.md). Copying the CA's current certs/ca.crl to a device is
 * enough.
 *
 * The check is the client's own (serverIdentityCheck, Node's checkServerIdentity), not OpenSSL's
 * (Node's `crl` option, X509_V_FLAG_CRL_CHECK | CRL_CHECK_ALL). OpenSSL refuses every server while
 * the CRL is not current by the device's clock, and whenever a certificate of the chain has an
 * issuer it has no CRL of: a device whose clock is behind (no RTC, no NTP yet: the client stamps
 * its messages on the gateway's clock for such devices) connected nowhere once a revocation had
 * dated the CRL after it, and a device trusting another CA beside ours (a public certificate on
 * Caddy, CADDY_TLS=acme) refused that server always. The CRL's signature is checked at start against
 * the CA in FIELD_CA_FILE, so its list is the CA's; its dates only say how fresh it is, which a file
 * copied to the device by hand cannot say anyway: not current, it is used all the same and
 * FIELD_CRL_NOT_CURRENT is logged at start.
 */
export interface ServerCrl {
  path: string;
  /** the CA (of FIELD_CA_FILE) that signed it: only its certificates are looked up in the list */
  issuer: X509Certificate;
  /** the revoked serials, uppercase hexadecimal without leading zeros */
  serials: ReadonlySet<string>;
  thisUpdate: Date;
  nextUpdate: Date | undefined;
  /** how many certificates it lists */
  revoked: number;
  /** why its dates do not fit the device's clock (past nextUpdate, dated after the clock); undefined: current */
  notCurrent: string | undefined;
}

/** A serial as ServerCrl.serials holds it. */
function serialKey(hex: string): string {
  return hex.toUpperCase().replace(/^0+(?=.)/, '');
}

/** OpenSSL's name for a revoked certificate (Node's err.code, a socket's authorizationError), which the client's own check gives too. */
export const CERT_REVOKED = 'CERT_REVOKED';

/**
 * Node's checkServerIdentity (the host name), then the CRL: a certificate the CRL's CA issued and the
 * CRL lists is refused with code CERT_REVOKED, as OpenSSL names it. Called once the chain is verified,
 * in the handshake: the connection is destroyed before the WebSocket upgrade is written.
 */
export function serverIdentityCheck(crl: ServerCrl): (host: string, cert: PeerCertificate) => Error | undefined {
  return (host, cert) => {
    const named = checkServerIdentity(host, cert);
    if (named) return named;
    const serial = revokedSerial(crl, cert.raw);
    if (serial === undefined) return undefined;
    return Object.assign(new Error(`the server's certificate (serial ${serial}) is revoked in ${crl.path}`), { code: CERT_REVOKED });
  };
}

/** The serial of the certificate (DER) when the CRL's CA issued it and the CRL lists it; else undefined. */
export function revokedSerial(crl: ServerCrl, der: Buffer): string | undefined {
  const leaf = new X509Certificate(der);
  return crl.serials.has(serialKey(leaf.serialNumber)) && signedBy(leaf, crl.issuer) ? leaf.serialNumber : undefined;
}

/** Whether `ca`'s key signed `cert`: a serial means something only with its issuer. */
function signedBy(cert: X509Certificate, ca: X509Certificate): boolean {
  try {
    return cert.verify(ca.publicKey);
  } catch {
    return false;
  }
}

const PEM = /-----BEGIN X509 CRL-----([\s\S]+?)-----END X509 CRL-----/;

/** Signature algorithms a CA signs a CRL with, by OID: the digest crypto.verify takes (null: the key's own, Ed25519). */
const DIGESTS: Record<string, string | null> = {
  '1.2.840.113549.1.1.11': 'sha256',
  '1.2.840.113549.1.1.12': 'sha384',
  '1.2.840.113549.1.1.13': 'sha512',
  '1.2.840.10045.4.3.2': 'sha256',
  '1.2.840.10045.4.3.3': 'sha384',
  '1.2.840.10045.4.3.4': 'sha512',
  '1.3.101.112': null,
};

/**
 * Reads the CRL named by FIELD_CRL_FILE (`explicit`), or the `ca.crl` beside FIELD_CA_FILE when that
 * is unset (none there: undefined, no CRL is checked). A file that cannot be read is
 * CONFIG_FILE_UNREADABLE; one that is no CRL, or no CRL of a CA in FIELD_CA_FILE, CONFIG_INVALID.
 */
export function readServerCrl(explicit: string | undefined, caFile: string, caPem: string, log: Pick<Logger, 'info' | 'warn'>, now: number = Date.now()): ServerCrl | undefined {
  const path = explicit ?? join(dirname(caFile), 'ca.crl');
  const variable = explicit === undefined ? `FIELD_CRL_FILE (unset: ${path}, beside FIELD_CA_FILE)` : `FIELD_CRL_FILE=${path}`;
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (explicit === undefined && code === 'ENOENT') {
      log.info({ crl: path }, "no CRL beside FIELD_CA_FILE: the server's certificate is checked against FIELD_CA_FILE alone (a revoked one is taken)");
      return undefined;
    }
    throw new FieldStreamError('CONFIG_FILE_UNREADABLE', `${variable} cannot be read: ${code ?? (err as Error).message}`, { variable: 'FIELD_CRL_FILE', path });
  }
  const invalid = (why: string) =>
    new FieldStreamError('CONFIG_INVALID', `${variable}: ${why}. Copy the CA's current CRL there (certs/ca.crl, made by scripts/generate-certificates.sh and at each revocation), or remove it.`, {
      variable: 'FIELD_CRL_FILE',
      path,
    });
  const text = bytes.toString('latin1');
  const pemMatch = PEM.exec(text);
  // PEM as the CA writes it, or DER (openssl crl -outform DER).
  const der = pemMatch ? Buffer.from((pemMatch[1] as string).replace(/\s+/g, ''), 'base64') : bytes;
  let parsed: ReturnType<typeof parseCrl>;
  try {
    parsed = parseCrl(der);
  } catch (err) {
    throw invalid(`not a CRL (${(err as Error).message})`);
  }
  const cas = [...caPem.matchAll(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)].flatMap((m) => {
    try {
      return [new X509Certificate(m[0])];
    } catch {
      return [];
    }
  });
  const digest = DIGESTS[parsed.algorithm];
  if (digest === undefined) throw invalid(`signed with an algorithm the client does not know (${parsed.algorithm})`);
  const issuer = cas.find((ca) => {
    try {
      return verify(digest, parsed.tbs, ca.publicKey, parsed.signature);
    } catch {
      return false;
    }
  });
  // A CRL of another CA could revoke nothing this device checks: a wrong file, said at start.
  if (!issuer) throw invalid('not signed by the CA in FIELD_CA_FILE (a CRL of another CA, which revokes none of its certificates)');
  const notCurrent =
    parsed.nextUpdate !== undefined && parsed.nextUpdate.getTime() < now
      ? "the CRL is past its nextUpdate by the device's clock: its list is used all the same; copy the CA's current certs/ca.crl here (or set the device clock right)"
      : parsed.thisUpdate.getTime() > now
        ? "the CRL is dated after the device's clock (the clock is behind): its list is used all the same; set the device clock right (NTP)"
        : undefined;
  const crl: ServerCrl = { path, issuer, serials: new Set(parsed.serials.map(serialKey)), thisUpdate: parsed.thisUpdate, nextUpdate: parsed.nextUpdate, revoked: parsed.serials.length, notCurrent };
  const fields = { crl: path, revoked: crl.revoked, thisUpdate: crl.thisUpdate.toISOString(), nextUpdate: crl.nextUpdate?.toISOString() };
  if (notCurrent !== undefined) log.warn({ code: 'FIELD_CRL_NOT_CURRENT', ...fields }, notCurrent);
  else log.info(fields, "the server's certificate is checked against the CRL");
  return crl;
}

/** The parts of a CRL (RFC 5280 §5.1) the client uses; throws on anything else. */
function parseCrl(der: Buffer): { tbs: Buffer; algorithm: string; signature: Buffer; thisUpdate: Date; nextUpdate: Date | undefined; serials: string[] } {
  const { asn1 } = forge;
  // BIT STRINGs not decoded: a signature's bytes are no ASN.1, whatever they happen to look like.
  // (forge takes these options; its type declarations know only the boolean `strict`.)
  const fromDer = asn1.fromDer as unknown as (bytes: forge.util.ByteStringBuffer, options: { strict: boolean; parseAllBytes: boolean; decodeBitStrings: boolean }) => forge.asn1.Asn1;
  const root = fromDer(forge.util.createBuffer(der.toString('binary')), { strict: true, parseAllBytes: true, decodeBitStrings: false });
  const [tbs, algorithm, signature] = root.value as forge.asn1.Asn1[];
  if (!tbs || !algorithm || !signature || !Array.isArray(tbs.value) || !Array.isArray(algorithm.value) || signature.type !== asn1.Type.BITSTRING) throw new Error('not a signed list');
  const oidOf = (a: forge.asn1.Asn1) => (a.type === asn1.Type.OID && typeof a.value === 'string' ? asn1.derToOid(a.value) : '');
  const algorithmOid = oidOf((algorithm.value as forge.asn1.Asn1[])[0] as forge.asn1.Asn1);
  const fields = [...tbs.value];
  // version (v2) is optional, an INTEGER first
  if (fields[0]?.type === asn1.Type.INTEGER) fields.shift();
  // then the signature algorithm, the issuer, thisUpdate, nextUpdate (optional), the list (optional)
  const thisUpdate = fields[2];
  const rest = fields.slice(3);
  const time = (a: forge.asn1.Asn1 | undefined): Date | undefined => {
    if (a?.type === asn1.Type.UTCTIME) return asn1.utcTimeToDate(a.value as string);
    if (a?.type === asn1.Type.GENERALIZEDTIME) return asn1.generalizedTimeToDate(a.value as string);
    return undefined;
  };
  const thisDate = time(thisUpdate);
  if (!thisDate) throw new Error('no thisUpdate');
  const nextDate = time(rest[0]);
  if (nextDate) rest.shift();
  const list = rest[0]?.type === asn1.Type.SEQUENCE && rest[0].tagClass === asn1.Class.UNIVERSAL ? (rest[0].value as forge.asn1.Asn1[]) : [];
  // each entry: SEQUENCE { userCertificate INTEGER, revocationDate, crlEntryExtensions OPTIONAL }
  const serials = list.map((entry) => {
    const serial = Array.isArray(entry.value) ? entry.value[0] : undefined;
    if (serial?.type !== asn1.Type.INTEGER || typeof serial.value !== 'string' || serial.value === '') throw new Error('an entry without a serial');
    return forge.util.bytesToHex(serial.value);
  });
  const bits = signature.value as string;
  return {
    tbs: firstElement(der),
    algorithm: algorithmOid,
    // a BIT STRING's first byte counts the unused bits (none in a signature)
    signature: Buffer.from(bits.slice(1), 'binary'),
    thisUpdate: thisDate,
    nextUpdate: nextDate,
    serials,
  };
}

/** The bytes of the first element inside a DER SEQUENCE (a CRL's tbsCertList, as signed: not re-encoded). */
function firstElement(der: Buffer): Buffer {
  const headerLength = (at: number): { header: number; length: number } => {
    const first = der[at + 1] as number;
    if (first < 0x80) return { header: 2, length: first };
    const n = first & 0x7f;
    if (n === 0 || n > 4) throw new Error('bad length');
    return { header: 2 + n, length: der.readUIntBE(at + 2, n) };
  };
  const outer = headerLength(0);
  const inner = headerLength(outer.header);
  const end = outer.header + inner.header + inner.length;
  if (end > der.length) throw new Error('truncated');
  return der.subarray(outer.header, end);
}
