import { Counter } from 'prom-client';
import { METRIC_PREFIX, ServiceMetrics } from '../../shared/metrics/registry.ts';
import { RESPONSE_REFUSAL_CODES } from './believed-responses.ts';
import { COMMAND_STATES } from './schemas.ts';
import type { CommandStore } from './store.ts';

/**
 * The command API's metrics (docs/monitoring.md): commands by state, counted from its store when
 * scraped; requests by HTTP status; responses refused because they were not provably the device's.
 */
export class CommandApiMetrics {
  readonly requests;

  constructor(
    o: { store: CommandStore; brokerConnected: () => boolean; refusedResponses: () => Readonly<Partial<Record<string, number>>> },
    readonly metrics: ServiceMetrics = new ServiceMetrics('command-api', { processMetrics: false }),
  ) {
    metrics.gauge('broker_connected', 'Whether the command API is connected to its MQTT broker (1) or not (0).', [], function () {
      this.set(o.brokerConnected() ? 1 : 0);
    });
    metrics.gauge('command_api_commands', 'Commands in the command store, by state (every state listed, 0 included).', ['state'], function () {
      const counts = new Map<string, number>(COMMAND_STATES.map((s) => [s, 0]));
      for (const r of o.store.all()) counts.set(r.state, (counts.get(r.state) ?? 0) + 1);
      for (const [state, n] of counts) this.set({ state }, n);
    });
    this.requests = metrics.counter('command_api_requests_total', 'HTTP requests answered, by status code.', ['status']);
    // The dispatcher keeps its own tally (believed-responses.ts, dispatcher.ts refusedResponses); read when scraped.
    new Counter({
      name: `${METRIC_PREFIX}command_api_responses_refused_total`,
      help: 'Command responses ignored because they are not provably the device’s, by error code (each code from 0).',
      labelNames: ['reason'],
      registers: [metrics.registry],
      collect() {
        this.reset();
        const refused = o.refusedResponses();
        // Every code from 0 (RESPONSE_REFUSAL_CODES), so that the first refusal of each is seen.
        for (const reason of RESPONSE_REFUSAL_CODES) this.inc({ reason }, refused[reason] ?? 0);
        for (const [reason, n] of Object.entries(refused)) if (n && !(RESPONSE_REFUSAL_CODES as readonly string[]).includes(reason)) this.inc({ reason }, n);
      },
    });
  }
}
