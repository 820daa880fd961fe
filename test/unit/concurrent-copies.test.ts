import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { IPublishPacket, MqttClient } from 'mqtt';
import { Consumer } from '../../internal-network/distributor/consumer.ts';
import { DeadLetters } from '../../internal-network/distributor/dead-letter.ts';
import { readLetters } from '../../internal-network/distributor/dead-letter-files.ts';
import { FileStore } from '../../internal-network/distributor/file-store.ts';
import { MessageHandler } from '../../internal-network/distributor/message-handler.ts';
import type { StoredPoint } from '../../internal-network/distributor/points.ts';
import type { ReceiptPublisher, ReceiptRequest } from '../../internal-network/distributor/receipts.ts';
import { ReplayWindows } from '../../internal-network/distributor/security/replay-window.ts';
import { MessageVerifier } from '../../internal-network/distributor/security/verifier.ts';
import { DeviceKeyRegistry } from '../../internal-network/shared/device-keys.ts';
import type { EnvelopeOf, GatewayEnvelope } from '../../shared/contract/envelope.ts';
import { gatewayUplinkTopic, uplinkTopic } from '../../shared/contract/topics.ts';
import { FieldStreamError, isFieldStreamError } from '../../shared/errors.ts';
import { createLogger } from '../../shared/logger.ts';
import { signGroup } from '../../shared/security/message-auth.ts';
import { tempDir } from '../helpers/pki.ts';
import { eventually } from '../helpers/ws-device.ts';

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

  it('never holds a forged group, however wide its numbers: its MAC is checked before it waits, and it is refused at once', async () => {
    // The numbers of a group are the DMZ's word until its MAC verifies: 0 and 2^53 − 1 in the
    // device's epoch met every write of the device in progress, and the consumer waited for each.
    const { handler, waiting, open } = setup();
    const topic = uplinkTopic('d1', 'timeseries');
    const first = handler.handle(topic, deviceEnvelope([5]));
    await settle();
    const now = Date.now();
    const auth = { v: 2 as const, epoch: 'e1', seq: 0, ts: now, count: 2, mac: Buffer.alloc(32).toString('base64url') };
    const forged: EnvelopeOf<'timeseries'> = {
      v: 1, deviceId: 'd1', dataType: 'timeseries', gatewayId: 'gw', receivedAt: now,
      messages: [
        { messageId: 'f.0', seq: 0, payload: { v: 0, timestamp: now }, auth },
        { messageId: 'f.1', seq: Number.MAX_SAFE_INTEGER, payload: { v: 1, timestamp: now } },
      ],
    };
    const refused = handler.handle(topic, Buffer.from(JSON.stringify(forged)));
    await settle();
    assert.equal(waiting(), 2, 'the forged envelope writes its security events beside the write in progress, without waiting for it');
    open();
    assert.deepEqual(receipted(await first), [5]);
    assert.deepEqual(receipted(await refused), [], 'nothing of it receipted');
  });

  for (const [kind, topic, envelope] of [
    ["a device's envelope", uplinkTopic('d1', 'timeseries'), deviceEnvelope],
    ["a gateway envelope's section", gatewayUplinkTopic('gw'), gatewayEnvelope],
  ] as const) {
    it(`keeps ${kind} the database refuses for good, and a copy of it handled meanwhile, as one dead letter: the copy waits for the letter, then is a duplicate, receipted`, async () => {
      // The first's claim was released when its write was refused, before its letter was kept and
      // its messages recorded (MessageVerifier.recordKept): the copy was checked as new, refused in
      // turn and kept again, whole. A DMZ publishing one such message over and over kept it once per
      // database round trip while the first letter was written (up to 16 MiB each, DEAD_LETTER_MAX_BYTES).
      const dir = join(work.dir, `case-${++n}`);
      const keys = join(dir, 'keys');
      mkdirSync(keys, { recursive: true });
      writeFileSync(join(keys, 'd1.key'), key.toString('hex'));
      const verifier = new MessageVerifier(new DeviceKeyRegistry(keys, join(dir, 'revoked.txt')), new ReplayWindows(join(dir, 'replay')), { requireSignatures: true, freshnessMs: 30_000, maxDelayMs: 7 * 86_400_000 }, log);
      // Refuses readings for good (a field of another type), once let go; takes the rest.
      const held: (() => void)[] = [];
      let refusing = false;
      const refuse = () => Promise.reject(new FieldStreamError('DISTRIBUTOR_WRITE_REJECTED', 'field type conflict'));
      const sink = {
        description: 'refusing readings',
        write: async (points: readonly StoredPoint[]) => {
          if (!points.some((p) => p.measurement === 'readings')) return;
          if (!refusing) await new Promise<void>((resolve) => held.push(resolve));
          return refuse();
        },
        close: async () => {},
      };
      const handler = new MessageHandler(sink, new FileStore(join(dir, 'files')), verifier);
      const dead = new DeadLetters(join(dir, 'letters'));
      const receipts: ReceiptRequest[] = [];
      const consumer = () => {
        const mqtt = { reschedulePing: () => undefined, on: () => undefined, options: {} } as unknown as MqttClient;
        return { mqtt, consumer: new Consumer(mqtt, handler, dead, { initialMs: 10, maxMs: 20 }, { add: (r: ReceiptRequest) => receipts.push(r) } as unknown as ReceiptPublisher, log) };
      };
      const consumers = [consumer(), consumer()];
      const payload = envelope([1]);
      const acked = [false, false];
      const deliver = (i: number, bytes: Buffer) =>
        consumers[i]!.mqtt.handleMessage({ cmd: 'publish', topic, payload: bytes, qos: 1, dup: false, retain: false } as IPublishPacket, () => (acked[i] = true));
      try {
        deliver(0, payload);
        await settle();
        deliver(1, Buffer.from(payload)); // the broker's copy, the first's connection broken meanwhile
        await settle();
        assert.equal(held.length, 1, 'the copy waits for the first');
        refusing = true;
        for (const release of held) release();
        await eventually(() => (acked.every(Boolean) ? true : undefined), 5_000, 'both acknowledged');
        await dead.close();
        const letters = [...readLetters(join(dir, 'letters'))].filter((l) => l.letter?.code === 'DISTRIBUTOR_WRITE_REJECTED');
        assert.equal(letters.length, 1, 'kept once');
        assert.deepEqual(receipts.flatMap((r) => r.ids.map((i) => i.seq)), [1, 1], 'the letter and its copy receipted');
        assert.equal(verifier.inFlight.devices, 0, 'every claim released');
      } finally {
        for (const c of consumers) c.consumer.stop();
        await dead.close();
      }
    });
  }
});
