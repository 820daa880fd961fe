import { readFileSync } from 'node:fs';
import { relative } from 'node:path';

/** The parts of a V8 .cpuprofile (written by node --cpu-prof) that a self-time summary needs. */
interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; hitCount?: number }[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

export interface HotSpot {
  where: string;
  /** share of the profile's samples spent in this function itself */
  selfPercent: number;
}

/** The functions with the most self time in a profile, named `function (file:line)`, idle time excluded. */
export function hotSpots(file: string, root: string, top = 12): HotSpot[] {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<string, number>();
  let busy = 0;
  for (const id of profile.samples) {
    const node = byId.get(id);
    if (!node) continue;
    const { functionName, url, lineNumber } = node.callFrame;
    if (functionName === '(idle)' || functionName === '(program)') continue;
    const path = url.startsWith('file://') ? relative(root, new URL(url).pathname) : url || 'native';
    const where = `${functionName || '(anonymous)'} (${path}${url ? `:${lineNumber + 1}` : ''})`;
    self.set(where, (self.get(where) ?? 0) + 1);
    busy++;
  }
  return [...self.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([where, n]) => ({ where, selfPercent: Math.round((n / Math.max(1, busy)) * 1000) / 10 }));
}
