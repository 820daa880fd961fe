/**
 * The distributor's peak memory (VmHWM) under the largest messages the internal broker passes
 * (max_packet_size, 16 MiB), arriving at all of its consumers at once: what its memory limit
 * (k8s/base/internal/distributor.yaml, docker-compose.internal.yml) is set from. A measurement, not a
 * test (minutes, and machine-dependent); run it again when the distributor's handling of a message,
 * DISTRIBUTOR_CONSUMERS or the broker's packet size changes:
 *
 *   npm run bench:distributor-memory -- [--consumers 32] [--messages 64] [--only NAME,...] [--limit-mib N]
 *
 * --limit-mib runs the distributor in a memory cgroup (v1, as root) of that limit, as its container
 * is: Node sizes its JavaScript heap from the limit it starts under (about half of it), so
 * only so does the measurement show what the distributor needs within a limit, and whether it
 * survives it. Without it, the heap may grow to a quarter of the machine's memory before V8
 * collects, and the peak says more about the machine than about the distributor.
 *
 * A real internal Mosquitto (its mosquitto.conf, without bridges) and a real distributor writing to
 * a real InfluxDB 1.x (influxd), with the settings of k8s/overlays/internal (signatures required).
 * Each load starts a fresh distributor, publishes its messages at once (QoS 1, as the bridge
 * does), waits until every one is handled, and reads the distributor's VmHWM; after 10 minutes it
 * reports the peak so far instead (an InfluxDB too slow for a batch of such envelopes has them
 * retried meanwhile; a dead-letter folder at DEAD_LETTER_MAX_BYTES leaves the rest waiting).
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { connectAsync } from 'mqtt';
import { pkiPaths } from '../pki/layout.ts';
import { setupPki } from '../pki/onboarding.ts';
import { issueDeviceCertificate } from '../pki/device-bundle.ts';
import { uplinkTopic } from '../shared/contract/topics.ts';
import { LIMITS } from '../shared/limits.ts';
import { createLogger } from '../shared/logger.ts';
import { parseSigningKey, signGroup } from '../shared/security/message-auth.ts';
import { InfluxV1 } from '../scripts/local-stack/databases.ts';
import { mosquittoProcess } from '../scripts/local-stack/machine.ts';
import { ManagedProcess } from '../scripts/local-stack/process.ts';
import { freePort } from '../scripts/local-stack/ports.ts';

const { values: args } = parseArgs({ options: { consumers: { type: 'string', default: '32' }, messages: { type: 'string', default: '64' }, only: { type: 'string' }, 'limit-mib': { type: 'string' } } });
const CONSUMERS = Number(args.consumers);
const MESSAGES = Number(args.messages);
const MiB = 2 ** 20;
const LIMIT = args['limit-mib'] ? Number(args['limit-mib']) * MiB : undefined;
const repoRoot = join(import.meta.dirname, '..');
const DEVICE = 'mem-1';
// The packet holds the topic and a few header bytes beside the payload.
const PAYLOAD_MAX = LIMITS.brokerPacketMaxBytes - 1024;

/** A device's own timeseries envelope of LIMITS.batchMaxMessages readings of LIMITS.readingMaxFields fields, signed as one group, just under PAYLOAD_MAX. */
function largestReadings(key: Buffer, epoch: string, timestamp: number): Buffer {
  const now = Date.now();
  const build = (nameChars: number): Buffer => {
    const members = Array.from({ length: LIMITS.batchMaxMessages }, (_, i) => {
      const payload: Record<string, number> = { timestamp };
      for (let f = 0; f < LIMITS.readingMaxFields - 1; f++) payload[`f${String(f).padStart(3, '0')}_${'x'.repeat(nameChars)}`] = i + f / 7 + 0.123456789;
      return { seq: i + 1, payload };
    });
    const auth = signGroup(key, { deviceId: DEVICE, dataType: 'timeseries', epoch, ts: now }, members);
    const messages = members.map((m, i) => ({ messageId: `${epoch}.${m.seq}`, seq: m.seq, ...(i === 0 ? { auth } : {}), payload: m.payload }));
    return Buffer.from(JSON.stringify({ v: 1, deviceId: DEVICE, dataType: 'timeseries', gatewayId: 'gw-mem', receivedAt: now, messages }));
  };
  const perChar = build(1).length - build(0).length;
  const chars = Math.floor((PAYLOAD_MAX - build(0).length) / perChar);
  const out = build(chars);
  if (out.length > PAYLOAD_MAX) throw new Error(`envelope of ${out.length} bytes`);
  return out;
}

interface Load {
  name: string;
  what: string;
  payloads: (i: number) => Buffer;
}

