import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { isFieldStreamError } from '../../shared/errors.ts';
import { generateDataset } from '../../internal-network/console/anomaly/dataset.ts';
import { evaluate, type DetectorName, type DetectorResult } from '../../internal-network/console/anomaly/evaluate.ts';
import { averagePathLength, IsolationForest } from '../../internal-network/console/anomaly/iforest.ts';
import { anomalyParams, DEFAULT_ANOMALY_PARAMS, worstCaseBytesPerDevice } from '../../internal-network/console/anomaly/params.ts';
import { Mulberry32 } from '../../internal-network/console/anomaly/prng.ts';
import { MAD_SCALE, RollingWindow } from '../../internal-network/console/anomaly/rolling.ts';
import { AnomalyScorer } from '../../internal-network/console/anomaly/scorer.ts';
import { MAX_SPIKE_SCORE } from '../../internal-network/console/anomaly/field.ts';
import { toLine } from '../../internal-network/distributor/sinks/line-protocol.ts';
import type { Anomaly } from '../../internal-network/console/anomaly/types.ts';
import { AnomalyRunner, readingOf } from '../../internal-network/console/anomaly-runner.ts';
import { Fleet } from '../../internal-network/console/fleet/fleet.ts';
import { consoleMetrics, noFeedRefusals, noManageAuthFailures } from '../../internal-network/console/metrics.ts';
import type { OwnPointsWriter } from '../../internal-network/console/own-points.ts';
import { CONSOLE, LIMITS } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';
import { parseExposition } from '../helpers/exposition.ts';

const MINUTE = 60_000;
const T0 = Date.UTC(2026, 0, 5);

/** c(n) straight from its definition, 2 H(n-1) - 2 (n-1) / n, H summed term by term. */
function cByDefinition(n: number): number {
  if (n <= 1) return 0;
  let h = 0;
  for (let i = 1; i <= n - 1; i++) h += 1 / i;
  return 2 * h - (2 * (n - 1)) / n;
}

function gaussianCloud(n: number, seed: number): Float64Array {
  const rng = new Mulberry32(seed);
  const data = new Float64Array(n * 2);
  for (let i = 0; i < data.length; i++) data[i] = rng.normal();
  return data;
}

describe('Isolation Forest', () => {
  const data = gaussianCloud(1000, 11);

  it('c(n) is the average path length of an unsuccessful search in a binary search tree', () => {
    assert.equal(averagePathLength(0), 0);
    assert.equal(averagePathLength(1), 0);
    assert.equal(averagePathLength(2), 1);
    assert.ok(Math.abs(averagePathLength(3) - (2 * 1.5 - 4 / 3)) < 1e-12);
    for (const n of [5, 16, 100, 256, 1024, 1025, 5000]) {
      assert.ok(Math.abs(averagePathLength(n) - cByDefinition(n)) < 1e-9, `c(${n})`);
    }
    assert.ok(Math.abs(averagePathLength(256) - 10.2487) < 1e-4);
    for (let n = 2; n < 2000; n++) assert.ok(averagePathLength(n + 1) > averagePathLength(n), `c grows at ${n}`);
  });

  it('grows trees on subsamples of psi rows to the height limit ceil(log2 psi)', () => {
    const f = IsolationForest.train(data, 1000, 2, { trees: 32, sampleSize: 256, seed: 1 });
    assert.equal(f.sampleSize, 256);
    assert.equal(f.heightLimit, 8);
    assert.equal(f.cPsi, averagePathLength(256));
    assert.ok(f.nodes <= 32 * 511);
    // Fewer rows than psi: every row, and a lower height limit.
    const small = IsolationForest.train(data, 100, 2, { trees: 8, sampleSize: 256, seed: 1 });
    assert.equal(small.sampleSize, 100);
    assert.equal(small.heightLimit, 7);
  });

  it('is the same forest under the same seed, and another under another', () => {
    const a = IsolationForest.train(data, 1000, 2, { trees: 32, sampleSize: 256, seed: 7 });
    const b = IsolationForest.train(data, 1000, 2, { trees: 32, sampleSize: 256, seed: 7 });
    const c = IsolationForest.train(data, 1000, 2, { trees: 32, sampleSize: 256, seed: 8 });
    const probes = Array.from({ length: 50 }, (_, i) => [Math.sin(i) * 3, Math.cos(i * 1.7) * 3]);
    assert.deepEqual(probes.map((x) => a.pathLength(x)), probes.map((x) => b.pathLength(x)));
    assert.notDeepEqual(probes.map((x) => a.pathLength(x)), probes.map((x) => c.pathLength(x)));
  });

  for (const rangeAware of [false, true]) {
    it(`scores an obvious outlier above every inlier (${rangeAware ? 'range-aware' : "the paper's"} scoring)`, () => {
      const f = IsolationForest.train(data, 1000, 2, { trees: 32, sampleSize: 256, seed: 1, rangeAware });
      const rng = new Mulberry32(99);
      const inliers = Array.from({ length: 200 }, () => f.score([rng.normal(), rng.normal()])).sort((x, y) => x - y);
      const outlier = f.score([6, 6]);
      assert.ok(outlier > (inliers[199] as number), `outlier ${outlier} above the most isolated inlier ${inliers[199]}`);
      assert.ok(outlier > 0.7, `outlier ${outlier}`);
      assert.ok((inliers[100] as number) < 0.5, `median inlier ${inliers[100]}`);
    });
  }

  it("saturates beyond the data under the paper's scoring; range-aware scoring keeps telling far from farther", () => {
    const paper = IsolationForest.train(data, 1000, 2, { trees: 32, sampleSize: 256, seed: 1 });
    // Beyond every training row, both points take the same branches: the same score however far.
    assert.equal(paper.score([20, 0]), paper.score([100, 0]));
    const aware = IsolationForest.train(data, 1000, 2, { trees: 32, sampleSize: 256, seed: 1, rangeAware: true });
    assert.ok(aware.score([100, 0]) > aware.score([20, 0]));
    assert.ok(aware.score([20, 0]) > paper.score([20, 0]) + 0.1);
    // Inside the range it is the paper's score exactly.
    assert.equal(aware.score([0.3, -0.2]), paper.score([0.3, -0.2]));
  });

  it('varies little between seeds at 32 trees', () => {
    const scores = Array.from({ length: 10 }, (_, s) => IsolationForest.train(data, 1000, 2, { trees: 32, sampleSize: 256, seed: s + 1 }).score([0.5, 0.5]));
    const mean = scores.reduce((x, y) => x + y) / scores.length;
    const sd = Math.sqrt(scores.reduce((x, y) => x + (y - mean) ** 2, 0) / scores.length);
    assert.ok(sd < 0.025, `standard deviation ${sd}`);
  });
});

