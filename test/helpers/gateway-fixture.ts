import { Writable } from 'node:stream';
import { createCertificateAuthority, issueCertificate, newKeyPair, type KeyAndCert } from '../../pki/certificates.ts';
import { createLogger, type Logger } from '../../shared/logger.ts';
import type { MqttClient } from 'mqtt';
import type { DeviceTokens } from '../../dmz/gateway/device-tokens.ts';
import { identifyByProxy } from '../../dmz/gateway/identity.ts';
import type { GatewayServerOptions } from '../../dmz/gateway/server.ts';
import { LIMITS } from '../../shared/limits.ts';

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

/**
 * A gateway as Caddy reaches it on the host (EDGE_HOP=unix): on a Unix socket, the device's identity
 * taken from Caddy's certificate header or the device's token (identifyByProxy), no TLS of its own.
 * `extra`: options of the test's own (maxConnections, ...).
 */
export function socketGatewayOptions(
  o: { socketPath: string; gatewayId: string; caPem: string; tokens: DeviceTokens; mqtt: MqttClient; logger: Logger },
  extra: Partial<GatewayServerOptions> = {},
): GatewayServerOptions {
  return {
    host: '127.0.0.1',
    port: 0,
    setting: 'GATEWAY_SOCKET',
    socketPath: o.socketPath,
    path: '/ws',
    gatewayId: o.gatewayId,
    tls: { cert: '', key: '', ca: o.caPem },
    limits: { frameMaxBytes: LIMITS.frameMaxBytes, batchMaxMessages: LIMITS.batchMaxMessages, maxInFlight: 100, sendBufferMaxBytes: LIMITS.sendBufferMaxBytes, ackHoldMs: 0 },
    identify: identifyByProxy(o.caPem, ['edge'], o.tokens, 'socket'),
    deviceTokens: o.tokens,
    mqtt: o.mqtt,
    logger: o.logger,
    ...extra,
  };
}
