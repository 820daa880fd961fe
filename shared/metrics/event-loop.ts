import { TIMINGS } from '../limits.ts';

/** Buckets (seconds) of how late the event loop ran: from a blip to a stall no device should see. */
export const EVENT_LOOP_DELAY_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

/**
 * Records, every `everyMs`, how late a timer due then fired: the time the event loop was kept from
 * it (a long synchronous task, a garbage-collection pause, a blocked file system call).
 *
 * prom-client's `nodejs_eventloop_lag_*` gauges describe the time since the previous scrape and
 * start again at each one, so with two scrapers (a Prometheus HA pair, or Prometheus and the
 * console's pipeline page) each sees only part of the stalls, and a stall between scrapes of
 * another is lost to it. A histogram only grows: any scraper at any interval reads every stall
 * (`increase(...[10m])` by bucket), as Prometheus's conventions expect of it.
 *
 * Returns the function that stops it. The timer does not keep the process alive.
 */
export function probeEventLoop(delaySeconds: { observe(seconds: number): void }, everyMs: number = TIMINGS.eventLoopProbeMs): () => void {
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    delaySeconds.observe(Math.max(0, now - last - everyMs) / 1000);
    last = now;
  }, everyMs);
  timer.unref();
  return () => clearInterval(timer);
}
