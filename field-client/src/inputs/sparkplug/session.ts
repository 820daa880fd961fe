import { FieldStreamError, isFieldStreamError, type ErrorCode } from '../../../../shared/errors.ts';
import { LimitedLog } from '../../../../shared/limited-log.ts';
import { LIMITS, TIMINGS } from '../../../../shared/limits.ts';
import type { Logger } from '../../../../shared/logger.ts';
import type { Submission } from '../../client-options.ts';
import type { FieldClient } from '../../field-client.ts';
import { SessionAppends } from './appends.ts';
import { key, SparkplugHost, type HostOutcome, type Via } from './host.ts';
import { digestOf } from './duplicates.ts';
import { FieldNames } from './names.ts';
import { SessionOutcomes } from './outcomes.ts';
import { decodePayload } from './payload.ts';
import { PeerHosts, type StatePayload } from './state.ts';
import { ownStateUnreadable, takeState, type StateTaker } from './state-messages.ts';
import type { SessionStore } from './store.ts';
import { parseTopic, stateHostId } from './topic.ts';

/** What the Sparkplug input did since the client started (the field client's /metrics shows it). */
export interface SparkplugStats {
  /** messages of the followed groups and STATE messages taken in, refused ones included (commands not counted) */
  messages: number;
  /**
   * messages taken: neither refused nor (yet) held for a missing seq. Counted when taken, so a
   * message held for reorder counts here only once let through, and one discarded by the reorder
   * timeout only as refused: a counter derived as messages less refusals would count a held message
   * as taken on arrival and take it back at its timeout, and a Prometheus counter must never go down.
   */
  accepted: number;
  readings: number;
  events: number;
  /** metrics left out of the readings: null, not a scalar type, transient, BAD or STALE quality, name too long */
  metricsSkipped: number;
  rebirthsRequested: number;
  /** messages refused or ignored, by code (SPARKPLUG_DEATH_STALE: a death of an older session) */
  refusedByCode: Partial<Record<ErrorCode, number>>;
  /** readings and events the durable queue did not take (full, or its disk failing) */
  submitFailed: number;
  /** messages that arrived ahead of their seq and were taken in order once the missing ones came */
  reordered: number;
  /** STATE messages of host applications not kept: LIMITS.sparkplugMaxPeerHosts were known already */
  peerHostsNotKept: number;
  /** field names a birth's metrics share with other metrics followed, counted at each such birth (names.ts) */
  fieldNameCollisions: number;
}

export interface SparkplugSessionOptions {
  /** our own host id (FIELD_SPARKPLUG_HOST_ID): its STATE is ours, not a peer's */
  hostId?: string | undefined;
  /** milliseconds a message ahead of its seq waits for the missing ones (§5.9); 0 (default): none */
  reorderTimeoutMs?: number | undefined;
  /** our own STATE was delivered with online=false (an old will, or someone else's publish), or removed (undefined: an empty retained publish) */
  onOwnOffline?: ((state: StatePayload | undefined) => void) | undefined;
  /**
   * Publishers send again what they got no PUBACK for (the local MQTT input, QoS 1): each edge node's
   * previous session is kept for what it sends again (HostOptions.resends).
   */
  resends?: boolean | undefined;
  /** the field names of the field client's other Sparkplug input too (HostOptions.names) */
  names?: FieldNames | undefined;
  /**
   * Where the sessions are saved (store.ts; with `resends`): loaded now, saved after each batch's
   * queue write, before its messages are acknowledged, so that what edge nodes send again after a
   * restart is read in the session it was sent in.
   */
  store?: SessionStore | undefined;
}

/**
 * One Sparkplug host session over some MQTT connection: a message in (topic and bytes), decoded,
 * run through the host state machine, its readings and events submitted to the field client's
 * durable queue (in batches, appends.ts), a rebirth request sent back when asked for. Shared by the input that subscribes
 * to a plant's broker (sparkplug-input.ts) and the local MQTT input (mqtt-input.ts).
 *
 * It also keeps the other host applications' STATE (state.ts, state-messages.ts) and, with a reorder timeout, holds
 * messages that arrived ahead of their seq until the missing ones come (reorder.ts): one timer
 * per session, armed for the earliest reorder deadline.
 *
 * Nothing a publisher sends stops it: each message that is refused is counted by its code and
 * logged, at most LIMITS.sparkplugLogMaxPerWindow lines per TIMINGS.sparkplugLogWindowMs (then
 * one line saying how many were left out), so a flood of bad messages cannot flood the log.
 */
