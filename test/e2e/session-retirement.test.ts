import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connectAsync, type MqttClient } from 'mqtt';
import { Consumer } from '../../internal-network/distributor/consumer.ts';
import { DeadLetters } from '../../internal-network/distributor/dead-letter.ts';
import type { MessageHandler } from '../../internal-network/distributor/message-handler.ts';
import { retireConsumerSessions } from '../../internal-network/distributor/session-retirement.ts';
import { loadDistributorConfig } from '../../internal-network/distributor/config.ts';
import { startDistributor } from '../../internal-network/distributor/distributor.ts';
import type { ManagedProcess } from '../../scripts/local-stack/process.ts';
import { TIMINGS } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';
import { connectMqtt, endMqtt } from '../../shared/mqtt/connect.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { startMosquitto } from '../helpers/sparkplug.ts';
import { eventually, within } from '../helpers/ws-device.ts';
import { LogCapture } from '../helpers/embedded.ts';

/**
 * Mosquitto deals a shared subscription's messages to every session in the group, connected or not:
 * the session of a consumer that no longer runs keeps collecting its share. The distributor takes
 * such sessions over, writes what they hold, and removes them.
 */
describe("retiring the sessions of consumers that no longer run (real Mosquitto)", () => {
  const FILTER = '$share/distributors/backlog/#';
  let pki: ReturnType<typeof makeTestPki>;
  let work: ReturnType<typeof tempDir>;
  let broker: { url: string; tlsUrl?: string; process: ManagedProcess };
  let publisher: MqttClient;
  const log = createLogger('test', 'silent');
  const handled: string[] = [];
  const handler = {
    handle: async (topic: string) => {
      handled.push(topic);
      return { points: 1, files: 0 };
    },
    deadLetterReceipts: () => [],
  } as unknown as MessageHandler;
  /** A distributor replica named `id` on a state folder shared with others, its stores its own (`prefix` tells tests apart). */
  const startReplica = (id: string, stateDir: string, prefix: string) =>
    startDistributor(
      loadDistributorConfig({
        MQTT_URL: broker.tlsUrl,
        MQTT_PROTOCOL_VERSION: '5',
        MQTT_CA_FILE: pki.paths.publicCa,
        MQTT_CERT_FILE: pki.paths.service('internal/distributor').cert,
        MQTT_KEY_FILE: pki.paths.service('internal/distributor').key,
        DISTRIBUTOR_CLIENT_ID: id,
        DISTRIBUTOR_CONSUMERS: '2',
        DISTRIBUTOR_STATE_DIR: stateDir,
        DISTRIBUTOR_DEVICE_KEYS_DIR: join(work.dir, 'keys'),
        DISTRIBUTOR_METRICS_PORT: 'off',
        DISTRIBUTOR_FEED: 'off',
        TIMESERIES_LOCAL_PATH: join(work.dir, `${prefix}ts-${id}`),
        FILE_STORAGE_PATH: join(work.dir, `${prefix}files-${id}`),
        DEAD_LETTER_PATH: join(work.dir, `${prefix}dead-${id}`),
      }),
      log,
    );
  const connect = (clientId: string) => {
    const svc = pki.paths.service('internal/distributor');
    return connectMqtt({ url: broker.tlsUrl as string, ca: readFileSync(pki.paths.publicCa, 'utf8'), cert: readFileSync(svc.cert, 'utf8'), key: readFileSync(svc.key, 'utf8'), clientId, protocolVersion: 5, clean: false }, log, { resubscribe: false });
  };
  const consume = (client: MqttClient) => new Consumer(client, handler, new DeadLetters(join(work.dir, 'dead-letter')), { initialMs: 10, maxMs: 100 }, undefined, log);
  const connected = (c: MqttClient) => new Promise<void>((resolve) => (c.connected ? resolve() : c.once('connect', () => resolve())));

  before(async () => {
    pki = makeTestPki([]);
    work = tempDir('session-retirement');
    const server = pki.paths.service('internal/mosquitto');
    broker = await startMosquitto(work.dir, { ca: pki.paths.publicCa, cert: server.cert, key: server.key });
    publisher = await connectAsync(broker.url, { protocolVersion: 5, clientId: 'publisher' });
  });
  after(async () => {
    await publisher?.endAsync();
    await broker?.process.stop();
    work?.cleanup();
    pki?.cleanup();
  });

  it('writes what the sessions of departed consumers hold, removes them, and leaves the live one all new messages', async () => {
    // Three consumers ran, subscribed, and stopped: their sessions stay in the group.
    for (const id of ['dist-1', 'dist-2', 'dist-3']) {
      const c = connect(id);
      await connected(c);
      await c.subscribeAsync(FILTER, { qos: 1 });
      await endMqtt(c);
    }
    for (let i = 0; i < 9; i++) await publisher.publishAsync(`backlog/${i}`, String(i), { qos: 1 });
    // Now one runs (as DISTRIBUTOR_CONSUMERS=1): it gets its own share only.
    const live = connect('dist-1');
    const liveConsumer = consume(live);
    try {
      await connected(live);
      await live.subscribeAsync(FILTER, { qos: 1 });
      await eventually(() => (handled.length === 3 ? true : undefined));
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(handled.length, 3, 'the departed consumers hold the other six');

      const stateFile = join(work.dir, 'state', 'consumer-sessions.json');
      const result = await retireConsumerSessions({ stateFile, current: ['dist-1'], base: 'dist', maxConsumers: 4, filters: [FILTER], connect, consume, signal: new AbortController().signal, log });
      assert.deepEqual(result, { retired: ['dist-2', 'dist-3'], empty: 1, failed: [] });
      assert.deepEqual([...handled].sort(), Array.from({ length: 9 }, (_, i) => `backlog/${i}`).sort(), 'every queued message written once');
      assert.deepEqual(JSON.parse(readFileSync(stateFile, 'utf8')), { clientIds: ['dist-1'] });

      // With the departed sessions gone, every new message comes to the live consumer.
      for (let i = 9; i < 13; i++) await publisher.publishAsync(`backlog/${i}`, String(i), { qos: 1 });
      await eventually(() => (handled.length === 13 ? true : undefined), 5_000);

      // A next start finds nothing to retire.
      const again = await retireConsumerSessions({ stateFile, current: ['dist-1'], base: 'dist', maxConsumers: 4, filters: [FILTER], connect, consume, signal: new AbortController().signal, log });
      assert.deepEqual(again, { retired: [], empty: 3, failed: [] });
    } finally {
      liveConsumer.stop();
      await endMqtt(live, true);
    }
  });

  it('two distributors sharing one state folder (compose --scale) keep apart: neither retires the live sessions of the other', async () => {
    const stateDir = join(work.dir, 'shared-state');
    const start = (id: string) => startReplica(id, stateDir, '');
    const a = start('replica-a');
    await a.retirement;
    const b = start('replica-b');
    try {
      const retired = await b.retirement;
      assert.deepEqual(retired?.retired, [], 'the second took over none of the first one\'s sessions');
      await new Promise((r) => setTimeout(r, 500));
      assert.ok([...a.clients, ...b.clients].every((c) => c.connected), 'every consumer of both still connected');
      assert.deepEqual(JSON.parse(readFileSync(join(stateDir, 'consumer-sessions.json'), 'utf8')), { clientIds: ['replica-a-1', 'replica-a-2'] });
      assert.deepEqual(JSON.parse(readFileSync(join(stateDir, 'instances', '2', 'consumer-sessions.json'), 'utf8')), { clientIds: ['replica-b-1', 'replica-b-2'] });
      for (const dir of [join(stateDir, 'replay'), join(stateDir, 'instances', '2', 'replay')]) assert.ok(readdirSync(dir).some((f) => f.endsWith('.log')), `a journal of its own in ${dir}`);
    } finally {
      await b.close();
      await a.close();
    }
    assert.ok(!existsSync(join(stateDir, 'lease.json')) && !existsSync(join(stateDir, 'instances', '2', 'lease.json')), 'both slots released at a clean stop');
  });

  it('replicas restarted in the other order (they swap slots) retire neither the live sessions of the other', async () => {
    // A clean stop frees both slots, so replicas started again take them in whichever order they
    // come: the second finds in its slot's list the first one's ids, and took over its live
    // sessions (kicked its consumers off, unsubscribed and removed their sessions), the two then
    // taking the client ids from each other at every reconnect.
    const stateDir = join(work.dir, 'swapped-state');
    const start = (id: string) => startReplica(id, stateDir, 'swap-');
    const first = [start('swap-a')];
    await first[0]?.retirement;
    first.push(start('swap-b'));
    await first[1]?.retirement;
    for (const d of first.reverse()) await d?.close();
    // again, the other way round: b takes slot 1 (a's list), a slot 2 (b's list)
    const b = start('swap-b');
    await b.retirement;
    const a = start('swap-a');
    try {
      const retired = await a.retirement;
      assert.deepEqual(retired?.retired.filter((id) => id.startsWith('swap-b')), [], "the live replica's sessions are not taken over");
      await new Promise((r) => setTimeout(r, 500));
      assert.ok([...a.clients, ...b.clients].every((c) => c.connected), 'every consumer of both still connected');
      assert.deepEqual(JSON.parse(readFileSync(join(stateDir, 'instances', '2', 'consumer-sessions.json'), 'utf8')), { clientIds: ['swap-a-1', 'swap-a-2'] }, "the live replica's ids are its own slot's to list");
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('takes a damaged record of earlier sessions as none, says so, and writes a good one', async () => {
    const stateFile = join(work.dir, 'damaged', 'consumer-sessions.json');
    mkdirSync(dirname(stateFile), { recursive: true });
    writeFileSync(stateFile, '{"clientIds": ["ok", "bad id with spaces"]');
    const logs = new LogCapture();
    const result = await retireConsumerSessions({
      stateFile,
      current: ['solo-1'],
      base: 'solo',
      maxConsumers: 1,
      filters: [FILTER],
      connect: () => assert.fail('nothing to take over: no connection'),
      consume,
      signal: new AbortController().signal,
      log: logs.logger,
    });
    assert.deepEqual(result, { retired: [], empty: 0, failed: [] });
    assert.ok(logs.lines.some((l) => /damaged/.test(String(l.msg))), 'the damage is logged');
    assert.deepEqual(JSON.parse(readFileSync(stateFile, 'utf8')), { clientIds: ['solo-1'] });
  });

  it('leaves a session it is retiring for the next start when the distributor stops with the broker frozen, rather than waiting for it for ever', async () => {
    const filter = '$share/frozen/held/#';
    const departed = connect('frozen-2');
    await connected(departed);
    await departed.subscribeAsync(filter, { qos: 1 });
    await endMqtt(departed);
    await publisher.publishAsync('held/1', '1', { qos: 1 });
    const stateFile = join(work.dir, 'frozen', 'consumer-sessions.json');
    const options = { stateFile, current: ['frozen-1'], base: 'frozen', maxConsumers: 2, filters: [filter], connect, consume, log };
    const stopping = new AbortController();
    let frozen = false;
    try {
      const retiring = retireConsumerSessions({ ...options, signal: stopping.signal });
      // Frozen (SIGSTOP) once the message it held is written: what retiring still asks of the broker
      // (the UNSUBSCRIBE's answer, or the close after the DISCONNECT that removes the session)
      // never comes.
      await eventually(() => (handled.includes('held/1') ? true : undefined), 5_000, 'the held message written');
      await broker.process.pause();
      frozen = true;
      await new Promise((r) => setTimeout(r, TIMINGS.sessionRetireIdleMs + 1_000));
      stopping.abort();
      const result = await within(retiring, 3_000, 'the retirement once the distributor stops');
      assert.deepEqual(result, { retired: [], empty: 0, failed: ['frozen-2'] });
      assert.deepEqual(JSON.parse(readFileSync(stateFile, 'utf8')), { clientIds: ['frozen-1', 'frozen-2'] }, 'kept for the next start');
    } finally {
      if (frozen) await broker.process.resume();
    }
    // The next start, the broker answering, leaves nothing of it: retired then, or already removed
    // by the DISCONNECT the broker read once it ran again (sent before the stop).
    const again = await retireConsumerSessions({ ...options, signal: new AbortController().signal });
    assert.deepEqual(again.failed, []);
    assert.equal(again.retired.length + again.empty, 1, JSON.stringify(again));
    assert.deepEqual(JSON.parse(readFileSync(stateFile, 'utf8')), { clientIds: ['frozen-1'] });
    assert.ok(handled.includes('held/1'), 'what the session held was written');
  });

  it('a broker that stalls in the middle of a backlog, longer than the idle time, is no sign the session is empty: every message it holds is written before it is removed', async () => {
    // Quiet is not empty: a broker frozen (SIGSTOP here; a long autosave of its database, a host
    // swapping) sends nothing for a while, and the session still holds what it has not sent yet:
    // past max_inflight_messages (as the internal broker's mosquitto.conf sets it), it sends more
    // only as the earlier ones are acknowledged.
    const server = pki.paths.service('internal/mosquitto');
    const dir = join(work.dir, 'stall-broker');
    mkdirSync(dir, { recursive: true });
    const stalled = await startMosquitto(dir, { ca: pki.paths.publicCa, cert: server.cert, key: server.key }, 'max_queued_messages 1000000\nmax_inflight_messages 1000\n');
    const svc = pki.paths.service('internal/distributor');
    const connectHere = (clientId: string) =>
      connectMqtt({ url: stalled.tlsUrl as string, ca: readFileSync(pki.paths.publicCa, 'utf8'), cert: readFileSync(svc.cert, 'utf8'), key: readFileSync(svc.key, 'utf8'), clientId, protocolVersion: 5, clean: false }, log, { resubscribe: false });
    const feeder = await connectAsync(stalled.url, { protocolVersion: 5, clientId: 'feeder' });
    let frozen: Promise<void> | undefined;
    try {
      const filter = '$share/stall/stalled/#';
      const departed = connectHere('stall-2');
      await connected(departed);
      await departed.subscribeAsync(filter, { qos: 1 });
      await endMqtt(departed);
      const N = 2_500;
      await Promise.all(Array.from({ length: N }, (_, i) => feeder.publishAsync(`stalled/${i}`, String(i), { qos: 1 })));
      const written = new Set<string>();
      const stalling = {
        handle: async (topic: string) => {
          written.add(topic);
          if (written.size === 30 && frozen === undefined) {
            // Frozen before this message's PUBACK leaves, for longer than the idle time; it runs again by itself.
            frozen = stalled.process.pause();
            await frozen;
            frozen = new Promise<void>((r) => setTimeout(r, TIMINGS.sessionRetireIdleMs * 2)).then(() => stalled.process.resume());
          }
          return { points: 1, files: 0 };
        },
        deadLetterReceipts: () => [],
      } as unknown as MessageHandler;
      const result = await retireConsumerSessions({
        stateFile: join(work.dir, 'stall', 'consumer-sessions.json'),
        current: ['stall-1'],
        base: 'stall',
        maxConsumers: 2,
        filters: [filter],
        connect: connectHere,
        consume: (client) => new Consumer(client, stalling, new DeadLetters(join(work.dir, 'dead-letter')), { initialMs: 10, maxMs: 100 }, undefined, log),
        signal: new AbortController().signal,
        log,
      });
      await frozen;
      assert.ok(frozen !== undefined, 'the broker was frozen in the middle of the backlog');
      assert.deepEqual(result, { retired: ['stall-2'], empty: 0, failed: [] });
      assert.equal(written.size, N, `every message the session held was written before it was removed (${written.size} of ${N})`);
    } finally {
      await frozen;
      await stalled.process.resume().catch(() => undefined);
      await feeder.endAsync();
      await stalled.process.stop();
    }
  });

  it('a connection lost during the round trip before removal is taken again, not a retirement given up until the next start', async () => {
    // The broker gone for a moment (restarted, the network cut, a stall past the keepalive) just
    // as the UNSUBSCRIBE of the round trip is out: its answer never comes on that connection.
    const filter = '$share/cut/cut/#';
    const departed = connect('cut-2');
    await connected(departed);
    await departed.subscribeAsync(filter, { qos: 1 });
    await endMqtt(departed);
    await Promise.all(Array.from({ length: 5 }, (_, i) => publisher.publishAsync(`cut/${i}`, String(i), { qos: 1 })));
    let cuts = 0;
    const cutting = (clientId: string) => {
      const c = connect(clientId);
      let unsubscribes = 0;
      c.on('packetsend', (p) => {
        // the first stops collecting; the second is the round trip
        if (p.cmd === 'unsubscribe' && ++unsubscribes === 2) {
          cuts++;
          setImmediate(() => c.stream.destroy());
        }
      });
      return c;
    };
    const result = await retireConsumerSessions({ stateFile: join(work.dir, 'cut', 'consumer-sessions.json'), current: ['cut-1'], base: 'cut', maxConsumers: 2, filters: [filter], connect: cutting, consume, signal: new AbortController().signal, log });
    assert.equal(cuts, 1, 'the connection was cut during the round trip');
    assert.deepEqual(result, { retired: ['cut-2'], empty: 0, failed: [] });
    for (let i = 0; i < 5; i++) assert.ok(handled.includes(`cut/${i}`), `cut/${i} written`);
  });
});
