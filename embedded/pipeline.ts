import { X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import { join, resolve } from 'node:path';
import { FieldStreamError } from '../shared/errors.ts';
import type { Logger } from '../shared/logger.ts';
import { pkiPaths } from '../pki/layout.ts';
import { readPemSetting } from '../shared/tls-files.ts';
import { loadGatewayConfig } from '../dmz/gateway/config.ts';
import { startGateway, type Gateway } from '../dmz/gateway/gateway.ts';
import { loadDistributorConfig } from '../internal-network/distributor/config.ts';
import { startDistributor, type Distributor } from '../internal-network/distributor/distributor.ts';
import { loadFieldClientConfig } from '../field-client/src/config.ts';
import { startFieldClient, type RunningFieldClient } from '../field-client/src/start.ts';
import { lockDataDir, type DataDirLock } from '../field-client/src/data-dir-lock.ts';
import { makeDirDurablySync } from '../shared/durable-fs.ts';
import { loadCommandApiConfig } from '../internal-network/command-api/config.ts';
import { startCommandApi, type CommandApi } from '../internal-network/command-api/command-api.ts';
import { startEmbeddedBroker, type EmbeddedBroker } from './broker.ts';
import { loadConsoleConfig } from '../internal-network/console/config.ts';
import { startConsole, type OperatorConsole } from '../internal-network/console/console.ts';
import { AnomalyScorer } from '../internal-network/console/anomaly/scorer.ts';

type Env = Record<string, string | undefined>;

export interface EmbeddedOptions {
  /** the environment the services read their settings from (process.env, or a test's own) */
  env: Env;
  logger: Logger;
  certsDir: string;
  host: string;
  gatewayPort: number;
  brokerPort: number;
  commandApiPort: number;
  /** the operator's bearer token for the command API */
  commandApiToken: string;
  /** the simulated device's id, or undefined for none */
  simulatedDeviceId: string | undefined;
  /**
   * Each service's /metrics, /healthz and /readyz, on `host`: a port (0: chosen by the OS), or
   * absent for none. Never the services' own defaults, which would clash between pipelines.
   */
  metricsPorts?: { gateway?: number | undefined; distributor?: number | undefined; commandApi?: number | undefined; console?: number | undefined };
  /** the operator console's port on `host` (0: chosen by the OS), or absent for none */
  consolePort?: number | undefined;
}

export interface EmbeddedPipeline {
  readonly broker: EmbeddedBroker;
  readonly gateway: Gateway;
  readonly distributor: Distributor;
  readonly commandApi: CommandApi;
  readonly console: OperatorConsole | undefined;
  readonly field: RunningFieldClient | undefined;
  readonly gatewayUrl: string;
  readonly commandApiToken: string;
  close(): Promise<void>;
}

/**
 * The whole pipeline in one process on loopback: the embedded broker standing in for both
 * Mosquittos, and the very gateway, distributor and field client that the three-tier deployment
 * runs, each configured through its own settings schema.
 */
export async function startEmbeddedPipeline(o: EmbeddedOptions): Promise<EmbeddedPipeline> {
  const p = pkiPaths(o.certsDir);
  const dmzBroker = p.service('dmz/mosquitto');
  // Where the pipeline's own clients dial, by a name its certificates hold: checked before anything
  // listens, since a client that cannot verify its server only retries, and npm start would wait on.
  const dial = dialHost(o.host);
  const gatewayName = dial === '127.0.0.1' ? 'localhost' : dial;
  assertCertificateNames(o.host, dmzBroker.cert, dial, 'the embedded broker');
  assertCertificateNames(o.host, p.service('dmz/edge').cert, gatewayName, 'the gateway');
  // The simulated device's folder before anything starts: a second npm start on the same folders
  // (other ports) stops here (FIELD_DATA_DIR_IN_USE), before its distributor takes the first's state
  // folder over and its field client the first's queue (field-client/src/data-dir-lock.ts).
  let dataDirLock: DataDirLock | undefined;
  if (o.simulatedDeviceId) {
    const dir = resolve(orDefault(o.env.FIELD_DATA_DIR, SIMULATED_DATA_DIR));
    makeDirDurablySync(dir, 0o700);
    dataDirLock = await lockDataDir(dir, (err) => o.logger.error({ code: err.code, err: err.message }, 'lost the simulated device\'s FIELD_DATA_DIR to another field client'));
  }
  try {
    return await startStages(o, { dial, gatewayName, dataDirLock });
  } catch (err) {
    dataDirLock?.release();
    throw err;
  }
}

async function startStages(o: EmbeddedOptions, at: { dial: string; gatewayName: string; dataDirLock: DataDirLock | undefined }): Promise<EmbeddedPipeline> {
  const p = pkiPaths(o.certsDir);
  const dmzBroker = p.service('dmz/mosquitto');
  const { dial, gatewayName } = at;
  const broker = await startEmbeddedBroker({
    host: o.host,
    port: o.brokerPort,
    setting: 'EMBEDDED_MQTT_PORT',
    tls: {
      ca: readPemSetting('CERTS_DIR', p.publicCa),
      cert: readPemSetting('CERTS_DIR', dmzBroker.cert),
      key: readPemSetting('CERTS_DIR', dmzBroker.key),
    },
    crlFile: p.crl,
    logger: o.logger.child({ component: 'broker' }),
  });
  const mqttUrl = `mqtts://${urlHost(dial)}:${broker.port}`;
  // The embedded broker speaks MQTT 3.1.1 and has no shared subscriptions. It presents the DMZ
  // broker's certificate, which its clients verify as the DMZ broker's clients do: with that
  // broker's anchor (pki/dmz-anchor.ts), the CA itself until a --renew-dmz.
  const common = { MQTT_URL: mqttUrl, MQTT_PROTOCOL_VERSION: '4', MQTT_CA_FILE: p.dmzBrokerCa.internal };
  // A service's broker connection: the embedded broker, with the service's own certificate.
  const mqttAs = (service: Parameters<typeof p.service>[0]) => ({ ...common, MQTT_CERT_FILE: p.service(service).cert, MQTT_KEY_FILE: p.service(service).key });
  const metricsPort = (port: number | undefined) => (port === undefined ? 'off' : String(port));

  const distributor = startDistributor(
    loadDistributorConfig({
      ...o.env,
      ...mqttAs('internal/distributor'),
      DISTRIBUTOR_SHARE_GROUP: 'none',
      DISTRIBUTOR_DEVICE_KEYS_DIR: join(o.certsDir, 'internal', 'device-keys'),
      DISTRIBUTOR_REVOKED_DEVICES_FILE: join(o.certsDir, 'internal', 'revoked-devices.txt'),
      DISTRIBUTOR_STORED_FEED_KEY_FILE: p.storedFeedKey,
      DISTRIBUTOR_CLIENT_ID: orDefault(o.env.DISTRIBUTOR_CLIENT_ID, 'distributor-embedded'),
      DISTRIBUTOR_METRICS_HOST: o.host,
      DISTRIBUTOR_METRICS_PORT: metricsPort(o.metricsPorts?.distributor),
    }),
    o.logger,
    // One process: the gateway's registry carries the process metrics.
    { processMetrics: false },
  );
  // Both at once: a metrics port that cannot be had (LISTEN_FAILED) is this start's error, not a
  // rejection nobody awaits yet while the consumers subscribe.
  await Promise.all([distributor.ready, distributor.metricsServer]);

  const gateway = await startGateway(
    loadGatewayConfig({
      ...o.env,
      ...mqttAs('dmz/gateway-client'),
      GATEWAY_HOST: o.host,
      GATEWAY_PORT: String(o.gatewayPort),
      GATEWAY_TLS_CERT_FILE: p.service('dmz/edge').cert,
      GATEWAY_TLS_KEY_FILE: p.service('dmz/edge').key,
      GATEWAY_CA_FILE: p.publicCa,
      GATEWAY_REVOKED_SERIALS_FILE: join(o.certsDir, 'dmz', 'revocation', 'revoked-serials.txt'),
      GATEWAY_CRL_FILE: p.crl,
      GATEWAY_METRICS_HOST: o.host,
      GATEWAY_METRICS_PORT: metricsPort(o.metricsPorts?.gateway),
    }),
    o.logger,
  );
  const commandApi = await startCommandApi(
    loadCommandApiConfig({
      ...o.env,
      ...mqttAs('internal/command-api'),
      COMMAND_API_HOST: o.host,
      COMMAND_API_PORT: String(o.commandApiPort),
      COMMAND_API_TOKEN: o.commandApiToken,
      COMMAND_API_CLIENT_ID: 'command-api-embedded',
      COMMAND_DEVICE_KEYS_DIR: join(o.certsDir, 'internal', 'device-keys'),
      COMMAND_REVOKED_DEVICES_FILE: join(o.certsDir, 'internal', 'revoked-devices.txt'),
      COMMAND_API_METRICS_HOST: o.host,
      COMMAND_API_METRICS_PORT: metricsPort(o.metricsPorts?.commandApi),
    }),
    o.logger,
    { processMetrics: false },
  );

  // The console: what the distributor stored (its feed), history from the same local store or InfluxDB.
  const operatorConsole =
    o.consolePort === undefined
      ? undefined
      : await startConsole(
          loadConsoleConfig({
            ...o.env,
            ...mqttAs('internal/console'),
            CONSOLE_HOST: o.host,
            CONSOLE_PORT: String(o.consolePort),
            CONSOLE_CLIENT_ID: 'console-embedded',
            CONSOLE_METRICS_HOST: o.host,
            CONSOLE_METRICS_PORT: metricsPort(o.metricsPorts?.console),
            COMMAND_API_TOKEN: o.commandApiToken,
            CONSOLE_COMMAND_API_URL: `http://${urlHost(dial)}:${commandApi.port}`,
            CONSOLE_DEVICE_KEYS_DIR: join(o.certsDir, 'internal', 'device-keys'),
            CONSOLE_REVOKED_DEVICES_FILE: join(o.certsDir, 'internal', 'revoked-devices.txt'),
            CONSOLE_DEVICE_TOKENS_FILE: join(o.certsDir, 'dmz', 'tokens', 'device-tokens.json'),
            CONSOLE_STORED_FEED_KEY_FILE: p.storedFeedKey,
            // One process: the console sees every service's health, the gateway's too.
            CONSOLE_PIPELINE_TARGETS: [
              ['gateway', gateway.metricsServer?.url],
              ['distributor', (await distributor.metricsServer)?.url],
              ['command-api', commandApi.metricsServer?.url],
            ]
              .filter((t): t is [string, string] => t[1] !== undefined)
              .map(([name, url]) => `${name}=${url}`)
              .join(','),
          }),
          o.logger,
          // One process: the gateway's registry carries the process metrics.
          { scorer: new AnomalyScorer(), processMetrics: false },
        );

  const gatewayUrl = `wss://${urlHost(gatewayName)}:${gateway.port}/ws`;

  let field: RunningFieldClient | undefined;
  if (o.simulatedDeviceId) {
    field = await startFieldClient(
      loadFieldClientConfig(simulatedDeviceSettings(o.env, { certsDir: o.certsDir, deviceId: o.simulatedDeviceId, gatewayUrl, host: o.host })),
      o.logger,
      // One process: the gateway's registry carries the process metrics. Its folder's lock, taken above.
      { processMetrics: false, ...(at.dataDirLock ? { dataDirLock: at.dataDirLock } : {}) },
    );
  }

  return {
    broker,
    gateway,
    distributor,
    commandApi,
    console: operatorConsole,
    field,
    gatewayUrl,
    commandApiToken: o.commandApiToken,
    async close() {
      // Upstream first, so nothing new arrives while the later stages finish what they hold.
      await field?.close();
      await operatorConsole?.close();
      await commandApi.close();
      await gateway.close();
      await distributor.close();
      await broker.close();
    },
  };
}

/**
 * The address that reaches a server listening on `host`: `host` itself, or loopback where `host`
 * is every address (0.0.0.0, ::), which no certificate names and which is no address to dial.
 */
export function dialHost(host: string): string {
  return host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host;
}

/**
 * `host` as a URL writes it: an IPv6 address in brackets (RFC 3986 §3.2.2). `mqtts://::1:8883` is
 * no URL, and the service given it stops on a setting (MQTT_URL) the user never set.
 */
export function urlHost(host: string): string {
  return isIP(host) === 6 ? `[${host}]` : host;
}

/** Throws CONFIG_INVALID, naming EMBEDDED_HOST, unless the certificate in `certFile` is valid for `name`. */
function assertCertificateNames(host: string, certFile: string, name: string, what: string): void {
  const cert = new X509Certificate(readPemSetting('CERTS_DIR', certFile));
  const named = isIP(name) ? cert.checkIP(name) : cert.checkHost(name);
  if (named !== undefined) return;
  throw new FieldStreamError(
    'CONFIG_INVALID',
    `EMBEDDED_HOST=${host}: the certificate of ${what} (${certFile}) does not name ${name}, so the pipeline's own clients could not verify it. ` +
      'Use 127.0.0.1 (the default), 0.0.0.0 (every address; the pipeline dials loopback) or certificates that name it.',
    { variable: 'EMBEDDED_HOST', host, certFile },
  );
}

export function resolveDataPaths(env: Env): { files: string; timeseries: string; deadLetters: string } {
  return {
    files: resolve(orDefault(env.FILE_STORAGE_PATH, './data/files')),
    timeseries: resolve(orDefault(env.TIMESERIES_LOCAL_PATH, './data/timeseries')),
    deadLetters: resolve(orDefault(env.DEAD_LETTER_PATH, join('data', 'dead-letter'))),
  };
}

/** npm start's simulated device's FIELD_DATA_DIR, unless set. */
const SIMULATED_DATA_DIR = './data/field';

/**
 * A setting of `env`, or npm start's own default where it is unset or empty: `FOO=` in a .env (as
 * .env.example has many) means "the default" to every service (shared/config.ts, parseConfig), so
 * it must mean npm start's default here too, not the service's (`??` kept the empty string, which
 * the service then read as its own default: no watched folder, while npm start printed one).
 */
function orDefault(value: string | undefined, fallback: string): string {
  return value === undefined || value.trim() === '' ? fallback : value;
}

/** The settings of `npm start`'s simulated device: its own certificate and the embedded gateway, npm start's defaults under what `env` sets. */
export function simulatedDeviceSettings(env: Env, o: { certsDir: string; deviceId: string; gatewayUrl: string; host: string }): Env {
  const device = pkiPaths(o.certsDir).device(o.deviceId);
  return {
    ...env,
    DEVICE_ID: o.deviceId,
    GATEWAY_URL: o.gatewayUrl,
    FIELD_CA_FILE: pkiPaths(o.certsDir).publicCa,
    FIELD_CERT_FILE: device.cert,
    FIELD_KEY_FILE: device.key,
    FIELD_SIGNING_KEY_FILE: device.signingKey,
    FIELD_DATA_DIR: orDefault(env.FIELD_DATA_DIR, SIMULATED_DATA_DIR),
    FIELD_SIMULATE: orDefault(env.FIELD_SIMULATE, 'true'),
    // 1884, not 1883: a Mosquitto of the machine's own often holds 1883.
    FIELD_MQTT_PORT: orDefault(env.FIELD_MQTT_PORT, '1884'),
    FIELD_WATCH_DIR: orDefault(env.FIELD_WATCH_DIR, './data/outbox'),
    // On `host`, a free port unless FIELD_METRICS_PORT says one (or off): printed by npm start.
    FIELD_METRICS_HOST: o.host,
    FIELD_METRICS_PORT: orDefault(env.FIELD_METRICS_PORT, '0'),
  };
}
