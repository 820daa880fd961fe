/**
 * Benchmark of the whole pipeline (npm run bench): the real local stack — Caddy, the DMZ and the
 * internal Mosquitto with the bridge, a gateway, the distributor with signatures required —
 * writing to a real InfluxDB 1.x, driven by simulated field clients (durable queue, signing) in this
 * process. Every component runs on this one machine.
 *
 * Scenarios (each checked by counting: nothing lost, nothing twice):
 *   batched         readings/s end to end, readings batched by the client
 *   one-per-message readings/s end to end, one reading per WebSocket message
 *   raw ceiling     the same number of readings published at QoS 1 straight into one Mosquitto
 *                   by as many MQTT clients, counted by a subscriber
 * Writes bench/results/pipeline.json and .md. `--quick`: a small load, for CI.
 */
import { randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { execFileSync } from 'node:child_process';
import { userInfo } from 'node:os';
import { connectAsync } from 'mqtt';
import { createLogger } from '../shared/logger.ts';
import { pkiPaths } from '../shared/pki/layout.ts';
import { issueDeviceCertificate, loadCa, setupPki } from '../shared/pki/onboarding.ts';
import { uplinkTopic, TOPIC_FILTERS } from '../shared/contract/topics.ts';
import { startLocalStack } from '../scripts/local-stack/stack.ts';
import { ManagedProcess } from '../scripts/local-stack/process.ts';
import { freePort } from '../scripts/local-stack/ports.ts';
import { InfluxV1 } from '../scripts/local-stack/databases.ts';
import { loadFieldClientConfig } from '../field-client/src/config.ts';
import { startFieldClient } from '../field-client/src/start.ts';
import { CpuMeter, type CpuShare } from './lib/proc-stats.ts';
import { summariseProfile } from './lib/profile-summary.ts';
import { SelfProfiler } from './lib/self-profile.ts';
import { heldConnections, type ConnectionsResult } from './scenarios/connections.ts';

const { values } = parseArgs({
  options: { quick: { type: 'boolean', default: false }, clients: { type: 'string' }, readings: { type: 'string' }, profile: { type: 'string' }, connections: { type: 'string' } },
});
const quick = values.quick;
const CLIENTS = Number(values.clients ?? (quick ? 2 : 8));
const PER_CLIENT = Number(values.readings ?? (quick ? 2_000 : 50_000));
const ONE_PER_MESSAGE = quick ? 1_000 : 10_000; // readings per client in the one-per-message scenario
const CONNECTIONS = Number(values.connections ?? (quick ? 200 : 10_000));
const DB = 'bench';
const repoRoot = join(import.meta.dirname, '..');
const log = createLogger('bench', 'warn');
const work = mkdtempSync(join(tmpdir(), 'fieldstream-bench-'));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const certs = join(work, 'certs');
  setupPki(certs, { domain: 'localhost' });
  const ids = [
    ...Array.from({ length: CLIENTS }, (_, i) => `batch-${i}`),
    ...Array.from({ length: CLIENTS }, (_, i) => `single-${i}`),
    ...Array.from({ length: CLIENTS }, (_, i) => `paced-${i}`),
    'probe-0',
    'files-0',
  ];
  for (const id of ids) issueDeviceCertificate(certs, id);
  const p = pkiPaths(certs);

  const influx = await InfluxV1.start(join(work, 'influxdb'), DB);
  const profiles = join(work, 'profiles');
  const stack = await startLocalStack({
    nodeArgs: values.profile ? ['--cpu-prof', `--cpu-prof-dir=${profiles}`] : [],
    directGateway: true,
    repoRoot,
    certsDir: certs,
    workDir: join(work, 'stack'),
    commandApiToken: randomBytes(24).toString('hex'),
    env: {
      LOG_LEVEL: 'info', // the services' default: what runs in production is what is measured
      INFLUXDB_URL: influx.url,
      INFLUXDB_DATABASE: DB,
      INFLUXDB_USERNAME: influx.user,
      INFLUXDB_PASSWORD: influx.password,
      DISTRIBUTOR_REQUIRE_SIGNATURES: 'true',
      GATEWAY_RATE_MESSAGES_PER_S: '1000000',
      GATEWAY_RATE_BYTES_PER_S: String(1024 ** 3),
    },
  });
  const results: Record<string, unknown>[] = [];
  let connections: ConnectionsResult | undefined;
  const meter = new CpuMeter(() => ({
    'Caddy': stack.caddy.pid,
    'gateway': stack.gateways[0]?.pid,
    'DMZ Mosquitto': stack.dmzMosquitto.pid,
    'internal Mosquitto (bridge)': stack.internalMosquitto.pid,
    'distributor': stack.distributor.pid,
    'InfluxDB': influx.process.pid,
  }));
  const pids = { gateway: stack.gateways[0]?.pid, distributor: stack.distributor.pid, 'field clients': process.pid };
  try {
    const count = async (prefix: string) => {
      const body = await influx.query(`SELECT count(v) FROM readings WHERE device =~ /^${prefix}-/`, DB);
      return Number(body.results?.[0]?.series?.[0]?.values[0]?.[1] ?? 0);
    };
    const waitFor = async (prefix: string, total: number, timeoutMs: number) => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const n = await count(prefix);
        if (n >= total) return n;
        if (Date.now() > deadline) throw new Error(`${prefix}: ${n} of ${total} readings arrived`);
        await sleep(100);
      }
    };

    const client = (id: string, batchMax: number) =>
      startFieldClient(
        loadFieldClientConfig({
          DEVICE_ID: id,
          GATEWAY_URL: stack.urls.wss,
          FIELD_CA_FILE: p.publicCa,
          FIELD_CERT_FILE: p.device(id).cert,
          FIELD_KEY_FILE: p.device(id).key,
          FIELD_SIGNING_KEY_FILE: p.device(id).signingKey,
          FIELD_DATA_DIR: join(work, 'field', id),
          FIELD_HTTP_PORT: 'off',
          FIELD_MQTT_PORT: 'off',
          FIELD_BATCH_MAX: String(batchMax),
          LOG_LEVEL: 'warn',
        }),
        log,
      );
    const scenario = async (name: string, prefix: string, perClient: number, batchMax: number) => {
      const clients = await Promise.all(Array.from({ length: CLIENTS }, (_, i) => client(`${prefix}-${i}`, batchMax)));
      await sleep(500); // connected, welcomed
      const total = CLIENTS * perClient;
      const base = Date.parse('2026-01-01T00:00:00Z');
      meter.begin();
      const started = Date.now();
      await Promise.all(
        clients.map(async (c, i) => {
          for (let k = 0; k < perClient; k += 1000) {
            const n = Math.min(1000, perClient - k);
            await c.client.submitMany(Array.from({ length: n }, (_, j) => ({ dataType: 'timeseries' as const, payload: { v: k + j, timestamp: base + i * 10_000_000 + k + j } })));
          }
        }),
      );
      const accepted = Date.now();
      const n = await waitFor(prefix, total, quick ? 120_000 : 600_000);
      const seconds = (Date.now() - started) / 1000;
      const cpu = meter.end();
      for (const c of clients) await c.close();
      if (n !== total) throw new Error(`${name}: ${n} readings stored for ${total} sent`);
      results.push({ scenario: name, clients: CLIENTS, readings: total, seconds, readingsPerSecond: Math.round(total / seconds), acceptedInSeconds: (accepted - started) / 1000, lost: 0, duplicated: 0, cpu });
    };

    if (values.profile) {
      // --profile batched|single: that scenario alone, with CPU profiles of the services and of the
      // simulated clients, summarised in bench/results/profile.md.
      if (values.profile !== 'batched' && values.profile !== 'single') throw new Error('--profile takes "batched" or "single"');
      const self = new SelfProfiler();
      await self.start();
      if (values.profile === 'batched') await scenario('batched', 'batch', PER_CLIENT, 500);
      else await scenario('one reading per message', 'single', ONE_PER_MESSAGE, 1);
      mkdirSync(profiles, { recursive: true });
      await self.stop(join(profiles, `bench.${process.pid}.cpuprofile`));
      return;
    }
    await scenario('batched', 'batch', PER_CLIENT, 500);
    await scenario('one reading per message', 'single', ONE_PER_MESSAGE, 1);
    results.push(await rawCeiling(certs, CLIENTS * PER_CLIENT));

    // Latency at half the sustained batched throughput: the load is paced, and a probe device sends
    // one reading every 50 ms whose arrival in the database is watched (polled every 10 ms).
    const sustained = (results[0] as { readingsPerSecond: number }).readingsPerSecond;
    const half = Math.max(100, Math.round(sustained / 2));
    const seconds = quick ? 4 : 20;
    const paced = await Promise.all(Array.from({ length: CLIENTS }, (_, i) => client(`paced-${i}`, 500)));
    const probe = await client('probe-0', 500);
    await sleep(500);
    const tickMs = 100;
    const perTick = Math.max(1, Math.round(((half / 1000) * tickMs) / CLIENTS));
    const sentAt = new Map<number, number>();
    const seenAt = new Map<number, number>();
    let stop = false;
    const load = (async () => {
      let k = 0;
      while (!stop) {
        const t = Date.now();
        await Promise.all(paced.map((c, i) => c.client.submitMany(Array.from({ length: perTick }, (_, j) => ({ dataType: 'timeseries' as const, payload: { v: k + j, timestamp: 1780000000000 + i * 10_000_000 + k + j } })))));
        k += perTick;
        await sleep(Math.max(0, tickMs - (Date.now() - t)));
      }
    })();
    const probes = (async () => {
      for (let n = 0; !stop; n++) {
        const now = Date.now();
        sentAt.set(now, now);
        await probe.client.submit('timeseries', { probe: n, timestamp: now });
        await sleep(50);
      }
    })();
    const poll = (async () => {
      let stoppedAt: number | undefined;
      while (!stop || seenAt.size < sentAt.size) {
        // From the oldest probe not seen yet: the distributor's consumers write in parallel, so a
        // probe may land after a later one (querying only past the latest seen would miss it).
        let oldest = Infinity;
        for (const t of sentAt.keys()) if (!seenAt.has(t) && t < oldest) oldest = t;
        if (oldest !== Infinity) {
          const rows = await influx.rows(DB, `SELECT probe FROM readings WHERE device = 'probe-0' AND time >= ${oldest}ms`);
          const at = Date.now();
          for (const r of rows) if (!seenAt.has(r.time as number)) seenAt.set(r.time as number, at);
        }
        if (stop) stoppedAt ??= Date.now();
        if (stoppedAt !== undefined && Date.now() - stoppedAt > 30_000) break;
        await sleep(10);
      }
    })();
    await sleep(seconds * 1000);
    stop = true;
    await Promise.all([load, probes]);
    await poll;
    for (const c of [...paced, probe]) await c.close();
    const lat = [...sentAt.keys()].filter((t) => seenAt.has(t)).map((t) => (seenAt.get(t) as number) - t).sort((a, b) => a - b);
    if (lat.length !== sentAt.size) throw new Error(`latency: ${sentAt.size - lat.length} probes never arrived`);
    const q = (f: number) => lat[Math.min(lat.length - 1, Math.floor(f * lat.length))] as number;
    results.push({ scenario: `latency at half load (${half.toLocaleString('en')} readings/s)`, clients: CLIENTS + 1, readings: lat.length, p50Ms: q(0.5), p95Ms: q(0.95), p99Ms: q(0.99), maxMs: lat[lat.length - 1], lost: 0, duplicated: 0 });

    // Files of 10 MB, in chunks, checked byte for byte.
    const fileCount = quick ? 2 : 5;
    const files = await client('files-0', 500);
    const src = Array.from({ length: fileCount }, (_, i) => {
      const path = join(work, `file-${i}.bin`);
      writeFileSync(path, randomBytes(10 * 1024 * 1024));
      return path;
    });
    await sleep(300);
    const t0 = Date.now();
    for (const f of src) await files.client.submitFile(f, { contentType: 'application/octet-stream' });
    const stored = join(stack.dataDir.files, 'files-0');
    const deadline = Date.now() + 300_000;
    while (Date.now() < deadline) {
      let done = 0;
      try {
        done = readdirSync(stored).filter((n) => n.startsWith('file-')).length;
      } catch {
        /* not yet */
      }
      if (done === fileCount) break;
      await sleep(50);
    }
    const fileSeconds = (Date.now() - t0) / 1000;
    await files.close();
    for (const [i, f] of src.entries()) {
      if (!readFileSync(f).equals(readFileSync(join(stored, `file-${i}.bin`)))) throw new Error(`file ${i} differs`);
    }
    results.push({ scenario: `files of 10 MB`, clients: 1, readings: fileCount, seconds: fileSeconds, mbPerSecond: Math.round(((fileCount * 10) / fileSeconds) * 10) / 10, lost: 0, duplicated: 0 });

    const direct = stack.directGateway;
    if (!direct?.process.pid) throw new Error('the direct gateway is not running');
    connections = await heldConnections({ url: direct.url, gatewayPid: direct.process.pid, ca: loadCa(certs), count: CONNECTIONS, concurrency: 32 });
  } finally {
    await stack.close();
    await influx.process.stop();
    if (values.profile) writeProfileReport(profiles, pids, results[0]);
  }

  const batched = results[0] as { readingsPerSecond: number };
  const raw = results[2] as { readingsPerSecond: number };
  const report = {
    when: new Date().toISOString(),
    machine: { cpus: cpus().length, cpu: cpus()[0]?.model, memoryGiB: Math.round(totalmem() / 1024 ** 3), node: process.version },
    quick,
    results,
    connections,
    batchedVsRawCeiling: Math.round((batched.readingsPerSecond / raw.readingsPerSecond) * 100) / 100,
  };
  type Row = { scenario: string; clients: number; readings: number; seconds?: number; readingsPerSecond?: number; lost: number; duplicated: number; p50Ms?: number; p95Ms?: number; p99Ms?: number; maxMs?: number; mbPerSecond?: number };
  const rows = results as Row[];
  const md = [
    '| scenario | clients | readings | seconds | readings/s | lost | duplicated |',
    '|---|---|---|---|---|---|---|',
    ...rows
      .filter((x) => x.readingsPerSecond !== undefined)
      .map((x) => `| ${x.scenario} | ${x.clients} | ${x.readings.toLocaleString('en')} | ${(x.seconds ?? 0).toFixed(1)} | ${(x.readingsPerSecond ?? 0).toLocaleString('en')} | ${x.lost} | ${x.duplicated} |`),
    '',
    '| device → database latency | probes | p50 | p95 | p99 | max |',
    '|---|---|---|---|---|---|',
    ...rows.filter((x) => x.p50Ms !== undefined).map((x) => `| ${x.scenario} | ${x.readings} | ${x.p50Ms} ms | ${x.p95Ms} ms | ${x.p99Ms} ms | ${x.maxMs} ms |`),
    '',
    ...rows.filter((x) => x.mbPerSecond !== undefined).map((x) => `Files: ${x.readings} × 10 MB in ${(x.seconds ?? 0).toFixed(1)} s, ${x.mbPerSecond} MB/s, each stored byte for byte.`),
    '',
    ...(connections
      ? [
          `Connections: ${connections.connections.toLocaleString('en')} devices held by one gateway (opened in ${connections.seconds.toFixed(1)} s); its resident memory went from ${connections.gatewayRssBeforeMiB} to ${connections.gatewayRssMiB} MiB, ${connections.kibPerConnection} KiB per connection.`,
          '',
        ]
      : []),
    `Batched pipeline at ${Math.round(report.batchedVsRawCeiling * 100)} % of the raw-broker ceiling.`,
    '',
    ...cpuTable(results.filter((x) => x.cpu !== undefined)),
  ].join('\n');
  const out = join(import.meta.dirname, 'results');
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, 'pipeline.json'), JSON.stringify(report, null, 2) + '\n');
  writeFileSync(join(out, 'pipeline.md'), md + '\n');
  process.stdout.write(md + '\n');
}

