import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { CommandHandlers } from '../../field-client/src/commands.ts';
import { FieldClient } from '../../field-client/src/field-client.ts';
import { GatewayConnection } from '../../field-client/src/gateway-connection.ts';
import { FileOutbox } from '../../field-client/src/files/file-outbox.ts';
import { DurableQueue } from '../../field-client/src/queue/durable-queue.ts';
import { FileStore } from '../../internal-network/distributor/file-store.ts';
import { MessageHandler } from '../../internal-network/distributor/message-handler.ts';
import { OpenTransfers } from '../../internal-network/distributor/open-transfers.ts';
import { DistributorMetrics } from '../../internal-network/distributor/metrics.ts';
import type { StoredPoint } from '../../internal-network/distributor/points.ts';
import { ReplayWindows } from '../../internal-network/distributor/security/replay-window.ts';
import { MessageVerifier } from '../../internal-network/distributor/security/verifier.ts';
import { DeviceKeyRegistry } from '../../internal-network/shared/device-keys.ts';
import { uplinkTopic } from '../../shared/contract/topics.ts';
import { parseUplinkFrame } from '../../shared/contract/uplink.ts';
import { FieldStreamError, isFieldStreamError } from '../../shared/errors.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';
import { signGroup, signMessage } from '../../shared/security/message-auth.ts';
import { signReceipt } from '../../shared/security/receipt-auth.ts';
import { tempDir } from '../helpers/pki.ts';
import { eventually } from '../helpers/ws-device.ts';

/**
 * The bound on a device's unfinished chunked transfers (LIMITS.fileOpenTransfersPerDeviceMax): a
 * chunk that would open one more is neither stored nor receipted, counted from the storage (which
 * distributors share); chunks of transfers open are always taken, and the refused transfer is taken
 * once one of them finishes.
 */
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const refused = (e: unknown) => isFieldStreamError(e, 'DISTRIBUTOR_FILE_TRANSFERS_OPEN');
const work = tempDir('file-transfers-open');
after(() => work.cleanup());

/** A file of two chunks, as a device sends it under transfer `id`. */
function twoChunks(id: string) {
  const file = randomBytes(20);
  const chunk = (index: number) => ({
    filename: `${id}.bin`,
    data: file.subarray(index * 10, index * 10 + 10).toString('base64'),
    transfer: { id, index, count: 2, size: file.length, sha256: sha(file) },
  });
  return { file, chunks: [chunk(0), chunk(1)] };
}

/** Every path under `dir`, sorted. */
const tree = (dir: string) => readdirSync(dir, { recursive: true }).map(String).sort();