describe('rolling median and MAD', () => {
  const naive = (xs: number[]) => {
    const s = [...xs].sort((a, b) => a - b);
    const med = (v: number[]) => (v.length % 2 ? (v[v.length >> 1] as number) : ((v[v.length / 2 - 1] as number) + (v[v.length / 2] as number)) / 2);
    const m = med(s);
    return { median: m, mad: med(s.map((x) => Math.abs(x - m)).sort((a, b) => a - b)) };
  };

  it('gives the known values', () => {
    const w = new RollingWindow(5);
    for (const x of [1, 2, 3, 4, 100]) w.push(x);
    assert.equal(w.median(), 3);
    assert.equal(w.mad(3), 1);
    const even = new RollingWindow(4);
    for (const x of [4, 1, 3, 2]) even.push(x);
    assert.equal(even.median(), 2.5);
    assert.equal(even.mad(2.5), 1);
    // The oldest values leave: 3, 4, 5 remain.
    const ring = new RollingWindow(3);
    for (const x of [1, 2, 3, 4, 5]) ring.push(x);
    assert.equal(ring.count, 3);
    assert.equal(ring.median(), 4);
    assert.equal(ring.mad(4), 1);
  });

  it('agrees with sorting the window, and madAtLeast with the MAD', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 40 }), fc.array(fc.integer({ min: -50, max: 50 }), { minLength: 1, maxLength: 200 }), fc.integer({ min: 0, max: 30 }), (cap, xs, d) => {
        const w = new RollingWindow(cap);
        for (const x of xs) w.push(x / 4);
        const expected = naive(xs.slice(-cap).map((x) => x / 4));
        assert.equal(w.median(), expected.median);
        assert.equal(w.mad(w.median()), expected.mad);
        // madAtLeast may say "maybe not", never "yes" wrongly.
        if (w.madAtLeast(w.median(), d / 4)) assert.ok(expected.mad >= d / 4);
        if (expected.mad < d / 4) assert.ok(!w.madAtLeast(w.median(), d / 4));
      }),
    );
  });

  it('1.4826 MAD estimates the standard deviation of Gaussian data', () => {
    const rng = new Mulberry32(3);
    const w = new RollingWindow(20_000);
    for (let i = 0; i < 20_000; i++) w.push(10 + 2 * rng.normal());
    const sigma = MAD_SCALE * w.mad(w.median());
    assert.ok(Math.abs(sigma - 2) < 0.06, `estimated ${sigma}`);
  });
});

