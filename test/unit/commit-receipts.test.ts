import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { CommandHandlers } from '../../field-client/src/commands.ts';
import { CommitReceipts } from '../../field-client/src/commit-receipts.ts';
import { FieldClient } from '../../field-client/src/field-client.ts';
import { GatewayConnection } from '../../field-client/src/gateway-connection.ts';
import { FileOutbox } from '../../field-client/src/files/file-outbox.ts';
import { FILE_TRANSFER, FileTransfers } from '../../field-client/src/files/transfers.ts';
import { DurableQueue } from '../../field-client/src/queue/durable-queue.ts';
import { MessageVerifier } from '../../internal-network/distributor/security/verifier.ts';
import { ReplayWindows, WINDOW } from '../../internal-network/distributor/security/replay-window.ts';
import { DeviceKeyRegistry } from '../../internal-network/shared/device-keys.ts';
import type { UplinkEnvelope } from '../../shared/contract/envelope.ts';
import { LIMITS } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';
import { signGroup } from '../../shared/security/message-auth.ts';
import { signReceipt } from '../../shared/security/receipt-auth.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { chunkAcker } from '../helpers/chunk-acks.ts';
import { withFileSizeLimit } from '../helpers/file-size-limit.ts';
import { eventually } from '../helpers/ws-device.ts';
import { tempDir } from '../helpers/pki.ts';

const log = createLogger('test', 'silent');
const key = randomBytes(32);

/** A connection that is never opened: what the client hands it is kept in `frames`, each frame's text. */
function capturedConnection(): { connection: GatewayConnection; frames: string[] } {
  const connection = new GatewayConnection({ url: 'wss://127.0.0.1:9/ws', tls: { ca: '', cert: '', key: '' }, reconnectInitialMs: 100, reconnectMaxMs: 100, idleTimeoutMs: 1000 }, log);
  const frames: string[] = [];
  connection.canSend = () => true;
  connection.send = (text: string) => void frames.push(text);
  return { connection, frames };
}

/** What a field client without a signing key (acks alone, no receipts) is made of, in `dir`. */
async function unsignedParts(dir: string) {
  const queue = await DurableQueue.open({ dir: join(dir, 'queue'), maxBytes: 64 * 1024 * 1024, segmentBytes: 1024 * 1024, fullPolicy: 'reject', sync: { mode: 'always' }, log });
  const outbox = new FileOutbox(dir, 64 * 1024);
  const commands = new CommandHandlers({ deviceId: 'd1', key: undefined, allowUnsigned: false, maxAgeMs: 1000, skewMs: 1000 });
  return { queue, outbox, commands, ...capturedConnection() };
}

async function setup(dir: string, o: { timeoutMs: number; windowMessages: number; reconnectGraceMs?: number }) {
  const queue = await DurableQueue.open({ dir: join(dir, 'queue'), maxBytes: 64 * 1024 * 1024, segmentBytes: 1024 * 1024, fullPolicy: 'reject', sync: { mode: 'always' }, receipts: true, log });
  const outbox = new FileOutbox(dir, 64 * 1024);
  const transfers = new FileTransfers(outbox, { window: 4, receipts: true }, () => {}, log);
  const receipts = new CommitReceipts('d1', key, { ...o, windowBytes: 64 * 1024 * 1024 }, queue, transfers, log);
  return { queue, outbox, transfers, receipts };
}

