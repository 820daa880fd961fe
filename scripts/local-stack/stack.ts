import { join } from 'node:path';
import { createLogger, type Logger } from '../../shared/logger.ts';
import type { ManagedProcess } from './process.ts';
import { createDmzServer, type DmzServer, type EdgeHop } from './dmz-server.ts';
import { createInternalServer, type InternalServer } from './internal-server.ts';
import { startInStages } from './machine.ts';

export { startDmzServer, type DmzServer, type DmzServerOptions } from './dmz-server.ts';
export { startInternalServer, type InternalServer, type InternalServerOptions } from './internal-server.ts';

/**
 * The DMZ and internal tiers as real processes on loopback, from the same configuration files the
 * compose files mount (Caddyfile, dmz/mosquitto/*, internal-network/mosquitto/*), templated only
 * by environment variables. `npm run stack` runs it; the end-to-end tests run it too. It is made of
 * one or more DMZ servers (dmz-server.ts) and the internal server (internal-server.ts), which a test
 * may also start on their own, each in a network namespace of its own.
 */
export interface LocalStackOptions {
  repoRoot: string;
  certsDir: string;
  /** rendered configurations, broker persistence, logs, stored files */
  workDir: string;
  /** settings for the services (INFLUXDB_* for the distributor, LOG_LEVEL, ...): each process takes those its compose service is given (service-env.ts) */
  env: Record<string, string | undefined>;
  commandApiToken: string;
  /** gateways per DMZ server */
  gateways?: number;
  /**
   * DMZ servers (default 1, STACK_DMZ_SERVERS), each with its Caddy, gateways and DMZ Mosquitto; the
   * internal broker bridges to every one. Fixed ports apply to the first; the others' are picked.
   */
  dmzServers?: number;
  /** fixed ports (0 or absent: chosen by the OS) */
  ports?: Partial<Record<'https' | 'http' | 'dmzMqtt' | 'internalMqtt' | 'gateway' | 'commandApi' | 'console', number>>;
  /** where the internal broker's bridge to the first DMZ server dials (default: its broker); a test puts a relay here to cut it */
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
  /**
   * How each Caddy reaches its gateways (EDGE_HOP, as deployed): "mtls" (default) over TCP with its
   * client certificate, or "unix" through one gateway's Unix socket (then `gateways` must be 1).
   */
  edgeHop?: EdgeHop;
  /**
   * Open the first DMZ server's Caddy admin API on a loopback port of its own (its
   * `ports.caddyAdmin`): the benchmark's --profile reads Caddy's CPU profiles from its
   * /debug/pprof. Off as deployed (the Caddyfile's CADDY_ADMIN default).
   */
  caddyAdmin?: boolean;
  /** extra Node.js flags for the gateway, distributor and command API (the benchmark's --cpu-prof) */
  nodeArgs?: readonly string[];
  /** where the supervisor logs crashes and restarts (default: a logger to stdout) */
  logger?: Logger;
}

/** the first DMZ server's processes keep the single-server names; the n-th's (n ≥ 2) are prefixed `dmz<n>-` */
export type ComponentName =
  | 'dmz-mosquitto' | 'internal-mosquitto' | 'caddy' | 'distributor' | 'command-api' | 'broker-exporter' | 'console' | `gateway-${number}` | 'gateway-direct'
  | `dmz${number}-${'mosquitto' | 'caddy' | `gateway-${number}` | 'gateway-direct'}`;

