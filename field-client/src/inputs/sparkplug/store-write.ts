import type { Definitions } from './definitions.ts';
import type { NodeSession } from './host.ts';
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

function* metricsOf(defs: Definitions, fieldOf: (d: Definitions['byName'] extends Map<string, infer D> ? D : never) => string | undefined): Generator<string> {
  const aliased = new Set<string>();
  let first = true;
  for (const [alias, def] of defs.byAlias) {
    aliased.add(def.name);
    const e: MetricEntry = [def.name, def.datatype, fieldOf(def) ?? null, alias];
    yield `${first ? '' : ','}${JSON.stringify(e)}`;
    first = false;
  }
  for (const def of defs.byName.values()) {
    if (aliased.has(def.name)) continue;
    const e: MetricEntry = [def.name, def.datatype, fieldOf(def) ?? null, null];
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