describe('file storage: unfinished transfers per device', () => {
  it('refuses a chunk opening one transfer past the bound, leaving nothing of it, takes chunks of open ones, and takes it once one finished', async () => {
    const root = join(work.dir, 'store');
    const store = new FileStore(root, { openTransfersMax: 3 });
    const files = ['a', 'b', 'c', 'd'].map(twoChunks);
    const [a, b, c, d] = files as [ReturnType<typeof twoChunks>, ReturnType<typeof twoChunks>, ReturnType<typeof twoChunks>, ReturnType<typeof twoChunks>];
    for (const f of [a, b, c]) assert.equal(await store.storeChunk('cam-1', f.chunks[0]!), undefined);
    const before = tree(root);
    const err = await store.storeChunk('cam-1', d.chunks[0]!).then(() => assert.fail('stored'), (e: unknown) => e);
    assert.ok(refused(err), String(err));
    assert.deepEqual((err as FieldStreamError).details, { deviceId: 'cam-1', transferId: 'd', open: 3, max: 3 });
    assert.deepEqual(tree(root), before, 'nothing of the refused chunk on disk');
    // Its other chunk would open it just the same.
    await assert.rejects(store.storeChunk('cam-1', d.chunks[1]!), refused);
    // Another device is not held back by this one's transfers.
    assert.equal(await store.storeChunk('cam-2', twoChunks('e').chunks[0]!), undefined);
    // Another distributor sharing the storage counts the same transfers.
    await assert.rejects(new FileStore(root, { openTransfersMax: 3 }).storeChunk('cam-1', d.chunks[0]!), refused);

    // At the bound, a transfer open still completes.
    const stored = await store.storeChunk('cam-1', b.chunks[1]!);
    assert.ok(stored && readFileSync(join(root, stored.path)).equals(b.file));
    // b finished: d, sent again, is taken, and the device is at the bound again.
    assert.equal(await store.storeChunk('cam-1', d.chunks[0]!), undefined);
    // b's chunk again is answered from its done marker, at the bound too; a fifth transfer is refused.
    assert.equal((await store.storeChunk('cam-1', b.chunks[0]!))?.sha256, sha(b.file));
    await assert.rejects(store.storeChunk('cam-1', twoChunks('f').chunks[0]!), refused);
    const dStored = await store.storeChunk('cam-1', d.chunks[1]!);
    assert.ok(dStored && readFileSync(join(root, dStored.path)).equals(d.file));
    for (const f of [a, c]) assert.ok((await store.storeChunk('cam-1', f.chunks[1]!))?.sha256 === sha(f.file));
  });

  it('does not count a folder of chunks its done marker says is stored (a kill left it), and the dead-letter replay is not bounded', async () => {
    const root = join(work.dir, 'leftover');
    const store = new FileStore(root, { openTransfersMax: 1 });
    const done = twoChunks('done');
    await store.storeChunk('cam-1', done.chunks[0]!);
    await store.storeChunk('cam-1', done.chunks[1]!);
    // What a kill between the done marker and the folder's removal leaves.
    mkdirSync(join(root, '.partial', 'cam-1', 'done'));
    writeFileSync(join(root, '.partial', 'cam-1', 'done', '0.chunk'), 'x');
    const open = twoChunks('open');
    assert.equal(await store.storeChunk('cam-1', open.chunks[0]!), undefined);
    const next = twoChunks('next');
    await assert.rejects(store.storeChunk('cam-1', next.chunks[0]!), refused);
    // A letter is the only copy of chunks receipted: stored past the bound.
    assert.equal(await store.storeChunk('cam-1', next.chunks[0]!, undefined, { bounded: false }), undefined);
    assert.ok(existsSync(join(root, '.partial', 'cam-1', 'next', '0.chunk')));
  });

  it('takes the refused transfer at once when another distributor finished one meanwhile', async () => {
    const root = join(work.dir, 'shared');
    const here = new FileStore(root, { openTransfersMax: 2 });
    const there = new FileStore(root, { openTransfersMax: 2 });
    const [a, b, c] = ['a', 'b', 'c'].map(twoChunks) as [ReturnType<typeof twoChunks>, ReturnType<typeof twoChunks>, ReturnType<typeof twoChunks>];
    await here.storeChunk('cam-1', a.chunks[0]!);
    await there.storeChunk('cam-1', b.chunks[0]!);
    await assert.rejects(here.storeChunk('cam-1', c.chunks[0]!), refused);
    await new Promise((r) => setTimeout(r, 50)); // past the folder's timestamp granularity
    assert.ok(await there.storeChunk('cam-1', b.chunks[1]!));
    assert.equal(await here.storeChunk('cam-1', c.chunks[0]!), undefined, 'its folder changed: counted afresh');
  });

  it('refuses a device found at the bound again without a listing while its folder is unchanged, and lists it again after the recheck time', async () => {
    const dir = join(work.dir, 'recheck', 'cam-1');
    mkdirSync(join(dir, 'a'), { recursive: true });
    mkdirSync(join(dir, 'b'));
    utimesSync(dir, 1_000, 1_000);
    let now = 0;
    const open = new OpenTransfers(2, () => now);
    await assert.rejects(open.mayOpen(dir, 'cam-1', 'c'), refused);
    // A change its time does not show (one within the timestamp's granularity of the listing).
    rmSync(join(dir, 'b'), { recursive: true });
    utimesSync(dir, 1_000, 1_000);
    await assert.rejects(open.mayOpen(dir, 'cam-1', 'c'), refused, 'refused on what was found');
    now += TIMINGS.fileOpenTransfersRecheckMs;
    await open.mayOpen(dir, 'cam-1', 'c');
    // A change the time shows is seen at once.
    mkdirSync(join(dir, 'b'));
    await assert.rejects(open.mayOpen(dir, 'cam-1', 'c'), refused);
    rmSync(join(dir, 'b'), { recursive: true });
    utimesSync(dir, 2_000, 2_000);
    await open.mayOpen(dir, 'cam-1', 'c');
  });

  it('holds the bound at its default for a device opening one more transfer than it', async () => {
    const root = join(work.dir, 'default');
    const store = new FileStore(root);
    const max = LIMITS.fileOpenTransfersPerDeviceMax;
    for (let i = 0; i < max; i++) assert.equal(await store.storeChunk('cam-1', twoChunks(`t${i}`).chunks[0]!), undefined);
    await assert.rejects(store.storeChunk('cam-1', twoChunks('one-more').chunks[0]!), refused);
    assert.ok(!existsSync(join(root, '.partial', 'cam-1', 'one-more')));
  });
});

