import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { appendFileSync, cpSync, readdirSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { DATA_TYPES as T, encodeWire } from '../../field-client/src/inputs/sparkplug/proto.ts';
import { SparkplugSession } from '../../field-client/src/inputs/sparkplug/session.ts';
import { SessionStore } from '../../field-client/src/inputs/sparkplug/store.ts';
import { LIMITS } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';
import { tempDir } from '../helpers/pki.ts';

/**
 * Reading the saved Sparkplug sessions back at start (store-read.ts) when the store on disk holds
 * more than the host may (a births file keeps previous sessions a newer birth dropped from memory):
 * the edge nodes whose last session ended last are kept, the oldest dropped and logged
 * (SPARKPLUG_STORE_DROPPED). Before, files were dropped in the folder's listing order, and the host
 * took the oldest first and refused the newest.
 */
const T0 = Date.now() - 60_000; // within the resend window of the restart
const bd = (n: number) => ({ name: 'bdSeq', datatype: T.UInt64, longValue: String(n) });
const nbirth = (at: number) => encodeWire({ timestamp: String(at), seq: '0', metrics: [bd(0), { name: 'Temp', alias: '1', datatype: T.Double, doubleValue: 1 }] });
const ndeath = () => encodeWire({ metrics: [bd(0)] });
const queue = { submitMany: async () => [] as never[] };
const logs = () => {
  const lines: Array<Record<string, unknown>> = [];
  return { lines, log: createLogger('test', 'info', { write: (l: string) => lines.push(JSON.parse(l) as Record<string, unknown>) }) };
};
const session = (dir: string, log = createLogger('test', 'silent')) => new SparkplugSession(queue, () => undefined, log, [], { resends: true, store: new SessionStore(dir, log) });
const fileOf = (dir: string, edge: string) => join(dir, `${createHash('sha256').update(`Plant1\u0000${edge}`).digest('hex').slice(0, 32)}.births.json`);
const via = { connection: {}, dup: false };

/**
 * A store of four edge nodes alike: E0 died at T0+10, E1 at T0+20, E2 and E3 current at the restart
 * (E3 born last, but its births file's time set before E2's). Resolves with what one takes (bytes).
 */
async function store(dir: string): Promise<number> {
  const a = session(dir);
  for (let e = 0; e < 4; e++) await a.onMessage(`spBv1.0/Plant1/NBIRTH/E${e}`, nbirth(T0 + e), T0 + e, via);
  await a.onMessage('spBv1.0/Plant1/NDEATH/E0', ndeath(), T0 + 10, via);
  await a.onMessage('spBv1.0/Plant1/NDEATH/E1', ndeath(), T0 + 20, via);
  const each = a.host.definitionsBytes / 4;
  a.stop();
  const t = (T0 + 1_000) / 1000;
  utimesSync(fileOf(dir, 'E2'), t + 2, t + 2);
  utimesSync(fileOf(dir, 'E3'), t + 1, t + 1);
  return each;
}

/** Reads `from` back (a copy of it) with the limit `set` changed; what is restored, what is logged. */
function readBack(from: string, to: string, set: Partial<Record<'sparkplugDefinitionsMaxBytes' | 'sparkplugMaxEdgeNodes', number>>) {
  cpSync(from, to, { recursive: true, preserveTimestamps: true });
  const limits = LIMITS as Record<keyof typeof set, number>;
  const was = { sparkplugDefinitionsMaxBytes: limits.sparkplugDefinitionsMaxBytes, sparkplugMaxEdgeNodes: limits.sparkplugMaxEdgeNodes };
  Object.assign(limits, set);
  try {
    const { lines, log } = logs();
    const b = session(to, log);
    const kept = ['E0', 'E1', 'E2', 'E3'].filter((e) => b.host.sessionsOf(`Plant1\u0000${e}`).previous.length > 0);
    const files = ['E0', 'E1', 'E2', 'E3'].filter((e) => readdirSync(to).includes(fileOf(to, e).slice(to.length + 1)));
    b.stop();
    return { kept, files, dropped: lines.filter((l) => l.code === 'SPARKPLUG_STORE_DROPPED'), lines };
  } finally {
    Object.assign(limits, was);
  }
}

/** Edge node `edge`'s births file (v2, one birth) as the store wrote it before v2: one JSON document. */
function v1Of(dir: string, edge: string): string {
  const head = JSON.parse(readFileSync(fileOf(dir, edge), 'utf8').split('\n')[0] as string) as { gen: number; record: unknown; sessions: Array<{ id: number; bdSeq: number; bornAt: number }> };
  const s = head.sessions[0] as { id: number; bdSeq: number; bornAt: number };
  return JSON.stringify({ v: 1, gen: head.gen, group: 'Plant1', edge, record: head.record, sessions: [{ id: s.id, bdSeq: s.bdSeq, bornAt: s.bornAt, birthDigest: null, node: [['Temp', T.Double, `Plant1.${edge}.Temp`, 1]], devices: [] }] });
}

describe('Sparkplug session store read back past what is held', () => {
  it('keeps the edge nodes whose last session ended last, by their file time when they end alike; drops the oldest with SPARKPLUG_STORE_DROPPED', async () => {
    const work = tempDir('sp-read');
    try {
      const each = await store(join(work.dir, 'saved'));
      // Room for three: E0, which ended first, dropped.
      const three = readBack(join(work.dir, 'saved'), join(work.dir, 'three'), { sparkplugDefinitionsMaxBytes: Math.floor(3.5 * each) });
      assert.deepEqual(three.kept, ['E1', 'E2', 'E3']);
      assert.deepEqual(three.files, ['E1', 'E2', 'E3'], 'the file of the one dropped removed');
      assert.equal(three.dropped.length, 1, JSON.stringify(three.lines));
      assert.deepEqual(three.dropped[0]?.edgeNodes, ['Plant1/E0']);
      assert.equal(three.dropped[0]?.level, 40, 'a warning');
      assert.equal(three.lines.filter((l) => l.code === 'SPARKPLUG_STORE_INVALID' || l.code === 'SPARKPLUG_DEFINITIONS_FULL').length, 0);
      // Room for one: E2 and E3 both ended at the restart; E2's births file is the newer.
      const one = readBack(join(work.dir, 'saved'), join(work.dir, 'one'), { sparkplugDefinitionsMaxBytes: Math.floor(1.5 * each) });
      assert.deepEqual(one.kept, ['E2']);
      assert.deepEqual(one.dropped[0]?.edgeNodes, ['Plant1/E3', 'Plant1/E1', 'Plant1/E0'], 'newest dropped first in the line');
      // The edge nodes' bound the same way.
      const two = readBack(join(work.dir, 'saved'), join(work.dir, 'two'), { sparkplugMaxEdgeNodes: 2 });
      assert.deepEqual(two.kept, ['E2', 'E3']);
      assert.deepEqual(two.dropped[0]?.edgeNodes, ['Plant1/E1', 'Plant1/E0']);
      // All within the bounds: all restored, nothing logged as dropped.
      const all = readBack(join(work.dir, 'saved'), join(work.dir, 'all'), {});
      assert.deepEqual(all.kept, ['E0', 'E1', 'E2', 'E3']);
      assert.equal(all.dropped.length, 0);
    } finally {
      work.cleanup();
    }
  });

  it('reads a births file a line a birth, drops one missing a birth (SPARKPLUG_STORE_INVALID), and still reads a file of the earlier one-document format', async () => {
    const work = tempDir('sp-read');
    const dir = join(work.dir, 'saved');
    try {
      await store(dir);
      const text = readFileSync(fileOf(dir, 'E2'), 'utf8');
      assert.equal(text.split('\n').length, 3, 'its first line, its one birth, the end');
      writeFileSync(fileOf(dir, 'E2'), `${text.split('\n')[0]}\n`);
      // E3 as the store wrote it before (v1), its record that of its current session.
      const head = JSON.parse(readFileSync(fileOf(dir, 'E3'), 'utf8').split('\n')[0] as string) as { gen: number; record: Array<{ id: number }>; sessions: Array<{ id: number; bdSeq: number; bornAt: number }> };
      const s = head.sessions[0] as { id: number; bdSeq: number; bornAt: number };
      writeFileSync(
        fileOf(dir, 'E3'),
        JSON.stringify({ v: 1, gen: head.gen, group: 'Plant1', edge: 'E3', record: head.record, sessions: [{ id: s.id, bdSeq: s.bdSeq, bornAt: s.bornAt, birthDigest: null, node: [['Temp', T.Double, 'Plant1.E3.Temp', 1]], devices: [] }] }),
      );
      const r = readBack(dir, join(work.dir, 'read'), {});
      assert.deepEqual(r.kept, ['E0', 'E1', 'E3']);
      const bad = r.lines.filter((l) => l.code === 'SPARKPLUG_STORE_INVALID');
      assert.equal(bad.length, 1, JSON.stringify(r.lines));
      assert.match(String(bad[0]?.msg), /fewer than its sessions declare/);
    } finally {
      work.cleanup();
    }
  });

  it('orders a births file newer than its journal line (a save killed between the two) by its own record: its current session is among the newest', async () => {
    const work = tempDir('sp-read');
    const dir = join(work.dir, 'saved');
    try {
      const each = await store(dir);
      // Restarted; E0 (dead at T0+10) born again, the process killed once its births file is
      // renamed in, before its journal line: the journal as it was before that save.
      const b = session(dir);
      const journal = readFileSync(join(dir, 'sessions.journal'));
      await b.onMessage('spBv1.0/Plant1/NBIRTH/E0', nbirth(T0 + 30), T0 + 30, via);
      b.stop();
      writeFileSync(join(dir, 'sessions.journal'), journal);
      // Room for four sessions and a half: E0's two (current at the restart, and ended at T0+10),
      // E2's and E3's; E1, whose last session ended at T0+20, is the oldest. Ordered by the journal
      // alone, E0 was taken for one ended at T0+10 and dropped, E1 kept.
      const r = readBack(dir, join(work.dir, 'read'), { sparkplugDefinitionsMaxBytes: Math.floor(4.5 * each) });
      assert.deepEqual(r.kept, ['E0', 'E2', 'E3'], JSON.stringify(r.lines));
      assert.deepEqual(r.dropped[0]?.edgeNodes, ['Plant1/E1']);
    } finally {
      work.cleanup();
    }
  });

  it('removes unread a births file whose edge node the journal says was removed (a save killed before the removal), not naming it as dropped for room', async () => {
    const work = tempDir('sp-read');
    const dir = join(work.dir, 'saved');
    try {
      const each = await store(dir);
      appendFileSync(join(dir, 'sessions.journal'), `${JSON.stringify({ gen: 1_000_000, group: 'Plant1', edge: 'E0', sessions: [] })}\n`);
      const r = readBack(dir, join(work.dir, 'read'), { sparkplugDefinitionsMaxBytes: Math.floor(1.5 * each) });
      assert.deepEqual(r.kept, ['E2']);
      assert.deepEqual(r.files, ['E2'], 'E0 removed too');
      assert.equal(r.dropped.length, 1);
      assert.deepEqual(r.dropped[0]?.edgeNodes, ['Plant1/E3', 'Plant1/E1'], 'E0 had nothing to restore: not dropped for room');
      assert.equal(r.dropped[0]?.dropped, 2);
      assert.equal(r.lines.filter((l) => l.code === 'SPARKPLUG_STORE_INVALID').length, 0);
    } finally {
      work.cleanup();
    }
  });

  it("writes a file of the one-document format again, a line a birth, at its edge node's next save, one that changes only its record too", async () => {
    const work = tempDir('sp-read');
    const dir = join(work.dir, 'saved');
    try {
      await store(dir);
      writeFileSync(fileOf(dir, 'E3'), v1Of(dir, 'E3'));
      const b = session(dir);
      assert.equal(b.host.sessionsOf('Plant1\u0000E3').previous.length, 1);
      // What E3 sent after its birth, sent again on its new connection: read in its restored session,
      // which only moves its seq.
      await b.onMessage('spBv1.0/Plant1/NDATA/E3', encodeWire({ timestamp: String(T0 + 5), seq: '1', metrics: [{ alias: '1', datatype: T.Double, doubleValue: 2 }] }), T0 + 5, { connection: {}, dup: false });
      b.stop();
      const text = readFileSync(fileOf(dir, 'E3'), 'utf8');
      assert.equal((JSON.parse(text.split('\n')[0] as string) as { v: number }).v, 2, text.slice(0, 200));
      assert.deepEqual(readBack(dir, join(work.dir, 'again'), {}).kept, ['E0', 'E1', 'E2', 'E3']);
    } finally {
      work.cleanup();
    }
  });

  it('refuses a file of the one-document format followed by more lines (SPARKPLUG_STORE_INVALID), as JSON.parse of the whole did', async () => {
    const work = tempDir('sp-read');
    const dir = join(work.dir, 'saved');
    try {
      await store(dir);
      const v1 = v1Of(dir, 'E3');
      // Whole, it is still read (a trailing line end is whitespace); with a line after it, refused.
      writeFileSync(fileOf(dir, 'E3'), `${v1}\n`);
      assert.deepEqual(readBack(dir, join(work.dir, 'whole'), {}).kept, ['E0', 'E1', 'E2', 'E3']);
      writeFileSync(fileOf(dir, 'E3'), `${v1}\n[["Temp",${T.Double},null,null]]\n`);
      const r = readBack(dir, join(work.dir, 'more'), {});
      assert.deepEqual(r.kept, ['E0', 'E1', 'E2']);
      const bad = r.lines.filter((l) => l.code === 'SPARKPLUG_STORE_INVALID');
      assert.equal(bad.length, 1, JSON.stringify(r.lines));
      assert.equal(r.files.includes('E3'), false);
    } finally {
      work.cleanup();
    }
  });
});
