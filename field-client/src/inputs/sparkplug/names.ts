import { FIELD_NAME_PATTERN } from '../../../../shared/contract/primitives.ts';
import { LIMITS } from '../../../../shared/limits.ts';
import type { Definitions, MetricDef } from './definitions.ts';
import { behind } from './duplicates.ts';
import { SUFFIX_LENGTH, SUFFIXED, suffixOf, type Naming, type Unit } from './naming.ts';

/** A field name that more than one declared metric comes out with, at a birth declaring one of them. */
export interface Collision {
  /** the field name of the documented mapping they share */
  field: string;
  /** how many definitions share it now (a metric followed on two inputs counts twice) */
  count: number;
  /**
   * Some of them, and the field each goes to now (undefined: skipped, see FieldNames.field): the one
   * that keeps the name, then the birth's own, at most LIMITS.sparkplugCollisionSampleMetrics. Not
   * every one: with thousands sharing a name, listing them all at each birth held the event loop.
   */
  metrics: Array<{ group: string; edge: string; device?: string; metric: string; field: string | undefined }>;
  /** the edge nodes (and devices) whose metrics' fields this birth may have changed: its own, the one that kept the name before */
  renamed: Unit[];
}

/**
 * Which field each metric followed goes to. The field name of the documented mapping (mapping.ts)
 * is not one to one: group `A.B`, edge node `C` and group `A`, edge node `B.C` come out the same,
 * as do metrics `x/y` and `x.y`, `a b` and `a_b`, or an edge node's `D/M` and its device `D`'s
 * `M`. Every series of a device is one (tag `device`), so two metrics of one name would write into
 * one field, the last value of a time kept. So the names every current birth declares are kept
 * here, and a name declared by more than one metric goes to one of them: the one the mapping gives
 * it exactly (Naming.exact; an edge node's before its device's), else the first in code-unit
 * order of group, edge node, device and metric name. Every other gets the name with its suffix
 * (suffixOf). Which one keeps the name depends on which metrics are declared, never on the order
 * their births came in; a name no other metric has is never changed. A suffixed name that is some
 * metric's plain name, or too long for a field, is skipped (counted like any skipped metric) and
 * reported with the collision: the one on the shared name, or, when the plain name comes later, one
 * on that name (add).
 */
export class FieldNames {
  /** plain field name → the definitions (one per edge node or device and metric name) declaring it now */
  private readonly holders = new Map<string, Set<MetricDef>>();
  /**
   * plain field name held by several definitions → which keeps it and the suffixes they get (see
   * Shared), kept up to date at each birth and death in steps of its own definitions (log n each).
   * Worked out at each value from every holder, a birth of 10,000 metrics whose names differ only in
   * characters a field name cannot hold (`m\u0100`, `m\u0101`, …: all `G.E.m_`) took 3 minutes;
   * worked out again from every holder at each birth, 4,000 edge nodes whose ids come out alike
   * (`ライン`, `圧延機`: `___`) took 24 s to be born, the event loop held all that time.
   */
  private readonly shared = new Map<string, Shared>();
  /** told of every edge node (and device) whose metrics' fields a birth or death changed (watch) */
  private readonly watchers = new Set<(renamed: readonly Unit[]) => void>();

  /**
   * Calls `fn` with the edge nodes (and devices) of others whose metrics' fields each add or remove
   * changed, whatever took or dropped the birth (a message, an undo, an expiry) and on whichever
   * Sparkplug input (the names are shared): the session store writes their births again before a
   * message stored under the new names is acknowledged (store.ts). Returns how to stop.
   */
  watch(fn: (renamed: readonly Unit[]) => void): () => void {
    this.watchers.add(fn);
    return () => this.watchers.delete(fn);
  }

  private tell(renamed: readonly Unit[]): void {
    if (renamed.length > 0) for (const fn of this.watchers) fn(renamed);
  }

