import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { tempDir } from '../helpers/pki.ts';

const repo = join(import.meta.dirname, '..', '..');

/**
 * The console's history and last presences from the local store of `npm start` read its day files
 * line by line. A day file damaged without line breaks (garbage, or a file copied over it) was
 * held whole as one line: the console ran out of memory at its start (the last presences are read
 * then) and at each read of the day's history. Such a line is stepped over, as any damaged one.
 */
describe('the local store read back', () => {
  const tmp = tempDir('local-store-lines');
  after(() => tmp.cleanup());

  it('steps over a line longer than any point, without holding it, and reads the points after it', () => {
    const dir = join(tmp.dir, 'store');
    mkdirSync(dir);
    const day = new Date().toISOString().slice(0, 10);
    const point = (v: number, at: number) => `${JSON.stringify({ measurement: 'readings', tags: { device: 'd1' }, fields: { t: v }, time: new Date(at).toISOString() })}\n`;
    const now = Date.now();
    const fd = openSync(join(dir, `${day}.jsonl`), 'w');
    try {
      writeSync(fd, point(1, now - 3_000_000));
      // 400 MiB without a line break: more than the heap the reader is given below.
      const junk = Buffer.alloc(16 * 1024 * 1024, 0x61);
      for (let i = 0; i < 25; i++) writeSync(fd, junk);
      writeSync(fd, '\n');
      writeSync(fd, point(2, now - 1000));
    } finally {
      closeSync(fd);
    }
    const code = `
      const { LocalHistory } = await import(${JSON.stringify(join(repo, 'internal-network', 'console', 'history', 'local.ts'))});
      const series = await new LocalHistory(${JSON.stringify(dir)}).series('d1', 't', ${now - 3_600_000}, ${now});
      console.log(JSON.stringify(series.map(([, v]) => v)));`;
    const r = spawnSync(process.execPath, ['--max-old-space-size=128', '--import', 'tsx', '--input-type=module', '-e', code], { cwd: repo, encoding: 'utf8', timeout: 120_000 });
    assert.equal(r.status, 0, `the reader ended: ${r.signal ?? ''} ${r.stderr.slice(-600)}`);
    assert.deepEqual(JSON.parse(r.stdout), [1, 2], 'both points read, the one after the damage too');
  });
});
