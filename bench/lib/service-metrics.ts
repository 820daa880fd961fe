import type { ManagedProcess } from '../../scripts/local-stack/process.ts';
import type { LocalStack } from '../../scripts/local-stack/stack.ts';

/**
 * Restarts the gateways behind Caddy and the distributor with their metrics on (the port the stack
 * gave them) or off. Both kinds of round restart them, so each starts as fresh as the other; the
 * previous round has drained (its receipts are in), so nothing is in flight.
 */
export async function serviceMetrics(stack: LocalStack, on: boolean): Promise<void> {
  const ports = metricsPorts ?? (metricsPorts = new Map([...stack.gateways, stack.distributor].map((p) => [p, metricsSetting(p)])));
  // All at once: they wait for nothing of each other at start.
  await Promise.all([...ports].map(([proc, [key, port]]) => proc.restartWith({ [key]: on ? port : 'off' })));
  for (const [proc, [key, port]] of ports) {
    // The setting took: metrics answer when on, and nothing listens when off.
    const served = await fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.ok, () => false);
    if (served !== on) throw new Error(`${proc.name}: metrics ${on ? 'not served' : 'still served'} after a restart with ${key}=${on ? port : 'off'}`);
  }
}
let metricsPorts: Map<ManagedProcess, [string, string]> | undefined;

function metricsSetting(p: ManagedProcess): [string, string] {
  const key = Object.keys(p.spec.env).find((k) => k.endsWith('_METRICS_PORT'));
  const port = key === undefined ? undefined : p.spec.env[key];
  if (key === undefined || port === undefined) throw new Error(`${p.name} has no *_METRICS_PORT setting`);
  return [key, port];
}