describe('distributor: a chunk refused for its open transfers', () => {
  const key = randomBytes(32);
  const log = createLogger('test', 'silent');

  function setup(name: string) {
    const dir = join(work.dir, name);
    mkdirSync(join(dir, 'keys'), { recursive: true });
    writeFileSync(join(dir, 'keys', 'cam-1.key'), key.toString('hex'));
    const verifier = new MessageVerifier(new DeviceKeyRegistry(join(dir, 'keys'), join(dir, 'revoked.txt')), new ReplayWindows(join(dir, 'replay')), { requireSignatures: true, freshnessMs: 30_000, maxDelayMs: 86_400_000 }, log);
    const written: StoredPoint[] = [];
    const sink = { description: 'memory', write: async (points: readonly StoredPoint[]) => void written.push(...points), close: async () => {} };
    const metrics = new DistributorMetrics();
    const root = join(dir, 'files');
    const handler = new MessageHandler(sink, new FileStore(root, { openTransfersMax: 2 }), verifier, metrics);
    const deferredCount = async () => Number(/^fieldstream_distributor_file_chunks_deferred_total(?:\{[^}]*\})? (\S+)$/m.exec(await metrics.metrics.registry.metrics())?.[1]);
    return { handler, written, root, deferredCount };
  }

  type Chunk = ReturnType<typeof twoChunks>['chunks'][number];
  /** One envelope of chunks, each signed as the field client signs them: a group of one, its transfer the epoch. */
  function envelope(chunks: Chunk[], v: 1 | 2 = 2): Buffer {
    const now = Date.now();
    const messages = chunks.map((payload) => {
      const { id: epoch, index: seq } = payload.transfer;
      const messageId = `${epoch}.${seq}`;
      if (v === 1) return { messageId, payload, auth: signMessage(key, { deviceId: 'cam-1', dataType: 'file', epoch, seq, ts: now, payload }) };
      return { messageId, seq, payload, auth: signGroup(key, { deviceId: 'cam-1', dataType: 'file', epoch, ts: now }, [{ seq, payload }]) };
    });
    return Buffer.from(JSON.stringify({ v: 1, deviceId: 'cam-1', dataType: 'file', gatewayId: 'gw', receivedAt: now, messages }));
  }
  const topic = uplinkTopic('cam-1', 'file');
  const receipted = (h: Awaited<ReturnType<MessageHandler['handle']>>) => (h.receipts ?? []).flatMap((r) => r.ids.map((i) => `${i.epoch}.${i.seq}`)).sort();

  it('gives the chunk no receipt and stores nothing of it, takes the chunks of open transfers beside it, and takes it when sent again after one finished', async () => {
    const { handler, written, root, deferredCount } = setup('handler');
    const [a, b, c] = ['a', 'b', 'c'].map(twoChunks) as [ReturnType<typeof twoChunks>, ReturnType<typeof twoChunks>, ReturnType<typeof twoChunks>];
    assert.deepEqual(receipted(await handler.handle(topic, envelope([a.chunks[0]!, b.chunks[0]!]))), ['a.0', 'b.0']);
    assert.equal(await deferredCount(), 0);

    // c would be a third: refused, while b's last chunk beside it in the envelope completes b.
    const handled = await handler.handle(topic, envelope([c.chunks[0]!, b.chunks[1]!]));
    assert.deepEqual(receipted(handled), ['b.1'], 'no receipt for the refused chunk: its device keeps it');
    assert.deepEqual(handled.deferred?.map((e) => e.code), ['DISTRIBUTOR_FILE_TRANSFERS_OPEN']);
    assert.equal(handled.deadLetters, undefined, 'not a dead letter');
    assert.equal(handled.files, 1);
    assert.equal(await deferredCount(), 1);
    assert.ok(!existsSync(join(root, '.partial', 'cam-1', 'c')), 'nothing of it stored');
    assert.ok(!readdirSync(join(root, 'cam-1')).includes('c.bin'));
    assert.deepEqual(written.filter((p) => p.measurement === 'files').map((p) => p.fields.filename), ['b.bin']);

    // Sent again (its receipt overdue): b finished, so there is room; taken as new, not as a copy.
    assert.deepEqual(receipted(await handler.handle(topic, envelope([c.chunks[0]!]))), ['c.0']);
    assert.deepEqual(receipted(await handler.handle(topic, envelope([c.chunks[1]!]))), ['c.1']);
    assert.ok(readFileSync(join(root, 'cam-1', 'c.bin')).equals(c.file));
    assert.equal(await deferredCount(), 1);
    assert.ok(!written.some((p) => p.measurement === 'security_events'), 'the chunk sent again is no duplicate nor replay');
  });

  it('keeps a chunk signed alone (its device let it go at the gateway\'s ack) as a dead letter, never dropping it', async () => {
    const { handler, root } = setup('signed-alone');
    for (const id of ['a', 'b']) await handler.handle(topic, envelope([twoChunks(id).chunks[0]!], 1));
    const handled = await handler.handle(topic, envelope([twoChunks('c').chunks[0]!], 1));
    assert.equal(handled.deferred, undefined);
    assert.deepEqual(handled.deadLetters?.map((d) => d.error.code), ['DISTRIBUTOR_FILE_TRANSFERS_OPEN']);
    assert.ok(!existsSync(join(root, '.partial', 'cam-1', 'c')));
  });
});