function loads(key: Buffer): Load[] {
  const garbage = Buffer.alloc(PAYLOAD_MAX, 'not json ');
  // JSON that parses into as many objects as 16 MiB can hold, refused only after JSON.parse made them.
  const objects = Buffer.from(`[${'{},'.repeat(Math.floor((PAYLOAD_MAX - 4) / 3))}{}]`);
  return [
    { name: 'garbage', what: 'invalid payloads, not JSON (dead-letter excerpts)', payloads: () => garbage },
    { name: 'objects', what: 'invalid payloads, JSON of 5.6 million empty objects (dead-letter excerpts)', payloads: () => objects },
    { name: 'readings', what: `valid signed envelopes of ${LIMITS.batchMaxMessages} readings × ${LIMITS.readingMaxFields} fields (written to InfluxDB)`, payloads: (i) => largestReadings(key, `w${i}`, Date.now()) },
    // Dated beyond LIMITS.pointMaxAheadMs: DISTRIBUTOR_WRITE_REJECTED, so each is kept whole (base64) as a dead letter with data.
    { name: 'rejected', what: 'valid signed envelopes of the same size, refused (dead letters kept whole)', payloads: (i) => largestReadings(key, `r${i}`, Date.now() + LIMITS.pointMaxAheadMs + 86_400_000) },
  ];
}

