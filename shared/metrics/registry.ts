import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { TIMINGS } from '../limits.ts';
import { EVENT_LOOP_DELAY_BUCKETS_S } from './event-loop.ts';

/**
 * Each service's metrics live in a registry of its own, never prom-client's global one: `npm start`
 * runs the gateway, the distributor, the command API and the field client in one process, and each
 * answers for itself on its own port. Names follow Prometheus's conventions: the `fieldstream_`
 * prefix, base units (`_seconds`, `_bytes`), `_total` on counters, and no device id as a label, so
 * the number of series does not grow with the fleet.
 */
export const METRIC_PREFIX = 'fieldstream_';

/** Buckets (seconds) for latencies from a millisecond to a minute: a publish, a write, device → database. */
export const LATENCY_BUCKETS_S = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

export class ServiceMetrics {
  readonly registry = new Registry();
  /**
   * false when the service's metrics are off (its `*_METRICS_PORT=off`): no one can read them, so
   * nothing is counted either, and the benchmark can measure what counting costs.
   */
  readonly counting: boolean;
  /**
   * With process metrics: how late the event loop ran, cumulative (see event-loop.ts); the metrics
   * server feeds it while it serves.
   */
  readonly eventLoopDelay: Histogram | undefined;

  constructor(
    /** the `service` label every series carries (gateway, distributor, command-api, field-client) */
    readonly service: string,
    o: { processMetrics?: boolean; counting?: boolean } = {},
  ) {
    this.counting = o.counting !== false;
    this.registry.setDefaultLabels({ service });
    // Process metrics (CPU, memory, event-loop lag) once per process: in `npm start` one service has them.
    if (this.counting && o.processMetrics !== false) {
      collectDefaultMetrics({ register: this.registry, prefix: METRIC_PREFIX });
      this.eventLoopDelay = this.histogram(
        'event_loop_delay_seconds',
        `How late a timer due every ${TIMINGS.eventLoopProbeMs} ms fired: time the event loop was held (a long task, a garbage-collection pause). Cumulative, unlike nodejs_eventloop_lag_*, which restart at every scrape.`,
        [],
        EVENT_LOOP_DELAY_BUCKETS_S,
      );
    }
  }

  counter<L extends string = never>(name: string, help: string, labelNames: readonly L[] = []): Counter<L> {
    return this.made(new Counter({ name: METRIC_PREFIX + name, help, labelNames, registers: this.registers() }));
  }

  gauge<L extends string = never>(name: string, help: string, labelNames: readonly L[] = [], collect?: (this: Gauge<L>) => void | Promise<void>): Gauge<L> {
    return this.made(new Gauge({ name: METRIC_PREFIX + name, help, labelNames, registers: this.registers(), ...(collect && this.counting ? { collect } : {}) }));
  }

  histogram<L extends string = never>(name: string, help: string, labelNames: readonly L[] = [], buckets: number[] = LATENCY_BUCKETS_S): Histogram<L> {
    return this.made(new Histogram({ name: METRIC_PREFIX + name, help, labelNames, buckets, registers: this.registers() }));
  }

  private registers(): Registry[] {
    return this.counting ? [this.registry] : [];
  }

  private made<T extends object>(metric: T): T {
    return this.counting ? metric : silenced(metric);
  }
}

const noop = (): void => undefined;
/** What a silenced metric's labels() returns: a child whose every recording method does nothing. */
const SILENT_CHILD = Object.freeze({ inc: noop, dec: noop, set: noop, setToCurrentTime: noop, observe: noop, startTimer: () => noop });

/**
 * The metric with its recording methods replaced by ones that do nothing (instance properties
 * shadow prom-client's prototype methods), so the services' call sites stay as they are.
 */
function silenced<T extends object>(metric: T): T {
  return Object.assign(metric, { ...SILENT_CHILD, labels: () => SILENT_CHILD, zero: noop, reset: noop, remove: noop });
}
