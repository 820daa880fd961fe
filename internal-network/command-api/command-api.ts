import { dirname } from 'node:path';
import type { MqttClient } from 'mqtt';
import { RESPONSE_FILTER } from '../../shared/acl.ts';
import { TOPIC_FILTERS } from '../../shared/contract/topics.ts';
import { readJsonSetting } from '../../shared/config.ts';
import type { Logger } from '../../shared/logger.ts';
import { connectMqtt, endMqtt, endMqttWithin, subscribeOnEveryConnect } from '../../shared/mqtt/connect.ts';
import { TIMINGS } from '../../shared/limits.ts';
import { readMqttTls } from '../../shared/mqtt/settings.ts';
import type { CommandApiConfig } from './config.ts';
import { CommandDispatcher } from './dispatcher.ts';
import { startCommandHttp } from './http.ts';
import { GroupsFileSchema } from './schemas.ts';
import { ReloadingCredentials } from '../shared/credentials.ts';
import { CommandStore } from './store.ts';
import { DeviceKeyRegistry } from '../shared/device-keys.ts';
import { CommandApiMetrics } from './metrics.ts';
import { certificateExpiry } from '../../shared/metrics/certificates.ts';
import { durableFolderSpace } from '../../shared/metrics/disk.ts';
import { ServiceMetrics } from '../../shared/metrics/registry.ts';
import { startMetricsServer, type MetricsServer } from '../../shared/metrics/server.ts';
import { postgresConnection, postgresEnabled } from '../shared/postgres-settings.ts';
import { PostgresResponses, type ResponseLedger } from './stored-responses.ts';
import { InfluxResponses } from './influx-responses.ts';
import { lockCommandState } from './state-lock.ts';
import { refuseHalfRestored } from '../../shared/restore-marks.ts';
import type { FieldStreamError } from '../../shared/errors.ts';

export interface CommandApi {
  readonly port: number;
  readonly mqtt: MqttClient;
  readonly metrics: CommandApiMetrics;
  /** /metrics, /healthz and /readyz (undefined with COMMAND_API_METRICS_PORT=off) */
  readonly metricsServer: MetricsServer | undefined;
  close(): Promise<void>;
}

/**
 * `onStateLost`: called once the API has stopped because another command API took its journal's lock
 * over (this one was stalled past TIMINGS.dataLockExpiryMs): its process should exit.
 */
export async function startCommandApi(
  config: Readonly<CommandApiConfig>,
  logger: Logger,
  opts: { processMetrics?: boolean; onStateLost?: (err: FieldStreamError) => void } = {},
): Promise<CommandApi> {
  const log = logger.child({ component: 'command-api' });
  // One command API per journal, before it is read (state-lock.ts).
  let api: CommandApi | undefined;
  const stateLock = await lockCommandState(config.COMMAND_STATE_PATH, (err) => {
    log.error({ code: err.code, err: err.message }, 'lost COMMAND_STATE_PATH to another command API; stopping');
    void (api?.close() ?? Promise.resolve()).finally(() => opts.onStateLost?.(err));
  });
  try {
    // Under the lock, which a restore holds while it writes the journal: its mark, if there, is of
    // one killed midway (shared/restore-marks.ts).
    refuseHalfRestored([
      { setting: 'COMMAND_STATE_PATH', dir: dirname(config.COMMAND_STATE_PATH) },
      { setting: 'COMMAND_DEVICE_KEYS_DIR', dir: config.COMMAND_DEVICE_KEYS_DIR },
    ]);
    api = await start(config, log, opts);
  } catch (err) {
    stateLock.release();
    throw err;
  }
  const started = api;
  return {
    ...started,
    async close() {
      try {
        await started.close();
      } finally {
        stateLock.release();
      }
    },
  };
}

