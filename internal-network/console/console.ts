import { refuseHalfRestored } from '../../shared/restore-marks.ts';
import type { MqttClient } from 'mqtt';
import { isFieldStreamError } from '../../shared/errors.ts';
import { CONSOLE, LIMITS, TIMINGS } from '../../shared/limits.ts';
import { LimitedLog } from '../../shared/limited-log.ts';
import type { Logger } from '../../shared/logger.ts';
import { connectMqtt, endMqtt, endMqttWithin, subscribeOnEveryConnect } from '../../shared/mqtt/connect.ts';
import { durableFolderSpace } from '../../shared/metrics/disk.ts';
import { certificateExpiry } from '../../shared/metrics/certificates.ts';
import { readMqttTls } from '../../shared/mqtt/settings.ts';
import { selectSink } from '../distributor/sinks/select.ts';
import { ReloadingCredentials } from '../shared/credentials.ts';
import { DeviceKeyRegistry } from '../shared/device-keys.ts';
import { STORED_FEED_REFUSALS, STORED_FEED_TOPIC, StoredFeedReader, type StoredFeedRefusal } from '../shared/stored-feed.ts';
import { readStoredFeedKey } from '../shared/stored-feed-auth.ts';
import { AnomalyScorer } from './anomaly/scorer.ts';
import { AnomalyRunner, readingOf, type ReadingScorer } from './anomaly-runner.ts';
import { AnomalyStateSaver, loadAnomalyState } from './anomaly-state-file.ts';
import { CommandClient } from './command-client.ts';
import type { ConsoleConfig } from './config.ts';
import { Fleet } from './fleet/fleet.ts';
import { loadLastPresences } from './fleet/last-presences.ts';
import type { Anomaly } from './fleet/types.ts';
import { selectHistory } from './history/influxql.ts';
import { LimitedHistory } from './history/history.ts';
import { LocalHistory } from './history/local.ts';
import { consoleMetrics, noFeedRefusals, noManageAuthFailures, type ConsoleStats } from './metrics.ts';
import { OwnPointsWriter } from './own-points.ts';
import { startMetricsServer, type MetricsServer } from '../../shared/metrics/server.ts';
import { PipelinePoller } from './pipeline/pipeline-view.ts';
import { LiveHub, type DeviceDetail } from './web/live.ts';
import { consoleRoutes } from './web/routes.ts';
import { manageRoutes } from './manage/routes.ts';
import { DeviceTokensView } from './manage/status.ts';
import { startWebServer } from './web/server.ts';
import { BoundedSessionStore } from './web/session-store.ts';
import { RefusedTokens } from './refused-tokens.ts';

export interface OperatorConsole {
  /** http://HOST:PORT/ */
  readonly url: string;
  readonly port: number;
  readonly fleet: Fleet;
  readonly mqtt: MqttClient;
  /** /metrics, /healthz and /readyz (undefined with CONSOLE_METRICS_PORT=off) */
  readonly metricsServer: MetricsServer | undefined;
  close(): Promise<void>;
}

/** Measurements the console writes: device states and their changes, and the anomalies it finds. */
export const CONSOLE_MEASUREMENTS = { state: 'device_state', anomalies: 'anomalies' } as const;

/**
 * The operator console (docs/console.md): the fleet, its data and its security, live in a browser.
 * It learns everything from the stored feed (what the distributor verified and stored), the device
 * registry and the services' own health; reads history from the time-series store, and from it at
 * its start the presences the feed brought before (fleet/last-presences.ts); sends commands
 * through the command API as the logged-in user. It writes device states and anomalies to the store.
 */
