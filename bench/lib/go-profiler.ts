import { monotonicUs, type MonotonicWindow } from './proc-stats.ts';

/** One CPU profile as a Go server's `/debug/pprof/profile` served it, and when it was taken. */
export interface GoProfileChunk extends MonotonicWindow {
  /** the profile as served (gzipped protobuf: pprof.ts decodes it) */
  data: Buffer;
}

/** seconds per profile: the endpoint takes whole seconds; the shorter, the closer the chunks fit the load measured */
const CHUNK_SECONDS = 1;

/**
 * CPU profiles of a Go server (Caddy through its admin API, InfluxDB on its HTTP port), taken one
 * after another from `start` until `stop`. Go's profiler runs for a fixed number of seconds per
 * request and stamps no time on its samples, so the load measured is covered by one-second
 * profiles: those that overlap it are kept (pprof.ts sums them), at most a second either side.
 * Only one profile can run at a time in a Go process, hence one request after another.
 */
export class GoProfiler {
  private readonly chunks: GoProfileChunk[] = [];
  private running: Promise<void> | undefined;
  private stopping = false;
  /** why the last request failed, if one did (the loop stops there) */
  failure: string | undefined;

  /** `base`: the server's address, e.g. http://127.0.0.1:2019 */
  constructor(private readonly base: string) {}

  start(): void {
    this.running ??= this.loop();
  }

  /** Waits for the profile being taken (at most CHUNK_SECONDS), then returns every one taken. */
  async stop(): Promise<GoProfileChunk[]> {
    this.stopping = true;
    await this.running;
    return this.chunks;
  }

  private async loop(): Promise<void> {
    while (!this.stopping) {
      const fromUs = monotonicUs();
      try {
        const res = await fetch(`${this.base}/debug/pprof/profile?seconds=${CHUNK_SECONDS}`, { signal: AbortSignal.timeout((CHUNK_SECONDS + 10) * 1000) });
        if (!res.ok) throw new Error(`HTTP ${res.status}: ${(await res.text()).slice(0, 200)}`);
        this.chunks.push({ fromUs, toUs: monotonicUs(), data: Buffer.from(await res.arrayBuffer()) });
      } catch (err) {
        this.failure = `${this.base}: ${(err as Error).message}`;
        return;
      }
    }
  }
}

/** The chunks taken while `window` ran (all of them without one). */
export function chunksWithin(chunks: readonly GoProfileChunk[], window: MonotonicWindow | undefined): GoProfileChunk[] {
  return window ? chunks.filter((c) => c.fromUs < window.toUs && c.toUs > window.fromUs) : [...chunks];
}
