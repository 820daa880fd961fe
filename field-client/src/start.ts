
import type { X509Certificate } from 'node:crypto';
import { join } from 'node:path';
import { readJsonSetting } from '../../shared/config.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import { parseSigningKey } from '../../shared/security/message-auth.ts';
import type { Logger } from '../../shared/logger.ts';
import { readPemSetting } from '../../shared/tls-files.ts';
import { CommandHandlers } from './commands.ts';
import { CommandsFileSchema } from './commands-file.ts';
import type { FieldClientConfig } from './config.ts';
import { FieldClient } from './field-client.ts';
import { FileOutbox } from './files/file-outbox.ts';
import { recoverOutbox } from './files/outbox-recovery.ts';
import { readDeviceToken } from './device-token-file.ts';
import { GatewayConnection } from './gateway-connection.ts';
import { HealthReporter, softwareVersion } from './health.ts';
import { ServerCrlSource } from './server-crl-source.ts';
import { DeviceCredentials, certificateOfDevice, certificateWithItsKey, type DeviceAuth } from './device-credentials.ts';
import { folderInput } from './inputs/folder-watch.ts';
import { httpInput } from './inputs/http-input.ts';
import type { LocalInput } from './inputs/input.ts';
import { mqttInput } from './inputs/mqtt-input.ts';
import { sparkplugInput, type SparkplugInput, type SparkplugInputOptions } from './inputs/sparkplug/sparkplug-input.ts';
import { FieldNames } from './inputs/sparkplug/names.ts';
import type { SparkplugSession } from './inputs/sparkplug/session.ts';
import { lockDataDir, type DataDirLock } from './data-dir-lock.ts';
import { DurableQueue } from './queue/durable-queue.ts';
import { Simulator } from './simulator.ts';
import { fieldClientMetrics } from './metrics.ts';
import { startMetricsServer } from '../../shared/metrics/server.ts';
import { makeDirDurablySync } from '../../shared/durable-fs.ts';

export interface RunningFieldClient {
  readonly client: FieldClient;
  readonly connection: GatewayConnection;
  readonly commands: CommandHandlers;
  /** the heartbeat (undefined with FIELD_HEALTH_INTERVAL_S=off) */
  readonly health: HealthReporter | undefined;
  readonly httpPort: number | undefined;
  readonly mqttPort: number | undefined;
  /** the folder whose new files are sent (FIELD_WATCH_DIR; undefined: none) */
  readonly watchDir: string | undefined;
  /** the Sparkplug host on a plant's broker (undefined without FIELD_SPARKPLUG_URL) */
  readonly sparkplug: SparkplugInput | undefined;
  /** the Sparkplug session of the local MQTT input (undefined unless FIELD_MQTT_SPARKPLUG) */
  readonly localSparkplug: SparkplugSession | undefined;
  /** where /metrics, /healthz and /readyz are served (undefined with FIELD_METRICS_PORT=off) */
  readonly metricsUrl: string | undefined;
  close(): Promise<void>;
}

/** Builds the field client from its configuration: queue, connection, local inputs, commands. */
export interface StartOptions {
  /**
   * false: delete at the gateway's ack, as a device without receipts does, even with a signing key.
   * For the benchmark only (its receipts-off reference); no setting reaches it.
   */
  receipts?: boolean;
  /** false: no process metrics (CPU, memory) in this client's /metrics, when another service in the same process has them (npm start) */
  processMetrics?: boolean;
  /**
   * milliseconds: TIMINGS.fieldSendAheadMs, scaled down by a test that scales DISTRIBUTOR_TRANSIT_MAX_S
   * down to run in seconds (test/e2e/field-slow-link.test.ts); no setting reaches it.
   */
  sendAheadMs?: number;
  /** Called once the client stopped because another took FIELD_DATA_DIR over (data-dir-lock.ts). */
  onDataDirLost?: (err: FieldStreamError) => void;
  /**
   * FIELD_DATA_DIR's lock, taken already by the caller (npm start takes it before anything else
   * starts, so that a second npm start on the same folders stops before its services disturb the
   * first's); released with the client. Its loss is the caller's to handle.
   */
  dataDirLock?: DataDirLock;
}

