import type { ResidentMemory } from './proc-stats.ts';

const MiB = 1024 * 1024;

/**
 * A Node service's V8 heap in use, the lowest of its 10 s samples in each half of the time after
 * the warm-up, as for resident memory (ServiceMemory): a heap breathes (grows until a collection),
 * and what it keeps is the floor it returns to after one; a leak raises the floor.
 */
export interface ServiceHeap {
  service: string;
  firstFloorMiB: number;
  secondFloorMiB: number;
  /** (second floor − first floor) / first floor */
  growthPercent: number;
  samples: number;
}

/** Resident memory figures of one kind (all of it, or the anonymous part), MiB. */
export interface MemoryFigures {
  /** before the load */
  startMiB: number;
  /** the last sample, at the end of the load */
  endMiB: number;
  /** the lowest of the 10 s samples in the first half of the time after the warm-up */
  firstFloorMiB: number;
  /** the lowest in the second half */
  secondFloorMiB: number;
  /** (second floor − first floor) / first floor */
  growthPercent: number;
  /** MiB per minute: the slope of the least-squares line through every sample after the warm-up */
  slopeMiBPerMinute: number;
}

/**
 * A service's resident memory, sampled every window. Floors, not two reads: a Node service's
 * memory breathes with its garbage collector by tens of MiB, and InfluxDB's saws by hundreds (its Go
 * heap grows for minutes between collections), so one read after the warm-up and one at the end
 * can show growth, or hide it, that is one breath. What a process keeps is the floor it returns to,
 * and a leak raises it: the lowest sample of the first half after the warm-up against the lowest of
 * the second (each half longer than a breath). Anonymous memory is judged: what the process holds
 * itself. The rest is pages of files it maps (its code; the database's memory-mapped data files,
 * which grow with what it stores and which the kernel drops when memory is needed).
 */
export interface ServiceMemory extends MemoryFigures {
  service: string;
  anon: MemoryFigures;
  /** anonymous resident MiB at the end of each minute */
  anonByMinute: number[];
}

/**
 * The lowest value in each half of the time after `warmUpS` up to `endS` (0 for a half without
 * samples): what a breathing quantity returns to, early and late.
 */
export function halvesFloors(samples: readonly { atS: number; bytes: number }[], warmUpS: number, endS: number): [number, number] {
  const middle = (warmUpS + endS) / 2;
  const floor = (xs: readonly { bytes: number }[]) => (xs.length > 0 ? Math.min(...xs.map((x) => x.bytes)) : 0);
  return [floor(samples.filter((x) => x.atS > warmUpS && x.atS <= middle)), floor(samples.filter((x) => x.atS > middle && x.atS <= endS))];
}

/** A service's memory figures from its samples (`atS`: seconds into the load) after `warmUpS`, up to `endS`. */
export function memoryOf(service: string, samples: readonly { atS: number; m: ResidentMemory }[], warmUpS: number, endS: number): ServiceMemory {
  const after = samples.filter((x) => x.atS > warmUpS && x.atS <= endS);
  const figures = (of: (m: ResidentMemory) => number): MemoryFigures => {
    const [first, second] = halvesFloors(samples.map((x) => ({ atS: x.atS, bytes: of(x.m) })), warmUpS, endS);
    return {
      startMiB: mib(of(samples[0]?.m ?? NO_MEMORY)),
      endMiB: mib(of(samples[samples.length - 1]?.m ?? NO_MEMORY)),
      firstFloorMiB: mib(first),
      secondFloorMiB: mib(second),
      growthPercent: first > 0 ? Math.round(((second - first) / first) * 1000) / 10 : 0,
      slopeMiBPerMinute: Math.round(slope(after.map((x) => [x.atS / 60, of(x.m) / MiB])) * 100) / 100,
    };
  };
  return {
    service,
    ...figures((m) => m.rss),
    anon: figures((m) => m.anon),
    anonByMinute: samples.filter((x) => x.atS > 0 && x.atS % 60 === 0).map((x) => mib(x.m.anon)),
  };
}

/** A Node service's heap figures from its samples of heap in use (bytes), after `warmUpS`, up to `endS`. */
export function heapOf(service: string, samples: readonly { atS: number; bytes: number }[], warmUpS: number, endS: number): ServiceHeap {
  const [first, second] = halvesFloors(samples, warmUpS, endS);
  const ok = first > 0 && second > 0;
  return {
    service,
    firstFloorMiB: ok ? mib(first) : 0,
    secondFloorMiB: ok ? mib(second) : 0,
    growthPercent: ok ? Math.round(((second - first) / first) * 1000) / 10 : 0,
    samples: samples.length,
  };
}

const NO_MEMORY: ResidentMemory = { rss: 0, anon: 0, file: 0 };
const mib = (bytes: number) => Math.round((bytes / MiB) * 10) / 10;

/** The least-squares slope of y over x (0 with fewer than two points). */
function slope(points: readonly (readonly [number, number])[]): number {
  const n = Math.max(1, points.length);
  const mx = points.reduce((a, [x]) => a + x, 0) / n;
  const my = points.reduce((a, [, y]) => a + y, 0) / n;
  let num = 0;
  let den = 0;
  for (const [x, y] of points) {
    num += (x - mx) * (y - my);
    den += (x - mx) ** 2;
  }
  return den > 0 ? num / den : 0;
}

