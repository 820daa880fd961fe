import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DeadLetters } from '../../internal-network/distributor/dead-letter.ts';
import { replayLetters } from '../../internal-network/distributor/dead-letter-replay.ts';
import { admittedEventTags } from '../../internal-network/distributor/event-tags.ts';
import { PostgresSink } from '../../internal-network/distributor/sinks/postgres/sink.ts';
import { postgresConnection } from '../../internal-network/distributor/sinks/postgres/settings.ts';
import { DeviceKeyRegistry } from '../../internal-network/shared/device-keys.ts';
import { Postgres } from '../../scripts/local-stack/databases.ts';
import { gatewayUplinkTopic, uplinkTopic } from '../../shared/contract/topics.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { createLogger } from '../../shared/logger.ts';
import { signGroup } from '../../shared/security/message-auth.ts';
import { tempDir } from '../helpers/pki.ts';
import { chattr, chattrReason } from '../helpers/chattr.ts';

const USER = 'fieldstream';
const PASSWORD = 'pg-replay-Lk42vW';

/**
 * `dead-letters replay` into a real PostgreSQL 15, which refuses for good what its text cannot hold
 * (U+0000): a letter holding such a message and others is written in what PostgreSQL takes, as the
 * distributor sets aside only what is at fault, and stays to be replayed for the rest.
 */
