/**
 * Benchmark of the whole pipeline (npm run bench): the real local stack — Caddy, the DMZ and the
 * internal Mosquitto with the bridge, a gateway, the distributor with signatures required —
 * writing to a real InfluxDB 1.x, driven by simulated field clients (durable queue, signing) in this
 * process. Every component runs on this one machine.
 *
 * Scenarios (bench/scenarios/), each checked by counting: nothing lost, nothing twice:
 *   batched          readings/s end to end, readings batched by the client, each deleted on
 *                    the device only at its commit receipt (the database holds it)
 *   metrics          the batched load with every service's metrics on and scraped each second, and
 *                    with them off (nothing counted, nothing served), in the order on, off, off, on
 *                    (twice); the simulated devices keep theirs on in both;
 *                    the gateway and the distributor are restarted with their setting before each
 *   anomaly          the batched load with the console scoring every reading for anomalies, and
 *                    with its scoring off (CONSOLE_ANOMALY), in the order on, off, off, on (twice); the
 *                    console is restarted with its setting before each
 *   receipts off     the same, each deleted at the gateway's ack: what receipts cost (a reference).
 *                    The two run twice each, in the order on, off, off, on, so that a drift of the
 *                    machine's speed and the first run's warm-up weigh on both alike
 *   one per message  readings/s end to end, one reading per WebSocket message
 *   references       in the same run (bench/scenarios/references.ts): the database ceiling (the
 *                    same readings written straight into InfluxDB, 5,000 lines a request), the
 *                    broker ceiling for the envelopes a batched round produced, and a peer
 *                    (Mosquitto and Node-RED, bench/peer/node-red/, installed on first use)
 *   latency          device → database at half the batched throughput
 *   files            10 MB files, byte for byte
 *   connections      devices held by one gateway, and its resident memory per connection
 *   fleet            10,000 devices, each its own certificate, through Caddy (two DMZ servers: see
 *                    lib/fleet-stack.ts), each one signed seed-format reading per second for 60 s
 *                    after 10 s of warm-up:
 *                    lost, device → database latency, Caddy's and the gateways' memory
 * Writes bench/results/pipeline.json and .md.
 *   --quick                    a small load, for CI (the tests run it)
 *   --profile batched|single|fleet   that scenario alone, with CPU profiles: bench/results/profile.md
 *                              (the Node services, the simulated devices, and the Go servers: Caddy
 *                              and InfluxDB; the fleet on one DMZ server: about 9,000 --fleet-devices at most here)
 *   --set KEY=VALUE            a service setting for this run (repeatable); --set EDGE_HOP=unix runs
 *                              every Caddy → gateway hop through a Unix socket, as deployed with it
 *   (BENCH_KEEP=1 in the environment keeps the run's folder, with every service's log, and says where)
 *   --compare KEY=VALUE        instead: batched and one-per-message rounds with and without this
 *                              setting (repeatable: all of them at once), every Node service restarted
 *                              before each round (four rounds a side; with --quick, two):
 *                              bench/results/pipeline-compare.json, .md
 *   --connections-alone        the connections scenario alone (--connections N devices, 10,000 by
 *                              default), with the gateway's memory per connection by the kind of
 *                              mapping that holds it: bench/results/pipeline-connections.json, .md
 *   --fleet                    the fleet alone (--fleet-devices N, --fleet-seconds S measured after
 *                              10 s of warm-up): bench/results/pipeline-fleet.json, .md
 *   --fleet-per-frame N        the fleet's devices send their readings N at a time (1 to 60), every
 *                              N seconds, in one frame signed as one group (as the field client
 *                              does): the same readings in 1/N of the frames
 *   --fleet-acks none|all      whether the fleet's devices ask for no acks (none, the default: they
 *                              keep nothing they send) or read an ack per frame (all)
 *   --long                     instead: the batched load at 80 % of its maximum (measured first, or
 *                              --long-rate N) for --long-minutes (10): per 10 s window throughput and
 *                              p99, every service's memory: bench/results/pipeline-sustained.json, .md
 *   --long-devices apart|shared  the simulated devices as the services (shared, the default) or as
 *                              machines of their own (apart: the load devices at a lower CPU
 *                              priority, every device's queue in /dev/shm); see scenarios/sustained.ts
 *   --sink postgres            instead of the scenarios above: the batched load into InfluxDB and
 *                              into a real PostgreSQL (15, scripts/local-stack/databases.ts), the
 *                              distributor restarted to write to one of them before each round, in
 *                              the order I, P, P, I (twice): bench/results/pipeline-postgres.json, .md
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadFieldClientConfig } from '../field-client/src/config.ts';
import { startFieldClient } from '../field-client/src/start.ts';
import { InfluxV1, Postgres } from '../scripts/local-stack/databases.ts';
import { startLocalStack } from '../scripts/local-stack/stack.ts';
import { createLogger } from '../shared/logger.ts';
import { pkiPaths } from '../pki/layout.ts';
import { loadCa, setupPki } from '../pki/onboarding.ts';
import { issueDeviceCertificate } from '../pki/device-bundle.ts';
import type { BenchContext } from './lib/context.ts';
import { CpuMeter, withChildren } from './lib/proc-stats.ts';
import { writeProfileReport } from './lib/profile-report.ts';
import { benchCommand, runLine, thisMachine, writeReport } from './lib/report.ts';
import type { ThroughputResult } from './lib/results.ts';
import { SelfProfiler } from './lib/self-profile.ts';
import { GoProfiler, type GoProfiles } from './lib/go-profiler.ts';
import { sinkRounds, writeSinkReport } from './lib/sink-rounds.ts';
import { influxStore, PostgresStore } from './lib/stores.ts';
import { connectionMemoryTarget, evaluateTargets, fieldLoadTargets, fleetTargets, sustainedTargets } from './lib/targets.ts';
import { dmzServersFor, fleetMeter, runFleet } from './lib/fleet-stack.ts';
import { renderFleet, renderSustained, writeLoadReport } from './lib/load-reports.ts';
import { sustained } from './scenarios/sustained.ts';
import { parseBenchOptions, UsageError, type BenchOptions } from './lib/options.ts';
import { compareOrder, compareSetting, renderCompare, type CompareResult } from './lib/compare.ts';
import { heldOnDirectGateway, renderConnections, type ConnectionsResult } from './scenarios/connections.ts';
import { fleetAsThroughput } from './scenarios/fleet.ts';
import { throughput } from './scenarios/throughput.ts';
import { fullRun, type FullRunResult } from './modes/full-run.ts';

let options: BenchOptions;
try {
  options = parseBenchOptions(process.argv.slice(2));
} catch (err) {
  if (!(err instanceof UsageError)) throw err;
  process.stderr.write(`bench: ${err.message}\n`);
  process.exit(2);
}
const { values, settings, compared, edgeHop, longDevices, comparing, quick } = options;
const CLIENTS = options.clients;
const PER_CLIENT = options.perClient;
const ONE_PER_MESSAGE = options.onePerMessage;
const CONNECTIONS = options.connections;
const FLEET = options.fleet;
const FLEET_DEVICES = FLEET.devices;
/** the sustained load's share of the batched maximum */
const SUSTAINED_SHARE = 0.8;
const DATABASE = 'bench';
/** Every report's first line and its JSON name the machine and the command that reproduces it. */
const run = { machine: thisMachine(), command: benchCommand(process.argv.slice(2)) };
const repoRoot = join(import.meta.dirname, '..');
const resultsDir = join(import.meta.dirname, 'results');
const work = mkdtempSync(join(tmpdir(), 'fieldstream-bench-'));