describe('spike and stuck detectors', () => {
  const feed = (scorer: AnomalyScorer, values: number[], field = 'x', device = 'd1'): Anomaly[][] =>
    values.map((v, i) => scorer.score({ device, time: T0 + i * MINUTE, fields: { [field]: v } }));

  it('flag a spike at once, with its field, value and robust z, and nothing in the noise around it', () => {
    const rng = new Mulberry32(5);
    const values = Array.from({ length: 400 }, () => 20 + 0.5 * rng.normal());
    values[300] = 30; // 20 noise units
    const found = feed(new AnomalyScorer(), values);
    const spikes = found.flat().filter((a) => a.detector === 'mad');
    assert.equal(spikes.length, 1, JSON.stringify(spikes));
    assert.deepEqual({ ...spikes[0], score: undefined }, { device: 'd1', field: 'x', detector: 'mad', kind: 'spike', value: 30, time: T0 + 300 * MINUTE, score: undefined });
    assert.ok((spikes[0]?.score as number) > 15 && (spikes[0]?.score as number) < 25, `z ${spikes[0]?.score}`);
  });

  it('give a finite score however far out a finite value lies (capped at MAX_SPIKE_SCORE), which line protocol can carry', () => {
    const rng = new Mulberry32(3);
    const values = Array.from({ length: 100 }, () => 20 + 0.1 * rng.normal());
    // The largest finite doubles, as the contract allows (a firmware's DBL_MAX "no reading"), of
    // both signs: the second's distance from a median pulled up by the first overflows too.
    values.push(Number.MAX_VALUE, -Number.MAX_VALUE, ...Array.from({ length: 40 }, (_, i) => (i % 2 ? 1 : -1) * Number.MAX_VALUE));
    const found = feed(new AnomalyScorer(), values).flat();
    assert.ok(found.length >= 2, JSON.stringify(found));
    for (const a of found) assert.ok(Number.isFinite(a.score) && a.score <= MAX_SPIKE_SCORE, `score ${a.score}`);
    const first = found[0] as Anomaly;
    assert.deepEqual([first.detector, first.value, first.score], ['mad', Number.MAX_VALUE, MAX_SPIKE_SCORE]);
    // What the console writes for it (own-points: measurement anomalies) is a line InfluxDB takes.
    const line = toLine({ measurement: 'anomalies', tags: { device: first.device, field_name: first.field, detector: first.detector }, fields: { score: first.score, value: first.value as number }, time: first.time });
    assert.match(String(line), / score=1000000000,value=1\.7976931348623157e\+308 /);
  });

  it('judge values against a window of values near DBL_MAX: its median is no Infinity', () => {
    // The two middle values of an even window, summed before they were halved, overflowed: the
    // median was Infinity, every distance from it too, and no value was a spike, however far.
    const w = RollingWindow.of(4, [1.7e308, 1.6e308, 1.7e308, 1.6e308]);
    assert.ok(Math.abs(w.median() - 1.65e308) < 1e294, `median ${w.median()}`);
    const values: number[] = Array.from({ length: 64 }, (_, i) => (i % 2 ? 1.6e308 : 1.7e308));
    values.push(0);
    const found = feed(new AnomalyScorer(), values).flat();
    assert.deepEqual(
      found.map((a) => [a.detector, a.value]),
      [['mad', 0]],
    );
    assert.ok(Number.isFinite(found[0]?.score) && (found[0]?.score as number) > 7, JSON.stringify(found));
  });

  it('with MAD = 0, take the field’s resolution as the least scale; leave a never-changing field’s first change unjudged', () => {
    // A whole-number sensor reading 10, with an 11 every fifth reading: the MAD is 0.
    const values: number[] = Array.from({ length: 200 }, (_, i) => (i % 5 === 0 ? 11 : 10));
    values.push(11, 15, 20);
    const found = feed(new AnomalyScorer(), values).slice(200);
    assert.deepEqual(found.map((as) => as.filter((a) => a.detector === 'mad').length), [0, 0, 1]);
    // Constant, then a first step (no scale to judge it by), then a jump of 90 such steps.
    const constant = [...Array.from({ length: 100 }, () => 5), 5.5, 5, 50];
    const tail = feed(new AnomalyScorer(), constant, 'y').slice(100);
    assert.deepEqual(tail.map((as) => as.filter((a) => a.detector === 'mad').length), [0, 0, 1]);
  });

  it('report a lively field that repeats one value once, at the stuckMinRun-th repeat', () => {
    const rng = new Mulberry32(6);
    const values = Array.from({ length: 200 }, () => Math.round((20 + rng.normal()) * 100) / 100);
    const frozen = values[199] as number;
    for (let i = 0; i < 40; i++) values.push(frozen);
    values.push(20.3, 19.8);
    const found = feed(new AnomalyScorer(), values);
    const stuckAt = found.flatMap((as, i) => (as.some((a) => a.detector === 'stuck') ? [i] : []));
    // The run counts the first of the identical values: the 30th is reading 199 + 29. Once a run:
    // the repeats after it are the same episode (a consumer knows it lasts until the value moves).
    assert.deepEqual(stuckAt, [228]);
    const first = found[228]?.find((a) => a.detector === 'stuck');
    assert.equal(first?.score, 30);
    assert.equal(first?.value, frozen);
    assert.deepEqual(found.slice(229, 240).flat(), []);
    // When it moves again nothing is flagged: the repeats stayed out of the baseline.
    assert.deepEqual(found.slice(240).flat(), []);
  });

  it('flag a device switching between regimes at each switch, for at most half a window, and not in between', () => {
    // A pump: flow noisy while it runs (06:00-18:00), exactly 0 while it is off, a reading a minute.
    // docs/anomaly-detection.md, "Steps and regimes". Reported on every repeat, and scored against a
    // window the repeats were kept out of, this was 3,216 flags for these 8 switches.
    const rng = new Mulberry32(5);
    const { windowSize, stuckMinRun } = DEFAULT_ANOMALY_PARAMS;
    const values: number[] = [];
    const switches: number[] = [];
    for (let m = 0; m < 4 * 1440; m++) {
      const on = (m / 60) % 24 >= 6 && (m / 60) % 24 < 18;
      if (m > 0 && on !== (values[m - 1] as number) > 0) switches.push(m);
      values.push(on ? Math.round((12 + 0.4 * rng.normal()) * 100) / 100 : 0);
    }
    const found = feed(new AnomalyScorer(), values, 'flow');
    const flagged = found.flatMap((as, m) => as.map((a) => ({ m, a })));
    assert.equal(switches.length, 8);
    for (const { m, a } of flagged) {
      const since = m - Math.max(...switches.filter((s) => s <= m));
      assert.ok(since < windowSize / 2, `${a.detector} flag ${since} readings after a switch`);
    }
    // The pump switched off is stuck (it was lively): reported once a night, the first night aside
    // (a field that never changed is not stuck).
    // Every switch is flagged: switched on after a night, the window holds the night's level (the
    // median accepted it), not the day before's.
    for (const s of switches) assert.ok(flagged.some((f) => f.m >= s && f.m < s + windowSize / 2), `switch at ${s} not flagged`);
    const stuck = flagged.filter((f) => f.a.detector === 'stuck');
    assert.deepEqual(stuck.map((f) => f.m - Math.max(...switches.filter((s) => s <= f.m))), [stuckMinRun - 1, stuckMinRun - 1, stuckMinRun - 1, stuckMinRun - 1]);
    assert.ok(flagged.length <= switches.length * (windowSize / 2), `${flagged.length} flags`);
  });

  it('take a constant that lasts past stuckLevelAfter as the new level: a value near it is no spike', () => {
    // A lively field, then switched off: 0 for 400 readings (past requiredRun + stuckLevelAfter,
    // 30 + 256), then a value a resolution step off 0 (a sensor's noise at rest), then 0 again.
    // With the repeats kept out for good, the window stayed as the step left it (29 zeros, 35 values
    // near 12, the median near 12) and all three were spikes (z 27, 21, 18).
    const rng = new Mulberry32(8);
    const values = Array.from({ length: 200 }, () => Math.round((12 + 0.1 * rng.normal()) * 100) / 100);
    for (let i = 0; i < 400; i++) values.push(0);
    values.push(0.01, 0, 0);
    const found = feed(new AnomalyScorer(), values, 'flow');
    assert.deepEqual(found.slice(600).flat(), [], 'the median took the new level');
    assert.deepEqual(found.flatMap((as, i) => as.filter((a) => a.detector === 'stuck').map(() => i)), [229]);
    // The step itself: flagged while it was less than half the window, never after.
    assert.ok(found.slice(232).every((as) => as.length === 0));
  });

  it('leave a field that changes rarely alone (a battery gauge moving one percent at a time)', () => {
    const values = Array.from({ length: 3000 }, (_, i) => 90 - Math.floor(i / 40));
    const found = feed(new AnomalyScorer(), values, 'battery');
    assert.deepEqual(found.flat(), []);
  });
});

