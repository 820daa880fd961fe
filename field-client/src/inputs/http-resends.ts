import { FieldStreamError } from '../../../shared/errors.ts';
import { LIMITS, TIMINGS } from '../../../shared/limits.ts';

/** The answer a request with an Idempotency-Key was given, kept for that key. */
export interface KeptAnswer {
  /** what the request was (its method, target and body's digest): another under the key is refused */
  fingerprint: string;
  status: number;
  /** the answer's JSON */
  text: string;
}

/**
 * The answers the local HTTP input gave to requests with an `Idempotency-Key`
 * (draft-ietf-httpapi-idempotency-key-header), to tell a producer's retry from a new request. A
 * producer that did not see its 202 (its own timeout while the device's storage was slow to sync, a
 * connection that broke) sends the request again: without a key it is queued again, and a reading
 * without a timestamp (stamped as it is queued) becomes a second point, an event a second row, a
 * file a second file. With the key, the retry is answered with the first request's answer and
 * nothing is queued again. As the draft says: a retry while the first is still being taken is
 * refused (409, FIELD_INPUT_KEY_IN_PROGRESS: send it again shortly), and the same key on another
 * request (another endpoint, target or body) is refused (422, FIELD_INPUT_KEY_REUSED). Only an
 * accepted request's answer is kept: one refused or failed is taken anew when sent again.
 *
 * Kept in memory here, and on disk (http-keys-file.ts: written before the answer is sent, read back
 * at the start), so that a retry after the field client restarted (a crash, a kill, a power cut, an
 * upgrade: when producers retry) is answered as it was too. At most LIMITS.localInputKeysKeptMax
 * answers of at most LIMITS.localInputKeptAnswersMaxBytes in all, each for
 * TIMINGS.localInputKeyKeptMs; the oldest forgotten first. The input asks for no credentials, so
 * keys are the device's, not a producer's: two programs on the device choosing the same key are
 * one producer to it (a random key, a UUID, never meets another).
 */
export class KeyedRequests {
  /** oldest first (by `at`: restore keeps the order) */
  private readonly kept = new Map<string, KeptEntry>();
  private readonly taking = new Set<string>();
  private heldBytes = 0;
  /** the `at` of the answer kept last */
  private newest = -Infinity;

  /**
   * `now`: milliseconds on the clock answers are kept by: the machine's monotonic clock, not the
   * wall clock. A device without a battery-backed clock boots at the date it was left at, and NTP
   * then steps it forward, days at once after a long outage: on the wall clock every answer kept
   * expired at that step, and a producer's retry of a request taken just before was queued again.
   * The default (bootClockMs) counts from the machine's boot, the same for every process of that
   * boot: an answer read back after a restart of the field client alone keeps its age exactly.
   */
  constructor(private readonly now: () => number = bootClockMs) {}

  /**
   * A request with `key` arrives: the answer kept for the key, to be compared with the request once
   * its body is in (same), or undefined, and the key is held for this request until `accepted` or
   * `released`. Throws FIELD_INPUT_KEY_IN_PROGRESS while another request of the key is being taken.
   */
  begin(key: string): KeptAnswer | undefined {
    this.forgetExpired();
    if (this.taking.has(key)) {
      throw new FieldStreamError('FIELD_INPUT_KEY_IN_PROGRESS', 'A request with this Idempotency-Key is being taken now: send it again shortly, to be answered as it was.');
    }
    const kept = this.kept.get(key);
    if (kept) return kept;
    this.taking.add(key);
    return undefined;
  }

  /** The answer a retry of `kept` gets: `kept`'s, or FIELD_INPUT_KEY_REUSED for another request. */
  same(kept: KeptAnswer, fingerprint: string): KeptAnswer {
    if (kept.fingerprint !== fingerprint) {
      throw new FieldStreamError('FIELD_INPUT_KEY_REUSED', 'Another request was taken with this Idempotency-Key: nothing was taken. Use a new key for a new request.');
    }
    return kept;
  }

  /**
   * The request holding `key` (begin) was accepted with this answer: kept for the key's retries.
   * Returns what is kept (with the time it was, on this clock and the wall clock `wall`), or
   * undefined when nothing is: the key was not held, or the answer alone is over the bound.
   */
  accepted(key: string, answer: KeptAnswer, wall = Date.now()): KeptEntry | undefined {
    if (!this.taking.delete(key)) return undefined;
    return this.keep(key, { fingerprint: answer.fingerprint, status: answer.status, text: answer.text }, this.now(), wall);
  }

  /**
   * An answer read back at the start (http-keys-file.ts), `age` milliseconds old: kept as if it had
   * been accepted then, within the same bounds; one older than TIMINGS.localInputKeyKeptMs is not.
   * Read oldest first; one read as older than the one before it (a wall clock that stepped back
   * between them) is kept as old as that one, so that the oldest is still the first forgotten.
   */
  restore(key: string, answer: KeptAnswer, age: number, wall: number): void {
    if (age >= TIMINGS.localInputKeyKeptMs) return;
    this.keep(key, answer, Math.max(this.now() - Math.max(0, age), this.newest), wall);
  }

  /** The answers kept, oldest first, after those expired are forgotten (what a rewrite of the file holds). */
  entries(): Array<[string, KeptEntry]> {
    this.forgetExpired();
    return [...this.kept.entries()];
  }

  /** bytes the answers kept hold, as bounded by LIMITS.localInputKeptAnswersMaxBytes */
  get bytes(): number {
    return this.heldBytes;
  }

  private keep(key: string, answer: KeptAnswer, at: number, wall: number): KeptEntry | undefined {
    const bytes = key.length + answer.fingerprint.length + answer.text.length;
    if (bytes > LIMITS.localInputKeptAnswersMaxBytes) return undefined;
    const old = this.kept.get(key);
    if (old) {
      this.kept.delete(key);
      this.heldBytes -= old.bytes;
    }
    const entry: KeptEntry = { ...answer, at, wall, bytes };
    this.kept.set(key, entry);
    this.heldBytes += bytes;
    this.newest = Math.max(this.newest, at);
    while (this.kept.size > LIMITS.localInputKeysKeptMax || this.heldBytes > LIMITS.localInputKeptAnswersMaxBytes) this.forgetOldest();
    return this.kept.get(key);
  }

  /** The request holding `key` was not accepted (refused, failed, cut off): the key is free again. */
  released(key: string): void {
    this.taking.delete(key);
  }

  get size(): number {
    return this.kept.size;
  }

  private forgetExpired(): void {
    const before = this.now() - TIMINGS.localInputKeyKeptMs;
    for (const k of this.kept.values()) {
      if (k.at > before) return;
      this.forgetOldest();
    }
  }

  private forgetOldest(): void {
    const [key, k] = this.kept.entries().next().value as [string, { bytes: number }];
    this.kept.delete(key);
    this.heldBytes -= k.bytes;
  }
}

/** A kept answer, with when it was kept: `at` on the keeping clock, `wall` on the wall clock (epoch ms). */
export interface KeptEntry extends KeptAnswer {
  at: number;
  wall: number;
  bytes: number;
}

/**
 * Milliseconds on the machine's monotonic clock. Node's hrtime reads CLOCK_MONOTONIC, which Linux
 * counts from the boot: every process of one boot reads the same clock (told apart from the next
 * boot's by the kernel's boot id), and no setting of the wall clock moves it.
 */
export function bootClockMs(): number {
  return Number(process.hrtime.bigint() / 1_000_000n);
}
