import { createHash } from 'node:crypto';
import { LIMITS } from '../../../shared/limits.ts';

/**
 * The readings and events the local MQTT input took at QoS 1 or 2, by client and packet identifier,
 * to tell a publish a sensor sends again from a new one. A sensor that did not see its PUBACK (lost
 * with a connection that broke) sends the publish again, on its next connection, with the DUP flag
 * and the same packet identifier (MQTT 3.1.1 §3.3.1.1, MQTT-3.3.1-1 and §2.3.1, MQTT-2.3.1-3; MQTT 5
 * the same, §3.3.1.1 and §2.2.1; Eclipse Paho does so with a clean session too). A reading without
 * a timestamp is stamped with the time it is queued (FieldClient.submitMany): queued again, the copy
 * was a second point in the database, a second row in PostgreSQL whatever its timestamp.
 *
 * So a publish flagged DUP, of a client and packet identifier whose last publish taken had the same
 * topic and payload, is that publish: acknowledged and not queued again (once the first copy is on
 * disk; if its append failed, the copy is taken). A packet identifier is free again once its
 * PUBACK was processed (§2.3.1), so a publish not flagged DUP is always a new one, and replaces the
 * record of its identifier; one flagged DUP with other bytes was never taken (its first copy lost on
 * the way) and is taken. At the protocol level every copy is still a publication (§4.3.2,
 * MQTT-4.3.2-2: acknowledged, and forwarded to any subscriber): only the queue does not take it twice.
 *
 * What this cannot tell apart: a client reusing an identifier for a publish of the very same bytes
 * (no timestamp, the same values), whose first copy was lost on the way, and then sending it again
 * flagged DUP, is taken for the earlier one. A sensor that sends the time of each reading is never
 * confused so (its bytes differ). Kept in memory only: after a restart of the field client, a copy
 * sent again is queued again.
 *
 * Bounded: the last LIMITS.localMqttTakenPublishesMax publishes of all clients, the oldest forgotten
 * first, each some 200 bytes: a client identifier longer than 64 characters (a client chooses it, up
 * to 64 KiB) is kept as its digest.
 */
export class TakenPublishes {
  /** by `packet id` and client identifier (keyOf), oldest first: the digest of the publish and whether it is queued (a promise until known) */
  private readonly taken = new Map<string, { digest: string; stored: Promise<boolean> | boolean }>();

  /**
   * When this publish is one sent again of a publish taken (flagged DUP, the same client, packet
   * identifier and bytes): whether that one is queued (true once it is; false if its append failed,
   * then this copy is to be taken). Undefined for a publish to take.
   */
  earlier(clientId: string, messageId: number | undefined, dup: boolean, digest: string): Promise<boolean> | boolean | undefined {
    if (!dup || messageId === undefined) return undefined;
    const t = this.taken.get(keyOf(clientId, messageId));
    return t?.digest === digest ? t.stored : undefined;
  }

  /** Remembers a publish being taken: `stored` resolves true once it is queued, false if it was not. */
  remember(clientId: string, messageId: number | undefined, digest: string, stored: Promise<boolean>): void {
    if (messageId === undefined) return;
    const key = keyOf(clientId, messageId);
    const entry: { digest: string; stored: Promise<boolean> | boolean } = { digest, stored };
    this.taken.delete(key); // set again at the end: the newest
    this.taken.set(key, entry);
    if (this.taken.size > LIMITS.localMqttTakenPublishesMax) this.taken.delete(this.taken.keys().next().value as string);
    void stored.then((ok) => {
      if (this.taken.get(key) !== entry) return;
      // One not queued is forgotten: a copy sent again is then taken as new.
      if (ok) entry.stored = true;
      else this.taken.delete(key);
    });
  }

  get size(): number {
    return this.taken.size;
  }
}

/** The digest of a publish's topic and payload (128 bits of SHA-256: a chance match would drop a reading). */
export function publishDigest(topic: string, payload: Uint8Array | string): string {
  return createHash('sha256').update(topic).update('\0').update(payload).digest('base64').slice(0, 22);
}

function keyOf(clientId: string, messageId: number): string {
  const client = clientId.length <= 64 ? `=${clientId}` : `#${createHash('sha256').update(clientId).digest('base64')}`;
  return `${messageId} ${client}`;
}
