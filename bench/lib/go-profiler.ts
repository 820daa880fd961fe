import { Worker } from 'node:worker_threads';
import type { MonotonicWindow } from './proc-stats.ts';

/** One CPU profile as a Go server's `/debug/pprof/profile` served it, and when it was taken. */
export interface GoProfileChunk extends MonotonicWindow {
  /** the profile as served (gzipped protobuf: pprof.ts decodes it) */
  data: Buffer;
}

/** seconds per profile: the endpoint takes whole seconds; the shorter, the closer the chunks fit the load measured */
const CHUNK_SECONDS = 1;
/** milliseconds a profile request may take, its second included */
const REQUEST_TIMEOUT_MS = 60_000;
/** milliseconds between a failed request and the next */
const RETRY_PAUSE_MS = 200;

/** A profile request that failed: no profile for that interval. */
export interface GoProfileFailure extends MonotonicWindow {
  reason: string;
}

/** What a GoProfiler took, from start to stop. */
export interface GoProfiles {
  chunks: GoProfileChunk[];
  failures: GoProfileFailure[];
}

/**
 * The request loop, on a thread of its own: the benchmark's main thread is the load generator,
 * whose event loop is busy for seconds at a time (the fleet's 10,000 devices), and on it each
 * profile's answer waited so long that only a third of the load's seconds were profiled (a fleet of
 * 4,000, measured). Plain JavaScript, as a worker runs it without the TypeScript loader; it stamps
 * each request with the monotonic clock (process.hrtime, which CpuMeter's windows use too).
 */
const LOOP = `
const { parentPort, workerData: o } = require('node:worker_threads');
const us = () => Number(process.hrtime.bigint() / 1000n);
let stopping = false;
parentPort.on('message', () => { stopping = true; });
(async () => {
  while (!stopping) {
    const fromUs = us();
    try {
      const res = await fetch(o.base + '/debug/pprof/profile?seconds=' + o.seconds, { signal: AbortSignal.timeout(o.timeoutMs) });
      if (!res.ok) throw new Error('HTTP ' + res.status + ': ' + (await res.text()).slice(0, 200));
      const data = new Uint8Array(await res.arrayBuffer());
      parentPort.postMessage({ kind: 'chunk', fromUs, toUs: us(), data }, [data.buffer]);
    } catch (err) {
      parentPort.postMessage({ kind: 'failure', fromUs, toUs: us(), reason: o.base + ': ' + err.message });
      await new Promise((r) => setTimeout(r, o.retryPauseMs));
    }
  }
  parentPort.postMessage({ kind: 'done' }); // after every other message: nothing is in flight
  parentPort.close(); // and the thread ends
})();
`;

type LoopMessage = ({ kind: 'chunk'; data: Uint8Array } | { kind: 'failure'; reason: string }) & MonotonicWindow | { kind: 'done' };

/**
 * CPU profiles of a Go server (Caddy through its admin API, InfluxDB on its HTTP port), taken one
 * after another from `start` until `stop`. Go's profiler runs for a fixed number of seconds per
 * request and stamps no time on its samples, so the load measured is covered by one-second
 * profiles: those that overlap it are kept (pprof.ts sums them), at most a second either side.
 * Only one profile can run at a time in a Go process, hence one request after another. A request
 * that fails is noted with its interval, and the next one tried: the report says whether the load
 * lost any of its profiles.
 */
export class GoProfiler {
  private readonly taken: GoProfiles = { chunks: [], failures: [] };
  private worker: Worker | undefined;
  /** settles once the thread has sent its last message (and is gone) */
  private finished: Promise<void> | undefined;

  /** `base`: the server's address, e.g. http://127.0.0.1:2019 */
  constructor(private readonly base: string) {}

  start(): void {
    if (this.worker) return;
    const worker = new Worker(LOOP, {
      eval: true,
      workerData: { base: this.base, seconds: CHUNK_SECONDS, timeoutMs: REQUEST_TIMEOUT_MS, retryPauseMs: RETRY_PAUSE_MS },
    });
    let done = false;
    this.finished = new Promise((resolve, reject) => {
      worker.on('message', (m: LoopMessage) => {
        if (m.kind === 'chunk') this.taken.chunks.push({ fromUs: m.fromUs, toUs: m.toUs, data: Buffer.from(m.data.buffer, m.data.byteOffset, m.data.byteLength) });
        else if (m.kind === 'failure') this.taken.failures.push({ fromUs: m.fromUs, toUs: m.toUs, reason: m.reason });
        else {
          done = true;
          resolve();
        }
      });
      worker.once('error', reject);
      worker.once('exit', (code) => {
        if (!done) reject(new Error(`the profile requests' thread of ${this.base} ended (${code}) before it was stopped`));
      });
    });
    // Reported by stop(), not as an unhandled rejection while the load runs.
    this.finished.catch(() => undefined);
    this.worker = worker;
  }

  /** Waits for the profile being taken (at most CHUNK_SECONDS), then returns every one taken, and the requests that failed. */
  async stop(): Promise<GoProfiles> {
    this.worker?.postMessage('stop');
    await this.finished;
    return this.taken;
  }
}

/** The chunks (or failures) taken while `window` ran (all of them without one). */
export function chunksWithin<T extends MonotonicWindow>(chunks: readonly T[], window: MonotonicWindow | undefined): T[] {
  return window ? chunks.filter((c) => c.fromUs < window.toUs && c.toUs > window.fromUs) : [...chunks];
}
