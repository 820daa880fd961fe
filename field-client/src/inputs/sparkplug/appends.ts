import { FieldStreamError, isFieldStreamError, type ErrorCode } from '../../../../shared/errors.ts';
import type { LimitedLog } from '../../../../shared/limited-log.ts';
import { LIMITS } from '../../../../shared/limits.ts';
import type { Submission } from '../../client-options.ts';
import type { FieldClient } from '../../field-client.ts';
import type { MetricDef } from './definitions.ts';
import type { HostOutcome, SparkplugHost } from './host.ts';
import type { Used } from './host-types.ts';
import type { NodeSnap, SessionStore } from './store.ts';

/** How to undo a message whose items are not appended yet (see submit). */
export interface Undo {
  edge: string;
  undo: () => HostOutcome['dropped'];
}

interface Batch {
  items: Submission[];
  topic: string;
  done: Promise<void>;
  /** the edge nodes a message of which waited for it (some may have been undone since) */
  edges: Set<string>;
  /**
   * The field each metric's values in it went to (HostOutcome.used), by edge node: its edge nodes'
   * births files say these names while its items may be in the queue unsaved (store.ts), as a resend
   * read against them after a SIGKILL must go to the field the queue holds it under. One field per
   * metric: a message whose metric would go to another is taken into the next batch (seal).
   */
  used: Map<string, Map<MetricDef, Used>>;
  /** taken when sealed before its append starts (seal): its edge nodes' sessions as its last message left them */
  snaps?: Map<string, NodeSnap> | undefined;
}

/** A message waiting for `batch` (see submit). */
type Waiting = Undo & { batch: Batch };

/**
 * How a Sparkplug host session (session.ts) puts what its messages carry into the field client's
 * durable queue: in batches, one append each, in the order the messages were taken; each message
 * acknowledged only once its batch is appended (and, with a session store, its edge nodes' sessions
 * saved), undone with the messages of its edge node after it when the queue refuses it.
 */
export class SessionAppends {
  private chain: Promise<void> = Promise.resolve();
  /** the batch the next append takes (see submit) */
  private next: Batch | undefined;
  /**
   * How to undo each message whose items are not appended yet, by edge node, in the order taken (see
   * submit); those of the batch on its way first. By edge node, so that what is done for one edge node
   * (a message refused while the queue is slow, a batch appended) takes the time of its messages, not
   * of every message waiting: a look through all of them for each message refused past the bound
   * below made the input slowest exactly when it was most behind.
   */
  private readonly waiting = new Map<string, Waiting[]>();
  /** messages in `waiting` */
  private waitingCount = 0;
  /**
   * the batches holding a message of each edge node in `waiting` (the one on its way, those sealed
   * after it, which only a rename makes, and the next), so that a message with nothing to store finds
   * its edge node's without a look through every message waiting: that look made N of them behind
   * one slow append cost N²
   */
  private readonly batchesOf = new Map<string, Set<Batch>>();
  /** readings and events taken and not yet appended or refused */
  private pendingItems = 0;
  /** batches sealed (seal) whose append has not started, oldest first */
  private readonly sealed: Batch[] = [];
  /** edge nodes with messages in the next batch whose metrics' field names may have changed since (mayRename) */
  private readonly flagged = new Set<string>();

  constructor(
    private readonly o: {
      client: Pick<FieldClient, 'submitMany'>;
      /** the host whose edge nodes' sessions are saved (and undone) */
      host: SparkplugHost;
      /** where the sessions are saved after each append, before its messages resolve */
      store: SessionStore | undefined;
      /** the session's counters (SparkplugStats) */
      stats: { submitFailed: number; refusedByCode: Partial<Record<ErrorCode, number>> };
      /** the session's refusals log */
      refusalLog: LimitedLog;
    },
  ) {}

