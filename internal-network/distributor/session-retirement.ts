import { dirname, join } from 'node:path';
import type { MqttClient } from 'mqtt';
import { z } from 'zod';
import { makeDirDurablySync, readRegularFileSync, replaceFileDurablySync } from '../../shared/durable-fs.ts';
import { FieldStreamError, isFieldStreamError } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';
import { TIMINGS } from '../../shared/limits.ts';
import { slotDir, type StateLease } from './state-lease.ts';

/**
 * Retires the broker sessions of consumers that no longer run, after taking what is queued in them.
 *
 * Each consumer connection holds a persistent session in the distributors' shared subscription
 * (MQTT 5 §4.8.2). Mosquitto deals a shared subscription's messages round robin to every session in
 * the group, connected or not (measured: with one of two members offline, it got half of them), so
 * the session of a consumer that will not come back keeps collecting its share, and nothing takes
 * it: fewer DISTRIBUTOR_CONSUMERS than before, or a distributor whose client id changed (the default
 * includes the host name, and a recreated container has a new one). Each such session is taken
 * over by its client id, stops collecting (its shared subscriptions removed), has its queued
 * messages written as any others (through a Consumer: acknowledged after the write), and is removed
 * once nothing has come for TIMINGS.sessionRetireIdleMs and a round trip to the broker after the
 * last PUBACK brought nothing either (disconnected with a session expiry of 0, MQTT 5 §3.14.2.2.2):
 * the quiet of a stalled broker is not taken for an empty session.
 *
 * Which sessions: those named in the state file (`consumer-sessions.json`: the ids of earlier runs)
 * that this run does not use, and this run's base id numbered past its consumer count up to
 * `maxConsumers` (found without a state file too). Never those of a distributor running now
 * (`liveElsewhere`: replicas sharing the state folder, state-lease.ts): replicas stopped cleanly
 * free their slots, and started again they take them in whichever order they come, each finding in
 * its slot's list the ids of another one, live. Taken over, that one's consumers were kicked off,
 * its sessions unsubscribed and removed, and the two took the ids from each other at every
 * reconnect. Its ids are left out of this slot's list too: its own slot lists them.
 */
export const ConsumerSessionsSchema = z.strictObject({ clientIds: z.array(z.string().regex(/^[A-Za-z0-9._-]{1,128}$/)).max(10_000) });

export interface RetirementOptions {
  stateFile: string;
  /** this run's consumer client ids */
  current: readonly string[];
  /** base-N for N past the consumers up to this is probed too */
  base: string;
  maxConsumers: number;
  /** the filters the consumers subscribe to (shared) */
  filters: readonly string[];
  /** connects a client as the given id (persistent session, MQTT 5), not yet subscribed */
  connect(clientId: string): MqttClient;
  /** takes the messages delivered on a client, writing each before acknowledging it (a Consumer) */
  consume(client: MqttClient): { stop(): void; readonly inProgressSince: number | undefined };
  /** aborted when the distributor stops: a session being retired is left for the next start */
  signal: AbortSignal;
  /** base client ids of the distributors running now with state slots of their own (StateLease.othersLive) */
  liveElsewhere?: () => readonly string[];
  log: Logger;
}

export interface RetirementResult {
  /** sessions that held a subscription or queued messages, taken over and removed */
  retired: string[];
  /** probed, held nothing */
  empty: number;
  /** could not be retired now (left in the state file, tried again at the next start) */
  failed: string[];
}

export async function retireConsumerSessions(o: RetirementOptions): Promise<RetirementResult> {
  const earlier = readState(o.stateFile, o.log);
  const current = new Set(o.current);
  const candidates = new Set<string>();
  for (const id of earlier) if (!current.has(id)) candidates.add(id);
  for (let i = o.current.length + 1; i <= o.maxConsumers; i++) candidates.add(`${o.base}-${i}`);
  candidates.delete(o.base);
  for (const id of current) candidates.delete(id);
  const live = o.liveElsewhere?.() ?? [];
  for (const id of candidates) if (isLiveIn(live, id)) candidates.delete(id);
  // Recorded first: a crash while retiring leaves these to be tried again, never forgotten.
  writeState(o.stateFile, [...new Set([...o.current, ...candidates])]);
  const result: RetirementResult = { retired: [], empty: 0, failed: [] };
  // All at once: until a session is unsubscribed it keeps collecting its share of new messages, so
  // one after another (each waiting to be idle) held later ones' messages back for seconds each.
  const outcomes = await Promise.allSettled([...candidates].map((id) => (o.signal.aborted ? Promise.reject(new Error('the distributor is stopping')) : retireOne(id, o))));
  for (const [i, id] of [...candidates].entries()) {
    const outcome = outcomes[i] as PromiseSettledResult<boolean>;
    if (outcome.status === 'rejected') {
      result.failed.push(id);
      o.log.warn({ clientId: id, err: (outcome.reason as Error).message }, 'could not retire an earlier consumer session; trying again at the next start');
    } else if (outcome.value) result.retired.push(id);
    else result.empty++;
  }
  writeState(o.stateFile, [...o.current, ...result.failed]);
  if (result.retired.length > 0) o.log.info({ retired: result.retired }, 'retired the broker sessions of consumers that no longer run, after writing what was queued in them');
  return result;
}

