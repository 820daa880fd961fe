import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FleetResult } from '../scenarios/fleet.ts';
import type { SustainedResult } from '../scenarios/sustained.ts';
import { SLOW_WRITE_MS } from './influx-access-log.ts';
import { SUSTAINED_WINDOW_P99_MS, targetsTable, type TargetVerdict } from './targets.ts';

const n = (x: number) => Math.round(x).toLocaleString('en');

/** The fleet's figures as Markdown lines. */
export function renderFleet(f: FleetResult): string[] {
  const lines = [
    `${f.scenario}: ${n(f.devices)} devices for ${f.seconds} s after ${f.warmUpSeconds} s of the same load (a warm-up: its readings counted, not timed), ${n(f.readings)} readings due, ${n(f.sent)} sent in ${n(f.frames)} frames, ${n(f.stored)} stored, **${n(f.lost)} lost**, ${f.duplicated} duplicated; ${f.errors} error frames, ${f.closed} connections closed during the run; refused by the distributor: ${Object.entries(f.refused).map(([r, c]) => `${r} ${n(c)}`).join(', ') || 'none'}.`,
    '',
    `Setup: ${n(f.devices)} keys and certificates in ${f.setup.certificatesSeconds} s; all connected (welcomed) in ${f.setup.connectSeconds} s. The load generator sent with a p99 lag of ${f.generatorLagP99Ms} ms behind each reading's due time.`,
    '',
    `| device → database (readings due after the warm-up) | readings watched | p50 | p95 | p99 | max | not seen within 10 s |`,
    '|---|---|---|---|---|---|---|',
    `| fleet, one reading per device per second${f.readingsPerFrame === 1 ? '' : `, sent ${f.readingsPerFrame} at a time (from each frame's due time)`} | ${n(f.latency.samples + f.latency.late)} | ${[f.latency.p50Ms, f.latency.p95Ms, f.latency.p99Ms, f.latency.maxMs].map((v) => fleetMs(v, f.latency.lateAfterMs)).join(' | ')} | ${n(f.latency.late)} |`,
    '',
    '| edge (DMZ server) | devices | Caddy MiB idle → connected → end | Caddy KiB/connection | gateway MiB idle → connected → end | gateway KiB/connection |',
    '|---|---|---|---|---|---|',
    ...f.edges.map(
      (e, i) =>
        `| ${i + 1} | ${n(e.devices)} | ${e.caddyMiB.idle} → ${e.caddyMiB.connected} → ${e.caddyMiB.end} | ${e.caddyKiBPerConnection} | ${e.gatewayMiB.idle} → ${e.gatewayMiB.connected} → ${e.gatewayMiB.end} | ${e.gatewayKiBPerConnection} |`,
    ),
    '',
    '| the watched readings, by when they were due (s from the start) | watched | p50 | p99 | not seen within 10 s |',
    '|---|---|---|---|---|',
    ...f.latencyByWindow.map((w) => `| ${w.fromS}–${w.toS}${w.toS <= f.warmUpSeconds ? ' (warm-up)' : ''} | ${n(w.watched)} | ${fleetMs(w.p50Ms, f.latency.lateAfterMs)} | ${fleetMs(w.p99Ms, f.latency.lateAfterMs)} | ${n(w.late)} |`),
  ];
  if (f.cpu) {
    const busy = f.cpu.reduce((s, c) => s + c.cpuSeconds, 0);
    const perS = (calls: number | undefined) => (calls === undefined ? '—' : n(calls / f.seconds));
    lines.push('', `| CPU during the load (${f.seconds} s) | CPU seconds | cores | system calls reading, per second | writing, per second |`, '|---|---|---|---|---|');
    for (const c of f.cpu) lines.push(`| ${c.component} | ${c.cpuSeconds} | ${(c.cpuSeconds / f.seconds).toFixed(2)} | ${perS(c.readCalls)} | ${perS(c.writeCalls)} |`);
    lines.push(`| all | ${busy.toFixed(1)} | ${(busy / f.seconds).toFixed(2)} | | |`);
  }
  return lines;
}

/** The sustained load's figures as Markdown lines. */
export function renderSustained(s: SustainedResult): string[] {
  const minutes = Array.from({ length: Math.max(0, ...s.memory.map((m) => m.anonByMinute.length)) }, (_, i) => i + 1);
  return [
    `${s.scenario} (80 % of the batched maximum, ${n(s.maximumPerSecond)} readings/s): ${n(s.readings)} readings (the probe's ${n(s.probes)} among them), counted device by device: ${n(s.lost)} lost, ${s.duplicated} duplicated${s.heldByDevices > 0 ? ` (${n(s.heldByDevices)} still in the devices' queues when they stopped, not receipted within a minute)` : ''}; InfluxDB shards written: ${s.shards} (the devices' timestamps start at the wall clock, as a fleet's do).`,
    '',
    `| window (s) | offered readings/s | stored readings/s | probes | p99 | InfluxDB: cache snapshots, compactions (their time) | InfluxDB: GC pauses | InfluxDB: slowest write request (its log), writes over ${SLOW_WRITE_MS} ms | machine: CPU busy, stolen, waiting for the disk |`,
    '|---|---|---|---|---|---|---|---|---|',
    ...s.windows.map(
      (w) =>
        `| ${w.endS - 10}–${w.endS} | ${n(w.offeredPerSecond)} | ${n(w.storedPerSecond)} | ${w.probes} | ${w.p99Ms < 0 ? 'a probe never arrived' : `${w.p99Ms} ms`} | ${w.influx.cacheSnapshots}, ${w.influx.compactions} (${n(w.influx.compactionMs)} ms) | ${w.influx.gcPauseMs} ms | ${w.influx.slowestWriteMs === undefined ? '—' : `${n(w.influx.slowestWriteMs)} ms, ${w.influx.slowWrites ?? 0}`} | ${w.host.busyPercent} %, ${w.host.stealPercent} %, ${w.host.iowaitPercent} % |`,
    ),
    '',
    ...slowWindows(s),
    '',
    `Resident memory, sampled every 10 s. What a process keeps is the floor its memory returns to between collections, and a leak raises it: the lowest sample in the first half of the time after the warm-up (${s.warmUpSeconds} s), against the lowest in the second half. Anonymous: what the process holds itself, not pages of files it maps (its code, the database's data files); the targets are judged on it.`,
    '',
    '| MiB | resident: start | end | floor, first half | floor, second half | growth | anonymous: start | end | floor, first half | floor, second half | growth | per minute (least squares) |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|',
    ...s.memory.map(
      (m) =>
        `| ${m.service} | ${m.startMiB} | ${m.endMiB} | ${m.firstFloorMiB} | ${m.secondFloorMiB} | ${m.growthPercent} % | ${m.anon.startMiB} | ${m.anon.endMiB} | ${m.anon.firstFloorMiB} | ${m.anon.secondFloorMiB} | ${m.anon.growthPercent} % | ${m.anon.slopeMiBPerMinute} |`,
    ),
    '',
    `| anonymous resident MiB, at minute | ${minutes.join(' | ')} |`,
    `|---|${minutes.map(() => '---|').join('')}`,
    ...s.memory.map((m) => `| ${m.service} | ${m.anonByMinute.join(' | ')} |`),
    ...(s.heap.length > 0
      ? [
          '',
          '| V8 heap in use (MiB), the lowest of the 10 s samples | first half after warm-up | second half | growth | samples |',
          '|---|---|---|---|---|',
          ...s.heap.map((h) => `| ${h.service} | ${h.firstFloorMiB} | ${h.secondFloorMiB} | ${h.growthPercent} % | ${h.samples} |`),
        ]
      : []),
  ];
}

/**
 * Whether the slow windows are the database's doing: how many had a cache snapshot or a compaction
 * finish in them or in the window before (one that finishes has run through up to both), against
 * the other windows.
 */
function slowWindows(s: SustainedResult): string[] {
  const busy = s.windows.map((w, i) => {
    const before = s.windows[i - 1];
    return [w, before].some((x) => x !== undefined && x.influx.cacheSnapshots + x.influx.compactions > 0);
  });
  const slow = s.windows.map((w) => w.p99Ms < 0 || w.p99Ms > SUSTAINED_WINDOW_P99_MS);
  const count = (f: (i: number) => boolean) => s.windows.filter((_, i) => f(i)).length;
  const slowBusy = count((i) => !!slow[i] && !!busy[i]);
  const slowAll = count((i) => !!slow[i]);
  const busyAll = count((i) => !!busy[i]);
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
  const hostOf = (f: (i: number) => boolean) => {
    const ws = s.windows.filter((_, i) => f(i));
    return `CPU busy ${median(ws.map((w) => w.host.busyPercent))} %, stolen ${median(ws.map((w) => w.host.stealPercent))} %, waiting for the disk ${median(ws.map((w) => w.host.iowaitPercent))} %`;
  };
  const lines = [
    `Windows with p99 over ${SUSTAINED_WINDOW_P99_MS} ms: ${slowAll} of ${s.windows.length}; of them ${slowBusy} with an InfluxDB cache snapshot or compaction finishing in them or the window before (such windows: ${busyAll} of ${s.windows.length}).` +
      (slowAll > 0 ? ` The machine in the slow windows: ${hostOf((i) => !!slow[i])} (medians; the other windows: ${hostOf((i) => !slow[i])}).` : ''),
  ];
  const writesOf = (f: (i: number) => boolean) => {
    const ws = s.windows.filter((w, i) => f(i) && w.influx.slowestWriteMs !== undefined);
    const over = ws.reduce((a, w) => a + (w.influx.slowWrites ?? 0), 0);
    return `${median(ws.map((w) => w.influx.slowestWriteMs ?? 0))} ms, ${over} write${over === 1 ? '' : 's'} over ${SLOW_WRITE_MS} ms in ${ws.length} window${ws.length === 1 ? '' : 's'}`;
  };
  if (slowAll > 0 && s.windows.some((w) => w.influx.slowestWriteMs !== undefined)) {
    lines.push(
      '',
      `The database's own time per write request (its access log): the slowest in the median slow window ${writesOf((i) => !!slow[i])}; in the median other window ${writesOf((i) => !slow[i])}.`,
    );
  }
  if (slowAll === 0 || slowAll === s.windows.length) return lines;
  // Each process in the slow windows against the others: which one was busier, collecting, or held.
  const names = [...new Set(s.windows.flatMap((w) => Object.keys(w.processes)))].sort();
  const values = (name: string, f: (i: number) => boolean, k: 'cpuPercent' | 'gcMs' | 'heldOverMs' | 'requestOverMs') =>
    s.windows.flatMap((w, i) => {
      const v = w.processes[name]?.[k];
      return f(i) && v !== undefined ? [v] : [];
    });
  const of = (name: string, f: (i: number) => boolean, k: 'cpuPercent' | 'gcMs') => {
    const xs = values(name, f, k);
    return xs.length > 0 ? String(median(xs)) : '—';
  };
  const held = (name: string, f: (i: number) => boolean) => {
    const xs = values(name, f, 'heldOverMs');
    return xs.length > 0 ? heldText(Math.max(...xs)) : '—';
  };
  /** the slowest request in the median window of those: how slow one is as a rule, not the worst */
  const request = (name: string, f: (i: number) => boolean) => {
    const xs = values(name, f, 'requestOverMs');
    return xs.length > 0 ? requestText(median(xs)) : '—';
  };
  lines.push(
    '',
    '| process, per 10 s window | CPU, % of a core (median): slow windows | the others | garbage collection, ms (median): slow windows | the others | event loop held longest: slow windows | the others | slowest request (median of the windows): slow windows | the others |',
    '|---|---|---|---|---|---|---|---|---|',
    ...names.map(
      (p) =>
        `| ${p} | ${of(p, (i) => !!slow[i], 'cpuPercent')} | ${of(p, (i) => !slow[i], 'cpuPercent')} | ${of(p, (i) => !!slow[i], 'gcMs')} | ${of(p, (i) => !slow[i], 'gcMs')} | ${held(p, (i) => !!slow[i])} | ${held(p, (i) => !slow[i])} | ${request(p, (i) => !!slow[i])} | ${request(p, (i) => !slow[i])} |`,
    ),
  );
  // Each slow window: whose event loop was held in it (a stall there delays every reading behind it).
  const heldIn = (w: SustainedResult['windows'][number]) =>
    Object.entries(w.processes)
      .filter(([, p]) => (p.heldOverMs ?? 0) >= HELD_NOTABLE_MS)
      .sort((a, b) => (b[1].heldOverMs ?? 0) - (a[1].heldOverMs ?? 0))
      .map(([name, p]) => `${name} ${heldText(p.heldOverMs ?? 0)}`)
      .join(', ');
  // ... and the slowest request of each service that waits on one (the gateway for its PUBACKs, the distributor for the database).
  const requestsIn = (w: SustainedResult['windows'][number]) =>
    Object.entries(w.processes)
      .filter(([, p]) => p.requestOverMs !== undefined)
      .map(([name, p]) => `${name} ${requestText(p.requestOverMs ?? 0)}`)
      .join(', ');
  const slowOnes = s.windows.filter((_, i) => !!slow[i]);
  const p99Of = (w: SustainedResult['windows'][number]) => (w.p99Ms < 0 ? 'probe lost' : `${w.p99Ms} ms`);
  lines.push(
    '',
    `Event loops held over ${HELD_NOTABLE_MS} ms in the slow windows: ` + slowOnes.map((w) => `${w.endS} s (p99 ${p99Of(w)}): ${heldIn(w) || 'none'}`).join('; ') + '.',
  );
  if (slowOnes.some((w) => requestsIn(w) !== '')) {
    lines.push(
      '',
      'The slowest request in each slow window (the gateway: an envelope published to its PUBACK; the distributor: a database request): ' +
        slowOnes.map((w) => `${w.endS} s (p99 ${p99Of(w)}): ${requestsIn(w) || 'none read'}`).join('; ') +
        '.',
    );
  }
  return lines;
}

/** `requestOverMs` in words: the histogram's bucket bound the slowest request was over */
const requestText = (ms: number) => (ms === 0 ? '≤ 1 ms' : `> ${ms} ms`);

/** ms: an event loop held over this is named in the slow windows' list */
const HELD_NOTABLE_MS = 100;

/** `heldOverMs` in words: the bucket bound a tick was later than */
const heldText = (ms: number) => (ms === 0 ? '< 5 ms' : `> ${ms} ms`);

/** Writes DIR/NAME.json and DIR/NAME.md (the full run's pipeline.json is left alone); returns the Markdown. */
/** `targets` undefined: a report that is held to none (a comparison of settings). */
export function writeLoadReport(dir: string, name: string, report: object, lines: string[], targets?: readonly TargetVerdict[]): string {
  const md = [...lines, ...(targets ? ['', ...targetsTable(targets)] : [])].join('\n');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `${name}.json`), JSON.stringify({ ...report, ...(targets ? { targets } : {}) }, null, 2) + '\n');
  writeFileSync(join(dir, `${name}.md`), md + '\n');
  return md;
}

/** A fleet latency figure: null is above the time after which a watched reading counts as late. */
export function fleetMs(v: number | null, lateAfterMs: number): string {
  return v === null ? `> ${lateAfterMs.toLocaleString('en')} ms` : `${v} ms`;
}