  /**
   * Queues `items` behind everything taken before them, so the queue holds them in the order the
   * broker delivered them. What arrives while an append is on its way joins the next batch: one
   * append (one fsync) for all of it, rather than one per message, which capped the input at the
   * disk's fsyncs per second while its backlog grew without bound. The batch waiting is bounded too
   * (LIMITS.sparkplugPendingMaxItems readings and events, and as many messages): past it, a message
   * is refused at once (FIELD_QUEUE_FULL).
   *
   * Resolves once the items are on disk; rejects (counted and logged here) when the queue refused
   * them, so that the local MQTT input does not acknowledge a QoS 1 publish whose data is not stored.
   *
   * A message whose items the queue refused is undone (`undo`): its edge node's session goes back to
   * what it was before it, so that the edge node's resend of it (the local MQTT input closed its
   * connection without a PUBACK) is taken as the next seq and stored, rather than refused as a seq
   * gap, or as not born after the NBIRTH or DBIRTH it carried, and acknowledged unstored. As the
   * connection closed, nothing that edge node sent after it is acknowledged either: every message of
   * it not yet appended is undone too, latest first, and its resends are taken again (those appended
   * meanwhile are stored twice: at least once, never lost). On the plant's broker (QoS 0, nothing
   * resent) the next message is then a gap, and the rebirth it asks for sends the current values.
   */
  submit(items: Submission[], topic: string, undo?: Undo, used?: ReadonlyMap<MetricDef, Used>): Promise<void> {
    if (items.length === 0) {
      // Nothing to store (null values only, a refusal), but its seq was taken: while earlier messages
      // of its edge node still wait for the queue it must not be acknowledged before them. Acknowledged
      // at once, it was not sent again after their append failed and they were undone, so the resend
      // of the next one was a seq gap, refused and acknowledged unstored. It is undone with them, and
      // acknowledged only once every batch holding one of them is appended: a duplicate
      // (SPARKPLUG_DUPLICATE) of one in an earlier batch that failed, acknowledged with a later
      // batch, was not sent again, and the data it repeated, undone, was lost.
      if (!undo) return Promise.resolve();
      const batches = new Set<Batch>(this.batchesOf.get(undo.edge));
      if (!this.o.store && batches.size === 0) return Promise.resolve();
      // Each waits as a message with data does (in memory: its undo), so it is bounded with them: a
      // flood of them behind an append that does not end grew the process without end.
      if (this.waitingCount >= LIMITS.sparkplugPendingMaxItems) return this.refuse(0, topic, undo, `${this.waitingCount} Sparkplug messages wait for the queue already (at most ${LIMITS.sparkplugPendingMaxItems})`);
      if (this.o.store) {
        // Its seq taken must be saved before it is acknowledged (store.ts): it goes with the next
        // batch, whose save covers it, and is acknowledged once that batch and every earlier one of
        // its edge node are appended (or, failing, undone with them).
        const next = this.batch(topic);
        this.waitWith(undo, next);
        batches.add(next);
        return batches.size === 1 ? next.done : Promise.all([...batches].map((b) => b.done)).then(() => undefined);
      }
      const last = [...batches].at(-1) as Batch;
      this.waitWith(undo, last);
      return batches.size === 1 ? last.done : Promise.all([...batches].map((b) => b.done)).then(() => undefined);
    }
    if (this.pendingItems + items.length > LIMITS.sparkplugPendingMaxItems) {
      return this.refuse(items.length, topic, undo, `${this.pendingItems} Sparkplug readings and events wait for the queue already (at most ${LIMITS.sparkplugPendingMaxItems})`);
    }
    const batch = this.batch(topic);
    batch.items.push(...items);
    this.pendingItems += items.length;
    if (undo) this.waitWith(undo, batch);
    if (used && used.size > 0 && this.o.store) {
      const edge = undo?.edge ?? '';
      let mine = batch.used.get(edge);
      if (!mine) batch.used.set(edge, (mine = new Map()));
      for (const [def, u] of used) mine.set(def, u);
    }
    return batch.done;
  }

  /**
   * The field names of edge node `edge`'s metrics may have changed (a birth or death, its own or
   * another's, on either Sparkplug input, or an undo): when the next batch holds messages of it, its
   * next message is looked at before it is taken (beforeTake).
   */
  mayRename(edge: string): void {
    if (this.o.store && this.next?.used.has(edge)) this.flagged.add(edge);
  }

