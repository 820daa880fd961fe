import { createHmac, createSecretKey, type KeyObject } from 'node:crypto';
import { FieldStreamError } from '../../shared/errors.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import { sameMac } from '../../shared/security/mac.ts';
import { parseSigningKey } from '../../shared/security/message-auth.ts';
import { readPemSetting } from '../../shared/tls-files.ts';

/**
 * Authentication of the stored feed (internal-network/shared/stored-feed.ts) from the distributor
 * to the console.
 *
 * Why a MAC and not the topic: the internal broker's ACL keeps the topic to the `distributor`
 * identity, but Mosquitto applies no ACL to what arrives over a bridge configured in the broker
 * itself (mosquitto_acl_check returns success for a bridge's context, 2.0.x), and a bridge's `topic
 * ... in` lines only choose what it subscribes to on the DMZ broker, not what it accepts from it.
 * Whoever holds the DMZ server can answer the bridge with a broker of their own and publish on any
 * topic of the internal broker, this one included, retained too. So the console trusts a message
 * for its MAC, under a key only the distributors and the console hold (generated at onboarding,
 * pki/onboarding.ts: certs/internal/stored-feed.key, never in the DMZ), not for the topic it came on.
 *
 * A message is the JSON body with its MAC in front, in one exact layout:
 *
 *   {"v":2,"mac":"<43 characters>","body":<body>}
 *
 *   mac = HMAC-SHA256(key, "fieldstream-stored-feed-v2" \n <body bytes>), canonical base64url
 *
 * The MAC is over the body's bytes exactly as they travel, so checking it needs no re-serialising,
 * and it is checked (in constant time, shared/security/mac.ts) before the body is parsed at all:
 * a forged message costs the console one HMAC, and none of its JSON is read. The layout is fixed
 * (no whitespace, the fields in this order), so a payload is either exactly this or refused; the
 * whole stays valid JSON for anyone reading the feed with mosquitto_sub and jq. The prefix of the
 * MAC input separates this use from every other MAC FieldStream makes (shared/security/) and binds
 * the version: a body cannot be passed off under another layout.
 *
 * The body names its distributor run and counts its messages (`boot`, `seq`) and says when it was
 * sent (`sent`): StoredFeedReplayGuard refuses a genuine message sent again later (the DMZ never
 * sees the feed, as nothing of it is bridged out, but a message taken off the internal network
 * could be): it would put an old state back on the console (a device shown offline again, a
 * reading taken twice by anomaly detection).
 */
export const STORED_FEED_VERSION = 2;

/** The stored-feed key, as node:crypto holds it (its bytes never appear in a log line or an error). */
export type StoredFeedKey = KeyObject;

const MAC_INPUT_PREFIX = Buffer.from(`fieldstream-stored-feed-v${STORED_FEED_VERSION}\n`, 'latin1');
const HEAD = Buffer.from(`{"v":${STORED_FEED_VERSION},"mac":"`, 'latin1');
/** base64url of 32 bytes, unpadded */
const MAC_CHARS = 43;
const MID = Buffer.from('","body":', 'latin1');
const CLOSE = 0x7d; // "}"
const BODY_AT = HEAD.length + MAC_CHARS + MID.length;
/** bytes a sealed message adds to its body */
export const STORED_FEED_ENVELOPE_BYTES = BODY_AT + 1;
/** How a message of the first version (no MAC) begins: named in the refusal, the likely cause being a distributor not yet upgraded. */
const VERSION_1 = Buffer.from('{"v":1,', 'latin1');

/**
 * The stored-feed key named by a setting (DISTRIBUTOR_STORED_FEED_KEY_FILE, CONSOLE_STORED_FEED_KEY_FILE):
 * 64 hex digits (32 random bytes), as scripts/generate-certificates.sh writes it. Unreadable:
 * CONFIG_FILE_UNREADABLE; anything else in it: CONFIG_INVALID. Read once, at start.
 */
export function readStoredFeedKey(variable: string, path: string): StoredFeedKey {
  const key = parseSigningKey(readPemSetting(variable, path));
  if (!key) {
    throw new FieldStreamError('CONFIG_INVALID', `${variable}=${path} does not hold a stored-feed key (64 hex digits); scripts/generate-certificates.sh writes one when it is missing`, { variable, path });
  }
  return createSecretKey(key);
}

function macOf(key: StoredFeedKey, body: Uint8Array): Buffer {
  return createHmac('sha256', key).update(MAC_INPUT_PREFIX).update(body).digest();
}

/** The message that carries `body` (the body's JSON, as bytes), its MAC in front. One HMAC. */
export function sealStoredFeed(key: StoredFeedKey, body: Buffer): Buffer {
  const mac = Buffer.from(macOf(key, body).toString('base64url'), 'latin1');
  return Buffer.concat([HEAD, mac, MID, body, Buffer.of(CLOSE)], BODY_AT + body.length + 1);
}

const unauthenticated = (why: string) => new FieldStreamError('STORED_FEED_UNAUTHENTICATED', `Stored-feed message refused unread: ${why}`);

function matchesAt(payload: Buffer, part: Buffer, at: number): boolean {
  return payload.length >= at + part.length && payload.compare(part, 0, part.length, at, at + part.length) === 0;
}

/**
 * The body of a sealed message, once its MAC verified under `key` (the bytes, not parsed); else
 * STORED_FEED_UNAUTHENTICATED, saying only what of the layout was wrong or that the MAC did not
 * verify. The body is a view into `payload`, not a copy.
 */
