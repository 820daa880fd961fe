import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { pkiPaths } from '../../pki/layout.ts';
import type { Logger } from '../../shared/logger.ts';
import { ManagedProcess, type ReadyCheck } from './process.ts';
import { NODE_SERVICES, serviceEnvironment, type NodeService } from './service-env.ts';

/** What every machine of the local stack (a DMZ server, the internal server) is started with. */
export interface MachineOptions {
  repoRoot: string;
  certsDir: string;
  /** rendered configurations, broker persistence, logs, stored files of this machine */
  workDir: string;
  /**
   * settings for the services (INFLUXDB_* for the distributor, LOG_LEVEL, ...): each process takes
   * those its compose service is given, and its own settings compose gives no service (service-env.ts)
   */
  env: Record<string, string | undefined>;
  /** every process is spawned as `ip netns exec <netns> ...` (ManagedProcess.spec.netns) */
  netns?: string;
  /**
   * where its listeners bind (default 127.0.0.1); in a namespace, 0.0.0.0 or the namespace's address.
   * Caddy binds every address whatever this says (the Caddyfile has no bind directive).
   */
  bindHost?: string;
  /** extra Node.js flags for the Node services (the benchmark's --cpu-prof) */
  nodeArgs?: readonly string[];
  /** where the supervisor logs crashes and restarts (default: a logger to stdout) */
  logger?: Logger;
}

/**
 * How a machine's processes reach each other's listeners: `connect` an address to dial and probe,
 * `name` the host name for TLS (our service certificates name localhost and 127.0.0.1, not other
 * addresses: a specific bind address must be among the certificate's names).
 */
export function localHostOf(bind: string): { connect: string; name: string } {
  if (bind === '0.0.0.0' || bind === '127.0.0.1' || bind === 'localhost') return { connect: '127.0.0.1', name: 'localhost' };
  if (bind === '::') return { connect: '::1', name: 'localhost' };
  return { connect: bind, name: bind };
}

type Machine = MachineOptions & { supervisor: Logger; bind: string };

const w = (m: Machine, ...parts: string[]) => join(m.workDir, ...parts);

/**
 * A Mosquitto of the stack from the configuration the compose file mounts (dmz/mosquitto or
 * internal-network/mosquitto), rendered before each start by scripts/render-config.sh; `render`
 * runs after it (the internal broker's bridges).
 */
export function mosquittoProcess(m: Machine, name: string, tier: 'dmz' | 'internal', listen: number, extra: Record<string, string>, render?: (env: Record<string, string>) => void): ManagedProcess {
  const p = pkiPaths(m.certsDir);
  const dataDir = w(m, `${tier}-mosquitto`);
  mkdirSync(dataDir, { recursive: true });
  const configDir = join(m.repoRoot, tier === 'dmz' ? 'dmz' : 'internal-network', 'mosquitto');
  const conf = join(dataDir, 'mosquitto.conf');
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '',
    MOSQUITTO_PORT: String(listen),
    MOSQUITTO_BIND: m.bind,
    MOSQUITTO_CA_FILE: p.publicCa,
    MOSQUITTO_CERT_FILE: p.service(`${tier}/mosquitto`).cert,
    MOSQUITTO_KEY_FILE: p.service(`${tier}/mosquitto`).key,
    MOSQUITTO_CRL_FILE: join(m.certsDir, 'ca.crl'),
    MOSQUITTO_CONFIG_DIR: configDir,
    MOSQUITTO_DATA_DIR: dataDir,
    // Started by root, Mosquitto would switch to the "mosquitto" user, which cannot read our 0600 keys.
    MOSQUITTO_USER: userInfo().username,
    MOSQUITTO_LOG_DEST: `file ${w(m, 'logs', `${tier}-mosquitto.log`)}`,
    ...extra,
  };
  return new ManagedProcess({
    name,
    command: 'mosquitto',
    args: ['-c', conf],
    env: { PATH: process.env.PATH, HOME: w(m, 'caddy'), ...serviceEnvironment(tier === 'dmz' ? 'dmz-mosquitto' : 'internal-mosquitto', m.env, m.repoRoot) },
    cwd: m.workDir,
    logFile: w(m, 'logs', `${tier}-mosquitto.stdout.log`),
    ready: { port: listen, host: localHostOf(m.bind).connect },
    supervisor: m.supervisor,
    netns: m.netns,
    prepare: () => {
      execFileSync(join(m.repoRoot, 'scripts', 'render-config.sh'), [join(configDir, 'mosquitto.conf'), conf], { env });
      render?.(env);
    },
  });
}

/**
 * A Node service of the stack (its main.ts), with its own log file; `env`: the stack's own settings
 * for it, over what it takes of the stack's environment (service-env.ts); `alsoListens`: its ports
 * besides `ready`'s (ProcessSpec).
 */
export function nodeProcess(m: Machine, name: string, service: NodeService, env: Record<string, string>, ready: ReadyCheck, alsoListens: readonly number[] = []): ManagedProcess {
  return new ManagedProcess({
    name,
    command: process.execPath,
    args: [...(m.nodeArgs ?? []), '--import', 'tsx', join(m.repoRoot, NODE_SERVICES[service].entry)],
    env: { PATH: process.env.PATH, HOME: w(m, 'caddy'), ...serviceEnvironment(service, m.env, m.repoRoot), FIELDSTREAM_ENV_FILE: '/dev/null', ...env },
    cwd: m.repoRoot,
    logFile: w(m, 'logs', `${name}.log`),
    ready,
    alsoListens: alsoListens.map((port) => ({ port, host: localHostOf(m.bind).connect })),
    supervisor: m.supervisor,
    netns: m.netns,
  });
}

/**
 * Starts the stages one after another, the processes of a stage all at once, a stage once every
 * process of the one before is ready: what depends on a listener (a bridge on its broker) goes in
 * a later stage, and what does not starts beside the rest (a stack's Node services each spend a
 * second or two loading before they listen). If one fails to start, the others of its stage are
 * let finish, then every process started is stopped again (in reverse order) and the first error
 * is thrown.
 */
export async function startInStages(stages: readonly (readonly ManagedProcess[])[]): Promise<void> {
  // Every port first: one another program holds stops the start before anything of it listens.
  for (const proc of stages.flat()) await proc.assertPortsFree();
  const started: ManagedProcess[] = [];
  for (const stage of stages) {
    const results = await Promise.allSettled(stage.map(async (proc) => {
      await proc.start();
      started.push(proc);
    }));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) {
      for (const proc of started.reverse()) await proc.stop();
      throw failed.reason;
    }
  }
}