export class SparkplugSession {
  readonly host: SparkplugHost;
  /** the other host applications, by their STATE */
  readonly peers: PeerHosts;
  readonly stats: SparkplugStats = { messages: 0, accepted: 0, readings: 0, events: 0, metricsSkipped: 0, rebirthsRequested: 0, refusedByCode: {}, submitFailed: 0, reordered: 0, peerHostsNotKept: 0, fieldNameCollisions: 0 };
  private timer: NodeJS.Timeout | undefined;
  private timerAt: number | undefined;
  private stopped = false;
  /** stops marking renamed edge nodes in the store (FieldNames.watch) */
  private unwatch: (() => void) | undefined;
  /** the batches its readings and events go to the queue in (appends.ts) */
  private readonly appends: SessionAppends;
  /** what the host state machine's outcomes and the refusals become: counts, log lines, rebirths, items (outcomes.ts) */
  private readonly outcomes: SessionOutcomes;
  /** what the STATE messages it takes need of it (state-messages.ts) */
  private readonly states: StateTaker;

  constructor(
    client: Pick<FieldClient, 'submitMany'>,
    /** sends bytes to a topic on the broker the message came from */
    publish: (topic: string, payload: Uint8Array) => void,
    private readonly log: Logger,
    /** group ids to follow; empty: every group */
    private readonly groups: readonly string[] = [],
    options: SparkplugSessionOptions = {},
  ) {
    const names = options.names ?? new FieldNames();
    this.host = new SparkplugHost({
      rebirthMinIntervalMs: TIMINGS.sparkplugRebirthMinIntervalMs,
      reorderTimeoutMs: options.reorderTimeoutMs ?? 0,
      resends: options.resends ?? false,
      recordFields: options.store !== undefined,
      names,
    });
    // A metric that kept a field name dead or reborn, or a birth taking one (on either input, by a
    // message, an undo or an expiry): the edge nodes whose fields that changed are saved again (store.ts).
    const store = options.store;
    if (store) {
      this.unwatch = names.watch((renamed) =>
        renamed.forEach((u) => {
          const k = key(u.group, u.edge);
          store.markRenamed(k);
          this.appends.mayRename(k);
        }),
      );
    }
    this.peers = new PeerHosts(options.hostId);
    // Refusals, logged at most LIMITS.sparkplugLogMaxPerWindow per TIMINGS.sparkplugLogWindowMs.
    const refusalLog = new LimitedLog(log, { maxPerWindow: LIMITS.sparkplugLogMaxPerWindow, windowMs: TIMINGS.sparkplugLogWindowMs, what: 'Sparkplug refusals' });
    this.outcomes = new SessionOutcomes({ stats: this.stats, publish, log, refusalLog });
    this.states = { peers: this.peers, stats: this.stats, log, outcomes: this.outcomes, options };
    this.appends = new SessionAppends({ client, host: this.host, store: options.store, stats: this.stats, refusalLog });
    // After the appends: what it restores renames (names.ts), and the watch above tells them.
    options.store?.load(this.host, Date.now());
  }