export async function startFieldClient(config: Readonly<FieldClientConfig>, logger: Logger, options: StartOptions = {}): Promise<RunningFieldClient> {
  const log = logger.child({ component: 'field-client', deviceId: config.DEVICE_ID });
  const ca = readPemSetting('FIELD_CA_FILE', config.FIELD_CA_FILE);
  const crl = ServerCrlSource.open(config.FIELD_CRL_FILE, config.FIELD_CA_FILE, ca, log, config.FIELD_DATA_DIR);
  // A token device presents no certificate: its identity is the token (docs/security-mechanisms.md, "Device tokens").
  const auth: DeviceAuth = config.FIELD_TOKEN_FILE
    ? { token: readDeviceToken(config.FIELD_TOKEN_FILE, config.DEVICE_ID) }
    : { cert: readPemSetting('FIELD_CERT_FILE', config.FIELD_CERT_FILE), key: readPemSetting('FIELD_KEY_FILE', config.FIELD_KEY_FILE) };
  // A key that is not the certificate's, or another device's certificate, stops the client here:
  // it would fail every handshake, or have every message refused by the gateway.
  if ('cert' in auth) {
    let x509: X509Certificate;
    try {
      x509 = certificateWithItsKey({ certFile: config.FIELD_CERT_FILE, keyFile: config.FIELD_KEY_FILE }, auth.cert, auth.key);
    } catch (err) {
      throw new FieldStreamError('CONFIG_INVALID', (err as Error).message, { variable: 'FIELD_KEY_FILE' });
    }
    try {
      certificateOfDevice(config.FIELD_CERT_FILE, x509, config.DEVICE_ID);
    } catch (err) {
      throw new FieldStreamError('CONFIG_INVALID', (err as Error).message, { variable: 'FIELD_CERT_FILE' });
    }
  }
  // Read again when their files change (a renewal copied onto the device): device-credentials.ts.
  const credentials = new DeviceCredentials(config.FIELD_TOKEN_FILE ? { tokenFile: config.FIELD_TOKEN_FILE } : { certFile: config.FIELD_CERT_FILE, keyFile: config.FIELD_KEY_FILE }, config.DEVICE_ID, auth, log);
  const tls = { ca, crl, credentials, ...auth };
  let signingKey: Buffer | undefined;
  if (config.FIELD_SIGNING_KEY_FILE) {
    signingKey = parseSigningKey(readPemSetting('FIELD_SIGNING_KEY_FILE', config.FIELD_SIGNING_KEY_FILE));
    if (!signingKey) throw new FieldStreamError('CONFIG_INVALID', `FIELD_SIGNING_KEY_FILE=${config.FIELD_SIGNING_KEY_FILE} does not hold a key (64 hex digits).`);
  } else {
    log.warn('FIELD_SIGNING_KEY_FILE is not set: messages are sent unsigned, which a deployment that requires signatures refuses, and deleted at the gateway\'s ack (commit receipts need the key)');
  }
  const commandsFile = config.FIELD_COMMANDS_FILE ? readJsonSetting('FIELD_COMMANDS_FILE', config.FIELD_COMMANDS_FILE, CommandsFileSchema) : undefined;
  makeDirDurablySync(config.FIELD_DATA_DIR, 0o700);
  // One field client per folder, before anything in it is opened (data-dir-lock.ts).
  let running: RunningFieldClient | undefined;
  const lock =
    options.dataDirLock ??
    (await lockDataDir(config.FIELD_DATA_DIR, (err) => {
      log.error({ code: err.code, err: err.message }, 'lost FIELD_DATA_DIR to another field client; stopping');
      void (running?.close() ?? Promise.resolve()).finally(() => options.onDataDirLost?.(err));
    }));
  let queue: DurableQueue;
  try {
    queue = await openQueue();
  } catch (err) {
    lock.release();
    throw err;
  }
  function openQueue(): Promise<DurableQueue> {
    return DurableQueue.open({
    dir: join(config.FIELD_DATA_DIR, 'queue'),
    maxBytes: config.FIELD_QUEUE_MAX_BYTES,
    segmentBytes: Math.min(config.FIELD_QUEUE_SEGMENT_BYTES, Math.floor(config.FIELD_QUEUE_MAX_BYTES / 4)),
    fullPolicy: config.FIELD_QUEUE_FULL_POLICY,
    sync: config.FIELD_QUEUE_SYNC,
    // Receipts are verified with the signing key: without one, the gateway's ack is the end.
    receipts: signingKey !== undefined && options.receipts !== false,
    log: log.child({ subsystem: 'queue' }),
    });
  }
  const outbox = new FileOutbox(config.FIELD_DATA_DIR, config.FIELD_FILE_CHUNK_BYTES);
  await recoverOutbox(outbox, queue, log.child({ subsystem: 'outbox' }));
  const connection = new GatewayConnection(
    { url: config.GATEWAY_URL, tls, reconnectInitialMs: TIMINGS.reconnectInitialMs, reconnectMaxMs: config.FIELD_RECONNECT_MAX_MS, idleTimeoutMs: TIMINGS.idleTimeoutMs },
    log,
  );
  const commands = new CommandHandlers(
    {
      deviceId: config.DEVICE_ID,
      key: signingKey,
      allowUnsigned: config.FIELD_ALLOW_UNSIGNED_COMMANDS,
      maxAgeMs: config.FIELD_COMMAND_MAX_AGE_S * 1000,
      skewMs: config.FIELD_COMMAND_CLOCK_SKEW_S * 1000,
    },
    join(config.FIELD_DATA_DIR, 'commands.journal'),
    undefined,
    { concurrency: config.FIELD_COMMANDS_CONCURRENCY, waitingMax: LIMITS.fieldCommandsWaitingMax },
  );
  if (commands.journalUnreadable > 0 || commands.journalDamagedValues > 0) {
    log.warn(
      { code: 'FIELD_COMMAND_JOURNAL_DAMAGED', path: join(config.FIELD_DATA_DIR, 'commands.journal'), lines: commands.journalUnreadable, futureValues: commands.journalDamagedValues },
      'the command journal is damaged: lines that cannot be read (torn by a power cut, or damaged) skipped, values far past the clock not believed',
    );
  }
  if (commands.journalDamagedPrograms.length > 0) {
    const ids = commands.journalDamagedPrograms;
    log.warn(
      { code: 'FIELD_COMMAND_PROGRAM_RECORD_DAMAGED', path: join(config.FIELD_DATA_DIR, 'commands.journal'), records: ids.length, commandIds: ids.slice(0, LIMITS.fieldCommandDamagedIdsLoggedMax) },
      'records of exec programs in the command journal cannot be read: if the client was killed while they ran, they may run on; their commands are answered of unknown outcome at their next delivery',
    );
  }
  // Before any command can be delivered (the connection starts below): a program left running by a
  // client killed is ended, up to TIMINGS.fieldCommandStopGraceMs and its SIGKILL, and its command answered.
  await commands.endOrphans(log);
  if (!signingKey && config.FIELD_ALLOW_UNSIGNED_COMMANDS) log.warn('FIELD_ALLOW_UNSIGNED_COMMANDS is on: commands run without authentication; whoever holds the DMZ can command this device');
  else if (!signingKey) log.warn('no FIELD_SIGNING_KEY_FILE: commands are refused (FIELD_COMMAND_UNSIGNED) unless FIELD_ALLOW_UNSIGNED_COMMANDS=true');
  const client = new FieldClient(
    {
      deviceId: config.DEVICE_ID,
      batchMax: config.FIELD_BATCH_MAX,
      window: config.FIELD_WINDOW,
      fileWindow: config.FIELD_FILE_WINDOW,
      maxBytes: config.FIELD_QUEUE_MAX_BYTES,
      dataDir: config.FIELD_DATA_DIR,
      signingKey,
      sendAheadMs: options.sendAheadMs,
      commit:
        signingKey !== undefined && options.receipts !== false
          ? { timeoutMs: config.FIELD_COMMIT_TIMEOUT_MS, windowMessages: config.FIELD_COMMIT_WINDOW_MESSAGES, windowBytes: config.FIELD_COMMIT_WINDOW_BYTES }
          : undefined,
    },
    queue,
    outbox,
    connection,
    commands,
    log,
  );
  const health =
    config.FIELD_HEALTH_INTERVAL_S === undefined
      ? undefined
      : new HealthReporter(
          client,
          connection,
          outbox,
          { intervalMs: config.FIELD_HEALTH_INTERVAL_S * 1000, dataDir: config.FIELD_DATA_DIR, certFile: config.FIELD_CERT_FILE, version: softwareVersion() },
          log.child({ subsystem: 'health' }),
        );
  // The local inputs, each one the setting asks for, started in this order (and closed in reverse).
  const http = config.FIELD_HTTP_PORT === undefined ? undefined : httpInput(client, config.FIELD_HTTP_HOST, config.FIELD_HTTP_PORT, config.FIELD_DATA_DIR, log, health, config.FIELD_HTTP_HOST_NAMES);
  // Both Sparkplug inputs write into this device's readings: their births' field names are checked
  // together (names.ts), so that metrics of the two never share a field.
  const sparkplugNames = new FieldNames();
  const mqtt =
    config.FIELD_MQTT_PORT === undefined
      ? undefined
      : mqttInput(client, config.FIELD_MQTT_HOST, config.FIELD_MQTT_PORT, config.FIELD_MQTT_TOPIC_PREFIX, log, health, config.FIELD_MQTT_SPARKPLUG ? { groups: config.FIELD_SPARKPLUG_GROUPS, names: sparkplugNames, dataDir: config.FIELD_DATA_DIR, hostId: config.FIELD_SPARKPLUG_HOST_ID } : undefined, config.FIELD_DATA_DIR);
  const sparkplug = config.FIELD_SPARKPLUG_URL ? sparkplugInput(client, { ...sparkplugOptions(config, config.FIELD_SPARKPLUG_URL), names: sparkplugNames }, log) : undefined;
  const folder = config.FIELD_WATCH_DIR ? folderInput(client, config.FIELD_WATCH_DIR, config.FIELD_WATCH_INTERVAL_MS, log, { keptFile: join(config.FIELD_DATA_DIR, 'watched-kept.jsonl') }) : undefined;
  const inputs = [http, mqtt, folder, sparkplug].filter((i): i is LocalInput => i !== undefined);
  const closers: Array<() => Promise<void> | void> = [];
  try {
    for (const input of inputs) {
      await input.start();
      closers.push(() => input.close());
    }
    const metricsServer =
      config.FIELD_METRICS_PORT === undefined
        ? undefined
        : await startMetricsServer({
            metrics: fieldClientMetrics(
              { client, connection, commands, outbox, certFile: config.FIELD_CERT_FILE, sparkplug: [sparkplug?.session, mqtt?.sparkplug].filter((s): s is SparkplugSession => s !== undefined) },
              { processMetrics: options.processMetrics !== false },
            ),
            host: config.FIELD_METRICS_HOST,
            port: config.FIELD_METRICS_PORT,
            setting: 'FIELD_METRICS_PORT',
            hostNames: { setting: 'FIELD_METRICS_HOST_NAMES', names: config.FIELD_METRICS_HOST_NAMES },
            // Alive while the process answers; ready while connected to the gateway.
            checks: [{ name: 'gateway', ready: () => connection.isOpen }],
            log,
          });
    if (metricsServer) closers.push(() => metricsServer.close());
    if (commandsFile) commands.configure(commandsFile, mqtt?.publish);
    const simulator = config.FIELD_SIMULATE ? new Simulator(client, config.FIELD_SAMPLE_INTERVAL_MS, log.child({ subsystem: 'simulator' })) : undefined;
    simulator?.registerCommands(commands);
    connection.start();
    simulator?.start();
    if (simulator) closers.push(() => simulator.stop());
    health?.start();
    if (health) closers.push(() => health.stop());
    running = {
      client,
      connection,
      commands,
      health,
      httpPort: http?.port,
      mqttPort: mqtt?.port,
      watchDir: config.FIELD_WATCH_DIR,
      sparkplug,
      localSparkplug: mqtt?.sparkplug,
      metricsUrl: metricsServer?.url,
      async close() {
        // First: its programs get their grace while the rest stops, and their answers are queued before the queue closes.
        const commandsStopped = commands.stop();
        for (const c of closers.reverse()) await c();
        await commandsStopped;
        client.stop();
        await connection.stop();
        await queue.close();
        lock.release();
      },
    };
    return running;
  } catch (err) {
    for (const c of closers.reverse()) await c();
    await queue.close();
    lock.release();
    throw err;
  }
}

