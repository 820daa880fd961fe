import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { pkiPaths } from '../../pki/layout.ts';
import { createLogger } from '../../shared/logger.ts';
import type { ManagedProcess } from './process.ts';
import { freePort } from './ports.ts';
import { localHostOf, mosquittoProcess, nodeProcess, startInStages, type MachineOptions } from './machine.ts';
import { untilBridged } from './bridge-ready.ts';

/**
 * The internal server as real processes: the internal Mosquitto, bridged by dialling out to every
 * DMZ broker listed, the distributor, the command API, the broker exporter and the operator
 * console, from the files docker-compose.internal.yml mounts.
 */
export interface InternalServerOptions extends MachineOptions {
  commandApiToken: string;
  /**
   * the DMZ brokers its bridges dial, one `connection` each, as reachable from this machine; `host`
   * must be a name in that broker's certificate (pki/layout.ts: localhost, 127.0.0.1, DMZ_BROKER_HOST(S))
   */
  dmzBrokers: readonly { host: string; port: number }[];
  /** the DMZ broker whose $SYS the broker exporter reads (default the first of `dmzBrokers`; 'off': none) */
  monitorDmzBroker?: { host: string; port: number } | 'off';
  /** fixed ports (0 or absent: chosen by the OS in this namespace; in another namespace, pass them all) */
  ports?: Partial<Record<'mqtt' | 'commandApi' | 'console' | 'brokerExporter' | 'distributorMetrics' | 'commandApiMetrics' | 'consoleMetrics', number>>;
}

export interface InternalServer {
  readonly ports: { mqtt: number; commandApi: number; console: number; brokerExporter: number };
  /** as reached from this machine's own namespace */
  readonly urls: { mqtt: string; commandApi: string; console: string };
  readonly mosquitto: ManagedProcess;
  readonly distributor: ManagedProcess;
  readonly commandApi: ManagedProcess;
  readonly brokerExporter: ManagedProcess;
  readonly console: ManagedProcess;
  /** /metrics (and /healthz, /readyz) base URLs */
  readonly metrics: { brokerExporter: string; distributor: string; commandApi: string; console: string };
  readonly dataDir: { files: string; timeseries: string; deadLetters: string; commands: string };
  /** in start order */
  readonly all: ManagedProcess[];
  start(): Promise<void>;
  /** Resolves once every bridge has its subscriptions on its DMZ broker (bridge-ready.ts). */
  untilBridged(timeoutMs?: number): Promise<void>;
  /** a clean stop, broker last; nothing is restarted */
  close(): Promise<void>;
}

const port = async (fixed: number | undefined) => (fixed ? fixed : freePort());