describe('the device side of commit receipts', () => {
  it('waits twice as long after each resend that brought no receipt, and starts over at a receipt', async () => {
    const work = tempDir('commit-backoff');
    const { queue, receipts } = await setup(work.dir, { timeoutMs: 1000, windowMessages: 1000 });
    try {
      await queue.append([{ dataType: 'timeseries', payload: { v: 1 } }, { dataType: 'timeseries', payload: { v: 2 } }]);
      const sendAndAck = (at: number) => {
        queue.rewind();
        const out = queue.next(10);
        queue.ack(out.map((m) => m.seq));
        return { out, at };
      };
      const t0 = queue.now();
      // The queue stamps its acks with its own clock; expire() is asked at later instants of it.
      sendAndAck(t0);
      assert.equal(receipts.expire(t0 + 500, true), 0, 'not yet overdue');
      assert.equal(receipts.expire(t0 + 1500, true), 2, 'overdue after the timeout: sent again');
      sendAndAck(t0);
      assert.equal(receipts.expire(t0 + 1500, true), 0, 'the next wait is twice as long');
      assert.equal(receipts.expire(t0 + 2500, true), 2, 'overdue after twice the timeout');
      sendAndAck(t0);
      assert.equal(receipts.expire(t0 + 2500, true), 0);
      assert.equal(receipts.expire(t0 + 4500, true), 2, 'then four times');
      assert.equal(receipts.stats.resentForReceipt, 6);
      assert.ok(LIMITS.commitTimeoutMaxMs >= 15 * 60_000, 'capped, at a quarter of an hour');
    } finally {
      await queue.close();
      work.cleanup();
    }
  });

  it('brings a resend forward at a reconnect only once the doubled wait has passed since the last one', async () => {
    const work = tempDir('commit-reconnect');
    const { queue, receipts } = await setup(work.dir, { timeoutMs: 1000, windowMessages: 1000, reconnectGraceMs: 0 });
    try {
      await queue.append([{ dataType: 'timeseries', payload: { v: 1 } }, { dataType: 'timeseries', payload: { v: 2 } }]);
      const sendAndAck = () => {
        queue.rewind();
        queue.ack(queue.next(10).map((m) => m.seq));
      };
      const t0 = queue.now();
      sendAndAck();
      receipts.disconnected(t0 + 10);
      receipts.welcomed(t0 + 20);
      assert.equal(receipts.expire(t0 + 30, true), 2, 'the first reconnect sends them again after its grace');
      sendAndAck();
      // A gateway that acks and closes again at once: the wait is 2 s now, and the last resend was 30 ms ago.
      receipts.disconnected(t0 + 40);
      receipts.welcomed(t0 + 50);
      assert.equal(receipts.expire(t0 + 60, true), 0, 'the next reconnect, before the doubled wait, sends nothing again');
      assert.equal(receipts.expire(t0 + 2_100, true), 2, 'the doubled wait itself still does');
    } finally {
      await queue.close();
      work.cleanup();
    }
  });

  it('does not count an unfinished file against the window: readings go on while it is sent', async () => {
    const work = tempDir('commit-room');
    const { queue, outbox, transfers, receipts } = await setup(work.dir, { timeoutMs: 60_000, windowMessages: 10 });
    try {
      const src = join(work.dir, 'big.bin');
      writeFileSync(src, randomBytes(256 * 1024));
      const rec = await outbox.accept(src, {});
      const [file] = await queue.append([{ dataType: FILE_TRANSFER, payload: rec }]);
      await queue.append(Array.from({ length: 20 }, (_, i) => ({ dataType: 'timeseries', payload: { v: i } })));
      const out = queue.next(100);
      assert.ok(transfers.start((file as { seq: number }).seq, rec));
      const readings = out.filter((m) => m.dataType !== FILE_TRANSFER).map((m) => m.seq);
      queue.ack(readings);
      queue.commit(readings);
      const highest = Math.max(...readings);
      // The file's record is the oldest open one, and will be for as long as its chunks take.
      assert.equal(queue.committedThrough, 0);
      assert.equal(receipts.room(highest), 10, 'the window is measured from the oldest open reading');
    } finally {
      await queue.close();
      work.cleanup();
    }
  });
});

describe("a file transfer's progress on a disk that refuses it", () => {
  it('goes on sending and committing: logged once, saved again at the next chunk done', async () => {
    const work = tempDir('commit-progress');
    const logs = new LogCapture();
    const queue = await DurableQueue.open({ dir: join(work.dir, 'queue'), maxBytes: 64 * 1024 * 1024, segmentBytes: 1024 * 1024, fullPolicy: 'reject', sync: { mode: 'always' }, receipts: true, log });
    const outbox = new FileOutbox(work.dir, 64 * 1024);
    const transfers = new FileTransfers(outbox, { window: 4, receipts: true }, () => {}, logs.logger);
    try {
      const src = join(work.dir, 'big.bin');
      writeFileSync(src, randomBytes(256 * 1024));
      const rec = await outbox.accept(src, {});
      const [file] = await queue.append([{ dataType: FILE_TRANSFER, payload: rec }]);
      assert.ok(transfers.start((file as { seq: number }).seq, rec));
      // The kernel refuses every byte written (this process's file size limit at 0: EFBIG, as a full
      // disk answers ENOSPC); the receipt arrives in the gateway connection's frame handler.
      const committed = await withFileSizeLimit(0, async () => transfers.onReceipt(rec.transferId, [[0, 0]]));
      assert.equal(committed, 1, 'the chunk is committed all the same');
      assert.equal(outbox.progress(rec.transferId), 0, 'its progress is not on disk: a restart sends chunk 0 again');
      assert.equal(await withFileSizeLimit(0, async () => transfers.onReceipt(rec.transferId, [[1, 1]])), 1);
      assert.deepEqual(logs.codes(), ['FIELD_STATE_WRITE_FAILED'], 'logged once');
      assert.equal(transfers.onReceipt(rec.transferId, [[2, 2]]), 1);
      assert.equal(outbox.progress(rec.transferId), 3, 'saved at the next chunk done');
    } finally {
      await queue.close();
      work.cleanup();
    }
  });
});