/** Where the CPU went: CPU time per reading of each component (processes read from /proc), per scenario. */
function cpuTable(measured: readonly Record<string, unknown>[]): string[] {
  if (measured.length === 0) return [];
  const perReading = (m: Record<string, unknown>, component: string) => {
    const c = (m.cpu as CpuShare[]).find((x) => x.component === component);
    return c ? `${Math.round((c.cpuSeconds / (m.readings as number)) * 1e6)} µs` : '—';
  };
  const components = (measured[0]?.cpu as CpuShare[]).map((c) => c.component);
  const total = (m: Record<string, unknown>) => `${Math.round(((m.cpu as CpuShare[]).reduce((n, c) => n + c.cpuSeconds, 0) / (m.readings as number)) * 1e6)} µs`;
  return [
    `| CPU time per reading | ${measured.map((m) => m.scenario as string).join(' | ')} |`,
    `|---|${measured.map(() => '---|').join('')}`,
    ...components.map((c) => `| ${c} | ${measured.map((m) => perReading(m, c)).join(' | ')} |`),
    `| all | ${measured.map(total).join(' | ')} |`,
  ];
}

/** bench/results/profile.md: CPU per component, and where the gateway, the distributor and the clients spend theirs. */
function writeProfileReport(dir: string, pids: Record<string, number | undefined>, measured: Record<string, unknown> | undefined): void {
  if (!measured) return;
  const lines = [
    `${measured.scenario as string}: ${(measured.readings as number).toLocaleString('en')} readings in ${(measured.seconds as number).toFixed(1)} s, ${(measured.readingsPerSecond as number).toLocaleString('en')} readings/s, ${cpus().length} cores.`,
    '',
    ...cpuTable([measured]),
  ];
  const files = readdirSync(dir);
  const out = join(import.meta.dirname, 'results');
  mkdirSync(join(out, 'profiles'), { recursive: true });
  for (const [name, pid] of Object.entries(pids)) {
    const file = files.find((f) => f.includes(`.${pid}.`));
    if (!file) continue;
    // Kept for a closer look: Chrome DevTools or VS Code open .cpuprofile files.
    copyFileSync(join(dir, file), join(out, 'profiles', `${name}.cpuprofile`));
    const summary = summariseProfile(join(dir, file), repoRoot, 12);
    lines.push('', `The ${name}: where its CPU went (self time, share of busy samples)`, '', '| function | self % |', '|---|---|');
    for (const h of summary.self) lines.push(`| \`${h.where}\` | ${h.selfPercent} |`);
    lines.push('', `The ${name}: its own steps (total time, including what they call)`, '', '| function | total % |', '|---|---|');
    for (const h of summary.ours) lines.push(`| \`${h.where}\` | ${h.totalPercent} |`);
  }
  writeFileSync(join(out, 'profile.md'), lines.join('\n') + '\n');
  process.stdout.write(lines.join('\n') + '\n');
}

