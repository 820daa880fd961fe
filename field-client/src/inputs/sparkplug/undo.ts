import type { Boundary, RefusedBirths } from './boundaries.ts';
import type { Definitions } from './definitions.ts';
import type { Previous } from './previous.ts';
import type { NodeSession } from './host-types.ts';
import type { SparkplugTopic } from './topic.ts';

/**
 * Undoing a message of the Sparkplug host (host.ts) whose data the queue did not take: its edge
 * node's session as it was before it, and putting it back (HostOutcome.undo).
 */

/** An edge node's session as it was before a message (see SparkplugHost.handle). */
export interface Before {
  s: NodeSession | undefined;
  fields?: Pick<NodeSession, 'bdSeq' | 'seq' | 'defs' | 'stale' | 'diedAt'>;
  /** every device's definitions, when held messages (of any device) may be let through */
  devices?: Map<string, Definitions>;
  /** the definitions of the device the message is about (undefined: not born) */
  device?: [string, Definitions | undefined];
  /**
   * its previous sessions (held.ts), as they were too: a message sent again may be read in one (its
   * seq, stale flag and the definitions of the device it is about), or keep another (an NBIRTH); an
   * NBIRTH or NDEATH may record the death of one a refused NBIRTH ended (its diedAt)
   */
  previous?: { list: Previous[]; fields: Array<Pick<NodeSession, 'seq' | 'stale' | 'diedAt'>>; device?: [string, Array<Definitions | undefined>] } | undefined;
  /** its NBIRTHs refused lately (boundaries.ts): a birth refused adds one */
  boundaries: readonly Boundary[];
}

/**
 * What a message may change of its edge node's session, kept so that it can be undone: the session
 * object (an NBIRTH replaces it, an NDEATH removes it), its seq, stale flag, definitions and the time
 * its devices died (diedAt: an NBIRTH or NDEATH records it, for the session it ends), and the
 * definitions of the device it is about (all devices' when held messages may be let through).
 * O(1) per message but for that last case (a reorder timeout, on the plant's broker only).
 */
export function snapshot(sessions: ReadonlyMap<string, NodeSession>, previousSessions: ReadonlyMap<string, Previous[]>, refused: RefusedBirths, k: string, t: SparkplugTopic): Before {
  const s = sessions.get(k);
  // A copy: keeping or dropping a previous session changes the list in place (held.ts). At most
  // LIMITS.sparkplugPreviousSessionsPerNode: O(1) per message still.
  const list = previousSessions.get(k)?.slice();
  const previous = list && {
    list,
    fields: list.map((p) => ({ seq: p.s.seq, stale: p.s.stale, diedAt: p.s.diedAt })),
    ...(t.device !== undefined ? { device: [t.device, list.map((p) => p.s.devices.get(t.device as string))] as [string, Array<Definitions | undefined>] } : {}),
  };
  const boundaries = refused.of(k);
  if (!s) return { s, previous, boundaries };
  return {
    s,
    previous,
    boundaries,
    fields: { bdSeq: s.bdSeq, seq: s.seq, defs: s.defs, stale: s.stale, diedAt: s.diedAt },
    ...(s.held.size > 0 ? { devices: new Map(s.devices) } : {}),
    ...(t.device !== undefined ? { device: [t.device, s.devices.get(t.device)] as [string, Definitions | undefined] } : {}),
  };
}

/** Puts the session of `k` (and its previous ones) back as `b` found them. */
export function putBack(sessions: Map<string, NodeSession>, previous: Map<string, Previous[]>, refused: RefusedBirths, k: string, b: Before): void {
  refused.put(k, b.boundaries);
  if (b.previous) {
    const { list, fields, device } = b.previous;
    previous.set(k, list.slice());
    list.forEach((p, i) => {
      Object.assign(p.s, fields[i]);
      const defs = device?.[1][i];
      if (device && defs) p.s.devices.set(device[0], defs);
      else if (device) p.s.devices.delete(device[0]);
    });
  } else previous.delete(k);
  if (!b.s) {
    sessions.delete(k);
    return;
  }
  sessions.set(k, b.s);
  Object.assign(b.s, b.fields);
  if (b.devices) b.s.devices = b.devices;
  if (b.device) {
    const [device, defs] = b.device;
    if (defs) b.s.devices.set(device, defs);
    else b.s.devices.delete(device);
  }
}
