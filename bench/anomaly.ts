/**
 * Benchmark of the console's anomaly scorer (npm run bench:anomaly), one core, no I/O:
 *   1. readings scored per second with the default parameters, on the labelled data set
 *      (internal-network/console/anomaly/dataset.ts: weather stations, power meters and pumps, one
 *      reading a minute, 3 to 4 fields, injected anomalies): while the devices are new (spike and
 *      stuck detectors only, no forest yet) and once every device has its forest (every reading
 *      also scored by the forest; each forest retrained every 12 hours of reading time);
 *   2. the time one forest takes to train (features fitted, 32 trees grown, its threshold
 *      calibrated). A device trains twice a day whatever its reading rate, so the scoring cost per
 *      reading is also given without the trainings (total less trainings x median training time);
 *   3. a fleet of 10,000 devices (the default maxDevices), one reading every 10 minutes for 3 days,
 *      so that every device has its forest: memory per device (typed arrays as counted by the
 *      scorer, and the heap and RSS growth) and readings scored per second across that many devices.
 * Writes bench/results/anomaly.json and .md (not kept in git, like the other results; the figures
 * are quoted in docs/anomaly-detection.md). `--quick` runs smaller sets and writes nothing.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { generateDataset } from '../internal-network/console/anomaly/dataset.ts';
import { DEFAULT_ANOMALY_PARAMS, worstCaseBytesPerDevice } from '../internal-network/console/anomaly/params.ts';
import { PROFILES, type Profile } from '../internal-network/console/anomaly/profiles.ts';
import { Mulberry32 } from '../internal-network/console/anomaly/prng.ts';
import { AnomalyScorer } from '../internal-network/console/anomaly/scorer.ts';
import type { ScoredReading } from '../internal-network/console/anomaly/types.ts';

const { values } = parseArgs({ options: { quick: { type: 'boolean', default: false } } });
const quick = values.quick;
const DAY_MS = 86_400_000;
const mib = (n: number) => Math.round((n / 1048576) * 10) / 10;
const gc = (globalThis as { gc?: () => void }).gc;

/** The labelled data set and a way to time the scoring of a part of it. */
function throughput() {
  const devices = quick ? 12 : 60;
  const days = quick ? 4 : 6;
  const set = generateDataset({ devices, days });
  const scorer = new AnomalyScorer();
  const phase = (from: number, to: number) => {
    const readings = set.readings.filter((r) => r.time >= from && r.time < to);
    const trainedBefore = scorer.stats().forestsTrained;
    let anomalies = 0;
    const t0 = performance.now();
    for (const r of readings) anomalies += scorer.score(r).length;
    const seconds = (performance.now() - t0) / 1000;
    return { readings: readings.length, seconds, readingsPerSecond: Math.round(readings.length / seconds), microsecondsPerReading: (seconds * 1e6) / readings.length, anomalies, forestsTrained: scorer.stats().forestsTrained - trainedBefore };
  };
  return { devices, days, phase, set, scorer };
}

function throughputRun(training: { medianMs: number }) {
  const { devices, days, phase, set, scorer } = throughput();
  const forestsFrom = set.options.start + 3 * DAY_MS;
  const scoringOnly = (r: ReturnType<typeof phase>) => ({ ...r, scoringMicrosecondsPerReading: Math.max(0, (r.seconds * 1e3 - r.forestsTrained * training.medianMs) * 1e3) / r.readings });
  // A first pass warms the JIT up on another scorer, so the figures are not those of cold code.
  const warm = new AnomalyScorer();
  for (const r of set.readings.slice(0, 50_000)) warm.score(r);
  const young = scoringOnly(phase(set.options.start, set.options.start + 2 * DAY_MS));
  phase(set.options.start + 2 * DAY_MS, forestsFrom);
  const withForests = scoringOnly(phase(forestsFrom, Infinity));
  const ready = [...new Set(set.readings.map((r) => r.device))].filter((d) => scorer.forestReady(d)).length;
  return { devices, days, fields: '3 to 4', young, withForests, devicesWithForest: ready };
}

function trainingCost() {
  // One device, one reading every 10 minutes (one buffer row each): after warming up, time the
  // readings that trigger a training against those that do not.
  const set = generateDataset({ devices: 2, days: quick ? 8 : 14, intervalMs: 600_000, rates: { spike: 0, drift: 0, stuck: 0, correlation: 0 } });
  const scorer = new AnomalyScorer();
  const trainings: number[] = [];
  for (const r of set.readings) {
    const before = scorer.stats().forestsTrained;
    const t0 = performance.now();
    scorer.score(r);
    const ms = performance.now() - t0;
    if (scorer.stats().forestsTrained > before && r.time > set.options.start + 4 * DAY_MS) trainings.push(ms);
  }
  trainings.sort((a, b) => a - b);
  return { trainings: trainings.length, medianMs: trainings[trainings.length >> 1] ?? NaN, maxMs: trainings[trainings.length - 1] ?? NaN };
}

