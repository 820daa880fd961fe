import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { generateDataset } from '../../internal-network/console/anomaly/dataset.ts';
import { AnomalyScorer } from '../../internal-network/console/anomaly/scorer.ts';
import type { Anomaly, ScoredReading } from '../../internal-network/console/anomaly/types.ts';
import { ANOMALY_STATE_FILE, AnomalyStateSaver, loadAnomalyState } from '../../internal-network/console/anomaly-state-file.ts';
import { createLogger } from '../../shared/logger.ts';
import { captureLogs } from '../helpers/gateway-fixture.ts';

const quiet = createLogger('console', 'silent');
const dirs: string[] = [];
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), 'fieldstream-anomaly-state-'));
  dirs.push(d);
  return d;
};
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const DAY = 86_400_000;
/** Three weather stations, a reading a minute for six days, with every kind of anomaly injected. */
const set = generateDataset({ seed: 4, devices: 3, days: 6 });
const start = set.readings[0]?.time as number;
const firstPart = set.readings.filter((r) => r.time < start + 4 * DAY);
const rest = set.readings.filter((r) => r.time >= start + 4 * DAY);
const ids = [...new Set(set.readings.map((r) => r.device))];

function scoreAll(scorer: AnomalyScorer, readings: readonly ScoredReading[]): Anomaly[] {
  const out: Anomaly[] = [];
  for (const r of readings) out.push(...scorer.score(r));
  return out;
}

