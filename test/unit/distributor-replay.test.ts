import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { FileStore } from '../../internal-network/distributor/file-store.ts';
import { MessageHandler } from '../../internal-network/distributor/message-handler.ts';
import { POINT_KEY, type StoredPoint } from '../../internal-network/distributor/points.ts';
import { ReplayWindows } from '../../internal-network/distributor/security/replay-window.ts';
import { MessageVerifier } from '../../internal-network/distributor/security/verifier.ts';
import { DeviceKeyRegistry } from '../../internal-network/shared/device-keys.ts';
import type { UplinkEnvelope } from '../../shared/contract/envelope.ts';
import { uplinkTopic } from '../../shared/contract/topics.ts';
import { isFieldStreamError } from '../../shared/errors.ts';
import { createLogger } from '../../shared/logger.ts';
import { signGroup } from '../../shared/security/message-auth.ts';
import { withFileSizeLimit } from '../helpers/file-size-limit.ts';
import { tempDir } from '../helpers/pki.ts';

/**
 * The distributor's replay defence through its message handler, against a compromised DMZ and a
 * failing disk: a message is acknowledged (and its device sent a receipt) only once its replay
 * window is on disk; a chunked file's record is one row however often its chunks come back.
 */
const log = createLogger('test', 'silent');
const key = randomBytes(32);
const work = tempDir('distributor-replay');
after(() => work.cleanup());
let n = 0;

function setup(requireSignatures = true) {
  const dir = join(work.dir, `case-${++n}`);
  const keys = join(dir, 'keys');
  // the device's key, as onboarding registers it
  mkdirSync(keys, { recursive: true });
  writeFileSync(join(keys, 'd1.key'), key.toString('hex'));
  const replay = new ReplayWindows(join(dir, 'replay'));
  const verifier = new MessageVerifier(new DeviceKeyRegistry(keys, join(dir, 'revoked.txt')), replay, { requireSignatures, freshnessMs: 30_000, maxDelayMs: 7 * 86_400_000 }, log);
  const writes: StoredPoint[] = [];
  const sink = {
    description: 'memory',
    async write(points: readonly StoredPoint[]) {
      writes.push(...points);
    },
    async close() {},
  };
  return { dir, replay, writes, handler: new MessageHandler(sink, new FileStore(join(dir, 'files')), verifier) };
}

function reading(epoch: string, seq: number, now: number): Buffer {
  const payload = { v: seq, timestamp: 1_700_000_000_000 + seq };
  const auth = signGroup(key, { deviceId: 'd1', dataType: 'timeseries', epoch, ts: now }, [{ seq, payload }]);
  const env: UplinkEnvelope = { v: 1, deviceId: 'd1', dataType: 'timeseries', gatewayId: 'gw', receivedAt: now, messages: [{ messageId: `${epoch}.${seq}`, seq, payload, auth }] };
  return Buffer.from(JSON.stringify(env));
}

describe('the replay defence through the message handler', () => {
  it('acknowledges no message whose replay window the disk refused, at its first attempt or any retry', async () => {
    const { dir, handler } = setup();
    const topic = uplinkTopic('d1', 'timeseries');
    await handler.handle(topic, reading('e1', 1, Date.now())); // the journal exists, with a line
    const journal = readdirSync(join(dir, 'replay')).find((f) => f.endsWith('.log')) as string;
    const message = reading('e1', 2, Date.now());
    // A full disk: the database takes the reading, the journal refuses its sequence number.
    await withFileSizeLimit(statSync(join(dir, 'replay', journal)).size, async () => {
      await assert.rejects(handler.handle(topic, message), (e: NodeJS.ErrnoException) => e.code === 'EFBIG');
      // The consumer retries (a machine error): "seen" in memory now, but still not on disk.
      await assert.rejects(handler.handle(topic, message), (e: NodeJS.ErrnoException) => e.code === 'EFBIG', 'a retry is not acknowledged while the journal refuses it');
    });
    const handled = await handler.handle(topic, message);
    assert.deepEqual(handled.receipts?.[0]?.ids.map((i) => i.seq), [2], 'acknowledged with its receipt once the disk takes it');
    // A SIGKILL now: a new process finds it.
    const reloaded = new ReplayWindows(join(dir, 'replay'));
    assert.equal(reloaded.check('d1', 'e1', 2), 'seen');
    reloaded.close();
  });

  it("keeps one record of a chunked file whichever of its chunks comes again, though its epoch left the device's 64 windows", async () => {
    const { handler, writes } = setup();
    const topic = uplinkTopic('d1', 'file');
    const now = Date.now();
    const chunkOf = (id: string, index: number, chunks: Buffer[]): Buffer => {
      const whole = Buffer.concat(chunks);
      const payload = {
        filename: `${id}.bin`,
        contentType: 'application/octet-stream',
        data: (chunks[index] as Buffer).toString('base64'),
        transfer: { id, index, count: chunks.length, size: whole.length, sha256: createHash('sha256').update(whole).digest('hex') },
        metadata: { size: whole.length, timestamp: 1_700_000_000_000 },
      };
      const auth = signGroup(key, { deviceId: 'd1', dataType: 'file', epoch: id, ts: now }, [{ seq: index, payload }]);
      return Buffer.from(JSON.stringify({ v: 1, deviceId: 'd1', dataType: 'file', gatewayId: 'gw', receivedAt: now, messages: [{ messageId: `${id}.${index}`, seq: index, payload, auth }] }));
    };
    const chunks = [Buffer.from('first half '), Buffer.from('second half')];
    const kept = chunkOf('t0', 0, chunks); // the DMZ keeps a copy
    await handler.handle(topic, kept);
    await handler.handle(topic, chunkOf('t0', 1, chunks));
    // 64 more files: each transfer an epoch of its own; t0's window is the least recently used.
    for (let t = 1; t <= 64; t++) await handler.handle(topic, chunkOf(`t${t}`, 0, [Buffer.from(`file ${t}`)]));
    await handler.handle(topic, kept); // the replay, within DISTRIBUTOR_MAX_DELAY_S
    const records = writes.filter((p) => p.measurement === 'files' && p.fields.filename === 't0.bin');
    assert.equal(records.length, 2, 'written again (the window forgot it)...');
    assert.deepEqual(new Set(records.map((p) => `${String(p[POINT_KEY])} ${p.time}`)).size, 1, '...as the same record: one row in PostgreSQL, one point in InfluxDB');
  });

  it("refuses, with the contract's code, a message whose arrival time the DMZ set past any date", async () => {
    const { handler } = setup(false);
    const env = { v: 1, deviceId: 'd1', dataType: 'timeseries', gatewayId: 'gw', receivedAt: Date.now(), messages: [{ messageId: 'm1', receivedAt: 9e15, payload: { v: 1 } }] };
    await assert.rejects(handler.handle(uplinkTopic('d1', 'timeseries'), Buffer.from(JSON.stringify(env))), (e) => isFieldStreamError(e) && e.code.startsWith('CONTRACT_'));
  });
});
