import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { lstatSync, mkdirSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { DATA_TYPES as T, encodeWire } from '../../field-client/src/inputs/sparkplug/proto.ts';
import { SparkplugSession } from '../../field-client/src/inputs/sparkplug/session.ts';
import { SessionStore } from '../../field-client/src/inputs/sparkplug/store.ts';
import { suffixOf } from '../../field-client/src/inputs/sparkplug/naming.ts';
import type { Submission } from '../../field-client/src/client-options.ts';
import { isFieldStreamError } from '../../shared/errors.ts';
import { LIMITS } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';
import { tempDir } from '../helpers/pki.ts';
import { heldQueue } from '../helpers/held-queue.ts';

/**
 * The Sparkplug sessions of the local MQTT input saved on disk (store.ts): what an edge node sends
 * again after the field client restarted (SIGKILL: the old session object abandoned, its pending
 * appends never done) is read in the session it was sent in. Before, the new process knew no session:
 * every such message was refused as not born and acknowledged, and one taken but not yet in the
 * queue when the process died was lost.
 */
const T0 = 1_700_000_000_000;
const bd = (n: number) => ({ name: 'bdSeq', datatype: T.UInt64, longValue: String(n) });
const enc = (o: Record<string, unknown>) => encodeWire(o);
const birth = (seq: number, b: number, at: number, metric = 'Temp') => enc({ timestamp: String(at), seq: String(seq), metrics: [bd(b), { name: metric, alias: '1', datatype: T.Double, doubleValue: b }] });
const data = (seq: number, value: number, at: number) => enc({ timestamp: String(at), seq: String(seq), metrics: [{ alias: '1', datatype: T.Double, doubleValue: value }] });
const NB = 'spBv1.0/Plant1/NBIRTH/Paho';
const ND = 'spBv1.0/Plant1/NDATA/Paho';

const logs = () => {
  const lines: Array<Record<string, unknown>> = [];
  return { lines, log: createLogger('test', 'info', { write: (l: string) => lines.push(JSON.parse(l) as Record<string, unknown>) }) };
};
const session = (dir: string, q: ReturnType<typeof heldQueue>, log = createLogger('test', 'silent')) =>
  new SparkplugSession(q.client, () => undefined, log, [], { resends: true, store: new SessionStore(dir, log) });
/** The Sparkplug births and deaths stored, in order: `ddeath Press`, `nbirth`. */
const lifecycle = (stored: Submission[]) =>
  stored.flatMap((s) => (s.dataType === 'event' && s.payload.eventType.startsWith('sparkplug.') ? [[s.payload.eventType.slice('sparkplug.'.length), s.payload.sp_device].filter(Boolean).join(' ')] : []));
const values = (stored: Submission[], field: string) => stored.flatMap((s) => (field in s.payload ? [(s.payload as Record<string, unknown>)[field]] : []));

describe('Sparkplug sessions saved across a restart', () => {
  it('stores once each what mqtt.js sends again before its new NBIRTH after a SIGKILL: taken but not written then, or written and not acknowledged', async () => {
    const work = tempDir('sp-store');
    try {
      const q1 = heldQueue();
      const a = session(work.dir, q1);
      const connA = {};
      const via = (connection: object, dup = false) => ({ connection, dup });
      await a.onMessage(NB, birth(0, 0, T0), T0, via(connA));
      await a.onMessage(ND, data(1, 1, T0 + 1), T0, via(connA));
      // NDATA 2's append is under way while NDATA 3 arrives (it waits for the next append, which never
      // ends: the process dies). NDATA 2's save must not cover NDATA 3, which the host has read already.
      q1.hold(true);
      const second = a.onMessage(ND, data(2, 2, T0 + 2), T0, via(connA));
      await new Promise((r) => setImmediate(r)); // its append started
      void a.onMessage(ND, data(3, 3, T0 + 3), T0, via(connA)).catch(() => undefined);
      q1.hold(false);
      q1.hold(true);
      await second;
      await q1.untilHeld();
      assert.deepEqual(values(q1.stored, 'Plant1.Paho.Temp'), [0, 1, 2], 'NDATA 3 never written');

      // Restarted: mqtt.js sends again, without DUP, before its new NBIRTH, what it had no PUBACK for
      // (NDATA 2 written, its PUBACK lost with the process; NDATA 3 not written).
      const q2 = heldQueue();
      const b = session(work.dir, q2);
      const connB = {};
      await b.onMessage(ND, data(2, 2, T0 + 2), T0 + 10, via(connB));
      await b.onMessage(ND, data(3, 3, T0 + 3), T0 + 10, via(connB));
      assert.deepEqual(values(q2.stored, 'Plant1.Paho.Temp'), [3], 'NDATA 2 read already (a duplicate), NDATA 3 stored');
      assert.equal(b.stats.refusedByCode.SPARKPLUG_NOT_BORN, undefined, JSON.stringify(b.stats.refusedByCode));
      assert.equal(b.stats.refusedByCode.SPARKPLUG_DUPLICATE, 1);
      // Its new connection's NBIRTH and data: a session of their own.
      await b.onMessage(NB, birth(0, 1, T0 + 20, 'Other'), T0 + 20, via(connB));
      await b.onMessage(ND, data(1, 5, T0 + 21), T0 + 21, via(connB));
      assert.deepEqual(values(q2.stored, 'Plant1.Paho.Other'), [1, 5]);
      a.stop();
      b.stop();
    } finally {
      work.cleanup();
    }
  });

  it("reads what Paho sends again flagged DUP after its new NBIRTH in the saved session: its aliases, its fields", async () => {
    const work = tempDir('sp-store');
    try {
      const q1 = heldQueue();
      const a = session(work.dir, q1);
      const connA = {};
      await a.onMessage(NB, birth(0, 0, T0), T0, { connection: connA, dup: false });
      q1.hold(true);
      void a.onMessage(ND, data(1, 7, T0 + 1), T0, { connection: connA, dup: false }).catch(() => undefined);
      await q1.untilHeld();

      const q2 = heldQueue();
      const b = session(work.dir, q2);
      const connB = {};
      // bd1 names another metric alias 1: NDATA 1 of bd0 must not go there.
      await b.onMessage(NB, birth(0, 1, T0 + 20, 'Other'), T0 + 20, { connection: connB, dup: false });
      await b.onMessage(ND, data(1, 7, T0 + 1), T0 + 20, { connection: connB, dup: true });
      assert.deepEqual(values(q2.stored, 'Plant1.Paho.Temp'), [7]);
      assert.deepEqual(values(q2.stored, 'Plant1.Paho.Other'), [1]);
      a.stop();
      b.stop();
    } finally {
      work.cleanup();
    }
  });

  for (const [how, end] of [
    ['current at the kill', 'NBIRTH'],
    ['current at the kill', 'NDEATH'],
    ['ended by a refused NBIRTH', 'NBIRTH'],
    ['ended by a refused NBIRTH', 'NDEATH'],
    ['ended by a refused NBIRTH of another bdSeq', 'NDEATH'],
  ] as const) {
    it(`restores a session whose death was not recorded (${how}) awaiting it: the ${end} after the restart records its devices' deaths`, async () => {
      const work = tempDir('sp-store');
      // Within the resend window of the restart: the end of a session a refused NBIRTH ended is saved.
      const T1 = Date.now() - 60_000;
      try {
        const a = session(work.dir, heldQueue());
        const conn = { connection: {}, dup: false };
        await a.onMessage(NB, birth(0, 0, T1), T1, conn);
        await a.onMessage('spBv1.0/Plant1/DBIRTH/Paho/Press', enc({ timestamp: String(T1 + 1), seq: '1', metrics: [{ name: 'P', alias: '2', datatype: T.Double, doubleValue: 1 }] }), T1 + 1, conn);
        // A birth without its bdSeq: refused, it ends the session, still the last birth taken (lifecycle.ts).
        if (how === 'ended by a refused NBIRTH') await a.onMessage(NB, enc({ timestamp: String(T1 + 2), seq: '0', metrics: [{ name: 'Temp', alias: '1', datatype: T.Double, doubleValue: 2 }] }), T1 + 2, conn);
        // A new connection's birth (bdSeq 1), refused for a metric without a data type: its NDEATH is the death (lifecycle.ts nodeDeath).
        if (how === 'ended by a refused NBIRTH of another bdSeq') await a.onMessage(NB, enc({ timestamp: String(T1 + 2), seq: '0', metrics: [bd(1), { name: 'a', intValue: 1 }] }), T1 + 2, { connection: {}, dup: false });
        // Killed (no will: the broker died with the process), started, killed again before the edge node came back.
        session(work.dir, heldQueue()).stop();
        const q = heldQueue();
        const c = session(work.dir, q);
        const back = { connection: {}, dup: false };
        if (end === 'NBIRTH') await c.onMessage(NB, birth(0, 1, T1 + 20), T1 + 20, back);
        else {
          const of = how === 'ended by a refused NBIRTH of another bdSeq' ? 1 : 0;
          // Neither that birth's bdSeq nor the last one taken's: stale, ignored.
          await c.onMessage('spBv1.0/Plant1/NDEATH/Paho', enc({ metrics: [bd(7)] }), T1 + 19, back);
          await c.onMessage('spBv1.0/Plant1/NDEATH/Paho', enc({ metrics: [bd(of)] }), T1 + 20, back);
        }
        const died = end === 'NBIRTH' ? ['ddeath Press', 'nbirth'] : ['ddeath Press', 'ndeath'];
        assert.deepEqual(lifecycle(q.stored), died, JSON.stringify(c.stats.refusedByCode));
        a.stop();
        c.stop();
      } finally {
        work.cleanup();
      }
    });
  }

  it('keeps the time of an NBIRTH refused across a restart: a birth published before it and sent again after the restart is never current', async () => {
    const work = tempDir('sp-store');
    const T1 = Date.now() - 60_000;
    try {
      const a = session(work.dir, heldQueue());
      await a.onMessage(NB, birth(0, 0, T1), T1, { connection: {}, dup: false });
      // The next connection's birth, published at T1 + 3000, refused for a metric without a data type.
      await a.onMessage(NB, enc({ timestamp: String(T1 + 3000), seq: '0', metrics: [bd(1), { name: 'a', intValue: 1 }] }), T1 + 3000, { connection: {}, dup: false });
      assert.equal(a.stats.refusedByCode.SPARKPLUG_PAYLOAD_INVALID, 1);
      // Killed, started again: the edge node sends again (Paho, DUP) the birth of a session between the two.
      a.stop();
      const q = heldQueue();
      const c = session(work.dir, q);
      const back = { connection: {}, dup: true };
      await c.onMessage(NB, birth(0, 9, T1 + 1000, 'Mid'), T1 + 4000, back);
      assert.equal(c.host.session('Plant1', 'Paho'), undefined, 'published before the birth refused: not current');
      assert.deepEqual(c.host.previousSessions('Plant1', 'Paho').map((x) => x.bdSeq), [0, 9]);
      assert.deepEqual(values(q.stored, 'Plant1.Paho.Mid'), [9]);
      // What was published after the birth refused, of its session, is not read in the older one: not born, a rebirth asked.
      await c.onMessage(ND, data(1, 5, T1 + 3001), T1 + 4001, back);
      assert.equal(c.stats.refusedByCode.SPARKPLUG_NOT_BORN, 1);
      assert.deepEqual(values(q.stored, 'Plant1.Paho.Mid'), [9]);
      // Its NDEATH is still the death of the session the refused birth ended.
      await c.onMessage('spBv1.0/Plant1/NDEATH/Paho', enc({ metrics: [bd(1)] }), T1 + 4002, { connection: {}, dup: false });
      assert.deepEqual(lifecycle(q.stored), ['nbirth', 'rebirth_requested', 'ndeath']);
      c.stop();
    } finally {
      work.cleanup();
    }
  });

  it("records at start the death of each edge node its broker's end took the will of, once; a queue that refuses it leaves it awaiting its death", async () => {
    const work = tempDir('sp-store');
    try {
      const a = session(work.dir, heldQueue());
      const conn = { connection: {}, dup: false };
      await a.onMessage(NB, birth(0, 3, T0), T0, conn);
      await a.onMessage('spBv1.0/Plant1/DBIRTH/Paho/Press', enc({ timestamp: String(T0 + 1), seq: '1', metrics: [{ name: 'P', alias: '2', datatype: T.Double, doubleValue: 1 }] }), T0 + 1, conn);
      // Killed: the local MQTT input's broker, and the edge node's will with it, died with the process.
      const full = { stored: [] as Submission[], client: { submitMany: () => Promise.reject(new Error('the disk is full')) } };
      const b = new SparkplugSession(full.client, () => undefined, createLogger('test', 'silent'), [], { resends: true, store: new SessionStore(work.dir, createLogger('test', 'silent')) });
      await b.willsLost(T0 + 10);
      assert.equal(b.host.sessionsOf('Plant1\u0000Paho').previous[0]?.awaitsDeath, true, 'undone: its death still to come');
      const q = heldQueue();
      const c = session(work.dir, q);
      await c.willsLost(T0 + 20);
      assert.deepEqual(lifecycle(q.stored), ['ddeath Press', 'ndeath']);
      const ndeath = q.stored.flatMap((x) => (x.dataType === 'event' && x.payload.eventType === 'sparkplug.ndeath' ? [x.payload] : []));
      assert.deepEqual(ndeath.map((e) => [e.timestamp, e.bd_seq]), [[T0 + 20, 3]]);
      // Dead once: neither another start nor the edge node's next NBIRTH records it again.
      const q2 = heldQueue();
      const d = session(work.dir, q2);
      await d.willsLost(T0 + 30);
      await d.onMessage(NB, birth(0, 4, T0 + 40), T0 + 40, { connection: {}, dup: false });
      assert.deepEqual(lifecycle(q2.stored), ['nbirth']);
      for (const x of [a, b, c, d]) x.stop();
    } finally {
      work.cleanup();
    }
  });

  it("dates the death of a device a DBIRTH sent again after a restart bears in a session over at that session's recorded death, not the next birth", async () => {
    const work = tempDir('sp-store');
    const T1 = Date.now() - 60_000;
    try {
      const a = session(work.dir, heldQueue());
      const first = { connection: {}, dup: false };
      await a.onMessage(NB, birth(0, 0, T1), T1, first);
      // Its connection lost: the will, its NDEATH, arrives at T1 + 5, when its devices were recorded dead.
      await a.onMessage('spBv1.0/Plant1/NDEATH/Paho', enc({ metrics: [bd(0)] }), T1 + 5, first);
      await a.onMessage(NB, birth(0, 1, T1 + 100), T1 + 100, { connection: {}, dup: false });
      // Killed. Paho sends again, flagged DUP, a DBIRTH published in the first session (at T1 + 3)
      // that never got its PUBACK: read in that session, its device dies when the others did.
      const q = heldQueue();
      const b = session(work.dir, q);
      const dbirth = enc({ timestamp: String(T1 + 3), seq: '1', metrics: [{ name: 'V', alias: '3', datatype: T.Double, doubleValue: 1 }] });
      await b.onMessage('spBv1.0/Plant1/DBIRTH/Paho/Valve', dbirth, T1 + 200, { connection: {}, dup: true });
      const events = q.stored.flatMap((x) => (x.dataType === 'event' ? [`${x.payload.eventType} ${x.payload.sp_device} @${Number(x.payload.timestamp) - T1}`] : []));
      assert.deepEqual(events, ['sparkplug.dbirth Valve @3', 'sparkplug.ddeath Valve @5'], JSON.stringify(b.stats.refusedByCode));
      a.stop();
      b.stop();
    } finally {
      work.cleanup();
    }
  });

  it('keeps the field name a metric had, its collision suffix included, for what is sent again after a restart', async () => {
    const work = tempDir('sp-store');
    try {
      const q1 = heldQueue();
      const a = session(work.dir, q1);
      const conn = {};
      // An edge node's metric `x/y` and its device x's metric `y` share Plant1.E.x.y: the edge node's keeps
      // it, the device's gets its suffix (names.ts).
      await a.onMessage('spBv1.0/Plant1/NBIRTH/E', enc({ timestamp: String(T0), seq: '0', metrics: [bd(0), { name: 'x/y', alias: '1', datatype: T.Double, doubleValue: 1 }] }), T0, { connection: conn, dup: false });
      await a.onMessage('spBv1.0/Plant1/DBIRTH/E/x', enc({ timestamp: String(T0), seq: '1', metrics: [{ name: 'y', alias: '2', datatype: T.Double, doubleValue: 2 }] }), T0, { connection: conn, dup: false });
      const suffixed = `Plant1.E.x.y${suffixOf('Plant1', 'E', 'x', 'y')}`;
      assert.deepEqual(values(q1.stored, suffixed), [2]);
      q1.hold(true);
      const ddata = enc({ timestamp: String(T0 + 1), seq: '2', metrics: [{ alias: '2', datatype: T.Double, doubleValue: 9 }] });
      void a.onMessage('spBv1.0/Plant1/DDATA/E/x', ddata, T0, { connection: conn, dup: false }).catch(() => undefined);
      await q1.untilHeld();

      // After the restart nothing is born yet: named again from scratch, y of device x would have the
      // plain name alone, and its value would land in the edge node's metric's field.
      const q2 = heldQueue();
      const b = session(work.dir, q2);
      await b.onMessage('spBv1.0/Plant1/DDATA/E/x', ddata, T0 + 10, { connection: {}, dup: false });
      assert.deepEqual(values(q2.stored, suffixed), [9], JSON.stringify(q2.stored));
      a.stop();
      b.stop();
    } finally {
      work.cleanup();
    }
  });

  it("keeps the suffix a metric got when another edge node's birth took its name, for what is sent again after a restart", async () => {
    const work = tempDir('sp-store');
    try {
      const q1 = heldQueue();
      const a = session(work.dir, q1);
      const conn = {};
      const nb = (v: number) => enc({ timestamp: String(T0), seq: '0', metrics: [bd(0), { name: 'Temp', alias: '1', datatype: T.Double, doubleValue: v }] });
      const nd = (seq: number, v: number) => enc({ timestamp: String(T0 + seq), seq: String(seq), metrics: [{ alias: '1', datatype: T.Double, doubleValue: v }] });
      // A.B/C, born first, has A.B.C.Temp alone; A/B.C comes first in code-unit order and takes it
      // (names.ts): A.B/C's metric gets its suffix from then on, its births file written again.
      await a.onMessage('spBv1.0/A.B/NBIRTH/C', nb(1), T0, { connection: conn, dup: false });
      await a.onMessage('spBv1.0/A/NBIRTH/B.C', nb(2), T0, { connection: {}, dup: false });
      const suffixed = `A.B.C.Temp${suffixOf('A.B', 'C', undefined, 'Temp')}`;
      await a.onMessage('spBv1.0/A.B/NDATA/C', nd(1, 8), T0, { connection: conn, dup: false });
      assert.deepEqual(values(q1.stored, suffixed), [8]);
      q1.hold(true);
      void a.onMessage('spBv1.0/A.B/NDATA/C', nd(2, 9), T0, { connection: conn, dup: false }).catch(() => undefined);
      await q1.untilHeld();

      const q2 = heldQueue();
      const b = session(work.dir, q2);
      await b.onMessage('spBv1.0/A.B/NDATA/C', nd(2, 9), T0 + 10, { connection: {}, dup: false });
      assert.deepEqual(values(q2.stored, suffixed), [9], JSON.stringify(q2.stored));
      a.stop();
      b.stop();
    } finally {
      work.cleanup();
    }
  });

  it('keeps the plain name a metric got back when the one that kept it died, for what is sent again after a restart', async () => {
    const work = tempDir('sp-store');
    try {
      const q1 = heldQueue();
      const a = session(work.dir, q1);
      const conn = {};
      const nb = (v: number) => enc({ timestamp: String(T0), seq: '0', metrics: [bd(0), { name: 'Temp', alias: '1', datatype: T.Double, doubleValue: v }] });
      const nd = (seq: number, v: number) => enc({ timestamp: String(T0 + seq), seq: String(seq), metrics: [{ alias: '1', datatype: T.Double, doubleValue: v }] });
      // A/B.C keeps A.B.C.Temp, A.B/C gets its suffix (names.ts); once A/B.C is dead, A.B/C has the name alone.
      await a.onMessage('spBv1.0/A/NBIRTH/B.C', nb(1), T0, { connection: {}, dup: false });
      await a.onMessage('spBv1.0/A.B/NBIRTH/C', nb(2), T0, { connection: conn, dup: false });
      assert.deepEqual(values(q1.stored, `A.B.C.Temp${suffixOf('A.B', 'C', undefined, 'Temp')}`), [2]);
      await a.onMessage('spBv1.0/A/NDEATH/B.C', enc({ metrics: [bd(0)] }), T0, { connection: {}, dup: false });
      await a.onMessage('spBv1.0/A.B/NDATA/C', nd(1, 8), T0, { connection: conn, dup: false });
      assert.deepEqual(values(q1.stored, 'A.B.C.Temp'), [1, 8]);
      q1.hold(true);
      void a.onMessage('spBv1.0/A.B/NDATA/C', nd(2, 9), T0, { connection: conn, dup: false }).catch(() => undefined);
      await q1.untilHeld();

      const q2 = heldQueue();
      const b = session(work.dir, q2);
      await b.onMessage('spBv1.0/A.B/NDATA/C', nd(2, 9), T0 + 10, { connection: {}, dup: false });
      assert.deepEqual(values(q2.stored, 'A.B.C.Temp'), [9], JSON.stringify(q2.stored));
      a.stop();
      b.stop();
    } finally {
      work.cleanup();
    }
  });

  it('reads back every session the input took: a metric named "" and a bdSeq outside 0…2^53 (an Int64 of -1, a UInt64 past 2^53)', async () => {
    const cases: Array<[string, Record<string, unknown>, Record<string, unknown>]> = [
      ['a metric named ""', bd(0), { name: '', alias: '2', datatype: T.Double, doubleValue: 0 }],
      ['a bdSeq of Int64 -1', { name: 'bdSeq', datatype: T.Int64, longValue: '18446744073709551615' }, { name: 'Other', alias: '2', datatype: T.Double, doubleValue: 0 }],
      ['a bdSeq of UInt64 2^63', { name: 'bdSeq', datatype: T.UInt64, longValue: '9223372036854775808' }, { name: 'Other', alias: '2', datatype: T.Double, doubleValue: 0 }],
    ];
    for (const [what, bdSeqMetric, extra] of cases) {
      const work = tempDir('sp-store');
      try {
        const q1 = heldQueue();
        const a = session(work.dir, q1);
        const connA = {};
        const nbirth = enc({ timestamp: String(T0), seq: '0', metrics: [bdSeqMetric, { name: 'Temp', alias: '1', datatype: T.Double, doubleValue: 0 }, extra] });
        await a.onMessage(NB, nbirth, T0, { connection: connA, dup: false });
        assert.equal(a.stats.accepted, 1, `${what}: the birth taken`);
        // NDATA 1 taken, not yet written when the process is killed.
        q1.hold(true);
        void a.onMessage(ND, data(1, 7, T0 + 1), T0, { connection: connA, dup: false }).catch(() => undefined);
        await q1.untilHeld();
        a.stop();

        // Restarted: mqtt.js sends NDATA 1 again before its new NBIRTH. It is read in the saved session.
        const { lines, log } = logs();
        const q2 = heldQueue();
        const b = session(work.dir, q2, log);
        assert.deepEqual(lines.filter((l) => String(l.code).startsWith('SPARKPLUG_STORE')), [], `${what}: the saved sessions read back`);
        await b.onMessage(ND, data(1, 7, T0 + 1), T0 + 10, { connection: {}, dup: false });
        assert.deepEqual(values(q2.stored, 'Plant1.Paho.Temp'), [7], `${what}: the resend stored`);
        b.stop();
      } finally {
        work.cleanup();
      }
    }
  });

  it('drops a damaged file with SPARKPLUG_STORE_INVALID at start, and goes on', async () => {
    const work = tempDir('sp-store');
    try {
      const q1 = heldQueue();
      const a = session(work.dir, q1);
      await a.onMessage(NB, birth(0, 0, T0), T0, { connection: {}, dup: false });
      a.stop();
      const births = readdirSync(work.dir).filter((f) => f.endsWith('.births.json'));
      assert.equal(births.length, 1);
      writeFileSync(join(work.dir, births[0] as string), '{"v":1,"gen":1,"group":"Plant1","edge":"Paho","record":[],"sessions":[{"id":1,"bdSeq":0,"bornAt":null,"birthDigest":null,"node":[["Temp",99,null,1]],"devices":[]}]}');
      writeFileSync(join(work.dir, 'other.births.json'), 'not json');
      const { lines, log } = logs();
      const q2 = heldQueue();
      const b = session(work.dir, q2, log);
      assert.equal(lines.filter((l) => l.code === 'SPARKPLUG_STORE_INVALID').length, 2, JSON.stringify(lines));
      assert.deepEqual(readdirSync(work.dir).filter((f) => f.endsWith('.births.json')), []);
      // Sent again with no session known: refused as before, the input going on.
      await b.onMessage(ND, data(1, 1, T0 + 1), T0 + 10, { connection: {}, dup: false });
      assert.equal(b.stats.refusedByCode.SPARKPLUG_NOT_BORN, 1);
      await b.onMessage(NB, birth(0, 1, T0 + 20), T0 + 20, { connection: {}, dup: false });
      assert.deepEqual(values(q2.stored, 'Plant1.Paho.Temp'), [1], 'a new birth taken');
      b.stop();
    } finally {
      work.cleanup();
    }
  });
  it('does not acknowledge a message whose session could not be saved (SPARKPLUG_STORE_FAILED): undone, its resend is taken', async () => {
    const work = tempDir('sp-store');
    const dir = join(work.dir, 'sessions');
    try {
      const q = heldQueue();
      const a = session(dir, q);
      const conn = {};
      await a.onMessage(NB, birth(0, 0, T0), T0, { connection: conn, dup: false });
      // The folder gone, a file in its place: the DBIRTH's births file cannot be written.
      rmSync(dir, { recursive: true });
      writeFileSync(dir, 'not a folder');
      const dbirth = enc({ timestamp: String(T0 + 1), seq: '1', metrics: [{ name: 'P', alias: '5', datatype: T.Double, doubleValue: 1 }] });
      await assert.rejects(a.onMessage('spBv1.0/Plant1/DBIRTH/Paho/Press', dbirth, T0, { connection: conn, dup: false }), (err) => isFieldStreamError(err) && err.code === 'SPARKPLUG_STORE_FAILED');
      assert.equal(a.host.session('Plant1', 'Paho')?.seq, 0, 'undone: its resend is the next seq');
      assert.equal(a.host.session('Plant1', 'Paho')?.devices.has('Press'), false);
      rmSync(dir);
      mkdirSync(dir);
      await a.onMessage('spBv1.0/Plant1/DBIRTH/Paho/Press', dbirth, T0, { connection: conn, dup: false });
      assert.equal(a.host.session('Plant1', 'Paho')?.devices.has('Press'), true);
      a.stop();
    } finally {
      work.cleanup();
    }
  });
});

describe('Sparkplug session store after a failed save', () => {
  it('compacts its journal after a save failed once: the edge nodes not saved since keep their record, and the input goes on acknowledging', async () => {
    const work = tempDir('sp-store');
    const dir = join(work.dir, 'sessions');
    const limits = LIMITS as { sparkplugStoreJournalMaxBytes: number };
    const was = limits.sparkplugStoreJournalMaxBytes;
    try {
      const q = heldQueue();
      const a = session(dir, q);
      const conn = {};
      await a.onMessage('spBv1.0/Plant1/NBIRTH/Idle', birth(0, 0, T0), T0, { connection: {}, dup: false });
      await a.onMessage(NB, birth(0, 0, T0), T0, { connection: conn, dup: false });
      // One save refused by the disk (its folder a file for a moment).
      renameSync(dir, `${dir}.away`);
      writeFileSync(dir, 'not a folder');
      const dbirth = enc({ timestamp: String(T0 + 1), seq: '1', metrics: [{ name: 'P', alias: '5', datatype: T.Double, doubleValue: 1 }] });
      await assert.rejects(a.onMessage('spBv1.0/Plant1/DBIRTH/Paho/Press', dbirth, T0, { connection: conn, dup: false }), (err) => isFieldStreamError(err) && err.code === 'SPARKPLUG_STORE_FAILED');
      rmSync(dir);
      renameSync(`${dir}.away`, dir);
      // The disk back, and the journal due for compaction: the edge node Idle, silent since, is in it.
      limits.sparkplugStoreJournalMaxBytes = 1;
      await a.onMessage('spBv1.0/Plant1/DBIRTH/Paho/Press', dbirth, T0, { connection: conn, dup: false });
      await a.onMessage(ND, data(2, 2, T0 + 2), T0, { connection: conn, dup: false });
      assert.deepEqual(values(q.stored, 'Plant1.Paho.Temp'), [0, 2]);
      a.stop();
      limits.sparkplugStoreJournalMaxBytes = was;
      // Both edge nodes' sessions are read back after a restart.
      const b = session(dir, heldQueue());
      assert.ok(b.host.sessionsOf('Plant1\u0000Idle').previous.length === 1, 'Idle restored');
      assert.equal(b.host.sessionsOf('Plant1\u0000Paho').previous.at(-1)?.s.seq, 2, 'Paho restored at seq 2');
      b.stop();
    } finally {
      limits.sparkplugStoreJournalMaxBytes = was;
      work.cleanup();
    }
  });
});

describe('Sparkplug session store: what is no file of its own', () => {
  it('starts when a folder stands where a births file or the journal would be: logged (SPARKPLUG_STORE_INVALID), removed, the input going on', async () => {
    const work = tempDir('sp-store');
    try {
      const a = session(work.dir, heldQueue());
      await a.onMessage(NB, birth(0, 0, T0), T0, { connection: {}, dup: false });
      a.stop();
      mkdirSync(join(work.dir, 'f00.births.json', 'inside'), { recursive: true });
      rmSync(join(work.dir, 'sessions.journal'));
      mkdirSync(join(work.dir, 'sessions.journal', 'inside'), { recursive: true });
      const { lines, log } = logs();
      const q = heldQueue();
      const b = session(work.dir, q, log);
      assert.ok(lines.filter((l) => l.code === 'SPARKPLUG_STORE_INVALID').length >= 2, JSON.stringify(lines));
      assert.deepEqual(readdirSync(work.dir).filter((f) => f.startsWith('f00')), []);
      assert.ok(lstatSync(join(work.dir, 'sessions.journal')).isFile(), 'the journal written again');
      // Paho's births file read (its record from the births file, the journal dropped) and saved on.
      await b.onMessage(ND, data(1, 1, T0 + 1), T0 + 10, { connection: {}, dup: false });
      assert.deepEqual(values(q.stored, 'Plant1.Paho.Temp'), [1]);
      b.stop();
      const c = session(work.dir, heldQueue());
      assert.equal(c.host.sessionsOf('Plant1\u0000Paho').previous.at(-1)?.s.seq, 1);
      c.stop();
    } finally {
      work.cleanup();
    }
  });
});

describe('Sparkplug session store: files aside', () => {
  it('removes at start a journal aside left by a compaction killed before its rename', async () => {
    const work = tempDir('sp-store');
    try {
      const a = session(work.dir, heldQueue());
      await a.onMessage(NB, birth(0, 0, T0), T0, { connection: {}, dup: false });
      a.stop();
      // Another process's (another pid): each SIGKILL mid-compaction left one, up to the journal's size.
      writeFileSync(join(work.dir, 'sessions.journal.tmp-99999999'), 'x'.repeat(1024));
      const b = session(work.dir, heldQueue());
      assert.deepEqual(readdirSync(work.dir).filter((f) => f.includes('.tmp-')), []);
      b.stop();
    } finally {
      work.cleanup();
    }
  });
});

describe('Sparkplug session store: a births file of more metrics than are ever held', () => {
  it('is dropped (SPARKPLUG_STORE_INVALID) before its definitions are built, the other edge nodes restored', async () => {
    const work = tempDir('sp-store');
    const limits = LIMITS as { sparkplugDefinitionsMaxBytes: number };
    const was = limits.sparkplugDefinitionsMaxBytes;
    try {
      const a = session(work.dir, heldQueue());
      await a.onMessage(NB, birth(0, 0, T0), T0, { connection: {}, dup: false });
      a.stop();
      // Short names: the file's bytes within the bound, but the definitions it declares far past it
      // (full size: a 60 MiB file made 1.1 GB of definitions, the start 1.7 GB, before any bound).
      limits.sparkplugDefinitionsMaxBytes = 1024 * 1024;
      const metrics = Array.from({ length: 20_000 }, (_, i) => `["m${i}",9,null,${i}]`).join(',');
      const devices = Array.from({ length: 2 }, (_, d) => `["D${d}",[${metrics}]]`).join(',');
      const name = `${createHash('sha256').update('Plant1\u0000Big').digest('hex').slice(0, 32)}.births.json`;
      writeFileSync(
        join(work.dir, name),
        `{"v":1,"gen":1,"group":"Plant1","edge":"Big","record":[{"id":1,"seq":0,"stale":false,"digests":"","endedAt":null}],"sessions":[{"id":1,"bdSeq":0,"bornAt":null,"birthDigest":null,"node":[],"devices":[${devices}]}]}`,
      );
      const { lines, log } = logs();
      const b = session(work.dir, heldQueue(), log);
      const bad = lines.filter((l) => l.code === 'SPARKPLUG_STORE_INVALID');
      assert.equal(bad.length, 1, JSON.stringify(lines));
      assert.match(String(bad[0]?.msg), /40000 metrics/);
      assert.equal(b.host.sessionsOf('Plant1\u0000Big').previous.length, 0);
      assert.equal(b.host.sessionsOf('Plant1\u0000Paho').previous.length, 1, 'Paho restored');
      assert.deepEqual(readdirSync(work.dir).filter((f) => f === name), []);
      b.stop();
    } finally {
      limits.sparkplugDefinitionsMaxBytes = was;
      work.cleanup();
    }
  });
});
