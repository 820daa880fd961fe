import { z } from 'zod';
import { FieldStreamError } from '../../../../shared/errors.ts';
import { LIMITS } from '../../../../shared/limits.ts';

/**
 * The STATE payload of a Sparkplug 3.0.0 host application (§5.3 "Host Application Session
 * Establishment" and "Sparkplug Host Application Session Establishment/Termination",
 * tck-id-operational-behavior-host-application-connect-birth-payload and -death-payload): UTF-8
 * JSON with `online` (boolean) and `timestamp` (milliseconds since the epoch, the same value as
 * in the MQTT CONNECT's will of that connection). Other keys are allowed and ignored.
 */
export const StatePayloadSchema = z.object({
  online: z.boolean(),
  timestamp: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
});
export type StatePayload = z.infer<typeof StatePayloadSchema>;

export interface PeerHost {
  online: boolean;
  /** the `timestamp` of its last STATE taken: its connection's */
  timestamp: number;
  /** when that STATE arrived, on our clock */
  seenAt: number;
}

export type StateOutcome =
  /** our own host id's STATE (our birth, our will, or our death at a clean stop) */
  | { kind: 'own'; state: StatePayload }
  /** another host went online or offline (or is seen for the first time) */
  | { kind: 'changed'; hostId: string; previous: PeerHost | undefined; current: PeerHost }
  /** the same state again (a retained STATE delivered at each of our connections) */
  | { kind: 'same'; hostId: string }
  /** a STATE older than the last one seen of that host: ignored */
  | { kind: 'older'; hostId: string; timestamp: number; last: number }
  /** an empty payload: the retained STATE was removed from the broker; the host is forgotten */
  | { kind: 'cleared'; hostId: string }
  /** a host not yet known while LIMITS.sparkplugMaxPeerHosts are: not kept */
  | { kind: 'full'; hostId: string };

/**
 * The other host applications on the broker, as their STATE messages say (`spBv1.0/STATE/+`).
 * An edge node whose primary host goes offline stops publishing to this broker (§5.10 "Primary
 * Host Application STATE in Multiple MQTT Server Topologies"), so who else is online explains
 * what the input sees. Ordering follows the spec's rule for edge nodes (§5.5 "Edge Node Session
 * Termination", tck-id-operational-behavior-edge-node-termination-host-offline and
 * -host-offline-timestamp; and the note of "Sparkplug Host Application Session Termination"): a
 * STATE whose timestamp is older than the last one taken of that host is the will of an older
 * connection, delivered late, and is ignored; one with the same or a newer timestamp counts.
 * Pure: no I/O, the time passed in.
 */
export class PeerHosts {
  private readonly hosts = new Map<string, PeerHost>();

  constructor(
    /** our own host id (FIELD_SPARKPLUG_HOST_ID): its STATE is never taken for a peer's */
    private readonly ownHostId: string | undefined,
    private readonly maxHosts: number = LIMITS.sparkplugMaxPeerHosts,
  ) {}

  get(hostId: string): Readonly<PeerHost> | undefined {
    return this.hosts.get(hostId);
  }

  /** The peers known, by host id. */
  list(): Array<{ hostId: string } & PeerHost> {
    return [...this.hosts].map(([hostId, h]) => ({ hostId, ...h }));
  }

  count(online: boolean): number {
    let n = 0;
    for (const h of this.hosts.values()) if (h.online === online) n++;
    return n;
  }

  /** Takes one STATE message; throws SPARKPLUG_STATE_INVALID for a payload that is not one. */
  handle(hostId: string, bytes: Uint8Array, now: number): StateOutcome {
    if (bytes.length === 0) {
      // A zero-length retained publish is how a retained message is deleted (MQTT 3.1.1 §3.3.1.3).
      if (hostId !== this.ownHostId) this.hosts.delete(hostId);
      return { kind: 'cleared', hostId };
    }
    const state = parseState(bytes);
    if (hostId === this.ownHostId) return { kind: 'own', state };
    const previous = this.hosts.get(hostId);
    if (previous && state.timestamp < previous.timestamp) return { kind: 'older', hostId, timestamp: state.timestamp, last: previous.timestamp };
    if (!previous && this.hosts.size >= this.maxHosts) return { kind: 'full', hostId };
    const current: PeerHost = { online: state.online, timestamp: state.timestamp, seenAt: now };
    this.hosts.set(hostId, current);
    if (previous && previous.online === current.online && previous.timestamp === current.timestamp) return { kind: 'same', hostId };
    return { kind: 'changed', hostId, previous, current };
  }
}

export function parseState(bytes: Uint8Array): StatePayload {
  if (bytes.length > LIMITS.sparkplugStateMaxBytes) {
    throw new FieldStreamError('SPARKPLUG_STATE_INVALID', `STATE payload of ${bytes.length} bytes, more than ${LIMITS.sparkplugStateMaxBytes}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (err) {
    throw new FieldStreamError('SPARKPLUG_STATE_INVALID', `STATE payload is not UTF-8 JSON: ${(err as Error).message.slice(0, 200)}`);
  }
  const r = StatePayloadSchema.safeParse(json);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new FieldStreamError('SPARKPLUG_STATE_INVALID', `STATE payload is not {"online":boolean,"timestamp":number}: ${issue ? `${issue.path.join('.') || 'payload'} ${issue.message}` : 'invalid'}`);
  }
  return r.data;
}