describe('the Isolation Forest of a device', () => {
  it('catches a slow drift of a steady field that no single value betrays, and names it', () => {
    // Two independent steady fields, a reading a minute; from day 4 on, `a` drifts by 10 of its
    // noise units over 6 hours. No value is ever far from the one before it.
    const rng = new Mulberry32(4);
    const scorer = new AnomalyScorer();
    const driftStart = 4 * 1440;
    const flagged: Array<{ i: number; a: Anomaly }> = [];
    for (let i = 0; i < 5 * 1440; i++) {
      const offset = i >= driftStart ? Math.min(1, (i - driftStart) / 360) * 0.2 : 0;
      for (const a of scorer.score({ device: 'd', time: T0 + i * MINUTE, fields: { a: 50 + 0.02 * rng.normal() + offset, b: 230 + 0.5 * rng.normal() } })) flagged.push({ i, a });
    }
    assert.equal(scorer.forestReady('d'), true);
    assert.deepEqual(flagged.filter((f) => f.i < driftStart), [], 'nothing before the drift');
    const first = flagged[0];
    assert.ok(first !== undefined && first.i - driftStart <= 120, `first flag ${first ? first.i - driftStart : '-'} readings into the drift`);
    assert.deepEqual({ detector: first.a.detector, field: first.a.field, kind: first.a.kind, fields: first.a.fields }, { detector: 'iforest', field: '*', kind: 'drift', fields: ['a'] });
    assert.ok(first.a.score > 0.6 && first.a.score < 1);
  });

  it('takes a lasting change for the new normal within about a day, though some of its readings go unflagged', () => {
    // Two bound fields (y = 2x) until day 5, then bound the other way for good (y = 40 - 2x). The
    // forest flags most readings of the new relation, not all: a reading it let pass, one row in
    // thirty, ended the run of rows kept out before it reached forestAdaptAfter, so the device never
    // took its new normal, nor trained again, and every reading was flagged for six days.
    const rng = new Mulberry32(3);
    const scorer = new AnomalyScorer();
    const DAY = 1440;
    const change = 5 * DAY;
    const flags = new Uint32Array(9);
    for (let i = 0; i < 9 * DAY; i++) {
      const x = 10 + 3 * Math.sin((2 * Math.PI * (i % DAY)) / DAY) + 0.2 * rng.normal();
      const y = (i < change ? 2 * x : 40 - 2 * x) + 0.2 * rng.normal();
      const forest = scorer.score({ device: 'd', time: T0 + i * MINUTE, fields: { x, y } }).filter((a) => a.detector === 'iforest');
      flags[Math.floor(i / DAY)] = (flags[Math.floor(i / DAY)] as number) + forest.length;
    }
    assert.ok((flags[5] as number) > DAY / 2, `${flags[5]} readings flagged on the day of the change`);
    // A day and a half on: at most the forest's usual false alarms.
    for (const day of [7, 8]) assert.ok((flags[day] as number) < 30, `${flags[day]} readings flagged on day ${day}, ${day - 5} days after the change: ${flags.join(', ')}`);
  });

  it('trains no more often for readings whose times jump back and forth: a row per forestSampleIntervalMs of the device\'s time, not per step back', () => {
    // Four days of a reading a minute; the same readings with every second one dated half an hour
    // back (a device with two clocks, or a hostile one). A row at every step back made a row of
    // every reading, and a training every forestRetrainEvery readings.
    const { readings } = generateDataset({ seed: 3, devices: 1, days: 4, rates: { spike: 0, drift: 0, stuck: 0, correlation: 0 } });
    const trainings = (shift: (i: number) => number) => {
      let clock = 0;
      const scorer = new AnomalyScorer({}, { clock: () => clock++ });
      readings.forEach((r, i) => scorer.score({ ...r, time: r.time - shift(i) }));
      return scorer.stats().forestsTrained;
    };
    const inOrder = trainings(() => 0);
    assert.ok(inOrder > 0, 'the forest is trained in four days');
    const jumping = trainings((i) => (i % 2 === 1 ? 30 * MINUTE : 0));
    assert.ok(jumping <= inOrder + 1, `${jumping} trainings against ${inOrder} for the readings in order`);
    // A clock stepped back for good (set again a day back) is followed: rows, and trainings, go on.
    const stepped = trainings((i) => (i >= 3 * 1440 ? 86_400_000 : 0));
    assert.ok(stepped >= inOrder, `${stepped} trainings against ${inOrder}`);
  });

  it('takes no stray date (a restart before the clock is set: 1970) for a day of baselines', () => {
    // A weather station without events, 5 days: the same flags, and its forest no sooner, whether
    // or not one reading on its first day (or its very first, or a later one) is dated 1970 or far ahead.
    const { readings } = generateDataset({ seed: 7, devices: 1, days: 5, rates: { spike: 0, drift: 0, stuck: 0, correlation: 0 } });
    const run = (stray: { at: number; time: number } | undefined) => {
      let clock = 0;
      const scorer = new AnomalyScorer({}, { clock: () => clock++ });
      let forest = 0;
      let readyAt = -1;
      readings.forEach((r, i) => {
        if (i === stray?.at) scorer.score({ ...r, time: stray.time });
        forest += scorer.score(r).filter((a) => a.detector === 'iforest').length;
        if (readyAt < 0 && scorer.forestReady(r.device)) readyAt = i;
      });
      return { forest, readyAt };
    };
    const plain = run(undefined);
    assert.ok(plain.readyAt >= 2 * 1440, `forest at reading ${plain.readyAt}`);
    assert.equal(plain.forest, 0);
    for (const stray of [{ at: 10, time: 0 }, { at: 3 * 1440, time: 0 }, { at: 10, time: 8.64e15 }]) assert.deepEqual(run(stray), plain, JSON.stringify(stray));
    const first = run({ at: 0, time: 0 });
    assert.ok(first.readyAt >= 2 * 1440 && first.forest <= 2, JSON.stringify(first));
  });
});