/** Whether `id` is a consumer of one of the distributors `live` (base ids): its base id, or the base id, a dash and its number. */
function isLiveIn(live: readonly string[], id: string): boolean {
  return live.some((base) => id === base || (id.startsWith(`${base}-`) && /^\d+$/.test(id.slice(base.length + 1))));
}

/** A session whose distributor runs again (its lease renewed): left to it, not removed. */
class TakenBack extends Error {}

/**
 * True when the session existed (and was taken over); false when there was none. `live`: the base
 * ids of the distributors running now, asked again while retiring (retireFreeSlots); throws
 * TakenBack once `clientId` is one of theirs.
 */
async function retireOne(clientId: string, o: Pick<RetirementOptions, 'connect' | 'consume' | 'filters' | 'signal'>, live?: () => readonly string[]): Promise<boolean> {
  const takenBack = () => {
    if (live && isLiveIn(live(), clientId)) throw new TakenBack(`${clientId} belongs to a distributor running again`);
  };
  const client = o.connect(clientId);
  let consumer: ReturnType<RetirementOptions['consume']> | undefined;
  try {
    const sessionPresent = await unlessStopping(
      new Promise<boolean>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('no CONNACK in time')), TIMINGS.mqttConnectTimeoutMs);
        client.once('connect', (connack) => {
          clearTimeout(timer);
          resolve(connack.sessionPresent);
        });
      }),
      o.signal,
    );
    if (!sessionPresent) {
      // The connection made one: removed again at once.
      await unlessStopping(removeSession(client), o.signal);
      return false;
    }
    let lastActivity = Date.now();
    /** PUBLISHes received on this connection */
    let received = 0;
    client.on('packetreceive', (p) => {
      if (p.cmd !== 'publish') return;
      received++;
      lastActivity = Date.now();
    });
    consumer = o.consume(client);
    // Stop collecting first; what is queued already is still delivered, and written.
    await unlessStopping(client.unsubscribeAsync([...o.filters]), o.signal);
    for (;;) {
      await new Promise((r) => setTimeout(r, TIMINGS.sessionRetireIdleMs / 4));
      if (o.signal.aborted) throw new Error('the distributor is stopping');
      takenBack();
      if (Date.now() - lastActivity < TIMINGS.sessionRetireIdleMs || consumer.inProgressSince !== undefined) continue;
      // Quiet is not empty: a broker that stalls (frozen, a long save of its database, its host
      // swapping) sends nothing for a while, and past max_inflight_messages it sends what the
      // session still holds only as the earlier messages are acknowledged. Removed then, the
      // session took that with it, acknowledged to the bridge and never written. So a round trip
      // first (the UNSUBSCRIBE again, answered whatever it finds): the broker reads it after every
      // PUBACK sent before it, and writes the messages those let go before its answer. None came
      // with the answer, and none is in progress: the session holds nothing more.
      const before = received;
      try {
        await unlessStopping(client.unsubscribeAsync([...o.filters]), o.signal);
      } catch (err) {
        // The connection lost before the answer (mqtt.js fails an UNSUBSCRIBE in flight then): no
        // answer, no proof. The client connects again by itself and the session hands over what it
        // still holds, so look again, rather than give the retirement up until the next start with
        // those messages in it.
        if (o.signal.aborted) throw err;
        continue;
      }
      if (received === before && consumer.inProgressSince === undefined) break;
    }
    takenBack();
    await unlessStopping(removeSession(client), o.signal);
    return true;
  } finally {
    consumer?.stop();
    if (!client.disconnected) {
      // A graceful end under way (a DISCONNECT the broker never closed the connection after) is
      // cut: ending again only waits with it (mqtt.js).
      if (client.disconnecting) client.stream.destroy();
      // Forced: a message still in progress is not acknowledged; the session keeps it for next time.
      await new Promise<void>((resolve) => client.end(true, {}, () => resolve()));
    }
  }
}

