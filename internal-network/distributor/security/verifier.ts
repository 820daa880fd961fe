import type { UplinkEnvelope } from '../../../shared/contract/envelope.ts';
import { TIMINGS } from '../../../shared/limits.ts';
import type { Logger } from '../../../shared/logger.ts';
import { uplinkKey, type StoredPoint } from '../points.ts';
import { authenticMessages, isIntact } from '../../shared/authentic.ts';
import type { DeviceKeyRegistry } from '../../shared/device-keys.ts';
import type { ReplayWindows } from './replay-window.ts';
import { RefusalTally, UNREGISTERED_DEVICE, type TalliedRefusal } from './refusal-tally.ts';
import { CheckedVerdict, type SignedId, type Verdict } from './verdict.ts';
import { RefusalEvents, type Refusals, type SecurityRefusalCode } from './refusal-events.ts';
import { WritesInFlight } from './writes-in-flight.ts';

type Message = UplinkEnvelope['messages'][number];

export interface VerifierOptions {
  /** refuse messages without a device signature */
  requireSignatures: boolean;
  /** ms: how far a message's signing time may lie after the moment the gateway received it (the clocks' disagreement) */
  freshnessMs: number;
  /** ms: how long after its signing a message may reach the gateway (a slow link); TIMINGS.deviceTransitMaxMs when not given */
  transitMs?: number;
  /**
   * ms: how long a message may have waited between the gateway and here (broker queues, outages).
   * Measured from the signing time too, by this side's clock: a message signed more than
   * maxDelayMs + freshnessMs ago is stale whatever arrival time the DMZ wrote on it.
   */
  maxDelayMs: number;
  /**
   * Names this distributor in the security events it writes (tag `distributor`: its
   * DISTRIBUTOR_CLIENT_ID, the same across its restarts): replicas refusing in the same millisecond
   * or counting the same second write points of their own, where InfluxDB would keep one of them.
   */
  instance?: string;
}

/**
 * An epoch-ms time for a security event's detail. The contract bounds these times below only (a
 * signing time up to 2^53, an arrival time any integer): past year 275760 toISOString throws, and a
 * hostile device or DMZ must get its refusal, not a crash of the check. Such a time is given as is.
 */
function iso(ms: number): string {
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? `${ms} ms` : d.toISOString();
}

/**
 * Checks every message that crossed the DMZ against what only the device and the internal network
 * know: its signature under the device's registered key, the freshness of its sending, and that its
 * sequence number was not accepted before. Refused messages become security events (database and
 * log) and are never written as data. A copy of an accepted message is recorded too
 * (SECURITY_DUPLICATE, logged at info: a device resending after a lost ack does this).
 */
export class MessageVerifier {
  readonly stats = { verified: 0, unsigned: 0, refused: 0, duplicates: 0 };
  /** refusals counted per second (unknown device ids, and known ones past their lead) */
  readonly tally: RefusalTally;
  /** each refusal's security event and log line */
  private readonly refusalEvents: RefusalEvents;
  /** the accepted messages being written, until their verdict's release */
  readonly inFlight = new WritesInFlight();

  constructor(
    private readonly keys: DeviceKeyRegistry,
    private readonly replay: ReplayWindows,
    private readonly o: VerifierOptions,
    log: Logger,
  ) {
    // the tags every event of this distributor carries (VerifierOptions.instance)
    const ownTags: Readonly<Record<string, string>> = o.instance ? { distributor: o.instance } : {};
    this.tally = new RefusalTally(ownTags);
    this.refusalEvents = new RefusalEvents(ownTags, o, log);
  }

  /**
   * Settles when a message of `env` that an earlier check accepted, and whose write is in progress,
   * settles: check `env` only when this is undefined (writes-in-flight.ts). Synchronously followed
   * by the check, nothing can start writing in between. Only a group whose MAC verifies is a copy
   * (WritesInFlight.copyOf): one the DMZ forged is refused by the check at once, whatever writes of
   * its device are under way.
   */
  copyInFlight(env: UplinkEnvelope): Promise<void> | undefined {
    return this.inFlight.copyOf(env, this.signedGroup);
  }

