import { verify, X509Certificate } from 'node:crypto';
import forge from 'node-forge';

/**
 * A CA's CRL (RFC 5280 §5), read and checked against the CA: what the field client checks the
 * server's certificate against (field-client/src/server-crl.ts), and what a gateway hands a device
 * whose CRL is older (dmz/gateway/crl-delivery.ts). Only its signature makes it the CA's: a copy
 * from anywhere, a compromised DMZ's included, is as good as the CA's own, or refused.
 */
export interface VerifiedCrl {
  /** the CRL as the CA signed it (DER) */
  der: Buffer;
  /** the CA that signed it: only its certificates are looked up in the list */
  issuer: X509Certificate;
  /** the revoked serials, uppercase hexadecimal without leading zeros (serialKey) */
  serials: ReadonlySet<string>;
  thisUpdate: Date;
  nextUpdate: Date | undefined;
  /** how many certificates it lists */
  revoked: number;
}

/** A serial as VerifiedCrl.serials holds it. */
export function serialKey(hex: string): string {
  return hex.toUpperCase().replace(/^0+(?=.)/, '');
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
 * The CRL in `bytes` (PEM as the CA writes it, or DER: openssl crl -outform DER), checked to be
 * signed by one of the CAs in `caPem`. Throws an Error saying why not: not a CRL, signed with an
 * algorithm not known here, or not signed by any of those CAs (a CRL of another CA revokes none of
 * their certificates).
 */
export function verifyCrl(bytes: Buffer, caPem: string): VerifiedCrl {
  const text = bytes.toString('latin1');
  const pemMatch = PEM.exec(text);
  const der = pemMatch ? Buffer.from((pemMatch[1] as string).replace(/\s+/g, ''), 'base64') : bytes;
  let parsed: ReturnType<typeof parseCrl>;
  try {
    parsed = parseCrl(der);
  } catch (err) {
    throw new Error(`not a CRL (${(err as Error).message})`);
  }
  const cas = [...caPem.matchAll(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)].flatMap((m) => {
    try {
      return [new X509Certificate(m[0])];
    } catch {
      return [];
    }
  });
  const digest = DIGESTS[parsed.algorithm];
  if (digest === undefined) throw new Error(`signed with an algorithm not known here (${parsed.algorithm})`);
  const issuer = cas.find((ca) => {
    try {
      return verify(digest, parsed.tbs, ca.publicKey, parsed.signature);
    } catch {
      return false;
    }
  });
  if (!issuer) throw new Error('not signed by the CA (a CRL of another CA, which revokes none of its certificates)');
  return {
    der: Buffer.from(der),
    issuer,
    serials: new Set(parsed.serials.map(serialKey)),
    thisUpdate: parsed.thisUpdate,
    nextUpdate: parsed.nextUpdate,
    revoked: parsed.serials.length,
  };
}

/** The parts of a CRL (RFC 5280 §5.1) used here; throws on anything else. */
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
