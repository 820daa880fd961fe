import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { IPublishPacket, MqttClient } from 'mqtt';
import { Consumer } from '../../internal-network/distributor/consumer.ts';
import { DeadLetters } from '../../internal-network/distributor/dead-letter.ts';
import { openEventTagAdmissions } from '../../internal-network/distributor/event-tags.ts';
import { FileStore } from '../../internal-network/distributor/file-store.ts';
import { MessageHandler } from '../../internal-network/distributor/message-handler.ts';
import { DistributorMetrics } from '../../internal-network/distributor/metrics.ts';
import { ReplayWindows } from '../../internal-network/distributor/security/replay-window.ts';
import { MessageVerifier } from '../../internal-network/distributor/security/verifier.ts';
import { InfluxV1Sink } from '../../internal-network/distributor/sinks/influx-v1.ts';
import { OVERFLOW_TAG_VALUE } from '../../internal-network/distributor/security/tag-admission.ts';
import { claimStateSlot } from '../../internal-network/distributor/state-lease.ts';
import { DeviceKeyRegistry } from '../../internal-network/shared/device-keys.ts';
import { EXIT } from '../../scripts/admin/run.ts';
import { REPO_ROOT } from '../../scripts/admin/paths.ts';
import { InfluxV1 } from '../../scripts/local-stack/databases.ts';
import { gatewayUplinkTopic, uplinkTopic } from '../../shared/contract/topics.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { LIMITS } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';
import { signGroup } from '../../shared/security/message-auth.ts';
import { tempDir } from '../helpers/pki.ts';
import { eventually } from '../helpers/ws-device.ts';

/**
 * `fieldstream-admin dead-letters list|replay` on letters the distributor's own consumer kept: a
 * device's reading refused by a real InfluxDB (a field that changed type), an invalid payload, and
 * a letter altered in the folder. The replay writes only what the device provably sent, only once
 * the cause is fixed, records what it wrote, and writing a letter twice leaves one point.
 */
const DB = 'replay';
const DEVICE = 'sensor-1';
const T0 = 1_700_000_000_000;

