import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it, mock } from 'node:test';
import { FileStore } from '../../internal-network/distributor/file-store.ts';
import { MessageHandler } from '../../internal-network/distributor/message-handler.ts';
import { PresenceClearer } from '../../internal-network/distributor/presence-clearer.ts';
import type { MqttClient } from 'mqtt';
import { DistributorMetrics } from '../../internal-network/distributor/metrics.ts';
import { subMillisecondNs, type StoredPoint } from '../../internal-network/distributor/points.ts';
import { MessageVerifier } from '../../internal-network/distributor/security/verifier.ts';
import { ReplayWindows } from '../../internal-network/distributor/security/replay-window.ts';
import { InfluxV1Sink } from '../../internal-network/distributor/sinks/influx-v1.ts';
import { DeviceKeyRegistry } from '../../internal-network/shared/device-keys.ts';
import { InfluxV1 } from '../../scripts/local-stack/databases.ts';
import { gatewaySecurityTopic, gatewayUplinkTopic, statusTopic, uplinkTopic } from '../../shared/contract/topics.ts';
import type { Logger } from '../../shared/logger.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { tempDir } from '../helpers/pki.ts';
import { TIMINGS } from '../../shared/limits.ts';

/**
 * A compromised DMZ publishes well-formed envelopes naming invented devices, tens of thousands a
 * second. Their refusals must not add a database series per invented id, a point and a log line per
 * message, or push the events' times into the future.
 */
