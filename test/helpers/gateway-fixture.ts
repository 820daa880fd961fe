import { Writable } from 'node:stream';
import { createCertificateAuthority, issueCertificate, newKeyPair, type KeyAndCert } from '../../pki/certificates.ts';
import { createLogger, type Logger } from '../../shared/logger.ts';

/**
 * What the gateway's own tests set up around startGatewayServer: its log lines, parsed, and the
 * certificates of a CA, the gateway and its devices. (helpers/embedded.ts has a LogCapture too, but
 * importing it loads the whole embedded pipeline, seconds of a test file's budget.)
 */
export function captureLogs(): { lines: Record<string, unknown>[]; logger: Logger } {
  const lines: Record<string, unknown>[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { lines, logger: createLogger('gateway', 'info', destination) };
}

export interface EdgeCertificates {
  ca: KeyAndCert;
  /** the gateway's server certificate (CN edge, OU services) */
  server: KeyAndCert;
  /** a device's client certificate, as a TLS client takes it (valid for a day unless `validityDays` says) */
  tlsOf(deviceId: string, validityDays?: number): { ca: string; cert: string; key: string };
}

/** A CA, the gateway's certificate and the devices', all leaves on one key pair (an RSA key costs a
 * few hundred ms; what these tests check is not the keys). */
export function edgeCertificates(): EdgeCertificates {
  const ca = createCertificateAuthority('FieldStream Test CA', 1);
  const keyPair = newKeyPair();
  const server = issueCertificate(ca, { commonName: 'edge', organizationalUnit: 'services', role: 'server', subjectAltNames: ['localhost', '127.0.0.1'], validityDays: 1, keyPair });
  return {
    ca,
    server,
    tlsOf(deviceId, validityDays = 1) {
      const d = issueCertificate(ca, { commonName: deviceId, organizationalUnit: 'devices', role: 'client', validityDays, keyPair });
      return { ca: ca.certPem, cert: d.certPem, key: d.keyPem };
    },
  };
}