  /**
   * Takes one message; never throws. Resolves once what it carried is in the durable queue, or the
   * message was refused (counted, logged: a bad topic or payload, a seq gap); rejects only when the
   * queue did not take its data (full, its disk failing). The local MQTT input acknowledges a QoS 1
   * publish only when it resolves. `via`: the connection it came on and its DUP flag, from an input
   * whose publishers send again what was not acknowledged (the local MQTT input): a message sent again
   * is read in the session it was sent in (resend.ts).
   */
  onMessage(topic: string, bytes: Uint8Array, now = Date.now(), via?: Via, unread?: FieldStreamError): Promise<void> {
    const t = parseTopic(topic);
    if (t === 'state') {
      this.stats.messages++;
      // Unread, it is no STATE: not an empty one either, which would forget its host.
      if (unread) {
        this.outcomes.refuse(new FieldStreamError('SPARKPLUG_STATE_INVALID', unread.message), topic);
        ownStateUnreadable(this.states, stateHostId(topic) as string);
        return Promise.resolve();
      }
      takeState(this.states, stateHostId(topic) as string, topic, bytes, now);
      return Promise.resolve();
    }
    if (t === undefined) {
      this.stats.messages++;
      this.outcomes.refuse(new FieldStreamError('SPARKPLUG_TOPIC_INVALID', `not a Sparkplug B topic: ${topic.slice(0, 200)}`), topic);
      return Promise.resolve();
    }
    if (t.type === 'NCMD' || t.type === 'DCMD') return Promise.resolve();
    if (this.groups.length > 0 && !this.groups.includes(t.group)) {
      // The plant's broker delivers only the groups subscribed; the local MQTT input takes every
      // spBv1.0/ topic, and what an edge node of another group published there was acknowledged and
      // dropped with no trace. Refused (acknowledged: sent again it is refused the same), counted, logged.
      this.stats.messages++;
      this.outcomes.refuse(new FieldStreamError('SPARKPLUG_GROUP_NOT_FOLLOWED', `group ${t.group.slice(0, 200)} is not one of FIELD_SPARKPLUG_GROUPS (${this.groups.join(',').slice(0, 200)}): not stored`), topic);
      return Promise.resolve();
    }
    this.stats.messages++;
    const k = key(t.group, t.edge);
    let outcome: HostOutcome;
    try {
      let payload;
      try {
        if (unread) throw unread;
        payload = decodePayload(bytes);
      } catch (err) {
        // A birth that cannot be read still changes its edge node's session: an NBIRTH ends it, a
        // DBIRTH takes its seq and drops its device's birth; an NDATA or DDATA takes its seq
        // (host.ts, unreadableBirth; sequenced.ts, unreadable).
        if ((t.type !== 'NBIRTH' && t.type !== 'DBIRTH' && t.type !== 'NDATA' && t.type !== 'DDATA') || !isFieldStreamError(err)) throw err;
        payload = err;
      }
      // A metric of this edge node renamed while the next batch holds values of it: that batch sealed first (appends.ts).
      this.appends.beforeTake(k);
      // Bytes never read have no digest: two of them are not one message sent again (duplicates.ts).
      const digest = unread ? undefined : digestOf(bytes);
      outcome = payload instanceof FieldStreamError ? this.host.unreadableBirth(t, payload, now, via, digest) : this.host.handle(t, payload, now, via, digest);
      // Its own birth or death may change what its earlier sessions' metrics are named (names.ts).
      if (t.type !== 'NDATA' && t.type !== 'DDATA') this.appends.mayRename(k);
    } catch (err) {
      // Whatever went wrong with one message, the next is taken: the input never stops on input.
      this.outcomes.refuse(isFieldStreamError(err) ? err : new FieldStreamError('SPARKPLUG_PAYLOAD_INVALID', `not taken: ${(err as Error).message}`), topic);
      return Promise.resolve();
    }
    const items: Submission[] = [];
    this.outcomes.apply(t, topic, outcome, now, items, true);
    this.arm();
    // A duplicate (SPARKPLUG_DUPLICATE) carries nothing: it is acknowledged only with, and undone
    // with, the messages of its edge node still waiting for the queue (appends.ts), one of which it may be.
    return this.appends.submit(items, topic, outcome.undo && { edge: k, undo: outcome.undo }, usedOf(outcome));
  }

