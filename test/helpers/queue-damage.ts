import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { DurableQueue, type QueueOptions } from '../../field-client/src/queue/durable-queue.ts';
import { decodeRecord } from '../../field-client/src/queue/record-codec.ts';
import { LogCapture } from './embedded.ts';
import { tempDir } from './pki.ts';

/** What the tests of a damaged queue share: readings, segment files, the records in them. */
export const reading = (v: number) => ({ dataType: 'timeseries', payload: { v, timestamp: 1700000000000 + v } });
export const segments = (dir: string) => readdirSync(dir).filter((f) => f.startsWith('seg-')).sort();
export const values = (ms: Array<{ payloadJson: string }>) => ms.map((m) => (JSON.parse(m.payloadJson) as { v: number }).v);
/** from..to − 1 (`range(n)`: 0..n − 1) */
export const range = (from: number, to?: number): number[] => (to === undefined ? range(0, from) : Array.from({ length: to - from }, (_, i) => from + i));
export const corruptLogs = (logs: LogCapture) => logs.lines.filter((l) => l.code === 'FIELD_QUEUE_CORRUPT');

/** Where each record of an undamaged segment file starts, and, last, where the last one ends. */
export function recordBounds(buf: Buffer): number[] {
  const starts: number[] = [];
  for (let at = 0; at < buf.length; ) {
    const r = decodeRecord(buf, at);
    assert.equal(r.kind, 'record', 'an undamaged segment');
    starts.push(at);
    at = (r as { next: number }).next;
  }
  return [...starts, buf.length];
}

/** Queues in folders of their own, removed by cleanup() (a test file's afterEach). */
export function damagedQueues(name: string) {
  const dirs: Array<{ cleanup(): void }> = [];
  return {
    cleanup: () => {
      for (const d of dirs.splice(0)) d.cleanup();
    },
    /** A queue holding `n` readings (values 0..n-1, numbers 1..n), closed; `reopen` opens it again. */
    async filled(n: number, over: Partial<QueueOptions> = {}) {
      const tmp = tempDir(name);
      dirs.push(tmp);
      const logs = new LogCapture();
      const opts: QueueOptions = { dir: tmp.dir, maxBytes: 1 << 30, segmentBytes: 64 * 1024, fullPolicy: 'reject', sync: { mode: 'always' }, log: logs.logger, ...over };
      const q = await DurableQueue.open(opts);
      if (n > 0) await q.append(range(n).map(reading));
      await q.close();
      const at = (i: number) => segments(tmp.dir).at(i) as string;
      return { dir: tmp.dir, logs, firstSeq: (i: number) => Number(/\d+/.exec(at(i))?.[0]), seg: (i: number) => join(tmp.dir, at(i)), reopen: () => DurableQueue.open(opts) };
    },
    /** A queue open and empty, in a folder of its own; `seg()`: its last segment. */
    async opened(over: Partial<QueueOptions> = {}) {
      const tmp = tempDir(name);
      dirs.push(tmp);
      const logs = new LogCapture();
      const q = await DurableQueue.open({ dir: tmp.dir, maxBytes: 1 << 30, segmentBytes: 1 << 20, fullPolicy: 'reject', sync: { mode: 'always' }, log: logs.logger, ...over });
      return { q, logs, seg: () => join(tmp.dir, segments(tmp.dir).at(-1) as string) };
    },
  };
}

/** Sends everything, acks it: the queue drains, its watermark past every number. */
export function drains(q: DurableQueue, n: number, sent: Array<{ seq: number }>): void {
  q.ack(sent.map((m) => m.seq));
  assert.deepEqual({ depth: q.depth, committedThrough: q.committedThrough }, { depth: 0, committedThrough: n });
}