/** A queue and an outbox in `dir` holding one file of 256 KiB (4 chunks of 64 KiB), queued. */
async function queuedFile(dir: string) {
  const queue = await DurableQueue.open({ dir: join(dir, 'queue'), maxBytes: 64 * 1024 * 1024, segmentBytes: 1024 * 1024, fullPolicy: 'reject', sync: { mode: 'always' }, receipts: true, log });
  const outbox = new FileOutbox(dir, 64 * 1024);
  const src = join(dir, 'big.bin');
  writeFileSync(src, randomBytes(256 * 1024));
  const rec = await outbox.accept(src, {});
  const [file] = await queue.append([{ dataType: FILE_TRANSFER, payload: rec }]);
  return { queue, outbox, rec, seq: (file as { seq: number }).seq };
}

describe('a file transfer whose progress says every chunk is done', () => {
  it('finishes after a restart (a kill between the progress and the removal): its last chunk again, not stuck for ever', async () => {
    const work = tempDir('commit-progress-whole');
    const { queue, outbox, rec, seq } = await queuedFile(work.dir);
    try {
      // FileTransfers.commit saves the progress (all 4 chunks) and then removes the file: killed between.
      outbox.saveProgress(rec.transferId, rec.count);
      const finished: number[] = [];
      const transfers = new FileTransfers(outbox, { window: 4, receipts: true }, (s) => finished.push(s), log);
      assert.ok(transfers.start(seq, rec));
      const sent = [...transfers.chunks()].map((c) => c.item.seq);
      assert.deepEqual(sent, [rec.count - 1], 'the last chunk goes again (the distributor answers it from its done marker)');
      transfers.onAck(`${rec.transferId}.${rec.count - 1}`, Date.now());
      transfers.onReceipt(rec.transferId, [[rec.count - 1, rec.count - 1]]);
      assert.deepEqual(finished, [seq], 'the file is done, its record let go');
      assert.equal(outbox.has(rec.transferId), false, 'and it leaves the outbox');
    } finally {
      await queue.close();
      work.cleanup();
    }
  });
});