  /**
   * Whether the device signed `group` (its MAC verifies under the device's key): asked only of a
   * group that meets a write in progress, so the key is looked up only then. Made once, not at each
   * check (see refuse).
   */
  private readonly signedGroup = (env: UplinkEnvelope, auth: NonNullable<Message['auth']>, group: readonly Message[]): boolean => {
    const key = this.keys.isRevoked(env.deviceId) ? undefined : this.keys.get(env.deviceId);
    return key !== undefined && isIntact(key, env, auth, group.map((g, j) => ({ message: g, seq: j === 0 ? auth.seq : g.seq })));
  };

  /** Call only when {@link copyInFlight} is undefined, and release the verdict once its write settled. */
  check(env: UplinkEnvelope): Verdict {
    const now = Date.now();
    const events: StoredPoint[] = [];
    const tallied: TalliedRefusal[] = [];
    const keep: Message[] = [];
    const sentAt: number[] = [];
    const keys: string[] = [];
    const toRecord: SignedId[] = [];
    const receipts: SignedId[] = [];
    const receiptIds: Array<SignedId | undefined> = [];
    const inThisEnvelope = new Set<string>();
    const revoked = this.keys.isRevoked(env.deviceId);
    const key = revoked ? undefined : this.keys.get(env.deviceId);
    // Refusals of an id the operator knows (its key listed, or revoked: sets the operator bounds) are
    // stored one point each under its id; of any other id (the DMZ's invention), counted together.
    const refusals = { events, tallied, known: revoked || this.keys.has(env.deviceId) };
    const delayed = now - env.receivedAt;
    const messages = env.messages;
    for (let i = 0; i < messages.length; ) {
      const m = messages[i] as Message;
      const auth = m.auth;
      if (revoked) {
        this.refuse(refusals, env, now, m.messageId, i, 'SECURITY_REVOKED', 'the device was revoked');
        i++;
        continue;
      }
      if (!auth) {
        if (this.o.requireSignatures) this.refuse(refusals, env, now, m.messageId, i, 'SECURITY_UNSIGNED', 'unsigned message refused (signatures are required)');
        else {
          this.stats.unsigned++;
          keep.push(m);
          receiptIds.push(undefined);
          sentAt.push(m.receivedAt ?? env.receivedAt);
          keys.push(uplinkKey(m.messageId));
        }
        i++;
        continue;
      }
      // The messages this MAC covers, each with its sequence number: one (version 1), or the group
      // that starts here (version 2: the first message's seq is in its auth, the others' beside them).
      // The walk of shared/authentic.ts (sortBySignature), inlined: this hot loop refuses and checks
      // each member as it goes, without the intermediate lists.
      const group = auth.v === 1 ? [m] : messages.slice(i, i + auth.count);
      const first = i;
      i += group.length;
      if (!key) {
        for (const [j, g] of group.entries()) this.refuse(refusals, env, now, g.messageId, first + j, 'SECURITY_UNKNOWN_DEVICE', 'no signing key registered for this device (unknown or revoked)');
        continue;
      }
      const members = group.map((g, j) => ({ message: g, seq: j === 0 ? auth.seq : g.seq, index: first + j }));
      const intact = isIntact(key, env, auth, members);
      if (!intact) {
        for (const [j, g] of group.entries()) this.refuse(refusals, env, now, g.messageId, first + j, 'SECURITY_BAD_SIGNATURE', auth.v === 1 ? 'signature does not match the content and the device key' : 'the signed group is incomplete, or does not match its content and the device key');
        continue;
      }
      // The arrival times are the DMZ's word (a compromised DMZ writes any it likes: a 30-day-old
      // signed copy stamped item.receivedAt = auth.ts, env.receivedAt = now passed the checks on
      // them alone). The signing time is the device's, under its MAC, and is checked against this
      // side's clock: a message is sent (signed) when it leaves the device, reaches the gateway
      // within freshnessMs, and may then wait up to maxDelayMs (docs/security-mechanisms.md:
      // freshness is of the sending, so a device's backlog after an outage, signed afresh, passes).
      const signedAgo = now - auth.ts;
      const transitMs = this.o.transitMs ?? TIMINGS.deviceTransitMaxMs;
      const signedTooLongAgo = signedAgo > this.o.maxDelayMs + transitMs + this.o.freshnessMs || signedAgo < -this.o.freshnessMs;
      for (const { message, seq, index } of members as Array<{ message: Message; seq: number; index: number }>) {
        const arrived = message.receivedAt ?? env.receivedAt;
        if (
          signedTooLongAgo ||
          // A message's own arrival lies within the gateway's linger of its envelope's.
          Math.abs(arrived - env.receivedAt) > TIMINGS.envelopeItemArrivalSpreadMs ||
          !arrivedInTime(arrived, auth.ts, this.o.freshnessMs, transitMs) ||
          delayed > this.o.maxDelayMs ||
          delayed < -this.o.freshnessMs
        ) {
          this.refuse(
            refusals, env, now, message.messageId, index, 'SECURITY_STALE',
            `signed at ${iso(auth.ts)}, received by the gateway at ${iso(arrived)} (its envelope at ${iso(env.receivedAt)}), checked at ${iso(now)}`,
          );
          continue;
        }
        const seen = this.replay.check(env.deviceId, auth.epoch, seq);
        if (seen === 'too-old') {
          this.refuse(refusals, env, now, message.messageId, index, 'SECURITY_REPLAY', `sequence ${seq} of epoch ${auth.epoch} is below the replay window`);
          // Authentic, and far behind the newest accepted: a device that keeps to its receipt window
          // (FIELD_COMMIT_WINDOW_MESSAGES < the replay window) had let this one go before it sent the
          // newest, so a copy now comes from a device that lost its own record of that (a crash
          // before it saved its watermark). Its receipt lets it go again, rather than resend forever.
          // INVARIANT relied on: no epoch ever holds more than LIMITS.replayWindowSeqs sequence numbers
          // in flight above its oldest unreceipted one. The queue keeps to it (field-client
          // commit-receipts room()); a file transfer (epoch = transfer id, seq = chunk index) by having
          // at most LIMITS.fileMaxChunks <= replayWindowSeqs chunks (FileTransferSchema, the field
          // client's chunkBytesFor; test/unit/file-transfer-window.test.ts). Break it and a DMZ holding
          // one message back gets it receipted here unstored, and its device deletes it.
          if (auth.v === 2) receipts.push({ epoch: auth.epoch, seq });
          continue;
        }
        const id = `${auth.epoch}\u0000${seq}`;
        if (seen === 'seen' || inThisEnvelope.has(id)) {
          this.stats.duplicates++;
          this.stats.refused--; // counted as a duplicate, not as a refusal
          this.refuse(refusals, env, now, message.messageId, index, 'SECURITY_DUPLICATE', `sequence ${seq} of epoch ${auth.epoch} was accepted before; not written again`);
          if (seen === 'seen' && auth.v === 2) receipts.push({ epoch: auth.epoch, seq });
          continue;
        }
        this.stats.verified++;
        inThisEnvelope.add(id);
        // One object for the three lists: this loop runs for every reading.
        const signedId = { epoch: auth.epoch, seq };
        toRecord.push(signedId);
        if (auth.v === 2) receipts.push(signedId);
        receiptIds.push(auth.v === 2 ? signedId : undefined);
        keep.push(message);
        sentAt.push(auth.ts);
        keys.push(uplinkKey(message.messageId, { epoch: auth.epoch, seq }));
      }
    }
    return new CheckedVerdict(
      keep.length > 0 ? ({ ...env, messages: keep } as UplinkEnvelope) : undefined, sentAt, keys, events, tallied, receipts, receiptIds, this.tally, this.replay, env.deviceId, toRecord,
      this.inFlight.claim(env.deviceId, toRecord),
    );
  }