  /**
   * Takes a birth's definitions (named by nameDefinitions); the names they now share with another
   * metric, a plain name that is the suffixed name of others (now skipped) included.
   */
  add(defs: Definitions): Collision[] {
    const found = new Map<string, { own: MetricDef[]; renamed: Set<Unit>; demoted?: MetricDef }>();
    /** plain names no metric held before this birth: each may be the suffixed name of others */
    const fresh: MetricDef[] = [];
    for (const def of defs.byName.values()) {
      const plain = def.naming?.plain;
      if (plain === undefined) continue;
      const set = this.holders.get(plain);
      if (!set) {
        this.holders.set(plain, new Set([def]));
        fresh.push(def);
        continue;
      }
      if (set.has(def)) continue; // taken already: nothing new
      let f = found.get(plain);
      if (!f) found.set(plain, (f = { own: [], renamed: new Set() }));
      f.renamed.add(unitOf(def));
      if (f.own.length < LIMITS.sparkplugCollisionSampleMetrics) f.own.push(def);
      let sh = this.shared.get(plain);
      if (!sh) {
        sh = { heap: [], bySuffix: new Map() };
        this.shared.set(plain, sh);
        for (const h of set) enter(sh, h, set, undefined);
      }
      const owner = sh.heap[0];
      set.add(def);
      enter(sh, def, set, f.renamed);
      // The one that kept the name before gets its suffix from now on.
      if (owner && !same(owner, sh.heap[0] as MetricDef)) {
        f.renamed.add(unitOf(owner));
        f.demoted = owner;
      }
    }
    // A name new here that is the suffixed name of metrics sharing another: they lose it (their
    // values are skipped from now on, as one field must not hold two metrics), reported as a
    // collision on that name. Looked at once the whole birth is in, which may change who keeps what.
    const taken = fresh.flatMap((def) => {
      const plain = (def.naming as Naming).plain as string;
      const losers = this.suffixedAs(plain);
      return losers.length === 0 ? [] : [{ def, plain, losers }];
    });
    this.tell([...[...found.values()].flatMap((f) => [...f.renamed]), ...taken.flatMap((t) => t.losers.map(unitOf))]);
    const metric = (d: MetricDef) => {
      const u = unitOf(d);
      return { group: u.group, edge: u.edge, ...(u.device === undefined ? {} : { device: u.device }), metric: d.name, field: this.field(d) };
    };
    const collisions: Collision[] = [...found].map(([field, f]) => {
      const owner = (this.shared.get(field) as Shared).heap[0] as MetricDef;
      // The one that kept the name before, when its suffixed name is another metric's plain one: skipped now, shown so.
      const demoted = f.demoted && this.field(f.demoted) === undefined ? [f.demoted] : [];
      const sample = [owner, ...f.own.filter((d) => d !== owner), ...demoted].slice(0, LIMITS.sparkplugCollisionSampleMetrics);
      return {
        field,
        count: (this.holders.get(field) as Set<MetricDef>).size,
        metrics: sample.map(metric),
        renamed: [...f.renamed],
      };
    });
    for (const t of taken) {
      collisions.push({
        field: t.plain,
        count: (this.holders.get(t.plain)?.size ?? 1) + t.losers.length,
        metrics: [t.def, ...t.losers].slice(0, LIMITS.sparkplugCollisionSampleMetrics).map(metric),
        renamed: [...new Set(t.losers.map(unitOf))],
      });
    }
    return collisions;
  }

  /**
   * The definitions `name` is the suffixed name of (sharing a plain name and not keeping it), which
   * get no field while a metric holds `name` as its plain name.
   */
  private suffixedAs(name: string): MetricDef[] {
    if (!SUFFIXED.test(name)) return [];
    const sh = this.shared.get(name.slice(0, -SUFFIX_LENGTH));
    const by = sh?.bySuffix.get(name);
    if (!sh || !by) return [];
    const owner = sh.heap[0];
    return by.filter((d) => !owner || !same(d, owner));
  }

  /**
   * Forgets a birth's definitions (replaced, dead, undone); the edge nodes (and devices) of others
   * whose fields that changed: the one that now keeps a name one of them kept, any no longer sharing
   * a suffix with one of them.
   */
  remove(defs: Definitions): Unit[] {
    const renamed = new Set<Unit>();
    /** each shared name one of them held → the one that kept it before */
    const owners = new Map<string, MetricDef>();
    /** plain names no metric holds any more: the metrics whose suffixed name each is get it back */
    const freed: string[] = [];
    for (const def of defs.byName.values()) {
      const plain = def.naming?.plain;
      if (plain === undefined) continue;
      const set = this.holders.get(plain);
      if (!set?.delete(def)) continue;
      if (set.size === 0) {
        this.holders.delete(plain);
        freed.push(plain);
      }
      const sh = this.shared.get(plain);
      if (!sh) continue;
      if (!owners.has(plain)) owners.set(plain, sh.heap[0] as MetricDef);
      if (set.size <= 1) this.shared.delete(plain);
      else leave(sh, def, set, renamed);
    }
    // The one that keeps a name now, when it had its suffix until now. Compared once all are gone: the
    // same metric may be held twice (by the local MQTT input and the plant's broker), once here.
    for (const [plain, owner] of owners) {
      const set = this.holders.get(plain);
      if (!set) continue;
      const next = this.shared.get(plain)?.heap[0] ?? (set.values().next().value as MetricDef);
      if (!same(owner, next)) renamed.add(unitOf(next));
    }
    for (const plain of freed) if (!this.holders.has(plain)) for (const d of this.suffixedAs(plain)) renamed.add(unitOf(d));
    this.tell([...renamed]);
    return [...renamed];
  }

  /** The field a declared metric's values go to now; undefined: none (too long, or see the class). `seq`: its message's (Naming.later). */
  field(def: MetricDef, seq?: number): string | undefined {
    const n = def.naming;
    if (n?.saved !== undefined) {
      if (n.later && seq !== undefined && !behind(n.later.until, seq)) return n.later.field ?? undefined;
      return n.saved ?? undefined;
    }
    if (!n || n.plain === undefined) return undefined;
    const sh = this.shared.get(n.plain);
    if (!sh || same(sh.heap[0] as MetricDef, def)) return n.plain;
    const suffixed = suffixedOf(def);
    if (suffixed === undefined || this.holders.has(suffixed)) return undefined;
    // Two suffixes alike (a 1 in 2^32 chance): neither is taken, rather than one field for both.
    if (sh.bySuffix.get(suffixed)?.some((d) => !same(d, def))) return undefined;
    return suffixed;
  }
}