describe('a file transfer whose file cannot be read as it is sent', () => {
  async function started(dir: string, logger = log) {
    const { queue, outbox, rec, seq } = await queuedFile(dir);
    const finished: number[] = [];
    const transfers = new FileTransfers(outbox, { window: 1, receipts: true }, (s) => finished.push(s), logger);
    assert.ok(transfers.start(seq, rec));
    return { queue, outbox, rec, seq, finished, transfers };
  }

  it('sends the chunk at the next pump after a read that failed, rather than holding its window until a reconnect', async () => {
    // The chunk was counted as sent before it was read: a read the disk failed once (EIO) threw out
    // of the pump with the chunk still counted, its window full, and nothing more of the file went
    // until the connection happened to drop.
    const work = tempDir('transfer-read-fails');
    const logs = new LogCapture();
    const { queue, outbox, rec, transfers } = await started(work.dir, logs.logger);
    try {
      const read = outbox.readChunk.bind(outbox);
      let fail = true;
      outbox.readChunk = (r, i) => {
        if (!fail) return read(r, i);
        fail = false;
        throw Object.assign(new Error('EIO: i/o error, read'), { code: 'EIO' });
      };
      assert.deepEqual([...transfers.chunks()].map((c) => c.item.seq), [], 'nothing sent: the read failed');
      assert.deepEqual([...transfers.chunks()].map((c) => c.item.seq), [0], 'chunk 0 at the next pump');
      assert.deepEqual(logs.codes(), ['FIELD_FILE_UNREADABLE']);
      assert.equal(transfers.size, 1, 'the transfer goes on');
      assert.ok(outbox.has(rec.transferId));
    } finally {
      await queue.close();
      work.cleanup();
    }
  });

  it('reads a chunk whose read failed again on a timer, so the file completes on a link with no other traffic', async () => {
    // A failed read was tried again only at the next pump, and a pump comes only with traffic (an
    // ack, a receipt, new data, a reconnect): on an idle device the file stalled, for hours.
    const work = tempDir('transfer-read-retry');
    const logs = new LogCapture();
    try {
      const { queue, outbox, connection, frames, commands } = await unsignedParts(work.dir);
      // Acks, without receipts: the gateway's ack completes each chunk.
      const client = new FieldClient({ deviceId: 'd1', batchMax: 100, window: 100, fileWindow: 1, maxBytes: 64 * 1024 * 1024, dataDir: work.dir }, queue, outbox, connection, commands, logs.logger);
      const read = outbox.readChunk.bind(outbox);
      let failures = 0;
      outbox.readChunk = (r, i) => {
        if (failures++ > 0) return read(r, i);
        throw Object.assign(new Error('EIO: i/o error, read'), { code: 'EIO' });
      };
      try {
        connection.emit('open');
        connection.emit('frame', { type: 'welcome', deviceId: 'd1', gatewayId: 'gw', serverTime: Date.now(), limits: { frameMaxBytes: LIMITS.frameMaxBytes, batchMaxMessages: LIMITS.batchMaxMessages } });
        const src = join(work.dir, 'scan.tif');
        const content = randomBytes(3 * 64 * 1024);
        writeFileSync(src, content);
        await client.submitFile(src);
        await eventually(() => (failures > 0 ? true : undefined), 5_000, 'the first read (failing)');
        // The gateway answers each chunk as it comes; nothing else happens on the link.
        const gateway = chunkAcker(frames, (ack) => connection.emit('frame', ack));
        await eventually(() => {
          gateway.answerNew();
          return queue.depth === 0 ? true : undefined;
        }, 10_000, 'the file sent whole, with no traffic after the read failed');
        assert.deepEqual(Buffer.concat(gateway.received), content);
        assert.deepEqual(outbox.bytes(), 0, 'out of the outbox');
        assert.deepEqual(logs.codes(), ['FIELD_FILE_UNREADABLE'], 'logged once');
      } finally {
        client.stop();
        await queue.close();
      }
    } finally {
      work.cleanup();
    }
  });

  it('sends a file whose saved progress cannot be read from its first chunk, rather than failing the pump and leaving it unsent on a connection that stays up', async () => {
    // The progress was read unguarded when the transfer started, in the pump: its read failing
    // (EIO, EMFILE; here a link to a folder in its place) threw out of the pump ("retrying after a
    // reconnect"), the record already handed out: nothing of the file went until the connection
    // happened to drop, and after every start the same.
    const work = tempDir('transfer-progress-unreadable');
    const logs = new LogCapture();
    try {
      const { queue, outbox, connection, frames, commands } = await unsignedParts(work.dir);
      const client = new FieldClient({ deviceId: 'd1', batchMax: 100, window: 100, fileWindow: 1, maxBytes: 64 * 1024 * 1024, dataDir: work.dir }, queue, outbox, connection, commands, logs.logger);
      try {
        const src = join(work.dir, 'scan.tif');
        const content = randomBytes(3 * 64 * 1024);
        writeFileSync(src, content);
        const m = await client.submitFile(src);
        const { transferId } = m.payload as { transferId: string };
        // A link to a folder: read, it fails (EISDIR); saved over, it is replaced.
        symlinkSync(work.dir, join(work.dir, 'outgoing', `${transferId}.progress`));
        connection.emit('open');
        connection.emit('frame', { type: 'welcome', deviceId: 'd1', gatewayId: 'gw', serverTime: Date.now(), limits: { frameMaxBytes: LIMITS.frameMaxBytes, batchMaxMessages: LIMITS.batchMaxMessages } });
        const gateway = chunkAcker(frames, (ack) => connection.emit('frame', ack));
        await eventually(() => {
          gateway.answerNew();
          return queue.depth === 0 ? true : undefined;
        }, 5_000, 'the file sent whole on the same connection');
        assert.deepEqual(Buffer.concat(gateway.received), content);
        assert.deepEqual(logs.codes(), ['FIELD_STATE_INVALID'], 'the unreadable progress logged with a code');
      } finally {
        client.stop();
        await queue.close();
      }
    } finally {
      work.cleanup();
    }
  });

  it('lets the record go when its file is gone from the outbox, rather than failing every pump for ever', async () => {
    const work = tempDir('transfer-file-gone');
    const logs = new LogCapture();
    const { queue, rec, seq, finished, transfers } = await started(work.dir, logs.logger);
    try {
      rmSync(join(work.dir, 'outgoing', rec.transferId));
      assert.deepEqual([...transfers.chunks()], []);
      assert.deepEqual(finished, [seq], 'its record is let go (as when it is missing at the start of its transfer)');
      assert.equal(transfers.size, 0);
      assert.deepEqual(logs.codes(), ['FIELD_FILE_UNREADABLE']);
      assert.deepEqual([...transfers.chunks()], [], 'nothing more of it');
    } finally {
      await queue.close();
      work.cleanup();
    }
  });
});

