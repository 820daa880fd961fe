import { eventually } from './ws-device.ts';

/** A service's /readyz: its status and the checks it names as failing. */
export async function readiness(base: string): Promise<{ status: number; failing: string[] }> {
  const res = await fetch(`${base}/readyz`);
  const body = (await res.json()) as { failing?: string[] };
  return { status: res.status, failing: body.failing ?? [] };
}

/** Waits until the service answers /readyz with `status`, failing exactly `failing`. */
export async function untilReadiness(base: string, status: number, failing: string[], what: string): Promise<void> {
  await eventually(async () => {
    const r = await readiness(base);
    return r.status === status && JSON.stringify(r.failing) === JSON.stringify(failing) ? true : undefined;
  }, 30_000, what);
}
