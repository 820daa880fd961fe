import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { definitions, type Definitions, type MetricDef } from '../../field-client/src/inputs/sparkplug/definitions.ts';
import { FieldNames } from '../../field-client/src/inputs/sparkplug/names.ts';
import { nameDefinitions, suffixOf, type Naming, type Unit } from '../../field-client/src/inputs/sparkplug/naming.ts';
import { encodeWire } from '../../field-client/src/inputs/sparkplug/proto.ts';
import { SparkplugSession } from '../../field-client/src/inputs/sparkplug/session.ts';
import { FIELD_NAME_PATTERN } from '../../shared/contract/primitives.ts';
import { LIMITS } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';

/**
 * The field names of many metrics that share one (names.ts FieldNames). Edge node ids of as many
 * characters, none of which a field name can hold, come out alike (`ライン`, `圧延機`: `___`): every
 * birth of such an edge node listed every metric sharing its name, so 1,000 births took 2 s and
 * 4,000 took 24 s, the event loop held. A birth now touches its own metrics and a few others (the one
 * keeping the name), its report and log line carry a bounded sample and a count, and the names are
 * those the documented rule gives.
 */

const birth = (unit: Unit, metrics: readonly string[]): Definitions => {
  const defs = definitions(metrics.map((name, i) => ({ name, datatype: 10, alias: i + 1 })));
  nameDefinitions(defs, unit);
  return defs;
};

/** Counts every read of the naming of `defs`' definitions into `touched.n`. */
function counted(defs: Definitions, touched: { n: number }): void {
  for (const def of defs.byName.values()) {
    let n = def.naming;
    Object.defineProperty(def, 'naming', {
      get: () => (touched.n++, n),
      set: (v: Naming | undefined) => void (n = v),
      enumerable: true,
      configurable: true,
    });
  }
}

/** An edge node id of three characters a field name cannot hold, one per `i`. */
const foreign = (i: number) => `${String.fromCodePoint(0x4e00 + i)}ライ`;

/** The field of `def` among the definitions `held`, as docs/field-client.md ("Mapping") gives it. */
function documented(held: readonly MetricDef[], def: MetricDef): string | undefined {
  const n = def.naming as Naming;
  if (n.plain === undefined) return undefined;
  const nm = (d: MetricDef) => d.naming as Naming;
  const sharing = held.filter((h) => nm(h).plain === n.plain);
  if (sharing.length <= 1) return n.plain;
  const rank = (d: MetricDef) => (nm(d).exact ? (nm(d).unit.device === undefined ? 0 : 1) : 2);
  const key = (d: MetricDef) => [rank(d), nm(d).unit.group, nm(d).unit.edge, nm(d).unit.device ?? '', d.name, nm(d).unit.device === undefined ? 0 : 1] as const;
  const less = (a: MetricDef, b: MetricDef) => {
    const [x, y] = [key(a), key(b)];
    for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return (x[i] as string | number) < (y[i] as string | number);
    return false;
  };
  const owner = sharing.reduce((m, h) => (less(h, m) ? h : m));
  const same = (a: MetricDef, b: MetricDef) => a.name === b.name && nm(a).unit.group === nm(b).unit.group && nm(a).unit.edge === nm(b).unit.edge && nm(a).unit.device === nm(b).unit.device;
  if (same(owner, def)) return n.plain;
  const suffixedOf = (d: MetricDef) => `${nm(d).plain}${suffixOf(nm(d).unit.group, nm(d).unit.edge, nm(d).unit.device, d.name)}`;
  const mine = suffixedOf(def);
  if (!FIELD_NAME_PATTERN.test(mine) || held.some((h) => nm(h).plain === mine)) return undefined;
  if (sharing.some((h) => suffixedOf(h) === mine && !same(h, def))) return undefined;
  return mine;
}