describe('a file transfer the gateway refuses', () => {
  it('forgets the ids of all its chunks sent on the connection, not one left behind per file refused', async () => {
    const work = tempDir('transfer-refused');
    const { queue, outbox, rec, seq } = await queuedFile(work.dir);
    const transfers = new FileTransfers(outbox, { window: 2, receipts: true }, () => {}, log);
    try {
      assert.ok(transfers.start(seq, rec));
      const ids = [...transfers.chunks()].map((c) => c.item.messageId);
      assert.deepEqual(ids, [`${rec.transferId}.0`, `${rec.transferId}.1`]);
      assert.deepEqual(transfers.refused(ids[0] as string), { seq, transferId: rec.transferId });
      assert.equal(transfers.size, 0);
      // Each id left behind was kept until a reconnect: one entry or more per file refused on a connection that stays up.
      assert.equal(transfers.onAck(ids[0] as string, Date.now()), false, 'the refused chunk is no longer ours');
      assert.equal(transfers.onAck(ids[1] as string, Date.now()), false, 'nor its other chunk in flight');
      assert.equal(transfers.refused(ids[1] as string), undefined);
    } finally {
      await queue.close();
      work.cleanup();
    }
  });
});

/** A distributor's verifier requiring signatures, with device d1's key (`key`) registered in `dir`. */
function signedVerifier(dir: string): MessageVerifier {
  writeFileSync(join(dir, 'd1.key'), key.toString('hex'));
  return new MessageVerifier(new DeviceKeyRegistry(dir, join(dir, 'revoked.txt')), new ReplayWindows(join(dir, 'replay')), { requireSignatures: true, freshnessMs: 30_000, maxDelayMs: 86_400_000 }, log);
}

describe('the distributor side: a copy far behind the replay window', () => {
  it('is refused as a replay, and still answered with a receipt when its signature is intact', () => {
    const work = tempDir('too-old');
    try {
      const verifier = signedVerifier(work.dir);
      const now = Date.now();
      const envelope = (seq: number, k = key): UplinkEnvelope => {
        const payload = { v: seq, timestamp: seq };
        const auth = signGroup(k, { deviceId: 'd1', dataType: 'timeseries', epoch: 'e1', ts: now }, [{ seq, payload }]);
        return { v: 1, deviceId: 'd1', dataType: 'timeseries', gatewayId: 'gw', receivedAt: now, messages: [{ messageId: `e1.${seq}`, seq, payload, auth }] };
      };
      const newest = verifier.check(envelope(WINDOW + 10));
      newest.commit();
      const old = verifier.check(envelope(5));
      assert.equal(old.accepted, undefined, 'not written again');
      assert.equal(old.events[0]?.tags.reason, 'SECURITY_REPLAY');
      assert.deepEqual(old.receipts, [{ epoch: 'e1', seq: 5 }]);
      const forged = verifier.check(envelope(6, randomBytes(32)));
      assert.deepEqual(forged.receipts, [], 'no receipt for what the device did not sign');
    } finally {
      work.cleanup();
    }
  });
});