  /**
   * Before a message of `edge` is taken: when a metric of it in the next batch would now go to
   * another field than its values there went to (a birth renamed it since: two metrics whose names
   * come out alike, names.ts), that batch is sealed, and this message and those after it go into
   * the next. So a batch never holds one metric under two names, and its births file can name the
   * one field every value of it in that batch went to: one births file a batch could not, and the
   * value written before the rename was stored again under the new name when sent again after a
   * SIGKILL between that batch's append and its save.
   */
  beforeTake(edge: string): void {
    if (!this.flagged.delete(edge) || !this.next) return;
    const mine = this.next.used.get(edge);
    if (!mine) return;
    for (const [def, u] of mine) {
      const now = this.o.host.fieldOf(def);
      if (now !== undefined && now !== u.field) {
        this.seal();
        return;
      }
    }
  }

  /**
   * The next batch closed before its append starts: what is taken from now on goes into another.
   * Its edge nodes' sessions are taken now (store.ts snapshot), as its last message left them: taken
   * as its append starts, they held the seqs of messages of a later batch, and its save recorded
   * them, so that their resend after a SIGKILL before that batch's append looked read already.
   */
  private seal(): void {
    const b = this.next;
    if (!b) return;
    this.next = undefined;
    this.flagged.clear();
    const store = this.o.store;
    if (!store) return;
    b.snaps = new Map();
    const edges = [...b.edges].filter((edge) => this.waiting.get(edge)?.some((w) => w.batch === b));
    for (const edge of [...edges, ...store.marked()]) b.snaps.set(edge, store.snapshot(this.o.host, edge));
    this.sealed.push(b);
  }

  /** A message refused for what waits already (FIELD_QUEUE_FULL): undone, with its edge node's messages waiting. */
  private refuse(count: number, topic: string, undo: Undo | undefined, why: string): Promise<void> {
    const err = new FieldStreamError('FIELD_QUEUE_FULL', why);
    this.notQueued(count, topic, err);
    const edges = new Set<string>();
    if (undo) {
      edges.add(undo.edge);
      this.undone(undo);
    }
    this.rollBack(edges);
    return Promise.reject(err);
  }

  /** Message `undo` waits for `batch`: acknowledged with it, undone when it fails. */
  private waitWith(undo: Undo, batch: Batch): void {
    let list = this.waiting.get(undo.edge);
    if (!list) this.waiting.set(undo.edge, (list = []));
    list.push({ ...undo, batch });
    this.waitingCount++;
    batch.edges.add(undo.edge);
    let set = this.batchesOf.get(undo.edge);
    if (!set) this.batchesOf.set(undo.edge, (set = new Set()));
    set.add(batch);
  }

  /**
   * The edge nodes with messages waiting for `batch`, the batch on its way: theirs come first in each
   * list (the batches before it were appended, their messages gone, or failed, their edge nodes'
   * messages undone), so one look at each list's first.
   */
  private edgesOf(batch: Batch): Set<string> {
    return new Set([...batch.edges].filter((edge) => this.waiting.get(edge)?.[0]?.batch === batch));
  }

  /** The messages of `batch`, the batch on its way, no longer wait (appended: acknowledged). */
  private settled(batch: Batch): void {
    for (const edge of this.edgesOf(batch)) {
      const list = this.waiting.get(edge) as Waiting[];
      let n = 0;
      while (n < list.length && list[n]!.batch === batch) n++;
      list.splice(0, n);
      this.waitingCount -= n;
      if (list.length === 0) this.waiting.delete(edge);
      const set = this.batchesOf.get(edge);
      set?.delete(batch);
      if (set?.size === 0) this.batchesOf.delete(edge);
    }
  }

  /** Resolves once everything taken so far is in the queue (or refused by it); never rejects. */
  drained(): Promise<void> {
    return this.chain;
  }