describe('replaying dead letters into the database (real InfluxDB, the distributor consumer, bin/fieldstream-admin)', () => {
  const work = tempDir('dead-letter-replay');
  const letters = join(work.dir, 'letters');
  const keysDir = join(work.dir, 'keys');
  /** the distributor's DISTRIBUTOR_STATE_DIR: the event tag values it admitted */
  const state = join(work.dir, 'state');
  const key = randomBytes(32);
  let influx: InfluxV1;

  before(async () => {
    mkdirSync(keysDir, { recursive: true });
    mkdirSync(state, { recursive: true });
    writeFileSync(join(keysDir, `${DEVICE}.key`), key.toString('hex'), { mode: 0o600 });
    influx = await InfluxV1.start(join(work.dir, 'influx'), DB);
  });
  after(async () => {
    await influx?.process.stop();
    work.cleanup();
  });

  const admin = (...args: string[]) =>
    new Promise<{ code: number; out: string; err: string }>((resolve) => {
      execFile(
        join(REPO_ROOT, 'bin', 'fieldstream-admin'),
        ['dead-letters', ...args],
        {
          cwd: work.dir,
          env: {
            PATH: process.env.PATH,
            FIELDSTREAM_ENV_FILE: '/dev/null',
            DEAD_LETTER_PATH: letters,
            DISTRIBUTOR_DEVICE_KEYS_DIR: keysDir,
            DISTRIBUTOR_STATE_DIR: state,
            DISTRIBUTOR_REQUIRE_SIGNATURES: 'true',
            INFLUXDB_URL: influx.url,
            INFLUXDB_DATABASE: DB,
            INFLUXDB_USERNAME: influx.user,
            INFLUXDB_PASSWORD: influx.password,
            FILE_STORAGE_PATH: join(work.dir, 'files'),
          },
        },
        (err, out, errText) => resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, out, err: errText }),
      );
    });
  const readings = async () => {
    const r = await influx.query(`SELECT * FROM readings WHERE device = '${DEVICE}'`, DB);
    const series = r.results?.[0]?.series?.[0];
    if (!series) return [];
    return series.values.map((v) => Object.fromEntries(series.columns.map((c, i) => [c, v[i]])) as Record<string, unknown>);
  };
  /** A device's envelope of one reading, signed as the field client signs (a group of one). */
  const envelope = (seq: number, payload: Record<string, unknown>) =>
    Buffer.from(
      JSON.stringify({
        v: 1,
        deviceId: DEVICE,
        dataType: 'timeseries',
        gatewayId: 'gw-1',
        receivedAt: Date.now(),
        messages: [{ messageId: `m${seq}`, auth: signGroup(key, { deviceId: DEVICE, dataType: 'timeseries', epoch: 'e1', ts: Date.now() }, [{ seq, payload }]), payload }],
      }),
    );

  it('keeps the refused reading as the distributor does, replays it once the cause is fixed, and only what the device signed', async () => {
    // The distributor's consumer, handler and dead letters, as distributor.ts wires them.
    const log = createLogger('test', 'silent');
    const sink = new InfluxV1Sink({ url: influx.url, database: DB, username: influx.user, password: influx.password, timeoutMs: 5000 });
    const verifier = new MessageVerifier(new DeviceKeyRegistry(keysDir), new ReplayWindows(join(work.dir, 'replay')), { requireSignatures: true, freshnessMs: 30_000, maxDelayMs: 86_400_000 }, log);
    const metrics = new DistributorMetrics();
    const dead = new DeadLetters(letters);
    const mqtt = { reschedulePing: () => undefined, on: () => undefined, options: {} } as unknown as MqttClient;
    const consumer = new Consumer(mqtt, new MessageHandler(sink, new FileStore(join(work.dir, 'files')), verifier, metrics), dead, { initialMs: 10, maxMs: 50 }, undefined, log, metrics.deadLetters);
    const deliver = async (payload: Buffer) => {
      const acked = { done: false };
      mqtt.handleMessage({ cmd: 'publish', topic: uplinkTopic(DEVICE, 'timeseries'), payload, qos: 1, dup: false, retain: false } as IPublishPacket, () => (acked.done = true));
      await eventually(() => (acked.done ? true : undefined), 10_000, 'acknowledged');
    };
    const refused = envelope(2, { temperature: 'hot', humidity: 40, timestamp: T0 + 1 });
    try {
      await deliver(envelope(1, { temperature: 21.5, timestamp: T0 }));
      await deliver(refused); // temperature was a float: InfluxDB refuses a string (field type conflict)
      await deliver(Buffer.from('not an envelope'));
    } finally {
      consumer.stop();
      await dead.close();
    }
    assert.equal((await readings()).length, 1, 'the first reading is written, the refused one is not');
    // A letter altered in the folder: its reading no longer matches the device's signature.
    const [file] = readdirSync(letters);
    const forged = JSON.parse(refused.toString()) as { messages: Array<{ payload: Record<string, unknown> }> };
    forged.messages[0]!.payload.humidity = 99;
    appendFileSync(join(letters, file!), `${JSON.stringify({ at: new Date().toISOString(), code: 'DISTRIBUTOR_WRITE_REJECTED', message: 'forged', topic: uplinkTopic(DEVICE, 'timeseries'), payloadBase64: Buffer.from(JSON.stringify(forged)).toString('base64') })}\n`);

    const listed = await admin('list');
    assert.equal(listed.code, EXIT.ok, listed.err);
    assert.match(listed.out, /\n\d{4}-\d\d-\d\d\.jsonl \(in use\) +\d+ +3 +2 +0 +0 +DISTRIBUTOR_WRITE_REJECTED 2, CONTRACT_INVALID_ENVELOPE 1\n/);
    assert.match(listed.out, /unless it is in use: the distributor may still be appending to it/);
    const json = JSON.parse((await admin('list', '--json')).out) as Array<{ letters: number; withData: number; replayed: number }>;
    assert.deepEqual(json.map((f) => [f.letters, f.withData, f.replayed]), [[3, 2, 0]]);

    // Not fixed yet: refused again, reported, exit 1; the forged letter and the junk are never written.
    const early = await admin('replay');
    assert.equal(early.code, EXIT.failed);
    assert.match(early.out, /:1 {2}DEAD_LETTERS_REFUSED_AGAIN {2}InfluxDB 1\.x .* refused it again: .*field type conflict/);
    assert.match(early.out, /:2 {2}DEAD_LETTER_NOT_REPLAYABLE {2}its payload is not a valid message \(CONTRACT_INVALID_ENVELOPE\)/);
    assert.match(early.out, /:3 {2}DEAD_LETTER_NOT_REPLAYABLE {2}none of its 1 messages can be written: 1 not authentic under its device key/);
    assert.match(early.err, /^error DEAD_LETTERS_REFUSED_AGAIN: 1 letter was refused again/);
    assert.equal((await readings()).length, 1);

    // A dry run checks and writes nothing.
    await influx.query('DROP MEASUREMENT readings', DB); // the operator's fix: the measurement starts again
    const dry = await admin('replay', '--dry-run');
    assert.equal(dry.code, EXIT.ok, dry.out + dry.err);
    assert.match(dry.out, /^Would replay 1 letter \(1 point\)/);
    assert.deepEqual(await readings(), []);

    const fixed = await admin('replay');
    assert.equal(fixed.code, EXIT.ok, fixed.out + fixed.err);
    assert.match(fixed.out, /^Replayed 1 letter \(1 point\) from .* into InfluxDB 1\.x/);
    const rows = await readings();
    assert.deepEqual(rows.map((r) => [r.time, r.temperature, r.humidity]), [[T0 + 1, 'hot', 40]], 'the reading as the device signed it, not the forged one');

    // Run again: skipped. Its record lost (a crash between the write and the record): written again, still one point.
    const again = await admin('replay');
    assert.match(again.out, /^Replayed 0 letters .*\n1 replayed before/);
    rmSync(join(letters, 'replayed.jsonl'));
    assert.match((await admin('replay')).out, /^Replayed 1 letter/);
    assert.equal((await readings()).length, 1);
    assert.deepEqual((JSON.parse((await admin('list', '--json')).out) as Array<{ replayed: number }>).map((f) => f.replayed), [1]);
  });

  it("replays a gateway's envelope set aside by a defect (DISTRIBUTOR_MESSAGE_FAILED): each device's section as that device's, its signed messages only", async () => {
    const dir = join(work.dir, 'letters-gateway');
    const dead = new DeadLetters(dir);
    const reading = { pressure: 1013.25, timestamp: T0 + 10 }; // temperature is a string now, since the first replay
    const own = JSON.parse(envelope(10, reading).toString()) as { messages: unknown[] };
    const gatewayEnvelope = {
      v: 1,
      gatewayId: 'gw-1',
      receivedAt: Date.now(),
      dataType: 'timeseries',
      devices: [
        { deviceId: DEVICE, messages: own.messages },
        { deviceId: 'ghost-9', messages: [{ messageId: 'g1', payload: { pressure: 1, timestamp: T0 + 11 } }] }, // no key, unsigned
      ],
    };
    await dead.put(gatewayUplinkTopic('gw-1'), Buffer.from(JSON.stringify(gatewayEnvelope)), new FieldStreamError('DISTRIBUTOR_MESSAGE_FAILED', 'a defect'));
    await dead.close();
    const r = await admin('replay', '--dead-letters', dir);
    assert.equal(r.code, EXIT.ok, r.out + r.err);
    assert.match(r.out, /^Replayed 0 letters and 1 in part \(1 point\) .*; messages left out: 1 unsigned where signatures are required/);
    assert.match(r.out, /:1 {2}DEAD_LETTER_PARTLY_REPLAYED {2}1 of its 2 messages were written/);
    assert.deepEqual((await readings()).filter((p) => p.time === T0 + 10).map((p) => p.pressure), [1013.25]);
    const ghost = await influx.query(`SELECT * FROM readings WHERE device = 'ghost-9'`, DB);
    assert.equal(ghost.results?.[0]?.series, undefined, 'nothing of the device the registry does not know');
    // Not recorded as replayed: written in part again (the same point) until all of it can be.
    assert.match((await admin('replay', '--dead-letters', dir)).out, /^Replayed 0 letters and 1 in part \(1 point\)/);
    assert.equal((await readings()).filter((p) => p.time === T0 + 10).length, 1);

    // A letter read while the distributor is appending it (or torn by a crash): reported, not
    // recorded, the letters around it replayed; once whole, the next run writes it.
    const [file] = readdirSync(dir).filter((f) => f.endsWith('.jsonl'));
    const letter = `${JSON.stringify({ at: new Date().toISOString(), code: 'DISTRIBUTOR_WRITE_REJECTED', message: 'm', topic: uplinkTopic(DEVICE, 'timeseries'), payloadBase64: envelope(12, { pressure: 990, timestamp: T0 + 12 }).toString('base64') })}\n`;
    const half = Math.floor(letter.length / 2);
    appendFileSync(join(dir, file!), letter.slice(0, half));
    const torn = await admin('replay', '--dead-letters', dir);
    assert.equal(torn.code, EXIT.ok, torn.out + torn.err);
    assert.match(torn.out, /^Replayed 0 letters and 1 in part/);
    assert.match(torn.out, /:2 {2}DEAD_LETTER_UNREADABLE {2}not a dead letter \(a torn line after a crash, a line being appended/);
    assert.equal((await readings()).filter((p) => p.time === T0 + 12).length, 0);
    appendFileSync(join(dir, file!), letter.slice(half));
    const whole = await admin('replay', '--dead-letters', dir);
    assert.match(whole.out, /^Replayed 1 letter and 1 in part \(2 points\)/);
    assert.doesNotMatch(whole.out, /DEAD_LETTER_UNREADABLE/);
    assert.deepEqual((await readings()).filter((p) => p.time === T0 + 12).map((p) => p.pressure), [990]);
  });

  it('writes one point of a message a letter holds in copies stamped with other arrival times (a compromised DMZ writes them)', async () => {
    const dir = join(work.dir, 'letters-copies');
    const dead = new DeadLetters(dir);
    const arrived = Date.now();
    const env = JSON.parse(envelope(20, { wind: 7 }).toString()) as { receivedAt: number; messages: Array<Record<string, unknown>> };
    env.receivedAt = arrived;
    const signed = env.messages[0]!;
    const year = 365 * 86_400_000;
    env.messages = [
      { ...signed, receivedAt: arrived },
      { ...signed, receivedAt: arrived - year }, // no timestamp of its own: it would be stored at its arrival
      { ...signed, receivedAt: arrived + year },
      { ...signed, receivedAt: arrived + 1_000 }, // within the spread and the freshness: a copy all the same
    ];
    await dead.put(uplinkTopic(DEVICE, 'timeseries'), Buffer.from(JSON.stringify(env)), new FieldStreamError('DISTRIBUTOR_WRITE_REJECTED', 'refused'));
    // A second letter holding only a copy, arrived two seconds later (a resend): written with the first.
    await dead.put(uplinkTopic(DEVICE, 'timeseries'), Buffer.from(JSON.stringify({ ...env, receivedAt: arrived + 2_000, messages: [{ ...signed, receivedAt: arrived + 2_000 }] })), new FieldStreamError('DISTRIBUTOR_WRITE_REJECTED', 'refused'));
    await dead.close();
    const r = await admin('replay', '--dead-letters', dir);
    assert.equal(r.code, EXIT.ok, r.out + r.err);
    assert.match(r.out, /^Replayed 1 letter and 1 in part \(1 point\) .*messages left out: 2 an arrival time that does not agree with its envelope's or with its signing, 2 a copy of a message met before/);
    assert.match(r.out, /:1 {2}DEAD_LETTER_PARTLY_REPLAYED {2}1 of its 4 messages were written/);
    const wind = await influx.query(`SELECT wind FROM readings WHERE device = '${DEVICE}' AND wind = 7`, DB);
    assert.deepEqual(wind.results?.[0]?.series?.[0]?.values.map((v) => v[0]), [arrived], 'one point, at the arrival the device signed for');
  });

  it("stores a file whose record the database refused, whole or in chunks, and writes its record once the cause is fixed: one record each, however often replayed", async () => {
    const dir = join(work.dir, 'letters-files');
    const log = createLogger('test', 'silent');
    const sink = new InfluxV1Sink({ url: influx.url, database: DB, username: influx.user, password: influx.password, timeoutMs: 5000 });
    // The cause: `size` of measurement files is a string here (another program's points, in the
    // shards of both records' times), and every record's is a number.
    const completedAt = Date.now();
    await sink.write([T0, completedAt - 60_000].map((time) => ({ measurement: 'files', tags: { device: 'other' }, fields: { size: 'large' }, time })));
    const verifier = new MessageVerifier(new DeviceKeyRegistry(keysDir), new ReplayWindows(join(work.dir, 'replay-files')), { requireSignatures: true, freshnessMs: 30_000, maxDelayMs: 86_400_000 }, log);
    const metrics = new DistributorMetrics();
    const dead = new DeadLetters(dir);
    const mqtt = { reschedulePing: () => undefined, on: () => undefined, options: {} } as unknown as MqttClient;
    const consumer = new Consumer(mqtt, new MessageHandler(sink, new FileStore(join(work.dir, 'files')), verifier, metrics), dead, { initialMs: 10, maxMs: 50 }, undefined, log, metrics.deadLetters);
    const deliver = async (payload: Buffer) => {
      const acked = { done: false };
      mqtt.handleMessage({ cmd: 'publish', topic: uplinkTopic(DEVICE, 'file'), payload, qos: 1, dup: false, retain: false } as IPublishPacket, () => (acked.done = true));
      await eventually(() => (acked.done ? true : undefined), 10_000, 'acknowledged');
    };
    /** A device's envelope of one file message, signed as the field client signs it (a chunk: its transfer the epoch, its index the seq). */
    const fileEnvelope = (epoch: string, seq: number, payload: Record<string, unknown>, receivedAt: number) =>
      Buffer.from(
        JSON.stringify({
          v: 1,
          deviceId: DEVICE,
          dataType: 'file',
          gatewayId: 'gw-1',
          receivedAt,
          messages: [{ messageId: `${epoch}-${seq}`, auth: signGroup(key, { deviceId: DEVICE, dataType: 'file', epoch, ts: Date.now() }, [{ seq, payload }]), payload }],
        }),
      );
    const whole = Buffer.from('a scan, sent whole');
    const chunked = Buffer.from('a longer scan, sent in two chunks');
    const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
    // In the contract's order: what is signed is the payload's JSON as the distributor parses it.
    const transfer = (index: number) => ({ id: 'fscan2', index, count: 2, size: chunked.length, sha256: sha(chunked) });
    try {
      await deliver(fileEnvelope('files-e1', 1, { filename: 'scan1.txt', contentType: 'text/plain', data: whole.toString('base64'), metadata: { timestamp: T0 + 40 } }, Date.now()));
      await deliver(fileEnvelope('fscan2', 0, { filename: 'scan2.txt', data: chunked.subarray(0, 10).toString('base64'), transfer: transfer(0) }, completedAt - 1000));
      await deliver(fileEnvelope('fscan2', 1, { filename: 'scan2.txt', data: chunked.subarray(10).toString('base64'), transfer: transfer(1) }, completedAt));
    } finally {
      consumer.stop();
      await dead.close();
    }
    const records = async () => {
      const r = await influx.query(`SELECT * FROM files WHERE device = '${DEVICE}'`, DB);
      const series = r.results?.[0]?.series?.[0];
      return (series?.values ?? []).map((v) => Object.fromEntries(series!.columns.map((c, i) => [c, v[i]])) as Record<string, unknown>);
    };
    assert.deepEqual(await records(), [], 'both records refused');
    assert.deepEqual(readdirSync(join(work.dir, 'files', DEVICE)).sort(), ['scan1.txt', 'scan2.txt'], 'both files stored before their records');
    assert.deepEqual((JSON.parse((await admin('list', '--json', '--dead-letters', dir)).out) as Array<{ letters: number; withData: number }>).map((f) => [f.letters, f.withData]), [[2, 2]], 'the two letters hold data a replay writes');

    const early = await admin('replay', '--dead-letters', dir);
    assert.equal(early.code, EXIT.failed, early.out + early.err);
    assert.match(early.out, /:1 {2}DEAD_LETTERS_REFUSED_AGAIN {2}.*field type conflict/);
    assert.match(early.out, /:2 {2}DEAD_LETTERS_REFUSED_AGAIN {2}.*field type conflict/);

    await influx.query('DROP MEASUREMENT files', DB); // the operator's fix
    const dry = await admin('replay', '--dry-run', '--dead-letters', dir);
    assert.match(dry.out, /^Would replay 2 letters \(2 points\)/, dry.out + dry.err);
    assert.deepEqual(await records(), []);
    const fixed = await admin('replay', '--dead-letters', dir);
    assert.equal(fixed.code, EXIT.ok, fixed.out + fixed.err);
    assert.match(fixed.out, /^Replayed 2 letters \(2 points\)/);
    const expected = [
      [T0 + 40, 'scan1.txt', `${DEVICE}/scan1.txt`, whole.length, sha(whole)],
      [completedAt, 'scan2.txt', `${DEVICE}/scan2.txt`, chunked.length, sha(chunked)], // at the arrival of the chunk that completed it, as the distributor recorded it
    ];
    const rows = () => records().then((rs) => rs.map((r) => [r.time, r.filename, r.path, r.size, r.sha256]).sort((a, b) => Number(a[0]) - Number(b[0])));
    assert.deepEqual(await rows(), expected);
    assert.deepEqual(readdirSync(join(work.dir, 'files', DEVICE)).sort(), ['scan1.txt', 'scan2.txt'], 'no second copy of either file');
    // Its record lost (a kill between the write and the record): written again, still one record each.
    rmSync(join(dir, 'replayed.jsonl'));
    assert.match((await admin('replay', '--dead-letters', dir)).out, /^Replayed 2 letters/);
    assert.deepEqual(await rows(), expected);
  });

  it('refuses again a reading dated further ahead than the distributor takes (LIMITS.pointMaxAheadMs): replayable once its time has come, not before, so InfluxDB makes no shard for its week', async () => {
    const dir = join(work.dir, 'letters-ahead');
    const dead = new DeadLetters(dir);
    const ahead = Date.now() + LIMITS.pointMaxAheadMs + 30 * 86_400_000;
    await dead.put(uplinkTopic(DEVICE, 'timeseries'), envelope(30, { wind: 30, timestamp: ahead }), new FieldStreamError('DISTRIBUTOR_WRITE_REJECTED', 'a point of measurement "readings" is dated too far ahead'));
    await dead.close();
    const shardsBefore = (await influx.shards(DB)).length;
    const r = await admin('replay', '--dead-letters', dir);
    assert.equal(r.code, EXIT.failed, r.out + r.err);
    assert.match(r.out, /:1 {2}DEAD_LETTERS_REFUSED_AGAIN {2}.*days ahead of this clock/);
    assert.match(r.err, /^error DEAD_LETTERS_REFUSED_AGAIN: /);
    const dry = await admin('replay', '--dry-run', '--dead-letters', dir);
    assert.match(dry.out, /^Would replay 0 letters/, 'a dry run says so too');
    assert.equal((await readings()).filter((p) => p.time === ahead).length, 0, 'not written');
    assert.equal((await influx.shards(DB)).length, shardsBefore, 'no shard made for a week months ahead');
    assert.deepEqual((JSON.parse((await admin('list', '--json', '--dead-letters', dir)).out) as Array<{ replayed: number }>).map((f) => f.replayed), [0], 'left to replay once its time has come');
  });

  it("bounds events' types and severities by the values the distributors admitted, their state read beside them, never written: the others stored as ~other, their value in a field", async () => {
    const dir = join(work.dir, 'letters-events');
    const log = createLogger('test', 'silent');
    // A running distributor: it holds slot 1's lease and admitted two types and a severity for the
    // device, through its own admissions; a second replica (slot 2) admitted a third type.
    const lease = claimStateSlot(state, 'distributor-running', () => assert.fail('the replay took the distributor\'s slot'));
    const running = openEventTagAdmissions(lease.dir, log);
    const replica = join(state, 'instances', '2');
    mkdirSync(replica, { recursive: true });
    const ADMITTED = ['door_open', 'door_closed'];
    for (const t of ADMITTED) assert.ok(running.event_type.admits(DEVICE, t));
    assert.ok(running.severity.admits(DEVICE, 'warning'));
    assert.ok(openEventTagAdmissions(replica, log).event_type.admits(DEVICE, 'valve_stuck'));
    const stateFiles = () =>
      [lease.dir, replica].flatMap((d) => ['event-types.jsonl', 'event-severities.jsonl'].map((f) => (existsSync(join(d, f)) ? readFileSync(join(d, f), 'utf8') : `${f} absent`)));
    const before = stateFiles();

    // Letters of the device's signed events: the admitted types, and twice its bound of invented ones.
    const INVENTED = 2 * LIMITS.eventTypesPerDevice;
    const invented = Array.from({ length: INVENTED }, (_, i) => `invented.${String(i).padStart(4, '0')}`);
    let seq = 100;
    const events = (payloads: Array<Record<string, unknown>>) => {
      const header = { deviceId: DEVICE, dataType: 'event' as const, epoch: 'events-e1', ts: Date.now() };
      const members = payloads.map((payload) => ({ seq: seq++, payload }));
      const auth = signGroup(key, header, members);
      const messages = members.map((m, j) => ({ messageId: `ev${m.seq}`, ...(j === 0 ? { auth } : { seq: m.seq }), payload: m.payload }));
      return Buffer.from(JSON.stringify({ v: 1, deviceId: DEVICE, dataType: 'event', gatewayId: 'gw-1', receivedAt: Date.now(), messages }));
    };
    const dead = new DeadLetters(dir);
    const refused = new FieldStreamError('DISTRIBUTOR_WRITE_REJECTED', 'refused');
    const known = [
      { eventType: 'door_open', severity: 'warning', message: 'k0', timestamp: T0 + 100 },
      { eventType: 'door_closed', severity: 'info', message: 'k1', timestamp: T0 + 101 }, // info: admitted by no distributor
      { eventType: 'valve_stuck', severity: 'warning', message: 'k2', timestamp: T0 + 102 },
    ];
    await dead.put(uplinkTopic(DEVICE, 'event'), events(known), refused);
    for (let i = 0; i < INVENTED; i += 50) {
      await dead.put(uplinkTopic(DEVICE, 'event'), events(invented.slice(i, i + 50).map((eventType, j) => ({ eventType, severity: 'warning', message: `m${i + j}`, timestamp: T0 + 1_000 + i + j }))), refused);
    }
    await dead.close();
    const letterCount = 1 + INVENTED / 50;
    const points = known.length + INVENTED;
    const rows = () => influx.rows(DB, `SELECT "event_type", "event_type_value", "severity", "severity_value", "message" FROM "events" WHERE "device" = '${DEVICE}'`);

    const dry = await admin('replay', '--dry-run', '--dead-letters', dir);
    assert.equal(dry.code, EXIT.ok, dry.out + dry.err);
    assert.match(dry.out, new RegExp(`^Would replay ${letterCount} letters \\(${points} points\\)`));
    assert.match(dry.out, new RegExp(`\\nthe event_type of ${INVENTED} events, the severity of 1 event would be stored as ~other: values no distributor admitted for the device \\(${state}\\); each value in the field event_type_value, severity_value\\n`));
    assert.deepEqual(await rows(), [], 'a dry run writes nothing');

    const r = await admin('replay', '--dead-letters', dir);
    assert.equal(r.code, EXIT.ok, r.out + r.err);
    assert.match(r.out, new RegExp(`^Replayed ${letterCount} letters \\(${points} points\\)`));
    assert.match(r.out, new RegExp(`\\nthe event_type of ${INVENTED} events, the severity of 1 event was stored as ~other`));
    const stored = new Map((await rows()).map((row) => [String(row.message), row]));
    assert.equal(stored.size, points, 'every event stored');
    // The values a distributor admitted keep their own tag; the others are ~other, their value in the field.
    const view = (m: string) => {
      const row = stored.get(m);
      return row && [row.event_type, row.event_type_value, row.severity, row.severity_value];
    };
    assert.deepEqual(view('k0'), ['door_open', null, 'warning', null]);
    assert.deepEqual(view('k1'), ['door_closed', null, OVERFLOW_TAG_VALUE, 'info']);
    assert.deepEqual(view('k2'), ['valve_stuck', null, 'warning', null], "slot 2's value, a replica's");
    for (let i = 0; i < INVENTED; i++) assert.deepEqual(view(`m${i}`), [OVERFLOW_TAG_VALUE, invented[i], 'warning', null], `m${i}`);
    // What InfluxDB indexes: the admitted values and ~other, not the letters' 200 types.
    const tagValues = async (k: string) => (await influx.rows(DB, `SHOW TAG VALUES FROM "events" WITH KEY = "${k}"`)).map((v) => String(v.value)).sort();
    assert.deepEqual(await tagValues('event_type'), [...ADMITTED, 'valve_stuck', OVERFLOW_TAG_VALUE].sort());
    assert.deepEqual(await tagValues('severity'), ['warning', OVERFLOW_TAG_VALUE].sort());

    // The distributor's state as it was, and its lease still its own: the replay read it beside it.
    assert.deepEqual(stateFiles(), before);
    assert.doesNotThrow(() => lease.assertHeld());
    lease.release();
  });

  it('says where the folder is missing, and what the command takes', async () => {
    const missing = await admin('list', '--dead-letters', join(work.dir, 'nowhere'));
    assert.equal(missing.code, EXIT.notFound);
    assert.match(missing.err, /^error DEAD_LETTERS_NOT_FOUND: /);
    assert.equal((await admin()).code, EXIT.usage);
    assert.equal((await admin('replay', '--code', 'no such')).code, EXIT.usage);
    assert.equal((await admin('replay', '--code', 'NO_SUCH_CODE')).code, EXIT.usage);
    const noKeys = await admin('replay', '--dead-letters', letters, '--certs-dir', join(work.dir, 'no-certs'));
    assert.equal(noKeys.code, EXIT.ok, 'DISTRIBUTOR_DEVICE_KEYS_DIR is set: the certificates folder is not where the keys are looked for');
    const missingKeys = await new Promise<{ code: number; err: string }>((resolve) =>
      execFile(join(REPO_ROOT, 'bin', 'fieldstream-admin'), ['dead-letters', 'replay', '--dead-letters', letters, '--certs-dir', join(work.dir, 'no-certs')], { cwd: work.dir, env: { PATH: process.env.PATH, FIELDSTREAM_ENV_FILE: '/dev/null' } }, (err, _out, errText) =>
        resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, err: errText }),
      ),
    );
    assert.equal(missingKeys.code, EXIT.notFound);
    assert.match(missingKeys.err, /^error DEAD_LETTERS_NO_KEYS: No folder of device signing keys at .*no-certs\/internal\/device-keys/);
    assert.equal((await admin('list', '--dry-run')).code, EXIT.usage);
    // No distributor state where it looks: a wrong path, under which every event would be ~other.
    const noState = await admin('replay', '--dead-letters', letters, '--state-dir', join(work.dir, 'no-state'));
    assert.equal(noState.code, EXIT.notFound, noState.out + noState.err);
    assert.match(noState.err, /^error DEAD_LETTERS_NO_STATE: No distributor state folder at .*no-state \(DISTRIBUTOR_STATE_DIR, --state-dir\)/);
  });
});