describe("the distributor side: a device whose clock is set while it is connected", () => {
  it("has what it sends after the step accepted, not refused as stale until it reconnects", async () => {
    // A device without a real-time clock boots days behind (fake-hwclock), reaches the gateway
    // (welcome: the offset is days), and NTP then steps its clock right. The connection stays up.
    const work = tempDir('clock-step');
    const realNow = Date.now;
    const behind = 3 * 86_400_000;
    try {
      const verifier = signedVerifier(work.dir);
      const queue = await DurableQueue.open({ dir: join(work.dir, 'queue'), maxBytes: 64 * 1024 * 1024, segmentBytes: 1024 * 1024, fullPolicy: 'reject', sync: { mode: 'always' }, receipts: true, log });
      const { connection, frames } = capturedConnection();
      const commands = new CommandHandlers({ deviceId: 'd1', key, allowUnsigned: false, maxAgeMs: 1000, skewMs: 1000 });
      const client = new FieldClient(
        { deviceId: 'd1', batchMax: 100, window: 100, fileWindow: 1, maxBytes: 64 * 1024 * 1024, dataDir: work.dir, signingKey: key, commit: { timeoutMs: 60_000, windowMessages: 50_000, windowBytes: 64 * 1024 * 1024 } },
        queue,
        new FileOutbox(work.dir, 64 * 1024),
        connection,
        commands,
        log,
      );
      try {
        Date.now = () => realNow() - behind;
        connection.emit('open');
        connection.emit('frame', { type: 'welcome', deviceId: 'd1', gatewayId: 'gw', serverTime: realNow(), limits: { frameMaxBytes: LIMITS.frameMaxBytes, batchMaxMessages: LIMITS.batchMaxMessages } });
        Date.now = realNow; // NTP steps the clock right
        await client.submitMany([{ dataType: 'timeseries', payload: { v: 1 } }]);
        for (let i = 0; i < 100 && frames.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
        const frame = JSON.parse(frames[0] as string) as { batch: Array<{ dataType: 'timeseries'; messageId: string; seq: number; payload: { v: number }; auth: ReturnType<typeof signGroup> }> };
        const [m] = frame.batch;
        assert.ok(m, 'sent');
        const receivedAt = realNow(); // the gateway's clock
        const verdict = verifier.check({ v: 1, deviceId: 'd1', dataType: 'timeseries', gatewayId: 'gw', receivedAt, messages: [m] });
        assert.deepEqual(verdict.events.map((e) => e.tags.reason), [], `signed ${m.auth.ts - receivedAt} ms off the gateway's clock`);
        assert.equal(verdict.accepted?.messages.length, 1);
      } finally {
        Date.now = realNow;
        client.stop();
        await queue.close();
      }
    } finally {
      Date.now = realNow;
      work.cleanup();
    }
  });
});

/**
 * A signed field client with receipts on, over a captured connection, welcomed: the test plays the
 * gateway (acks) and the distributor (receipts, signed with `key`) by hand. `sends` counts the
 * copies of each message id handed to the connection.
 */
async function receiptClient(dir: string, o: { timeoutMs: number; window?: number; fileWindow?: number; windowMessages?: number }) {
  const queue = await DurableQueue.open({ dir: join(dir, 'queue'), maxBytes: 64 * 1024 * 1024, segmentBytes: 1024 * 1024, fullPolicy: 'reject', sync: { mode: 'always' }, receipts: true, log });
  const { connection, frames } = capturedConnection();
  // Open, as a connection that stays up: what is overdue is sent again only on an open one.
  Object.defineProperty(connection, 'isOpen', { get: () => true });
  const outbox = new FileOutbox(dir, 64 * 1024);
  const commands = new CommandHandlers({ deviceId: 'd1', key, allowUnsigned: false, maxAgeMs: 1000, skewMs: 1000 });
  const client = new FieldClient(
    { deviceId: 'd1', batchMax: 10, window: o.window ?? 2000, fileWindow: o.fileWindow ?? 1, maxBytes: 64 * 1024 * 1024, dataDir: dir, signingKey: key, commit: { timeoutMs: o.timeoutMs, windowMessages: o.windowMessages ?? 50_000, windowBytes: 64 * 1024 * 1024 } },
    queue,
    outbox,
    connection,
    commands,
    log,
  );
  connection.emit('open');
  connection.emit('frame', { type: 'welcome', deviceId: 'd1', gatewayId: 'gw', serverTime: Date.now(), limits: { frameMaxBytes: LIMITS.frameMaxBytes, batchMaxMessages: LIMITS.batchMaxMessages } });
  const items = () => frames.flatMap((f) => (JSON.parse(f) as { batch: Array<{ messageId: string; seq: number; dataType: string }> }).batch);
  let acked = 0;
  const sends = () => {
    const n = new Map<string, number>();
    for (const m of items()) n.set(m.messageId, (n.get(m.messageId) ?? 0) + 1);
    return n;
  };
  return {
    client,
    queue,
    outbox,
    sends,
    /** submits `n` readings and waits until they are all handed to the connection */
    async submit(n: number, from: number) {
      const before = items().length;
      const accepted = await client.submitMany(Array.from({ length: n }, (_, i) => ({ dataType: 'timeseries' as const, payload: { v: from + i } })));
      await eventually(() => (items().length >= before + n ? true : undefined), 5_000, `${n} sent`);
      return accepted.map((m) => ({ messageId: m.messageId, seq: m.seq }));
    },
    items,
    ack(ids: readonly string[]) {
      connection.emit('frame', { type: 'ack', messageIds: [...ids] });
    },
    /** acks every message and chunk sent since the last call (as the gateway does); no receipt */
    ackNew() {
      const all = items();
      if (all.length > acked) connection.emit('frame', { type: 'ack', messageIds: all.slice(acked).map((m) => m.messageId) });
      acked = all.length;
    },
    receipt(seqs: readonly number[]) {
      const epoch = queue.epochOf(seqs[0] as number);
      const ranges = seqs.map((s) => [s, s] as [number, number]);
      connection.emit('frame', { type: 'commit', epoch, ranges, mac: signReceipt(key, 'd1', epoch, ranges) });
    },
    async close() {
      client.stop();
      await queue.close();
    },
  };
}

describe('a receipt overdue on a connection that stays up', () => {
  it('sends again only the messages whose receipt is overdue, not everything else in flight', async () => {
    // Every message in flight went again whenever one receipt was late: copies, recognised on the
    // internal side, that cost the link and the gateway (with a steady stream, a whole window of them).
    const work = tempDir('commit-overdue-only');
    const d = await receiptClient(work.dir, { timeoutMs: 3_000 });
    try {
      const [oldest] = await d.submit(1, 0);
      d.ack([(oldest as { messageId: string }).messageId]); // acked; its receipt never comes
      // The oldest is overdue at the first look past 3 s (looks are 1 s apart); what is sent 2 s
      // later is not yet by then.
      await new Promise((r) => setTimeout(r, 2_000));
      // A steady stream meanwhile: 50 readings in flight (not yet acked) when the oldest is overdue.
      const later = await d.submit(50, 1);
      await eventually(() => (d.client.receiptStats.resentForReceipt > 0 && (d.sends().get((oldest as { messageId: string }).messageId) ?? 0) >= 2 ? true : undefined), 5_000, 'the oldest sent again');
      await new Promise((r) => setTimeout(r, 100)); // the pump's turn after the resend
      const sends = d.sends();
      assert.equal(sends.get((oldest as { messageId: string }).messageId), 2, 'the overdue one went again');
      assert.deepEqual(later.filter((m) => sends.get(m.messageId) !== 1).length, 0, 'nothing else in flight went again');
      assert.equal(d.client.receiptStats.resentForReceipt, 1);
      // The rest is answered as usual, and everything is committed.
      d.ack(later.map((m) => m.messageId));
      d.ack([(oldest as { messageId: string }).messageId]);
      d.receipt([(oldest as { seq: number }).seq, ...later.map((m) => m.seq)]);
      assert.equal(d.client.unacknowledged, 0);
    } finally {
      await d.close();
      work.cleanup();
    }
  });

  it('sends the overdue oldest again when the receipt window is full: a resend runs no further ahead of it', async () => {
    // The window (FIELD_COMMIT_WINDOW_MESSAGES) is measured from the oldest message not committed:
    // that one lost (a DMZ broker that crashed before saving it), everything after it committed,
    // the window filled up behind it and its resend was held back by the very window it would free.
    // Nothing more went until the client was restarted.
    const work = tempDir('commit-window-full');
    const d = await receiptClient(work.dir, { timeoutMs: 1_000, windowMessages: 20 });
    try {
      const [lost] = await d.submit(1, 0);
      d.ack([(lost as { messageId: string }).messageId]); // acked; lost on the way to the database
      const later = await d.submit(19, 1);
      d.ack(later.map((m) => m.messageId));
      d.receipt(later.map((m) => m.seq));
      const [next] = await d.client.submitMany([{ dataType: 'timeseries', payload: { v: 20 } }]);
      await eventually(() => ((d.sends().get((lost as { messageId: string }).messageId) ?? 0) >= 2 ? true : undefined), 5_000, 'the oldest sent again');
      assert.equal(d.sends().get((next as { messageId: string }).messageId), undefined, 'nothing new past the window');
      d.ack([(lost as { messageId: string }).messageId]);
      d.receipt([(lost as { seq: number }).seq]);
      await eventually(() => (d.sends().get((next as { messageId: string }).messageId) === 1 ? true : undefined), 5_000, 'the window moves on once it is committed');
    } finally {
      await d.close();
      work.cleanup();
    }
  });

  it('sends again a message in flight that the gateway never answered, once the receipt timeout has passed since it was sent', async () => {
    // The whole window went again when a receipt was overdue, which also recovered a message the
    // gateway never answered on a connection that stayed up; only what is overdue goes again now,
    // and a message in flight that long is overdue too.
    const work = tempDir('commit-unanswered');
    const d = await receiptClient(work.dir, { timeoutMs: 1_000 });
    try {
      const [lost] = await d.submit(1, 0);
      const id = (lost as { messageId: string }).messageId;
      await eventually(() => ((d.sends().get(id) ?? 0) >= 2 ? true : undefined), 5_000, 'sent again after the timeout');
      d.ack([id]);
      d.receipt([(lost as { seq: number }).seq]);
      assert.equal(d.client.unacknowledged, 0);
    } finally {
      await d.close();
      work.cleanup();
    }
  });

  it("sends again a file's chunk the gateway never answered, once the receipt timeout has passed since it was sent", async () => {
    const work = tempDir('commit-unanswered-chunk');
    const d = await receiptClient(work.dir, { timeoutMs: 1_000 });
    try {
      const src = join(work.dir, 'scan.tif');
      writeFileSync(src, randomBytes(2 * 64 * 1024));
      const m = await d.client.submitFile(src);
      const { transferId } = m.payload as { transferId: string };
      await eventually(() => ((d.sends().get(`${transferId}.0`) ?? 0) >= 1 ? true : undefined), 5_000, 'its first chunk sent');
      await eventually(() => ((d.sends().get(`${transferId}.0`) ?? 0) >= 2 ? true : undefined), 5_000, 'sent again after the timeout, with no answer');
      assert.equal(d.sends().get(`${transferId}.1`), undefined, 'the next chunk waits for room in the file window');
    } finally {
      await d.close();
      work.cleanup();
    }
  });
});

describe('readings behind a backlog of files', () => {
  it('pass it: files in flight do not take the readings\' window, and only a few transfers send at once', async () => {
    // A file's record is in flight for as long as its transfer runs; counted in FIELD_WINDOW, a
    // backlog of that many files (a camera after an outage) held every reading back until one was done.
    const work = tempDir('files-backlog');
    const d = await receiptClient(work.dir, { timeoutMs: 60_000, window: 5 });
    try {
      const transfers: string[] = [];
      for (let i = 0; i < 8; i++) {
        const src = join(work.dir, `shot-${i}.jpg`);
        writeFileSync(src, randomBytes(2 * 64 * 1024));
        transfers.push(((await d.client.submitFile(src)).payload as { transferId: string }).transferId);
      }
      // The gateway acks every chunk; no receipt comes, so no file is ever done.
      const chunksSent = () => new Set(d.items().filter((m) => m.dataType === 'file').map((m) => m.messageId.split('.')[0]));
      await eventually(() => {
        d.ackNew();
        return chunksSent().size >= LIMITS.fieldFileTransfersMax ? true : undefined;
      }, 5_000, 'chunks of the first files');
      const readings = await d.client.submitMany(Array.from({ length: 20 }, (_, i) => ({ dataType: 'timeseries' as const, payload: { v: i } })));
      await eventually(() => {
        d.ackNew();
        const sent = new Set(d.items().map((m) => m.messageId));
        return readings.every((m) => sent.has(m.messageId)) ? true : undefined;
      }, 5_000, 'the readings sent while no file is done');
      assert.equal(d.queue.awaiting.count, 20, 'and acked, awaiting their receipts');
      assert.deepEqual([...chunksSent()], transfers.slice(0, LIMITS.fieldFileTransfersMax), 'chunks of the oldest files only, a few at once');
    } finally {
      await d.close();
      work.cleanup();
    }
  });
});