  /**
   * Counts a refusal, and records its security event and log line (RefusalEvents.add). (A method,
   * not a closure made by each check: every named closure costs its creation a defineProperty under
   * tsx, which compiles with esbuild's keepNames; docs/performance-history.md.)
   */
  private refuse(to: Refusals, env: UplinkEnvelope, now: number, messageId: string, index: number, code: SecurityRefusalCode, detail: string): void {
    this.stats.refused++;
    this.refusalEvents.add(to, env, now, messageId, index, code, detail);
  }

  /**
   * Whether what only the DMZ says of `deviceId` (its presence, a gateway's count of its refusals)
   * may be stored under its id: a device the operator knows (its key listed, or revoked), or any
   * when signatures are not required (devices without keys are then real). Any other id is the
   * DMZ's invention when signatures are required (no message of it can be written): stored, each
   * added a series to InfluxDB, without bound (its max-series-per-database, once reached, refuses
   * new devices' readings too). Such ids are counted instead (countUnregistered).
   */
  mayStoreUnder(deviceId: string): boolean {
    return !this.o.requireSignatures || this.keys.has(deviceId) || this.keys.isRevoked(deviceId);
  }

  /**
   * Whether `deviceId` is the DMZ's invention as far as this distributor can tell: an id
   * {@link mayStoreUnder} refuses (signatures required, neither listed nor revoked, the folder looked
   * at again for it: DeviceKeyRegistry.listed), while the folder lists some device. A folder that
   * lists none (a keys folder not mounted, or a path mistaken) says nothing of any id: what is
   * decided on this (presence-clearer.ts clears the id's retained presence on the internal broker)
   * must not then be done to every device of the fleet.
   */
  isInvented(deviceId: string): boolean {
    return !this.mayStoreUnder(deviceId) && this.keys.listedCount > 0;
  }