describe('replaying dead letters into PostgreSQL', () => {
  const work = tempDir('dl-replay-pg');
  const keysDir = join(work.dir, 'keys');
  const state = join(work.dir, 'state');
  const keys = { 'dev-a': randomBytes(32), 'dev-b': randomBytes(32) };
  let db: Postgres;
  let sink: PostgresSink;
  const quiet = createLogger('test', 'silent');

  before(async () => {
    mkdirSync(keysDir, { recursive: true });
    mkdirSync(state, { recursive: true });
    for (const [id, key] of Object.entries(keys)) writeFileSync(join(keysDir, `${id}.key`), key.toString('hex'), { mode: 0o600 });
    db = await Postgres.start(join(work.dir, 'pg'));
    await db.createUser(USER, PASSWORD);
    sink = new PostgresSink(
      postgresConnection({ POSTGRES_URL: `postgres://${USER}:${PASSWORD}@127.0.0.1:${db.port}/${USER}`, POSTGRES_SSL: 'disable', POSTGRES_SCHEMA: 'fieldstream', POSTGRES_POOL_SIZE: 2, POSTGRES_TIMEOUT_MS: 3000 }),
      quiet,
    );
  });
  after(async () => {
    await sink?.close().catch(() => undefined);
    await db?.stop();
    work.cleanup();
  });

  /** A device's messages as its field client signs them (one group), each a reading. */
  const messages = (device: keyof typeof keys, seq: number, payloads: Array<Record<string, unknown>>) => {
    const members = payloads.map((payload, i) => ({ seq: seq + i, payload }));
    const auth = signGroup(keys[device], { deviceId: device, dataType: 'timeseries', epoch: 'e1', ts: Date.now() }, members);
    // The group's signature on its first message, the others with their sequence numbers.
    return payloads.map((payload, i) => ({ messageId: `${device}.${seq + i}`, ...(i === 0 ? { auth } : { seq: seq + i }), payload }));
  };
  const replay = (dir: string) =>
    replayLetters({ dir, sink, keys: new DeviceKeyRegistry(keysDir), eventTags: admittedEventTags(state, quiet), requireSignatures: true, freshnessMs: 30_000 });
  const stored = async (device: string) => (await db.psql(`SELECT string_agg(fields->>'v', ',' ORDER BY time) FROM fieldstream.readings WHERE device = '${device}'`, USER)).trim();

  it("writes the other devices' sections of a gateway's letter that PostgreSQL refuses for one device's string, and leaves the letter to be replayed", async () => {
    const dir = join(work.dir, 'letters-gateway');
    const dead = new DeadLetters(dir);
    const now = Date.now();
    const gatewayEnvelope = {
      v: 1,
      gatewayId: 'gw-1',
      receivedAt: now,
      dataType: 'timeseries',
      devices: [
        { deviceId: 'dev-a', messages: messages('dev-a', 1, [{ v: 1, label: 'nul \u0000 inside', timestamp: now - 2000 }]) },
        { deviceId: 'dev-b', messages: messages('dev-b', 1, [{ v: 2, timestamp: now - 1000 }]) },
      ],
    };
    await dead.put(gatewayUplinkTopic('gw-1'), Buffer.from(JSON.stringify(gatewayEnvelope)), new FieldStreamError('DISTRIBUTOR_MESSAGE_FAILED', 'a defect'));
    await dead.close();

    const report = await replay(dir);
    assert.equal(report.stoppedBy, undefined, String(report.stoppedBy));
    assert.equal(await stored('dev-b'), '2', "dev-b's reading, which PostgreSQL takes, is written");
    assert.equal(await stored('dev-a'), '', 'the reading PostgreSQL cannot hold is not');
    assert.equal(report.replayed, 0, 'not recorded as replayed: its refused part stays to be replayed');
    assert.equal(report.problemCounts.DEAD_LETTERS_REFUSED_AGAIN, 1);
    assert.match(report.problems[0]?.message ?? '', /1 of its 2 points/);
    // Run again: the same, and no second row.
    await replay(dir);
    assert.equal(await stored('dev-b'), '2');
    assert.equal(await db.psql("SELECT count(*) FROM fieldstream.readings WHERE device = 'dev-b'", USER).then((n) => n.trim()), '1');
  });

  it("writes the messages of a device's letter that PostgreSQL takes, the one it refuses left in the letter", async () => {
    const dir = join(work.dir, 'letters-device');
    const dead = new DeadLetters(dir);
    const now = Date.now();
    const env = {
      v: 1,
      deviceId: 'dev-b',
      dataType: 'timeseries',
      gatewayId: 'gw-1',
      receivedAt: now,
      messages: messages('dev-b', 10, [{ v: 10, timestamp: now - 300 }, { v: 11, label: '\u0000', timestamp: now - 200 }, { v: 12, timestamp: now - 100 }]),
    };
    await dead.put(uplinkTopic('dev-b', 'timeseries'), Buffer.from(JSON.stringify(env)), new FieldStreamError('DISTRIBUTOR_WRITE_REJECTED', 'PostgreSQL: 22P05'));
    await dead.close();
    const report = await replay(dir);
    assert.equal(report.replayed, 0);
    assert.equal(report.points, 2);
    assert.equal(report.problemCounts.DEAD_LETTERS_REFUSED_AGAIN, 1);
    assert.equal(await stored('dev-b'), '2,10,12');
  });

  it('stops with a code and its report when a letter written cannot be recorded (the folder immutable): run again, the letter is written again, one row', { skip: chattrReason('i') }, async () => {
    const dir = join(work.dir, 'letters-unrecorded');
    const dead = new DeadLetters(dir);
    const now = Date.now();
    const env = { v: 1, deviceId: 'dev-a', dataType: 'timeseries', gatewayId: 'gw-1', receivedAt: now, messages: messages('dev-a', 20, [{ v: 20, timestamp: now - 100 }]) };
    await dead.put(uplinkTopic('dev-a', 'timeseries'), Buffer.from(JSON.stringify(env)), new FieldStreamError('DISTRIBUTOR_WRITE_REJECTED', 'refused'));
    await dead.close();
    // Nothing may be made in the folder (replayed.jsonl): as a read-only mount or a full disk, for root too.
    chattr(dir, '+i');
    let report;
    try {
      report = await replay(dir).catch((err: unknown) => err);
    } finally {
      chattr(dir, '-i');
    }
    assert.ok(!(report instanceof Error), `the replay threw ${String(report)} rather than saying what it did`);
    assert.equal((report as Awaited<ReturnType<typeof replay>>).stoppedBy?.code, 'DEAD_LETTERS_UNRECORDED');
    assert.equal((report as Awaited<ReturnType<typeof replay>>).replayed, 0);
    assert.equal(await stored('dev-a'), '20', 'written, though not recorded');
    const again = await replay(dir);
    assert.equal(again.stoppedBy, undefined);
    assert.equal(again.replayed, 1);
    assert.equal(await db.psql("SELECT count(*) FROM fieldstream.readings WHERE device = 'dev-a'", USER).then((n) => n.trim()), '1');
  });
});