/**
 * Of a plain name several definitions hold: `heap`, a binary heap of them ordered by `before`, so
 * that the one keeping the name is on top. A definition that leaves stays in it until it comes on
 * top (then dropped), the heap built again from the holders once it is twice their number, so each
 * birth and death costs log n steps, not n. `bySuffix`: each suffixed name and the holders that would
 * get it (two metrics: neither does).
 */
interface Shared {
  heap: MetricDef[];
  bySuffix: Map<string, MetricDef[]>;
}

/** `def` (in `set` now) into `sh`; the units of others whose suffix it turns out to share into `renamed`. */
function enter(sh: Shared, def: MetricDef, set: ReadonlySet<MetricDef>, renamed: Set<Unit> | undefined): void {
  const suffixed = suffixedOf(def);
  if (suffixed !== undefined) {
    const by = sh.bySuffix.get(suffixed);
    if (!by) sh.bySuffix.set(suffixed, [def]);
    else {
      for (const d of by) if (renamed && !same(d, def)) renamed.add(unitOf(d));
      by.push(def);
    }
  }
  sh.heap.push(def);
  up(sh.heap, sh.heap.length - 1);
  compact(sh, set);
}

/** `def` (no longer in `set`) out of `sh`: at once from bySuffix, from the heap once on top; the units of others that shared its suffix into `renamed`. */
function leave(sh: Shared, def: MetricDef, set: ReadonlySet<MetricDef>, renamed: Set<Unit>): void {
  const suffixed = suffixedOf(def);
  const by = suffixed === undefined ? undefined : sh.bySuffix.get(suffixed);
  const i = by?.indexOf(def) ?? -1;
  if (by && i >= 0) {
    by.splice(i, 1);
    if (by.length === 0) sh.bySuffix.delete(suffixed as string);
    for (const d of by) if (!same(d, def)) renamed.add(unitOf(d));
  }
  const h = sh.heap;
  while (h.length > 0 && !set.has(h[0] as MetricDef)) {
    const last = h.pop() as MetricDef;
    if (h.length === 0) break;
    h[0] = last;
    down(h, 0);
  }
  compact(sh, set);
}

/** The heap built again from the holders once those that left make it twice their number. */
function compact(sh: Shared, set: ReadonlySet<MetricDef>): void {
  if (sh.heap.length <= 2 * set.size + 16) return;
  sh.heap = [...set];
  for (let i = (sh.heap.length >> 1) - 1; i >= 0; i--) down(sh.heap, i);
}

function up(h: MetricDef[], i: number): void {
  while (i > 0) {
    const p = (i - 1) >> 1;
    if (!before(h[i] as MetricDef, h[p] as MetricDef)) return;
    [h[i], h[p]] = [h[p] as MetricDef, h[i] as MetricDef];
    i = p;
  }
}

function down(h: MetricDef[], i: number): void {
  for (;;) {
    let m = i;
    for (const c of [2 * i + 1, 2 * i + 2]) if (c < h.length && before(h[c] as MetricDef, h[m] as MetricDef)) m = c;
    if (m === i) return;
    [h[i], h[m]] = [h[m] as MetricDef, h[i] as MetricDef];
    i = m;
  }
}

function unitOf(def: MetricDef): Unit {
  return (def.naming as Naming).unit;
}

function suffixedOf(def: MetricDef): string | undefined {
  const n = def.naming as Naming;
  if (!('suffixed' in n)) {
    const s = `${n.plain}${suffixOf(n.unit.group, n.unit.edge, n.unit.device, def.name)}`;
    n.suffixed = FIELD_NAME_PATTERN.test(s) ? s : undefined;
  }
  return n.suffixed;
}

/** The same metric: of one edge node or device, of one name (a rebirth's definition or the old one). */
function same(a: MetricDef, b: MetricDef): boolean {
  const x = a.naming as Naming;
  const y = b.naming as Naming;
  return a.name === b.name && x.unit.group === y.unit.group && x.unit.edge === y.unit.edge && x.unit.device === y.unit.device;
}

/** Whether `a` keeps a shared name rather than `b`: exact first, an edge node's before a device's, then code-unit order. */
function before(a: MetricDef, b: MetricDef): boolean {
  const rank = (d: MetricDef) => ((d.naming as Naming).exact ? ((d.naming as Naming).unit.device === undefined ? 0 : 1) : 2);
  if (rank(a) !== rank(b)) return rank(a) < rank(b);
  const key = (d: MetricDef) => {
    const u = (d.naming as Naming).unit;
    return [u.group, u.edge, u.device ?? '', d.name];
  };
  const ka = key(a);
  const kb = key(b);
  for (let i = 0; i < ka.length; i++) if (ka[i] !== kb[i]) return (ka[i] as string) < (kb[i] as string);
  // the same metric (never in one list) or a node's and a device's metric of equal keys: the node's
  return (a.naming as Naming).unit.device === undefined;
}