export async function startConsole(config: Readonly<ConsoleConfig>, logger: Logger, opts: { scorer?: ReadingScorer | undefined; processMetrics?: boolean } = {}): Promise<OperatorConsole> {
  const log = logger.child({ component: 'console' });
  // Its device registry and stored-feed key, half restored, would list devices of two times.
  refuseHalfRestored([{ setting: 'CONSOLE_DEVICE_KEYS_DIR', dir: config.CONSOLE_DEVICE_KEYS_DIR }]);
  // Read before anything is started: without the key no message of the feed could be taken (CONFIG_*).
  const feed = new StoredFeedReader(readStoredFeedKey('CONSOLE_STORED_FEED_KEY_FILE', config.CONSOLE_STORED_FEED_KEY_FILE));
  // The registry: every device with a key is listed, and the revoked ones flagged, as they change
  // (an unreadable revoked list stops the start too: CONFIG_FILE_UNREADABLE).
  const registry = new DeviceKeyRegistry(config.CONSOLE_DEVICE_KEYS_DIR, config.CONSOLE_REVOKED_DEVICES_FILE, undefined, log.child({ subsystem: 'device-keys' }));
  // Read again when the file changes: the pages and the management API never ask the command API.
  const credentials = new ReloadingCredentials({ token: config.COMMAND_API_TOKEN, tokensFile: config.COMMAND_API_TOKENS_FILE }, log.child({ subsystem: 'role-tokens' }));
  const own = new OwnPointsWriter(selectSink(config, log.child({ subsystem: 'store' }), Object.values(CONSOLE_MEASUREMENTS)), log.child({ subsystem: 'store' }));
  const fleet = new Fleet({
    staleAfterMs: config.CONSOLE_STALE_AFTER_S * 1000,
    onStateChange: (c) => {
      log.info({ deviceId: c.device, state: c.state, previous: c.previous }, 'device state changed');
      own.add({ measurement: CONSOLE_MEASUREMENTS.state, tags: { device: c.device }, fields: { state: c.state, previous: c.previous }, time: c.time });
    },
  });

  const lookAtRegistry = () => {
    for (const id of registry.registered()) fleet.register(id);
    fleet.setRevoked(registry.revokedIds());
  };
  lookAtRegistry();
  // The tokens file: which devices authenticate with a token, and until when (the management API).
  const deviceTokens = new DeviceTokensView(config.CONSOLE_DEVICE_TOKENS_FILE, log.child({ subsystem: 'device-tokens' }));

  const runner = opts.scorer && config.CONSOLE_ANOMALY === 'on' ? new AnomalyRunner(opts.scorer, (a) => found(a), log.child({ subsystem: 'anomaly' })) : undefined;
  // What the detectors learnt before a restart, back before the first reading is scored.
  const anomalyLog = log.child({ subsystem: 'anomaly-state' });
  const kept = runner && opts.scorer instanceof AnomalyScorer && config.CONSOLE_STATE_DIR !== 'off' ? opts.scorer : undefined;
  if (kept) loadAnomalyState(config.CONSOLE_STATE_DIR, kept, anomalyLog);
  const saver = kept ? new AnomalyStateSaver(config.CONSOLE_STATE_DIR, kept, anomalyLog) : undefined;
  const found = (a: Anomaly) => {
    fleet.addAnomaly(a);
    own.add({
      measurement: CONSOLE_MEASUREMENTS.anomalies,
      // field_name, not field: FIELD is an InfluxQL keyword, which would have to be quoted in every query.
      tags: { device: a.device, field_name: a.field, detector: a.detector, ...(a.kind !== undefined ? { kind: a.kind } : {}) },
      fields: { score: a.score, ...(a.value !== undefined ? { value: a.value } : {}) },
      time: a.time,
    });
  };

  const mqttLog = log.child({ subsystem: 'mqtt' });
  const mqtt = connectMqtt(
    { url: config.MQTT_URL, ...readMqttTls(config), clientId: config.CONSOLE_CLIENT_ID, protocolVersion: config.MQTT_PROTOCOL_VERSION, clean: true },
    mqttLog,
    { resubscribe: false },
  );
  subscribeOnEveryConnect(mqtt, [STORED_FEED_TOPIC], { qos: 0 }, mqttLog);
  const stats: ConsoleStats = { feedMessages: 0, feedRefused: noFeedRefusals(), feedDropped: 0, manageAuthFailures: noManageAuthFailures() };
  // How often a refusal is logged is up to whoever publishes on the topic (a compromised DMZ can,
  // through the bridge): at most LIMITS.feedRefusalLogMaxPerWindow lines a minute, every one counted.
  const refusalLog = new LimitedLog(mqttLog, { level: 'warn', maxPerWindow: LIMITS.feedRefusalLogMaxPerWindow, windowMs: TIMINGS.feedRefusalLogWindowMs, what: 'refused stored-feed messages' });
  mqtt.on('message', (topic, payload, packet) => {
    let msg;
    try {
      msg = feed.read(payload);
    } catch (err) {
      // Nothing on the internal broker is taken on trust: a message that is not a new one sealed
      // by a distributor is refused, counted by code and logged (limited); the console goes on.
      const code: StoredFeedRefusal = isFieldStreamError(err) && (STORED_FEED_REFUSALS as readonly string[]).includes(err.code) ? (err.code as StoredFeedRefusal) : 'STORED_FEED_INVALID';
      stats.feedRefused[code]++;
      refusalLog.write({ code, err: (err as Error).message, topic, retained: packet.retain, bytes: payload.length }, 'stored-feed message refused');
      return;
    }
    stats.feedMessages++;
    stats.feedDropped += msg.dropped;
    for (const p of msg.points) {
      fleet.apply(p);
      const reading = runner && readingOf(p);
      if (reading) runner.offer(reading);
    }
  });

  // The presences the feed brought before this start, read back from the store the history comes
  // from (fleet/last-presences.ts), the feed running meanwhile: what it brings is newer, and wins.
  // Once, here: the start waits for it (at most CONSOLE.lastPresenceStartWaitMs, then it is applied
  // when done), so a device connected before shows its gateway from the first page on. A store that
  // cannot be read is logged, nothing more.
  const reader = selectHistory(config, () => new LocalHistory(config.TIMESERIES_LOCAL_PATH));
  if (reader.lastPresences) {
    const loading = loadLastPresences(fleet, { lastPresences: reader.lastPresences.bind(reader) }, log.child({ subsystem: 'last-presences' }));
    let waited: NodeJS.Timeout | undefined;
    await Promise.race([loading, new Promise<void>((resolve) => (waited = setTimeout(resolve, CONSOLE.lastPresenceStartWaitMs)))]);
    clearTimeout(waited);
  }
  // Cut from the broker, the console missed what the feed brought meanwhile (its subscription is not
  // durable: a clean session, QoS 0): a device that went offline stayed online, and then stale, until
  // it was heard from again. Once connected again, the presences since a little before the cut are
  // read back from the store as at the start, the feed's newer ones winning as there.
  let cutAt: number | undefined;
  mqtt.on('close', () => void (cutAt ??= Date.now()));
  mqtt.on('connect', () => {
    if (cutAt === undefined || !reader.lastPresences) return;
    const since = cutAt - CONSOLE.feedCutPresenceMarginMs;
    cutAt = undefined;
    void loadLastPresences(fleet, { lastPresences: reader.lastPresences.bind(reader) }, log.child({ subsystem: 'last-presences' }), Date.now(), since);
  });

  const pipeline = new PipelinePoller(config.CONSOLE_PIPELINE_TARGETS, log.child({ subsystem: 'pipeline' }), () => ({
    feedRefused: Object.values(stats.feedRefused).reduce((a, b) => a + b, 0),
    // Cut from the internal broker, the console hears nothing of the fleet while the brokers, the
    // bridge and the distributor all look fine: the pages say so (docs/console.md).
    feedConnected: mqtt.connected,
  }));
  pipeline.start();
  const sessions = new BoundedSessionStore(config.CONSOLE_SESSION_TTL_S * 1000);
  const refused = new RefusedTokens();
  const commands = new CommandClient(config.CONSOLE_COMMAND_API_URL, (token) => {
    refused.add(token);
    log.warn({ code: 'CONSOLE_UNAUTHORIZED' }, "the command API refused a login's token (revoked there?): its logins end, and the console refuses it until it restarts");
  });
  // Logins (checked again at every request and live update) and the management API's bearer
  // tokens: what the command API refused is refused here too.
  const verifier = refused.except(credentials);
  const deviceDetail = async (id: string, token: string): Promise<DeviceDetail | undefined> => {
    const detail = fleet.detail(id);
    if (!detail) return undefined;
    let list: unknown[] = [];
    let total: number | undefined;
    let unread: string | undefined;
    try {
      ({ commands: list, total } = await commands.list(id, token, CONSOLE.deviceCommandsListed));
    } catch (err) {
      // The login's token refused by the command API: the request is refused (and the login ends),
      // not answered as a device without commands. Any other failure leaves the page without them,
      // said (`commandsUnread`): an empty list alone read as "no commands", and a page watching a
      // command saw it vanish while the command API was out of reach.
      if (isFieldStreamError(err, 'CONSOLE_UNAUTHORIZED')) throw err;
      unread = isFieldStreamError(err) ? err.code : 'CONSOLE_COMMAND_API_FAILED';
      log.warn({ err: (err as Error).message, deviceId: id }, 'commands of a device not read');
    }
    // How many the command API keeps, listed or not: the page says how many more there are.
    return { ...detail, commands: list, ...(unread !== undefined ? { commandsUnread: unread } : {}), ...(total !== undefined ? { totals: { ...detail.totals, commands: total } } : {}) };
  };
  // A stream lasts as long as its login: logged out, expired, dropped, or its token refused since.
  const loginAlive = (id: string): boolean => {
    const token = sessions.tokenOf(id);
    return token !== undefined && verifier.verify(token) !== undefined;
  };
  const hub = new LiveHub({ fleet, pipeline: () => pipeline.current(), deviceDetail, sessionAlive: loginAlive }, log.child({ subsystem: 'live' }));
  // A token taken out of the tokens file (or now another user's) ends its logins and their streams
  // as soon as the change is seen: gone from the store, a later file giving the token back revives none.
  credentials.onChange(() => {
    for (const id of sessions.endWhere((s) => s.commandToken === undefined || verifier.verify(s.commandToken)?.name !== s.principal?.name)) hub.endSession(id);
  });
  const history = new LimitedHistory(reader);
  const timers = [setInterval(() => fleet.sweep(), CONSOLE.staleSweepMs), setInterval(lookAtRegistry, CONSOLE.staleSweepMs)];
  if (saver) timers.push(setInterval(() => void saver.save(), CONSOLE.anomalyStateSaveMs));

  let web: Awaited<ReturnType<typeof startWebServer>>;
  let metricsServer: MetricsServer | undefined;
  try {
    metricsServer =
      config.CONSOLE_METRICS_PORT === undefined
        ? undefined
        : await startMetricsServer({
            metrics: durableFolderSpace(
              certificateExpiry(consoleMetrics({ fleet, stats, runner, own, streams: () => hub.size, brokerConnected: () => mqtt.connected }, { processMetrics: opts.processMetrics !== false }), [
                { setting: 'MQTT_CERT_FILE', path: config.MQTT_CERT_FILE },
                { setting: 'MQTT_CA_FILE', path: config.MQTT_CA_FILE },
              ]),
              [{ setting: 'CONSOLE_STATE_DIR', path: config.CONSOLE_STATE_DIR }],
            ),
            host: config.CONSOLE_METRICS_HOST,
            port: config.CONSOLE_METRICS_PORT,
            setting: 'CONSOLE_METRICS_PORT',
            hostNames: { setting: 'CONSOLE_METRICS_HOST_NAMES', names: config.CONSOLE_METRICS_HOST_NAMES },
            checks: [{ name: 'broker', ready: () => mqtt.connected }],
            log,
          });
    web = await startWebServer({
      host: config.CONSOLE_HOST,
      port: config.CONSOLE_PORT,
      setting: 'CONSOLE_PORT',
      secure: config.CONSOLE_COOKIE_SECURE,
      sessionTtlMs: config.CONSOLE_SESSION_TTL_S * 1000,
      sessions,
      trustedProxies: config.CONSOLE_TRUSTED_PROXY,
      logger: log,
      routes: (app) => {
        consoleRoutes({ credentials: verifier, fleet, hub, history, commands, deviceDetail, sessionTtlMs: config.CONSOLE_SESSION_TTL_S * 1000, secureCookie: config.CONSOLE_COOKIE_SECURE, loginAttemptsPerMinute: config.CONSOLE_LOGIN_ATTEMPTS_PER_MINUTE, log })(app);
        // The management API (docs/management-api.md): bearer tokens only, apart from the pages' sessions.
        if (config.CONSOLE_MANAGE_API === 'on') manageRoutes({ credentials: verifier, fleet, pipeline: () => pipeline.current(), brokerConnected: () => mqtt.connected, commands, authFailures: stats.manageAuthFailures, log: log.child({ subsystem: 'manage' }), deviceTokens: () => deviceTokens.current() })(app);
      },
    });
  } catch (err) {
    for (const t of timers) clearInterval(t);
    await metricsServer?.close();
    hub.close();
    await pipeline.stop();
    await endMqtt(mqtt, true);
    await own.close();
    await reader.close?.();
    throw err;
  }
  const host = config.CONSOLE_HOST === '0.0.0.0' ? '127.0.0.1' : config.CONSOLE_HOST;
  log.info({ history: history.description, devices: fleet.size, anomaly: runner !== undefined }, 'console started');
  return {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${web.port}/`,
    port: web.port,
    fleet,
    mqtt,
    metricsServer,
    async close() {
      for (const t of timers) clearInterval(t);
      hub.close();
      await web.close();
      await metricsServer?.close();
      await pipeline.stop();
      // Bounded: a frozen broker never closes the connection after DISCONNECT, and the console never
      // stopped, nor saved what follows. Nothing is lost by the cut: the console publishes nothing,
      // its subscription is QoS 0 (nothing to acknowledge) on a clean session, and it has no will.
      await endMqttWithin(mqtt, TIMINGS.closeGraceMs);
      // No reading comes any more: what was learnt up to now is what the next start restores.
      await saver?.saveLast();
      await own.close();
      // The history's own connections (PostgreSQL's pool): left open, they held the database's
      // connection slots, and a process that closed the console, its event loop, until they idled out.
      await reader.close?.();
    },
  };
}
