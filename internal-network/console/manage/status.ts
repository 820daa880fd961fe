import type { PipelineView } from '../pipeline/pipeline-view.ts';

/** up: true or false when something measured it; null when nothing says (no exporter, no answer). */
export interface PartState {
  up: boolean | null;
  /** where the answer comes from */
  source: string;
}

export interface ManageStatus {
  /** ISO time of the look at the services this comes from (null: none yet) */
  at: string | null;
  brokers: { internal: PartState; dmz: PartState };
  bridge: { connected: boolean | null; source: string };
  distributors: Array<{ name: string; ready: boolean | null; detail: string; broker: boolean | null; database: boolean | null }>;
  database: { ok: boolean | null; detail: string };
  services: PipelineView['services'];
  figures: { readingsPerSecond: number | null; writeFailures: number | null; deadLetters: number | null; feedDropped: number | null };
}

const EXPORTER = 'broker-exporter';

/**
 * The state of the pipeline's parts from the pipeline view (the services' own /readyz and
 * /metrics, CONSOLE_PIPELINE_TARGETS): both brokers and the bridge from the broker exporter
 * (fieldstream_mosquitto_up, fieldstream_bridge_connected); each distributor, and the database
 * through them, from their /readyz checks `broker` and `database` (internal-network/distributor).
 * Without the exporter the internal broker is judged by the console's own connection to it, and
 * the DMZ broker and the bridge are unknown (null), never guessed.
 */
export function manageStatus(view: PipelineView, consoleBrokerConnected: boolean): ManageStatus {
  const broker = (name: 'internal' | 'dmz'): PartState | undefined => {
    const b = view.brokers.find((x) => x.name === name);
    return b ? { up: b.up, source: EXPORTER } : undefined;
  };
  const distributors = view.services
    .filter((s) => s.service === 'distributor' || (s.service === undefined && /^distributor/.test(s.name)))
    .map((s) => {
      // A distributor that answered names its failing checks; one that did not answer says nothing of them.
      const check = (name: string) => (s.failing === undefined ? null : !s.failing.includes(name));
      return { name: s.name, ready: s.ready, detail: s.detail, broker: check('broker'), database: check('database') };
    });
  const judged = distributors.filter((d) => d.database !== null);
  const failing = judged.filter((d) => d.database === false).map((d) => d.name);
  const database =
    judged.length === 0
      ? { ok: null, detail: distributors.length === 0 ? 'no distributor among CONSOLE_PIPELINE_TARGETS' : 'no distributor answered' }
      : failing.length > 0
        ? { ok: false, detail: `the last write failed at ${failing.join(', ')}` }
        : { ok: true, detail: `writes succeed (${judged.map((d) => d.name).join(', ')})` };
  return {
    at: view.at > 0 ? new Date(view.at).toISOString() : null,
    brokers: {
      internal: broker('internal') ?? { up: consoleBrokerConnected, source: 'console' },
      dmz: broker('dmz') ?? { up: null, source: 'none' },
    },
    bridge: view.bridgeConnected === null ? { connected: null, source: 'none' } : { connected: view.bridgeConnected, source: EXPORTER },
    distributors,
    database,
    services: view.services,
    figures: { readingsPerSecond: view.readingsPerSecond, writeFailures: view.writeFailures, deadLetters: view.deadLetters, feedDropped: view.feedDropped },
  };
}
