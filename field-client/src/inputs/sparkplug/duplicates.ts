import { createHash } from 'node:crypto';

/**
 * What tells a message sent again from a new one when nothing in the PUBLISH says so. mqtt.js (what
 * most JavaScript edge nodes are built on) sends every QoS 1 publish it got no PUBACK for again after
 * it reconnects, from its outgoing store, with DUP clear (lib/client.js `_onConnect`: the stored
 * packet is written as it was first sent), before its `connect` event and so before the edge node's
 * new NBIRTH. MQTT 3.1.1 §3.3.1.1 asks for DUP on such a resend, but a server must not rely on it
 * (§4.3.2: a PUBLISH may arrive more than once), and a broker that forwards it (a plant's Mosquitto)
 * sets its own DUP on its own deliveries. So a Sparkplug message the host read already, whose PUBACK
 * was lost, came again as a new message with an old `seq` and was read as a seq gap: the session
 * marked stale, what the edge node sent after it refused (acknowledged unstored on the local MQTT
 * input) until its rebirth.
 *
 * Sparkplug B 3.0.0 §6.4.5 (Payload): every message but NDEATH carries a `seq`
 * (tck-id-payloads-sequence-num-always-included), one more than the last, 255 wrapping to 0
 * (tck-id-payloads-sequence-num-incrementing), and every payload a `timestamp`. Two messages of one
 * edge node with the same `seq` and the same bytes are one message delivered twice: a new one of the
 * same `seq` (after 256 more, or in a new session) differs at least in its timestamp. So each session
 * keeps a digest of the payload of each message it read, for the last SEQ_WINDOW seqs; a message whose
 * `seq` is at most that far behind the last one read and whose digest is the one read at that `seq` is
 * a duplicate: counted (SPARKPLUG_DUPLICATE), acknowledged, not stored again, the session going on.
 * A message with an old `seq` and other bytes is still a gap.
 *
 * The digest is 32 bits of SHA-256: enough, because it is compared only for a `seq` behind the last
 * one, where a message that is not the same one is refused in any case (a gap): a digest that matched
 * by chance (one in 2^32) would only spare that refusal its rebirth request, never drop data that
 * would have been stored.
 */
export type Digest = number;

/** The digest of a message's payload bytes (never 0, which marks an empty slot). */
export function digestOf(bytes: Uint8Array): Digest {
  const h = createHash('sha256').update(bytes).digest();
  return (h.readUInt32BE(0) | 1) >>> 0;
}

/**
 * How many seqs behind the last one read a message is compared with what was read: half of seq's 256
 * values, as for a publish flagged DUP (host.ts, SEQ_BEHIND); a seq 1 to 128 ahead is one not read yet.
 */
export const SEQ_WINDOW = 128;

/** bytes. What a session's digests take: the array and its object (counted with its definitions). */
export const SEQ_DIGESTS_BYTES = SEQ_WINDOW * 4 + 96;

/** Whether `seq` is `last` or at most SEQ_WINDOW - 1 behind it, 255 wrapping to 0. */
export function behind(last: number, seq: number): boolean {
  return (last - seq + 256) % 256 < SEQ_WINDOW;
}

/**
 * The digests of the messages one session read, for its last SEQ_WINDOW seqs. A slot is the seq
 * modulo SEQ_WINDOW: the seqs within the window of the last one read are SEQ_WINDOW consecutive
 * values, one per slot, each the last written there. A slot written by a message later undone (the
 * queue refused it, host.ts undo) holds that message's digest until the seq is read again; as the
 * bytes carry the seq, it can match only that very message sent again, which is then a duplicate of
 * nothing stored: so a message read again after an undo must come as the next seq, which is never
 * compared (see SparkplugHost: only a seq behind the last one read is).
 */
export class SeqDigests {
  private readonly slots = new Uint32Array(SEQ_WINDOW);

  set(seq: number, digest: Digest | undefined): void {
    this.slots[seq % SEQ_WINDOW] = digest ?? 0;
  }

  /** A copy of the digests, as bytes: what the session store saves (store.ts). */
  toBytes(): Uint8Array {
    return new Uint8Array(this.slots.slice().buffer);
  }

  /** Digests saved by toBytes (SEQ_WINDOW × 4 bytes, else none kept). */
  static fromBytes(bytes: Uint8Array): SeqDigests {
    const d = new SeqDigests();
    if (bytes.length === SEQ_WINDOW * 4) d.slots.set(new Uint32Array(new Uint8Array(bytes).buffer)); // a copy: a Buffer may be a view of a larger pool
    return d;
  }

  /** Whether the message read at `seq` had this digest (`seq` within the window: see behind). */
  read(seq: number, digest: Digest | undefined): boolean {
    return digest !== undefined && digest !== 0 && this.slots[seq % SEQ_WINDOW] === digest;
  }
}