/** Builds the processes and picks the ports; `start()` runs them (startInternalServer does both). */
export async function createInternalServer(o: InternalServerOptions): Promise<InternalServer> {
  if (o.dmzBrokers.length === 0) throw new Error('the internal server needs at least one DMZ broker to bridge to');
  const p = pkiPaths(o.certsDir);
  const w = (...parts: string[]) => join(o.workDir, ...parts);
  mkdirSync(w('logs'), { recursive: true });
  const bind = o.bindHost ?? '127.0.0.1';
  const local = localHostOf(bind);
  const ports = {
    mqtt: await port(o.ports?.mqtt),
    commandApi: await port(o.ports?.commandApi),
    console: await port(o.ports?.console),
    brokerExporter: await port(o.ports?.brokerExporter),
  };
  const metricsPorts = { distributor: await port(o.ports?.distributorMetrics), commandApi: await port(o.ports?.commandApiMetrics), console: await port(o.ports?.consoleMetrics) };
  const http = (pt: number) => `http://${local.connect}:${pt}`;
  const metrics = { brokerExporter: http(ports.brokerExporter), distributor: http(metricsPorts.distributor), commandApi: http(metricsPorts.commandApi), console: http(metricsPorts.console) };
  const supervisor = (o.logger ?? createLogger('stack')).child({ subsystem: 'supervisor' });
  const m = { ...o, supervisor, bind };

  // The bridges: the same script and template the compose file's entrypoint runs, one file per DMZ broker.
  const bridgesDir = w('internal-mosquitto', 'bridges');
  // What render-bridges.sh renders the bridges from, and the broker exporter the bridges it expects.
  // BRIDGE_STATE_TOKEN: the bridges' states under names the DMZ cannot forge (bridge.conf), new at each start.
  const bridges = { DMZ_BROKER_HOSTS: o.dmzBrokers.map((b) => `${b.host}:${b.port}`).join(','), BRIDGE_CLIENT_ID: 'fieldstream-bridge', BRIDGE_STATE_TOKEN: randomBytes(16).toString('hex') };
  const mosquitto = mosquittoProcess(m, 'internal-mosquitto', 'internal', ports.mqtt, {
    MOSQUITTO_BRIDGES_DIR: bridgesDir,
    DMZ_BROKER_HOSTS: bridges.DMZ_BROKER_HOSTS,
    // The DMZ broker's own anchor, not the CA (pki/dmz-anchor.ts), as in the compose file.
    BRIDGE_CA_FILE: p.dmzBrokerCa.internal,
    BRIDGE_CERT_FILE: p.service('internal/bridge').cert,
    BRIDGE_KEY_FILE: p.service('internal/bridge').key,
    BRIDGE_CLIENT_ID: bridges.BRIDGE_CLIENT_ID,
    BRIDGE_STATE_TOKEN: bridges.BRIDGE_STATE_TOKEN,
    // The bridge's MQTT version as the compose file passes it: the setting, or mqttv311 when unset or empty.
    BRIDGE_PROTOCOL_VERSION: o.env.BRIDGE_PROTOCOL_VERSION || 'mqttv311',
    RENDER_CONFIG: join(o.repoRoot, 'scripts', 'render-config.sh'),
  }, (env) => {
    execFileSync(join(o.repoRoot, 'internal-network', 'mosquitto', 'render-bridges.sh'), [join(o.repoRoot, 'internal-network', 'mosquitto', 'bridge.conf'), bridgesDir], { env });
  });
  const mqttEnv = (service: Parameters<typeof p.service>[0]) => ({
    MQTT_URL: `mqtts://${local.name}:${ports.mqtt}`,
    MQTT_CA_FILE: p.publicCa,
    MQTT_CERT_FILE: p.service(service).cert,
    MQTT_KEY_FILE: p.service(service).key,
  });
  const dataDir = { files: w('files'), timeseries: w('timeseries'), deadLetters: w('dead-letter'), commands: w('commands.jsonl') };
  const distributor = nodeProcess(m, 'distributor', 'distributor', {
    DISTRIBUTOR_METRICS_HOST: bind,
    DISTRIBUTOR_METRICS_PORT: String(metricsPorts.distributor),
    ...mqttEnv('internal/distributor'),
    DISTRIBUTOR_CLIENT_ID: 'distributor-1',
    DISTRIBUTOR_DEVICE_KEYS_DIR: join(o.certsDir, 'internal', 'device-keys'),
    DISTRIBUTOR_REVOKED_DEVICES_FILE: join(o.certsDir, 'internal', 'revoked-devices.txt'),
    DISTRIBUTOR_STORED_FEED_KEY_FILE: p.storedFeedKey,
    DISTRIBUTOR_STATE_DIR: w('distributor-state'),
    FILE_STORAGE_PATH: dataDir.files,
    TIMESERIES_LOCAL_PATH: dataDir.timeseries,
    DEAD_LETTER_PATH: dataDir.deadLetters,
    // Touched once every consumer is subscribed: readiness that does not depend on the log level.
    DISTRIBUTOR_HEALTH_FILE: w('distributor.healthy'),
  }, { file: w('distributor.healthy') }, [metricsPorts.distributor]);
  const commandApi = nodeProcess(m, 'command-api', 'command-api', {
    COMMAND_API_METRICS_HOST: bind,
    COMMAND_API_METRICS_PORT: String(metricsPorts.commandApi),
    COMMAND_API_HOST: bind,
    COMMAND_API_PORT: String(ports.commandApi),
    COMMAND_API_TOKEN: o.commandApiToken,
    COMMAND_STATE_PATH: dataDir.commands,
    ...mqttEnv('internal/command-api'),
    COMMAND_API_CLIENT_ID: 'command-api-1',
    COMMAND_DEVICE_KEYS_DIR: join(o.certsDir, 'internal', 'device-keys'),
    COMMAND_REVOKED_DEVICES_FILE: join(o.certsDir, 'internal', 'revoked-devices.txt'),
  }, { port: ports.commandApi, host: local.connect }, [metricsPorts.commandApi]);
  // Dials out to a DMZ broker as the bridge does, with the monitor certificate.
  const monitored = o.monitorDmzBroker ?? o.dmzBrokers[0];
  const brokerExporter = nodeProcess(m, 'broker-exporter', 'broker-exporter', {
    ...mqttEnv('internal/monitor'),
    DMZ_MQTT_URL: monitored === 'off' || !monitored ? 'off' : `mqtts://${monitored.host}:${monitored.port}`,
    DMZ_MQTT_CA_FILE: p.dmzBrokerCa.internal,
    ...bridges,
    BROKER_EXPORTER_CLIENT_ID: 'broker-exporter-1',
    BROKER_EXPORTER_METRICS_HOST: bind,
    BROKER_EXPORTER_METRICS_PORT: String(ports.brokerExporter),
  }, { port: ports.brokerExporter, host: local.connect });
  // The console: the stored feed, the internal services' health, the same store.
  const operatorConsole = nodeProcess(m, 'console', 'console', {
    CONSOLE_METRICS_HOST: bind,
    CONSOLE_METRICS_PORT: String(metricsPorts.console),
    ...mqttEnv('internal/console'),
    CONSOLE_CLIENT_ID: 'console-1',
    CONSOLE_HOST: bind,
    CONSOLE_PORT: String(ports.console),
    COMMAND_API_TOKEN: o.commandApiToken,
    CONSOLE_COMMAND_API_URL: http(ports.commandApi),
    CONSOLE_DEVICE_KEYS_DIR: join(o.certsDir, 'internal', 'device-keys'),
    CONSOLE_REVOKED_DEVICES_FILE: join(o.certsDir, 'internal', 'revoked-devices.txt'),
    // one machine here: the console reads the gateways' tokens file itself (a copy on a real internal server)
    CONSOLE_DEVICE_TOKENS_FILE: join(o.certsDir, 'dmz', 'tokens', 'device-tokens.json'),
    CONSOLE_STORED_FEED_KEY_FILE: p.storedFeedKey,
    CONSOLE_PIPELINE_TARGETS: `distributor=${metrics.distributor},command-api=${metrics.commandApi},broker-exporter=${metrics.brokerExporter}`,
    TIMESERIES_LOCAL_PATH: dataDir.timeseries,
    CONSOLE_STATE_DIR: w('console-state'),
  }, { port: ports.console, host: local.connect }, [metricsPorts.console]);

  const all = [mosquitto, distributor, commandApi, brokerExporter, operatorConsole];
  return {
    ports,
    urls: { mqtt: `mqtts://${local.name}:${ports.mqtt}`, commandApi: http(ports.commandApi), console: `${http(ports.console)}/` },
    mosquitto,
    distributor,
    commandApi,
    brokerExporter,
    console: operatorConsole,
    metrics,
    dataDir,
    all,
    start: () => startInStages([[mosquitto], all.filter((p) => p !== mosquitto)]),
    untilBridged: (timeoutMs = 30_000) =>
      untilBridged({
        url: `mqtts://${local.name}:${ports.mqtt}`,
        ca: p.publicCa,
        cert: p.service('internal/monitor').cert,
        key: p.service('internal/monitor').key,
        token: bridges.BRIDGE_STATE_TOKEN,
        bridges: o.dmzBrokers.length,
        timeoutMs,
      }),
    async close() {
      for (const proc of all) proc.stopSupervising();
      for (const proc of [operatorConsole, brokerExporter, commandApi, distributor, mosquitto]) await proc.stop();
    },
  };
}

/** The internal server, started (broker first). */
export async function startInternalServer(o: InternalServerOptions): Promise<InternalServer> {
  const server = await createInternalServer(o);
  await server.start();
  return server;
}
