import { spawn } from 'node:child_process';
import { Writable } from 'node:stream';
import { join } from 'node:path';
import { createLogger, type Logger } from '../../shared/logger.ts';
import { startEmbeddedPipeline, type EmbeddedPipeline } from '../../embedded/pipeline.ts';
import { readLocalStore } from '../../internal-network/distributor/sinks/local-store.ts';
import { loadDistributorConfig } from '../../internal-network/distributor/config.ts';
import { startDistributor, type Distributor } from '../../internal-network/distributor/distributor.ts';
import { startConsole, type OperatorConsole } from '../../internal-network/console/console.ts';
import { loadConsoleConfig } from '../../internal-network/console/config.ts';
import type { StoredPoint } from '../../internal-network/distributor/points.ts';
import { makeTestPki, tempDir } from './pki.ts';
import { eventually } from './ws-device.ts';

/** Log lines a test can search, e.g. for the coded error a refusal was logged with. */
export class LogCapture {
  readonly lines: Record<string, unknown>[] = [];
  readonly logger: Logger;
  constructor(level: 'info' | 'debug' = 'info') {
    const lines = this.lines;
    this.logger = createLogger(
      'test',
      level,
      new Writable({
        write(chunk: Buffer, _enc, cb) {
          for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
          cb();
        },
      }),
    );
  }
  codes(): string[] {
    return this.lines.map((l) => l.code).filter((c): c is string => typeof c === 'string');
  }
}

export interface EmbeddedFixture {
  pipeline: EmbeddedPipeline;
  pki: ReturnType<typeof makeTestPki>;
  data: { root: string; files: string; timeseries: string; deadLetters: string };
  env: Record<string, string>;
  logs: LogCapture;
  points(filter?: Partial<Pick<StoredPoint, 'measurement'>> & { device?: string }): StoredPoint[];
  stop(): Promise<void>;
}

/** The embedded pipeline on loopback with ports picked by the OS and its own certificates and data folders. */
export async function startEmbeddedFixture(deviceIds: readonly string[], extraEnv: Record<string, string> = {}, opts: { console?: boolean; host?: string } = {}): Promise<EmbeddedFixture> {
  const pki = makeTestPki(deviceIds);
  const tmp = tempDir('data');
  const data = { root: tmp.dir, files: join(tmp.dir, 'files'), timeseries: join(tmp.dir, 'timeseries'), deadLetters: join(tmp.dir, 'dead-letter') };
  const env = {
    FILE_STORAGE_PATH: data.files,
    TIMESERIES_LOCAL_PATH: data.timeseries,
    DEAD_LETTER_PATH: data.deadLetters,
    COMMAND_STATE_PATH: join(tmp.dir, 'commands.jsonl'),
    DISTRIBUTOR_STATE_DIR: join(tmp.dir, 'distributor-state'),
    CONSOLE_STATE_DIR: join(tmp.dir, 'console-state'),
    ...extraEnv,
  };
  const logs = new LogCapture();
  const pipeline = await startEmbeddedPipeline({
    env,
    logger: logs.logger,
    certsDir: pki.dir,
    host: opts.host ?? '127.0.0.1',
    gatewayPort: 0,
    brokerPort: 0,
    commandApiPort: 0,
    commandApiToken: 'embedded-test-token-0123456789abcdef',
    simulatedDeviceId: undefined,
    metricsPorts: { gateway: 0, distributor: 0, commandApi: 0, console: 0 },
    consolePort: opts.console ? 0 : undefined,
  });
  // Started means idle: the gateway's presence (its first message) is stored, so a test that swaps
  // the distributor at once does not leave that message in progress to the next one.
  await eventually(() => (readLocalStore(data.timeseries).some((p) => p.measurement === 'gateway_status') ? true : undefined), 15_000, "the gateway's presence stored");
  return {
    pipeline,
    pki,
    data,
    env,
    logs,
    points(filter = {}) {
      return readLocalStore(data.timeseries).filter(
        (p) => (!filter.measurement || p.measurement === filter.measurement) && (!filter.device || p.tags.device === filter.device),
      );
    },
    async stop() {
      await pipeline.close();
      pki.cleanup();
      tmp.cleanup();
    },
  };
}

/**
 * `npm start`'s environment (scripts/start-embedded.ts) for a test: no .env, the certificates in
 * `certsDir`, no simulated device, and nothing on a fixed port (every listener picked at start or
 * off), so that it runs beside anything else on the machine.
 */
