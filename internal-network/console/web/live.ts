import type { ServerResponse } from 'node:http';
import { FieldStreamError } from '../../../shared/errors.ts';
import { CONSOLE } from '../../../shared/limits.ts';
import type { Logger } from '../../../shared/logger.ts';
import type { Fleet } from '../fleet/fleet.ts';
import type { PipelineView } from '../pipeline/pipeline-view.ts';

/** What a device page is sent (docs/console.md): the fleet's view of it and its commands. */
export type DeviceDetail = NonNullable<ReturnType<Fleet['detail']>> & { commands: unknown[] };

export interface LiveSources {
  fleet: Fleet;
  pipeline: () => PipelineView;
  /** a device's page, with its commands read as the logged-in user */
  deviceDetail: (id: string, token: string) => Promise<DeviceDetail | undefined>;
}

interface Stream {
  res: ServerResponse;
  /** the fleet version, security and anomaly sequence numbers this browser has seen */
  version: number;
  securitySeq: number;
  anomalySeq: number;
  device: { id: string; token: string; sent: string } | undefined;
  busy: boolean;
}

/**
 * Server-sent events (HTML Living Standard, "Server-sent events") to every open console page: a
 * snapshot on connect, then at most one update per CONSOLE.liveFlushMs with only what changed, so
 * 10,000 devices cost a browser one coalesced update a second, not one per reading. A browser that
 * does not keep up (CONSOLE.liveMaxBufferedBytes unread) is disconnected; its EventSource reconnects
 * to a fresh snapshot.
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

  /** Takes over the response: headers, the snapshot, then updates until the browser goes. */
  async open(res: ServerResponse, device: { id: string; token: string } | undefined): Promise<void> {
    if (this.streams.size >= CONSOLE.maxLiveStreams) throw new FieldStreamError('CONSOLE_TOO_MANY_STREAMS');
    const { fleet } = this.s;
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      connection: 'keep-alive',
      // A buffering proxy would hold the updates back.
      'x-accel-buffering': 'no',
    });
    const stream: Stream = { res, version: fleet.currentVersion, securitySeq: fleet.security.seq, anomalySeq: fleet.anomalies.seq, device: undefined, busy: false };
    this.send(stream, 'snapshot', {
      devices: fleet.rows(),
      security: fleet.securitySummary(),
      pipeline: this.s.pipeline(),
      anomalies: fleet.anomalies.newest(CONSOLE.snapshotRecent),
    });
    this.streams.add(stream);
    res.once('close', () => this.streams.delete(stream));
    if (device) {
      stream.device = { ...device, sent: '' };
      await this.sendDevice(stream);
    }
  }

  close(): void {
    for (const t of this.timers) clearInterval(t);
    for (const s of this.streams) s.res.end();
    this.streams.clear();
  }

  private flush(): void {
    const { fleet } = this.s;
    for (const stream of this.streams) {
      const changed = fleet.changedSince(stream.version);
      stream.version = changed.version;
      if (changed.rows.length > 0) this.send(stream, 'devices', { rows: changed.rows });
      const security = fleet.security.since(stream.securitySeq);
      stream.securitySeq = fleet.security.seq;
      if (security.length > 0) this.send(stream, 'security', { events: security.reverse(), summary: fleet.securitySummary() });
      const anomalies = fleet.anomalies.since(stream.anomalySeq);
      stream.anomalySeq = fleet.anomalies.seq;
      if (anomalies.length > 0) this.send(stream, 'anomalies', { anomalies: anomalies.reverse() });
      if (stream.device && !stream.busy) void this.sendDevice(stream);
    }
  }

  /** The device page's data when it changed (its commands are read again each time: their states move on). */
  private async sendDevice(stream: Stream): Promise<void> {
    const d = stream.device;
    if (!d) return;
    stream.busy = true;
    try {
      const detail = await this.s.deviceDetail(d.id, d.token);
      const text = JSON.stringify(detail ?? null);
      if (text !== d.sent && detail) {
        d.sent = text;
        this.write(stream, 'device', text);
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
    for (const s of this.streams) if (!s.res.destroyed) s.res.write(': keepalive\n\n');
  }

  private send(stream: Stream, event: string, data: unknown): void {
    this.write(stream, event, JSON.stringify(data));
  }

  private write(stream: Stream, event: string, text: string): void {
    const { res } = stream;
    if (res.destroyed) return;
    if (res.writableLength > CONSOLE.liveMaxBufferedBytes) {
      this.log.warn({ buffered: res.writableLength }, 'live stream not read: disconnected (the browser reconnects to a fresh snapshot)');
      res.destroy();
      this.streams.delete(stream);
      return;
    }
    // JSON.stringify leaves no raw newline in `text`, so one data line carries it (one event).
    res.write(`event: ${event}\ndata: ${text}\n\n`);
  }
}
