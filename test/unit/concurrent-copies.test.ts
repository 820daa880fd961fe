import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { FileStore } from '../../internal-network/distributor/file-store.ts';
import { MessageHandler } from '../../internal-network/distributor/message-handler.ts';
import type { StoredPoint } from '../../internal-network/distributor/points.ts';
import { ReplayWindows } from '../../internal-network/distributor/security/replay-window.ts';
import { MessageVerifier } from '../../internal-network/distributor/security/verifier.ts';
import { DeviceKeyRegistry } from '../../internal-network/shared/device-keys.ts';
import type { EnvelopeOf, GatewayEnvelope } from '../../shared/contract/envelope.ts';
import { gatewayUplinkTopic, uplinkTopic } from '../../shared/contract/topics.ts';
import { FieldStreamError, isFieldStreamError } from '../../shared/errors.ts';
import { createLogger } from '../../shared/logger.ts';
import { signGroup } from '../../shared/security/message-auth.ts';
import { tempDir } from '../helpers/pki.ts';

/**
 * Copies of one signed message handled at the same time: the distributor's consumers each take a
 * message at a time, so a copy the broker delivers again (a consumer's connection that broke while
 * the first was being written) or a device sends again (its ack lost with its connection) can be in
 * another consumer while the first is still being written. The copy is written once: it waits for
 * the first to settle, then is a duplicate (receipted) if that was written, or written itself if not.
 */
const log = createLogger('test', 'silent');
const key = randomBytes(32);
const work = tempDir('concurrent-copies');
after(() => work.cleanup());
let n = 0;

/** A sink whose writes wait until `open()` (then succeed) or `fail()` (then fail as a database down does). */
function gatedSink() {
  const writes: StoredPoint[][] = [];
  let gates: { resolve: () => void; reject: (e: Error) => void }[] = [];
  const sink = {
    description: 'gated memory',
    write(points: readonly StoredPoint[]) {
      return new Promise<void>((resolve, reject) => {
        gates.push({
          resolve: () => {
            writes.push([...points]);
            resolve();
          },
          reject,
        });
      });
    },
    async close() {},
  };
  const settle = (how: 'open' | 'fail') => {
    const now = gates;
    gates = [];
    for (const g of now) how === 'open' ? g.resolve() : g.reject(new FieldStreamError('DISTRIBUTOR_WRITE_FAILED', 'the database is down'));
    return now.length;
  };
  return { sink, writes, waiting: () => gates.length, open: () => settle('open'), fail: () => settle('fail') };
}

function setup() {
  const dir = join(work.dir, `case-${++n}`);
  const keys = join(dir, 'keys');
  mkdirSync(keys, { recursive: true });
  writeFileSync(join(keys, 'd1.key'), key.toString('hex'));
  const verifier = new MessageVerifier(new DeviceKeyRegistry(keys, join(dir, 'revoked.txt')), new ReplayWindows(join(dir, 'replay')), { requireSignatures: true, freshnessMs: 30_000, maxDelayMs: 7 * 86_400_000 }, log);
  const gated = gatedSink();
  return { ...gated, verifier, handler: new MessageHandler(gated.sink, new FileStore(join(dir, 'files')), verifier) };
}

function signed(seqs: number[], now = Date.now()): EnvelopeOf<'timeseries'>['messages'] {
  const items = seqs.map((seq) => ({ seq, payload: { v: seq, timestamp: 1_700_000_000_000 + seq } }));
  const auth = signGroup(key, { deviceId: 'd1', dataType: 'timeseries', epoch: 'e1', ts: now }, items);
  return items.map((item, i) => (i === 0 ? { messageId: `e1.${item.seq}`, seq: item.seq, payload: item.payload, auth } : { messageId: `e1.${item.seq}`, seq: item.seq, payload: item.payload }));
}

function deviceEnvelope(seqs: number[]): Buffer {
  const now = Date.now();
  const env: EnvelopeOf<'timeseries'> = { v: 1, deviceId: 'd1', dataType: 'timeseries', gatewayId: 'gw', receivedAt: now, messages: signed(seqs, now) };
  return Buffer.from(JSON.stringify(env));
}

function gatewayEnvelope(seqs: number[]): Buffer {
  const now = Date.now();
  const env: GatewayEnvelope = { v: 1, gatewayId: 'gw', dataType: 'timeseries', receivedAt: now, devices: [{ deviceId: 'd1', messages: signed(seqs, now) }] };
  return Buffer.from(JSON.stringify(env));
}

