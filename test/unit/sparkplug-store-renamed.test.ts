import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Submission } from '../../field-client/src/client-options.ts';
import { FieldNames } from '../../field-client/src/inputs/sparkplug/names.ts';
import { suffixOf } from '../../field-client/src/inputs/sparkplug/naming.ts';
import { DATA_TYPES as T, encodeWire } from '../../field-client/src/inputs/sparkplug/proto.ts';
import { SparkplugSession } from '../../field-client/src/inputs/sparkplug/session.ts';
import { SessionStore } from '../../field-client/src/inputs/sparkplug/store.ts';
import { createLogger } from '../../shared/logger.ts';
import { tempDir } from '../helpers/pki.ts';
import { heldQueue } from '../helpers/held-queue.ts';

/**
 * The births files of edge nodes whose metrics' field names another metric's birth or death changed
 * (names.ts, store.ts): written again before a message of theirs stored under the new names can be
 * written, so that after a SIGKILL its resend goes to the same field, never to another metric's.
 * Before, they were written only at the edge node's own next save, after that message's append.
 */
const T0 = 1_700_000_000_000;
const bd = (n: number) => ({ name: 'bdSeq', datatype: T.UInt64, longValue: String(n) });
const enc = (o: Record<string, unknown>) => encodeWire(o);
const nb = (v: number) => enc({ timestamp: String(T0), seq: '0', metrics: [bd(0), { name: 'Temp', alias: '1', datatype: T.Double, doubleValue: v }] });
const nd = (seq: number, v: number) => enc({ timestamp: String(T0 + seq), seq: String(seq), metrics: [{ alias: '1', datatype: T.Double, doubleValue: v }] });
const suffixed = `A.B.C.Temp${suffixOf('A.B', 'C', undefined, 'Temp')}`;

/** What the n-th append of a scripted queue does: written; refused (a full disk); never answered (the process dies before it is written), or written and then that. */
type Step = 'store' | 'refuse' | 'die' | 'store-then-die';

/**
 * A queue scripted append by append: append 2 waits until `release()` (so that what comes meanwhile
 * joins the next batch), then each does what `step` says of it.
 */
function scripted(step: (n: number) => Step) {
  const stored: Submission[] = [];
  let calls = 0;
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  return {
    stored,
    release: () => release(),
    get calls() {
      return calls;
    },
    client: {
      submitMany: async (items: readonly Submission[]) => {
        calls++;
        if (calls === 2) await gate;
        const what = step(calls);
        if (what === 'refuse') throw new Error('disk full');
        if (what === 'die') return new Promise<never[]>(() => undefined);
        stored.push(...items);
        return what === 'store-then-die' ? new Promise<never[]>(() => undefined) : [];
      },
    },
    /** Waits until `n` appends were made (and their turn has run), and no more. */
    async until(n: number): Promise<void> {
      for (let i = 0; i < 200 && calls < n; i++) await new Promise((r) => setTimeout(r, 10));
      await new Promise((r) => setTimeout(r, 20));
      assert.equal(calls, n);
    },
  };
}
const session = (dir: string, q: { client: ReturnType<typeof heldQueue>['client'] }, log = createLogger('test', 'silent')) =>
  new SparkplugSession(q.client, () => undefined, log, [], { resends: true, store: new SessionStore(dir, log) });
/** The fields a value was stored under (the values of the test are distinct). */
const fieldsHolding = (stored: Submission[], value: number) => [...new Set(stored.flatMap((s) => Object.entries(s.payload).flatMap(([f, v]) => (v === value && f !== 'timestamp' ? [f] : []))))];
const values = (stored: Submission[], field: string) => stored.flatMap((s) => (field in s.payload ? [(s.payload as Record<string, unknown>)[field]] : []));

