import { chmodSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { pkiPaths } from '../../pki/layout.ts';
import { createLogger } from '../../shared/logger.ts';
import { ManagedProcess } from './process.ts';
import { freePort } from './ports.ts';
import { localHostOf, mosquittoProcess, nodeProcess, startInStages, type MachineOptions } from './machine.ts';
import { serviceEnvironment } from './service-env.ts';

/**
 * One DMZ server as real processes: Caddy (public WSS, and the token route if asked), its gateways
 * and its DMZ Mosquitto, from the files docker-compose.dmz.yml mounts. The deployment may run several
 * (docs/deployment.md, "More than one DMZ server"): each is started by one call.
 */
export interface DmzServerOptions extends MachineOptions {
  /**
   * Names its processes and its gateways' GATEWAY_ID: absent, the names of the single-server stack
   * (caddy, dmz-mosquitto, gateway-N); set (e.g. "dmz2"), `${id}-caddy`, `${id}-mosquitto`,
   * `${id}-gateway-N`. Gateway ids must differ between servers: presence and receipts are per gateway id.
   */
  id?: string;
  gateways?: number;
  /** fixed ports (0 or absent: chosen by the OS in this namespace; in another namespace, pass them all) */
  ports?: Partial<Record<'https' | 'http' | 'mqtt' | 'gateway' | 'tokenHttps', number>>;
  /** Caddy's site name, the name devices dial (default localhost); the edge certificate must name it */
  domainName?: string;
  /** a gateway devices reach directly, verifying their certificates itself (see LocalStackOptions) */
  directGateway?: boolean;
  /** Caddy's token route on a port of its own, and gateways that take device tokens (see LocalStackOptions) */
  tokenRoute?: boolean;
  /** the hop from Caddy to its gateways (EDGE_HOP, see LocalStackOptions); "unix" takes one gateway */
  edgeHop?: EdgeHop;
  /** Caddy's admin API on a loopback port of its own (see LocalStackOptions); off as deployed */
  caddyAdmin?: boolean;
}

export type EdgeHop = 'mtls' | 'unix';

export interface DmzServer {
  readonly id: string | undefined;
  /** `gateways`: their TCP ports (none with EDGE_HOP=unix: see `sockets`) */
  readonly ports: { https: number; http: number; mqtt: number; gateways: number[]; tokenHttps: number | undefined; direct: number | undefined; caddyAdmin: number | undefined };
  /** EDGE_HOP=unix: the gateway's Unix socket, which Caddy dials */
  readonly sockets: string[];
  /** where its processes' logs are (its work folder's logs/) */
  readonly logDir: string;
  /** as reached from this machine's own namespace (`domainName` for the WSS URLs) */
  /** `caddyAdmin`: Caddy's admin API, with the `caddyAdmin` option only */
  readonly urls: { wss: string; tokenWss: string | undefined; mqtt: string; direct: string | undefined; caddyAdmin: string | undefined };
  readonly caddy: ManagedProcess;
  readonly mosquitto: ManagedProcess;
  readonly gateways: ManagedProcess[];
  readonly directGateway: ManagedProcess | undefined;
  /** each gateway's /metrics base URL, in order, the direct one last */
  readonly metrics: { gateways: string[] };
  /** in start order */
  readonly all: ManagedProcess[];
  /** starts them all in order (brokers first); on a failure stops those started and throws */
  start(): Promise<void>;
  /** a clean stop, edge first; nothing is restarted */
  close(): Promise<void>;
}

const port = async (fixed: number | undefined) => (fixed ? fixed : freePort());

/** Builds the processes and picks the ports; `start()` runs them (startDmzServer does both). */
export async function createDmzServer(o: DmzServerOptions): Promise<DmzServer> {
  const p = pkiPaths(o.certsDir);
  const w = (...parts: string[]) => join(o.workDir, ...parts);
  for (const dir of ['logs', 'dmz-mosquitto', 'caddy']) mkdirSync(w(dir), { recursive: true });
  const hop = o.edgeHop ?? 'mtls';
  if (hop === 'unix' && (o.gateways ?? 1) !== 1) throw new Error('EDGE_HOP=unix: one gateway per DMZ server (one socket); run more DMZ servers instead');
  // As deployed: a folder of this user's, closed to others, holding the socket (0600, the gateway makes it so).
  const sockets = hop === 'unix' ? [w('edge-hop', 'gateway.sock')] : [];
  if (hop === 'unix') {
    mkdirSync(w('edge-hop'), { recursive: true });
    chmodSync(w('edge-hop'), 0o700);
  }
  const bind = o.bindHost ?? '127.0.0.1';
  const local = localHostOf(bind);
  const named = (base: string) => (o.id ? `${o.id}-${base}` : base);
  const ports = {
    https: await port(o.ports?.https),
    http: await port(o.ports?.http),
    mqtt: await port(o.ports?.mqtt),
    gateways: [] as number[],
    tokenHttps: o.tokenRoute ? await port(o.ports?.tokenHttps) : undefined,
    direct: undefined as number | undefined,
    caddyAdmin: o.caddyAdmin ? await freePort() : undefined,
  };
  if (hop === 'mtls') for (let i = 0; i < (o.gateways ?? 1); i++) ports.gateways.push(o.ports?.gateway ? o.ports.gateway + i : await freePort());
  if (o.directGateway) ports.direct = o.ports?.gateway ? o.ports.gateway + ports.gateways.length : await freePort();
  const supervisor = (o.logger ?? createLogger('stack')).child({ subsystem: 'supervisor' });
  const m = { ...o, supervisor, bind };

  const mosquitto = mosquittoProcess(m, o.id ? `${o.id}-mosquitto` : 'dmz-mosquitto', 'dmz', ports.mqtt, {});
  const metrics: string[] = [];
  /** `at`: a TCP port, or (EDGE_HOP=unix) the socket's path */
  const gateway = async (name: string, at: number | string, identity: 'proxy' | 'tls') => {
    const socket = typeof at === 'string' ? at : undefined;
    const gp = typeof at === 'number' ? at : await freePort();
    const mp = await freePort();
    metrics.push(`http://${local.connect}:${mp}`);
    return nodeProcess(m, name, 'gateway', {
      GATEWAY_METRICS_HOST: bind,
      GATEWAY_METRICS_PORT: String(mp),
      GATEWAY_ID: name,
      GATEWAY_IDENTITY_SOURCE: identity,
      EDGE_HOP: socket ? 'unix' : 'mtls',
      ...(socket ? { GATEWAY_SOCKET: socket } : {}),
      GATEWAY_HOST: bind,
      GATEWAY_PORT: String(gp),
      // Behind Caddy its own server certificate (of its anchor: Caddy trusts that alone); serving
      // devices itself, the public endpoint's, which devices verify with the CA (as npm start's gateway).
      GATEWAY_TLS_CERT_FILE: p.service(identity === 'proxy' ? 'dmz/gateway' : 'dmz/edge').cert,
      GATEWAY_TLS_KEY_FILE: p.service(identity === 'proxy' ? 'dmz/gateway' : 'dmz/edge').key,
      GATEWAY_CA_FILE: p.publicCa,
      GATEWAY_REVOKED_SERIALS_FILE: join(o.certsDir, 'dmz', 'revocation', 'revoked-serials.txt'),
      GATEWAY_CRL_FILE: p.crl,
      GATEWAY_DEVICE_TOKENS_FILE: join(o.certsDir, 'dmz', 'tokens', 'device-tokens.json'),
      ...(o.tokenRoute && identity === 'proxy' ? { GATEWAY_TOKEN_AUTH: 'on' } : {}),
      MQTT_URL: `mqtts://${local.name}:${ports.mqtt}`,
      // The DMZ broker's own anchor, not the CA (pki/dmz-anchor.ts), as in the compose file.
      MQTT_CA_FILE: p.dmzBrokerCa.dmz,
      // Its client certificate, of the CA, as in the compose file.
      MQTT_CERT_FILE: p.service('dmz/gateway-client').cert,
      MQTT_KEY_FILE: p.service('dmz/gateway-client').key,
      // Ready by its log line, not by the file: a socket a killed gateway left stays for its restart to deal with.
    }, socket ? { logLine: /"msg":"gateway listening on a Unix socket/ } : { port: gp, host: local.connect }, [mp]);
  };
  const gateways: ManagedProcess[] = [];
  for (const [i, at] of [...ports.gateways, ...sockets].entries()) gateways.push(await gateway(named(`gateway-${i + 1}`), at, 'proxy'));
  const direct = ports.direct ? await gateway(named('gateway-direct'), ports.direct, 'tls') : undefined;
  const domain = o.domainName ?? 'localhost';
  const caddy = new ManagedProcess({
    name: named('caddy'),
    command: 'caddy',
    args: ['run', '--config', join(o.repoRoot, 'Caddyfile'), '--adapter', 'caddyfile'],
    env: {
      PATH: process.env.PATH,
      HOME: w('caddy'),
      ...serviceEnvironment('caddy', o.env, o.repoRoot),
      XDG_DATA_HOME: w('caddy', 'data'),
      XDG_CONFIG_HOME: w('caddy', 'config'),
      DOMAIN_NAME: domain,
      CADDY_TLS: 'files',
      CADDY_ADMIN: ports.caddyAdmin ? `${local.connect}:${ports.caddyAdmin}` : 'off',
      CADDY_HTTP_PORT: String(ports.http),
      CADDY_HTTPS_PORT: String(ports.https),
      CADDY_TLS_CERT_FILE: p.service('dmz/edge').cert,
      CADDY_TLS_KEY_FILE: p.service('dmz/edge').key,
      CADDY_CLIENT_CA_FILE: p.publicCa,
      CADDY_UPSTREAM_CERT_FILE: p.service('dmz/edge').cert,
      CADDY_UPSTREAM_KEY_FILE: p.service('dmz/edge').key,
      // The gateways' anchor, not the CA (pki/dmz-anchor.ts), as in the compose file.
      CADDY_UPSTREAM_CA_FILE: p.gatewayCa,
      EDGE_HOP: hop,
      ...(hop === 'unix' ? { GATEWAY_SOCKET: sockets[0] } : { GATEWAY_UPSTREAMS: ports.gateways.map((gp) => `${local.connect}:${gp}`).join(' ') }),
      ...(ports.tokenHttps ? { CADDY_TOKEN_ROUTE: 'on', CADDY_TOKEN_PORT: String(ports.tokenHttps) } : {}),
    },
    cwd: o.workDir,
    logFile: w('logs', 'caddy.log'),
    // Caddy binds every address of its namespace (the Caddyfile has no bind): probed on loopback.
    ready: { port: ports.https, host: '127.0.0.1' },
    alsoListens: [ports.http, ports.tokenHttps, ports.caddyAdmin].filter((pt) => pt !== undefined).map((pt) => ({ port: pt, host: '127.0.0.1' })),
    supervisor,
    netns: o.netns,
  });

  const all = [mosquitto, ...gateways, ...(direct ? [direct] : []), caddy];
  return {
    id: o.id,
    ports,
    sockets,
    logDir: w('logs'),
    urls: {
      wss: `wss://${domain}:${ports.https}/ws`,
      tokenWss: ports.tokenHttps ? `wss://${domain}:${ports.tokenHttps}/ws` : undefined,
      mqtt: `mqtts://${local.name}:${ports.mqtt}`,
      direct: ports.direct ? `wss://${local.name}:${ports.direct}/ws` : undefined,
      caddyAdmin: ports.caddyAdmin ? `http://${local.connect}:${ports.caddyAdmin}` : undefined,
    },
    caddy,
    mosquitto,
    gateways,
    directGateway: direct,
    metrics: { gateways: metrics },
    all,
    start: () => startInStages([[mosquitto], all.filter((p) => p !== mosquitto)]),
    async close() {
      for (const proc of all) proc.stopSupervising();
      // Edge first, broker last, so nothing is accepted that cannot be passed on.
      for (const proc of [caddy, ...gateways, ...(direct ? [direct] : []), mosquitto]) await proc.stop();
    },
  };
}

/** One DMZ server, started (brokers first, Caddy last). */
export async function startDmzServer(o: DmzServerOptions): Promise<DmzServer> {
  const server = await createDmzServer(o);
  await server.start();
  return server;
}