describe("the anomaly detectors' state across a restart", () => {
  it('restores what every device learnt: the spike and stuck detectors go on exactly as without the restart, the forests grow again at the next row', async () => {
    const before = new AnomalyScorer();
    scoreAll(before, firstPart);
    for (const d of ids) assert.equal(before.forestReady(d), true, `${d} has a forest after four days`);
    const dir = tmp();
    await new AnomalyStateSaver(dir, before, quiet).save();
    assert.equal(statSync(join(dir, ANOMALY_STATE_FILE)).mode & 0o777, 0o600);

    const after = new AnomalyScorer();
    assert.deepEqual(loadAnomalyState(dir, after, quiet), { restored: 3, refused: 0 });
    assert.equal(after.forestReady(ids[0] as string), false, 'the forest is not saved');

    const go = scoreAll(before, rest);
    const restarted = scoreAll(after, rest);
    const notForest = (a: Anomaly[]) => a.filter((x) => x.detector !== 'iforest');
    assert.ok(notForest(go).length > 0, 'the test set has spikes and stuck runs after the restart');
    assert.deepEqual(notForest(restarted), notForest(go));
    for (const d of ids) assert.equal(after.forestReady(d), true, `${d}: its forest grown again`);
    // A forest grown again from the same buffer finds what the forest before the restart finds.
    const forest = (a: Anomaly[]) => a.filter((x) => x.detector === 'iforest').length;
    assert.ok(Math.abs(forest(restarted) - forest(go)) <= Math.max(3, 0.3 * forest(go)), `${forest(restarted)} forest flags against ${forest(go)}`);

    // Without the state, the same devices' forests are silent for the two days of the rest.
    const fresh = new AnomalyScorer();
    assert.equal(forest(scoreAll(fresh, rest)), 0);
  });

  it('grows a forest again at the next row even when that row is kept out of the buffer (a stuck sensor at the restart)', async () => {
    // A forest grown again only when a row entered the buffer stayed away as long as the device's
    // rows were kept out (anomalous: up to forestAdaptAfter rows, 12 hours), where the forest
    // before the restart went on scoring; the docs promise it back at the next row.
    const before = new AnomalyScorer();
    scoreAll(before, firstPart);
    const dir = tmp();
    await new AnomalyStateSaver(dir, before, quiet).save();
    const after = new AnomalyScorer();
    loadAnomalyState(dir, after, quiet);
    const d = ids[0] as string;
    const last = firstPart.filter((r) => r.device === d).at(-1) as ScoredReading;
    // Its first field stuck from the restart on, a reading a minute for an hour: stuck after 30.
    const frozen = Object.keys(last.fields)[0] as string;
    const stuck: ScoredReading[] = rest.filter((r) => r.device === d && r.time < last.time + 60 * 60_000).map((r) => ({ ...r, fields: { ...r.fields, [frozen]: last.fields[frozen] as number } }));
    const found = scoreAll(after, stuck);
    assert.ok(found.some((a) => a.detector === 'stuck'), 'the field is found stuck');
    scoreAll(before, stuck);
    assert.equal(before.forestReady(d), true, 'without the restart the forest goes on');
    assert.equal(after.forestReady(d), true, 'the forest grown again within the hour');
  });

  it("takes back a damaged file's whole lines only, and nothing learnt under other parameters", async () => {
    const scorer = new AnomalyScorer();
    scoreAll(scorer, firstPart.slice(0, 3000));
    const dir = tmp();
    await new AnomalyStateSaver(dir, scorer, quiet).save();
    const path = join(dir, ANOMALY_STATE_FILE);
    const lines = readFileSync(path, 'utf8').split('\n');
    assert.equal(lines.length, 5, 'a header, three devices and the last newline');

    // One device's window one byte short, another's line cut: those two start afresh.
    const windowCut = lines[1]?.replace(/"window":"([A-Za-z0-9+/]{8})/, '"window":"$1AAAA') as string;
    writeFileSync(path, [lines[0], windowCut, lines[2]?.slice(0, 100), lines[3], ''].join('\n'));
    const logs = captureLogs();
    const damaged = new AnomalyScorer();
    assert.deepEqual(loadAnomalyState(dir, damaged, logs.logger), { restored: 1, refused: 2 });
    assert.ok(logs.lines.some((l) => l.code === 'CONSOLE_STATE_INVALID' && l.refused === 2), JSON.stringify(logs.lines));
    assert.equal(damaged.stats().devices, 1);

    // A header that is not ours: nothing is read.
    writeFileSync(path, ['{"format":"something-else"}', ...lines.slice(1)].join('\n'));
    const other = captureLogs();
    assert.deepEqual(loadAnomalyState(dir, new AnomalyScorer(), other.logger), { restored: 0, refused: 0 });
    assert.ok(other.lines.some((l) => l.code === 'CONSOLE_STATE_INVALID'));

    // Learnt with windows of 64 values; a console that now keeps 32 starts every device afresh.
    writeFileSync(path, lines.join('\n'));
    const changed = captureLogs();
    assert.deepEqual(loadAnomalyState(dir, new AnomalyScorer({ windowSize: 32 }), changed.logger), { restored: 0, refused: 0 });
    assert.ok(changed.lines.some((l) => String(l.msg).includes('other parameters')));
    // Lines of a file aside that a killed save left are removed, never read.
    writeFileSync(`${path}.tmp-host-1234`, 'half a line');
    assert.deepEqual(loadAnomalyState(dir, new AnomalyScorer(), quiet), { restored: 3, refused: 0 });
    assert.equal(existsSync(`${path}.tmp-host-1234`), false);
  });

  it('keeps when each device was last heard from: one silent since before the restart is idle deviceIdleMs after its last reading, not after the restart', async () => {
    const HOUR = 3_600_000;
    const idle = { maxDevices: 2, deviceIdleMs: HOUR };
    // The first process: 'quiet' heard from at 10:00, 'busy' at 10:50; saved at 10:55.
    let wall = Date.UTC(2026, 0, 1, 10);
    let mono = 5_000;
    const before = new AnomalyScorer(idle, { clock: () => mono, wallClock: () => wall });
    const at = (minutes: number) => {
      wall = Date.UTC(2026, 0, 1, 10) + minutes * 60_000;
      mono = 5_000 + minutes * 60_000;
    };
    before.score({ device: 'quiet', time: wall, fields: { x: 1 } });
    at(50);
    before.score({ device: 'busy', time: wall, fields: { x: 1 } });
    at(55);
    const dir = tmp();
    await new AnomalyStateSaver(dir, before, quiet).save();
    const path = join(dir, ANOMALY_STATE_FILE);
    const saved = readFileSync(path, 'utf8');
    assert.match(saved, /"id":"quiet","heardAt":1767261600000/);

    // Restarted at 10:58 (its monotonic clock from 0 again); a new device arrives at 11:05: 'quiet'
    // has been silent for 65 minutes and gives its place, 'busy' (15 minutes) keeps its own.
    const restart = (file: string) => {
      let wall2 = Date.UTC(2026, 0, 1, 10, 58);
      let mono2 = 0;
      const after = new AnomalyScorer(idle, { clock: () => mono2, wallClock: () => wall2 });
      writeFileSync(path, file);
      assert.deepEqual(loadAnomalyState(dir, after, quiet), { restored: 2, refused: 0 });
      wall2 += 7 * 60_000;
      mono2 += 7 * 60_000;
      after.score({ device: 'new', time: wall2, fields: { x: 1 } });
      return after;
    };
    const after = restart(saved);
    assert.deepEqual([after.stats().devicesEvicted, after.stats().devicesRefused], [1, 0]);
    assert.equal(after.forestReady('quiet'), undefined, "'quiet' gave its place");
    assert.equal(after.forestReady('busy'), false, "'busy' is kept");

    // A file saved before heardAt was kept: its devices count as heard from at the restart.
    const old = restart(saved.replace(/"heardAt":\d+,/g, ''));
    assert.deepEqual([old.stats().devicesEvicted, old.stats().devicesRefused], [0, 1]);
    // A wall clock stepped back across the restart (heardAt in the future): heard from now, not later.
    const future = restart(saved.replace(/"heardAt":\d+/g, `"heardAt":${Date.UTC(2027, 0, 1)}`));
    assert.deepEqual([future.stats().devicesEvicted, future.stats().devicesRefused], [0, 1]);
  });

  it('restores the most recently heard from devices when maxDevices is now lower than the file holds, and calls that no damage', async () => {
    const before = new AnomalyScorer({ maxDevices: 4 });
    for (const id of ['a', 'b', 'c', 'd']) before.score({ device: id, time: Date.UTC(2026, 0, 1), fields: { x: 1 } });
    const dir = tmp();
    await new AnomalyStateSaver(dir, before, quiet).save();
    const after = new AnomalyScorer({ maxDevices: 2 });
    const logs = captureLogs();
    const restored = loadAnomalyState(dir, after, logs.logger);
    assert.equal(restored.restored, 2);
    assert.deepEqual(['a', 'b', 'c', 'd'].map((id) => after.forestReady(id) !== undefined), [false, false, true, true], 'the two heard from last');
    assert.equal(logs.lines.filter((l) => l.code === 'CONSOLE_STATE_INVALID').length, 0, JSON.stringify(logs.lines));
  });

  it('refuses a field whose saved stuck run would be stuck at every value (a run of 1: live it is at least stuckMinRun)', async () => {
    const scorer = new AnomalyScorer();
    // A lively field: every reading a new value.
    for (let k = 0; k < 100; k++) scorer.score({ device: 'd', time: 1.7e12 + k * 60_000, fields: { a: k % 7 } });
    const dir = tmp();
    await new AnomalyStateSaver(dir, scorer, quiet).save();
    const path = join(dir, ANOMALY_STATE_FILE);
    const [header, line] = readFileSync(path, 'utf8').split('\n');
    const edited = (line as string).replace(/"requiredRun":(null|\d+)/, '"requiredRun":1');
    assert.notEqual(edited, line);
    writeFileSync(path, `${header}\n${edited}\n`);
    const back = new AnomalyScorer();
    const restored = loadAnomalyState(dir, back, quiet);
    // Taken, the field was stuck at each of its values, every one reported as a stuck run, its
    // spikes never scored and its window frozen: its stuck run is only worked out again after a repeat.
    const found = scoreAll(back, Array.from({ length: 50 }, (_, k) => ({ device: 'd', time: 1.7e12 + (100 + k) * 60_000, fields: { a: k % 7 } })));
    assert.deepEqual(found, []);
    assert.deepEqual(restored, { restored: 0, refused: 1 });
  });

  it('takes a count of rows kept out past forestAdaptAfter (saved under a larger one, or edited) as forestAdaptAfter', () => {
    // The count goes down by one a row taken: taken as saved, 2^40 rows kept out would have let
    // every anomalous row into the buffer for good, as if the device had a new normal.
    const scorer = new AnomalyScorer();
    for (let k = 0; k < 100; k++) scorer.score({ device: 'd', time: 1.7e12 + k * 60_000, fields: { a: k % 7 } });
    const saved = scorer.devicesState()[0]?.toState();
    assert.ok(saved);
    const back = new AnomalyScorer();
    assert.equal(back.restoreDevice({ ...saved, keptOut: 2 ** 40 }), undefined);
    assert.equal(back.devicesState()[0]?.toState().keptOut, back.params.forestAdaptAfter);
  });

  it("has room in Kubernetes's volume for the largest file the defaults allow, and the one that replaces it", () => {
    // maxDevices devices of maxFieldsPerDevice fields, every window full, a full buffer, names of
    // 128 characters. The saved file and the one written aside are on the volume together: on a
    // volume holding one only, every save after the first failed (ENOSPC), and each restart took
    // back the first save, however old.
    const scorer = new AnomalyScorer();
    const p = scorer.params;
    const forestFields = Math.min(p.forestMaxFields, p.maxFieldsPerDevice);
    const b64 = (bytes: number) => Buffer.alloc(bytes, 0xa5).toString('base64');
    const profile = { value: b64(4 * p.driftBins), count: b64(p.driftBins), since: 1.7e12, latest: 1.7e12 + DAY };
    const fields = Array.from({ length: p.maxFieldsPerDevice }, (_, k) => ({
      name: `f${String(k).padStart(127, '0')}`,
      window: b64(8 * p.windowSize),
      ref: -1.2345678901234567e-100,
      last: -1.2345678901234567e-100,
      lastReading: 2 ** 40,
      lastTime: 1.7e12 + DAY,
      seen: 2 ** 40,
      rate: 0.12345678901234567,
      run: 2 ** 40,
      requiredRun: 2 ** 40,
      minStep: 1.2345678901234567e-100,
      stuck: false,
      profile: k < forestFields ? profile : null,
    }));
    const id = 'd'.repeat(64);
    const problem = scorer.restoreDevice({ id, readings: 2 ** 41, lastSampleTime: 1.7e12, rowsSinceTrain: 2 ** 40, keptOut: 2 ** 40, trainings: 2 ** 40, forest: true, buffer: { fields: forestFields, head: 1, count: p.forestBufferSize, rows: b64(4 * 2 * forestFields * p.forestBufferSize) }, fields });
    assert.equal(problem, undefined);
    const line = JSON.stringify(scorer.devicesState()[0]?.toState()).length + 1;
    const file = p.maxDevices * line;
    const manifest = readFileSync(join(import.meta.dirname, '..', '..', 'k8s', 'base', 'internal', 'console.yaml'), 'utf8');
    const claim = /kind: PersistentVolumeClaim\n(?:.*\n)*?  name: console-state\n(?:.*\n)*?\s+storage: (\d+)Gi\n/.exec(manifest);
    assert.ok(claim, 'the PVC console-state');
    assert.ok(2 * file <= Number(claim[1]) * 2 ** 30, `${(file / 2 ** 20).toFixed(0)} MiB a file, two of them on a volume of ${claim[1]} GiB`);
  });

  it('starts afresh, logged, on a state folder it cannot look at (a file in its place), and its saves say they fail', async () => {
    const dir = join(tmp(), 'not-a-folder');
    writeFileSync(dir, 'a file where the folder should be');
    const logs = captureLogs();
    const scorer = new AnomalyScorer();
    assert.deepEqual(loadAnomalyState(dir, scorer, logs.logger), { restored: 0, refused: 0 });
    assert.ok(logs.lines.some((l) => l.code === 'CONSOLE_STATE_INVALID'), JSON.stringify(logs.lines));
    scoreAll(scorer, firstPart.slice(0, 100));
    await new AnomalyStateSaver(dir, scorer, logs.logger).save();
    assert.ok(logs.lines.some((l) => l.code === 'CONSOLE_STATE_WRITE_FAILED'), JSON.stringify(logs.lines));
  });

  it('holds the last whole save when the console is killed (SIGKILL) at any instant of a save', async () => {
    const dir = tmp();
    // A console saving over and over while its fleet grows, killed at a moment of the test's choosing.
    const child = `
      import { AnomalyScorer } from './internal-network/console/anomaly/scorer.ts';
      import { AnomalyStateSaver } from './internal-network/console/anomaly-state-file.ts';
      import { createLogger } from './shared/logger.ts';
      const scorer = new AnomalyScorer();
      const saver = new AnomalyStateSaver(${JSON.stringify(dir)}, scorer, createLogger('console', 'silent'));
      for (let round = 0; ; round++) {
        for (let i = 0; i < 300; i++) for (let k = 0; k < 40; k++) scorer.score({ device: 'd' + round + '-' + i, time: 1.7e12 + k * 60000, fields: { a: k % 7, b: Math.sin(k) } });
        await saver.save();
        if (round === 0) process.stdout.write('saved\\n');
      }`;
    for (const killAfterMs of [40, 170, 390]) {
      const p = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', child], { cwd: process.cwd(), stdio: ['ignore', 'pipe', 'inherit'] });
      await new Promise<void>((resolve) => p.stdout.once('data', () => resolve()));
      await new Promise((r) => setTimeout(r, killAfterMs));
      const exited = new Promise((r) => p.once('exit', r));
      p.kill('SIGKILL');
      await exited;
      const logs = captureLogs();
      const back = loadAnomalyState(dir, new AnomalyScorer({ maxDevices: 1_000_000 }), logs.logger);
      assert.equal(back.refused, 0, JSON.stringify(logs.lines));
      assert.ok(back.restored >= 300 && back.restored % 300 === 0, `${back.restored} devices: whole saves only`);
      assert.ok(!logs.lines.some((l) => l.code !== undefined), JSON.stringify(logs.lines));
    }
  });
});