describe('security events under a flood of forged messages', () => {
  const tmp = tempDir('security-flood');
  after(() => tmp.cleanup());

  it('counts refusals of unregistered ids per second under one tag, keeps times at or before now, and logs a few lines', async () => {
    mkdirSync(join(tmp.dir, 'keys'));
    writeFileSync(join(tmp.dir, 'keys', 'real-1.key'), `${randomBytes(32).toString('hex')}\n`);
    const written: StoredPoint[] = [];
    const sink = { description: 'memory', write: async (points: readonly StoredPoint[]) => void written.push(...points), close: async () => {} };
    let lines = 0;
    const log = { warn: () => lines++, info: () => lines++, error: () => lines++, debug: () => undefined, child: () => log } as unknown as Logger;
    const verifier = new MessageVerifier(new DeviceKeyRegistry(join(tmp.dir, 'keys')), new ReplayWindows(join(tmp.dir, 'replay')), { requireSignatures: true, freshnessMs: 30_000, maxDelayMs: 3_600_000 }, log);
    const metrics = new DistributorMetrics();
    const handler = new MessageHandler(sink, new FileStore(join(tmp.dir, 'files')), verifier, metrics);

    let n = 0;
    for (let k = 0; k < 40; k++) {
      const env = { v: 1, gatewayId: 'gw-1', receivedAt: Date.now(), dataType: 'timeseries', devices: Array.from({ length: 1000 }, () => ({ deviceId: `x${(n++).toString(36)}`, messages: [{ messageId: 'm', payload: { t: 1 } }] })) };
      await handler.handle(gatewayUplinkTopic('gw-1'), Buffer.from(JSON.stringify(env)));
    }
    // And a flood naming one registered device: its own events, then counts once they would outrun the clock.
    for (let k = 0; k < 3000; k++) {
      const env = { v: 1, deviceId: 'real-1', gatewayId: 'gw-1', receivedAt: Date.now(), dataType: 'timeseries', messages: [{ messageId: `r${k}`, payload: { t: k } }] };
      await handler.handle(uplinkTopic('real-1', 'timeseries'), Buffer.from(JSON.stringify(env)));
    }
    await (handler as unknown as { flushSecurityTally?: (all: boolean) => Promise<number> }).flushSecurityTally?.(true);
    const end = Date.now();

    const count = (p: StoredPoint) => (typeof p.fields.count === 'number' ? p.fields.count : 1);
    const events = written.filter((p) => p.measurement === 'security_events');
    const forged = events.filter((p) => p.tags.device !== 'real-1');
    const tags = new Set(forged.map((p) => p.tags.device));
    assert.ok(tags.size === 1 && tags.has('_unregistered'), `${tags.size} device tags for the invented ids`);
    assert.equal(forged.reduce((s, p) => s + count(p), 0), 40_000, 'every refusal counted');
    assert.ok(forged.length <= 60, `${forged.length} points for 40,000 refusals`);
    const real = events.filter((p) => p.tags.device === 'real-1');
    assert.equal(real.reduce((s, p) => s + count(p), 0), 3000, "every refusal of the registered device, under its id");
    assert.ok(Math.max(...events.map((p) => p.time)) <= end + 1000, `newest event ${Math.max(...events.map((p) => p.time)) - end} ms ahead of the clock`);
    assertDistinct(events);
    assert.ok(lines <= 20, `${lines} log lines`);
    const text = await metrics.metrics.registry.metrics();
    assert.match(text, /^fieldstream_distributor_security_events_total\{[^}]*reason="SECURITY_UNSIGNED"[^}]*\} 43000$/m);
  });

  // Presences and gateways' security reports are the DMZ's word and need no signature: stored for
  // any id, a flood of invented ids added a device_status (or security_events) series per id to
  // InfluxDB, up to its max-series-per-database, past which new devices' readings are refused too.
  it('stores no presence nor gateway report of ids neither registered nor revoked when signatures are required: counted under one tag', async () => {
    const dir = join(tmp.dir, 'presences');
    mkdirSync(join(dir, 'keys'), { recursive: true });
    writeFileSync(join(dir, 'keys', 'real-1.key'), `${randomBytes(32).toString('hex')}\n`);
    const written: StoredPoint[] = [];
    const sink = { description: 'memory', write: async (points: readonly StoredPoint[]) => void written.push(...points), close: async () => {} };
    let lines = 0;
    const log = { warn: () => lines++, info: () => lines++, error: () => lines++, debug: () => undefined, child: () => log } as unknown as Logger;
    const verifier = new MessageVerifier(new DeviceKeyRegistry(join(dir, 'keys')), new ReplayWindows(join(dir, 'replay')), { requireSignatures: true, freshnessMs: 30_000, maxDelayMs: 3_600_000 }, log);
    const metrics = new DistributorMetrics();
    const handler = new MessageHandler(sink, new FileStore(join(dir, 'files')), verifier, metrics);
    for (let i = 0; i < 2000; i++) {
      await handler.handle(statusTopic(`ghost-${i}`), Buffer.from(JSON.stringify({ v: 1, state: 'online', gatewayId: 'gw-1', at: Date.now() })));
    }
    const report = { v: 1, gatewayId: 'gw-1', from: Date.now() - 5000, to: Date.now(), dropped: 0, events: [...Array.from({ length: 999 }, (_, i) => ({ deviceId: `phantom-${i}`, code: 'GATEWAY_RATE_LIMITED', count: 3 })), { deviceId: 'real-1', code: 'GATEWAY_RATE_LIMITED', count: 2 }] };
    await handler.handle(gatewaySecurityTopic('gw-1'), Buffer.from(JSON.stringify(report)));
    await handler.handle(statusTopic('real-1'), Buffer.from(JSON.stringify({ v: 1, state: 'online', gatewayId: 'gw-1', at: Date.now() })));
    await handler.flushSecurityTally(true);

    const devices = new Set(written.map((p) => p.tags.device));
    assert.deepEqual([...devices].sort(), ['_unregistered', 'real-1'], 'no point under an invented id');
    assert.equal(written.filter((p) => p.measurement === 'device_status').length, 1, "the registered device's presence alone is stored");
    const counted = written.filter((p) => p.tags.device === '_unregistered').reduce((s, p) => s + (p.fields.count as number), 0);
    assert.equal(counted, 2000 + 999 * 3, 'every presence and reported refusal of an invented id counted');
    assert.ok(written.length <= 20, `${written.length} points`);
    assert.ok(lines <= 20, `${lines} log lines`);
  });

  // Presences are retained: the internal broker keeps one per id for ever, and a compromised DMZ
  // invents ids without end (test/e2e/retained-presence.test.ts shows it on a real Mosquitto).
  it('asks to clear the retained presences of invented ids only: never a registered or revoked device\'s, nor any while the keys\' folder lists none', async () => {
    const dir = registered(join(tmp.dir, 'clears'), 'real-1');
    writeFileSync(join(dir, 'revoked.txt'), 'gone-1\n');
    const log = { warn: () => undefined, info: () => undefined, error: () => undefined, debug: () => undefined, child: () => log } as unknown as Logger;
    const handlerOver = (keys: string, clears: string[]) => {
      const verifier = new MessageVerifier(new DeviceKeyRegistry(keys, join(dir, 'revoked.txt')), new ReplayWindows(join(dir, `replay-${clears.length}-${keys.length}`)), { requireSignatures: true, freshnessMs: 30_000, maxDelayMs: 3_600_000 }, log);
      const sink = { description: 'memory', write: async () => undefined, close: async () => {} };
      return new MessageHandler(sink, new FileStore(join(dir, 'files')), verifier, new DistributorMetrics(), { clear: (topic: string) => void clears.push(topic) });
    };
    const presence = Buffer.from(JSON.stringify({ v: 1, state: 'online', gatewayId: 'gw-1', at: Date.now() }));
    const clears: string[] = [];
    const handler = handlerOver(join(dir, 'keys'), clears);
    for (const id of ['real-1', 'gone-1', 'ghost-1']) await handler.handle(statusTopic(id), presence, Date.now(), true);
    await handler.handle(statusTopic('ghost-2'), presence, Date.now(), false); // not retained: nothing to clear
    // Retained and no presence at all, or of no valid id: a dead letter, and cleared all the same.
    await assert.rejects(handler.handle(statusTopic('ghost-3'), Buffer.from('not json'), Date.now(), true), { code: 'CONTRACT_INVALID_ENVELOPE' });
    await assert.rejects(handler.handle('fieldstream/v1/devices/$bad/status', presence, Date.now(), true), { code: 'CONTRACT_INVALID_TOPIC' });
    // Of a registered or revoked id too: what is no presence, or larger than a presence can be
    // (padded), is what the DMZ left there, cleared; the padded one is still stored.
    await assert.rejects(handler.handle(statusTopic('real-1'), Buffer.from('not json'), Date.now(), true), { code: 'CONTRACT_INVALID_ENVELOPE' });
    const padded = Buffer.concat([presence.subarray(0, -1), Buffer.alloc(2048, ' '), Buffer.from('}')]);
    assert.deepEqual(await handler.handle(statusTopic('gone-1'), padded, Date.now(), true), { points: 1, files: 0 });
    // A clear coming back (empty): neither refused nor cleared again.
    assert.deepEqual(await handler.handle(statusTopic('ghost-1'), Buffer.alloc(0), Date.now(), true), { points: 0, files: 0 });
    assert.deepEqual(clears, [statusTopic('ghost-1'), statusTopic('ghost-3'), 'fieldstream/v1/devices/$bad/status', statusTopic('real-1'), statusTopic('gone-1')]);

    // A keys' folder listing no device (not mounted, a wrong path): every id unknown, none cleared.
    const none: string[] = [];
    const blind = handlerOver(join(dir, 'no-such-folder'), none);
    for (const id of ['real-1', 'ghost-1']) await blind.handle(statusTopic(id), presence, Date.now(), true);
    assert.deepEqual(none, []);
  });

  it('clears at most its rate, each topic once while it waits, and counts what finds no room', async () => {
    const published: Array<{ topic: string; payload: Buffer; retain: boolean | undefined }> = [];
    const client = {
      connected: true,
      publish: (topic: string, payload: Buffer, opts: { retain?: boolean }, cb: (err?: Error) => void) => {
        const n = published.push({ topic, payload, retain: opts.retain });
        setImmediate(() => cb(n % 50 === 0 ? new Error('Not authorized') : undefined));
      },
    } as unknown as MqttClient;
    const log = { warn: () => undefined, info: () => undefined, error: () => undefined, debug: () => undefined, child: () => log } as unknown as Logger;
    const counted = { cleared: 0, skipped: 0 };
    const clearer = new PresenceClearer([client], log, { cleared: { inc: () => counted.cleared++ }, skipped: { inc: () => counted.skipped++ } }, { perSecond: 1000, maxPending: 300, tickMs: 100 });
    const started = Date.now();
    for (let i = 0; i < 400; i++) clearer.clear(statusTopic(`ghost-${i % 350}`));
    assert.equal(clearer.waiting, 300, 'each topic once; past the bound, none');
    assert.equal(counted.skipped, 50);
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(published.length, 100, "the first tick's share");
    while (clearer.waiting > 0) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 20));
    assert.ok(Date.now() - started >= 200, 'three ticks at least');
    assert.equal(published.length, 300);
    assert.ok(published.every((p) => p.payload.length === 0 && p.retain === true), 'empty and retained: clears (MQTT 5 §3.3.1.3)');
    assert.deepEqual(counted, { cleared: 294, skipped: 56 }, 'each acknowledged clear counted; the refused ones as skipped');
    clearer.close();
  });

  it("never stores a registered device's own event and a count of its refusals at one time, across a second's turn", async () => {
    // The clock held still, 100 ms before a second turns: the device's events run 1 s ahead of it,
    // into the next second, then are counted; in that next second more are counted, at its start.
    mock.timers.enable({ apis: ['Date'], now: 1_700_000_000_900 });
    try {
      const dir = registered(join(tmp.dir, 'turn'), 'real-2');
      const written: StoredPoint[] = [];
      const handler = memoryDistributor(dir, written);
      const flood = async (from: number, count: number) => {
        for (let k = from; k < from + count; k++) {
          const env = { v: 1, deviceId: 'real-2', gatewayId: 'gw-1', receivedAt: Date.now(), dataType: 'timeseries', messages: [{ messageId: `t${k}`, payload: { t: k } }] };
          await handler.handle(uplinkTopic('real-2', 'timeseries'), Buffer.from(JSON.stringify(env)));
        }
      };
      await flood(0, 1100);
      mock.timers.tick(200);
      await flood(1100, 1100);
      await (handler as unknown as { flushSecurityTally: (all: boolean) => Promise<number> }).flushSecurityTally(true);
      const events = written.filter((p) => p.measurement === 'security_events');
      assert.equal(events.reduce((n, p) => n + (typeof p.fields.count === 'number' ? p.fields.count : 1), 0), 2200, 'every refusal, once');
      assertDistinct(events);
    } finally {
      mock.timers.reset();
    }
  });

  it('keeps apart the events of two distributors refusing in the same millisecond, and their counts of the same second', async () => {
    mock.timers.enable({ apis: ['Date'], now: 1_700_000_000_500 });
    const written: StoredPoint[] = [];
    try {
      const dir = registered(join(tmp.dir, 'replicas'), 'real-3');
      // Two replicas (a shared subscription hands each a share of one flood), as distributor.ts makes them.
      const handlers = ['distributor-a', 'distributor-b'].map((instance) => memoryDistributor(dir, written, instance));
      for (const handler of handlers) {
        const own = { v: 1, deviceId: 'real-3', gatewayId: 'gw-1', receivedAt: Date.now(), dataType: 'timeseries', messages: [{ messageId: 'r', payload: { t: 1 } }] };
        await handler.handle(uplinkTopic('real-3', 'timeseries'), Buffer.from(JSON.stringify(own)));
        const forged = { v: 1, gatewayId: 'gw-1', receivedAt: Date.now(), dataType: 'timeseries', devices: [{ deviceId: 'x-1', messages: [{ messageId: 'm', payload: { t: 1 } }] }] };
        await handler.handle(gatewayUplinkTopic('gw-1'), Buffer.from(JSON.stringify(forged)));
        await handler.flushSecurityTally(true);
      }
      const events = written.filter((p) => p.measurement === 'security_events');
      assert.equal(events.length, 4, 'each replica: its refusal of real-3, its count of x-1');
      assert.deepEqual(events.map((p) => p.tags.distributor), ['distributor-a', 'distributor-a', 'distributor-b', 'distributor-b']);
      assertDistinct(events);
    } finally {
      mock.timers.reset();
    }
    // Written into a real InfluxDB, as the two replicas' sinks would: four points it keeps apart.
    const influx = await InfluxV1.start(join(tmp.dir, 'influx'), 'replicas');
    try {
      const sink = new InfluxV1Sink({ url: influx.url, database: 'replicas', username: influx.user, password: influx.password, timeoutMs: 5_000 });
      await sink.write(written.filter((p) => p.measurement === 'security_events'));
      await sink.close();
      const r = await influx.query('SELECT count("count") FROM security_events GROUP BY "distributor"', 'replicas');
      assert.deepEqual(
        (r.results?.[0]?.series ?? []).map((s) => [s.tags?.distributor, s.values[0]?.[1]]),
        [
          ['distributor-a', 2],
          ['distributor-b', 2],
        ],
      );
    } finally {
      await influx.process.stop();
    }
  });

  it('does not let the arrival time the DMZ writes place a refusal far back, out of the range an operator looks at', async () => {
    // The gateway's receivedAt is the DMZ's word. Taken for the event's time anywhere within
    // DISTRIBUTOR_MAX_DELAY_S (7 days by default), a compromised DMZ stamped its forgeries' refusals
    // days back: the alert (a Prometheus counter) fired, and the Security dashboard (last 6 h) and
    // the console showed nothing new for the device it named.
    mock.timers.enable({ apis: ['Date'], now: 1_700_000_000_000 });
    const written: StoredPoint[] = [];
    try {
      const handler = memoryDistributor(registered(join(tmp.dir, 'backdated'), 'real-5'), written);
      const now = Date.now();
      const forged = { v: 1, deviceId: 'real-5', gatewayId: 'gw-1', receivedAt: now - 50 * 60_000, dataType: 'event', messages: [{ messageId: 'f-1', payload: { eventType: 'alarm' } }] };
      await handler.handle(uplinkTopic('real-5', 'event'), Buffer.from(JSON.stringify(forged)));
      const events = written.filter((p) => p.measurement === 'security_events' && p.tags.device === 'real-5');
      assert.equal(events.length, 1);
      const behind = now - (events[0] as StoredPoint).time;
      assert.ok(behind <= TIMINGS.securityEventArrivalMaxAgeMs + 1000, `the refusal stored ${behind} ms before it was checked`);
    } finally {
      mock.timers.reset();
    }
  });

  it('does not let the arrival time the DMZ writes place a refusal in the future, after the range ending now', async () => {
    // DISTRIBUTOR_FRESHNESS_S (30 s here) is how far the clocks may disagree for a message's
    // freshness; taken for the event's time, an arrival dated 25 s ahead put the refusal 25 s after
    // every dashboard range ending now.
    mock.timers.enable({ apis: ['Date'], now: 1_700_000_000_000 });
    const written: StoredPoint[] = [];
    try {
      const handler = memoryDistributor(registered(join(tmp.dir, 'ahead'), 'real-6'), written);
      const now = Date.now();
      const forged = { v: 1, deviceId: 'real-6', gatewayId: 'gw-1', receivedAt: now + 25_000, dataType: 'event', messages: [{ messageId: 'f-1', payload: { eventType: 'alarm' } }] };
      await handler.handle(uplinkTopic('real-6', 'event'), Buffer.from(JSON.stringify(forged)));
      const events = written.filter((p) => p.measurement === 'security_events' && p.tags.device === 'real-6');
      assert.equal(events.length, 1);
      const ahead = (events[0] as StoredPoint).time - now;
      assert.ok(ahead <= TIMINGS.securityEventMaxLeadMs, `the refusal stored ${ahead} ms after it was checked`);
    } finally {
      mock.timers.reset();
    }
  });

  it('keeps for the next write the counts of every write of them that failed, also of writes in flight at once (a database stalling past a tick)', async () => {
    // The counts are written every TIMINGS.securityTallyFlushMs, whether the last write answered or
    // not: against a database that stalls, several are in flight at once. Each that failed set the
    // counts kept for the next in place of those another had kept: all but the last one's were lost.
    const dir = registered(join(tmp.dir, 'tally-writes'), 'real-4');
    const log = { warn: () => undefined, info: () => undefined, error: () => undefined, debug: () => undefined, child: () => log } as unknown as Logger;
    const written: StoredPoint[] = [];
    const held: (() => void)[] = [];
    let stalled = true;
    const sink = {
      description: 'stalling',
      write: async (points: readonly StoredPoint[]) => {
        if (stalled) {
          await new Promise<void>((resolve) => held.push(resolve));
          throw new FieldStreamError('DISTRIBUTOR_WRITE_FAILED', 'the database timed out');
        }
        written.push(...points);
      },
      close: async () => {},
    };
    const verifier = new MessageVerifier(new DeviceKeyRegistry(join(dir, 'keys')), new ReplayWindows(join(dir, 'replay')), { requireSignatures: true, freshnessMs: 30_000, maxDelayMs: 3_600_000 }, log);
    const handler = new MessageHandler(sink, new FileStore(join(dir, 'files')), verifier, new DistributorMetrics());
    const presence = Buffer.from(JSON.stringify({ v: 1, state: 'online', gatewayId: 'gw-1', at: Date.now() }));
    const writes: Promise<number>[] = [];
    for (const id of ['ghost-a', 'ghost-b', 'ghost-c']) {
      await handler.handle(statusTopic(id), presence);
      writes.push(handler.flushSecurityTally(true));
    }
    assert.equal(held.length, 3, 'three writes in flight at once');
    for (const fail of held) fail();
    for (const w of writes) await assert.rejects(w, { code: 'DISTRIBUTOR_WRITE_FAILED' });
    stalled = false;
    await handler.flushSecurityTally(true);
    assert.equal(written.reduce((n, p) => n + (p.fields.count as number), 0), 3, 'every refusal counted, once');
  });

  it('stores a refusal checked again (its write retried, its message delivered again) as the same point, not a second at a later time', async () => {
    // A write can reach InfluxDB and still fail (its answer lost at the deadline; with PostgreSQL
    // too, the other store down): the message is retried, and a PUBACK lost sends it again. Each
    // time its refusal was a new event at the clock's new millisecond: counted twice on the dashboards.
    const dir = registered(join(tmp.dir, 'again'), 'real-4');
    const influx = await InfluxV1.start(join(tmp.dir, 'influx-again'), 'again');
    mock.timers.enable({ apis: ['Date'], now: 1_700_000_000_000 });
    try {
      const sink = new InfluxV1Sink({ url: influx.url, database: 'again', username: influx.user, password: influx.password, timeoutMs: 5_000 });
      const log = { warn: () => undefined, info: () => undefined, error: () => undefined, debug: () => undefined, child: () => log } as unknown as Logger;
      const verifier = new MessageVerifier(new DeviceKeyRegistry(join(dir, 'keys')), new ReplayWindows(join(dir, 'replay')), { requireSignatures: true, freshnessMs: 30_000, maxDelayMs: 3_600_000 }, log);
      const handler = new MessageHandler(sink, new FileStore(join(dir, 'files')), verifier, new DistributorMetrics());
      const unsigned = (id: string) => Buffer.from(JSON.stringify({ v: 1, deviceId: 'real-4', gatewayId: 'gw-1', receivedAt: Date.now(), dataType: 'event', messages: [{ messageId: id, payload: { eventType: 'alarm' } }] }));
      const first = unsigned('u-1');
      await handler.handle(uplinkTopic('real-4', 'event'), first);
      mock.timers.tick(3);
      await handler.handle(uplinkTopic('real-4', 'event'), first); // the retry
      mock.timers.tick(2_000);
      await handler.handle(uplinkTopic('real-4', 'event'), first); // delivered again later
      await handler.handle(uplinkTopic('real-4', 'event'), unsigned('u-2')); // another message: an event of its own
      // The distributor killed after a write, before the PUBACK (SIGKILL: nothing it remembered is
      // left), started again a minute later: the broker delivers the envelope again (QoS 1). Its
      // refusal is the same point, its time taken from the envelope, not from the new clock.
      mock.timers.tick(60_000);
      const restarted = new MessageHandler(sink, new FileStore(join(dir, 'files')), new MessageVerifier(new DeviceKeyRegistry(join(dir, 'keys')), new ReplayWindows(join(dir, 'replay')), { requireSignatures: true, freshnessMs: 30_000, maxDelayMs: 3_600_000 }, log), new DistributorMetrics());
      await restarted.handle(uplinkTopic('real-4', 'event'), first);
      // Ten refusals of one envelope, stamped alike by the gateway: ten points, apart.
      const ten = JSON.parse(unsigned('x').toString()) as { messages: unknown[] };
      ten.messages = Array.from({ length: 10 }, (_, k) => ({ messageId: `b-${k}`, payload: { eventType: 'alarm' } }));
      await restarted.handle(uplinkTopic('real-4', 'event'), Buffer.from(JSON.stringify(ten)));
      await sink.close();
      const rows = await influx.rows('again', `SELECT "count", message_id FROM security_events WHERE "device" = 'real-4'`);
      assert.deepEqual(rows.map((r) => [r.message_id, r.count]).sort(), [['u-1', 1], ['u-2', 1], ...Array.from({ length: 10 }, (_, k) => [`b-${k}`, 1])].sort());
    } finally {
      mock.timers.reset();
      await influx.process.stop();
    }
  });
});

