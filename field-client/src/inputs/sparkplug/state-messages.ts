import { FieldStreamError, isFieldStreamError } from '../../../../shared/errors.ts';
import type { Logger } from '../../../../shared/logger.ts';
import type { SessionOutcomes } from './outcomes.ts';
import type { SparkplugSessionOptions, SparkplugStats } from './session.ts';
import type { PeerHosts } from './state.ts';

// The STATE messages a Sparkplug host session (session.ts) takes: the other host applications'
// kept (state.ts), and our own answered when it says we are offline.

/** What takeState needs of the session. */
export interface StateTaker {
  /** the other host applications, by their STATE */
  readonly peers: PeerHosts;
  readonly stats: SparkplugStats;
  readonly log: Logger;
  /** counts and logs a refused STATE */
  readonly outcomes: Pick<SessionOutcomes, 'refuse'>;
  /** our own host id, and what answers our STATE delivered offline or removed */
  readonly options: Pick<SparkplugSessionOptions, 'hostId' | 'onOwnOffline'>;
}

/**
 * Our own retained STATE replaced by one that is not a STATE (a 2.2 host's `OFFLINE` under our id,
 * other JSON, a packet too large to read): edge nodes waiting for their primary host read it as not
 * online and keep away while it stays. Answered as ours delivered offline or removed is (takeState).
 */
export function ownStateUnreadable(h: StateTaker, hostId: string): void {
  if (hostId === h.options.hostId) h.options.onOwnOffline?.(undefined);
}

/** A host application's STATE (§5.3 / "Sparkplug Host Application Session Establishment"). */
export function takeState(h: StateTaker, hostId: string, topic: string, bytes: Uint8Array, now: number): void {
  let r;
  try {
    r = h.peers.handle(hostId, bytes, now);
  } catch (err) {
    h.outcomes.refuse(isFieldStreamError(err) ? err : new FieldStreamError('SPARKPLUG_STATE_INVALID', (err as Error).message), topic);
    ownStateUnreadable(h, hostId);
    return;
  }
  h.stats.accepted++;
  switch (r.kind) {
    case 'own':
      // tck-id-message-flow-hid-sparkplug-state-message-delivered: our own STATE delivered as
      // offline (the will of an older connection, retained after our birth) must be answered
      // at once with online=true, or edge nodes waiting for their primary host stay away.
      if (!r.state.online) h.options.onOwnOffline?.(r.state);
      return;
    case 'changed':
      h.log.info(
        { hostId, online: r.current.online, timestamp: r.current.timestamp, ...(r.previous ? { wasOnline: r.previous.online } : {}) },
        `Sparkplug host application ${hostId} is ${r.current.online ? 'online' : 'offline'}`,
      );
      return;
    case 'older':
      h.log.debug({ hostId, timestamp: r.timestamp, last: r.last }, 'Sparkplug STATE older than the last one of its host ignored');
      return;
    case 'cleared':
      h.log.info({ hostId }, `Sparkplug host application ${hostId}: its retained STATE was removed`);
      // Ours removed (someone's empty retained publish on our topic): an edge node connecting from
      // now on finds no STATE of its primary host and waits for it before its NBIRTH
      // (tck-id-operational-behavior-edge-node-birth-sequence-wait), for as long as we stay
      // connected. Answered as our STATE delivered offline is (case 'own').
      if (hostId === h.options.hostId) h.options.onOwnOffline?.(undefined);
      return;
    case 'full':
      h.stats.peerHostsNotKept++;
      return;
    case 'same':
      return;
  }
}
