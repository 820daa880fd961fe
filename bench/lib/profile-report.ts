import { copyFileSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { chunksWithin, type GoProfileChunk, type GoProfiles } from './go-profiler.ts';
import { decodePprof, summarisePprof } from './pprof.ts';
import { summariseProfile } from './profile-summary.ts';
import { cpuTable } from './report.ts';
import type { MonotonicWindow } from './proc-stats.ts';
import type { ThroughputResult } from './results.ts';

/**
 * OUT/profile.md: the CPU time per reading of each process, and where the named processes spent
 * theirs (their .cpuprofile files from `dir`, matched by process id, are kept in OUT/profiles/ for
 * Chrome DevTools or VS Code, whole). The summaries count the samples taken within `window`, the
 * load measured (CpuMeter.window), when it is known. `goProfiles`: the Go servers' profiles taken
 * meanwhile (go-profiler.ts), by name; those that overlap the window are summarised and kept in
 * OUT/profiles/NAME/ (`go tool pprof -top OUT/profiles/NAME/*.pb.gz` reads them as one). Returns
 * the Markdown.
 */
export function writeProfileReport(
  dir: string,
  out: string,
  root: string,
  pids: Record<string, number | undefined>,
  measured: ThroughputResult,
  window?: MonotonicWindow,
  goProfiles: Record<string, GoProfiles> = {},
): string {
  const lines = [
    `${measured.scenario}: ${measured.readings.toLocaleString('en')} readings in ${measured.seconds.toFixed(1)} s, ${measured.readingsPerSecond.toLocaleString('en')} readings/s, ${cpus().length} cores.`,
    '',
    ...cpuTable([measured]),
    '',
    window
      ? `Where the CPU went: the samples of the ${((window.toUs - window.fromUs) / 1e6).toFixed(1)} s the load was measured (its CPU above), not those of the processes starting, the devices connecting or a warm-up. The profile files hold every sample.`
      : 'Where the CPU went: every sample of each process, its start included.',
  ];
  const files = readdirSync(dir);
  mkdirSync(join(out, 'profiles'), { recursive: true });
  for (const [name, pid] of Object.entries(pids)) {
    // node --cpu-prof names files CPU.DATE.TIME.PID.THREAD.SEQ.cpuprofile; thread 0 is the main one.
    const file = files.find((f) => f.includes(`.${pid}.0.`)) ?? files.find((f) => f.includes(`.${pid}.`));
    if (!file) continue;
    copyFileSync(join(dir, file), join(out, 'profiles', `${name}.cpuprofile`));
    const summary = summariseProfile(join(dir, file), root, 12, window);
    lines.push('', `The ${name}: where its CPU went (self time, share of busy samples)`, '', '| function | self % |', '|---|---|');
    for (const h of summary.self) lines.push(`| \`${h.where}\` | ${h.selfPercent} |`);
    lines.push('', `The ${name}: its own steps (total time, including what they call)`, '', '| function | total % |', '|---|---|');
    for (const h of summary.ours) lines.push(`| \`${h.where}\` | ${h.totalPercent} |`);
  }
  for (const [name, all] of Object.entries(goProfiles)) {
    const chunks = chunksWithin(all.chunks, window);
    const failed = chunksWithin(all.failures, window);
    const kept = join(out, 'profiles', name.toLowerCase());
    rmSync(kept, { recursive: true, force: true });
    mkdirSync(kept, { recursive: true });
    for (const [i, c] of chunks.entries()) writeFileSync(join(kept, `${String(i + 1).padStart(4, '0')}.pb.gz`), c.data);
    const summary = summarisePprof(chunks.map((c) => decodePprof(c.data)));
    const seconds = chunks.length > 0 ? ((chunks.at(-1) as GoProfileChunk).toUs - (chunks[0] as GoProfileChunk).fromUs) / 1e6 : 0;
    lines.push(
      '',
      `${name}: where its CPU went (Go's profiler, ${chunks.length} ${chunks.length === 1 ? 'profile' : 'profiles'} of a second over ${seconds.toFixed(1)} s around the load: ${summary.cpuSeconds.toFixed(2)} CPU seconds, ${summary.samples} samples; self time, share of them)`,
    );
    if (failed.length > 0) {
      const missing = failed.reduce((sum, f) => sum + (f.toUs - f.fromUs), 0) / 1e6;
      lines.push('', `Not profiled: ${failed.length} requests for a profile of ${name} failed during the load (${missing.toFixed(1)} s without one); the first: ${failed[0]?.reason}`);
    }
    if (summary.samples === 0) {
      lines.push('', `No samples: ${name} did not run on the CPU long enough to be sampled (every 10 ms).`);
      continue;
    }
    lines.push('', '| function | self % |', '|---|---|');
    for (const h of summary.self) lines.push(`| \`${h.where}\` | ${h.selfPercent} |`);
    lines.push('', `${name}: its steps (total time, including what they call)`, '', '| function | total % |', '|---|---|');
    for (const h of summary.total) lines.push(`| \`${h.where}\` | ${h.totalPercent} |`);
  }
  const md = lines.join('\n');
  writeFileSync(join(out, 'profile.md'), md + '\n');
  return md;
}
