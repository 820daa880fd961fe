import { writeFile } from 'node:fs/promises';
import { isFieldStreamError, type FieldStreamError } from '../../shared/errors.ts';
import type { MqttClient } from 'mqtt';
import { sharedFilter, TOPIC_FILTERS } from '../../shared/contract/topics.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import type { Logger } from '../../shared/logger.ts';
import { connectMqtt, endMqtt, subscribeOnEveryConnect } from '../../shared/mqtt/connect.ts';
import { readMqttTls } from '../../shared/mqtt/settings.ts';
import type { DistributorConfig } from './config.ts';
import { retireConsumerSessions, retireFreeSlots, type RetirementResult } from './session-retirement.ts';
import { Consumer, retryLogs } from './consumer.ts';
import { settleWithin } from '../../shared/settle-within.ts';
import { DeadLetters } from './dead-letter.ts';
import { FileStore } from './file-store.ts';
import { MessageHandler } from './message-handler.ts';
import { selectDistributorSink } from './sinks/select.ts';
import { WriteBatcher } from './write-batcher.ts';
import { DeviceKeyRegistry } from '../shared/device-keys.ts';
import { ReplayWindows } from './security/replay-window.ts';
import { claimStateSlot } from './state-lease.ts';
import { refuseHalfRestored } from '../../shared/restore-marks.ts';
import { MessageVerifier } from './security/verifier.ts';
import { join } from 'node:path';
import type { PointSink } from './sinks/sink.ts';
import { ReceiptPublisher } from './receipts.ts';
import { DistributorMetrics } from './metrics.ts';
import { certificateExpiry } from '../../shared/metrics/certificates.ts';
import { postgresEnabled } from '../shared/postgres-settings.ts';
import { durableFolderSpace } from '../../shared/metrics/disk.ts';
import { ServiceMetrics } from '../../shared/metrics/registry.ts';
import { startMetricsServer, type MetricsServer } from '../../shared/metrics/server.ts';
import { StoredFeedPublisher } from './stored-feed-publisher.ts';
import { PresenceClearer } from './presence-clearer.ts';
import { RetainedSweeper, type RetainedSweepOptions } from './retained-sweeper.ts';
import { GatewayAdmission } from './security/gateway-admission.ts';
import { openEventTagAdmissions } from './event-tags.ts';
import { readStoredFeedKey } from '../shared/stored-feed-auth.ts';

export interface Distributor {
  readonly clients: readonly MqttClient[];
  readonly verifier: MessageVerifier;
  readonly sink: PointSink;
  readonly consumers: readonly Consumer[];
  readonly receipts: ReceiptPublisher;
  /** the stored feed of what was written (undefined with DISTRIBUTOR_FEED=off) */
  readonly feed: StoredFeedPublisher | undefined;
  /** Resolves once every consumer's subscription is in place. */
  readonly ready: Promise<void>;
  /** Settles when the sessions of consumers that no longer run are retired (session-retirement.ts). */
  readonly retirement: Promise<RetirementResult | undefined>;
  readonly metrics: DistributorMetrics;
  /** /metrics, /healthz and /readyz once listening (undefined with DISTRIBUTOR_METRICS_PORT=off); rejects with LISTEN_FAILED */
  readonly metricsServer: Promise<MetricsServer | undefined>;
  stats(): Consumer['stats'];
  close(): Promise<void>;
}

/**
 * The distributor: a few MQTT connections in one shared subscription (one message in progress on
 * each, see Consumer), writing through one group-committing batcher to the time-series sink, and
 * files to FILE_STORAGE_PATH.
 */
/**
 * `onStateLost`: the distributor lost its slot of DISTRIBUTOR_STATE_DIR to another (state-lease.ts)
 * and has stopped; as a process it exits (main.ts), so its supervisor starts it again.
 */