describe('bounded memory', () => {
  it('tracks at most maxDevices: a new device is refused unless the least recently heard from one is idle', () => {
    // Readings arrive as they are dated here: the scorer's clock and the readings' times agree.
    let now = 0;
    const scorer = new AnomalyScorer({ maxDevices: 3, deviceIdleMs: 3_600_000 }, { clock: () => now });
    const read = (device: string, minute: number) => {
      now = minute * MINUTE;
      return scorer.score({ device, time: T0 + minute * MINUTE, fields: { x: 1 } });
    };
    read('a', 0);
    read('b', 1);
    read('c', 2);
    read('d', 3);
    const st = scorer.stats();
    assert.deepEqual([st.devices, st.devicesRefused, st.devicesEvicted], [3, 1, 0]);
    read('b', 70);
    read('c', 70);
    // 'a' has been silent for over an hour: 'e' takes its place.
    read('e', 71);
    assert.equal(scorer.stats().devices, 3);
    assert.equal(scorer.stats().devicesEvicted, 1);
    assert.equal(scorer.forestReady('a'), undefined);
    assert.equal(scorer.forestReady('b'), false);
  });

  it("judges idleness by when readings arrive, not by their times: a new device's clock ahead evicts no device that is sending", () => {
    // docs: a burst of new ids cannot wipe the baselines of the devices that are sending.
    let now = 0;
    const scorer = new AnomalyScorer({ maxDevices: 2, deviceIdleMs: 3_600_000 }, { clock: () => now });
    for (let m = 0; m < 60; m++) {
      now = m * MINUTE;
      scorer.score({ device: 'a', time: T0 + m * MINUTE, fields: { x: m % 7 } });
      scorer.score({ device: 'b', time: T0 + m * MINUTE, fields: { x: m % 5 } });
    }
    // A new id whose readings are dated three hours ahead, arriving a minute after a's and b's last.
    now = 60 * MINUTE;
    scorer.score({ device: 'intruder', time: T0 + 3 * 3_600_000, fields: { x: 1 } });
    assert.deepEqual([scorer.stats().devicesEvicted, scorer.stats().devicesRefused], [0, 1]);
    assert.equal(scorer.forestReady('a'), false, "a's baselines are kept");
    assert.equal(scorer.forestReady('intruder'), undefined);
  });

  it('lets a device that once sent a time far in the future go idle like any other', () => {
    let now = 0;
    const scorer = new AnomalyScorer({ maxDevices: 2, deviceIdleMs: 3_600_000 }, { clock: () => now });
    // One reading dated in 2100 (a real-time clock's glitch), then silence.
    scorer.score({ device: 'glitch', time: Date.UTC(2100, 0, 1), fields: { x: 1 } });
    for (let m = 0; m < 3 * 1440; m += 10) {
      now = m * MINUTE;
      scorer.score({ device: 'b', time: T0 + m * MINUTE, fields: { x: m % 5 } });
    }
    // Three days of arrivals later, 'glitch' has been silent for days: a new device takes its place.
    now = 3 * 1440 * MINUTE;
    scorer.score({ device: 'c', time: T0 + 3 * 1440 * MINUTE, fields: { x: 1 } });
    assert.deepEqual([scorer.stats().devicesRefused, scorer.stats().devicesEvicted], [0, 1]);
    assert.equal(scorer.forestReady('glitch'), undefined);
    assert.equal(scorer.forestReady('c'), false);
  });

  it('holds its clock from going back: a device just heard from is not idle after a clock stepped back', () => {
    let now = 10 * 3_600_000;
    const scorer = new AnomalyScorer({ maxDevices: 2, deviceIdleMs: 3_600_000 }, { clock: () => now });
    scorer.score({ device: 'a', time: T0, fields: { x: 1 } });
    now = 0; // a clock (not the default, monotonic one) stepped back ten hours
    scorer.score({ device: 'b', time: T0, fields: { x: 1 } });
    now = 0.1 * 3_600_000;
    scorer.score({ device: 'a', time: T0 + MINUTE, fields: { x: 2 } });
    now = 1.2 * 3_600_000;
    // b arrived three readings ago: taken at the stepped-back time it would look 1.2 hours silent.
    scorer.score({ device: 'c', time: T0 + MINUTE, fields: { x: 1 } });
    assert.deepEqual([scorer.stats().devicesRefused, scorer.stats().devicesEvicted], [1, 0]);
    assert.equal(scorer.forestReady('b'), false);
  });

  it('scores a turn of readings for at most CONSOLE.anomalyTurnMaxMs, so readings that grow forests (after a restart, every device at once) do not hold the console for seconds', async () => {
    // A scorer each reading of which costs 5 ms, as a forest grown does (3.5 ms): 500 a turn held
    // the event loop 2.5 s. The turns are told apart by a setImmediate chain running beside them.
    let turn = 0;
    const perTurn = new Map<number, number>();
    const slow = {
      score: () => {
        const until = performance.now() + 5;
        while (performance.now() < until) {
          /* a forest grown */
        }
        perTurn.set(turn, (perTurn.get(turn) ?? 0) + 1);
        return [];
      },
    };
    const runner = new AnomalyRunner(slow, () => {}, createLogger('test', 'silent'));
    let ticking = true;
    const tick = () => {
      turn++;
      if (ticking) setImmediate(tick);
    };
    setImmediate(tick);
    for (let i = 0; i < 60; i++) runner.offer({ device: `d${i}`, time: T0, fields: { x: 1 } });
    while (runner.pending > 0) await new Promise((r) => setImmediate(r));
    ticking = false;
    assert.equal(runner.scored, 60);
    const most = Math.max(...perTurn.values());
    assert.ok(most <= Math.ceil(CONSOLE.anomalyTurnMaxMs / 5) + 1, `${most} readings of 5 ms scored in one turn`);
  });

  it('logs a scorer failing on every reading at most CONSOLE.anomalyFailureLogMaxPerWindow times a window, with its code, and goes on', async () => {
    // Each failure was a line of its own, without a code: at the feed's rate, the log's whole volume.
    const lines: Array<Record<string, unknown>> = [];
    const log = createLogger('test', 'info', new Writable({ write: (chunk: Buffer, _e, cb) => (lines.push(...chunk.toString().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>)), cb()) }));
    const runner = new AnomalyRunner({ score: () => { throw new Error('a fault of the scorer'); } }, () => {}, log);
    for (let i = 0; i < 200; i++) runner.offer({ device: `d${i}`, time: T0, fields: { x: 1 } });
    while (runner.pending > 0) await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    const failures = lines.filter((l) => l.msg === 'anomaly scoring failed for a reading');
    assert.equal(failures.length, CONSOLE.anomalyFailureLogMaxPerWindow);
    assert.ok(failures.every((l) => l.code === 'CONSOLE_INTERNAL'));
  });

  it('holds at most CONSOLE.anomalyQueueMaxValues values waiting to be scored, whatever the readings\' size', async () => {
    // Readings of the contract's most fields, offered faster than they are scored (a turn of the
    // event loop each time): anomalyQueueMax of them were 51 million values, some 1.25 GB of heap.
    const runner = new AnomalyRunner({ score: () => [] }, () => {}, createLogger('test', 'silent'));
    const fields = Object.fromEntries(Array.from({ length: LIMITS.readingMaxFields }, (_, k) => [`f${k}`, k]));
    const fit = Math.floor(CONSOLE.anomalyQueueMaxValues / LIMITS.readingMaxFields);
    for (let i = 0; i < fit + 1000; i++) runner.offer({ device: 'd', time: T0 + i, fields });
    assert.equal(runner.pending, fit);
    assert.equal(runner.skipped, 1000);
    while (runner.pending > 0) await new Promise((r) => setImmediate(r));
    assert.equal(runner.scored, fit);
    // Scored, they leave room: readings are taken again.
    for (let i = 0; i < 3; i++) runner.offer({ device: 'd', time: T0 + i, fields: { x: i } });
    assert.equal(runner.pending, 3);
    assert.equal(runner.skipped, 1000);
  });

  it("the console's metrics tell the readings of devices past maxDevices (not scored) from those scored", async () => {
    // 10,000 devices by default, while the console tracks 100,000: the readings of the others were
    // counted as scored, and nothing said that most of the fleet had no anomaly detection.
    const scorer = new AnomalyScorer({ maxDevices: 2 });
    const runner = new AnomalyRunner(scorer, () => {}, createLogger('test', 'silent'));
    const own = { written: 0, dropped: 0, refused: 0 } as unknown as OwnPointsWriter;
    const stats = { feedMessages: 0, feedRefused: noFeedRefusals(), feedDropped: 0, manageAuthFailures: noManageAuthFailures() };
    const m = consoleMetrics({ fleet: new Fleet({ staleAfterMs: 180_000 }), stats, runner, own, streams: () => 0, brokerConnected: () => true }, { processMetrics: false });
    for (let i = 0; i < 10; i++) for (const d of ['a', 'b', 'c', 'd', 'e']) runner.offer({ device: d, time: T0 + i * MINUTE, fields: { x: i } });
    while (runner.pending > 0) await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    const samples = parseExposition(await m.registry.metrics());
    assert.equal(samples.get('fieldstream_console_readings_scored_total{service="console"}'), 20);
    assert.equal(samples.get('fieldstream_console_readings_unscored_total{service="console"}'), 30);
    assert.equal(samples.get('fieldstream_console_anomaly_devices{service="console"}'), 2);
  });

  it('scores at most maxFieldsPerDevice fields of a device and ignores values that are not finite', () => {
    const scorer = new AnomalyScorer({ maxFieldsPerDevice: 4 });
    const fields = Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`f${i}`, i]));
    scorer.score({ device: 'd', time: T0, fields: { ...fields, bad: NaN, worse: Infinity } });
    assert.equal(scorer.stats().fieldsRefused, 6);
    assert.equal(scorer.stats().valuesIgnored, 2);
  });

  it('forgets a field the device stopped sending (a firmware renamed it): its slot and the forest go to the fields it sends now', () => {
    // Two slots: a, b for four days, then a is renamed c. Kept for good, a held its slot (c was
    // refused for ever, never scored) and its forest column (NaN in every row from then on).
    const scorer = new AnomalyScorer({ maxFieldsPerDevice: 2 });
    const p = scorer.params;
    const day = 24 * 60 * MINUTE;
    const rng = new Mulberry32(5);
    const found: Anomaly[] = [];
    const read = (t: number, first: 'a' | 'c', value?: number) => {
      const level = 20 + 3 * Math.sin((2 * Math.PI * t) / day) + 0.1 * rng.normal();
      found.push(...scorer.score({ device: 'd', time: T0 + t, fields: { [first]: value ?? level, b: 50 + 0.2 * rng.normal() } }));
    };
    let t = 0;
    for (; t < 4 * day; t += 10 * MINUTE) read(t, 'a');
    assert.equal(scorer.forestReady('d'), true);
    const lastOfA = t - 10 * MINUTE;
    for (; t < lastOfA + p.fieldForgetMs; t += 10 * MINUTE) read(t, 'c');
    assert.equal(scorer.stats().fieldsForgotten, 0, 'not before fieldForgetMs');
    assert.ok(scorer.stats().fieldsRefused > 0, 'c had no slot meanwhile');
    const refused = scorer.stats().fieldsRefused;
    read(t, 'c');
    t += 10 * MINUTE;
    assert.equal(scorer.stats().fieldsForgotten, 1);
    assert.equal(scorer.forestReady('d'), false, "the forest's fields changed: it starts again");
    const forgottenAt = t;
    for (; t < forgottenAt + 3 * day; t += 10 * MINUTE) read(t, 'c');
    assert.equal(scorer.stats().fieldsRefused, refused + 1, 'c has a slot from then on (its reading at the forgetting aside)');
    assert.equal(scorer.forestReady('d'), true, 'a forest of b and c');
    const before = found.length;
    read(t, 'c', 1e4);
    assert.ok(found.slice(before).some((a) => a.field === 'c' && a.detector === 'mad'), JSON.stringify(found.slice(before)));
  });

  it('keeps a field that is only sent now and then (hourly among readings of every minute), and when the clock jumps ahead', () => {
    const scorer = new AnomalyScorer();
    for (let m = 0; m < 10 * 24 * 60; m++) {
      const fields: Record<string, number> = { x: (m * 7) % 13 };
      if (m % 60 === 0) fields.battery = 90 - m / 1000;
      scorer.score({ device: 'd', time: T0 + m * MINUTE, fields });
      // Once, its clock jumps ten days ahead in a reading without the battery: nothing is forgotten.
      if (m === 5 * 24 * 60 + 30) scorer.score({ device: 'd', time: T0 + m * MINUTE + 10 * 24 * 60 * MINUTE, fields: { x: 3 } });
    }
    assert.equal(scorer.stats().fieldsForgotten, 0);
  });

  it("lets no field's out-of-range values stop its device's forest: a first reading of DBL_MAX (a sensor's \"no reading\" at boot) keeps the daily baselines finite", () => {
    // Relative to that first value, every later median lies beyond a Float32: each bin of the
    // field's daily baseline became -Infinity, then NaN at its next update (-Infinity + Infinity),
    // and stayed NaN. No row of the device was complete again: no forest, for any of its fields.
    const scorer = new AnomalyScorer();
    const day = 24 * 60 * MINUTE;
    const rng = new Mulberry32(9);
    for (let t = 0; t < 4 * day; t += 10 * MINUTE) {
      const temperature = 20 + 3 * Math.sin((2 * Math.PI * t) / day) + 0.1 * rng.normal();
      const pressure = t === 0 ? Number.MAX_VALUE : 1013 + rng.normal();
      scorer.score({ device: 'd', time: T0 + t, fields: { temperature, humidity: 60 + rng.normal(), pressure } });
    }
    assert.equal(scorer.forestReady('d'), true);
    assert.ok(scorer.stats().forestsTrained > 0);
  });

  it('makes the training buffer of a device only when its first row can enter it (from its second day), not at its first reading', () => {
    const p = DEFAULT_ANOMALY_PARAMS;
    const scorer = new AnomalyScorer();
    const day = 24 * 60 * MINUTE;
    const read = (t: number) => scorer.score({ device: 'd', time: T0 + t, fields: { temperature: 20 + Math.sin(t / day) + (t % 7) / 100, humidity: 60 + (t % 11) / 10 } });
    // Its windows only: 2 fields of windowSize values, 16 bytes each, and the daily baselines.
    read(0);
    const first = scorer.bytes;
    assert.ok(first < 2 * p.forestBufferSize * 2 * 4, `${first} bytes after the first reading`);
    for (let t = MINUTE; t < day; t += 10 * MINUTE) read(t);
    const buffer = p.forestBufferSize * 2 * 2 * 4; // rows × (value and drift) × 2 fields × Float32
    assert.ok(scorer.bytes < first + buffer, `${scorer.bytes} bytes after a day: no buffer yet`);
    for (let t = day; t < 2 * day; t += 10 * MINUTE) read(t);
    assert.ok(scorer.bytes >= first + buffer, `${scorer.bytes} bytes in the second day: the buffer is made`);
  });

  it('holds no more than its parameters allow, however long the stream', () => {
    const set = generateDataset({ seed: 3, devices: 3, days: 4 });
    const scorer = new AnomalyScorer();
    for (const r of set.readings) scorer.score(r);
    assert.ok(scorer.stats().forestsTrained > 0);
    assert.ok(scorer.bytes <= 3 * worstCaseBytesPerDevice(DEFAULT_ANOMALY_PARAMS), `${scorer.bytes} bytes`);
    // A window never holds more than windowSize values.
    const w = new RollingWindow(DEFAULT_ANOMALY_PARAMS.windowSize);
    for (let i = 0; i < 1000; i++) w.push(i);
    assert.equal(w.count, DEFAULT_ANOMALY_PARAMS.windowSize);
  });
});

