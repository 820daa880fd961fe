import { z } from 'zod';
import { parseExposition, sumOf, type Sample } from '../../../shared/metrics/exposition.ts';
import { CONSOLE } from '../../../shared/limits.ts';
import type { Logger } from '../../../shared/logger.ts';

export interface PipelineView {
  at: number;
  /** `service`: what its /readyz calls itself (distributor, command-api, ...); `checks`: every check it names
   * (absent from a service of a version before they were named); `failing`: the checks it names as failing */
  services: Array<{ name: string; ready: boolean | null; detail: string; service?: string; checks?: string[]; failing?: string[] }>;
  brokers: Array<{ name: string; up: boolean | null }>;
  bridgeConnected: boolean | null;
  readingsPerSecond: number | null;
  writeFailures: number | null;
  deadLetters: number | null;
  feedDropped: number | null;
  /** stored-feed messages this console refused (no valid MAC, replayed, stale): forged ones come from the DMZ */
  feedRefused: number | null;
  /** whether this console is connected to the internal broker, where the stored feed comes from
   * (null: not told). Not connected, it hears nothing of the fleet, however well the rest runs. */
  feedConnected: boolean | null;
  /** epoch ms of the last look at which it was connected (its start if none), while it is not; else null */
  feedDownSince: number | null;
}

/** What a service's /readyz answers (shared/metrics/server.ts). */
const ReadyzSchema = z.object({ status: z.string(), service: z.string().max(100).optional(), checks: z.array(z.string().max(100)).max(50).optional(), failing: z.array(z.string().max(100)).max(50).optional() });

/**
 * The pipeline page's view, from the services' own /readyz and /metrics (CONSOLE_PIPELINE_TARGETS):
 * the distributor's counters, the broker exporter's brokers and bridge. A service that does not
 * answer shows as not ready, with why; a figure no service gives is null, not 0.
 */
export class PipelinePoller {
  private view: PipelineView = { at: 0, services: [], brokers: [], bridgeConnected: null, readingsPerSecond: null, writeFailures: null, deadLetters: null, feedDropped: null, feedRefused: null, feedConnected: null, feedDownSince: null };
  /** the last look at which the console's feed was connected (its start before any) */
  private feedLastConnected = Date.now();
  /** each target's counter of readings written at the last look that gave it, by the target's index */
  private readonly last = new Map<number, { at: number; written: number }>();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> = Promise.resolve();

  constructor(
    private readonly targets: ReadonlyArray<{ name: string; url: string }>,
    private readonly log: Logger,
    /** the console's own figures: known here, not read from a service's /metrics */
    private readonly own: () => { feedRefused: number; feedConnected?: boolean } | undefined = () => undefined,
  ) {}

  start(): void {
    let busy = false;
    const poll = () => {
      // One look at a time: a look waiting for a slow service (its two requests may take longer
      // than the interval) is not joined by the next, which asked that service ever more at once and
      // could write an older view over a newer one. The interval's look comes after it, not beside.
      if (busy) return;
      busy = true;
      this.running = this.poll().then(
        () => undefined,
        (err: unknown) => this.log.warn({ err }, 'pipeline poll failed'),
      ).finally(() => (busy = false));
    };
    poll();
    this.timer = setInterval(poll, CONSOLE.pipelinePollMs);
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.running;
  }

  current(): PipelineView {
    return this.view;
  }

  async poll(): Promise<PipelineView> {
    const looks = await Promise.all(this.targets.map(async (t) => ({ target: t, ...(await look(t.url)) })));
    const samples = looks.flatMap((l) => l.samples);
    const at = Date.now();
    // Each distributor's own rate, summed: a rate of the sum of their counters jumped by a whole
    // counter when a distributor that missed a look (no answer, a timeout) answered again (millions
    // of readings a second shown), and one distributor's restart (its counter back near 0) hid the
    // others' readings. A counter that went down is a restarted service: no rate from that pair of
    // its looks; one that gave none this time starts a new pair at its next.
    let readingsPerSecond: number | null = null;
    looks.forEach((l, i) => {
      const written = sumOf(l.samples, 'fieldstream_distributor_messages_total', { data_type: 'timeseries' });
      const last = this.last.get(i);
      if (written === undefined) {
        this.last.delete(i);
        return;
      }
      if (last && written >= last.written && at > last.at) readingsPerSecond = (readingsPerSecond ?? 0) + ((written - last.written) * 1000) / (at - last.at);
      this.last.set(i, { at, written });
    });
    const brokers = samples.filter((s) => s.name === 'fieldstream_mosquitto_up').map((s) => ({ name: s.labels.broker ?? 'broker', up: s.value === 1 }));
    const bridge = sumOf(samples, 'fieldstream_bridge_connected');
    const num = (name: string) => sumOf(samples, name) ?? null;
    const own = this.own();
    const feedConnected = own?.feedConnected ?? null;
    if (feedConnected === true) this.feedLastConnected = at;
    this.view = {
      at,
      services: looks.map((l) => ({ name: l.target.name, ready: l.ready, detail: l.detail, ...(l.service !== undefined ? { service: l.service } : {}), ...(l.checks ? { checks: l.checks } : {}), ...(l.failing ? { failing: l.failing } : {}) })),
      brokers,
      bridgeConnected: bridge === undefined ? null : bridge >= 1,
      readingsPerSecond,
      writeFailures: num('fieldstream_distributor_write_failures_total'),
      deadLetters: num('fieldstream_distributor_dead_letters_total'),
      feedDropped: num('fieldstream_distributor_feed_dropped_points_total'),
      feedRefused: own?.feedRefused ?? null,
      feedConnected,
      feedDownSince: feedConnected === false ? this.feedLastConnected : null,
    };
    return this.view;
  }
}

async function look(base: string): Promise<{ ready: boolean | null; detail: string; service?: string; checks?: string[]; failing?: string[]; samples: Sample[] }> {
  const get = (path: string) => fetch(`${base}${path}`, { signal: AbortSignal.timeout(CONSOLE.pipelineRequestTimeoutMs) });
  let ready: boolean | null = null;
  let detail: string;
  let said: { service?: string; checks?: string[]; failing?: string[] } = {};
  try {
    const res = await get('/readyz');
    const body = ReadyzSchema.safeParse(await res.json().catch(() => undefined));
    ready = res.status === 200;
    detail = ready ? 'ready' : `not ready${body.success && body.data.failing?.length ? `: ${body.data.failing.join(', ')} failing` : ''}`;
    if (body.success) said = { ...(body.data.service !== undefined ? { service: body.data.service } : {}), ...(body.data.checks ? { checks: body.data.checks } : {}), ...(body.data.failing ? { failing: body.data.failing } : {}) };
  } catch (err) {
    return { ready: false, detail: `no answer (${(err as Error).message})`, samples: [] };
  }
  try {
    const res = await get('/metrics');
    return { ready, detail, ...said, samples: res.ok ? parseExposition(await res.text()) : [] };
  } catch {
    return { ready, detail, ...said, samples: [] };
  }
}