  /** A message skipped unread, its packet over LIMITS.sparkplugMaxPacketBytes (sparkplug-input.ts):
   * taken as one that cannot be decoded, as a payload over the 4 MiB decoded is. */
  onUnread(topic: string, length: number, now = Date.now()): Promise<void> {
    const err = new FieldStreamError('SPARKPLUG_PAYLOAD_INVALID', `an MQTT packet of ${length} bytes, over the ${LIMITS.sparkplugMaxPacketBytes} read: skipped unread`);
    return this.onMessage(topic, new Uint8Array(0), now, undefined, err);
  }

  /**
   * The reorder timeouts over at `now` (the session's timer calls it): held messages discarded, a
   * rebirth requested (§5.9). Resolves once what it queued (the rebirth_requested events) is queued.
   */
  expire(now = Date.now()): Promise<void> {
    const items: Submission[] = [];
    for (const { group, edge, out } of this.host.expire(now)) {
      // Not a message of its own: what the timeout discarded is counted in `out.dropped`.
      this.outcomes.apply({ group, edge }, `spBv1.0/${group}/+/${edge}`, out, now, items, false);
    }
    this.arm();
    return this.appends.submit(items, 'spBv1.0/+/+/+');
  }

  /**
   * The deaths of the edge nodes whose wills the broker took with it when the field client ended
   * (host.ts willsLost; the local MQTT input's, before it listens again). Resolves once they are
   * queued; one the queue refused (counted, logged) is undone: its edge node's next birth taken, or
   * its NDEATH, records its devices' deaths.
   */
  async willsLost(now = Date.now()): Promise<void> {
    const lost = this.host.willsLost(now);
    if (lost.length > 0) this.log.info({ edgeNodes: lost.length }, 'Sparkplug edge nodes connected when the field client ended recorded dead: their wills (NDEATH) ended with its broker');
    await this.deaths(lost, now);
  }

  /**
   * The deaths of every edge node known on the broker, when the input lost its connection to it
   * (host.ts connectionLost; the plant's broker, sparkplug-input.ts): Sparkplug 3.0.0 has a host
   * application mark their data STALE, as it sees neither their deaths nor their data meanwhile.
   * Resolves once they are queued; one the queue refused (counted, logged) is undone, its session
   * still current.
   */
  async connectionLost(now = Date.now()): Promise<void> {
    const lost = this.host.connectionLost(now);
    if (lost.length > 0) this.log.warn({ edgeNodes: lost.length }, 'Sparkplug edge nodes recorded dead: the connection to their broker was lost');
    this.arm(); // what the sessions held for reorder is gone with them
    await this.deaths(lost, now);
  }

  private async deaths(lost: ReturnType<SparkplugHost['willsLost']>, now: number): Promise<void> {
    const queued = lost.map(({ group, edge, out }) => {
      const items: Submission[] = [];
      const topic = `spBv1.0/${group}/NDEATH/${edge}`;
      this.outcomes.apply({ group, edge }, topic, out, now, items, false);
      return this.appends.submit(items, topic, out.undo && { edge: key(group, edge), undo: out.undo }).catch(() => undefined);
    });
    await Promise.all(queued);
  }

  /** No more timers (the input is closing); what is still held is dropped with the session. */
  stop(): void {
    this.stopped = true;
    this.unwatch?.();
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = undefined;
  }


  /** One timer for the earliest reorder deadline, set again whenever that changes. */
  private arm(): void {
    const at = this.stopped ? undefined : this.host.reorder.nextDeadline();
    if (at === this.timerAt) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = at;
    if (at === undefined) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.timerAt = undefined;
      // A queue that refused the rebirth events is counted and logged in submit.
      this.expire().catch(() => undefined);
    }, Math.max(0, at - Date.now()));
    // Held messages alone do not keep the process alive.
    this.timer.unref();
  }

  /** Resolves once everything taken so far is in the queue (or refused by it); never rejects. */
  drained(): Promise<void> {
    return this.appends.drained();
  }
}

/** The fields a message's metrics went to (HostOutcome.used), with those of the held messages it let through. */
function usedOf(out: HostOutcome): HostOutcome['used'] {
  if (out.released.length === 0) return out.used;
  const all = new Map(out.used);
  for (const r of out.released) for (const [def, u] of usedOf(r.out) ?? []) all.set(def, u);
  return all;
}
