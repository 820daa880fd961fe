import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { pkiPaths } from '../../pki/layout.ts';
import { createLogger, type Logger } from '../../shared/logger.ts';
import { ManagedProcess } from './process.ts';
import { freePort } from './ports.ts';

/**
 * The DMZ and internal tiers as real processes on loopback, from the same configuration files the
 * compose files mount (Caddyfile, dmz/mosquitto/*, internal-network/mosquitto/*), templated only
 * by environment variables. `npm run stack` runs it; the end-to-end tests run it too.
 */
export interface LocalStackOptions {
  repoRoot: string;
  certsDir: string;
  /** rendered configurations, broker persistence, logs, stored files */
  workDir: string;
  /** settings passed on to every service (INFLUXDB_* for the distributor, LOG_LEVEL, ...) */
  env: Record<string, string | undefined>;
  commandApiToken: string;
  gateways?: number;
  /** fixed ports (0 or absent: chosen by the OS) */
  ports?: Partial<Record<'https' | 'http' | 'dmzMqtt' | 'internalMqtt' | 'gateway' | 'commandApi' | 'console', number>>;
  /** where the internal broker's bridge dials (default: the DMZ broker); a test puts a relay here to cut it */
  bridgeTarget?: (dmzMqttPort: number) => Promise<{ host: string; port: number }> | { host: string; port: number };
  /**
   * Also run one gateway that devices reach directly, verifying their certificates itself
   * (GATEWAY_IDENTITY_SOURCE=tls, the single-server deployment): the benchmark's connection count
   * uses it, since Caddy needs two file descriptors per proxied connection.
   */
  directGateway?: boolean;
  /**
   * Also open Caddy's token route (CADDY_TOKEN_ROUTE=on) on a port of its own, and let the gateways
   * behind Caddy take device tokens (GATEWAY_TOKEN_AUTH=on) from <certsDir>/dmz/tokens/device-tokens.json.
   */
  tokenRoute?: boolean;
  /** extra Node.js flags for the gateway, distributor and command API (the benchmark's --cpu-prof) */
  nodeArgs?: readonly string[];
  /** where the supervisor logs crashes and restarts (default: a logger to stdout) */
  logger?: Logger;
}

export type ComponentName = 'dmz-mosquitto' | 'internal-mosquitto' | 'caddy' | 'distributor' | 'command-api' | 'broker-exporter' | 'console' | `gateway-${number}` | 'gateway-direct';

export interface LocalStack {
  readonly ports: { https: number; http: number; dmzMqtt: number; internalMqtt: number; gateways: number[]; commandApi: number; console: number; tokenHttps: number | undefined };
  /** `tokenWss`: Caddy's token route, with `tokenRoute` only */
  readonly urls: { wss: string; dmzMqtt: string; internalMqtt: string; commandApi: string; console: string; tokenWss: string | undefined };
  readonly caddy: ManagedProcess;
  readonly dmzMosquitto: ManagedProcess;
  readonly internalMosquitto: ManagedProcess;
  readonly gateways: ManagedProcess[];
  /** with `directGateway`: the gateway devices reach without Caddy, and its URL */
  readonly directGateway: { process: ManagedProcess; url: string } | undefined;
  readonly distributor: ManagedProcess;
  readonly commandApi: ManagedProcess;
  /** reads both brokers' $SYS for Prometheus (internal-network/broker-exporter) */
  readonly brokerExporter: ManagedProcess;
  /** the operator console (internal-network/console) */
  readonly console: ManagedProcess;
  /**
   * where each service's /metrics (and /healthz, /readyz) is, as base URLs (http://127.0.0.1:PORT);
   * `gateways` in order, with `directGateway` the direct one last; `gateway` the first
   */
  readonly metrics: { brokerExporter: string; gateways: string[]; gateway: string; distributor: string; commandApi: string; console: string };
  readonly all: ManagedProcess[];
  readonly dataDir: { files: string; timeseries: string; deadLetters: string; commands: string };
  /**
   * Every process is supervised like the compose files' `restart: unless-stopped`: one that exits
   * without being asked to is restarted with a growing delay (process.ts). For fault tests:
   * kill(name, 'SIGKILL') crashes one, untilRunning(name) waits for it to be back and ready,
   * pause/resume freeze and thaw one (SIGSTOP/SIGCONT).
   */
  component(name: ComponentName): ManagedProcess;
  kill(name: ComponentName, signal?: NodeJS.Signals): Promise<void>;
  untilRunning(name: ComponentName, timeoutMs?: number): Promise<void>;
  pause(name: ComponentName): Promise<void>;
  resume(name: ComponentName): Promise<void>;
  /** A clean stop: nothing is restarted. */
  close(): Promise<void>;
}

