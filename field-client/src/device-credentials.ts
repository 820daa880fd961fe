import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readPemSetting } from '../../shared/tls-files.ts';
import { DeviceIdSchema } from '../../shared/contract/primitives.ts';
import type { Logger } from '../../shared/logger.ts';
import { stampOf } from '../../shared/reloaded-file.ts';
import { readDeviceToken } from './device-token-file.ts';

/** What the device presents to the gateway: its certificate and key, or its device token. */
export type DeviceAuth = { cert: string; key: string } | { token: string };

export type DeviceAuthFiles = { certFile: string; keyFile: string } | { tokenFile: string };

/**
 * The device's certificate and key (FIELD_CERT_FILE, FIELD_KEY_FILE), or its token
 * (FIELD_TOKEN_FILE), read at start and again, before each connection attempt, when a file changed
 * since (one stat each): a renewed certificate or token copied onto the device is presented from
 * the next connection on, no restart, as the health message's certDaysLeft and the
 * certificate-expiry metric, which read the file, already said. Until then a device kept the old
 * one, and was locked out when it expired while its dashboard showed the new date.
 *
 * A version that cannot be used leaves the one in use: a certificate or key that cannot be read or
 * parsed, a key that is not the certificate's (one of the two copied, the other not yet), a
 * certificate of another device, a token that is not this device's. It is FIELD_CREDENTIALS_RELOAD_REFUSED,
 * logged once for that version of the files; the next change is looked at again.
 */
export class DeviceCredentials {
  private held: DeviceAuth;
  /** the version of the files the held credentials, or the last refusal, were read from */
  private stamp: string;

  constructor(
    private readonly files: DeviceAuthFiles,
    private readonly deviceId: string,
    initial: DeviceAuth,
    private readonly log: Pick<Logger, 'info' | 'warn'>,
  ) {
    this.held = initial;
    this.stamp = this.stampNow();
  }

  /** The credentials to present now: the files' current version when it can be used, else the last good one. */
  current(): DeviceAuth {
    const stamp = this.stampNow();
    if (stamp === this.stamp) return this.held;
    this.stamp = stamp;
    try {
      this.held = this.read();
    } catch (err) {
      this.log.warn({ code: 'FIELD_CREDENTIALS_RELOAD_REFUSED', files: this.paths(), err: (err as Error).message }, 'the device credentials changed and were not taken: the ones read before are still presented');
      return this.held;
    }
    this.log.info({ files: this.paths() }, 'the device credentials changed: presented from this connection on');
    return this.held;
  }

  private paths(): string[] {
    return 'tokenFile' in this.files ? [this.files.tokenFile] : [this.files.certFile, this.files.keyFile];
  }

  /** The files' version (a file gone or unreadable counts as a version of its own, refused when read). */
  private stampNow(): string {
    return this.paths()
      .map((p) => {
        try {
          return stampOf(p);
        } catch (err) {
          return (err as NodeJS.ErrnoException).code ?? 'missing';
        }
      })
      .join('|');
  }

  private read(): DeviceAuth {
    const f = this.files;
    if ('tokenFile' in f) return { token: readDeviceToken(f.tokenFile, this.deviceId) };
    const cert = readPemSetting('FIELD_CERT_FILE', f.certFile);
    const key = readPemSetting('FIELD_KEY_FILE', f.keyFile);
    certificateOfDevice(f.certFile, certificateWithItsKey(f, cert, key), this.deviceId);
    return { cert, key };
  }
}

/**
 * An Error naming FIELD_CERT_FILE when the certificate is no device's (a service's, a CA's: the
 * gateway refuses it, GATEWAY_NOT_A_DEVICE_CERTIFICATE) or another device's. At start as at a
 * reload: the gateway takes the device id from the certificate (its CN), not from DEVICE_ID, so
 * the client would connect as that other device and each of its messages, which say DEVICE_ID, be
 * refused (GATEWAY_DEVICE_MISMATCH), for ever.
 */
export function certificateOfDevice(certFile: string, x509: X509Certificate, deviceId: string): void {
  // Before the name: a service's certificate (of the same CA, so TLS takes it) is refused by the
  // gateway at every attempt, whatever its CN; told it was "of device X", the operator renamed the device.
  const notDevice = notADeviceCertificate(x509);
  if (notDevice !== undefined) throw new Error(`FIELD_CERT_FILE=${certFile} is ${notDevice}: the gateway refuses it (GATEWAY_NOT_A_DEVICE_CERTIFICATE)`);
  const cn = /(?:^|\n)CN=([^\n]+)/.exec(x509.subject)?.[1];
  if (cn !== deviceId) throw new Error(`FIELD_CERT_FILE=${certFile} is the certificate of device "${cn ?? ''}", not of DEVICE_ID=${deviceId}`);
}

/**
 * The certificate, once it is known to be one and `key` to be its private key; else an Error naming
 * the setting at fault. At start as at a reload: a pair that does not match fails every TLS
 * handshake, so the client could only retry for ever.
 */
export function certificateWithItsKey(f: { certFile: string; keyFile: string }, cert: string, key: string): X509Certificate {
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(cert);
  } catch (err) {
    throw new Error(`FIELD_CERT_FILE=${f.certFile} is not a certificate: ${(err as Error).message}`);
  }
  let matches: boolean;
  try {
    matches = x509.checkPrivateKey(createPrivateKey(key));
  } catch (err) {
    throw new Error(`FIELD_KEY_FILE=${f.keyFile} is not a private key: ${(err as Error).message}`);
  }
  if (!matches) throw new Error(`FIELD_KEY_FILE=${f.keyFile} is not the key of FIELD_CERT_FILE=${f.certFile}`);
  return x509;
}

/** The TLS client authentication purpose (RFC 5280 §4.2.1.12), which a device's certificate must allow. */
const CLIENT_AUTH_OID = '1.3.6.1.5.5.7.3.2';

/** One attribute of a subject as Node prints it ("CN=x\nO=y\nOU=z"). */
function subjectField(subject: string, key: string): string | undefined {
  return subject.split('\n').find((line) => line.startsWith(`${key}=`))?.slice(key.length + 1);
}

/**
 * What the certificate is when it is not a device's, as the gateway tells one (dmz/gateway/identity.ts:
 * OU "devices", a device id as CN) and TLS does (a CA's certificate, or one not for TLS clients,
 * is refused in the handshake); undefined for a device's. The start, a reload and `fieldstream doctor`
 * judge by it alike.
 */
export function notADeviceCertificate(cert: X509Certificate): string | undefined {
  const cn = subjectField(cert.subject, 'CN');
  if (cert.ca) return `a CA's certificate (${JSON.stringify(cn ?? cert.subject)}), not the device's`;
  const ou = subjectField(cert.subject, 'OU');
  if (ou !== 'devices') return `the certificate of ${JSON.stringify(cn ?? '')} (OU ${ou === undefined ? 'none' : JSON.stringify(ou)}), not a device certificate (OU "devices")`;
  if (!DeviceIdSchema.safeParse(cn).success) return `a certificate whose CN ${JSON.stringify(cn ?? '')} is no device id`;
  if (cert.keyUsage !== undefined && !cert.keyUsage.includes(CLIENT_AUTH_OID)) return 'a certificate not for TLS clients (its extended key usage lacks clientAuth)';
  return undefined;
}
