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
 * disk; if its append failed, the copy is taken). So is one not flagged DUP while its identifier is
 * still in use on the same connection (`inUse`): its first copy not yet acknowledged there (two
 * copies in one write), or a QoS 2 publish not yet released (PUBREL), which MQTT 3.1.1 §4.3.3
 * (MQTT-4.3.3-2) says is the same message whatever its flag; some senders send again without it.
 * Taken again, such a copy was a second point. A packet identifier is free again once its
 * PUBACK (or PUBCOMP) was processed (§2.3.1), so a publish not flagged DUP after that is a new one,
 * and replaces the record of its identifier; one flagged DUP with other bytes was never taken (its
 * first copy lost on the way) and is taken. At the protocol level every copy is still a publication (§4.3.2,
 * MQTT-4.3.2-2: acknowledged, and forwarded to any subscriber): only the queue does not take it twice.
 *
 * What this cannot tell apart: a client reusing an identifier for a publish of the very same bytes
 * (no timestamp, the same values), whose first copy was lost on the way, and then sending it again
 * flagged DUP, is taken for the earlier one. A sensor that sends the time of each reading is never
 * confused so (its bytes differ). Kept in memory, and, given the field client's data folder, on
 * disk (mqtt-taken-file.ts): a copy sent again after a restart of the field client is recognised too.
 *
 * Bounded: the last LIMITS.localMqttTakenPublishesMax publishes of all clients, the oldest forgotten
 * first, each some 200 bytes: a client identifier longer than 64 characters (a client chooses it, up
 * to 64 KiB) is kept as its digest.
 */
export class TakenPublishes {
  /** by `packet id` and client identifier (keyOf), oldest first: the digest of the publish, whether it is queued (a promise until known), and the connection it came on */
  private readonly taken = new Map<string, { digest: string; stored: Promise<boolean> | boolean; connection: object | undefined }>();

  /**
   * When this publish is one sent again of a publish taken (the same client, packet identifier and
   * bytes; flagged DUP, or `inUse`: its identifier still in use, a QoS 2 publish not yet released on
   * `connection`): whether that one is queued (true once it is; false if its append failed, then this
   * copy is to be taken). Undefined for a publish to take. On the connection the earlier copy came
   * on, one whose append is still under way (not yet acknowledged) holds its identifier too.
   */
  earlier(clientId: string, messageId: number | undefined, dup: boolean, digest: string, connection?: object, inUse = false): Promise<boolean> | boolean | undefined {
    if (messageId === undefined) return undefined;
    const t = this.taken.get(keyOf(clientId, messageId));
    if (t?.digest !== digest) return undefined;
    const unacknowledged = connection !== undefined && t.connection === connection && t.stored !== true;
    return dup || inUse || unacknowledged ? t.stored : undefined;
  }

  /** Remembers a publish being taken (on `connection`): `stored` resolves true once it is queued, false if it was not. */
  remember(clientId: string, messageId: number | undefined, digest: string, stored: Promise<boolean>, connection?: object): void {
    if (messageId === undefined) return;
    const key = keyOf(clientId, messageId);
    const entry: { digest: string; stored: Promise<boolean> | boolean; connection: object | undefined } = { digest, stored, connection };
    this.taken.delete(key); // set again at the end: the newest
    this.taken.set(key, entry);
    if (this.taken.size > LIMITS.localMqttTakenPublishesMax) this.taken.delete(this.taken.keys().next().value as string);
    void stored.then((ok) => {
      if (this.taken.get(key) !== entry) return;
      // One not queued is forgotten: a copy sent again is then taken as new. One queued no longer
      // holds its connection (only a copy while it is appended is told by it): kept, each of the
      // last publishes held a closed connection's client in memory, a program publishing once per
      // connection (mosquitto_pub) thousands of them.
      if (ok) {
        entry.stored = true;
        entry.connection = undefined;
      } else this.taken.delete(key);
    });
  }

  get size(): number {
    return this.taken.size;
  }

  /**
   * A publish read back at the start as queued (mqtt-taken-file.ts), by its key (publishKey) and
   * digest: a copy sent again flagged DUP is acknowledged, not queued again. Read oldest first.
   */
  restore(key: string, digest: string): void {
    this.taken.delete(key);
    this.taken.set(key, { digest, stored: true, connection: undefined });
    if (this.taken.size > LIMITS.localMqttTakenPublishesMax) this.taken.delete(this.taken.keys().next().value as string);
  }

  /** The publishes known queued, oldest first, by key and digest (what a rewrite of the file holds). */
  *queued(): Generator<[string, string]> {
    for (const [key, t] of this.taken) if (t.stored === true) yield [key, t.digest];
  }
}

/** The digest of a publish's topic and payload (128 bits of SHA-256: a chance match would drop a reading). */
export function publishDigest(topic: string, payload: Uint8Array | string): string {
  return createHash('sha256').update(topic).update('\0').update(payload).digest('base64').slice(0, 22);
}

/** A publish's key: its packet identifier and its client's (a digest past 64 characters). */
export function keyOf(clientId: string, messageId: number): string {
  const client = clientId.length <= 64 ? `=${clientId}` : `#${createHash('sha256').update(clientId).digest('base64')}`;
  return `${messageId} ${client}`;
}
