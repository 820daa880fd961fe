import type { MqttClient } from 'mqtt';
import { connectMqtt, endMqtt, endMqttWithin, whenConnected } from '../../shared/mqtt/connect.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import { ENVELOPE_VERSION, type GatewayPresence } from '../../shared/contract/envelope.ts';
import { gatewayPresenceTopic } from '../../shared/contract/topics.ts';
import { readMqttTls } from '../../shared/mqtt/settings.ts';
import type { Logger } from '../../shared/logger.ts';
import { readKeyPairSettings, readPemSetting } from '../../shared/tls-files.ts';
import type { GatewayConfig } from './config.ts';
import { identifyByProxy, identifyByTls } from './identity.ts';
import { startGatewayServer, type GatewayServer } from './server.ts';
import { DeviceTokens } from './device-tokens.ts';
import { GatewayMetrics } from './metrics.ts';
import { SecurityReporter } from './security-reporter.ts';
import { publishOnlineOnEveryConnect } from './gateway-presence.ts';
import { CrlDelivery } from './crl-delivery.ts';
import { certificateExpiry } from '../../shared/metrics/certificates.ts';
import { ServiceMetrics } from '../../shared/metrics/registry.ts';
import { startMetricsServer, type MetricsServer } from '../../shared/metrics/server.ts';
import { settleWithin } from '../../shared/settle-within.ts';

export interface Gateway {
  readonly port: number;
  readonly server: GatewayServer;
  readonly mqtt: MqttClient;
  readonly metrics: GatewayMetrics;
  /** /metrics, /healthz and /readyz (undefined with GATEWAY_METRICS_PORT=off) */
  readonly metricsServer: MetricsServer | undefined;
  close(): Promise<void>;
}

export interface StartOptions {
  /** process metrics (CPU, memory, event loop) in this service's registry: once per process (npm start runs several services in one) */
  processMetrics?: boolean;
}

