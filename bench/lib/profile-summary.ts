import { readFileSync } from 'node:fs';
import { relative } from 'node:path';
import { z } from 'zod';
import type { MonotonicWindow } from './proc-stats.ts';

/** The parts of a V8 .cpuprofile (written by node --cpu-prof) that a summary needs. */
const CpuProfileSchema = z.object({
  nodes: z.array(
    z.object({ id: z.number(), callFrame: z.object({ functionName: z.string(), url: z.string(), lineNumber: z.number() }), children: z.array(z.number()).optional() }),
  ),
  samples: z.array(z.number()),
  /** microseconds of the monotonic clock: the first sample's time is startTime + timeDeltas[0] */
  startTime: z.number(),
  timeDeltas: z.array(z.number()),
});
type CpuProfile = z.infer<typeof CpuProfileSchema>;

export interface HotSpot {
  where: string;
  /** share of the busy samples spent in this function itself */
  selfPercent: number;
  /** share of the busy samples spent in it or in what it called */
  totalPercent: number;
}

const IDLE = new Set(['(idle)', '(program)']);

/**
 * Summarises a profile, idle time excluded: the functions with the most self time (where the CPU
 * went), and the project's own functions with the most total time (which of our steps cost it).
 * Functions are named `name (file)`; tsx compiles on the fly, so V8's line numbers would not match
 * the sources and are left out. With `window`, only the samples taken within it count: the load
 * measured, not the process starting or the devices connecting.
 */
export function summariseProfile(file: string, root: string, top = 12, window?: MonotonicWindow): { self: HotSpot[]; ours: HotSpot[] } {
  const profile = CpuProfileSchema.parse(JSON.parse(readFileSync(file, 'utf8')));
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const name = (id: number) => {
    const { functionName, url } = (byId.get(id) as CpuProfile['nodes'][number]).callFrame;
    const path = url.startsWith('file://') ? relative(root, new URL(url).pathname) : url || 'native';
    return { where: `${functionName || '(anonymous)'} (${path})`, ours: url.startsWith('file://') && !path.startsWith('node_modules') && !path.startsWith('..') };
  };
  const self = new Map<string, number>();
  const total = new Map<string, number>();
  const ours = new Set<string>();
  let busy = 0;
  let at = profile.startTime;
  for (const [i, id] of profile.samples.entries()) {
    at += profile.timeDeltas[i] ?? 0;
    if (window && (at < window.fromUs || at > window.toUs)) continue;
    const node = byId.get(id);
    if (!node || IDLE.has(node.callFrame.functionName)) continue;
    busy++;
    const leaf = name(id).where;
    self.set(leaf, (self.get(leaf) ?? 0) + 1);
    const onStack = new Set<string>();
    for (let frame: number | undefined = id; frame !== undefined; frame = parent.get(frame)) {
      const n = name(frame);
      if (onStack.has(n.where)) continue; // recursion counts once
      onStack.add(n.where);
      if (n.ours) ours.add(n.where);
      total.set(n.where, (total.get(n.where) ?? 0) + 1);
    }
  }
  const pct = (n: number) => Math.round((n / Math.max(1, busy)) * 1000) / 10;
  const spot = (where: string): HotSpot => ({ where, selfPercent: pct(self.get(where) ?? 0), totalPercent: pct(total.get(where) ?? 0) });
  return {
    self: [...self.keys()].sort((a, b) => (self.get(b) as number) - (self.get(a) as number)).slice(0, top).map(spot),
    ours: [...ours].sort((a, b) => (total.get(b) as number) - (total.get(a) as number)).slice(0, top).map(spot),
  };
}
