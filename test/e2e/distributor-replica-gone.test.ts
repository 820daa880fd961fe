import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { connectAsync, type MqttClient } from 'mqtt';
import { loadDistributorConfig } from '../../internal-network/distributor/config.ts';
import { startDistributor, type Distributor } from '../../internal-network/distributor/distributor.ts';
import { ManagedProcess } from '../../scripts/local-stack/process.ts';
import { TIMINGS } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { startMosquitto } from '../helpers/sparkplug.ts';
import { eventually } from '../helpers/ws-device.ts';
import { REPO_ROOT } from '../helpers/stack.ts';

/**
 * Replicas sharing a state folder (compose --scale, a StatefulSet) each hold broker sessions in the
 * shared subscription, and Mosquitto deals the group's messages to every session in it, connected
 * or not. A replica that is gone for good (scaled away, or killed on a host that does not come back)
 * leaves its sessions collecting their share: messages the broker acknowledged to the bridge that
 * no distributor ever writes. The replicas still running take over the sessions of a slot that
 * stays free.
 */
describe('a replica gone for good: the others take over its broker sessions (real Mosquitto)', () => {
  let pki: ReturnType<typeof makeTestPki>;
  let work: ReturnType<typeof tempDir>;
  let broker: Awaited<ReturnType<typeof startMosquitto>>;
  let publisher: MqttClient;
  const log = createLogger('test', 'silent');
  const running: Distributor[] = [];
  const start = (id: string, stateDir: string) => {
    const d = startDistributor(
      loadDistributorConfig({
        MQTT_URL: broker.tlsUrl,
        MQTT_PROTOCOL_VERSION: '5',
        MQTT_CA_FILE: pki.paths.publicCa,
        MQTT_CERT_FILE: pki.paths.service('internal/distributor').cert,
        MQTT_KEY_FILE: pki.paths.service('internal/distributor').key,
        DISTRIBUTOR_CLIENT_ID: id,
        // One group per test (its state folder's name): a stopped replica's sessions stay in theirs.
        DISTRIBUTOR_SHARE_GROUP: basename(stateDir),
        DISTRIBUTOR_CONSUMERS: '2',
        DISTRIBUTOR_STATE_DIR: stateDir,
        DISTRIBUTOR_DEVICE_KEYS_DIR: join(work.dir, 'keys'),
        DISTRIBUTOR_REVOKED_DEVICES_FILE: join(work.dir, 'revoked.txt'),
        DISTRIBUTOR_METRICS_PORT: 'off',
        DISTRIBUTOR_FEED: 'off',
        TIMESERIES_LOCAL_PATH: join(work.dir, `ts-${id}`),
        FILE_STORAGE_PATH: join(work.dir, 'files'),
        DEAD_LETTER_PATH: join(work.dir, `dead-${id}`),
      }),
      log,
      // Scaled down for the test (TIMINGS.freeSlotCheckMs, freeSlotGraceMs).
      { freeSlots: { checkMs: 300, graceMs: 1_500 } },
    );
    running.push(d);
    return d;
  };
  /** The payloads a distributor kept as dead letters (each message here is one: not JSON). */
  const letters = (id: string): string[] => {
    const dir = join(work.dir, `dead-${id}`);
    if (!existsSync(dir)) return [];
    return readdirSync(dir)
      .filter((n) => n.endsWith('.jsonl'))
      .flatMap((f) => readFileSync(join(dir, f), 'utf8').split('\n').filter(Boolean))
      .map((l) => Buffer.from((JSON.parse(l) as { payloadBase64: string }).payloadBase64, 'base64').toString());
  };
  const publish = async (from: number, to: number) => {
    for (let i = from; i < to; i++) await publisher.publishAsync(`fieldstream/v1/devices/dev-${i}/up/timeseries`, `not json ${i}`, { qos: 1 });
  };

  before(async () => {
    pki = makeTestPki([]);
    work = tempDir('replica-gone');
    mkdirSync(join(work.dir, 'keys'));
    writeFileSync(join(work.dir, 'revoked.txt'), '');
    const server = pki.paths.service('internal/mosquitto');
    broker = await startMosquitto(work.dir, { ca: pki.paths.publicCa, cert: server.cert, key: server.key });
    publisher = await connectAsync(broker.url, { protocolVersion: 5, clientId: 'publisher' });
  });
  // Each test's replicas stopped after it: all share one group on the broker.
  afterEach(async () => {
    for (const d of running.splice(0)) await d.close().catch(() => undefined);
  });
  after(async () => {
    await publisher?.endAsync();
    await broker?.process.stop();
    work?.cleanup();
    pki?.cleanup();
  });

  it('scaled from two replicas to one: every message reaches the one left, also those dealt to the sessions of the one stopped', async () => {
    const stateDir = join(work.dir, 'scaled');
    const a = start('keep', stateDir);
    await a.retirement;
    const b = start('gone', stateDir);
    await b.retirement;
    await b.close(); // scaled away: a clean stop, its slot released, never started again
    await publish(0, 20);
    const all = Array.from({ length: 20 }, (_, i) => `not json ${i}`);
    await eventually(() => (letters('keep').length >= 20 ? true : undefined), 15_000, 'every message written by the replica left');
    assert.deepEqual(letters('keep').sort(), all.sort(), 'each once');
    // The slot's sessions are gone: new messages all come to the replica left, at once.
    await publish(20, 30);
    await eventually(() => (letters('keep').length === 30 ? true : undefined), 5_000, 'new messages at once');
    assert.deepEqual(JSON.parse(readFileSync(join(stateDir, 'instances', '2', 'consumer-sessions.json'), 'utf8')), { clientIds: [] }, 'the free slot lists no session any more');
  });

  it('a replica SIGKILLed and never started again: once its lease expired, the one left writes every message', async () => {
    const stateDir = join(work.dir, 'killed');
    const a = start('alive', stateDir);
    await a.retirement;
    const svc = pki.paths.service('internal/distributor');
    const b = new ManagedProcess({
      name: 'killed',
      command: process.execPath,
      args: ['--import', 'tsx', join(REPO_ROOT, 'internal-network', 'distributor', 'main.ts')],
      env: {
        PATH: process.env.PATH,
        FIELDSTREAM_ENV_FILE: '/dev/null',
        MQTT_URL: broker.tlsUrl as string,
        MQTT_CA_FILE: pki.paths.publicCa,
        MQTT_CERT_FILE: svc.cert,
        MQTT_KEY_FILE: svc.key,
        DISTRIBUTOR_CLIENT_ID: 'killed',
        DISTRIBUTOR_SHARE_GROUP: 'killed',
        DISTRIBUTOR_CONSUMERS: '2',
        DISTRIBUTOR_FEED: 'off',
        DISTRIBUTOR_DEVICE_KEYS_DIR: join(work.dir, 'keys'),
        DISTRIBUTOR_REVOKED_DEVICES_FILE: join(work.dir, 'revoked.txt'),
        DISTRIBUTOR_STATE_DIR: stateDir,
        DISTRIBUTOR_METRICS_PORT: 'off',
        FILE_STORAGE_PATH: join(work.dir, 'files'),
        TIMESERIES_LOCAL_PATH: join(work.dir, 'ts-killed'),
        DEAD_LETTER_PATH: join(work.dir, 'dead-killed'),
      },
      cwd: REPO_ROOT,
      logFile: join(work.dir, 'killed.log'),
      ready: { logLine: /"msg":"subscribed"/ },
    });
    await b.start();
    await b.kill(); // SIGKILL: its lease left to expire, its sessions in the group
    await publish(300, 320);
    const mine = () => letters('alive').filter((p) => /json 3\d\d$/.test(p));
    await new Promise((r) => setTimeout(r, 1_000));
    assert.ok(mine().length < 20, 'the killed one\'s sessions hold their share meanwhile');
    await eventually(() => (mine().length === 20 ? true : undefined), TIMINGS.stateLeaseExpiryMs + 10_000, 'every message written by the one left');
    assert.deepEqual(letters('killed'), [], 'none by the killed one');
  });

  it('a replica restarted within the grace finds its sessions as it left them, and its slot listing them', async () => {
    const stateDir = join(work.dir, 'restarted');
    const a = start('stay', stateDir);
    await a.retirement;
    const b = start('back', stateDir);
    await b.retirement;
    await b.close();
    const again = start('back', stateDir); // as compose's restart: the same id, its slot free for a moment
    await again.retirement;
    await new Promise((r) => setTimeout(r, 2_500)); // past the grace: the slot is held again
    assert.ok([...a.clients, ...again.clients].every((c) => c.connected), 'every consumer of both still connected');
    assert.deepEqual(JSON.parse(readFileSync(join(stateDir, 'instances', '2', 'consumer-sessions.json'), 'utf8')), { clientIds: ['back-1', 'back-2'] });
    assert.deepEqual(JSON.parse(readFileSync(join(stateDir, 'consumer-sessions.json'), 'utf8')), { clientIds: ['stay-1', 'stay-2'] });
  });

  it('a replica back while its sessions are being taken over gets them back: the taking over stops, its slot lists them again', async () => {
    const stateDir = join(work.dir, 'late');
    const a = start('early', stateDir);
    await a.retirement;
    const b = start('late', stateDir);
    await b.retirement;
    await b.close();
    const list = (file: string) => (JSON.parse(readFileSync(file, 'utf8')) as { clientIds: string[] }).clientIds;
    const theirs = join(stateDir, 'instances', '2', 'consumer-sessions.json');
    // Moved into the first replica's list: it is taking them over (each waits two seconds of quiet).
    await eventually(() => (list(theirs).length === 0 ? true : undefined), 5_000, 'the takeover begun');
    const again = start('late', stateDir);
    await again.retirement;
    // Its own start lists them in its slot; the first replica, finding it live, lets them go.
    await eventually(() => (list(join(stateDir, 'consumer-sessions.json')).length === 2 ? true : undefined), 5_000, 'let go by the first replica');
    assert.deepEqual(list(join(stateDir, 'consumer-sessions.json')), ['early-1', 'early-2']);
    assert.deepEqual(list(theirs).sort(), ['late-1', 'late-2']);
    await new Promise((r) => setTimeout(r, 2_000));
    assert.ok([...a.clients, ...again.clients].every((c) => c.connected), 'every consumer of both connected');
    await publish(100, 110);
    const got = () => [...letters('early'), ...letters('late')].filter((p) => /json 1\d\d$/.test(p));
    await eventually(() => (got().length === 10 ? true : undefined), 5_000, 'new messages written by the two');
  });

  it('a replica whose lease looked expired (paused past it) while alive lists its sessions again once it runs on', async () => {
    const stateDir = join(work.dir, 'paused');
    const a = start('awake', stateDir);
    await a.retirement;
    const b = start('dozed', stateDir);
    await b.retirement;
    const theirs = join(stateDir, 'instances', '2', 'consumer-sessions.json');
    const list = (file: string) => (JSON.parse(readFileSync(file, 'utf8')) as { clientIds: string[] }).clientIds;
    // As a pause past the expiry looks to the others: the lease not renewed for longer than it.
    // Set back at each look until the other takes its sessions over: its renewal (every 5 s) would
    // otherwise make it live again first, at times.
    const setBack = () => {
      const old = new Date(Date.now() - 60_000);
      utimesSync(join(stateDir, 'instances', '2', 'lease.json'), old, old);
    };
    await eventually(() => (setBack(), list(theirs).length === 0 ? true : undefined), 20_000, 'its sessions taken over');
    // Its renewal (every 5 s) finds the slot its own still and goes on; its next look lists them again.
    await eventually(() => (list(theirs).length === 2 ? true : undefined), 10_000, 'listed again by itself');
    assert.deepEqual(list(theirs).sort(), ['dozed-1', 'dozed-2']);
    await eventually(() => ([...a.clients, ...b.clients].every((c) => c.connected) ? true : undefined), 5_000, 'every consumer connected');
    await new Promise((r) => setTimeout(r, 2_500)); // past the other's retirement of them
    assert.deepEqual(list(join(stateDir, 'consumer-sessions.json')), ['awake-1', 'awake-2']);
    await publish(200, 210);
    const got = () => [...letters('awake'), ...letters('dozed')].filter((p) => /json 2\d\d$/.test(p));
    await eventually(() => (got().length === 10 ? true : undefined), 5_000, 'new messages written by the two');
  });
});
