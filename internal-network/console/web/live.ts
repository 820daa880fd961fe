import type { ServerResponse } from 'node:http';
import { FieldStreamError } from '../../../shared/errors.ts';
import { CONSOLE } from '../../../shared/limits.ts';
import type { Logger } from '../../../shared/logger.ts';
import type { Fleet } from '../fleet/fleet.ts';
import { newestFirst, type SecurityCursor } from '../fleet/security-log.ts';
import type { PipelineView } from '../pipeline/pipeline-view.ts';
import { deviceEventText } from './live-device.ts';
import { boundedEvents, liveRow, securityEvents, snapshotTexts } from './live-snapshot.ts';

/** What a device page is sent (docs/console.md): the fleet's view of it and its commands. */
type FleetDetail = NonNullable<ReturnType<Fleet['detail']>>;
/** A device's page: the fleet's detail, its commands as the command API lists them, and in `totals`
 * how many commands it keeps of the device, when it says (listed or not). `commandsUnread`: the
 * command API's code (or the console's) when the listing failed, `commands` then empty for want of
 * an answer, not because the device has none. */
export type DeviceDetail = Omit<FleetDetail, 'totals'> & { commands: unknown[]; commandsUnread?: string; totals: FleetDetail['totals'] & { commands?: number } };

export interface LiveSources {
  fleet: Fleet;
  pipeline: () => PipelineView;
  /** a device's page, with its commands read as the logged-in user */
  deviceDetail: (id: string, token: string) => Promise<DeviceDetail | undefined>;
  /** whether a session is still there (not logged out, expired or dropped from the store) */
  sessionAlive: (sessionId: string) => boolean;
}

/** The login a stream was opened by: the stream lasts no longer than it. */
export interface StreamOwner {
  sessionId: string;
  /** the logged-in user's name (one credential): streams are counted per user, over all their logins */
  user: string;
  /** epoch ms at which the login ends (CONSOLE_SESSION_TTL_S after it) */
  expiresAt: number;
}

interface Stream {
  res: ServerResponse;
  owner: StreamOwner;
  /** the fleet version, security and anomaly sequence numbers this browser has seen */
  version: number;
  security: SecurityCursor;
  anomalySeq: number;
  device: { id: string; token: string; sent: string } | undefined;
  busy: boolean;
  /** its snapshot is still being written: nothing else goes among its parts (what changed follows its end) */
  inSnapshot: boolean;
}

/** True once the response has handed its buffer to the socket (drain); false when it is gone
 * (close) or has not within `timeoutMs` (its reader stopped reading). */
function drained(res: ServerResponse, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const done = (ok: boolean) => {
      clearTimeout(timer);
      res.off('drain', onDrain);
      res.off('close', onClose);
      resolve(ok);
    };
    const onDrain = () => done(true);
    const onClose = () => done(false);
    const timer = setTimeout(() => done(false), timeoutMs);
    res.on('drain', onDrain);
    res.on('close', onClose);
  });
}

