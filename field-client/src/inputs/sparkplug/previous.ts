import type { NodeSession } from './host-types.ts';

/**
 * The previous sessions of an edge node the host keeps (held.ts) and what they carry of its NBIRTHs
 * refused: the types, and the pure steps held.ts takes on them.
 */

/** An edge node's session a newer NBIRTH (or its NDEATH) ended, kept for what it sent being sent again (resend.ts). */
export interface Previous {
  s: NodeSession;
  /** when it ended */
  at: number;
  /**
   * ended by a refused NBIRTH (lifecycle.ts, nodeBirthRefused), or by a restart of the field client
   * while current (store.ts: the local MQTT input's broker, and the edge node's will with it, died
   * with the process), not by its death, and no birth taken since: the last birth of its edge node
   * the host took, whose NDEATH (its bdSeq) is still its death, and whose devices die with the next
   * birth taken. Replaced rather than changed (an undo puts back the entries a message found).
   */
  awaitsDeath?: true | undefined;
  /**
   * awaitsDeath only: the bdSeq of the latest NBIRTH of its edge node refused since it ended (its
   * payload read, its bdSeq found; undefined: none, or one without a bdSeq read on another connection
   * than the refused birth before it, whose bdSeq it keeps otherwise: refusedBirth). The edge node believed itself
   * online with that bdSeq: the NDEATH carrying it, its connection's will, is its death too
   * (lifecycle.ts nodeDeath), that of the session awaiting it. Any other bdSeq's NDEATH is stale.
   */
  refusedBdSeq?: number | undefined;
  /**
   * The connection (Via.connection) the latest NBIRTH of its edge node refused since it was the
   * last birth taken came on, on the one entry that carries it (refusedOf): the session awaiting its
   * death, else the previous one born last (its NDEATH taken already). Not saved (store.ts): no
   * connection outlives the process. What that connection sends after it without DUP follows that
   * birth (resend.ts sentAgain), of a session whose aliases could not be read.
   */
  refusedOn?: object | undefined;
  /**
   * On the same entry: the payload timestamp of that NBIRTH refused (tck-id-payloads-nbirth-timestamp:
   * the time it was published, on the edge node's clock; undefined: none, or not decodable, the
   * latest known of an earlier one refused kept). A birth sent again published before it is an older
   * session's, never current over it, and a message sent again published at or after it belongs to
   * the session it began, whose aliases are unknown (resend.ts). Saved with the session (store.ts).
   */
  refusedAt?: number | undefined;
}

/** What the host read of an NBIRTH refused (lifecycle.ts nodeBirthRefused, held.ts refusedBirth). */
export interface RefusedBirth {
  /** its bdSeq (undefined: it had none, or its payload could not be decoded: see HeldDefinitions.refusedBirth) */
  bdSeq: number | undefined;
  /** the connection it came on, not sent again (undefined: unknown, or flagged DUP: sent before, on an earlier one) */
  on?: object | undefined;
  /** its payload timestamp (undefined: none, or not decodable) */
  at?: number | undefined;
}

/** Whether `e` carries what is known of the latest NBIRTH refused of its edge node (HeldDefinitions.refusedOf). */
export const carriesRefused = (e: Previous) => e.refusedBdSeq !== undefined || e.refusedOn !== undefined || e.refusedAt !== undefined;

/** `e` once its death is taken: what it carries of an NBIRTH refused but its bdSeq (Previous.refusedOn, refusedAt). */
export const afterDeath = (e: Previous): Previous => ({
  s: e.s,
  at: e.at,
  ...(e.refusedOn !== undefined ? { refusedOn: e.refusedOn } : {}),
  ...(e.refusedAt !== undefined ? { refusedAt: e.refusedAt } : {}),
});

/** `e` without what it carries of an NBIRTH refused. */
export const plain = (e: Previous): Previous => (e.awaitsDeath ? { s: e.s, at: e.at, awaitsDeath: true } : { s: e.s, at: e.at });
