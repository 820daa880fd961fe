import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { connectAsync, type IClientOptions, type MqttClient } from 'mqtt';
import { pkiPaths } from '../../pki/layout.ts';
import { freePort } from '../../scripts/local-stack/ports.ts';
import { ManagedProcess } from '../../scripts/local-stack/process.ts';
import type { BenchContext } from './context.ts';

/** Mosquitto's queue limits as in our brokers' configuration (dmz/mosquitto/mosquitto.conf): nothing dropped under load. */
const QUEUE_LIMITS = ['max_queued_messages 1000000', 'max_queued_bytes 2147483648', 'max_inflight_messages 1000'];

export interface BenchBroker {
  process: ManagedProcess;
  url: string;
  /** MQTT options of a client of this broker; `identity`: the certificate (service name) it presents over TLS */
  options(identity?: string): IClientOptions;
}

/**
 * A Mosquitto of its own, in the DMZ configuration (TLS, client certificates, the ACL), nothing
 * behind it: what one hop of the pipeline can carry at most.
 */
export async function startDmzBroker(ctx: BenchContext, name: string): Promise<BenchBroker> {
  const p = pkiPaths(ctx.certs);
  const port = await freePort();
  const dir = join(ctx.work, name);
  mkdirSync(dir, { recursive: true });
  const conf = join(dir, 'mosquitto.conf');
  const broker = new ManagedProcess({
    name,
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
  return {
    process: broker,
    url: `mqtts://localhost:${port}`,
    options: (identity = 'dmz/gateway') => ({ ca: readFileSync(p.publicCa), cert: readFileSync(p.service(identity).cert), key: readFileSync(p.service(identity).key) }),
  };
}

/**
 * A Mosquitto as a Node-RED user typically runs one: plain MQTT on one listener, anonymous, no
 * persistence; its queue limits raised as ours are, so that a slow subscriber is queued for rather
 * than dropped (the default 1,000 queued messages would lose readings, not measure them).
 */
export async function startPlainBroker(ctx: BenchContext, name: string): Promise<BenchBroker> {
  const port = await freePort();
  const dir = join(ctx.work, name);
  mkdirSync(dir, { recursive: true });
  const conf = join(dir, 'mosquitto.conf');
  writeFileSync(conf, [`listener ${port} 127.0.0.1`, 'allow_anonymous true', 'persistence false', ...QUEUE_LIMITS, `log_dest file ${join(dir, 'broker.log')}`, ''].join('\n'));
  const broker = new ManagedProcess({ name, command: 'mosquitto', args: ['-c', conf], env: { PATH: process.env.PATH }, cwd: dir, logFile: join(dir, 'mosquitto.log'), ready: { port } });
  await broker.start();
  return { process: broker, url: `mqtt://127.0.0.1:${port}`, options: () => ({}) };
}

/** `count` MQTT clients of `broker`, client ids PREFIX-0, PREFIX-1, ... */
export function connectClients(broker: BenchBroker, count: number, prefix: string, o: IClientOptions = {}): Promise<MqttClient[]> {
  return Promise.all(Array.from({ length: count }, (_, i) => connectAsync(broker.url, { ...broker.options(), ...o, clientId: `${prefix}-${i}` })));
}

/** publishes each client keeps in flight, as our gateway keeps a window per connection */
export const PUBLISH_WINDOW = 500;

/**
 * Publishes `count` messages at QoS 1, PUBLISH_WINDOW unacknowledged at a time: a rolling window,
 * each PUBACK letting the next message go, as a device's field client and the gateway keep theirs
 * (rounds of 500 that each waited for their slowest PUBACK held every publisher idle a round trip
 * per round).
 */
export async function publishWindowed(client: Pick<MqttClient, 'publishAsync'>, count: number, message: (k: number) => [topic: string, payload: string | Buffer]): Promise<void> {
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < count) {
      const [topic, payload] = message(next++);
      await client.publishAsync(topic, payload, { qos: 1 });
    }
  };
  await Promise.all(Array.from({ length: Math.min(PUBLISH_WINDOW, count) }, lane));
}