/**
 * Server-sent events (HTML Living Standard, "Server-sent events") to every open console page: a
 * snapshot on connect, then at most one update per CONSOLE.liveFlushMs with only what changed, so
 * 10,000 devices cost a browser one coalesced update a second, not one per reading. A browser that
 * does not keep up (CONSOLE.liveMaxBufferedBytes unread) is disconnected; its EventSource reconnects
 * to a fresh snapshot.
 *
 * A fleet of more than one part (CONSOLE.liveSnapshotRowsPerEvent devices, or
 * CONSOLE.liveSnapshotPartMaxBytes of rows, whichever comes first; see live-snapshot.ts) gets its
 * snapshot in parts, one event each (`snapshot-part`, then `snapshot-end` with the last part and the
 * rest), each written once the socket has taken the one before, when the page asked for them
 * (`?parts=1`). Every event of such a stream is within that budget, the rest of the snapshot
 * (security, anomalies) and every update after it included (see open() and flush()). 100,000 devices are some 20 MB: written at once, more than the
 * bound, so a browser on a slow link was disconnected as too slow; sent as one event, even written in
 * pieces, the page heard nothing from its stream until the last byte came, and on a link slower than
 * some 1.3 MB/s took it for dead (its 15 s without a word) and reconnected to a new snapshot, for
 * ever. A fleet that fits in one event keeps the single `snapshot` event. A page that did not ask
 * (one of an earlier version, left open in a tab across an upgrade, knows `snapshot` only) gets the
 * single `snapshot` event whatever the fleet, written in the same pieces: sent parts, it never had a
 * fleet and reconnected for ever; it cannot be told to reload (nothing it understands does that),
 * so it is served as it was before the parts, until it is reloaded. Meanwhile the
 * stream gets nothing else (its cursors stay where the snapshot was taken, so what changed meanwhile
 * follows its end, coalesced, and a page applying the parts at the end applies no update before
 * the rows it changes), and holds one part in memory; the bound applies from then on. A part the
 * socket has not taken within CONSOLE.liveDrainTimeoutMs ends the stream (its connection
 * destroyed, and logged): a browser that stopped reading mid-snapshot would otherwise hold its
 * place, its socket and the snapshot's rows until its login expired. That deadline is shorter than
 * the page's silence (SILENCE_MS, public/api.js), and a part small enough to come within it at
 * CONSOLE.liveSlowestLinkBytesPerSecond: the console, not a page reconnecting to a fresh snapshot at
 * every part, decides when a link is too slow.
 *
 * Each stream belongs to the login that opened it and ends with it (logout, expiry, the session
 * dropped): it reads the device page with that user's token, which must not outlive the login. An
 * ended stream no longer counts against the limits below, so it must hold nothing either: one whose
 * browser stopped reading has its connection destroyed rather than ended (see end()).
 * One user (one credential, all its logins together) holds at most CONSOLE.maxLiveStreamsPerUser
 * streams: counted per login, a user would only have to log in again for ten more.
 */
export class LiveHub {
  private readonly streams = new Set<Stream>();
  private readonly timers: NodeJS.Timeout[] = [];

  constructor(
    private readonly s: LiveSources,
    private readonly log: Logger,
  ) {
    this.timers.push(setInterval(() => this.flush(), CONSOLE.liveFlushMs));
    this.timers.push(setInterval(() => this.broadcast('pipeline', this.s.pipeline()), CONSOLE.pipelinePollMs));
    this.timers.push(setInterval(() => this.keepalive(), CONSOLE.liveKeepaliveMs));
  }

  get size(): number {
    return this.streams.size;
  }

  /** The streams a user holds open, over all their logins. */
  countFor(user: string): number {
    let n = 0;
    for (const s of this.streams) if (s.owner.user === user) n++;
    return n;
  }