function fleet() {
  const devices = quick ? 1000 : DEFAULT_ANOMALY_PARAMS.maxDevices;
  const days = 3;
  const intervalMs = 600_000;
  const steps = (days * DAY_MS) / intervalMs;
  const start = Date.UTC(2026, 0, 5);
  const rng = new Mulberry32(42);
  const sims = Array.from({ length: devices }, (_, i) => {
    const profile = PROFILES[i % PROFILES.length] as Profile;
    return { id: `${profile.name}-${i}`, profile, state: profile.init(rng), offset: Math.floor(rng.next() * intervalMs) };
  });
  gc?.();
  const heap0 = process.memoryUsage().heapUsed;
  const rss0 = process.memoryUsage().rss;
  const scorer = new AnomalyScorer();
  let scored = 0;
  let seconds = 0;
  const batch: ScoredReading[] = new Array(devices);
  for (let s = 0; s < steps; s++) {
    for (let i = 0; i < devices; i++) {
      const d = sims[i] as (typeof sims)[number];
      const t = start + d.offset + s * intervalMs;
      batch[i] = { device: d.id, time: t, fields: d.profile.step(d.state, t, rng, false) };
    }
    const t0 = performance.now();
    for (const r of batch) scorer.score(r);
    seconds += (performance.now() - t0) / 1000;
    scored += devices;
  }
  gc?.();
  const stats = scorer.stats();
  const heapGrowth = process.memoryUsage().heapUsed - heap0;
  const rssGrowth = process.memoryUsage().rss - rss0;
  const ready = sims.filter((d) => scorer.forestReady(d.id)).length;
  return {
    devices: stats.devices,
    devicesWithForest: ready,
    readings: scored,
    readingsPerSecond: Math.round(scored / seconds),
    typedArrayBytesPerDevice: Math.round(scorer.bytes / stats.devices),
    heapGrowthPerDeviceKiB: Math.round(heapGrowth / stats.devices / 102.4) / 10,
    rssGrowthMiB: mib(rssGrowth),
    worstCaseBytesPerDevice: worstCaseBytesPerDevice(DEFAULT_ANOMALY_PARAMS),
    forestsTrained: stats.forestsTrained,
    gcExposed: gc !== undefined,
  };
}

const training = trainingCost();
const t = throughputRun(training);
const f = fleet();
const result = { when: new Date().toISOString(), node: process.version, cpu: cpus()[0]?.model ?? 'unknown', quick, throughput: t, training, fleet: f };
const rate = (n: number) => n.toLocaleString('en');
const md = [
  `One core (${result.cpu}), Node ${result.node}${quick ? ', quick run' : ''}.`,
  '',
  '| scenario | readings | readings/s | µs per reading | forest trainings meanwhile | µs per reading, trainings aside |',
  '|---|---|---|---|---|---|',
  `| ${t.devices} devices, first 2 days (no forest yet) | ${rate(t.young.readings)} | ${rate(t.young.readingsPerSecond)} | ${t.young.microsecondsPerReading.toFixed(2)} | ${t.young.forestsTrained} | ${t.young.scoringMicrosecondsPerReading.toFixed(2)} |`,
  `| ${t.devices} devices, days 4 to ${t.days} (${t.devicesWithForest} of ${t.devices} with a forest) | ${rate(t.withForests.readings)} | ${rate(t.withForests.readingsPerSecond)} | ${t.withForests.microsecondsPerReading.toFixed(2)} | ${t.withForests.forestsTrained} | ${t.withForests.scoringMicrosecondsPerReading.toFixed(2)} |`,
  `| ${rate(f.devices)} devices, a reading every 10 min for 3 days (${rate(f.devicesWithForest)} with a forest) | ${rate(f.readings)} | ${rate(f.readingsPerSecond)} | ${(1e6 / f.readingsPerSecond).toFixed(2)} | ${rate(f.forestsTrained)} | |`,
  '',
  `One forest training (features, 32 trees, threshold): median ${training.medianMs.toFixed(2)} ms, longest ${training.maxMs.toFixed(2)} ms (${training.trainings} trainings).`,
  '',
  `Memory with ${rate(f.devices)} devices: ${rate(f.typedArrayBytesPerDevice)} bytes of typed arrays per device, heap growth ${f.heapGrowthPerDeviceKiB} KiB per device${f.gcExposed ? '' : ' (run with --expose-gc for a settled figure)'}, RSS growth ${f.rssGrowthMiB} MiB in all; worst case under the default parameters ${rate(f.worstCaseBytesPerDevice)} bytes of typed arrays per device.`,
].join('\n');
const out = join(import.meta.dirname, 'results');
mkdirSync(out, { recursive: true });
if (!quick) {
  writeFileSync(join(out, 'anomaly.json'), JSON.stringify(result, null, 2) + '\n');
  writeFileSync(join(out, 'anomaly.md'), md + '\n');
}
process.stdout.write(md + '\n');