/** Builds the whole gateway from its configuration: the broker connection and the WSS endpoint. */
export async function startGateway(config: Readonly<GatewayConfig>, logger: Logger, opts: StartOptions = {}): Promise<Gateway> {
  const log = logger.child({ component: 'gateway', gatewayId: config.GATEWAY_ID });
  const served = config.GATEWAY_METRICS_PORT !== undefined;
  const metrics = new GatewayMetrics(new ServiceMetrics('gateway', { processMetrics: served && opts.processMetrics !== false, counting: served }));
  certificateExpiry(metrics.metrics, [
    { setting: 'GATEWAY_TLS_CERT_FILE', path: config.GATEWAY_TLS_CERT_FILE },
    { setting: 'GATEWAY_CA_FILE', path: config.GATEWAY_CA_FILE },
    { setting: 'MQTT_CERT_FILE', path: config.MQTT_CERT_FILE },
    { setting: 'MQTT_CA_FILE', path: config.MQTT_CA_FILE },
  ]);
  // The gateway's own presence: online at each connection to the broker; offline when it
  // stops, or from the broker itself (the will, MQTT 5 §3.1.2.5) when the gateway dies without a
  // word: the devices it held are gone with it, which the console shows.
  // Not retained: the distributor's persistent session queues it while the distributor is away,
  // and a retained copy would be delivered again, before the SUBACK, at every subscription.
  // The files its settings name are read before the broker is dialled: one missing (a mount Docker
  // made an empty folder of) stops the gateway at start, as any wrong setting does, rather than once
  // the broker answers, which a gateway whose broker was away waited for without a word.
  const caPem = readPemSetting('GATEWAY_CA_FILE', config.GATEWAY_CA_FILE);
  const tlsFiles = {
    ...readKeyPairSettings({ variable: 'GATEWAY_TLS_CERT_FILE', path: config.GATEWAY_TLS_CERT_FILE }, { variable: 'GATEWAY_TLS_KEY_FILE', path: config.GATEWAY_TLS_KEY_FILE }),
    ca: caPem,
  };
  const crl = new CrlDelivery(config.GATEWAY_CRL_FILE, caPem, log.child({ subsystem: 'crl' }));
  const since = Date.now();
  const presenceTopic = gatewayPresenceTopic(config.GATEWAY_ID);
  const presence = (state: GatewayPresence['state']) => JSON.stringify({ v: ENVELOPE_VERSION, state, gatewayId: config.GATEWAY_ID, since } satisfies GatewayPresence);
  const mqtt = connectMqtt(
    {
      url: config.MQTT_URL,
      ...readMqttTls(config),
      clientId: `gateway-${config.GATEWAY_ID}`,
      protocolVersion: config.MQTT_PROTOCOL_VERSION,
      clean: true,
    },
    log.child({ subsystem: 'mqtt' }),
    // Every subscription is made again on each connection (subscribeOnEveryConnect), not by mqtt.js.
    { resubscribe: false, will: { topic: presenceTopic, payload: Buffer.from(presence('offline')), qos: 1, retain: false } },
  );
  const stopPresence = publishOnlineOnEveryConnect(mqtt, presenceTopic, presence('online'), log);
  metrics.bind({ brokerConnected: () => mqtt.connected, connections: () => 0 });
  // Served before the broker answers, so an orchestrator sees "alive, not ready" meanwhile.
  const metricsServer = served
    ? await startMetricsServer({
        metrics: metrics.metrics,
        host: config.GATEWAY_METRICS_HOST,
        port: config.GATEWAY_METRICS_PORT,
        setting: 'GATEWAY_METRICS_PORT',
        hostNames: { setting: 'GATEWAY_METRICS_HOST_NAMES', names: config.GATEWAY_METRICS_HOST_NAMES },
        checks: [{ name: 'broker', ready: () => mqtt.connected }],
        log,
      }).catch(async (err: unknown) => {
        await endMqtt(mqtt, true);
        throw err;
      })
    : undefined;
  const securityReports = new SecurityReporter(mqtt, config.GATEWAY_ID, log.child({ subsystem: 'security-reports' }));
  // Devices are let in only once their messages can go somewhere.
  await whenConnected(mqtt);
  let server: GatewayServer | undefined;
  const unixHop = config.GATEWAY_IDENTITY_SOURCE === 'proxy' && config.EDGE_HOP === 'unix';
  const deviceTokens =
    config.GATEWAY_TOKEN_AUTH === 'on'
      ? new DeviceTokens({
          path: config.GATEWAY_DEVICE_TOKENS_FILE,
          maxFailures: config.GATEWAY_TOKEN_MAX_FAILURES,
          failureWindowMs: config.GATEWAY_TOKEN_FAILURE_WINDOW_S * 1000,
          log: log.child({ subsystem: 'device-tokens' }),
          onChange: () => server?.recheckTokens(),
        })
      : undefined;
  server = await startGatewayServer({
    identify:
      config.GATEWAY_IDENTITY_SOURCE === 'proxy'
        ? identifyByProxy(caPem, config.GATEWAY_TRUSTED_PROXIES, deviceTokens, unixHop ? 'socket' : 'certificate')
        : identifyByTls(),
    socketPath: unixHop ? config.GATEWAY_SOCKET : undefined,
    setting: unixHop ? 'GATEWAY_SOCKET' : 'GATEWAY_PORT',
    revokedSerialsFile: config.GATEWAY_REVOKED_SERIALS_FILE,
    crl,
    deviceTokens,
    rateLimits: {
      messagesPerS: config.GATEWAY_RATE_MESSAGES_PER_S,
      bytesPerS: config.GATEWAY_RATE_BYTES_PER_S,
      cpuMsPerS: config.GATEWAY_RATE_CPU_MS_PER_S,
      burstS: config.GATEWAY_RATE_BURST_S,
      frameMaxMessages: config.GATEWAY_MAX_BATCH,
      frameMaxBytes: config.GATEWAY_MAX_FRAME_BYTES,
    },
    maxConnections: config.GATEWAY_MAX_CONNECTIONS,
    maxPendingConnections: config.GATEWAY_MAX_PENDING_CONNECTIONS,
    unfinishedFramesMaxBytes: config.GATEWAY_UNFINISHED_FRAMES_MAX_MIB * 1024 * 1024,
    brokerBacklogMaxBytes: config.GATEWAY_BROKER_BACKLOG_MAX_MIB * 1024 * 1024,
    // Devices connecting directly have addresses of their own; behind Caddy every one is Caddy's.
    maxPendingPerSource: config.GATEWAY_IDENTITY_SOURCE === 'tls' ? config.GATEWAY_MAX_PENDING_PER_SOURCE : undefined,
    lingerMs: config.GATEWAY_LINGER_MS,
    envelopes: config.GATEWAY_UPLINK_ENVELOPES,
    host: config.GATEWAY_HOST,
    port: config.GATEWAY_PORT,
    path: config.GATEWAY_PATH,
    gatewayId: config.GATEWAY_ID,
    tls: tlsFiles,
    limits: {
      frameMaxBytes: config.GATEWAY_MAX_FRAME_BYTES,
      batchMaxMessages: config.GATEWAY_MAX_BATCH,
      maxInFlight: config.GATEWAY_MAX_IN_FLIGHT,
      sendBufferMaxBytes: LIMITS.sendBufferMaxBytes,
      ackHoldMs: config.GATEWAY_ACK_HOLD_MS,
    },
    mqtt,
    logger: log,
    metrics,
    securityReports,
  });
  return {
    port: server.port,
    server,
    mqtt,
    metrics,
    metricsServer,
    async close() {
      deviceTokens?.close();
      await server.close();
      securityReports.close();
      stopPresence();
      await metricsServer?.close();
      // A clean stop says so itself (the broker sends the will only for a connection lost).
      if (mqtt.connected) {
        await settleWithin(mqtt.publishAsync(presenceTopic, presence('offline'), { qos: 1 }), TIMINGS.closeGraceMs);
      }
      // Bounded: messages the broker has not acknowledged were never acked to their devices (gone
      // now), which send them again; waiting for the broker's PUBACK without end, as a graceful
      // end of the client does, kept a gateway whose broker stalled or was gone from ever stopping.
      await endMqttWithin(mqtt, TIMINGS.closeGraceMs);
    },
  };
}