/** Lets every pending promise callback run (the handler reaches its write, or its wait). */
const settle = () => new Promise((r) => setImmediate(r));
const readings = (writes: StoredPoint[][]) => writes.flat().filter((p) => p.measurement === 'readings').map((p) => p.fields.v);
const duplicates = (writes: StoredPoint[][]) => writes.flat().filter((p) => p.measurement === 'security_events' && p.tags.reason === 'SECURITY_DUPLICATE').length;
const receipted = (h: Awaited<ReturnType<MessageHandler['handle']>>) => (h.receipts ?? []).flatMap((r) => r.ids.map((i) => i.seq));

describe('copies of a message handled at the same time', () => {
  it('writes a copy that arrives while the first is being written once: the copy is a duplicate, receipted once the first is durable', async () => {
    const { handler, writes, waiting, open } = setup();
    const topic = uplinkTopic('d1', 'timeseries');
    const payload = deviceEnvelope([1, 2]);
    const first = handler.handle(topic, payload);
    await settle();
    const copy = handler.handle(topic, Buffer.from(payload));
    await settle();
    assert.equal(waiting(), 1, 'the copy waits for the first, and does not write');
    open();
    assert.deepEqual(receipted(await first), [1, 2]);
    await settle();
    assert.equal(open(), 1, 'the copy, checked now, writes its security events alone');
    assert.deepEqual(receipted(await copy), [1, 2], 'receipted as the duplicate it is');
    assert.deepEqual(readings(writes), [1, 2], 'each reading written once');
    assert.deepEqual(duplicates(writes), 2);
  });

  it('writes the copy itself when the first could not be written, and receipts nothing before that', async () => {
    const { handler, writes, waiting, open, fail, verifier } = setup();
    const topic = uplinkTopic('d1', 'timeseries');
    const payload = deviceEnvelope([1]);
    const first = handler.handle(topic, payload);
    await settle();
    let copyDone = false;
    const copy = handler.handle(topic, Buffer.from(payload)).finally(() => {
      copyDone = true;
    });
    await settle();
    assert.equal(fail(), 1, 'only the first was writing');
    await assert.rejects(first, (e) => isFieldStreamError(e, 'DISTRIBUTOR_WRITE_FAILED'));
    await settle();
    assert.equal(copyDone, false, 'the copy is not answered (nor receipted) for a write that failed');
    assert.equal(waiting(), 1, 'the copy writes it now');
    open();
    assert.deepEqual(receipted(await copy), [1]);
    assert.deepEqual(readings(writes), [1]);
    assert.equal(verifier.inFlight.devices, 0, 'every claim released, after a failed write too');
  });

  it("holds a gateway envelope's section that copies a device envelope being written, and the other way round", async () => {
    const { handler, writes, waiting, open } = setup();
    const first = handler.handle(uplinkTopic('d1', 'timeseries'), deviceEnvelope([1, 2]));
    await settle();
    const copy = handler.handle(gatewayUplinkTopic('gw'), gatewayEnvelope([1, 2]));
    await settle();
    assert.equal(waiting(), 1);
    open();
    await first;
    await settle();
    open();
    assert.deepEqual(receipted(await copy), [1, 2]);
    assert.deepEqual(readings(writes), [1, 2]);

    const second = handler.handle(gatewayUplinkTopic('gw'), gatewayEnvelope([3]));
    await settle();
    const again = handler.handle(uplinkTopic('d1', 'timeseries'), deviceEnvelope([3]));
    await settle();
    assert.equal(waiting(), 1);
    open();
    await second;
    await settle();
    open();
    assert.deepEqual(receipted(await again), [3]);
    assert.deepEqual(readings(writes), [1, 2, 3]);
    assert.deepEqual(duplicates(writes), 3);
  });

  it('never holds messages of other sequence numbers', async () => {
    const { handler, waiting, open } = setup();
    const topic = uplinkTopic('d1', 'timeseries');
    const first = handler.handle(topic, deviceEnvelope([1]));
    const other = handler.handle(topic, deviceEnvelope([2]));
    await settle();
    assert.equal(waiting(), 2, 'both write at once');
    open();
    assert.deepEqual([receipted(await first), receipted(await other)], [[1], [2]]);
  });
});