export interface LocalStack {
  readonly ports: { https: number; http: number; dmzMqtt: number; internalMqtt: number; gateways: number[]; commandApi: number; console: number; tokenHttps: number | undefined };
  /** `tokenWss`: Caddy's token route, with `tokenRoute` only */
  readonly urls: { wss: string; dmzMqtt: string; internalMqtt: string; commandApi: string; console: string; tokenWss: string | undefined };
  /** the first DMZ server's */
  readonly caddy: ManagedProcess;
  /** the first DMZ server's */
  readonly dmzMosquitto: ManagedProcess;
  readonly internalMosquitto: ManagedProcess;
  /** the first DMZ server's */
  readonly gateways: ManagedProcess[];
  /** every DMZ server, the first included (its processes are `caddy`, `dmzMosquitto`, `gateways` above) */
  readonly dmzServers: DmzServer[];
  readonly internal: InternalServer;
  /** with `directGateway`: the gateway devices reach without Caddy, and its URL */
  readonly directGateway: { process: ManagedProcess; url: string } | undefined;
  readonly distributor: ManagedProcess;
  readonly commandApi: ManagedProcess;
  /** reads the internal broker's $SYS and the first DMZ server's broker's for Prometheus (internal-network/broker-exporter) */
  readonly brokerExporter: ManagedProcess;
  /** the operator console (internal-network/console) */
  readonly console: ManagedProcess;
  /**
   * where each service's /metrics (and /healthz, /readyz) is, as base URLs (http://127.0.0.1:PORT);
   * `gateways` in order, with `directGateway` the direct one last; `gateway` the first
   */
  readonly metrics: { brokerExporter: string; gateways: string[]; gateway: string; distributor: string; commandApi: string; console: string };
  /** every process, the first DMZ server's and the internal server's first, in start order */
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

export async function startLocalStack(o: LocalStackOptions): Promise<LocalStack> {
  const logger = o.logger ?? createLogger('stack');
  const common = { repoRoot: o.repoRoot, certsDir: o.certsDir, env: o.env, nodeArgs: o.nodeArgs, logger };
  const dmzServers: DmzServer[] = [];
  for (let i = 0; i < (o.dmzServers ?? 1); i++) {
    const first = i === 0;
    dmzServers.push(await createDmzServer({
      ...common,
      // The first server keeps the single-server layout of the work folder and its process names.
      ...(first ? { workDir: o.workDir } : { workDir: join(o.workDir, `dmz${i + 1}`), id: `dmz${i + 1}` }),
      gateways: o.gateways,
      ports: first ? { https: o.ports?.https, http: o.ports?.http, mqtt: o.ports?.dmzMqtt, gateway: o.ports?.gateway } : {},
      directGateway: first && o.directGateway,
      tokenRoute: o.tokenRoute,
      edgeHop: o.edgeHop,
      caddyAdmin: first && o.caddyAdmin,
    }));
  }
  const dmz = dmzServers[0] as DmzServer;
  const firstBridge = (await o.bridgeTarget?.(dmz.ports.mqtt)) ?? { host: 'localhost', port: dmz.ports.mqtt };
  const internal = await createInternalServer({
    ...common,
    workDir: o.workDir,
    commandApiToken: o.commandApiToken,
    dmzBrokers: [firstBridge, ...dmzServers.slice(1).map((s) => ({ host: 'localhost', port: s.ports.mqtt }))],
    monitorDmzBroker: { host: 'localhost', port: dmz.ports.mqtt },
    ports: { mqtt: o.ports?.internalMqtt, commandApi: o.ports?.commandApi, console: o.ports?.console },
  });
  const rest = dmzServers.slice(1);
  const direct = dmz.directGateway;
  // Every DMZ broker before the internal one, so each bridge finds its broker at once: a message
  // published on a DMZ broker before the bridge's first connection there has no subscriber yet.
  // The brokers up, the rest start all at once: each is ready when it listens (the distributor,
  // once every consumer is subscribed), which waits on no other of them.
  const brokers = [dmz.mosquitto, ...rest.map((s) => s.mosquitto), internal.mosquitto];
  const services = [
    ...dmz.gateways, ...(direct ? [direct] : []), dmz.caddy,
    internal.distributor, internal.commandApi, internal.brokerExporter, internal.console,
    ...rest.flatMap((s) => s.all.filter((p) => p !== s.mosquitto)),
  ];
  const all = [...brokers, ...services];
  await startInStages([...brokers.map((b) => [b]), services]);
  // Up once a device's messages have somewhere to go: the bridges subscribed on the DMZ brokers
  // (before, a gateway refuses them as no subscriber took them). Most often done long before the
  // services listen.
  try {
    await internal.untilBridged();
  } catch (err) {
    for (const proc of [...all].reverse()) await proc.stop();
    throw err;
  }
  const component = (name: ComponentName) => {
    const proc = all.find((p) => p.name === name);
    if (!proc) throw new Error(`no component ${name} in this stack (${all.map((p) => p.name).join(', ')})`);
    return proc;
  };
  return {
    ports: {
      https: dmz.ports.https,
      http: dmz.ports.http,
      dmzMqtt: dmz.ports.mqtt,
      internalMqtt: internal.ports.mqtt,
      gateways: dmz.ports.gateways,
      commandApi: internal.ports.commandApi,
      console: internal.ports.console,
      tokenHttps: dmz.ports.tokenHttps,
    },
    urls: {
      wss: dmz.urls.wss,
      dmzMqtt: dmz.urls.mqtt,
      internalMqtt: internal.urls.mqtt,
      commandApi: internal.urls.commandApi,
      console: internal.urls.console,
      tokenWss: dmz.urls.tokenWss,
    },
    caddy: dmz.caddy,
    dmzMosquitto: dmz.mosquitto,
    internalMosquitto: internal.mosquitto,
    gateways: dmz.gateways,
    dmzServers,
    internal,
    directGateway: direct && dmz.urls.direct ? { process: direct, url: dmz.urls.direct } : undefined,
    distributor: internal.distributor,
    commandApi: internal.commandApi,
    brokerExporter: internal.brokerExporter,
    console: internal.console,
    metrics: { ...internal.metrics, gateways: dmz.metrics.gateways, gateway: dmz.metrics.gateways[0] as string },
    all,
    dataDir: internal.dataDir,
    component,
    kill: (name, signal = 'SIGKILL') => component(name).signal(signal),
    untilRunning: (name, timeoutMs) => component(name).untilReady(timeoutMs),
    pause: (name) => component(name).pause(),
    resume: (name) => component(name).resume(),
    async close() {
      for (const proc of all) proc.stopSupervising();
      // Edge first, brokers last, so nothing is accepted that cannot be passed on.
      const edge = dmzServers.flatMap((s) => [s.caddy, ...s.gateways, ...(s.directGateway ? [s.directGateway] : [])]);
      for (const proc of [internal.console, internal.brokerExporter, ...edge, internal.commandApi, internal.distributor, internal.mosquitto, ...dmzServers.map((s) => s.mosquitto)]) await proc.stop();
    },
  };
}