export function quietStartEnv(certsDir: string): Record<string, string> {
  return {
    PATH: process.env.PATH ?? '',
    FIELDSTREAM_ENV_FILE: '/dev/null',
    CERTS_DIR: certsDir,
    DEVICE_ID: 'none',
    EMBEDDED_MQTT_PORT: '0',
    GATEWAY_PORT: '0',
    COMMAND_API_PORT: '0',
    GATEWAY_METRICS_PORT: 'off',
    DISTRIBUTOR_METRICS_PORT: 'off',
    COMMAND_API_METRICS_PORT: 'off',
    CONSOLE_PORT: 'off',
    CONSOLE_METRICS_PORT: 'off',
  };
}

/**
 * Runs `npm start` (scripts/start-embedded.ts) in `cwd` on quietStartEnv, its stores under `dir`,
 * with `env` over both; returns what it printed once `until` is in it (at most 45 s), then stops it.
 */
export async function npmStartBanner(cwd: string, dir: string, until: string, env: Record<string, string> = {}): Promise<string> {
  const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), join(import.meta.dirname, '..', '..', 'scripts', 'start-embedded.ts')], {
    cwd,
    env: {
      ...quietStartEnv(join(dir, 'certs')),
      TIMESERIES_LOCAL_PATH: join(dir, 'timeseries'),
      FILE_STORAGE_PATH: join(dir, 'files'),
      DEAD_LETTER_PATH: join(dir, 'dead-letter'),
      COMMAND_STATE_PATH: join(dir, 'commands.jsonl'),
      DISTRIBUTOR_STATE_DIR: join(dir, 'distributor-state'),
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    const deadline = Date.now() + 45_000;
    while (!out.includes(until)) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`npm start exited before it printed "${until}": ${err}${out}`);
      if (Date.now() > deadline) throw new Error(`npm start did not print "${until}" within 45 s: ${err}${out}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    return out;
  } finally {
    child.kill('SIGTERM');
    await exited;
  }
}

/** The settings of an internal service reaching the fixture's broker with `service`'s certificate. */
export function brokerSettings(fx: EmbeddedFixture, service: string): Record<string, string> {
  const svc = fx.pki.paths.service(service);
  return {
    MQTT_URL: `mqtts://127.0.0.1:${fx.pipeline.broker.port}`,
    MQTT_PROTOCOL_VERSION: '4',
    MQTT_CA_FILE: fx.pki.paths.publicCa,
    MQTT_CERT_FILE: svc.cert,
    MQTT_KEY_FILE: svc.key,
  };
}

/** Another console on the fixture's broker and command API, with `env` over its settings (no metrics server). */
export function extraConsole(fx: EmbeddedFixture, clientId: string, env: Record<string, string>): Promise<OperatorConsole> {
  return startConsole(
    loadConsoleConfig({
      ...fx.env,
      ...brokerSettings(fx, 'internal/console'),
      CONSOLE_CLIENT_ID: clientId,
      CONSOLE_HOST: '127.0.0.1',
      CONSOLE_PORT: '0',
      CONSOLE_METRICS_PORT: 'off',
      CONSOLE_COMMAND_API_URL: `http://127.0.0.1:${fx.pipeline.commandApi.port}`,
      CONSOLE_DEVICE_KEYS_DIR: join(fx.pki.dir, 'internal', 'device-keys'),
      CONSOLE_STORED_FEED_KEY_FILE: fx.pki.paths.storedFeedKey,
      CONSOLE_REVOKED_DEVICES_FILE: join(fx.pki.dir, 'internal', 'revoked-devices.txt'),
      ...env,
    }),
    fx.logs.logger,
    { processMetrics: false },
  );
}

/**
 * Another distributor on the fixture's broker, under the embedded one's session (so it takes over
 * whatever that one left unacknowledged): for tests that crash and restart the distributor.
 */
export function distributorLike(fx: EmbeddedFixture, overrides: Record<string, string> = {}): Distributor {
  return startDistributor(
    loadDistributorConfig({
      ...fx.env,
      ...brokerSettings(fx, 'internal/distributor'),
      DISTRIBUTOR_SHARE_GROUP: 'none',
      DISTRIBUTOR_CLIENT_ID: 'distributor-embedded',
      DISTRIBUTOR_DEVICE_KEYS_DIR: join(fx.pki.dir, 'internal', 'device-keys'),
      DISTRIBUTOR_STORED_FEED_KEY_FILE: fx.pki.paths.storedFeedKey,
      DISTRIBUTOR_METRICS_PORT: 'off',
      ...overrides,
    }),
    fx.logs.logger,
  );
}