describe('Sparkplug session store: edge nodes renamed by another metric', () => {
  it("writes again the births of an edge node another's birth renamed before that edge node's next message can be lost: its resend keeps the new name", async () => {
    const work = tempDir('sp-store');
    try {
      const q1 = heldQueue();
      const a = session(work.dir, q1);
      const conn = {};
      // A.B/C saved with A.B.C.Temp; A/B.C's birth takes the name. A.B/C's very next message is the
      // one lost: its births file must say the suffix before that message can be written.
      await a.onMessage('spBv1.0/A.B/NBIRTH/C', nb(1), T0, { connection: conn, dup: false });
      await a.onMessage('spBv1.0/A/NBIRTH/B.C', nb(2), T0, { connection: {}, dup: false });
      q1.hold(true);
      void a.onMessage('spBv1.0/A.B/NDATA/C', nd(1, 8), T0, { connection: conn, dup: false }).catch(() => undefined);
      // The process dies once the message's append is handed over (the births written before it).
      await q1.untilHeld();

      const q2 = heldQueue();
      const b = session(work.dir, q2);
      await b.onMessage('spBv1.0/A.B/NDATA/C', nd(1, 8), T0 + 10, { connection: {}, dup: false });
      assert.deepEqual(values(q2.stored, suffixed), [8], JSON.stringify(q2.stored));
      assert.deepEqual(values(q2.stored, 'A.B.C.Temp'), []);
      a.stop();
      b.stop();
    } finally {
      work.cleanup();
    }
  });

  for (const own of [false, true]) it(`writes again the births of an edge node renamed in the batch that carries its next message${own ? ' and a birth of its own' : ''} before that batch is written: killed after the write, its resend keeps the new name`, async () => {
    const work = tempDir('sp-store');
    try {
      // Append 2 waits until released; append 3 is written, then the process dies before its save.
      const q = scripted((n) => (n >= 3 ? 'store-then-die' : 'store'));
      const a = session(work.dir, q);
      const conn = {};
      await a.onMessage('spBv1.0/A.B/NBIRTH/C', nb(1), T0, { connection: conn, dup: false });
      void a.onMessage('spBv1.0/X/NBIRTH/Y', nb(0), T0, { connection: {}, dup: false });
      await new Promise((r) => setImmediate(r)); // its append started, held
      // A/B.C's birth takes A.B.C.Temp and A.B/C's next message follows it: one batch.
      void a.onMessage('spBv1.0/A/NBIRTH/B.C', nb(2), T0, { connection: {}, dup: false });
      void a.onMessage('spBv1.0/A.B/NDATA/C', nd(1, 8), T0, { connection: conn, dup: false });
      // A DBIRTH after it: what the host holds is no longer what was saved; what was saved is written again.
      if (own) void a.onMessage('spBv1.0/A.B/DBIRTH/C/D', enc({ timestamp: String(T0 + 2), seq: '2', metrics: [{ name: 'P', datatype: T.Double, doubleValue: 1 }] }), T0, { connection: conn, dup: false });
      await new Promise((r) => setImmediate(r));
      q.release();
      await q.until(3); // the birth and the data in one batch, after the held one
      assert.deepEqual(values(q.stored, suffixed), [8], 'written, not saved: the process dies');

      const q2 = heldQueue();
      const b = session(work.dir, q2);
      await b.onMessage('spBv1.0/A.B/NDATA/C', nd(1, 8), T0 + 10, { connection: {}, dup: false });
      assert.deepEqual(values(q2.stored, suffixed), [8], JSON.stringify(q2.stored));
      assert.deepEqual(values(q2.stored, 'A.B.C.Temp'), []);
      a.stop();
      b.stop();
    } finally {
      work.cleanup();
    }
  });

  it("writes again the births of an edge node the other Sparkplug input's birth renamed (the names are shared) before its next message is written", async () => {
    const work = tempDir('sp-store');
    try {
      const names = new FieldNames();
      const q1 = heldQueue();
      const silent = createLogger('test', 'silent');
      const local = new SparkplugSession(q1.client, () => undefined, silent, [], { resends: true, names, store: new SessionStore(work.dir, silent) });
      const plant = new SparkplugSession(heldQueue().client, () => undefined, silent, [], { names });
      const conn = {};
      await local.onMessage('spBv1.0/A.B/NBIRTH/C', nb(1), T0, { connection: conn, dup: false });
      await plant.onMessage('spBv1.0/A/NBIRTH/B.C', nb(2), T0);
      q1.hold(true);
      void local.onMessage('spBv1.0/A.B/NDATA/C', nd(1, 8), T0, { connection: conn, dup: false }).catch(() => undefined);
      // The process dies once the message's append is handed over (the births written before it).
      await q1.untilHeld();

      const q2 = heldQueue();
      const b = session(work.dir, q2);
      await b.onMessage('spBv1.0/A.B/NDATA/C', nd(1, 8), T0 + 10, { connection: {}, dup: false });
      assert.deepEqual(values(q2.stored, suffixed), [8], JSON.stringify(q2.stored));
      local.stop();
      plant.stop();
      b.stop();
    } finally {
      work.cleanup();
    }
  });

  it('writes again the births of an edge node whose name an undone birth gives back (the queue refused it) before its next message is written', async () => {
    const work = tempDir('sp-store');
    try {
      // Append 2 waits until released, append 3 is refused, append 4 never written (the process dies).
      const q = scripted((n) => (n === 3 ? 'refuse' : n >= 4 ? 'die' : 'store'));
      const a = session(work.dir, q);
      const conn = {};
      await a.onMessage('spBv1.0/A.B/NBIRTH/C', nb(1), T0, { connection: conn, dup: false });
      const first = a.onMessage('spBv1.0/A.B/NDATA/C', nd(1, 7), T0, { connection: conn, dup: false });
      await new Promise((r) => setImmediate(r)); // its append started, held
      // A/B.C's birth takes A.B.C.Temp while A.B/C's append is on its way: that append's save writes
      // A.B/C's births with the suffix. The birth's own append is then refused and the birth undone:
      // A.B/C has its plain name again, and its births file must say so before its next message.
      const refused = a.onMessage('spBv1.0/A/NBIRTH/B.C', nb(2), T0, { connection: {}, dup: false }).catch(() => 'refused');
      await new Promise((r) => setImmediate(r));
      q.release();
      await first;
      assert.equal(await refused, 'refused');
      void a.onMessage('spBv1.0/A.B/NDATA/C', nd(2, 8), T0, { connection: conn, dup: false }).catch(() => undefined);
      await q.until(4);

      const q2 = heldQueue();
      const b = session(work.dir, q2);
      await b.onMessage('spBv1.0/A.B/NDATA/C', nd(2, 8), T0 + 10, { connection: {}, dup: false });
      assert.deepEqual(values(q2.stored, 'A.B.C.Temp'), [8], JSON.stringify(q2.stored));
      a.stop();
      b.stop();
    } finally {
      work.cleanup();
    }
  });

  for (const killAt of [3, 4]) it(`keeps the name a message was written under when a birth renames its metric after it in one batch: killed after append ${killAt}, each reading is stored once, under one name`, async () => {
    const work = tempDir('sp-store');
    try {
      // Append 2 waits until released; append `killAt` is written, then the process dies before its save.
      const q = scripted((n) => (n > killAt ? 'die' : n === killAt ? 'store-then-die' : 'store'));
      const a = session(work.dir, q);
      const conn = {};
      await a.onMessage('spBv1.0/A.B/NBIRTH/C', nb(1), T0, { connection: conn, dup: false });
      void a.onMessage('spBv1.0/X/NBIRTH/Y', nb(0), T0, { connection: {}, dup: false });
      await new Promise((r) => setImmediate(r)); // its append started, held
      // Taken while it is held: A.B/C's value under A.B.C.Temp, then A/B.C's birth takes that name,
      // then A.B/C's next value under the suffix.
      void a.onMessage('spBv1.0/A.B/NDATA/C', nd(1, 8), T0, { connection: conn, dup: false });
      void a.onMessage('spBv1.0/A/NBIRTH/B.C', nb(2), T0, { connection: {}, dup: false });
      void a.onMessage('spBv1.0/A.B/NDATA/C', nd(2, 9), T0, { connection: conn, dup: false });
      await new Promise((r) => setImmediate(r));
      q.release();
      await q.until(killAt);
      assert.deepEqual(fieldsHolding(q.stored, 8), ['A.B.C.Temp'], JSON.stringify(q.stored));

      const q2 = heldQueue();
      const b = session(work.dir, q2);
      await b.onMessage('spBv1.0/A.B/NDATA/C', nd(1, 8), T0 + 10, { connection: {}, dup: false });
      await b.onMessage('spBv1.0/A.B/NDATA/C', nd(2, 9), T0 + 10, { connection: {}, dup: false });
      // Every reading stored before and after the restart: each under one field.
      const all = [...q.stored, ...q2.stored];
      assert.deepEqual(fieldsHolding(all, 8), ['A.B.C.Temp'], JSON.stringify(all));
      assert.deepEqual(fieldsHolding(all, 9), [suffixed], JSON.stringify(all));
      a.stop();
      b.stop();
    } finally {
      work.cleanup();
    }
  });

  it('a batch sealed by a rename, whose edge node an earlier append refused undid: its save records none of the seqs undone', async () => {
    const work = tempDir('sp-store');
    try {
      // Append 2 waits, then is refused; append 3 (sealed) is written and saved; append 4 never ends.
      const q = scripted((n) => (n === 2 ? 'refuse' : n >= 4 ? 'die' : 'store'));
      const a = session(work.dir, q);
      const conn = {};
      await a.onMessage('spBv1.0/A.B/NBIRTH/C', nb(1), T0, { connection: conn, dup: false });
      void a.onMessage('spBv1.0/A.B/NDATA/C', nd(1, 7), T0, { connection: conn, dup: false }).catch(() => undefined);
      await new Promise((r) => setImmediate(r)); // its append started, held
      void a.onMessage('spBv1.0/A.B/NDATA/C', nd(2, 8), T0, { connection: conn, dup: false }).catch(() => undefined);
      void a.onMessage('spBv1.0/A/NBIRTH/B.C', nb(2), T0, { connection: {}, dup: false }).catch(() => undefined);
      // The rename seals the batch holding seq 2; seq 3 goes into the next.
      void a.onMessage('spBv1.0/A.B/NDATA/C', nd(3, 9), T0, { connection: conn, dup: false }).catch(() => undefined);
      await new Promise((r) => setImmediate(r));
      q.release();
      await q.until(4);

      // Seq 1 was never written: sent again after the restart it is stored, not taken for one read already.
      const q2 = heldQueue();
      const b = session(work.dir, q2);
      await b.onMessage('spBv1.0/A.B/NDATA/C', nd(1, 7), T0 + 10, { connection: {}, dup: false });
      assert.equal(fieldsHolding(q2.stored, 7).length, 1, JSON.stringify(q2.stored));
      a.stop();
      b.stop();
    } finally {
      work.cleanup();
    }
  });
});
