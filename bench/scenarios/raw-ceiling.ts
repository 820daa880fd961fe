import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { connectAsync } from 'mqtt';
import { TOPIC_FILTERS, uplinkTopic } from '../../shared/contract/topics.ts';
import { pkiPaths } from '../../pki/layout.ts';
import { freePort } from '../../scripts/local-stack/ports.ts';
import { ManagedProcess } from '../../scripts/local-stack/process.ts';
import type { BenchContext } from '../lib/context.ts';
import { sleep } from '../lib/context.ts';
import type { ThroughputResult } from '../lib/results.ts';

/** publishes each client keeps in flight, as our gateway keeps a window per connection */
const WINDOW = 500;

/**
 * The ceiling: `total` readings published at QoS 1, one MQTT message each, straight into one
 * Mosquitto (the DMZ configuration, nothing behind it) by as many MQTT clients as the pipeline
 * scenarios have devices, and counted by one subscriber.
 */
export async function rawCeiling(ctx: BenchContext, total: number): Promise<ThroughputResult> {
  const p = pkiPaths(ctx.certs);
  const port = await freePort();
  const dir = join(ctx.work, 'raw-mosquitto');
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
      execFileSync(join(ctx.repoRoot, 'scripts', 'render-config.sh'), [join(ctx.repoRoot, 'dmz', 'mosquitto', 'mosquitto.conf'), conf], {
        env: {
          PATH: process.env.PATH,
          MOSQUITTO_PORT: String(port),
          MOSQUITTO_BIND: '127.0.0.1',
          MOSQUITTO_CA_FILE: p.publicCa,
          MOSQUITTO_CERT_FILE: p.service('dmz/mosquitto').cert,
          MOSQUITTO_KEY_FILE: p.service('dmz/mosquitto').key,
          MOSQUITTO_CRL_FILE: join(ctx.certs, 'ca.crl'),
          MOSQUITTO_CONFIG_DIR: join(ctx.repoRoot, 'dmz', 'mosquitto'),
          MOSQUITTO_DATA_DIR: dir,
          MOSQUITTO_USER: userInfo().username,
          MOSQUITTO_LOG_DEST: `file ${join(dir, 'broker.log')}`,
        },
      }),
  });
  await broker.start();
  try {
    const tls = (service: string) => ({ ca: readFileSync(p.publicCa), cert: readFileSync(p.service(service).cert), key: readFileSync(p.service(service).key) });
    const url = `mqtts://localhost:${port}`;
    const sub = await connectAsync(url, { ...tls('internal/bridge'), protocolVersion: 5, clientId: 'raw-counter' });
    let received = 0;
    sub.on('message', () => received++);
    await sub.subscribeAsync(TOPIC_FILTERS.uplink, { qos: 1 });
    const pubs = await Promise.all(Array.from({ length: ctx.clients }, (_, i) => connectAsync(url, { ...tls('dmz/gateway'), protocolVersion: 5, clientId: `raw-pub-${i}` })));
    const per = Math.ceil(total / ctx.clients);
    const started = Date.now();
    await Promise.all(
      pubs.map(async (c, i) => {
        const topic = uplinkTopic(`raw-${i}`, 'timeseries');
        for (let k = 0; k < per; k += WINDOW) {
          const n = Math.min(WINDOW, per - k);
          await Promise.all(Array.from({ length: n }, (_, j) => c.publishAsync(topic, JSON.stringify({ v: k + j, timestamp: 1767225600000 + k + j }), { qos: 1 })));
        }
      }),
    );
    const deadline = Date.now() + 300_000;
    while (received < per * ctx.clients && Date.now() < deadline) await sleep(20);
    const seconds = (Date.now() - started) / 1000;
    for (const c of [...pubs, sub]) await c.endAsync();
    if (received !== per * ctx.clients) throw new Error(`raw ceiling: ${received} of ${per * ctx.clients} counted`);
    return { scenario: 'raw Mosquitto ceiling (one message per reading)', clients: ctx.clients, readings: received, seconds, readingsPerSecond: Math.round(received / seconds), lost: 0, duplicated: 0 };
  } finally {
    await broker.stop();
  }
}