/** A distributor's handler over the keys in DIR/keys, writing into `written`, its own state in DIR[/instance]. */
function memoryDistributor(dir: string, written: StoredPoint[], instance?: string): MessageHandler {
  const sink = { description: 'memory', write: async (points: readonly StoredPoint[]) => void written.push(...points), close: async () => {} };
  const log = { warn: () => undefined, info: () => undefined, error: () => undefined, debug: () => undefined, child: () => log } as unknown as Logger;
  const own = join(dir, instance ?? '');
  const verifier = new MessageVerifier(new DeviceKeyRegistry(join(dir, 'keys')), new ReplayWindows(join(own, 'replay')), { requireSignatures: true, freshnessMs: 30_000, maxDelayMs: 3_600_000, instance }, log);
  return new MessageHandler(sink, new FileStore(join(own, 'files')), verifier, new DistributorMetrics());
}

/** DIR, its keys folder holding a key for `device`. */
function registered(dir: string, device: string): string {
  mkdirSync(join(dir, 'keys'), { recursive: true });
  writeFileSync(join(dir, 'keys', `${device}.key`), `${randomBytes(32).toString('hex')}\n`);
  return dir;
}

/** What InfluxDB tells points apart by: the measurement (one here), every tag, and the time (to the nanosecond its key gives it: line-protocol.ts). */
function assertDistinct(events: readonly StoredPoint[]): void {
  const identities = new Set(events.map((p) => `${JSON.stringify(Object.entries(p.tags).sort())}|${p.time}|${subMillisecondNs(p)}`));
  assert.equal(identities.size, events.length, 'no two points share (tags, time): InfluxDB would keep one');
}