  /**
   * The batch the next append takes (see submit), opened when none is. With a session store, its
   * edge nodes' sessions are taken as its append starts: then they are as its last message left them,
   * as no later message has been taken into a batch yet (what comes from then on waits for the next
   * one). Saved once the append is on disk, before the batch resolves.
   */
  private batch(topic: string): Batch {
    if (this.next) return this.next;
    let resolve!: () => void;
    let reject!: (err: unknown) => void;
    const done = new Promise<void>((res, rej) => ((resolve = res), (reject = rej)));
    const b: Batch = (this.next = { items: [], topic, done, edges: new Set(), used: new Map() });
    // The chain itself never rejects: each batch's outcome goes to its own promise.
    this.chain = this.chain.then(() => {
      if (this.next === b) {
        this.next = undefined; // what comes from now on waits for the next one
        this.flagged.clear();
      }
      if (this.sealed[0] === b) this.sealed.shift();
      const store = this.o.store;
      let snaps = b.snaps;
      if (store && !snaps) {
        snaps = new Map<string, NodeSnap>();
        for (const edge of [...this.edgesOf(b), ...store.marked()]) snaps.set(edge, store.snapshot(this.o.host, edge));
      }
      const used = new Map<MetricDef, Used>();
      for (const mine of b.used.values()) for (const [def, u] of mine) used.set(def, u);
      // The births of edge nodes renamed since their last save, before data under the new names (store.ts prepare).
      const ready = store ? store.prepare(this.o.host, used) : Promise.resolve();
      return ready.then(() => (b.items.length > 0 ? this.o.client.submitMany(b.items) : undefined)).then(
        async () => {
          this.pendingItems -= b.items.length;
          if (store && snaps && snaps.size > 0) {
            try {
              await store.save(snaps, this.o.host, used);
            } catch (err) {
              // Its data is in the queue, but what a restart would need to read its edge nodes'
              // resends is not on disk: not acknowledged, its messages are undone and sent again
              // (stored twice, never lost).
              this.o.refusalLog.write({ code: isFieldStreamError(err) ? err.code : 'SPARKPLUG_STORE_FAILED', topic: b.topic }, (err as Error).message);
              this.rollBack(this.edgesOf(b));
              reject(err);
              return;
            }
          }
          this.settled(b);
          resolve();
        },
        (err: unknown) => {
          this.pendingItems -= b.items.length;
          this.notQueued(b.items.length, b.topic, err);
          this.rollBack(this.edgesOf(b));
          reject(err);
        },
      );
    });
    return b;
  }

  /** Undoes, latest first, every message of `edges` not yet appended (see submit). */
  private rollBack(edges: ReadonlySet<string>): void {
    for (const edge of edges) {
      const list = this.waiting.get(edge) ?? [];
      this.waiting.delete(edge);
      this.waitingCount -= list.length;
      this.batchesOf.delete(edge);
      for (let i = list.length - 1; i >= 0; i--) this.undone(list[i]!);
    }
    // A batch sealed took these edge nodes as their undone messages left them: taken again, so that
    // its save does not record the seq of a message undone (its resend then looked read already).
    const store = this.o.store;
    if (store) for (const b of this.sealed) for (const edge of edges) if (b.snaps?.has(edge)) b.snaps.set(edge, store.snapshot(this.o.host, edge));
    for (const edge of edges) this.mayRename(edge);
  }

  /** Undoes one message; held messages discarded with it (reorder.ts) are counted and logged. */
  private undone(u: Undo): void {
    const dropped = u.undo();
    if (!dropped) return;
    this.o.stats.refusedByCode[dropped.code] = (this.o.stats.refusedByCode[dropped.code] ?? 0) + dropped.count;
    this.o.refusalLog.write({ code: dropped.code }, dropped.message);
  }

  private notQueued(count: number, topic: string, err: unknown): void {
    this.o.stats.submitFailed += count;
    this.o.refusalLog.write({ code: isFieldStreamError(err) ? err.code : 'FIELD_QUEUE_FULL', topic }, `Sparkplug data not queued: ${(err as Error).message}`);
  }
}