describe('the field client, its chunk refused for its open transfers', () => {
  it('keeps the file and sends the chunk again when its receipt is overdue, until the distributor takes it', async () => {
    // The field client as it runs (signed, receipts on), over a connection the test plays the gateway
    // on: each frame's messages become an envelope for a real distributor's handler, each accepted
    // message is acked, and the handler's receipts go back signed, as the gateway forwards them.
    const dir = join(work.dir, 'field-client');
    const key = randomBytes(32);
    const log = createLogger('test', 'silent');
    mkdirSync(join(dir, 'keys'), { recursive: true });
    writeFileSync(join(dir, 'keys', 'd1.key'), key.toString('hex'));
    const verifier = new MessageVerifier(new DeviceKeyRegistry(join(dir, 'keys'), join(dir, 'revoked.txt')), new ReplayWindows(join(dir, 'replay')), { requireSignatures: true, freshnessMs: 30_000, maxDelayMs: 86_400_000 }, log);
    const sink = { description: 'memory', write: async () => {}, close: async () => {} };
    const root = join(dir, 'files');
    const store = new FileStore(root, { openTransfersMax: 1 });
    const handler = new MessageHandler(sink, store, verifier);
    // The device has one transfer open already (as a field client restored from a backup would).
    const open = twoChunks('fopen');
    await store.storeChunk('d1', open.chunks[0]!);

    const queue = await DurableQueue.open({ dir: join(dir, 'queue'), maxBytes: 64 * 1024 * 1024, segmentBytes: 1024 * 1024, fullPolicy: 'reject', sync: { mode: 'always' }, receipts: true, log });
    const connection = new GatewayConnection({ url: 'wss://127.0.0.1:9/ws', tls: { ca: '', cert: '', key: '' }, reconnectInitialMs: 100, reconnectMaxMs: 100, idleTimeoutMs: 1000 }, log);
    Object.defineProperty(connection, 'isOpen', { get: () => true });
    connection.canSend = () => true;
    let deferred = 0;
    let handling = Promise.resolve();
    connection.send = (text: string) => {
      handling = handling.then(async () => {
        const messages = parseUplinkFrame(text).filter((m) => m.dataType === 'file');
        if (messages.length === 0) return;
        const env = { v: 1, deviceId: 'd1', dataType: 'file', gatewayId: 'gw', receivedAt: Date.now(), messages: messages.map((m) => ({ messageId: m.messageId, seq: m.seq, auth: m.auth, payload: m.payload })) };
        const handled = await handler.handle(uplinkTopic('d1', 'file'), Buffer.from(JSON.stringify(env)));
        deferred += handled.deferred?.length ?? 0;
        connection.emit('frame', { type: 'ack', messageIds: messages.map((m) => m.messageId as string) });
        for (const r of handled.receipts ?? []) {
          for (const { epoch, seq } of r.ids) {
            const ranges: Array<[number, number]> = [[seq, seq]];
            connection.emit('frame', { type: 'commit', epoch, ranges, mac: signReceipt(key, 'd1', epoch, ranges) });
          }
        }
      });
    };
    const outbox = new FileOutbox(dir, 64 * 1024);
    const commands = new CommandHandlers({ deviceId: 'd1', key, allowUnsigned: false, maxAgeMs: 1000, skewMs: 1000 });
    const client = new FieldClient(
      { deviceId: 'd1', batchMax: 10, window: 2000, fileWindow: 1, maxBytes: 64 * 1024 * 1024, dataDir: dir, signingKey: key, commit: { timeoutMs: 1_000, windowMessages: 50_000, windowBytes: 64 * 1024 * 1024 } },
      queue,
      outbox,
      connection,
      commands,
      log,
    );
    try {
      connection.emit('open');
      connection.emit('frame', { type: 'welcome', deviceId: 'd1', gatewayId: 'gw', serverTime: Date.now(), limits: { frameMaxBytes: LIMITS.frameMaxBytes, batchMaxMessages: LIMITS.batchMaxMessages } });
      const src = join(dir, 'scan.tif');
      const content = randomBytes(2 * 64 * 1024 + 100);
      writeFileSync(src, content);
      await client.submitFile(src);
      // Refused, then refused again when sent again after its receipt was overdue: the file stays.
      await eventually(() => (deferred >= 2 ? true : undefined), 15_000, 'the first chunk refused, and sent again');
      assert.ok(outbox.bytes() >= content.length, 'the file kept in the outbox');
      assert.equal(queue.depth, 1, 'its record kept');
      assert.deepEqual(readdirSync(join(root, '.partial', 'd1')), ['fopen']);

      // The open transfer finishes: the next copy is taken, and the file is stored whole.
      assert.ok(await store.storeChunk('d1', open.chunks[1]!));
      await eventually(() => (queue.depth === 0 ? true : undefined), 20_000, 'the file stored and committed');
      assert.equal(outbox.bytes(), 0, 'out of the outbox once stored');
      assert.ok(readFileSync(join(root, 'd1', 'scan.tif')).equals(content));
    } finally {
      client.stop();
      await handling;
      await queue.close();
    }
  });
});