  /**
   * Counts a presence naming an id {@link mayStoreUnder} refuses, under UNREGISTERED_DEVICE, as the
   * refusals of such ids' messages are (one point per second, reason and gateway); logged at most
   * once per TIMINGS.securityLogIntervalMs.
   */
  countUnregisteredPresence(deviceId: string, gatewayId: string, now = Date.now()): void {
    this.stats.refused++;
    const what = `presence of ${deviceId}`;
    this.refusalEvents.logLine('SECURITY_UNKNOWN_DEVICE', { deviceId, gatewayId }, what, 'a presence of a device neither registered nor revoked; counted, not stored', now);
    this.tally.add({ device: UNREGISTERED_DEVICE, reason: 'SECURITY_UNKNOWN_DEVICE', gateway: gatewayId, messageId: what }, now);
  }


  /** The counts of refusals of the seconds that are over (all, with `all`), as points to store. */
  takeTally(now = Date.now(), all = false): StoredPoint[] {
    return this.tally.take(now, all);
  }

  /** Journals what was committed without `persist` (ReplayWindows.persist: one append). */
  persist(): void {
    this.replay.persist();
  }

  /**
   * The identities of the messages of `env` whose signature is intact, nothing else checked: for an
   * envelope kept whole in the dead-letter folder, whose messages are then durable here too (of
   * those, the ones signed as a group: only they get receipts, see Verdict.receipts).
   */
  authentic(env: UplinkEnvelope): SignedId[] {
    const key = this.keys.isRevoked(env.deviceId) ? undefined : this.keys.get(env.deviceId);
    return key ? authenticMessages<Message>(key, env).flatMap(({ epoch, seq, version }) => (version === 2 ? [{ epoch, seq }] : [])) : [];
  }

  /**
   * For an envelope kept whole in the dead-letter folder: its messages whose signature is intact
   * are recorded in the replay window (on disk at the next persist), as a written message's are,
   * and their receipts returned (as {@link authentic}). Unrecorded, a copy of one (a compromised DMZ
   * publishing it again and again within its freshness, a resend after a lost receipt) was checked
   * as new, refused again by the database and kept again, whole, each time: one message filled the
   * folder, and then every consumer that met a refused message stalled. Recorded, a copy is a
   * duplicate, answered with its receipt.
   */
  recordKept(env: UplinkEnvelope): SignedId[] {
    const key = this.keys.isRevoked(env.deviceId) ? undefined : this.keys.get(env.deviceId);
    if (!key) return [];
    const receipts: SignedId[] = [];
    for (const { epoch, seq, version } of authenticMessages<Message>(key, env)) {
      this.replay.record(env.deviceId, epoch, seq);
      if (version === 2) receipts.push({ epoch, seq });
    }
    return receipts;
  }
}

/**
 * Whether a message signed at `signedAt` reached the gateway at `arrived` in time: within `transitMs`
 * after its signing (the frame crossed the device's link: minutes on a slow one), and no more than
 * `freshnessMs` before it (the device signs on the gateway's clock: more is a clock, or a copy, out
 * of place). The distributor's check and the dead letters' replay share it.
 */
export function arrivedInTime(arrived: number, signedAt: number, freshnessMs: number, transitMs: number): boolean {
  const after = arrived - signedAt;
  return after <= transitMs && after >= -freshnessMs;
}