describe('npm run anomaly:eval', () => {
  it('says a wrong argument in one line with its code (exit 64), before the data set is made', () => {
    // --params that was no JSON, or no valid parameters, died with a stack trace, after the data set.
    for (const [args, why] of [
      [['--params', '{'], /--params: .*JSON/],
      [['--params', '{"windowSize": -1}'], /--params: Invalid anomaly parameters — windowSize/],
      [['--days', 'x'], /--days must be a positive integer/],
    ] as const) {
      const r = spawnSync(process.execPath, ['--import', 'tsx', 'scripts/anomaly-eval.ts', ...args], { encoding: 'utf8' });
      assert.equal(r.status, 64, r.stderr);
      assert.match(r.stderr, /^error CONFIG_INVALID: /, r.stderr);
      assert.match(r.stderr, why);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    }
  });
});

describe('the readings scored', () => {
  it('are the stored feed\'s readings with their numeric fields, a field named "__proto__" too', () => {
    // The fields were copied into a plain object: a field a device named "__proto__" (the contract
    // takes any name) set its prototype instead, and was never scored.
    const fields = JSON.parse('{"__proto__": 41.5, "temperature": 20, "label": "x"}') as Record<string, number | string>;
    const r = readingOf({ measurement: 'readings', tags: { device: 'd1' }, fields, time: 1_000 });
    assert.ok(r);
    assert.deepEqual(Object.entries(r.fields), [['__proto__', 41.5], ['temperature', 20]]);
    assert.equal(readingOf({ measurement: 'events', tags: { device: 'd1' }, fields: { x: 1 }, time: 1 }), undefined);
    assert.equal(readingOf({ measurement: 'readings', tags: {}, fields: { x: 1 }, time: 1 }), undefined);
    assert.equal(readingOf({ measurement: 'readings', tags: { device: 'd1' }, fields: { label: 'x' }, time: 1 }), undefined);
  });
});

