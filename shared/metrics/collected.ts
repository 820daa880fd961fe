import { Counter, type LabelValues } from 'prom-client';
import { METRIC_PREFIX, type ServiceMetrics } from './registry.ts';

/**
 * A counter whose value is kept elsewhere and read at scrape time: a service's own running totals
 * (the field client's stats) or another program's (Mosquitto's $SYS totals). No work per event:
 * at each scrape the counter is set to what `read` returns. Still a true Prometheus counter (TYPE
 * counter, `_total`): the totals it mirrors only ever grow, or start again from 0 when their owner
 * restarts, which `rate()` and `increase()` take as a counter reset.
 *
 * `read` returns the value, or one value per label set; a label set it leaves out is not exposed.
 */
export function collectedCounter<L extends string = never>(
  metrics: ServiceMetrics,
  name: string,
  help: string,
  labelNames: readonly L[],
  read: () => number | ReadonlyArray<readonly [LabelValues<L>, number]>,
): Counter<L> {
  return new Counter<L>({
    name: METRIC_PREFIX + name,
    help,
    labelNames,
    registers: [metrics.registry],
    collect(this: Counter<L>) {
      const v = read();
      this.reset();
      if (typeof v === 'number') {
        if (Number.isFinite(v) && v >= 0) this.inc(v);
        return;
      }
      for (const [labels, n] of v) if (Number.isFinite(n) && n >= 0) this.inc(labels, n);
    },
  });
}