async function start(config: Readonly<CommandApiConfig>, log: Logger, opts: { processMetrics?: boolean }): Promise<CommandApi> {
  const groups = config.COMMAND_GROUPS_FILE ? readJsonSetting('COMMAND_GROUPS_FILE', config.COMMAND_GROUPS_FILE, GroupsFileSchema) : {};
  // Before the state and the broker are opened: an unreadable revoked list stops the start (CONFIG_FILE_UNREADABLE).
  const keys = new DeviceKeyRegistry(config.COMMAND_DEVICE_KEYS_DIR, config.COMMAND_REVOKED_DEVICES_FILE, undefined, log.child({ subsystem: 'device-keys' }));
  const store = new CommandStore(config.COMMAND_STATE_PATH, log.child({ subsystem: 'state' }));
  const mqtt = connectMqtt(
    {
      url: config.MQTT_URL,
      ...readMqttTls(config),
      clientId: config.COMMAND_API_CLIENT_ID,
      protocolVersion: config.MQTT_PROTOCOL_VERSION,
      clean: false, // responses that arrive while the API restarts wait for it
    },
    log.child({ subsystem: 'mqtt' }),
    { resubscribe: false }, // subscribed on every connect, below
  );
  // The responses the distributor stored: read only (stored-responses.ts, influx-responses.ts).
  const ledger = responseLedger(config);
  if (ledger) log.info({ store: ledger.description }, 'commands due to expire are looked up among the responses the distributor stored');
  const dispatcher = new CommandDispatcher(
    mqtt,
    store,
    log,
    {
      keys,
      allowUnsigned: config.COMMAND_ALLOW_UNSIGNED,
    },
    ledger,
    { ...(config.COMMAND_RESEND_UNANSWERED_S === 'off' ? {} : { unansweredMs: config.COMMAND_RESEND_UNANSWERED_S * 1000 }) },
  );
  const served = config.COMMAND_API_METRICS_PORT !== undefined;
  const metrics = new CommandApiMetrics(
    { store, brokerConnected: () => mqtt.connected, refusedResponses: () => dispatcher.refusedResponses },
    new ServiceMetrics('command-api', { processMetrics: served && opts.processMetrics !== false, counting: served }),
  );
  certificateExpiry(metrics.metrics, [
    { setting: 'MQTT_CERT_FILE', path: config.MQTT_CERT_FILE },
    { setting: 'MQTT_CA_FILE', path: config.MQTT_CA_FILE },
  ]);
  durableFolderSpace(metrics.metrics, [{ setting: 'COMMAND_STATE_PATH', path: config.COMMAND_STATE_PATH }]);
  if (config.COMMAND_ALLOW_UNSIGNED) log.warn('COMMAND_ALLOW_UNSIGNED is on: devices without a registered key get unsigned commands');
  // Whatever the broker says of our session: a restarted broker may have lost its subscriptions.
  subscribeOnEveryConnect(mqtt, [RESPONSE_FILTER, TOPIC_FILTERS.status], { qos: 1 }, log.child({ subsystem: 'mqtt' }));
  const http = await startCommandHttp({
    host: config.COMMAND_API_HOST,
    port: config.COMMAND_API_PORT,
    setting: 'COMMAND_API_PORT',
    // Read again when it changes (as the console does): a token taken out of it is refused within a
    // second, with no restart of the API that sends commands.
    credentials: new ReloadingCredentials({ token: config.COMMAND_API_TOKEN, tokensFile: config.COMMAND_API_TOKENS_FILE }, log),
    groups,
    defaultTtlSeconds: config.COMMAND_DEFAULT_TTL_S,
    dispatcher,
    store,
    brokerConnected: () => mqtt.connected,
    logger: log,
    requests: metrics.requests,
  });
  const metricsServer = served
    ? await startMetricsServer({
        metrics: metrics.metrics,
        host: config.COMMAND_API_METRICS_HOST,
        port: config.COMMAND_API_METRICS_PORT,
        setting: 'COMMAND_API_METRICS_PORT',
        hostNames: { setting: 'COMMAND_API_METRICS_HOST_NAMES', names: config.COMMAND_API_METRICS_HOST_NAMES },
        checks: [{ name: 'broker', ready: () => mqtt.connected }],
        log,
      }).catch(async (err: unknown) => {
        await http.close();
        dispatcher.close();
        await endMqtt(mqtt, true);
        await ledger?.close();
        throw err;
      })
    : undefined;
  return {
    port: http.port,
    mqtt,
    metrics,
    metricsServer,
    async close() {
      await http.close();
      await metricsServer?.close();
      dispatcher.close();
      // Bounded: a frozen or lost broker never acknowledges, nor closes after DISCONNECT, and the
      // API never stopped. Nothing acknowledged is lost by the cut: a command is answered once in
      // the journal, before it is sent, and one not acknowledged stays "queued" there and is sent
      // again at the next start; a device's response is acknowledged only once journaled, so one
      // cut before it is delivered again to the persistent session.
      await endMqttWithin(mqtt, TIMINGS.closeGraceMs);
      await dispatcher.settled();
      await ledger?.close();
    },
  };
}

/**
 * Where the distributor's responses are read: PostgreSQL when POSTGRES_URL or PGHOST is set, else
 * InfluxDB when INFLUXDB_URL is, else nowhere (the local store of `npm start` is not looked up).
 * With both databases set the distributor writes each response to both; PostgreSQL, configured on
 * purpose, is read (as the console's history does).
 */
function responseLedger(config: Readonly<CommandApiConfig>): ResponseLedger | undefined {
  if (postgresEnabled(config)) return new PostgresResponses(postgresConnection(config));
  return config.INFLUXDB_URL ? new InfluxResponses({ ...config, INFLUXDB_URL: config.INFLUXDB_URL }) : undefined;
}