export function startDistributor(
  config: Readonly<DistributorConfig>,
  logger: Logger,
  opts: {
    processMetrics?: boolean;
    onStateLost?: (err: FieldStreamError) => void;
    /** tests: sooner sweeps (TIMINGS.retainedSweep*) */
    retainedSweep?: Partial<RetainedSweepOptions>;
    /** tests: sooner looks at free slots (TIMINGS.freeSlotCheckMs, freeSlotGraceMs) */
    freeSlots?: { checkMs?: number; graceMs?: number };
  } = {},
): Distributor {
  const log = logger.child({ component: 'distributor' });
  // Read before anything is claimed or opened: a missing or wrong key, or a revoked devices' list
  // that is there but cannot be read, stops the start (CONFIG_*).
  const feedKey = config.DISTRIBUTOR_FEED === 'on' ? readStoredFeedKey('DISTRIBUTOR_STORED_FEED_KEY_FILE', config.DISTRIBUTOR_STORED_FEED_KEY_FILE) : undefined;
  const keys = new DeviceKeyRegistry(config.DISTRIBUTOR_DEVICE_KEYS_DIR, config.DISTRIBUTOR_REVOKED_DEVICES_FILE, undefined, log.child({ subsystem: 'security' }));
  const lease = claimStateSlot(config.DISTRIBUTOR_STATE_DIR, config.DISTRIBUTOR_CLIENT_ID, (err) => {
    log.error({ code: err.code, err: err.message }, 'lost the state folder to another distributor; stopping');
    void distributor.close().finally(() => opts.onStateLost?.(err));
  }, (path, err) => log.warn({ path, err: err instanceof Error ? err.message : undefined }, 'could not read or renew the state folder\'s lease this time; trying again at the next renewal'));
  // After the slot is claimed: a restore checks the slots after it marks the folders, so either it
  // sees this claim and refuses, or its mark is seen here (shared/restore-marks.ts).
  try {
    refuseHalfRestored([
      { setting: 'DISTRIBUTOR_STATE_DIR', dir: config.DISTRIBUTOR_STATE_DIR },
      { setting: 'DISTRIBUTOR_DEVICE_KEYS_DIR', dir: config.DISTRIBUTOR_DEVICE_KEYS_DIR },
    ]);
  } catch (err) {
    lease.release();
    throw err;
  }
  if (lease.slot > 1) log.info({ slot: lease.slot, dir: lease.dir }, 'state kept in its own slot of the shared state folder');
  const served = config.DISTRIBUTOR_METRICS_PORT !== undefined;
  const metrics = new DistributorMetrics(new ServiceMetrics('distributor', { processMetrics: served && opts.processMetrics !== false, counting: served }));
  certificateExpiry(metrics.metrics, [
    { setting: 'MQTT_CERT_FILE', path: config.MQTT_CERT_FILE },
    { setting: 'MQTT_CA_FILE', path: config.MQTT_CA_FILE },
  ]);
  durableFolderSpace(metrics.metrics, [
    { setting: 'FILE_STORAGE_PATH', path: config.FILE_STORAGE_PATH },
    { setting: 'DEAD_LETTER_PATH', path: config.DEAD_LETTER_PATH },
    { setting: 'DISTRIBUTOR_STATE_DIR', path: config.DISTRIBUTOR_STATE_DIR },
    // The local store only when it is the one written (neither InfluxDB nor PostgreSQL set).
    ...(!config.INFLUXDB_URL && !postgresEnabled(config) ? [{ setting: 'TIMESERIES_LOCAL_PATH', path: config.TIMESERIES_LOCAL_PATH }] : []),
  ]);
  // Filled below, one per consumer; the stored feed and the receipts publish on these connections.
  const clients: MqttClient[] = [];
  const feed =
    feedKey !== undefined
      ? new StoredFeedPublisher(clients, { source: config.DISTRIBUTOR_CLIENT_ID, key: feedKey }, log.child({ subsystem: 'feed' }), { published: metrics.feedPoints, dropped: metrics.feedDropped })
      : undefined;
  const sink = new WriteBatcher(selectDistributorSink(config, log, { statementTimeouts: metrics.postgresStatementTimeouts, transactionMaxBytes: metrics.postgresTransactionMaxBytes }), config.DISTRIBUTOR_BATCH_MAX_POINTS, config.DISTRIBUTOR_WRITE_CONCURRENCY, metrics, feed, config.DISTRIBUTOR_MAX_POINT_AGE_DAYS);
  log.info({ timeseries: sink.description, files: config.FILE_STORAGE_PATH }, 'distributor writing');
  // Fenced (state-lease.ts): once another distributor took the slot, no append is acknowledged.
  const replay = new ReplayWindows(join(lease.dir, 'replay'), { fence: () => lease.assertHeld(), log: log.child({ subsystem: 'replay' }) });
  const verifier = new MessageVerifier(
    keys,
    replay,
    {
      requireSignatures: config.DISTRIBUTOR_REQUIRE_SIGNATURES,
      freshnessMs: config.DISTRIBUTOR_FRESHNESS_S * 1000,
      transitMs: config.DISTRIBUTOR_TRANSIT_MAX_S * 1000,
      maxDelayMs: config.DISTRIBUTOR_MAX_DELAY_S * 1000,
      instance: config.DISTRIBUTOR_CLIENT_ID,
    },
    log.child({ subsystem: 'security' }),
  );
  const files = new FileStore(config.FILE_STORAGE_PATH);
  // Retained presences of ids the DMZ invented, cleared on the internal broker (presence-clearer.ts),
  // on the consumers' connections. Only a subscription that keeps the RETAIN flag as published (MQTT
  // 5 §3.8.3.1) tells which presences are retained: with MQTT 3.1.1 none is cleared.
  const presences = config.MQTT_PROTOCOL_VERSION === 5 ? new PresenceClearer(clients, log.child({ subsystem: 'presences' }), { cleared: metrics.presencesCleared, skipped: metrics.presenceClearsSkipped }) : undefined;
  const gateways = new GatewayAdmission({ listed: config.DISTRIBUTOR_GATEWAYS, max: config.DISTRIBUTOR_MAX_GATEWAYS, file: join(lease.dir, 'gateways.txt') }, log.child({ subsystem: 'security' }));
  // Retained messages on the other topics, all the DMZ's (retained-sweeper.ts): cleared likewise.
  const retainedClears =
    config.MQTT_PROTOCOL_VERSION === 5
      ? new PresenceClearer(clients, log.child({ subsystem: 'retained' }), { cleared: metrics.retainedCleared, skipped: metrics.retainedClearsSkipped }, undefined, 'a retained message left by the DMZ')
      : undefined;
  // The event tag values devices choose, bounded (security/tag-admission.ts), remembered in the same slot.
  const securityLog = log.child({ subsystem: 'security' });
  const eventTags = openEventTagAdmissions(lease.dir, securityLog);
  const handler = new MessageHandler(sink, files, verifier, metrics, presences, gateways, retainedClears, eventTags);
  const deadLetters = new DeadLetters(config.DEAD_LETTER_PATH, lease.slot, { maxBytes: config.DEAD_LETTER_MAX_BYTES });
  metrics.bindDeadLetters(() => deadLetters.measuredBytes(), deadLetters.maxBytes);
  const tls = readMqttTls(config);
  const group = config.DISTRIBUTOR_SHARE_GROUP;
  // Without a shared subscription every connection would get every message: one is enough.
  const count = group === 'none' ? 1 : config.DISTRIBUTOR_CONSUMERS;
  const filters = [TOPIC_FILTERS.uplink, TOPIC_FILTERS.gatewayUplink, TOPIC_FILTERS.status, TOPIC_FILTERS.gatewayPresence, TOPIC_FILTERS.gatewaySecurity].map((f) => (group === 'none' ? f : sharedFilter(group, f)));

  const consumers: Consumer[] = [];
  // One bound on the lines of retried failures for every consumer: a store that stalls fails them all at once.
  const retries = retryLogs(log);
  const receipts = new ReceiptPublisher(clients, keys, log.child({ subsystem: 'receipts' }), metrics.receipts);
  const subscribed: Promise<void>[] = [];
  for (let i = 0; i < count; i++) {
    const clientId = count === 1 ? config.DISTRIBUTOR_CLIENT_ID : `${config.DISTRIBUTOR_CLIENT_ID}-${i + 1}`;
    const clog = log.child({ subsystem: 'mqtt', clientId });
    const mqtt = connectMqtt(
      { url: config.MQTT_URL, ...tls, clientId, protocolVersion: config.MQTT_PROTOCOL_VERSION, clean: false },
      clog,
      // Subscribed below on every connection: Mosquitto restores a persistent session after a
      // restart without its shared subscriptions and still answers "session present".
      { resubscribe: false },
    );
    clients.push(mqtt);
    consumers.push(new Consumer(mqtt, handler, deadLetters, { initialMs: TIMINGS.distributorRetryInitialMs, maxMs: config.DISTRIBUTOR_RETRY_MAX_MS }, receipts, log, metrics.deadLetters, metrics.deadLettersNotKept, retries));
    const subscription = subscribeOnEveryConnect(mqtt, filters, config.MQTT_PROTOCOL_VERSION === 5 ? { qos: 1, rap: true } : { qos: 1 }, clog).ready;
    // Or a message delivered before the SUBACK: the broker sends what the persistent session held
    // at once, and mqtt.js reads packets in order, each after the one before was handled, so with
    // the message's PUBACK waiting for its write (a database down at the start) the SUBACK behind
    // it waited too, and `ready` (the "subscribed" line, the health file) with it, until the
    // database came back. The session's subscription delivered it: this consumer takes messages.
    const delivered = new Promise<void>((resolve) => mqtt.once('message', () => resolve()));
    subscribed.push(Promise.race([subscription, delivered]));
  }
  const ready = Promise.all(subscribed).then(() => log.info({ filters, consumers: count }, 'subscribed'));
  // Sessions of consumers that no longer run still collect their share of the shared subscription:
  // taken over, emptied and removed in the background once ours are subscribed.
  const stopping = new AbortController();
  // Waited for by close(): so it must settle when the distributor stops before its consumers ever
  // subscribed (a broker down or not answering), or the stop waited for ever.
  const subscribedOrStopping = new Promise<boolean>((resolve, reject) => {
    ready.then(() => resolve(true), reject);
    stopping.signal.addEventListener('abort', () => resolve(false), { once: true });
  });
  const retiring = group !== 'none' && config.MQTT_PROTOCOL_VERSION === 5;
  const retireVia = {
    stateFile: join(lease.dir, 'consumer-sessions.json'),
    current: clients.map((c) => c.options.clientId as string),
    filters,
    connect: (clientId: string) =>
      // Quiet below warnings: most are probes of sessions that do not exist.
      connectMqtt({ url: config.MQTT_URL, ...tls, clientId, protocolVersion: 5, clean: false }, log.child({ subsystem: 'mqtt', clientId, retiring: true }, { level: 'warn' }), { resubscribe: false }),
    consume: (client: MqttClient) => new Consumer(client, handler, deadLetters, { initialMs: TIMINGS.distributorRetryInitialMs, maxMs: config.DISTRIBUTOR_RETRY_MAX_MS }, receipts, log, metrics.deadLetters, metrics.deadLettersNotKept, retries),
    signal: stopping.signal,
    log: log.child({ subsystem: 'sessions' }),
  };
  const retirement = retiring
    ? subscribedOrStopping.then((subscribed) =>
        !subscribed ? undefined : retireConsumerSessions({ ...retireVia, base: config.DISTRIBUTOR_CLIENT_ID, maxConsumers: LIMITS.distributorMaxConsumers, liveElsewhere: () => lease.othersLive() }),
      )
    : Promise.resolve(undefined);
  retirement.catch((err: unknown) => log.error({ code: isFieldStreamError(err) ? err.code : undefined, err }, 'retiring earlier consumer sessions failed; tried again at the next start'));
  // The sessions of a replica gone for good (its slot left free): taken over after the start's own
  // retirement, one look at a time (session-retirement.ts retireFreeSlots).
  const freeSlotsSeen = new Map<number, number>();
  let freeSlotLook: Promise<void> | undefined;
  const freeSlotTimer = retiring
    ? setInterval(() => {
        if (freeSlotLook || stopping.signal.aborted) return;
        // After the start's retirement, whatever became of it (its failure is logged above).
        freeSlotLook = retirement
          .catch(() => undefined)
          .then(() => retireFreeSlots({ ...retireVia, stateRoot: config.DISTRIBUTOR_STATE_DIR, lease, graceMs: opts.freeSlots?.graceMs ?? TIMINGS.freeSlotGraceMs, seen: freeSlotsSeen }))
          .then(
            () => undefined,
            (err: unknown) => log.error({ code: isFieldStreamError(err) ? err.code : undefined, err }, 'taking over the broker sessions of a replica gone failed; tried again at the next look'),
          )
          .finally(() => (freeSlotLook = undefined));
      }, opts.freeSlots?.checkMs ?? TIMINGS.freeSlotCheckMs)
    : undefined;
  freeSlotTimer?.unref();
  // What is retained on the internal broker, swept on a connection of its own (a clean session, so
  // no session is left behind), with MQTT 5 only: our clears come back to the consumers with their
  // RETAIN flag (Retain As Published), which tells them from an empty message.
  const sweepClient =
    config.MQTT_PROTOCOL_VERSION === 5
      ? connectMqtt({ url: config.MQTT_URL, ...tls, clientId: `${config.DISTRIBUTOR_CLIENT_ID}-sweep`, protocolVersion: 5, clean: true }, log.child({ subsystem: 'retained' }, { level: 'warn' }), { resubscribe: false })
      : undefined;
  const sweeper =
    sweepClient !== undefined
      ? new RetainedSweeper(sweepClient, (topic, payload) => handler.retainedMayStay(topic, payload), (topic) => handler.clearRetained(topic), log.child({ subsystem: 'retained' }), {
          firstMs: TIMINGS.retainedSweepFirstMs,
          intervalMs: TIMINGS.retainedSweepIntervalMs,
          idleMs: TIMINGS.retainedSweepIdleMs,
          maxMs: TIMINGS.retainedSweepMaxMs,
          maxTopics: LIMITS.presenceClearsPendingMax,
          ...opts.retainedSweep,
        })
      : undefined;
  sweeper?.start();
  metrics.bind({
    connected: () => clients.map((c) => c.connected),
    oldestStartedAt: () => {
      let oldest: number | undefined;
      for (const c of consumers) if (c.inProgressSince !== undefined && (oldest === undefined || c.inProgressSince < oldest)) oldest = c.inProgressSince;
      return oldest;
    },
  });
  // Ready: every consumer connected, the database took the last request (or none was made yet), and
  // file storage can be written (FileStore.ready); a database that is down fails the next write, and
  // the consumers' retries keep asking it.
  const metricsServer = served
    ? startMetricsServer({
        metrics: metrics.metrics,
        host: config.DISTRIBUTOR_METRICS_HOST,
        port: config.DISTRIBUTOR_METRICS_PORT,
        setting: 'DISTRIBUTOR_METRICS_PORT',
        hostNames: { setting: 'DISTRIBUTOR_METRICS_HOST_NAMES', names: config.DISTRIBUTOR_METRICS_HOST_NAMES },
        checks: [
          { name: 'broker', ready: () => clients.every((c) => c.connected) },
          { name: 'database', ready: () => !sink.lastWriteFailed },
          { name: 'files', ready: () => files.ready() },
        ],
        log,
      })
    : Promise.resolve(undefined);

  // Refusals of ids nobody registered are counted per second (security/refusal-tally.ts) and
  // written here, apart from the messages: a flood of forged ids costs a few points a second.
  const tallyLog = log.child({ subsystem: 'security' });
  // The periodic writes in flight: a second's counts go with the first tick after it ends, so at a
  // stop the last counts may be in one of them rather than left for the stop's own write.
  const tallyWrites = new Set<Promise<number>>();
  const flushTally = () => {
    const write = handler.flushSecurityTally();
    tallyWrites.add(write);
    return write
      .catch((err: unknown) => tallyLog.warn({ code: isFieldStreamError(err) ? err.code : undefined, err: (err as Error).message }, 'counts of security refusals not written yet; tried again'))
      .finally(() => tallyWrites.delete(write));
  };
  const tallyTimer = setInterval(() => void flushTally(), TIMINGS.securityTallyFlushMs);
  tallyTimer.unref();
  // At a stop the last counts get TIMINGS.closeGraceMs: a database that does not answer held the stop
  // for a request timeout (INFLUXDB_TIMEOUT_MS), twice behind a periodic write of counts in flight,
  // past the grace an orchestrator gives before SIGKILL. They are counts, not acknowledged messages:
  // lost with the process, and said so, also those a periodic write in flight holds (its own line
  // says they are tried again, which the stop ends).
  const flushLastTally = async () => {
    const last = await settleWithin(Promise.all([...tallyWrites, handler.flushSecurityTally(true)]), TIMINGS.closeGraceMs);
    if (last.outcome === 'fulfilled') return;
    if (last.outcome === 'late') tallyLog.warn({ graceMs: TIMINGS.closeGraceMs }, 'counts of security refusals not written: the database did not answer before the stop');
    else tallyLog.warn({ code: isFieldStreamError(last.error) ? last.error.code : undefined, err: (last.error as Error).message }, 'counts of security refusals not written: the last write before the stop failed');
  };

  // The store's connections get TIMINGS.closeGraceMs too: PostgreSQL's pool ends only once every
  // write in flight on it has, and one on a server that does not answer ends at the client timeout
  // (twice POSTGRES_TIMEOUT_MS, 20 s by default), past the grace an orchestrator gives before
  // SIGKILL. What those writes carry is unacknowledged: the broker delivers it again.
  const closeSink = async () => {
    const closing = sink.close();
    const closed = await settleWithin(closing, TIMINGS.closeGraceMs);
    if (closed.outcome === 'rejected') throw closed.error;
    if (closed.outcome === 'fulfilled') return;
    // Its failure later has nobody left to tell but the log.
    closing.catch((err: unknown) => log.warn({ err: (err as Error).message }, 'the database connections failed to close after the stop went on'));
    log.warn({ graceMs: TIMINGS.closeGraceMs, store: sink.description }, 'the database connections did not close before the stop: left to the exit (the writes in flight on them stay unacknowledged)');
  };

  // What killed distributors (this one before its restart, or another sharing the storage) left in
  // file storage: temporary files, up to a whole file's size each, and folders of chunks of files
  // already stored (file-store.ts, sweep). At start, and every TIMINGS.fileStorageSweepMs.
  const fileLog = log.child({ subsystem: 'files' });
  let sweeping: Promise<void> | undefined;
  const sweepFiles = () => {
    sweeping ??= files
      .sweep({ signal: stopping.signal })
      .then(
        ({ skipped, firstSkipped, ...swept }) => {
          if (swept.tempFiles > 0 || swept.doneFolders > 0) fileLog.info({ ...swept, path: config.FILE_STORAGE_PATH }, 'removed what stopped distributors left in file storage');
          if (skipped > 0) fileLog.warn({ skipped, first: firstSkipped, path: config.FILE_STORAGE_PATH }, 'the file storage sweep left what it could not list or remove; the rest was swept');
        },
        (err: unknown) => fileLog.warn({ err }, 'sweeping file storage failed; tried again at the next sweep'),
      )
      .finally(() => (sweeping = undefined));
  };
  sweepFiles();
  const sweepTimer = setInterval(sweepFiles, TIMINGS.fileStorageSweepMs);
  sweepTimer.unref();

  let healthTimer: NodeJS.Timeout | undefined;
  if (config.DISTRIBUTOR_HEALTH_FILE) {
    const file = config.DISTRIBUTOR_HEALTH_FILE;
    const touch = () => {
      if (clients.every((c) => c.connected)) writeFile(file, new Date().toISOString()).catch(() => undefined);
    };
    void ready.then(() => {
      touch();
      healthTimer = setInterval(touch, TIMINGS.healthFileIntervalMs);
      healthTimer.unref();
    });
  }
  let closing: Promise<void> | undefined;
  const distributor: Distributor = {
    clients,
    verifier,
    sink,
    consumers,
    receipts,
    feed,
    ready,
    retirement,
    metrics,
    metricsServer,
    stats() {
      const total = { messages: 0, points: 0, files: 0, deadLetters: 0, retries: 0 };
      for (const c of consumers) for (const k of Object.keys(total) as (keyof typeof total)[]) total[k] += c.stats[k];
      return total;
    },
    close() {
      closing ??= (async () => {
        clearInterval(healthTimer);
        clearInterval(sweepTimer);
        clearInterval(freeSlotTimer);
        stopping.abort();
        await sweeping;
        await retirement.catch(() => undefined);
        await freeSlotLook;
        await (await metricsServer.catch(() => undefined))?.close();
        for (const c of consumers) c.stop();
        feed?.close();
        await sweeper?.close();
        if (sweepClient) await endMqtt(sweepClient, true);
        presences?.close();
        retainedClears?.close();
        // Forced: an unfinished message must not be acknowledged on the way out.
        await Promise.all(clients.map((c) => endMqtt(c, true)));
        clearInterval(tallyTimer);
        await flushLastTally();
        await closeSink();
        await deadLetters.close().catch(() => undefined);
        replay.close();
        lease.release();
      })();
      return closing;
    },
  };
  return distributor;
}
