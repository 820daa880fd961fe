import type { Definitions, MetricDef } from './definitions.ts';
import type { NodeSession } from './host.ts';
import type { Used } from './host-types.ts';
import type { NodeSnap } from './store.ts';
import type { MetricEntry, RecordSession } from './store-format.ts';

/** What the session store (store.ts) writes into a births file. */

/** bytes. The pieces a births file is written in: one write each (each awaited). */
const PIECE_BYTES = 64 * 1024;

/** A session's identity and its definitions' (by identity): what its births file holds. */
export function signatureOf(id: number, defs: Definitions, devices: ReadonlyArray<[string, Definitions]>): unknown[] {
  const out: unknown[] = [id, defs];
  for (const [name, d] of devices) out.push(name, d);
  return out;
}

/**
 * How a births file names a metric: the field its values go to, and, when a batch holding values of
 * it under that field is in the queue unsaved while it goes to another now, that one from the
 * message after seq `until` on (names.ts Naming.later, store.ts).
 */
export interface Named {
  field: string | undefined;
  later?: { field: string | undefined; until: number } | undefined;
}

/** How one births file is being named (namer), and what its writer learns: whether some name is not the one of now. */
export interface Namer {
  nameOf: (d: MetricDef) => Named;
  /** the count of renames its edge node was marked with when the write began (store.ts markRenamed) */
  mark: number | undefined;
  stale: boolean;
}

/**
 * How a births file written for a batch names each metric: the field its values in that batch went
 * to (`used`, appends.ts Batch.used), else the one it goes to now (`fieldOf`). The queue may hold that
 * batch's items before its save: a resend read against the births file after a SIGKILL must go to
 * the field the queue holds it under, also when a birth renamed the metric after it was taken; and
 * one of a message after the batch's last value of it, not in the queue yet, to the field of now
 * (Named.later). Written with the names of now only, a value taken before a rename, in the batch the
 * rename came in, was stored again under the new name when sent again after a kill.
 */
export function namer(fieldOf: (d: MetricDef) => string | undefined, used: ReadonlyMap<MetricDef, Used> | undefined, mark: number | undefined): Namer {
  const n: Namer = {
    mark,
    stale: false,
    nameOf: (d) => {
      // Read back so (a restart while such a batch was unsaved): a session saved before a restart
      // keeps its names (names.ts Naming.saved), so both stay as they are.
      const saved = d.naming?.saved;
      const later = d.naming?.later;
      if (saved !== undefined && later) return { field: saved ?? undefined, later: { field: later.field ?? undefined, until: later.until } };
      const now = fieldOf(d);
      const was = used?.get(d);
      if (was !== undefined && was.field !== now) {
        n.stale = true;
        return { field: was.field, later: was.seq === undefined ? undefined : { field: now, until: was.seq } };
      }
      return { field: now };
    },
  };
  return n;
}

function entry(def: MetricDef, alias: number | null, n: Named): MetricEntry {
  const e: MetricEntry = [def.name, def.datatype, n.field ?? null, alias];
  return n.later ? [...e, n.later.field ?? null, n.later.until] : e;
}

function* metricsOf(defs: Definitions, nameOf: (d: MetricDef) => Named): Generator<string> {
  const aliased = new Set<string>();
  let first = true;
  for (const [alias, def] of defs.byAlias) {
    aliased.add(def.name);
    const e = entry(def, alias, nameOf(def));
    yield `${first ? '' : ','}${JSON.stringify(e)}`;
    first = false;
  }
  for (const def of defs.byName.values()) {
    if (aliased.has(def.name)) continue;
    const e = entry(def, null, nameOf(def));
    yield `${first ? '' : ','}${JSON.stringify(e)}`;
    first = false;
  }
}

/**
 * A births file (v2): a first line with the edge node, its record and its sessions (each device's
 * name), then one line per birth, each session's node then its devices in that order, each the
 * JSON array of its metrics. A line a birth, so that it is read back one birth at a time
 * (store-births.ts openBirths); v1 held it all in one JSON document.
 */
export function* birthsPieces(
  snap: NodeSnap,
  record: RecordSession[],
  gen: number,
  fieldOf: Parameters<typeof metricsOf>[1],
  idOf: (s: NodeSession) => number,
): Generator<string> {
  const sessions = snap.sessions.map((x) => ({ id: idOf(x.s), bdSeq: x.bdSeq, bornAt: x.bornAt ?? null, birthDigest: x.birthDigest ?? null, devices: x.devices.map(([name]) => name) }));
  yield `${JSON.stringify({ v: 2, gen, group: snap.group, edge: snap.edge, record, sessions })}\n`;
  for (const x of snap.sessions) {
    yield '[';
    yield* metricsOf(x.defs, fieldOf);
    yield ']\n';
    for (const [, defs] of x.devices) {
      yield '[';
      yield* metricsOf(defs, fieldOf);
      yield ']\n';
    }
  }
}

/** Small pieces joined into pieces of about PIECE_BYTES: one awaited write each. */
export function* chunked(pieces: Iterable<string>): Generator<string> {
  let buf: string[] = [];
  let n = 0;
  for (const p of pieces) {
    buf.push(p);
    n += p.length;
    if (n >= PIECE_BYTES) {
      yield buf.join('');
      buf = [];
      n = 0;
    }
  }
  if (buf.length > 0) yield buf.join('');
}