const port = async (fixed: number | undefined) => (fixed ? fixed : freePort());

export async function startLocalStack(o: LocalStackOptions): Promise<LocalStack> {
  const p = pkiPaths(o.certsDir);
  const w = (...parts: string[]) => join(o.workDir, ...parts);
  for (const dir of ['logs', 'dmz-mosquitto', 'internal-mosquitto', 'caddy']) mkdirSync(w(dir), { recursive: true });
  const nGateways = o.gateways ?? 1;

  const ports = {
    https: await port(o.ports?.https),
    http: await port(o.ports?.http),
    dmzMqtt: await port(o.ports?.dmzMqtt),
    internalMqtt: await port(o.ports?.internalMqtt),
    gateways: [] as number[],
    commandApi: await port(o.ports?.commandApi),
    console: await port(o.ports?.console),
    tokenHttps: o.tokenRoute ? await freePort() : undefined,
  };
  for (let i = 0; i < nGateways; i++) ports.gateways.push(o.ports?.gateway ? o.ports.gateway + i : await freePort());
  const bridge = (await o.bridgeTarget?.(ports.dmzMqtt)) ?? { host: 'localhost', port: ports.dmzMqtt };

  const baseEnv = { PATH: process.env.PATH, HOME: w('caddy'), ...o.env };
  const supervisor = (o.logger ?? createLogger('stack')).child({ subsystem: 'supervisor' });
  const render = (template: string, out: string, env: Record<string, string>) => () =>
    execFileSync(join(o.repoRoot, 'scripts', 'render-config.sh'), [template, out], { env: { PATH: process.env.PATH, ...env } });
  const mosquittoEnv = (name: 'dmz' | 'internal', listen: number) => ({
    MOSQUITTO_PORT: String(listen),
    MOSQUITTO_BIND: '127.0.0.1',
    MOSQUITTO_CA_FILE: p.publicCa,
    MOSQUITTO_CERT_FILE: p.service(`${name}/mosquitto`).cert,
    MOSQUITTO_KEY_FILE: p.service(`${name}/mosquitto`).key,
    MOSQUITTO_CRL_FILE: join(o.certsDir, 'ca.crl'),
    MOSQUITTO_CONFIG_DIR: join(o.repoRoot, name === 'dmz' ? 'dmz' : 'internal-network', 'mosquitto'),
    MOSQUITTO_DATA_DIR: w(`${name}-mosquitto`),
    // Started by root, Mosquitto would switch to the "mosquitto" user, which cannot read our 0600 keys.
    MOSQUITTO_USER: userInfo().username,
    MOSQUITTO_LOG_DEST: `file ${w('logs', `${name}-mosquitto.log`)}`,
  });

  const mosquitto = (name: 'dmz' | 'internal', listen: number, extra: Record<string, string> = {}) => {
    const conf = w(`${name}-mosquitto`, 'mosquitto.conf');
    return new ManagedProcess({
      name: `${name}-mosquitto`,
      command: 'mosquitto',
      args: ['-c', conf],
      env: baseEnv,
      cwd: o.workDir,
      logFile: w('logs', `${name}-mosquitto.stdout.log`),
      ready: { port: listen },
      supervisor,
      prepare: render(join(o.repoRoot, name === 'dmz' ? 'dmz' : 'internal-network', 'mosquitto', 'mosquitto.conf'), conf, { ...mosquittoEnv(name, listen), ...extra }),
    });
  };
  // Every Node service's metrics on a port of its own, picked now like the others.
  const metricsPort = async () => String(await freePort());
  const metricsUrls: { gateways: string[]; distributor: string; commandApi: string; console: string } = { gateways: [], distributor: '', commandApi: '', console: '' };
  const metricsEnv = async (prefix: 'GATEWAY' | 'DISTRIBUTOR' | 'COMMAND_API' | 'CONSOLE') => {
    const mp = await metricsPort();
    return { env: { [`${prefix}_METRICS_HOST`]: '127.0.0.1', [`${prefix}_METRICS_PORT`]: mp }, url: `http://127.0.0.1:${mp}` };
  };
  const node = (name: string, entry: string, env: Record<string, string>, ready: ManagedProcess['spec']['ready']) =>
    new ManagedProcess({
      name,
      command: process.execPath,
      args: [...(o.nodeArgs ?? []), '--import', 'tsx', join(o.repoRoot, entry)],
      env: { ...baseEnv, FIELDSTREAM_ENV_FILE: '/dev/null', ...env },
      cwd: o.repoRoot,
      logFile: w('logs', `${name}.log`),
      ready,
      supervisor,
    });

  const dmzMosquitto = mosquitto('dmz', ports.dmzMqtt);
  const internalMosquitto = mosquitto('internal', ports.internalMqtt, {
    DMZ_BROKER_HOST: bridge.host,
    DMZ_BROKER_PORT: String(bridge.port),
    BRIDGE_CA_FILE: p.publicCa,
    BRIDGE_CERT_FILE: p.service('internal/bridge').cert,
    BRIDGE_KEY_FILE: p.service('internal/bridge').key,
    BRIDGE_CLIENT_ID: 'fieldstream-bridge',
  });
  // A service's broker connection: the broker at `port`, our CA, the service's own certificate.
  const mqttEnv = (port: number, service: Parameters<typeof p.service>[0]) => ({
    MQTT_URL: `mqtts://localhost:${port}`,
    MQTT_CA_FILE: p.publicCa,
    MQTT_CERT_FILE: p.service(service).cert,
    MQTT_KEY_FILE: p.service(service).key,
  });
  const gateway = async (name: string, gp: number, identity: 'proxy' | 'tls') => {
    const m = await metricsEnv('GATEWAY');
    metricsUrls.gateways.push(m.url);
    return node(name, 'dmz/gateway/main.ts', {
      ...m.env,
      GATEWAY_ID: name,
      GATEWAY_IDENTITY_SOURCE: identity,
      GATEWAY_HOST: '127.0.0.1',
      GATEWAY_PORT: String(gp),
      GATEWAY_TLS_CERT_FILE: p.service('dmz/gateway').cert,
      GATEWAY_TLS_KEY_FILE: p.service('dmz/gateway').key,
      GATEWAY_CA_FILE: p.publicCa,
      GATEWAY_REVOKED_SERIALS_FILE: join(o.certsDir, 'dmz', 'revocation', 'revoked-serials.txt'),
      GATEWAY_DEVICE_TOKENS_FILE: join(o.certsDir, 'dmz', 'tokens', 'device-tokens.json'),
      ...(o.tokenRoute && identity === 'proxy' ? { GATEWAY_TOKEN_AUTH: 'on' } : {}),
      ...mqttEnv(ports.dmzMqtt, 'dmz/gateway'),
    }, { port: gp });
  };
  const gateways: ManagedProcess[] = [];
  for (const [i, gp] of ports.gateways.entries()) gateways.push(await gateway(`gateway-${i + 1}`, gp, 'proxy'));
  const directPort = o.directGateway ? await freePort() : undefined;
  const direct = directPort ? await gateway('gateway-direct', directPort, 'tls') : undefined;
  const caddy = new ManagedProcess({
    name: 'caddy',
    command: 'caddy',
    args: ['run', '--config', join(o.repoRoot, 'Caddyfile'), '--adapter', 'caddyfile'],
    env: {
      ...baseEnv,
      XDG_DATA_HOME: w('caddy', 'data'),
      XDG_CONFIG_HOME: w('caddy', 'config'),
      DOMAIN_NAME: 'localhost',
      CADDY_TLS: 'files',
      CADDY_ADMIN: 'off',
      CADDY_HTTP_PORT: String(ports.http),
      CADDY_HTTPS_PORT: String(ports.https),
      CADDY_TLS_CERT_FILE: p.service('dmz/edge').cert,
      CADDY_TLS_KEY_FILE: p.service('dmz/edge').key,
      CADDY_CLIENT_CA_FILE: p.publicCa,
      CADDY_UPSTREAM_CERT_FILE: p.service('dmz/edge').cert,
      CADDY_UPSTREAM_KEY_FILE: p.service('dmz/edge').key,
      GATEWAY_UPSTREAMS: ports.gateways.map((gp) => `127.0.0.1:${gp}`).join(' '),
      ...(ports.tokenHttps ? { CADDY_TOKEN_ROUTE: 'on', CADDY_TOKEN_PORT: String(ports.tokenHttps) } : {}),
    },
    cwd: o.workDir,
    logFile: w('logs', 'caddy.log'),
    ready: { port: ports.https },
    supervisor,
  });
  const dataDir = { files: w('files'), timeseries: w('timeseries'), deadLetters: w('dead-letter'), commands: w('commands.jsonl') };
  const distributorMetrics = await metricsEnv('DISTRIBUTOR');
  metricsUrls.distributor = distributorMetrics.url;
  const commandApiMetrics = await metricsEnv('COMMAND_API');
  metricsUrls.commandApi = commandApiMetrics.url;
  const distributor = node('distributor', 'internal-network/distributor/main.ts', {
    ...distributorMetrics.env,
    ...mqttEnv(ports.internalMqtt, 'internal/distributor'),
    DISTRIBUTOR_CLIENT_ID: 'distributor-1',
    DISTRIBUTOR_DEVICE_KEYS_DIR: join(o.certsDir, 'internal', 'device-keys'),
    DISTRIBUTOR_REVOKED_DEVICES_FILE: join(o.certsDir, 'internal', 'revoked-devices.txt'),
    DISTRIBUTOR_STATE_DIR: w('distributor-state'),
    FILE_STORAGE_PATH: dataDir.files,
    TIMESERIES_LOCAL_PATH: dataDir.timeseries,
    DEAD_LETTER_PATH: dataDir.deadLetters,
    // Touched once every consumer is subscribed: readiness that does not depend on the log level.
    DISTRIBUTOR_HEALTH_FILE: w('distributor.healthy'),
  }, { file: w('distributor.healthy') });
  const commandApi = node('command-api', 'internal-network/command-api/main.ts', {
    ...commandApiMetrics.env,
    COMMAND_API_HOST: '127.0.0.1',
    COMMAND_API_PORT: String(ports.commandApi),
    COMMAND_API_TOKEN: o.commandApiToken,
    COMMAND_STATE_PATH: dataDir.commands,
    ...mqttEnv(ports.internalMqtt, 'internal/command-api'),
    COMMAND_API_CLIENT_ID: 'command-api-1',
    COMMAND_DEVICE_KEYS_DIR: join(o.certsDir, 'internal', 'device-keys'),
  }, { port: ports.commandApi });
  // On the internal side, dialling out to the DMZ broker as the bridge does, with the monitor certificate.
  const brokerExporterPort = await freePort();
  const brokerExporter = node('broker-exporter', 'internal-network/broker-exporter/main.ts', {
    ...mqttEnv(ports.internalMqtt, 'internal/monitor'),
    DMZ_MQTT_URL: `mqtts://localhost:${ports.dmzMqtt}`,
    BROKER_EXPORTER_CLIENT_ID: 'broker-exporter-1',
    BROKER_EXPORTER_METRICS_HOST: '127.0.0.1',
    BROKER_EXPORTER_METRICS_PORT: String(brokerExporterPort),
  }, { port: brokerExporterPort });

  // The console, on the internal side: the stored feed, the internal services' health, the same store.
  const consoleMetrics = await metricsEnv('CONSOLE');
  metricsUrls.console = consoleMetrics.url;
  const operatorConsole = node('console', 'internal-network/console/main.ts', {
    ...consoleMetrics.env,
    ...mqttEnv(ports.internalMqtt, 'internal/console'),
    CONSOLE_CLIENT_ID: 'console-1',
    CONSOLE_HOST: '127.0.0.1',
    CONSOLE_PORT: String(ports.console),
    COMMAND_API_TOKEN: o.commandApiToken,
    CONSOLE_COMMAND_API_URL: `http://127.0.0.1:${ports.commandApi}`,
    CONSOLE_DEVICE_KEYS_DIR: join(o.certsDir, 'internal', 'device-keys'),
    CONSOLE_REVOKED_DEVICES_FILE: join(o.certsDir, 'internal', 'revoked-devices.txt'),
    CONSOLE_PIPELINE_TARGETS: `distributor=${metricsUrls.distributor},command-api=${metricsUrls.commandApi},broker-exporter=http://127.0.0.1:${brokerExporterPort}`,
    TIMESERIES_LOCAL_PATH: dataDir.timeseries,
  }, { port: ports.console });

  const all = [dmzMosquitto, internalMosquitto, ...gateways, ...(direct ? [direct] : []), caddy, distributor, commandApi, brokerExporter, operatorConsole];
  const started: ManagedProcess[] = [];
  try {
    for (const proc of all) {
      await proc.start();
      started.push(proc);
    }
  } catch (err) {
    for (const proc of started.reverse()) await proc.stop();
    throw err;
  }
  const component = (name: ComponentName) => {
    const proc = all.find((p) => p.name === name);
    if (!proc) throw new Error(`no component ${name} in this stack (${all.map((p) => p.name).join(', ')})`);
    return proc;
  };
  return {
    ports,
    urls: {
      wss: `wss://localhost:${ports.https}/ws`,
      dmzMqtt: `mqtts://localhost:${ports.dmzMqtt}`,
      internalMqtt: `mqtts://localhost:${ports.internalMqtt}`,
      commandApi: `http://127.0.0.1:${ports.commandApi}`,
      console: `http://127.0.0.1:${ports.console}/`,
      tokenWss: ports.tokenHttps ? `wss://localhost:${ports.tokenHttps}/ws` : undefined,
    },
    caddy,
    dmzMosquitto,
    internalMosquitto,
    gateways,
    directGateway: direct ? { process: direct, url: `wss://localhost:${directPort}/ws` } : undefined,
    distributor,
    commandApi,
    brokerExporter,
    console: operatorConsole,
    metrics: { brokerExporter: `http://127.0.0.1:${brokerExporterPort}`, ...metricsUrls, gateway: metricsUrls.gateways[0] as string },
    all,
    dataDir,
    component,
    kill: (name, signal = 'SIGKILL') => component(name).signal(signal),
    untilRunning: (name, timeoutMs) => component(name).untilReady(timeoutMs),
    pause: (name) => component(name).pause(),
    resume: (name) => component(name).resume(),
    async close() {
      for (const proc of all) proc.stopSupervising();
      // Edge first, brokers last, so nothing is accepted that cannot be passed on.
      for (const proc of [operatorConsole, brokerExporter, caddy, ...gateways, ...(direct ? [direct] : []), commandApi, distributor, internalMosquitto, dmzMosquitto]) await proc.stop();
    },
  };
}