function status(pid: number): { hwm: number; rss: number } {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  // a process that has exited (a zombie until reaped) has no Vm lines: 0
  const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB$`, 'm').exec(text)?.[1] ?? 0) * 1024;
  return { hwm: kb('VmHWM'), rss: kb('VmRSS') };
}

/** A memory cgroup (v1) of `limit` bytes below this process's own, for one distributor. */
function memoryCgroup(name: string, limit: number): { dir: string; oomKills(): number; remove(): void } {
  const own = /^\d+:memory:(.*)$/m.exec(readFileSync('/proc/self/cgroup', 'utf8'))?.[1] ?? assertNever('memory cgroup (v1)');
  const dir = join('/sys/fs/cgroup/memory', own, name);
  if (!existsSync(dir)) mkdirSync(dir);
  writeFileSync(join(dir, 'memory.limit_in_bytes'), String(limit));
  return {
    dir,
    oomKills: () => Number(/^oom_kill (\d+)$/m.exec(readFileSync(join(dir, 'memory.oom_control'), 'utf8'))?.[1] ?? 0),
    remove: () => rmdirSync(dir),
  };
}

/** Messages the distributor has finished with: written, kept as dead letters, or not kept. */
async function handled(metricsUrl: string, pid: number): Promise<number> {
  let text: string;
  try {
    text = await (await fetch(`${metricsUrl}/metrics`, { signal: AbortSignal.timeout(30_000) })).text();
  } catch (err) {
    // A distributor busy parsing (seconds per message) may answer late or drop the request: asked again.
    status(pid); // throws once it is gone
    console.error(`metrics not read (${(err as Error).message}); asking again`);
    return -1;
  }
  let n = 0;
  for (const m of text.matchAll(/^fieldstream_distributor_(?:messages_total\{data_type="timeseries"\}|dead_letters_total|dead_letters_not_kept_total)(?:\{[^}]*\})? (\d+)$/gm)) n += Number(m[1]);
  return n;
}

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'fieldstream-memory-'));
  const log = createLogger('distributor-memory');
  const certs = join(work, 'certs');
  setupPki(certs, { domain: 'localhost' });
  issueDeviceCertificate(certs, DEVICE);
  const p = pkiPaths(certs);
  const key = parseSigningKey(readFileSync(p.deviceKeyRegistry(DEVICE), 'utf8')) ?? assertNever('device key');
  const influx = await InfluxV1.start(join(work, 'influx'), 'fieldstream');
  const m = { repoRoot, certsDir: certs, workDir: work, env: {}, supervisor: log, bind: '127.0.0.1' };
  mkdirSync(join(work, 'logs'), { recursive: true });
  mkdirSync(join(work, 'bridges'), { recursive: true });
  const mqttPort = await freePort();
  const broker = mosquittoProcess(m, 'internal-mosquitto', 'internal', mqttPort, { MOSQUITTO_BRIDGES_DIR: join(work, 'bridges') });
  await broker.start();
  const url = `mqtts://localhost:${mqttPort}`;
  try {
    for (const load of loads(key).filter((l) => !args.only || args.only.split(',').includes(l.name))) {
      const dir = join(work, load.name);
      const metricsPort = await freePort();
      const cgroup = LIMIT ? memoryCgroup(`fieldstream-distributor-${load.name}`, LIMIT) : undefined;
      const entry = join(repoRoot, 'internal-network', 'distributor', 'main.ts');
      // In the cgroup before Node starts (it reads its limit once, at start): sh moves itself, then execs node.
      const distributor = new ManagedProcess({
        name: `distributor-${load.name}`,
        command: cgroup ? 'sh' : process.execPath,
        args: cgroup ? ['-c', `echo $$ > ${join(cgroup.dir, 'cgroup.procs')} && exec "$0" "$@"`, process.execPath, '--import', 'tsx', entry] : ['--import', 'tsx', entry],
        env: {
          PATH: process.env.PATH,
          FIELDSTREAM_ENV_FILE: '/dev/null',
          LOG_LEVEL: 'warn',
          MQTT_URL: url,
          MQTT_CA_FILE: p.publicCa,
          MQTT_CERT_FILE: p.service('internal/distributor').cert,
          MQTT_KEY_FILE: p.service('internal/distributor').key,
          // a group per load: a previous load's sessions, if one failed, take none of this one's messages
          DISTRIBUTOR_SHARE_GROUP: `memory-${load.name}`,
          DISTRIBUTOR_CLIENT_ID: `distributor-${load.name}`,
          DISTRIBUTOR_CONSUMERS: String(CONSUMERS),
          DISTRIBUTOR_BATCH_MAX_POINTS: '5000',
          DISTRIBUTOR_WRITE_CONCURRENCY: '2',
          DISTRIBUTOR_REQUIRE_SIGNATURES: 'true',
          DISTRIBUTOR_DEVICE_KEYS_DIR: join(certs, 'internal', 'device-keys'),
          DISTRIBUTOR_REVOKED_DEVICES_FILE: join(certs, 'internal', 'revoked-devices.txt'),
          DISTRIBUTOR_STORED_FEED_KEY_FILE: p.storedFeedKey,
          DISTRIBUTOR_STATE_DIR: join(dir, 'state'),
          DISTRIBUTOR_HEALTH_FILE: join(dir, 'healthy'),
          INFLUXDB_URL: influx.url,
          INFLUXDB_DATABASE: 'fieldstream',
          INFLUXDB_USERNAME: influx.user,
          INFLUXDB_PASSWORD: influx.password,
          FILE_STORAGE_PATH: join(dir, 'files'),
          DEAD_LETTER_PATH: join(dir, 'dead-letter'),
          DEAD_LETTER_MAX_BYTES: String(1024 * MiB),
          DISTRIBUTOR_METRICS_HOST: '127.0.0.1',
          DISTRIBUTOR_METRICS_PORT: String(metricsPort),
        },
        cwd: repoRoot,
        logFile: join(work, 'logs', `distributor-${load.name}.log`),
        ready: { file: join(dir, 'healthy') },
      });
      mkdirSync(dir, { recursive: true });
      await distributor.start();
      const pid = distributor.pid ?? assertNever('pid');
      const metricsUrl = `http://127.0.0.1:${metricsPort}`;
      const idle = status(pid).rss;
      const payloads = Array.from({ length: MESSAGES }, (_, i) => load.payloads(i));
      const publisher = await connectAsync(url, { ca: readFileSync(p.publicCa), cert: readFileSync(p.service('internal/distributor').cert), key: readFileSync(p.service('internal/distributor').key), clientId: `publisher-${load.name}`, protocolVersion: 4 });
      let before = -1;
      while (before < 0) before = await handled(metricsUrl, pid);
      let peak = 0;
      const sampler = setInterval(() => {
        if (existsSync(`/proc/${pid}`)) peak = Math.max(peak, status(pid).rss);
      }, 50);
      await Promise.all(payloads.map((payload) => publisher.publishAsync(uplinkTopic(DEVICE, 'timeseries'), payload, { qos: 1 })));
      const deadline = Date.now() + 600_000;
      const head = `${load.name}: ${MESSAGES} messages of ${(payloads[0]!.length / MiB).toFixed(2)} MiB, ${CONSUMERS} consumers${LIMIT ? `, limit ${LIMIT / MiB} MiB` : ''} — ${load.what}`;
      let hwm = 0;
      try {
        while ((await handled(metricsUrl, pid)) - before < MESSAGES) {
          if (Date.now() > deadline) throw new Error(`${(await handled(metricsUrl, pid)) - before} of ${MESSAGES} handled in 10 minutes`);
          hwm = Math.max(hwm, status(pid).hwm);
          await new Promise((r) => setTimeout(r, 500));
        }
        hwm = Math.max(hwm, status(pid).hwm);
        console.log(`${head}: peak RSS (VmHWM) ${(hwm / MiB).toFixed(0)} MiB (sampled ${(peak / MiB).toFixed(0)}), idle ${(idle / MiB).toFixed(0)} MiB`);
      } catch (err) {
        const log = readFileSync(join(work, 'logs', `distributor-${load.name}.log`), 'utf8');
        const oom = cgroup?.oomKills() ?? 0;
        console.log(`${head}: FAILED (${(err as Error).message}); ${oom ? `killed by the OOM killer (${oom}×); ` : ''}last VmHWM ${(hwm / MiB).toFixed(0)} MiB, sampled ${(peak / MiB).toFixed(0)} MiB; its log ends: ${log.slice(-600).replace(/\s+/g, ' ')}`);
      } finally {
        clearInterval(sampler);
        await publisher.endAsync(true);
        await distributor.stop();
        // what the broker still holds for the share group goes to the next load's distributor otherwise
        cgroup?.remove();
      }
    }
  } finally {
    await broker.stop();
    await influx.process.stop();
    if (process.env.FIELDSTREAM_KEEP_TEST_DIRS !== '1') rmSync(work, { recursive: true, force: true });
    else console.log(`kept ${work}`);
  }
}

function assertNever(what: string): never {
  throw new Error(`no ${what}`);
}

await main();