  /** Takes over the response: headers, the snapshot, then updates until the browser or the login goes.
   * `parts`: the page asked for its snapshot in parts (`?parts=1` or higher, routes.ts); without, one `snapshot` event. */
  async open(res: ServerResponse, owner: StreamOwner, device: { id: string; token: string } | undefined, parts = false): Promise<void> {
    if (this.streams.size >= CONSOLE.maxLiveStreams) throw new FieldStreamError('CONSOLE_TOO_MANY_STREAMS');
    if (this.countFor(owner.user) >= CONSOLE.maxLiveStreamsPerUser) throw new FieldStreamError('CONSOLE_TOO_MANY_USER_STREAMS');
    const { fleet } = this.s;
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      connection: 'keep-alive',
      // A buffering proxy would hold the updates back.
      'x-accel-buffering': 'no',
    });
    const stream: Stream = { res, owner, version: fleet.currentVersion, security: fleet.security.cursor(), anomalySeq: fleet.anomalies.seq, device: undefined, busy: false, inSnapshot: true };
    const rows = fleet.rows();
    const pipeline = this.s.pipeline();
    const anomalies = fleet.anomalies.newest(CONSOLE.snapshotRecent);
    let rest: Record<string, unknown>;
    let after: string[] = [];
    if (parts) {
      // Every event within the budget: of the per-device counts those of the devices with most
      // events (and how many have any), the newest security events and anomalies (200 of each kind
      // of ids and names of the longest: 100 KB and more) in `security` and `anomalies` events of
      // their own after the end, as the updates (the page puts them before what it holds, and so
      // holds them newest first). They belong to the snapshot: nothing else goes before them.
      const security = fleet.securitySummary(CONSOLE.liveSecurityTopDevices);
      rest = { security: { ...security, recent: [], reported: [] }, pipeline, anomalies: [], anomaliesTotal: fleet.anomalies.seq };
      const json = (items: readonly unknown[]) => items.map((x) => JSON.stringify(x));
      after = [
        ...boundedEvents('security', 'events', json(newestFirst(security.recent, security.reported)), { newestFirst: true }),
        ...boundedEvents('anomalies', 'anomalies', json(anomalies), { newestFirst: true, members: { total: fleet.anomalies.seq } }),
      ];
    } else rest = { security: fleet.securitySummary(), pipeline, anomalies, anomaliesTotal: fleet.anomalies.seq };
    // Counted from now (the limits above), and ended by a logout while its snapshot is written.
    this.streams.add(stream);
    res.once('close', () => this.streams.delete(stream));
    if (!(await this.writeSnapshot(stream, [...snapshotTexts(rows, rest, parts), ...after]))) return;
    stream.inSnapshot = false;
    if (device) {
      stream.device = { ...device, sent: '' };
      await this.sendDevice(stream);
    }
  }

  /** The snapshot, `{devices, total, security, pipeline, anomalies}`, in the pieces of
   * snapshotTexts (parts, or one `snapshot` event) and the events that follow its end, each
   * written once the socket has taken the one before. False: the stream ended meanwhile. */
  private async writeSnapshot(stream: Stream, texts: Iterable<string>): Promise<boolean> {
    const { res } = stream;
    const gone = () => res.destroyed || res.writableEnded || !this.streams.has(stream);
    const put = async (text: string): Promise<boolean> => {
      if (gone()) return false;
      if (!res.write(text) && !(await drained(res, CONSOLE.liveDrainTimeoutMs))) {
        if (this.streams.has(stream)) {
          this.log.warn({ buffered: res.writableLength, timeoutMs: CONSOLE.liveDrainTimeoutMs }, 'live stream took no part of its snapshot in time (a link too slow, or a browser not reading): disconnected (a browser still there reconnects to a fresh snapshot)');
          this.end(stream);
        }
        return false;
      }
      return !gone();
    };
    for (const text of texts) if (!(await put(text))) return false;
    return true;
  }

  /** Ends the streams of a login (at its logout), at once rather than at the next flush. */
  endSession(sessionId: string): void {
    for (const s of this.streams) if (s.owner.sessionId === sessionId) this.end(s);
  }

  close(): void {
    for (const t of this.timers) clearInterval(t);
    for (const s of this.streams) this.end(s);
  }

  /**
   * Ends a stream. A browser reading it gets a clean end of the response: its EventSource
   * reconnects, and is refused (401) without a login. One that stopped reading (bytes unsent, or
   * its snapshot half-sent) would never take that end: its connection is destroyed at once, as
   * the console sets no timeout on a stream, and the socket, its unsent bytes and a snapshot
   * waiting to go on (its rows) stayed for ever, no longer counted against the stream limits (a
   * viewer could log in, open ten streams, stop reading, log out, and again).
   */
  private end(stream: Stream): void {
    this.streams.delete(stream);
    const { res } = stream;
    if (res.destroyed || res.writableFinished) return;
    if (stream.inSnapshot || res.writableLength > 0) {
      res.destroy();
      return;
    }
    if (!res.writableEnded) res.end();
    // The end's own few bytes may still meet a socket that stopped taking any: as long as a part
    // of a snapshot, then let go all the same.
    const timer = setTimeout(() => res.destroy(), CONSOLE.liveDrainTimeoutMs).unref();
    res.once('close', () => clearTimeout(timer));
  }

  private flush(): void {
    const { fleet } = this.s;
    const now = Date.now();
    // The rows changed since a version, as events, made once per flush for every stream at that
    // version (most are at the same one): each stream made them again, every row bounded and
    // serialised once per browser.
    const updates = new Map<number, { version: number; texts: string[] }>();
    for (const stream of this.streams) {
      // Checked every flush: a login that ended (expired, or its session dropped) sends nothing more.
      if (now >= stream.owner.expiresAt || !this.s.sessionAlive(stream.owner.sessionId)) {
        this.end(stream);
        continue;
      }
      if (stream.inSnapshot) continue;
      let update = updates.get(stream.version);
      if (!update) {
        const changed = fleet.changedSince(stream.version);
        // Each row bounded as in the snapshot (liveRow): what the page shows of it, not megabytes. A
        // busy fleet's update (every row) in events of a snapshot part's bytes at most: as one, it
        // was megabytes, longer on a slow link than the page waits for a word from its stream. Every
        // page applies `devices` events one after the other (store.js), so several are one update.
        update = { version: changed.version, texts: [...boundedEvents('devices', 'rows', changed.rows.map((r) => JSON.stringify(liveRow(r))))] };
        updates.set(stream.version, update);
      }
      stream.version = update.version;
      for (const text of update.texts) this.writeEvent(stream, text);
      // The new events of both sources and only the counts that changed: every device's count again
      // at every update was the whole fleet's worth to every browser each second under attack.
      const security = fleet.security.since(stream.security);
      stream.security = fleet.security.cursor();
      // Each within the budget too (an attack across the fleet changes every device's count).
      if (security) for (const text of securityEvents(security)) this.writeEvent(stream, text);
      const anomalies = fleet.anomalies.since(stream.anomalySeq);
      stream.anomalySeq = fleet.anomalies.seq;
      // With how many the fleet's list has had (`total`): a page holds the newest only, and says how many more.
      for (const text of boundedEvents('anomalies', 'anomalies', anomalies.reverse().map((a) => JSON.stringify(a)), { newestFirst: true, members: { total: fleet.anomalies.seq } })) this.writeEvent(stream, text);
      if (stream.device && !stream.busy) void this.sendDevice(stream);
    }
  }

  /** The device page's data when it changed (its commands are read again each time: their states move on),
   * bounded (deviceEventText). */
  private async sendDevice(stream: Stream): Promise<void> {
    const d = stream.device;
    if (!d || !this.streams.has(stream)) return;
    stream.busy = true;
    try {
      const detail = await this.s.deviceDetail(d.id, d.token);
      // Within the budget of every event of the stream (live-device.ts), as its whole was megabytes.
      const text = detail ? deviceEventText(detail) : '';
      // The stream may have ended while the detail was read: nothing is written after its end.
      if (text !== d.sent && detail && this.streams.has(stream)) {
        d.sent = text;
        this.writeEvent(stream, text);
      }
    } catch (err) {
      this.log.warn({ err, deviceId: d.id }, 'device page update failed');
    } finally {
      stream.busy = false;
    }
  }

  private broadcast(event: string, data: unknown): void {
    if (this.streams.size === 0) return;
    const text = JSON.stringify(data);
    for (const s of this.streams) this.write(s, event, text);
  }

  private keepalive(): void {
    for (const s of this.streams) if (!s.inSnapshot && !s.res.destroyed && !s.res.writableEnded) s.res.write(': keepalive\n\n');
  }

  private write(stream: Stream, event: string, text: string): void {
    // JSON.stringify leaves no raw newline in `text`, so one data line carries it (one event).
    this.writeEvent(stream, `event: ${event}\ndata: ${text}\n\n`);
  }

  /** One whole event (its `event:` and `data:` lines and the blank line after them). */
  private writeEvent(stream: Stream, event: string): void {
    const { res } = stream;
    // A pipeline view due while the snapshot is written is skipped: the next one follows.
    if (res.destroyed || res.writableEnded || stream.inSnapshot) return;
    if (res.writableLength > CONSOLE.liveMaxBufferedBytes) {
      this.log.warn({ buffered: res.writableLength }, 'live stream not read: disconnected (the browser reconnects to a fresh snapshot)');
      res.destroy();
      this.streams.delete(stream);
      return;
    }
    res.write(event);
  }
}
