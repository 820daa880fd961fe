import type { PkiPaths } from '../../pki/layout.ts';
import type { Logger } from '../../shared/logger.ts';
import { loadFieldClientConfig } from '../../field-client/src/config.ts';
import { startFieldClient, type RunningFieldClient, type StartOptions } from '../../field-client/src/start.ts';
import { join } from 'node:path';
import { ManagedProcess } from '../../scripts/local-stack/process.ts';
import { freePort } from '../../scripts/local-stack/ports.ts';
import { after, before } from 'node:test';
import { makeTestPki, tempDir } from './pki.ts';
import { REPO_ROOT } from './stack.ts';

/** A field client in this process with its own data folder; local inputs off unless asked for. */
export async function startTestFieldClient(
  paths: PkiPaths,
  deviceId: string,
  gatewayUrl: string,
  logger: Logger,
  env: Record<string, string> = {},
  options: StartOptions = {},
): Promise<RunningFieldClient & { dataDir: string }> {
  const data = tempDir(`field-${deviceId}`);
  const d = paths.device(deviceId);
  const running = await startFieldClient(
    loadFieldClientConfig({
      DEVICE_ID: deviceId,
      GATEWAY_URL: gatewayUrl,
      FIELD_CA_FILE: paths.publicCa,
      FIELD_CERT_FILE: d.cert,
      FIELD_KEY_FILE: d.key,
      FIELD_SIGNING_KEY_FILE: d.signingKey,
      FIELD_DATA_DIR: data.dir,
      FIELD_HTTP_PORT: 'off',
      FIELD_MQTT_PORT: 'off',
      // Off unless a test asks for it ('0': a free port), so clients in parallel never clash on 9467.
      FIELD_METRICS_PORT: 'off',
      // Off unless a test asks for it, so a test that counts messages counts only its own.
      FIELD_HEALTH_INTERVAL_S: 'off',
      ...env,
    }),
    logger,
    options,
  );
  return {
    ...running,
    dataDir: data.dir,
    async close() {
      await running.close();
      data.cleanup();
    },
  };
}

/**
 * A field client as its container runs it: its own process (field-client/src/main.ts), its own data
 * folder, its HTTP input on a port picked now. With `supervisor`, a crash is followed by a restart
 * from the same folder, as `restart: unless-stopped` would.
 */
export async function fieldClientProcess(o: {
  paths: PkiPaths;
  deviceId: string;
  gatewayUrl: string;
  dataDir: string;
  logFile: string;
  env?: Record<string, string>;
  supervisor?: Logger;
  /** run it inside this network namespace (then give `httpPort`: freePort() answers for ours) */
  netns?: string;
  httpPort?: number;
}): Promise<{ process: ManagedProcess; httpPort: number }> {
  const httpPort = o.httpPort ?? (await freePort());
  const d = o.paths.device(o.deviceId);
  const process_ = new ManagedProcess({
    name: 'field-client',
    command: process.execPath,
    args: ['--import', 'tsx', join(REPO_ROOT, 'field-client', 'src', 'main.ts')],
    env: {
      PATH: process.env.PATH,
      FIELDSTREAM_ENV_FILE: '/dev/null',
      DEVICE_ID: o.deviceId,
      GATEWAY_URL: o.gatewayUrl,
      FIELD_CA_FILE: o.paths.publicCa,
      FIELD_CERT_FILE: d.cert,
      FIELD_KEY_FILE: d.key,
      FIELD_SIGNING_KEY_FILE: d.signingKey,
      FIELD_DATA_DIR: o.dataDir,
      FIELD_HTTP_HOST: '127.0.0.1',
      FIELD_HTTP_PORT: String(httpPort),
      FIELD_MQTT_PORT: 'off',
      FIELD_METRICS_PORT: 'off',
      FIELD_HEALTH_INTERVAL_S: 'off',
      ...o.env,
    },
    cwd: REPO_ROOT,
    logFile: o.logFile,
    ready: { port: httpPort },
    ...(o.supervisor ? { supervisor: o.supervisor } : {}),
    ...(o.netns ? { netns: o.netns } : {}),
  });
  return { process: process_, httpPort };
}

/**
 * For a describe block: a field client process (fieldClientProcess) with a test PKI and a work
 * folder of its own, started before its tests and stopped, its folders removed, after them; nothing
 * listens at its gateway's address, so what it queues stays in its queue. The fields are set once
 * `before` ran.
 */
export function isolatedFieldClient(name: string, deviceId: string, env: (ports: { mqttPort: number }) => Record<string, string> = () => ({})) {
  const c = { pki: undefined as unknown as ReturnType<typeof makeTestPki>, work: undefined as unknown as ReturnType<typeof tempDir>, client: undefined as unknown as ManagedProcess, httpPort: 0, mqttPort: 0, dataDir: '' };
  before(async () => {
    c.work = tempDir(name);
    c.pki = makeTestPki([deviceId]);
    c.dataDir = join(c.work.dir, 'field-data');
    c.mqttPort = await freePort();
    ({ process: c.client, httpPort: c.httpPort } = await fieldClientProcess({
      paths: c.pki.paths,
      deviceId,
      gatewayUrl: `wss://127.0.0.1:${await freePort()}/ws`,
      dataDir: c.dataDir,
      logFile: join(c.work.dir, 'field-client.log'),
      env: { FIELD_RECONNECT_MAX_MS: '1000', ...env({ mqttPort: c.mqttPort }) },
    }));
    await c.client.start();
  });
  after(async () => {
    await c.client?.stop();
    c.pki?.cleanup();
    c.work?.cleanup();
  });
  return c;
}