describe('parameters', () => {
  it('are checked, and a bad one is named', () => {
    assert.deepEqual(anomalyParams(), DEFAULT_ANOMALY_PARAMS);
    for (const [bad, name] of [
      [{ windowSize: 2 }, 'windowSize'],
      [{ madMinSamples: 100 }, 'madMinSamples'],
      [{ forestCalibrationQuantile: 2 }, 'forestCalibrationQuantile'],
      [{ maxFieldsPerDevice: 1000 }, 'maxFieldsPerDevice'],
      [{ nonsense: 1 } as never, '(parameters)'],
    ] as const) {
      assert.throws(
        () => new AnomalyScorer(bad),
        (err) => isFieldStreamError(err, 'CONFIG_INVALID') && err.message.includes(name),
        name,
      );
    }
  });
});

describe('the labelled data set, and the detectors measured on it', () => {
  // Small and fast: 6 devices (two of each kind) over 5 days, events from day 3 on.
  const options = { seed: 7, devices: 6, days: 5, rates: { spike: 6, drift: 1, stuck: 1, correlation: 1 } };
  const set = generateDataset(options);
  const ev = evaluate(new AnomalyScorer(), set.readings, set.events);
  const result = (d: DetectorName) => ev.results.find((r) => r.detector === d) as DetectorResult;

  it('is the same set under the same seed, and labels what it injects', () => {
    const again = generateDataset(options);
    assert.deepEqual(again.readings.slice(0, 2000), set.readings.slice(0, 2000));
    assert.deepEqual(again.events, set.events);
    assert.notDeepEqual(generateDataset({ ...options, seed: 8 }).readings.slice(0, 100), set.readings.slice(0, 100));
    for (const kind of ['spike', 'drift', 'stuck', 'correlation'] as const) assert.ok(ev.events[kind] >= 5, `${kind}: ${ev.events[kind]} events`);
    for (const e of set.events.filter((x) => x.kind === 'stuck')) {
      const run = set.readings.filter((r) => r.device === e.device && r.time >= e.start && r.time <= e.end);
      assert.equal(new Set(run.map((r) => r.fields[e.field])).size, 1, 'a stuck field repeats one value');
    }
    assert.ok(set.readings.filter((r) => r.label === 'spike').every((r) => set.events[r.event as number]?.readings === 1));
  });

  it('scores the same stream the same way twice', () => {
    const a = new AnomalyScorer();
    const b = new AnomalyScorer();
    const part = set.readings.slice(0, 30_000);
    assert.deepEqual(part.map((r) => a.score(r)), part.map((r) => b.score(r)));
  });

  // The thresholds sit below what this set measures (docs/anomaly-detection.md gives the figures):
  // a detector that stops working, or starts flagging normal readings, fails them.
  it('mad: precision and spike recall', () => {
    assert.ok(result('mad').precision >= 0.85, `precision ${result('mad').precision}`);
    assert.ok(result('mad').recall.spike >= 0.6, `spike recall ${result('mad').recall.spike}`);
  });

  it('stuck: precision, recall and every stuck sensor found', () => {
    assert.ok(result('stuck').precision >= 0.95, `precision ${result('stuck').precision}`);
    assert.ok(result('stuck').recall.stuck >= 0.75, `recall ${result('stuck').recall.stuck}`);
    assert.equal(result('stuck').eventRecall.stuck, 1);
  });

  it('iforest: precision, and recall of broken correlations and drifts', () => {
    const r = result('iforest');
    assert.ok(r.precision >= 0.9, `precision ${r.precision}`);
    assert.ok(r.recall.correlation >= 0.7, `correlation recall ${r.recall.correlation}`);
    assert.ok(r.eventRecall.correlation >= 0.8, `correlation events ${r.eventRecall.correlation}`);
    assert.ok(r.recall.drift >= 0.3, `drift recall ${r.recall.drift}`);
    assert.ok(r.eventRecall.drift >= 0.7, `drift events ${r.eventRecall.drift}`);
  });

  it('iforest: names the field the anomaly was injected into', () => {
    const scorer = new AnomalyScorer();
    let named = 0;
    let flagged = 0;
    for (const r of set.readings) {
      for (const a of scorer.score(r)) {
        if (a.detector !== 'iforest' || r.labelField === undefined) continue;
        flagged++;
        if (a.fields?.includes(r.labelField)) named++;
      }
    }
    assert.ok(flagged > 1000 && named / flagged >= 0.9, `${named} of ${flagged}`);
  });

  it('all together: precision, and few false alarms', () => {
    assert.ok(result('any').precision >= 0.9, `precision ${result('any').precision}`);
    assert.ok(result('any').falseAlarmsPerDeviceDay <= 3, `false alarms ${result('any').falseAlarmsPerDeviceDay}`);
  });
});