export interface FreeSlotOptions extends Pick<RetirementOptions, 'connect' | 'consume' | 'filters' | 'signal' | 'log'> {
  /** DISTRIBUTOR_STATE_DIR, every slot's */
  stateRoot: string;
  /** this slot's list of sessions (consumer-sessions.json) */
  stateFile: string;
  /** this run's consumer client ids */
  current: readonly string[];
  lease: Pick<StateLease, 'slot' | 'freeSlots' | 'whileFree' | 'whileLocked' | 'othersLive'>;
  /** milliseconds a slot stays free before its sessions are taken over (TIMINGS.freeSlotGraceMs) */
  graceMs: number;
  /** slot → when it was first seen free (epoch ms), kept by the caller from one look to the next */
  seen: Map<number, number>;
}

/**
 * Takes over the broker sessions of replicas gone for good. A replica scaled away (compose
 * --scale distributor=N, fewer than before) or killed on a host that does not come back releases its
 * slot, or leaves its lease to expire, and nothing claims it again: every other replica keeps its
 * own slot at a restart. Its sessions stay in the share group, and Mosquitto deals them their share
 * of every message for as long as they exist (persistent_client_expiration, 7 days): messages the
 * broker acknowledged to the bridge that no distributor writes. So each replica looks now and then
 * (TIMINGS.freeSlotCheckMs) at the other slots; one free for `graceMs` (longer than a restart
 * takes) has its list of sessions moved into this slot's, under the lock claims take, and its
 * sessions retired as at a start: taken over, written, removed. A crash meanwhile leaves them in
 * this slot's list, retired at the next start. A session whose distributor runs again meanwhile
 * (its lease renewed: one paused past the expiry, or restarted late) is left to it, and its id
 * listed again in the slot it came from.
 */
export async function retireFreeSlots(o: FreeSlotOptions): Promise<RetirementResult> {
  const result: RetirementResult = { retired: [], empty: 0, failed: [] };
  // This run's own ids, listed again where another took them away: it did so while this one was
  // paused past its lease's expiry (its slot free), and without them here a successor with another
  // client id (a recreated container) would never retire the sessions this run leaves.
  const own = readState(o.stateFile);
  if (o.current.some((id) => !own.includes(id))) {
    o.lease.whileLocked(o.lease.slot, () => writeState(o.stateFile, [...new Set([...readState(o.stateFile, o.log), ...o.current])]));
  }
  const now = Date.now();
  const free = new Set(o.lease.freeSlots());
  for (const slot of o.seen.keys()) if (!free.has(slot)) o.seen.delete(slot);
  for (const slot of free) if (!o.seen.has(slot)) o.seen.set(slot, now);
  const mine = new Set(o.current);
  for (const [slot, since] of o.seen) {
    if (now - since < o.graceMs || o.signal.aborted) continue;
    const listOf = (dir: string) => join(dir, 'consumer-sessions.json');
    // Looked at without the lock first (quietly: a damaged list is told when taken): most free
    // slots were never used, or were taken over already, and list nothing.
    let listed: string[];
    try {
      listed = readState(listOf(slotDir(o.stateRoot, slot)));
    } catch (err) {
      // Another slot's list that cannot be read holds back that slot only: the others are taken over.
      o.log.warn(
        { code: isFieldStreamError(err) ? err.code : undefined, slot, err: (err as Error).message },
        "cannot read the list of consumer sessions of a free slot: its sessions are taken over once it can be read",
      );
      continue;
    }
    if (listed.length === 0) continue;
    const moved = o.lease.whileFree(slot, (dir) => {
      const theirs = readState(listOf(dir), o.log);
      if (theirs.length === 0) return [];
      const live = o.lease.othersLive();
      // Ours (a swap of slots listed them there) and a live replica's (its own slot lists them) stay.
      const ids = theirs.filter((id) => !mine.has(id) && !isLiveIn(live, id));
      writeState(o.stateFile, [...new Set([...readState(o.stateFile, o.log), ...ids])]);
      writeState(listOf(dir), []);
      return ids;
    });
    if (!moved || moved.length === 0) continue;
    o.log.info({ slot, sessions: moved }, 'taking over the broker sessions of a replica whose slot of the state folder stayed free');
    const outcomes = await Promise.allSettled(moved.map((id) => (o.signal.aborted ? Promise.reject(new Error('the distributor is stopping')) : retireOne(id, o, () => o.lease.othersLive()))));
    const back: string[] = [];
    const gone: string[] = [];
    const liveNow = o.lease.othersLive();
    for (const [i, id] of moved.entries()) {
      const outcome = outcomes[i] as PromiseSettledResult<boolean>;
      if (outcome.status === 'fulfilled') {
        if (outcome.value) result.retired.push(id);
        else result.empty++;
        gone.push(id);
      } else if (outcome.reason instanceof TakenBack || isLiveIn(liveNow, id)) {
        // Its distributor took the session back (a connection of ours it took over fails what was in flight on it).
        back.push(id);
      } else {
        result.failed.push(id);
        o.log.warn({ clientId: id, err: (outcome.reason as Error).message }, 'could not retire the broker session of a replica gone; trying again at the next start');
      }
    }
    const done = new Set([...gone, ...back]);
    writeState(o.stateFile, readState(o.stateFile, o.log).filter((id) => !done.has(id) || mine.has(id)));
    if (back.length > 0) {
      o.lease.whileLocked(slot, (dir) => writeState(listOf(dir), [...new Set([...readState(listOf(dir), o.log), ...back])]));
      o.log.info({ slot, sessions: back }, 'left the broker sessions of a replica running again to it');
    }
  }
  if (result.retired.length > 0) o.log.info({ retired: result.retired }, 'retired the broker sessions of a replica gone, after writing what was queued in them');
  return result;
}

