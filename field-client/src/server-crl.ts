import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { checkServerIdentity, type PeerCertificate } from 'node:tls';
import { FieldStreamError } from '../../shared/errors.ts';
import { serialKey, verifyCrl, type VerifiedCrl } from '../../shared/security/crl.ts';
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
export interface ServerCrl extends VerifiedCrl {
  /** where it was read from (a file, or the copy a gateway handed over) */
  path: string;
  /** why its dates do not fit the device's clock (past nextUpdate, dated after the clock); undefined: current */
  notCurrent: string | undefined;
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
  let verified: VerifiedCrl;
  try {
    verified = verifyCrl(bytes, caPem);
  } catch (err) {
    // A CRL of another CA could revoke nothing this device checks: a wrong file, said at start.
    throw invalid(`${(err as Error).message.replace('not signed by the CA', 'not signed by the CA in FIELD_CA_FILE')}`);
  }
  return describedCrl(verified, path, log, now);
}

/** The CRL as the client holds it, and the line that says so (FIELD_CRL_NOT_CURRENT when its dates do not fit the clock). */
export function describedCrl(verified: VerifiedCrl, path: string, log: Pick<Logger, 'info' | 'warn'>, now: number = Date.now()): ServerCrl {
  const notCurrent =
    verified.nextUpdate !== undefined && verified.nextUpdate.getTime() < now
      ? "the CRL is past its nextUpdate by the device's clock: its list is used all the same; copy the CA's current certs/ca.crl here (or set the device clock right)"
      : verified.thisUpdate.getTime() > now
        ? "the CRL is dated after the device's clock (the clock is behind): its list is used all the same; set the device clock right (NTP)"
        : undefined;
  const crl: ServerCrl = { ...verified, path, notCurrent };
  const fields = { crl: path, revoked: crl.revoked, thisUpdate: crl.thisUpdate.toISOString(), nextUpdate: crl.nextUpdate?.toISOString() };
  if (notCurrent !== undefined) log.warn({ code: 'FIELD_CRL_NOT_CURRENT', ...fields }, notCurrent);
  else log.info(fields, "the server's certificate is checked against the CRL");
  return crl;
}
