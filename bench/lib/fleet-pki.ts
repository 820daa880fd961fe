import { createHash, createPrivateKey, generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import forge from 'node-forge';
import { issueCertificate, newKeyPair, type KeyAndCert } from '../../pki/certificates.ts';
import { pkiPaths } from '../../pki/layout.ts';

/** One simulated device of the fleet: its own key, certificate and message-signing key. */
export interface FleetDevice {
  id: string;
  certPem: string;
  keyPem: string;
  signingKey: Buffer;
}

/**
 * Certificates for many simulated devices, each with a key of its own: an EC P-256 key from
 * node:crypto (a fraction of a millisecond, where an RSA-2048 key takes tens) in a certificate the
 * run's CA signs, with the subject and extensions the project's CA gives a device
 * (pki/certificates.ts: CN = device id, O FieldStream, OU devices, client authentication only).
 * forge builds RSA certificates only, so the certificate is built around a stand-in RSA key and its
 * SubjectPublicKeyInfo replaced by the EC key's before the CA signs it natively (RFC 5280 §4.1:
 * the signature covers the DER of the TBSCertificate). keyUsage is digitalSignature alone: an ECDSA
 * key signs in TLS, it never enciphers (RFC 5480 §3). Each device's signing key is written to the
 * internal registry, as onboarding does (pki/device-bundle.ts ensureSigningKey).
 */
export function issueFleet(certsDir: string, ca: KeyAndCert, ids: readonly string[], validityDays = 1): FleetDevice[] {
  const caCert = forge.pki.certificateFromPem(ca.certPem);
  const caKey = createPrivateKey(ca.keyPem);
  // Any RSA public key will do as the stand-in: it is replaced before signing.
  const standIn = forge.pki.publicKeyFromPem(newKeyPair().publicPem);
  const authorityKeyId = caCert.generateSubjectKeyIdentifier().getBytes();
  const sha256WithRsa = forge.pki.oids.sha256WithRSAEncryption as string;
  const registry = pkiPaths(certsDir);
  mkdirSync(dirname(registry.deviceKeyRegistry('x')), { recursive: true, mode: 0o700 });
  return ids.map((id) => {
    const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const spki = publicKey.export({ type: 'spki', format: 'der' });
    // RFC 5280 §4.2.1.2 method 1: SHA-1 of the subjectPublicKey bits (the 65-byte point ends the SPKI).
    const keyId = createHash('sha1').update(spki.subarray(spki.length - 65)).digest('binary');
    const cert = forge.pki.createCertificate();
    cert.publicKey = standIn;
    cert.serialNumber = '01' + randomBytes(15).toString('hex');
    const now = Date.now();
    cert.validity.notBefore = new Date(now - 5 * 60_000);
    cert.validity.notAfter = new Date(now + validityDays * 86_400_000);
    cert.setSubject([
      { name: 'commonName', value: id },
      { name: 'organizationName', value: 'FieldStream' },
      { shortName: 'OU', value: 'devices' },
    ]);
    cert.setIssuer(caCert.subject.attributes);
    cert.setExtensions([
      { name: 'basicConstraints', cA: false, critical: true },
      { name: 'keyUsage', digitalSignature: true, critical: true },
      { name: 'extKeyUsage', serverAuth: false, clientAuth: true },
      { name: 'subjectKeyIdentifier', value: forge.asn1.create(forge.asn1.Class.UNIVERSAL, forge.asn1.Type.OCTETSTRING, false, keyId) },
      { name: 'authorityKeyIdentifier', keyIdentifier: authorityKeyId },
    ]);
    cert.signatureOid = sha256WithRsa;
    cert.siginfo.algorithmOid = sha256WithRsa;
    // getTBSCertificate is part of forge's pki API but missing from its type declarations.
    const tbs = (forge.pki as unknown as { getTBSCertificate(c: forge.pki.Certificate): forge.asn1.Asn1 }).getTBSCertificate(cert);
    // TBSCertificate: version, serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo, extensions.
    (tbs.value as forge.asn1.Asn1[])[6] = forge.asn1.fromDer(spki.toString('binary'));
    const tbsDer = forge.asn1.toDer(tbs).getBytes();
    const signature = sign('sha256', Buffer.from(tbsDer, 'binary'), caKey).toString('binary');
    const { create, Class, Type } = forge.asn1;
    const der = forge.asn1
      .toDer(
        create(Class.UNIVERSAL, Type.SEQUENCE, true, [
          tbs,
          create(Class.UNIVERSAL, Type.SEQUENCE, true, [
            create(Class.UNIVERSAL, Type.OID, false, forge.asn1.oidToDer(sha256WithRsa).getBytes()),
            create(Class.UNIVERSAL, Type.NULL, false, ''),
          ]),
          create(Class.UNIVERSAL, Type.BITSTRING, false, '\x00' + signature),
        ]),
      )
      .getBytes();
    const certPem = `-----BEGIN CERTIFICATE-----\n${Buffer.from(der, 'binary').toString('base64').replace(/.{64}/g, '$&\n').replace(/\n?$/, '\n')}-----END CERTIFICATE-----\n`;
    const signingKey = randomBytes(32);
    writeFileSync(registry.deviceKeyRegistry(id), signingKey.toString('hex') + '\n', { mode: 0o600 });
    return { id, certPem, keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), signingKey };
  });
}

/** For comparison in the report: what issuing one device certificate the project's way costs (an RSA key each). */
export function rsaIssueMs(ca: KeyAndCert): number {
  const t = performance.now();
  issueCertificate(ca, { commonName: 'timing-0', organizationalUnit: 'devices', role: 'client', validityDays: 1 });
  return Math.round(performance.now() - t);
}