export function openStoredFeed(key: StoredFeedKey, payload: Buffer): Buffer {
  if (!matchesAt(payload, HEAD, 0) || !matchesAt(payload, MID, HEAD.length + MAC_CHARS) || payload.length < STORED_FEED_ENVELOPE_BYTES || payload[payload.length - 1] !== CLOSE) {
    throw unauthenticated(matchesAt(payload, VERSION_1, 0) ? 'a message of version 1, without a MAC (a distributor older than the console?)' : `not a sealed message ({"v":${STORED_FEED_VERSION},"mac":"…","body":…})`);
  }
  const body = payload.subarray(BODY_AT, payload.length - 1);
  if (!sameMac(payload.toString('latin1', HEAD.length, HEAD.length + MAC_CHARS), macOf(key, body))) {
    throw unauthenticated('its MAC does not verify under the stored-feed key (forged or altered, or a distributor with another key)');
  }
  return body;
}

/** What the replay guard reads of an authenticated message. */
export interface FeedMessageId {
  source: string;
  /** the publishing distributor's run: random, new at every start */
  boot: string;
  /** 1, 2, 3 ... within the run */
  seq: number;
  /** epoch milliseconds, by the distributor's clock, when it was sealed */
  sent: number;
}

/**
 * The sequence numbers taken from one distributor run: the highest, and which of the `size` below
 * it (itself included) were taken; anything lower is refused. RFC 4303 §3.4.3's sliding window,
 * kept as a ring of flags indexed by sequence number modulo its size.
 */
export class SeqWindow {
  private highest = 0;
  private readonly taken: Uint8Array;

  constructor(private readonly size: number = LIMITS.feedReplayWindowMessages) {
    this.taken = new Uint8Array(size);
  }

  /** 'new' (and now taken), or why not. */
  take(seq: number): 'new' | 'taken' | 'below-window' {
    const { size, taken } = this;
    if (seq > this.highest) {
      // The slots the window slides over are of numbers not seen yet: cleared (at most `size`).
      for (let s = Math.max(this.highest + 1, seq - size + 1); s < seq; s++) taken[s % size] = 0;
      taken[seq % size] = 1;
      this.highest = seq;
      return 'new';
    }
    if (this.highest - seq >= size) return 'below-window';
    if (taken[seq % size] === 1) return 'taken';
    taken[seq % size] = 1;
    return 'new';
  }
}

export interface ReplayGuardOptions {
  /** TIMINGS.feedMaxAgeMs */
  maxAgeMs?: number;
  /** TIMINGS.feedMaxLeadMs */
  maxLeadMs?: number;
  /** LIMITS.feedReplayWindowMessages */
  windowMessages?: number;
  /** LIMITS.feedRunsPerSource */
  runsPerSource?: number;
  /** LIMITS.feedSourcesMax */
  maxSources?: number;
}

/**
 * Refuses an authenticated stored-feed message that is not new: sent further from the console's
 * clock than the time window (STORED_FEED_STALE), or taken already from its run, or below that
 * run's window (STORED_FEED_REPLAYED). A message is taken once within a run for as long as the
 * console runs; across a restart of the console, or for a run it has forgotten, the time window
 * is the bound: a message older than TIMINGS.feedMaxAgeMs is never taken again. The state is
 * bounded: LIMITS.feedRunsPerSource runs of LIMITS.feedSourcesMax sources, those heard from longest
 * ago forgotten first (a Map's order, each source and run moved to its end when heard from).
 */
export class StoredFeedReplayGuard {
  private readonly sources = new Map<string, Map<string, SeqWindow>>();
  private readonly o: Required<ReplayGuardOptions>;

  constructor(options: ReplayGuardOptions = {}) {
    this.o = {
      maxAgeMs: TIMINGS.feedMaxAgeMs,
      maxLeadMs: TIMINGS.feedMaxLeadMs,
      windowMessages: LIMITS.feedReplayWindowMessages,
      runsPerSource: LIMITS.feedRunsPerSource,
      maxSources: LIMITS.feedSourcesMax,
      ...options,
    };
  }

  /** Takes the message, or throws STORED_FEED_STALE or STORED_FEED_REPLAYED (and takes nothing). */
  check(m: FeedMessageId, now: number): void {
    const age = now - m.sent;
    if (age > this.o.maxAgeMs || -age > this.o.maxLeadMs) {
      throw new FieldStreamError(
        'STORED_FEED_STALE',
        `Stored-feed message ${m.seq} of ${m.source} sent ${age >= 0 ? `${age} ms ago` : `${-age} ms ahead of this clock`}; at most ${this.o.maxAgeMs} ms ago and ${this.o.maxLeadMs} ms ahead are taken (a replay, or the clocks of distributor and console apart)`,
        { source: m.source, ageMs: age },
      );
    }
    let runs = this.sources.get(m.source);
    if (runs) this.sources.delete(m.source);
    else runs = new Map();
    this.sources.set(m.source, runs);
    if (this.sources.size > this.o.maxSources) this.sources.delete(this.sources.keys().next().value as string);
    let window = runs.get(m.boot);
    if (window) runs.delete(m.boot);
    else window = new SeqWindow(this.o.windowMessages);
    runs.set(m.boot, window);
    if (runs.size > this.o.runsPerSource) runs.delete(runs.keys().next().value as string);
    const verdict = window.take(m.seq);
    if (verdict !== 'new') {
      throw new FieldStreamError(
        'STORED_FEED_REPLAYED',
        verdict === 'taken'
          ? `Stored-feed message ${m.seq} of ${m.source} (run ${m.boot}) was taken already`
          : `Stored-feed message ${m.seq} of ${m.source} (run ${m.boot}) is ${this.o.windowMessages} or more below the newest taken from that run`,
        { source: m.source, seq: m.seq },
      );
    }
  }
}