/** The Sparkplug input's options from the settings; its TLS and password files read now. */
function sparkplugOptions(config: Readonly<FieldClientConfig>, url: string): SparkplugInputOptions {
  if ((config.FIELD_SPARKPLUG_CERT_FILE === undefined) !== (config.FIELD_SPARKPLUG_KEY_FILE === undefined)) {
    throw new FieldStreamError('CONFIG_INVALID', 'FIELD_SPARKPLUG_CERT_FILE and FIELD_SPARKPLUG_KEY_FILE go together: set both or neither.');
  }
  const pem = (variable: string, path: string | undefined) => (path === undefined ? undefined : readPemSetting(variable, path));
  const password = pem('FIELD_SPARKPLUG_PASSWORD_FILE', config.FIELD_SPARKPLUG_PASSWORD_FILE)?.replace(/\r?\n$/, '');
  return {
    url,
    ca: pem('FIELD_SPARKPLUG_CA_FILE', config.FIELD_SPARKPLUG_CA_FILE),
    cert: pem('FIELD_SPARKPLUG_CERT_FILE', config.FIELD_SPARKPLUG_CERT_FILE),
    key: pem('FIELD_SPARKPLUG_KEY_FILE', config.FIELD_SPARKPLUG_KEY_FILE),
    username: config.FIELD_SPARKPLUG_USERNAME,
    password,
    clientId: config.FIELD_SPARKPLUG_CLIENT_ID ?? `fieldstream-${config.DEVICE_ID}`,
    groups: config.FIELD_SPARKPLUG_GROUPS,
    hostId: config.FIELD_SPARKPLUG_HOST_ID,
    reorderTimeoutMs: config.FIELD_SPARKPLUG_REORDER_TIMEOUT_MS,
  };
}