/** One Mosquitto (the DMZ configuration, without anything behind it), MQTT clients at QoS 1, a counting subscriber. */
async function rawCeiling(certs: string, total: number): Promise<Record<string, unknown>> {
  const p = pkiPaths(certs);
  const port = await freePort();
  const dir = join(work, 'raw-mosquitto');
  mkdirSync(dir, { recursive: true });
  const conf = join(dir, 'mosquitto.conf');
  const broker = new ManagedProcess({
    name: 'raw-mosquitto',
    command: 'mosquitto',
    args: ['-c', conf],
    env: { PATH: process.env.PATH },
    cwd: dir,
    logFile: join(dir, 'mosquitto.log'),
    ready: { port },
    prepare: () =>
      execFileSync(join(repoRoot, 'scripts', 'render-config.sh'), [join(repoRoot, 'dmz', 'mosquitto', 'mosquitto.conf'), conf], {
        env: {
          PATH: process.env.PATH,
          MOSQUITTO_PORT: String(port),
          MOSQUITTO_BIND: '127.0.0.1',
          MOSQUITTO_CA_FILE: p.publicCa,
          MOSQUITTO_CERT_FILE: p.service('dmz/mosquitto').cert,
          MOSQUITTO_KEY_FILE: p.service('dmz/mosquitto').key,
          MOSQUITTO_CRL_FILE: join(certs, 'ca.crl'),
          MOSQUITTO_CONFIG_DIR: join(repoRoot, 'dmz', 'mosquitto'),
          MOSQUITTO_DATA_DIR: dir,
          MOSQUITTO_USER: userInfo().username,
          MOSQUITTO_LOG_DEST: `file ${join(dir, 'broker.log')}`,
        },
      }),
  });
  await broker.start();
  try {
    const tls = (file: string) => ({ ca: readFileSync(p.publicCa), cert: readFileSync(p.service(file).cert), key: readFileSync(p.service(file).key) });
    const url = `mqtts://localhost:${port}`;
    const sub = await connectAsync(url, { ...tls('internal/bridge'), protocolVersion: 5, clientId: 'raw-counter' });
    let received = 0;
    sub.on('message', () => received++);
    await sub.subscribeAsync(TOPIC_FILTERS.uplink, { qos: 1 });
    const pubs = await Promise.all(Array.from({ length: CLIENTS }, (_, i) => connectAsync(url, { ...tls('dmz/gateway'), protocolVersion: 5, clientId: `raw-pub-${i}` })));
    const per = Math.ceil(total / CLIENTS);
    const started = Date.now();
    await Promise.all(
      pubs.map(async (c, i) => {
        const topic = uplinkTopic(`raw-${i}`, 'timeseries');
        // A window of publishes in flight per client, as our gateway keeps one per connection.
        for (let k = 0; k < per; k += 500) {
          const n = Math.min(500, per - k);
          await Promise.all(Array.from({ length: n }, (_, j) => c.publishAsync(topic, JSON.stringify({ v: k + j, timestamp: 1767225600000 + k + j }), { qos: 1 })));
        }
      }),
    );
    const deadline = Date.now() + 300_000;
    while (received < per * CLIENTS && Date.now() < deadline) await sleep(20);
    const seconds = (Date.now() - started) / 1000;
    for (const c of [...pubs, sub]) await c.endAsync();
    if (received !== per * CLIENTS) throw new Error(`raw ceiling: ${received} of ${per * CLIENTS} counted`);
    return { scenario: 'raw Mosquitto ceiling (one message per reading)', clients: CLIENTS, readings: received, seconds, readingsPerSecond: Math.round(received / seconds), lost: 0, duplicated: 0 };
  } finally {
    await broker.stop();
  }
}

main()
  .then(() => rmSync(work, { recursive: true, force: true }))
  .catch((err: Error) => {
    process.stderr.write(`bench failed: ${err.message}\n(kept ${work})\n`);
    process.exit(1);
  });