describe('Sparkplug field names shared by many metrics', () => {
  it('takes each birth in steps of its own metrics, whatever the number already sharing its name, and reports a bounded sample and the count', () => {
    const names = new FieldNames();
    const touched = { n: 0 };
    const N = 4_000;
    let most = 0;
    let atMost = 0;
    for (let i = 0; i < N; i++) {
      const defs = birth({ group: 'G', edge: foreign(i), device: undefined }, ['T']);
      counted(defs, touched);
      touched.n = 0;
      const shared = names.add(defs);
      if (touched.n > most) [most, atMost] = [touched.n, i];
      if (i === 0) {
        assert.deepEqual(shared, []);
        continue;
      }
      assert.equal(shared.length, 1);
      const c = shared[0];
      assert.equal(c?.field, 'G.___.T');
      assert.equal(c?.count, i + 1, 'every metric sharing the name counted');
      assert.ok((c?.metrics.length ?? 0) <= LIMITS.sparkplugCollisionSampleMetrics, `${c?.metrics.length} metrics reported`);
      assert.ok(c?.metrics.some((m) => m.edge === foreign(i)), "the birth's own metric in the sample");
      assert.ok(c?.metrics.some((m) => m.edge === foreign(0) && m.field === 'G.___.T'), 'the one that keeps the name in the sample');
    }
    // Before: each birth read every metric sharing its name (4,000 at the last), several times.
    assert.ok(most <= 100, `a birth read the naming of definitions ${most} times (birth ${atMost})`);
  });

  it('gives every metric the field the documented rule gives, through births, rebirths, deaths and the same metric held twice', () => {
    const groups = ['A', 'A.B', '1G'];
    const edges = ['B.C', 'C', 'E', '工場', 'ライ', 'E-', 'B'];
    const devices = [undefined, 'D', 'Press', 'x'];
    // Edge node B's metrics C/T-<suffix> come out as the suffixed names of A/B.C's and A.B/C's T
    // (A.B.C.T-<suffix>): a plain name that is another metric's suffixed one.
    const metrics = ['T', 'x/y', 'x.y', 'Press/Pressure', 'Pressure', 'a b', 'a_b', 'D/T', 'y', `C/T${suffixOf('A', 'B.C', undefined, 'T')}`, `C/T${suffixOf('A.B', 'C', undefined, 'T')}`];
    let seed = 42;
    const rnd = (n: number) => ((seed = (seed * 48_271) % 2_147_483_647), seed % n); // MINSTD: exact in a double
    const pick = <T>(xs: readonly T[]) => xs[rnd(xs.length)] as T;
    const names = new FieldNames();
    const held: Definitions[] = [];
    let suffixed = 0;
    const fields = new Map<MetricDef, string | undefined>();
    for (let step = 0; step < 800; step++) {
      // Up to some 40 births held: many names shared by several metrics, some by the same metric twice.
      let reported: Unit[] = [];
      if (held.length > 0 && rnd(held.length > 40 ? 2 : 4) === 0) {
        reported = names.remove(held.splice(rnd(held.length), 1)[0] as Definitions);
      } else {
        const unit = { group: pick(groups), edge: pick(edges), device: pick(devices) };
        const defs = birth(unit, metrics.filter(() => rnd(2) === 0));
        held.push(defs);
        for (const c of names.add(defs)) {
          assert.ok(c.count >= 2 && c.metrics.length <= Math.min(c.count, LIMITS.sparkplugCollisionSampleMetrics));
          reported.push(...c.renamed);
        }
      }
      const all = held.flatMap((d) => [...d.byName.values()]);
      for (const def of all) {
        const field = names.field(def);
        assert.equal(field, documented(all, def), `step ${step}: ${JSON.stringify([(def.naming as Naming).unit, def.name])}`);
        if (field !== (def.naming as Naming).plain) suffixed++;
        // A metric of another birth whose field this one changed: its edge node reported (its births
        // file written again; a metric held twice is the same edge node's).
        const unit = (def.naming as Naming).unit;
        if (fields.has(def) && fields.get(def) !== field) {
          assert.ok(
            reported.some((u) => u.group === unit.group && u.edge === unit.edge),
            `step ${step}: ${JSON.stringify([unit, def.name])} went from ${fields.get(def)} to ${field}, not reported`,
          );
        }
        fields.set(def, field);
      }
    }
    assert.ok(suffixed > 10_000, `${suffixed} fields other than the plain name seen`);
  });

  it('logs a collision with a bounded sample of the metrics and their count, however many share the name', async () => {
    const lines: Array<Record<string, unknown>> = [];
    const log = createLogger('test', 'info', { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
    const session = new SparkplugSession({ submitMany: async () => [] }, () => undefined, log);
    const nbirth = encodeWire({ timestamp: 1, seq: 0, metrics: [{ name: 'bdSeq', datatype: 8, longValue: 0 }, { name: 'T', alias: 1, datatype: 10, doubleValue: 1 }] });
    const N = LIMITS.sparkplugLogMaxPerWindow;
    for (let i = 0; i < N + 1; i++) await session.onMessage(`spBv1.0/G/NBIRTH/${foreign(i)}`, nbirth);
    session.stop();
    assert.equal(session.stats.fieldNameCollisions, N);
    const logged = lines.filter((l) => l.code === 'SPARKPLUG_FIELD_NAME_COLLISION');
    const last = logged.at(-1);
    assert.equal(last?.field, 'G.___.T');
    assert.equal(last?.count, logged.length + 1, 'the number of metrics sharing the name');
    assert.ok(Array.isArray(last?.metrics) && last.metrics.length <= LIMITS.sparkplugCollisionSampleMetrics);
    assert.match(String(last?.msg), new RegExp(`^Sparkplug metrics share the field name G\\.___\\.T \\(${logged.length + 1} metrics\\)`));
    assert.match(String(last?.msg), /G\/一ライ metric T → G\.___\.T(;|$)/, 'the one keeping the name');
  });

  // A metric whose own (plain) name is the suffixed name another metric was given: the suffixed one is
  // skipped (two metrics in one field would lose values), and that went unreported: no log line, no
  // count, its edge node's births not written again under the new names.
  describe("a metric whose plain name is another metric's suffixed name", () => {
    const sfx = suffixOf('A.B', 'C', undefined, 'T');
    const suffixedName = `A.B.C.T${sfx}`;
    const shared = () => {
      const names = new FieldNames();
      const told: Unit[] = [];
      names.watch((r) => told.push(...r));
      const owner = birth({ group: 'A', edge: 'B.C', device: undefined }, ['T']);
      const other = birth({ group: 'A.B', edge: 'C', device: undefined }, ['T']);
      names.add(owner);
      names.add(other);
      return { names, told, other, otherDef: [...other.byName.values()][0] as MetricDef };
    };
    const plainOne = () => birth({ group: 'A', edge: 'B', device: undefined }, [`C/T${sfx}`]);

    it('born after: reported as a collision on that name, the suffixed metric skipped, its edge node told', () => {
      const { names, told, otherDef } = shared();
      assert.equal(names.field(otherDef), suffixedName);
      told.length = 0;
      const later = plainOne();
      const reported = names.add(later);
      assert.equal(names.field([...later.byName.values()][0] as MetricDef), suffixedName, 'a name no other metric has is never changed');
      assert.equal(names.field(otherDef), undefined, 'skipped');
      assert.equal(reported.length, 1, 'reported');
      assert.equal(reported[0]?.field, suffixedName);
      assert.equal(reported[0]?.count, 2);
      assert.deepEqual(reported[0]?.metrics, [
        { group: 'A', edge: 'B', metric: `C/T${sfx}`, field: suffixedName },
        { group: 'A.B', edge: 'C', metric: 'T', field: undefined },
      ]);
      assert.ok(reported[0]?.renamed.some((u) => u.group === 'A.B' && u.edge === 'C'), 'in the collision');
      assert.ok(told.some((u) => u.group === 'A.B' && u.edge === 'C'), 'its edge node told (births written again)');
      // Gone again: the suffixed name is the other's once more, and its edge node told so.
      told.length = 0;
      const back = names.remove(later);
      assert.equal(names.field(otherDef), suffixedName);
      assert.ok(back.some((u) => u.group === 'A.B' && u.edge === 'C'));
      assert.ok(told.some((u) => u.group === 'A.B' && u.edge === 'C'));
    });

    it('born before: the collision that suffixes the other says it is skipped', () => {
      const names = new FieldNames();
      names.add(plainOne());
      names.add(birth({ group: 'A', edge: 'B.C', device: undefined }, ['T']));
      const reported = names.add(birth({ group: 'A.B', edge: 'C', device: undefined }, ['T']));
      assert.equal(reported.length, 1);
      assert.ok(reported[0]?.metrics.some((m) => m.edge === 'C' && m.field === undefined), JSON.stringify(reported[0]?.metrics));
    });

    it('through the session: counted and logged with SPARKPLUG_FIELD_NAME_COLLISION, the metric shown skipped', async () => {
      const lines: Array<Record<string, unknown>> = [];
      const log = createLogger('test', 'info', { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
      const session = new SparkplugSession({ submitMany: async () => [] }, () => undefined, log);
      const nbirth = (metric: string) => encodeWire({ timestamp: 1, seq: 0, metrics: [{ name: 'bdSeq', datatype: 8, longValue: 0 }, { name: metric, alias: 1, datatype: 10, doubleValue: 1 }] });
      await session.onMessage('spBv1.0/A/NBIRTH/B.C', nbirth('T'));
      await session.onMessage('spBv1.0/A.B/NBIRTH/C', nbirth('T'));
      assert.equal(session.stats.fieldNameCollisions, 1);
      await session.onMessage('spBv1.0/A/NBIRTH/B', nbirth(`C/T${sfx}`));
      session.stop();
      assert.equal(session.stats.fieldNameCollisions, 2, 'counted');
      const line = lines.filter((l) => l.code === 'SPARKPLUG_FIELD_NAME_COLLISION').at(-1);
      assert.equal(line?.field, suffixedName);
      assert.match(String(line?.msg), new RegExp(`A\\.B/C metric T → \\(skipped\\)`));
    });
  });
});
