import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { freePort } from '../../scripts/local-stack/ports.ts';
import { ManagedProcess } from '../../scripts/local-stack/process.ts';
import { connectClients, publishWindowed, startPlainBroker } from '../lib/brokers.ts';
import type { BenchContext } from '../lib/context.ts';
import { sleep } from '../lib/context.ts';
import { CpuMeter, type CpuShare } from '../lib/proc-stats.ts';
import type { ThroughputResult } from '../lib/results.ts';

export const NODE_RED_PEER = 'peer: Mosquitto and Node-RED 4, one reading per MQTT message';

/** The peer's own folder: package.json and its lock (pinned versions), flows.json, settings.js. */
const PEER_DIR = join(import.meta.dirname, '..', 'peer', 'node-red');

/**
 * Installs the peer's packages (Node-RED, node-red-contrib-influxdb) from its lock file when they
 * are missing. They are the benchmark's only, and heavy: they stay out of the project's
 * package.json and are fetched on the first run.
 */
function ensureInstalled(): void {
  if (existsSync(join(PEER_DIR, 'node_modules', 'node-red', 'red.js')) && existsSync(join(PEER_DIR, 'node_modules', 'node-red-contrib-influxdb'))) return;
  process.stderr.write('bench: installing the Node-RED peer once (npm ci --prefix bench/peer/node-red; about 120 MB, git-ignored)\n');
  try {
    execFileSync('npm', ['ci', '--prefix', PEER_DIR, '--no-audit', '--no-fund'], { stdio: ['ignore', 'ignore', 'inherit'] });
  } catch (err) {
    throw new Error(`the Node-RED peer could not be installed (npm ci --prefix bench/peer/node-red): ${(err as Error).message}`);
  }
}

/**
 * What a user would wire up instead of the pipeline: devices publishing one reading per MQTT
 * message (the seed's form, `{"deviceId", "dataType", "payload"}`) at QoS 1 into a Mosquitto, and
 * Node-RED (bench/peer/node-red/flows.json: `mqtt in` at QoS 1, a `join` of 5,000 readings or
 * 100 ms, a function shaping the points, node-red-contrib-influxdb's batch output) writing them
 * into the same InfluxDB as the pipeline, as the same points. As many publishers as the pipeline
 * scenarios have devices; the clock stops when InfluxDB holds every reading, counted exactly.
 * The broker is plain MQTT on loopback, as such setups typically run.
 */
export async function nodeRedPeer(ctx: BenchContext, o: { prefix: string; readingsPerClient: number }): Promise<ThroughputResult & { peerCpu: CpuShare[]; warmUpPerSecond: number }> {
  ensureInstalled();
  const broker = await startPlainBroker(ctx, 'peer-mosquitto');
  const userDir = join(ctx.work, 'node-red');
  mkdirSync(userDir, { recursive: true });
  // Node-RED runs on copies: it rewrites its flow file and keeps backups beside it.
  for (const f of ['flows.json', 'flows_cred.json']) copyFileSync(join(PEER_DIR, f), join(userDir, f));
  const influx = new URL(ctx.influx.url);
  const nodeRed = new ManagedProcess({
    name: 'node-red',
    command: process.execPath,
    args: [join(PEER_DIR, 'node_modules', 'node-red', 'red.js'), '--settings', join(PEER_DIR, 'settings.js')],
    env: {
      PATH: process.env.PATH,
      HOME: userDir,
      NODE_RED_USER_DIR: userDir,
      NODE_RED_PORT: String(await freePort()),
      MQTT_HOST: new URL(broker.url).hostname,
      MQTT_PORT: new URL(broker.url).port,
      INFLUXDB_HOST: influx.hostname,
      INFLUXDB_PORT: influx.port,
      INFLUXDB_DATABASE: ctx.database,
      INFLUXDB_USERNAME: ctx.influx.user,
      INFLUXDB_PASSWORD: ctx.influx.password,
    },
    cwd: userDir,
    logFile: join(userDir, 'node-red.log'),
    ready: { logLine: /Connected to broker/ },
  });
  const meter = new CpuMeter(() => ({ 'Node-RED': nodeRed.pid, 'Mosquitto (peer)': broker.process.pid, InfluxDB: ctx.influx.process.pid }));
  try {
    await nodeRed.start(60_000);
    const pubs = await connectClients(broker, ctx.clients, `${o.prefix}-pub`, { protocolVersion: 4 });
    const reading = (device: string, v: number, timestamp: number): [string, string] => [`devices/${device}/readings`, JSON.stringify({ deviceId: device, dataType: 'timeseries', payload: { v, timestamp } })];
    // Node-RED subscribes once connected: a probe reading, sent until it is stored, says the whole
    // flow (subscription, join, database login) works before the clock starts.
    const probe = `${o.prefix}probe-0`;
    for (let k = 0; (await ctx.influxStore.count(`${o.prefix}probe`)) === 0; k++) {
      if (k > 100) throw new Error(`the Node-RED peer stored no probe reading:\n${nodeRed.tail(20)}`);
      await pubs[0]?.publishAsync(...reading(probe, k, Date.parse('2026-01-01T00:00:00Z') + k), { qos: 1 });
      await sleep(200);
    }

    const total = ctx.clients * o.readingsPerClient;
    const base = Date.parse('2026-01-01T00:00:00Z');
    /** Publishes o.readingsPerClient readings from each publisher as devices PREFIX-i; resolves once all are stored. */
    const peerRound = async (prefix: string): Promise<{ seconds: number }> => {
      const mark = await ctx.influxStore.mark();
      const started = Date.now();
      await Promise.all(pubs.map((c, i) => publishWindowed(c, o.readingsPerClient, (k) => reading(`${prefix}-${i}`, k, base + i * 10_000_000 + k))));
      const deadline = Date.now() + (ctx.quick ? 120_000 : 600_000);
      while (!(await ctx.influxStore.arrived(mark, total, []))) {
        if (Date.now() > deadline || !nodeRed.running) throw new Error(`the Node-RED peer did not store all ${total} readings:\n${nodeRed.tail(20)}`);
        await sleep(10);
      }
      for (let n = await ctx.influxStore.count(prefix); n < total; n = await ctx.influxStore.count(prefix)) {
        if (Date.now() > deadline) throw new Error(`the Node-RED peer stored ${n} of ${total} readings`);
        await sleep(20);
      }
      return { seconds: (Date.now() - started) / 1000 };
    };
    // One round of the same readings first, from devices of their own, not counted: Node-RED starts
    // as cold as our services do (WARM_UP in bench/pipeline.ts), and each is measured warm.
    const warmUp = await peerRound(`${o.prefix}w`);
    meter.begin();
    const { seconds } = await peerRound(o.prefix);
    const cpu = meter.end();
    const n = await ctx.influxStore.count(o.prefix);
    for (const c of pubs) await c.endAsync();
    if (n !== total) throw new Error(`the Node-RED peer stored ${n} readings for ${total} sent`);
    const sum = await ctx.influxStore.sum(o.prefix);
    if (sum !== ctx.clients * ((o.readingsPerClient * (o.readingsPerClient - 1)) / 2)) throw new Error('the Node-RED peer: the stored values do not add up to those sent');
    return { scenario: NODE_RED_PEER, clients: ctx.clients, readings: total, seconds, readingsPerSecond: Math.round(total / seconds), lost: 0, duplicated: 0, peerCpu: cpu, warmUpPerSecond: Math.round(total / warmUp.seconds) };
  } finally {
    await nodeRed.stop();
    await broker.process.stop();
  }
}
