import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { LocalPointStore } from '../../internal-network/distributor/sinks/local-store.ts';
import { tempDir } from '../helpers/pki.ts';

const REPO = join(import.meta.dirname, '..', '..');
/** Any character that drives a terminal; a line feed is the output's own. */
// eslint-disable-next-line no-control-regex
const DRIVES_A_TERMINAL = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/;

/**
 * `npm run readings` prints the embedded store's points, whose string values devices chose: any
 * character at all (the contract bounds only their length). JSON.stringify escapes C0 but writes
 * DEL, C1 (U+009B is CSI to xterm) and bidi overrides as they are.
 */
describe('npm run readings: device strings never reach the terminal as control', () => {
  const work = tempDir('readings-cli');
  after(() => work.cleanup());
  const hostile = 'a\u009b2J\u001b]0;t\u0007\u202eb\u007fc\n';

  it('prints each point as JSON whose strings are escaped, the values the same', async () => {
    const store = new LocalPointStore(work.dir);
    await store.write([{ measurement: 'readings', tags: { device: 'd-1' }, fields: { note: hostile, level: 1 }, time: 1_700_000_000_000 }]);
    await store.close();
    const out = await new Promise<string>((resolve, reject) =>
      execFile(join(REPO, 'node_modules', '.bin', 'tsx'), [join(REPO, 'scripts', 'readings.ts'), '--dir', work.dir], { env: { PATH: process.env.PATH, FIELDSTREAM_ENV_FILE: '/dev/null' } }, (err, stdout, stderr) =>
        err ? reject(new Error(stderr)) : resolve(stdout),
      ),
    );
    assert.doesNotMatch(out, DRIVES_A_TERMINAL, JSON.stringify(out));
    assert.deepEqual(JSON.parse(out), { time: '2023-11-14T22:13:20.000Z', measurement: 'readings', device: 'd-1', note: hostile, level: 1 });
  });
});

describe('npm run readings: a wrong option is a usage error, not a crash', () => {
  const run = (args: string[]) =>
    new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) =>
      execFile(join(REPO, 'node_modules', '.bin', 'tsx'), [join(REPO, 'scripts', 'readings.ts'), ...args], { env: { PATH: process.env.PATH, FIELDSTREAM_ENV_FILE: '/dev/null' } }, (err, stdout, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr }),
      ),
    );

  for (const args of [['--devices', 'd-1'], ['--last'], ['stray']]) {
    it(`${args.join(' ')}: exit 64, one error line and the usage, no stack trace`, async () => {
      const r = await run(args);
      assert.equal(r.code, 64, r.stderr);
      assert.equal(r.stdout, '');
      assert.match(r.stderr, /^error: .+\nusage: npm run readings -- /);
      assert.doesNotMatch(r.stderr, /\bat |ERR_PARSE_ARGS|node:internal/);
    });
  }

  it('--help: the usage on stdout, exit 0', async () => {
    const r = await run(['--help']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^usage: npm run readings -- .*--measurement.*--device.*--last.*--line-protocol.*--dir/s);
  });

  it('a store folder that does not exist: said on stderr, naming it and where the stores are, nothing on stdout', async () => {
    // Before npm start first wrote, or --dir mistyped, or npm run stack's store without --dir: it
    // printed nothing at all, as for a store with no points.
    const r = await run(['--dir', '/nonexistent/fieldstream-timeseries']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /no time series at \/nonexistent\/fieldstream-timeseries/);
    assert.match(r.stderr, /data\/stack\/timeseries/);
  });

  it('--last that is no whole number: the same', async () => {
    const r = await run(['--last', 'x']);
    assert.equal(r.code, 64);
    assert.match(r.stderr, /^error: --last must be a whole number \(0 = all\)\nusage: npm run readings -- /);
  });
});

/**
 * The local store keeps each value as its message gave it: no field-type guard stands before it as
 * before InfluxDB (sinks/field-types.ts). InfluxDB refuses a field of two types (1.6: every point
 * of that shard in the request), so an export holding one would be refused on import.
 */
describe('npm run readings --line-protocol: a field of two types is named on stderr', () => {
  const work = tempDir('readings-cli-types');
  after(() => work.cleanup());

  it('exports every point as it is and warns of the field, once, on stderr', async () => {
    const store = new LocalPointStore(work.dir);
    await store.write([
      { measurement: 'readings', tags: { device: 'd-1' }, fields: { temperature: 21.5, humidity: 40 }, time: 1_700_000_000_000 },
      { measurement: 'readings', tags: { device: 'd-2' }, fields: { temperature: 'hot' }, time: 1_700_000_001_000 },
      { measurement: 'readings', tags: { device: 'd-1' }, fields: { temperature: 22 }, time: 1_700_000_002_000 },
      { measurement: 'events', tags: { device: 'd-1', event_type: 'x' }, fields: { temperature: 'also a string, another measurement' }, time: 1_700_000_003_000 },
    ]);
    await store.close();
    const { stdout, stderr } = await new Promise<{ stdout: string; stderr: string }>((resolve, reject) =>
      execFile(join(REPO, 'node_modules', '.bin', 'tsx'), [join(REPO, 'scripts', 'readings.ts'), '--dir', work.dir, '--last', '0', '--line-protocol'], { env: { PATH: process.env.PATH, FIELDSTREAM_ENV_FILE: '/dev/null' } }, (err, out, errOut) =>
        err ? reject(new Error(errOut)) : resolve({ stdout: out, stderr: errOut }),
      ),
    );
    assert.equal(stdout.trim().split('\n').length, 4, stdout);
    assert.match(stdout, /temperature="hot"/);
    const warnings = stderr.trim().split('\n');
    assert.equal(warnings.length, 1, stderr);
    assert.match(warnings[0]!, /^warning: field "temperature" of measurement "readings" has values of 2 types \(float, string\)/);
    assert.match(warnings[0]!, /InfluxDB refuses/);
  });
});
