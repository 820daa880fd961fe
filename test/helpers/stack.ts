import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { eventually } from './ws-device.ts';
import { join } from 'node:path';
import { startLocalStack, type LocalStack, type LocalStackOptions } from '../../scripts/local-stack/stack.ts';
import { ManagedProcess } from '../../scripts/local-stack/process.ts';
import type { PkiPaths } from '../../pki/layout.ts';
import type { InfluxV1 } from '../../scripts/local-stack/databases.ts';
import type { DmzServer } from '../../scripts/local-stack/dmz-server.ts';
import { freePort } from '../../scripts/local-stack/ports.ts';

export const REPO_ROOT = join(import.meta.dirname, '..', '..');

export async function startTestStack(
  certsDir: string,
  workDir: string,
  env: Record<string, string>,
  extra: Partial<LocalStackOptions> = {},
): Promise<{ stack: LocalStack; token: string }> {
  const token = randomBytes(24).toString('hex');
  const stack = await startLocalStack({
    repoRoot: REPO_ROOT,
    certsDir,
    workDir,
    env: { LOG_LEVEL: 'info', ...env },
    commandApiToken: token,
    ...extra,
  });
  return { stack, token };
}

/** The distributor's settings for a test's InfluxDB 1.x and database (its login included). */
export function influxSettings(influx: InfluxV1, database: string): Record<string, string> {
  return { INFLUXDB_URL: influx.url, INFLUXDB_DATABASE: database, INFLUXDB_USERNAME: influx.user, INFLUXDB_PASSWORD: influx.password };
}

/** Another distributor on the internal broker, in its own share group (so it gets every message). */
export function extraDistributor(name: string, paths: PkiPaths, internalMqttUrl: string, workDir: string, env: Record<string, string>): ManagedProcess {
  return new ManagedProcess({
    name,
    command: process.execPath,
    args: ['--import', 'tsx', join(REPO_ROOT, 'internal-network', 'distributor', 'main.ts')],
    env: {
      PATH: process.env.PATH,
      FIELDSTREAM_ENV_FILE: '/dev/null',
      MQTT_URL: internalMqttUrl,
      MQTT_CA_FILE: paths.publicCa,
      MQTT_CERT_FILE: paths.service('internal/distributor').cert,
      MQTT_KEY_FILE: paths.service('internal/distributor').key,
      DISTRIBUTOR_CLIENT_ID: name,
      DISTRIBUTOR_SHARE_GROUP: name,
      DISTRIBUTOR_DEVICE_KEYS_DIR: join(paths.root, 'internal', 'device-keys'),
      DISTRIBUTOR_REVOKED_DEVICES_FILE: join(paths.root, 'internal', 'revoked-devices.txt'),
      DISTRIBUTOR_STORED_FEED_KEY_FILE: paths.storedFeedKey,
      DISTRIBUTOR_STATE_DIR: join(workDir, name, 'state'),
      FILE_STORAGE_PATH: join(workDir, name, 'files'),
      TIMESERIES_LOCAL_PATH: join(workDir, name, 'timeseries'),
      DEAD_LETTER_PATH: join(workDir, name, 'dead-letter'),
      // No metrics server: its default port (9465) is fixed, and anything else holding it (npm start,
      // another test's distributor) would stop this one from starting.
      DISTRIBUTOR_METRICS_PORT: 'off',
      ...env,
    },
    cwd: REPO_ROOT,
    logFile: join(workDir, 'logs', `${name}.log`),
    ready: { logLine: /"msg":"subscribed"/ },
  });
}

/** Calls the command API with the operator's token (or another). */
export async function api(stack: LocalStack, token: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(`${stack.urls.commandApi}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: typeof body === 'string' ? body : JSON.stringify(body) } : {}),
  });
  return { status: res.status, body: await res.json() };
}

/** How many times the distributor's consumers subscribed first, and again after a reconnect (its log). */
export const subscriptions = (stack: LocalStack) => {
  const all = readFileSync(stack.distributor.spec.logFile, 'utf8');
  const log = all.slice(all.lastIndexOf('"msg":"distributor writing"')); // the current process only
  return { first: log.split('"msg":"subscription granted"').length - 1, again: log.split('"msg":"subscription granted again after reconnect"').length - 1 };
};
/** Resolves once every consumer of the distributor subscribed again since `before` (messages that
 * reach the restarted broker before that find no subscriber: covered end to end only by commit receipts). */
export const untilResubscribed = (stack: LocalStack, before: number) =>
  eventually(() => (subscriptions(stack).again >= before + subscriptions(stack).first ? true : undefined), 30_000, 'the distributor subscribed again');

export const HAPROXY_CFG = join(REPO_ROOT, 'haproxy', 'haproxy.cfg');

/** The real HAProxy with the repository's haproxy.cfg in front of two DMZ servers' Caddies, on a free port; started. */
export async function startHaproxy(servers: readonly [DmzServer, DmzServer], workDir: string, logFile: string): Promise<{ process: ManagedProcess; port: number }> {
  const port = await freePort();
  const process_ = new ManagedProcess({
    name: 'haproxy',
    command: 'haproxy',
    args: ['-db', '-f', HAPROXY_CFG],
    env: { PATH: process.env.PATH, HAPROXY_BIND: `127.0.0.1:${port}`, HAPROXY_DMZ1: `127.0.0.1:${servers[0].ports.https}`, HAPROXY_DMZ2: `127.0.0.1:${servers[1].ports.https}`, HAPROXY_CHECK_INTER: '1s', HAPROXY_MAXCONN: '1000' },
    cwd: workDir,
    logFile,
    ready: { port },
  });
  await process_.start();
  return { process: process_, port };
}
