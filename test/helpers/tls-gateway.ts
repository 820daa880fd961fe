import { after, before } from 'node:test';
import { connectAsync, type MqttClient } from 'mqtt';
import { identifyByTls } from '../../dmz/gateway/identity.ts';
import { startGatewayServer, type GatewayServer, type GatewayServerOptions } from '../../dmz/gateway/server.ts';
import type { ManagedProcess } from '../../scripts/local-stack/process.ts';
import { LIMITS } from '../../shared/limits.ts';
import { connectBridgeSession } from './bridge-session.ts';
import { captureLogs, edgeCertificates, type EdgeCertificates } from './gateway-fixture.ts';
import { tempDir } from './pki.ts';
import { startMosquitto } from './sparkplug.ts';

/** What tlsGatewayOnMosquitto sets up, read once its `before` has run. */
export interface TlsGatewayFixture {
  readonly logs: ReturnType<typeof captureLogs>;
  readonly gateway: GatewayServer;
  /** the gateway's Mosquitto, to pause (SIGSTOP) and resume */
  readonly broker: ManagedProcess;
  /** where the gateway's Mosquitto listens */
  readonly brokerUrl: string;
  tlsOf(deviceId: string): { ca: string; cert: string; key: string };
}

/**
 * Registers, in the calling describe, the set-up most gateway tests share and its teardown: a real
 * Mosquitto, the gateway terminating the devices' TLS itself (as `npm start` runs it) and publishing
 * there, with `limits` over the usual ones and the rest of `options` as given. The internal
 * network's bridge is there as its persistent session (bridge-session.ts), which the broker needs to
 * take the gateway's messages at all; `{ bridge: false }`: a DMZ broker the inside never connected to.
 */
export function tlsGatewayOnMosquitto(
  name: string,
  limits: Partial<GatewayServerOptions['limits']>,
  options: Partial<Omit<GatewayServerOptions, 'limits' | 'setting'>> = {},
  fixture: { bridge?: boolean } = {},
): TlsGatewayFixture {
  const work = tempDir(name);
  const logs = captureLogs();
  let broker: { url: string; process: ManagedProcess } | undefined;
  let bridge: MqttClient | undefined;
  let mqtt: MqttClient | undefined;
  let gateway: GatewayServer | undefined;
  let certificates: EdgeCertificates | undefined;
  before(async () => {
    certificates = edgeCertificates();
    const { ca, server } = certificates;
    broker = await startMosquitto(work.dir);
    if (fixture.bridge !== false) bridge = await connectBridgeSession(broker.url, `${name}-bridge`);
    mqtt = await connectAsync(broker.url, { protocolVersion: 5, clientId: name });
    gateway = await startGatewayServer({
      host: '127.0.0.1',
      port: 0,
      setting: options.socketPath ? 'GATEWAY_SOCKET' : 'GATEWAY_PORT',
      path: '/ws',
      gatewayId: `gw-${name}`,
      tls: { cert: server.certPem, key: server.keyPem, ca: ca.certPem },
      limits: { frameMaxBytes: LIMITS.frameMaxBytes, batchMaxMessages: LIMITS.batchMaxMessages, maxInFlight: 100, sendBufferMaxBytes: LIMITS.sendBufferMaxBytes, ackHoldMs: 0, ...limits },
      identify: identifyByTls(),
      mqtt,
      logger: logs.logger,
      ...options,
    });
  });
  after(async () => {
    await broker?.process.resume().catch(() => undefined);
    await gateway?.close();
    await mqtt?.endAsync(true);
    await bridge?.endAsync(true);
    await broker?.process.stop();
    work.cleanup();
  });
  return {
    logs,
    get gateway() {
      if (!gateway) throw new Error('the gateway is not started yet');
      return gateway;
    },
    get broker() {
      if (!broker) throw new Error('the broker is not started yet');
      return broker.process;
    },
    get brokerUrl() {
      if (!broker) throw new Error('the broker is not started yet');
      return broker.url;
    },
    tlsOf: (deviceId) => {
      if (!certificates) throw new Error('the gateway is not started yet');
      return certificates.tlsOf(deviceId);
    },
  };
}