const BATCHED = { name: 'batched', prefix: 'batch', readingsPerClient: PER_CLIENT, batchMax: 500 };
/**
 * A batched round run first and not counted: the first round after the stack starts ran 24–41 %
 * slower than the rounds after it (the runs of 2026-12-02, docs/performance.md "Measured warm"),
 * and a round of a few seconds measured that start as much as the pipeline. The peer gets a
 * warm-up round too (node-red-peer.ts; its first round is not slower); both are reported.
 */
const WARM_UP = { ...BATCHED, name: 'batched, the first round after start (warm-up, not counted)', prefix: 'warmup' };
const SINGLE = { name: 'one reading per message', prefix: 'single', readingsPerClient: ONE_PER_MESSAGE, batchMax: 1 };

async function main(): Promise<void> {
  if (values.profile !== undefined && !['batched', 'single', 'fleet'].includes(values.profile)) throw new Error('--profile takes "batched", "single" or "fleet"');
  if (values.profile === 'fleet' && dmzServersFor(FLEET_DEVICES) > 1) throw new Error(`--profile fleet runs one DMZ server, and the file limit here does not let one hold ${FLEET_DEVICES} devices: give fewer --fleet-devices`);
  const certs = join(work, 'certs');
  setupPki(certs, { domain: 'localhost' });
  const p = pkiPaths(certs);

  // The sustained load reads the database's own time per write from its access log.
  const influx = await InfluxV1.start(join(work, 'influxdb'), DATABASE, { accessLog: values.long });
  // --sink postgres: a PostgreSQL with a password-authenticated role owning its database, as deployed.
  const postgres = values.sink === 'postgres' ? await Postgres.start(join(work, 'postgres')) : undefined;
  const pgPassword = randomBytes(12).toString('hex');
  if (postgres) await postgres.createUser(DATABASE, pgPassword);
  const profiles = join(work, 'profiles');
  const stack = await startLocalStack({
    repoRoot,
    certsDir: certs,
    workDir: join(work, 'stack'),
    commandApiToken: randomBytes(24).toString('hex'),
    directGateway: true,
    edgeHop,
    // The fleet's devices come through Caddy, two file descriptors each: as many DMZ servers as that takes.
    dmzServers: values.long || values.profile || comparing || values['connections-alone'] || values.sink !== 'influxdb' ? 1 : dmzServersFor(FLEET_DEVICES),
    nodeArgs: values.profile ? ['--cpu-prof', `--cpu-prof-dir=${profiles}`] : [],
    // --profile: Caddy's CPU profiles come from its admin API (InfluxDB serves its own on its HTTP port).
    caddyAdmin: values.profile !== undefined,
    env: {
      LOG_LEVEL: 'info', // the services' default: what runs in production is what is measured
      INFLUXDB_URL: influx.url,
      INFLUXDB_DATABASE: DATABASE,
      INFLUXDB_USERNAME: influx.user,
      INFLUXDB_PASSWORD: influx.password,
      DISTRIBUTOR_REQUIRE_SIGNATURES: 'true',
      // The benchmark measures the pipeline, not the per-device rate limits.
      GATEWAY_RATE_MESSAGES_PER_S: '1000000',
      GATEWAY_RATE_BYTES_PER_S: String(1024 ** 3),
      GATEWAY_RATE_CPU_MS_PER_S: '1000000',
      ...settings,
    },
  });
  /** The stack, then its database (the services write their profiles as they exit). */
  const shutdown = async () => {
    await stack.close();
    await influx.process.stop();
  };
  const clientLog = createLogger('bench', 'warn');
  /**
   * A simulated device's settings, onboarding it (certificate and signing key) the first time it is
   * named: an RSA-2048 key takes about 0.3 s here, so each mode issues only the devices it runs, and
   * before its round's clock starts.
   */
  const fieldClientSettings = (id: string, batchMax: number) => {
    if (!existsSync(p.device(id).cert)) issueDeviceCertificate(certs, id);
    return deviceSettings(id, batchMax);
  };
  const deviceSettings = (id: string, batchMax: number) => ({
    DEVICE_ID: id,
    GATEWAY_URL: stack.urls.wss,
    FIELD_CA_FILE: p.publicCa,
    FIELD_CERT_FILE: p.device(id).cert,
    FIELD_KEY_FILE: p.device(id).key,
    FIELD_SIGNING_KEY_FILE: p.device(id).signingKey,
    FIELD_DATA_DIR: join(work, 'field', id),
    FIELD_HTTP_PORT: 'off',
    FIELD_MQTT_PORT: 'off',
    // Metrics on, as deployed, on a free port: several clients run at once. They stay on in
    // the metrics scenario's off rounds too: that scenario weighs the services' metrics, and a
    // device's own are the device's business, not the pipeline's.
    FIELD_METRICS_PORT: '0',
    FIELD_BATCH_MAX: String(batchMax),
    LOG_LEVEL: 'warn',
  });
  const scalar = async (query: string) => {
    const body = await influx.query(query, DATABASE);
    return Number(body.results?.[0]?.series?.[0]?.values[0]?.[1] ?? 0);
  };
  const ctx: BenchContext = {
    work,
    certs,
    repoRoot,
    clients: CLIENTS,
    quick,
    stack,
    influx,
    database: DATABASE,
    fieldClientSettings,
    fieldClient: (id, batchMax, receipts = true) =>
      // Process metrics once per process, as npm start does: these clients share the benchmark's.
      startFieldClient(loadFieldClientConfig(fieldClientSettings(id, batchMax)), clientLog, { receipts, processMetrics: false }),
    scalar,
    influxStore: influxStore(influx, DATABASE, scalar),
  };
  const meter = new CpuMeter(() => ({
    Caddy: stack.caddy.pid,
    gateway: stack.gateways[0]?.pid,
    'DMZ Mosquitto': stack.dmzMosquitto.pid,
    'internal Mosquitto (bridge)': stack.internalMosquitto.pid,
    distributor: stack.distributor.pid,
    console: stack.console.pid,
    InfluxDB: influx.process.pid,
    ...(postgres?.process.pid !== undefined ? { PostgreSQL: withChildren(postgres.process.pid) } : {}),
  }));

  if (postgres) {
    const store = new PostgresStore({ host: postgres.dir, port: postgres.port, user: postgres.superuser, database: DATABASE }, 'fieldstream');
    let results: Awaited<ReturnType<typeof sinkRounds>>;
    try {
      results = await sinkRounds(ctx, meter, stack, BATCHED, {
        influxUrl: influx.url,
        postgresUrl: `postgres://${DATABASE}:${pgPassword}@${postgres.host}:${postgres.port}/${DATABASE}`,
        stores: { influxdb: ctx.influxStore, postgres: store },
      });
    } finally {
      await store.close();
      await shutdown();
      await postgres.stop();
    }
    const [ref, pg] = results;
    const md = writeSinkReport(resultsDir, {
      when: new Date().toISOString(),
      ...run,
      quick,
      settings,
      sink: 'postgres',
      results,
      postgresVsInfluxdb: ref && pg ? Math.round((pg.readingsPerSecond / ref.readingsPerSecond) * 100) / 100 : 0,
    });
    process.stdout.write(md + '\n');
    return;
  }

  if (values.profile) {
    let measured: ThroughputResult;
    const self = new SelfProfiler();
    const profileMeter = values.profile === 'fleet' ? fleetMeter(stack, influx) : meter;
    const pids = { gateway: stack.gateways[0]?.pid, distributor: stack.distributor.pid, console: stack.console.pid, 'field clients': process.pid };
    // The Go servers, profiled over HTTP while the scenario runs (go-profiler.ts).
    const caddyAdmin = stack.dmzServers[0]?.urls.caddyAdmin;
    if (!caddyAdmin) throw new Error('--profile: the stack was started without Caddy\'s admin API');
    const goProfilers = { Caddy: new GoProfiler(caddyAdmin), InfluxDB: new GoProfiler(influx.url) };
    const goProfiles: Record<string, GoProfiles> = {};
    try {
      await self.start();
      for (const g of Object.values(goProfilers)) g.start();
      measured =
        values.profile === 'fleet'
          ? fleetAsThroughput(await runFleet(stack, influx, { certsDir: certs, database: DATABASE, ...FLEET }, profileMeter))
          : await throughput(ctx, profileMeter, values.profile === 'batched' ? BATCHED : SINGLE);
      for (const [name, g] of Object.entries(goProfilers)) goProfiles[name] = await g.stop();
      mkdirSync(profiles, { recursive: true });
      await self.stop(join(profiles, `bench.${process.pid}.cpuprofile`));
    } finally {
      for (const g of Object.values(goProfilers)) await g.stop().catch(() => undefined); // a failure here is the first stop()'s to report
      await shutdown(); // the services write their profiles as they exit
    }
    process.stdout.write(writeProfileReport(profiles, resultsDir, repoRoot, pids, measured, profileMeter.window, goProfiles) + '\n');
    return;
  }

  if (comparing) {
    let c: CompareResult;
    try {
      c = await compareSetting(ctx, meter, stack, compared, [BATCHED, SINGLE], compareOrder(quick));
    } finally {
      await shutdown();
    }
    const when = new Date().toISOString();
    const lines = [runLine({ when, ...run }), '', ...renderCompare(c)];
    process.stdout.write(writeLoadReport(resultsDir, 'pipeline-compare', { when, ...run, quick, settings, compare: c }, lines) + '\n');
    return;
  }

  if (values['connections-alone']) {
    let c: ConnectionsResult;
    try {
      c = await heldOnDirectGateway(stack, loadCa(certs), CONNECTIONS);
    } finally {
      await shutdown();
    }
    const when = new Date().toISOString();
    process.stdout.write(writeLoadReport(resultsDir, 'pipeline-connections', { when, ...run, quick, settings, connections: c }, [runLine({ when, ...run }), '', ...renderConnections(c)], [connectionMemoryTarget(c)]) + '\n');
    return;
  }

  if (values.fleet || values.long) {
    try {
      if (values.fleet) {
        const f = await runFleet(stack, influx, { certsDir: certs, database: DATABASE, ...FLEET });
        const when = new Date().toISOString();
        process.stdout.write(writeLoadReport(resultsDir, 'pipeline-fleet', { when, ...run, quick, settings, fleet: f }, [runLine({ when, ...run }), '', ...renderFleet(f)], fleetTargets(f)) + '\n');
      } else {
        const measureMaximum = async () => {
          await throughput(ctx, meter, WARM_UP);
          return (await throughput(ctx, meter, BATCHED)).readingsPerSecond;
        };
        const maximum = values['long-rate'] !== undefined ? Number(values['long-rate']) : await measureMaximum();
        const services = () => ({ ...Object.fromEntries(stack.all.map((proc) => [proc.name, proc.pid])), InfluxDB: influx.process.pid });
        const m = stack.metrics;
        const metricsOf = () => ({ 'gateway-1': m.gateways[0], distributor: m.distributor, 'command-api': m.commandApi, 'broker-exporter': m.brokerExporter, console: m.console });
        const s = await sustained(ctx, { readingsPerSecond: Math.round(maximum * SUSTAINED_SHARE), maximumPerSecond: maximum, minutes: Number(values['long-minutes']), services, metricsOf, devices: longDevices });
        const when = new Date().toISOString();
        process.stdout.write(writeLoadReport(resultsDir, 'pipeline-sustained', { when, ...run, settings, sustained: s }, [runLine({ when, ...run }), '', ...renderSustained(s)], sustainedTargets(s)) + '\n');
      }
    } finally {
      await shutdown();
    }
    return;
  }

  let full: FullRunResult;
  try {
    full = await fullRun(ctx, meter, { batched: BATCHED, warmUp: WARM_UP, single: SINGLE, options });
  } finally {
    await shutdown();
  }
  const measured = {
    when: new Date().toISOString(),
    ...run,
    quick,
    settings,
    ...full,
  };
  const md = writeReport(resultsDir, { ...measured, targets: [...evaluateTargets(measured), ...fieldLoadTargets(measured)] });
  process.stdout.write(md + '\n');
}

// Ctrl-C or a kill: exit, so that the local stack's exit handler (scripts/local-stack/process.ts)
// kills the stack's processes. Each runs in a process group of its own, which the terminal's signal
// does not reach, and a process that dies of a signal runs no exit handler: they were left running.
for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
  process.once(signal, () => {
    process.stderr.write(`bench: ${signal}, stopped (kept ${work})\n`);
    process.exit(code);
  });
}

main()
  .then(() => (process.env.BENCH_KEEP ? process.stderr.write(`kept ${work}\n`) : rmSync(work, { recursive: true, force: true })))
  .catch((err: Error) => {
    process.stderr.write(`bench failed: ${err.message}\n(kept ${work})\n`);
    process.exit(1);
  });