/** Session expiry 0 at DISCONNECT: the broker removes the session (MQTT 5 §3.14.2.2.2). */
function removeSession(client: MqttClient): Promise<void> {
  return new Promise<void>((resolve) => client.end(false, { properties: { sessionExpiryInterval: 0 } }, () => resolve()));
}

/**
 * `p`, unless the distributor stops first: a broker that stalls (frozen, or its host gone without a
 * word) answers neither an UNSUBSCRIBE nor, after a DISCONNECT, closes the connection, and the
 * distributor's stop waits for this retirement (distributor.ts close): it waited for ever.
 */
function unlessStopping<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(new Error('the distributor is stopping'));
  return new Promise<T>((resolve, reject) => {
    const stop = () => reject(new Error('the distributor is stopping'));
    signal.addEventListener('abort', stop, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', stop);
        resolve(v);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', stop);
        reject(err);
      },
    );
  });
}

/**
 * The ids `file` lists; [] when it is missing or damaged (said in `log`, when given). One that is
 * there but cannot be read (EIO, EMFILE, EACCES, a folder in its place) throws
 * DISTRIBUTOR_STATE_UNREADABLE: taken for an empty list, it was rewritten without the ids it held,
 * and their sessions, never retired, kept collecting their share of the messages for good.
 */
function readState(file: string, log?: Logger): string[] {
  let text: string;
  try {
    text = readRegularFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return [];
    throw new FieldStreamError(
      'DISTRIBUTOR_STATE_UNREADABLE',
      `The list of earlier consumer sessions (${file}) cannot be read: ${(err as Error).message}. It is left as it is; its sessions are retired once it can be read.`,
      { path: file },
      { cause: err },
    );
  }
  try {
    const parsed = ConsumerSessionsSchema.safeParse(JSON.parse(text));
    if (parsed.success) return parsed.data.clientIds;
  } catch {
    // falls through: not JSON
  }
  log?.warn({ file }, 'the file of earlier consumer sessions is damaged; only the numbered ones past the consumers are retired');
  return [];
}

/**
 * Written aside, synced, renamed and its folder synced (durable-fs.ts): the list must outlive a power
 * cut, not only a killed process. Lost, its sessions are never retired, and each keeps collecting
 * its share of the messages, which nothing takes.
 */
function writeState(file: string, clientIds: string[]): void {
  makeDirDurablySync(dirname(file));
  replaceFileDurablySync(file, JSON.stringify({ clientIds }) + '\n', 0o600);
}
