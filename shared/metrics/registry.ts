import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

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

  constructor(
    /** the `service` label every series carries (gateway, distributor, command-api, field-client) */
    readonly service: string,
    o: { processMetrics?: boolean } = {},
  ) {
    this.registry.setDefaultLabels({ service });
    // Process metrics (CPU, memory, event-loop lag) once per process: in `npm start` one service has them.
    if (o.processMetrics !== false) collectDefaultMetrics({ register: this.registry, prefix: METRIC_PREFIX });
  }

  counter<L extends string = never>(name: string, help: string, labelNames: readonly L[] = []): Counter<L> {
    return new Counter({ name: METRIC_PREFIX + name, help, labelNames, registers: [this.registry] });
  }

  gauge<L extends string = never>(name: string, help: string, labelNames: readonly L[] = [], collect?: (this: Gauge<L>) => void): Gauge<L> {
    return new Gauge({ name: METRIC_PREFIX + name, help, labelNames, registers: [this.registry], ...(collect ? { collect } : {}) });
  }

  histogram<L extends string = never>(name: string, help: string, labelNames: readonly L[] = [], buckets: number[] = LATENCY_BUCKETS_S): Histogram<L> {
    return new Histogram({ name: METRIC_PREFIX + name, help, labelNames, buckets, registers: [this.registry] });
  }
}
