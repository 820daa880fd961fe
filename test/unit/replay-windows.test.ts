import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { appendFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { crc32 } from 'node:zlib';
import { ReplayWindows, WINDOW } from '../../internal-network/distributor/security/replay-window.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { withFileSizeLimit } from '../helpers/file-size-limit.ts';
import { inTempDir, tempDir } from '../helpers/pki.ts';
import { cannotRunAsNobody } from '../helpers/as-nobody.ts';

/** A small deterministic generator, so a failure replays the same way. */
function generator(seed: number): (n: number) => number {
  let x = seed;
  return (n) => {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    return x % n;
  };
}

const files = (dir: string) => readdirSync(dir).sort();

describe('replay windows', () => {
  it('accepts each sequence number once, in any order within the window, and survives a restart', () => {
    inTempDir('replay', (dir) => {
      const w = new ReplayWindows(dir);
      for (const seq of [5, 3, 4, 10]) {
        assert.equal(w.check('d', 'e', seq), 'new');
        w.record('d', 'e', seq);
      }
      assert.equal(w.check('d', 'e', 3), 'seen');
      assert.equal(w.check('d', 'e', 6), 'new', 'a gap is not a replay');
      assert.equal(w.check('d', 'other-epoch', 3), 'new');
      w.record('d', 'e', WINDOW + 20);
      assert.equal(w.check('d', 'e', 10), 'too-old');
      assert.equal(w.check('d', 'e', 21), 'new');
      w.record('d', 'e', 30);
      w.persist();
      w.record('d', 'e', 31); // recorded, never persisted: not on disk
      const again = new ReplayWindows(dir);
      assert.equal(again.check('d', 'e', WINDOW + 20), 'seen');
      assert.equal(again.check('d', 'e', 30), 'seen');
      assert.equal(again.check('d', 'e', 31), 'new');
      assert.equal(again.check('d', 'e', 5), 'too-old');
      w.close();
      again.close();
    });
  });

  it('keeps the right bits across shifts of every size', () => {
    inTempDir('replay2', (dir) => {
      const w = new ReplayWindows(dir);
      const accepted = new Set<number>();
      let seq = 0;
      for (let step = 1; step < 70; step += 3) {
        seq += step;
        w.record('d', 'e', seq);
        accepted.add(seq);
      }
      for (let s = seq - 2000; s <= seq; s++) if (s >= 0) assert.equal(w.check('d', 'e', s), accepted.has(s) ? 'seen' : 'new', String(s));
      w.close();
    });
  });

  it('agrees with a plain set of accepted numbers across random arrivals, jumps, compactions and restarts', () => {
    inTempDir('replay4', (dir) => {
      // A small journal limit: compactions happen every few hundred records, and the snapshots
      // hold windows both as ranges (few gaps) and as rings (epoch "holes": many gaps).
      const open = () => new ReplayWindows(dir, { journalMaxBytes: 16 * 1024 });
      let w = open();
      const rand = generator(12345);
      const model = new Map<string, { top: number; accepted: Set<number> }>();
      const verdict = (epoch: string, seq: number) => {
        const m = model.get(epoch);
        if (!m || seq > m.top) return 'new';
        return m.top - seq >= WINDOW ? 'too-old' : m.accepted.has(seq) ? 'seen' : 'new';
      };
      for (let k = 0; k < 20_000; k++) {
        const epoch = ['holes', 'straight', 'dense', 'dense'][rand(4)] as string;
        const m = model.get(epoch);
        const top = m?.top ?? -1;
        const seq = Math.max(0, epoch === 'straight' ? top + 1 : epoch === 'holes' ? top + 1 + rand(3) * 2 - (rand(4) === 0 ? 2 : 0) : rand(50) === 0 ? top + rand(3 * WINDOW) : top + 5 - rand(200));
        const expected = verdict(epoch, seq);
        assert.equal(w.check('d', epoch, seq), expected, `k ${k}: seq ${seq} of ${epoch}, top ${top}`);
        if (expected === 'new') {
          w.record('d', epoch, seq);
          const entry = m ?? { top: -1, accepted: new Set<number>() };
          entry.accepted.add(seq);
          entry.top = Math.max(entry.top, seq);
          model.set(epoch, entry);
        }
        if (rand(7) === 0) w.persist();
        if (rand(2000) === 0) {
          w.persist();
          w.close();
          w = open();
        }
      }
      w.persist();
      w.close();
      const last = open();
      for (const [epoch, m] of model) for (let s = Math.max(0, m.top - 3000); s <= m.top + 2; s++) assert.equal(last.check('d', epoch, s), verdict(epoch, s), `${epoch} ${s} after the last restart`);
      last.close();
      const generations = files(dir).filter((f) => f.endsWith('.snap'));
      assert.equal(generations.length, 2, `the current generation and the one before it: ${files(dir).join(' ')}`);
      const snapshot = generations.map((f) => readFileSync(join(dir, f), 'utf8')).join('');
      assert.match(snapshot, /"straight":\{"top":\d+,"lastSeen":\d+,"runs":\[\[\d+,\d+\]\]\}/, 'a window without gaps is one range');
      assert.match(snapshot, /"holes":\{"top":\d+,"lastSeen":\d+,"ring":"/, 'a window with many gaps keeps its ring');
    });
  });

  it('keeps every persisted record when the process is killed with SIGKILL at any moment', async () => {
    const tmp = tempDir('replay-kill');
    try {
      // The child records and persists one sequence number at a time (compacting every few
      // hundred), printing each after persist() returned; it is killed mid-stream.
      const script = `
        import { ReplayWindows } from ${JSON.stringify(new URL('../../internal-network/distributor/security/replay-window.ts', import.meta.url).href)};
        const w = new ReplayWindows(process.env.DIR, { journalMaxBytes: 8192 });
        for (let seq = 1; ; seq++) {
          w.record('d' + (seq % 3), 'e', seq);
          w.persist();
          process.stdout.write(seq + '\\n');
          if (seq % 50 === 0) await new Promise((r) => setImmediate(r));
        }`;
      const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { env: { ...process.env, DIR: tmp.dir }, stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      await new Promise<void>((resolve, reject) => {
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          if (out.length > 30_000) resolve();
        });
        child.on('exit', (code) => reject(new Error(`child exited with ${code}`)));
      });
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      const printed = out.split('\n').filter((l) => /^\d+$/.test(l)).map(Number);
      const w = new ReplayWindows(tmp.dir);
      for (const seq of printed) assert.equal(w.check(`d${seq % 3}`, 'e', seq), 'seen', `seq ${seq} was persisted before the kill`);
      w.close();
    } finally {
      tmp.cleanup();
    }
  });

  it('skips a torn or damaged line of the journal, reads the lines after it, and appends in a new generation', () => {
    inTempDir('replay-torn', (dir) => {
      const w = new ReplayWindows(dir);
      for (const seq of [1, 2, 3]) {
        w.record('d', 'e', seq);
        w.persist();
      }
      w.close();
      const log = files(dir).find((f) => f.endsWith('.log')) as string;
      const text = readFileSync(join(dir, log), 'utf8');
      const lines = text.split('\n').filter(Boolean);
      assert.equal(lines.length, 3, 'one line per commit');
      // the second line damaged (a flipped digit), the third intact after it, and half a fourth line
      writeFileSync(join(dir, log), `${lines[0]}\n${(lines[1] as string).replace(/2\]$/, '4]')}\n${lines[2]}\n${(lines[2] as string).slice(0, 9)}`);
      const after = new ReplayWindows(dir);
      assert.equal(after.check('d', 'e', 2), 'new', 'the damaged line is not trusted');
      assert.equal(after.check('d', 'e', 4), 'new');
      assert.equal(after.check('d', 'e', 3), 'seen', 'the line after the damaged one is read');
      after.record('d', 'e', 5);
      after.persist();
      after.close();
      const again = new ReplayWindows(dir);
      assert.equal(again.check('d', 'e', 5), 'seen', 'what came after the damage is read');
      assert.equal(again.check('d', 'e', 1), 'seen');
      again.close();
    });
  });

  it('appends whole or not at all under a disk that takes part of a write, and appends the same again later', async () => {
    const tmp = tempDir('replay-full');
    try {
      const w = new ReplayWindows(tmp.dir);
      w.record('d', 'e', 1);
      w.persist();
      const log = join(tmp.dir, files(tmp.dir).find((f) => f.endsWith('.log')) as string);
      const size = statSync(log).size;
      // A commit of many devices: one append of many lines, which the disk takes only part of.
      for (let i = 0; i < 200; i++) w.record(`dev-${i}`, 'e', 7);
      await withFileSizeLimit(size + 100, async () => {
        assert.throws(() => w.persist(), /EFBIG|file too large/i);
      });
      assert.equal(statSync(log).size, size, 'the lines the disk took are cut off');
      w.persist(); // the disk has room again: the same lines, whole
      w.record('d', 'e', 2);
      w.persist();
      w.close();
      const after = new ReplayWindows(tmp.dir);
      for (let i = 0; i < 200; i++) assert.equal(after.check(`dev-${i}`, 'e', 7), 'seen', `dev-${i}`);
      assert.equal(after.check('d', 'e', 2), 'seen', 'the append after the failure is read');
      after.close();
    } finally {
      tmp.cleanup();
    }
  });

  it('says what it skipped as damaged (lines of a journal, a snapshot), not an append cut short', () => {
    inTempDir('replay-damage-said', (dir) => {
      const w = new ReplayWindows(dir, { journalMaxBytes: 1 }); // every persist compacts
      for (const seq of [1, 2, 3]) {
        w.record('d', 'e', seq);
        w.persist();
      }
      w.close();
      const byGen = (ext: string) => files(dir).filter((f) => f.endsWith(ext)).sort((a, b) => Number(/\d+/.exec(a)?.[0]) - Number(/\d+/.exec(b)?.[0]));
      const clean = new LogCapture();
      new ReplayWindows(dir, { log: clean.logger }).close();
      assert.deepEqual(clean.codes(), [], 'nothing said of a folder without damage');
      // The newest snapshot damaged; the journal before it: a line damaged, one whole after it, and an append cut short.
      const snap = join(dir, byGen('.snap').at(-1) as string);
      writeFileSync(snap, readFileSync(snap).subarray(0, 20));
      const log = join(dir, byGen('.log').at(-2) as string);
      const line = `${crc32('[1,"d","e",7]').toString(16)} [1,"d","e",7]`;
      writeFileSync(log, `${line.replace('7]', '8]')}\n${line}\n${line.slice(0, 9)}`);
      const logs = new LogCapture();
      const after = new ReplayWindows(dir, { log: logs.logger });
      assert.equal(after.check('d', 'e', 7), 'seen', 'the whole line after the damaged one is read');
      after.close();
      const said = logs.lines.find((l) => l.code === 'DISTRIBUTOR_REPLAY_STATE_DAMAGED');
      assert.equal(said?.lines, 1, 'the damaged line, not the append cut short');
      assert.deepEqual(said?.snapshots, [snap]);
    });
  });

  it('falls back to the generation before when the newest snapshot is damaged, and never trusts garbage', () => {
    inTempDir('replay-fallback', (dir) => {
      const w = new ReplayWindows(dir, { journalMaxBytes: 1 }); // every persist compacts
      w.record('d', 'e', 1);
      w.persist();
      w.record('d', 'e', 2);
      w.close(); // 2 recorded, never persisted
      const snaps = files(dir).filter((f) => f.endsWith('.snap'));
      assert.equal(snaps.length, 2);
      const newest = join(dir, snaps.sort((a, b) => Number(/\d+/.exec(b)?.[0]) - Number(/\d+/.exec(a)?.[0]))[0] as string);
      const bytes = readFileSync(newest);
      writeFileSync(newest, bytes.subarray(0, bytes.length - 3));
      const after = new ReplayWindows(dir);
      assert.equal(after.check('d', 'e', 1), 'seen', 'from the journal of the generation before');
      assert.equal(after.check('d', 'e', 2), 'new');
      after.close();
      for (const f of files(dir)) writeFileSync(join(dir, f), f.endsWith('.log') ? 'garbage\n{"not":"a line"}\n' : `fieldstream-replay-snapshot-v1 9 2 ${crc32('{}')}\n{}`);
      const hostile = new ReplayWindows(dir);
      assert.equal(hostile.check('d', 'e', 1), 'new', 'damaged and invalid files are not trusted, and do not crash');
      hostile.close();
    });
  });

  it('does not start over a journal or snapshot it cannot read, naming it, rather than forget what it accepted', async (t) => {
    const cannot = cannotRunAsNobody('code that opens the windows');
    if (cannot) return t.skip(cannot);
    const repo = join(import.meta.dirname, '..', '..');
    // Unreadable (EACCES here; an I/O error or a process out of descriptors alike), the files read
    // as no windows at all: every number accepted came back as new, nothing logged, and the
    // compactions that followed removed the files for good.
    const root = mkdtempSync('/tmp/fieldstream-replay-unreadable-');
    try {
      execFileSync('chmod', ['0755', root]);
      const dir = join(root, 'replay');
      const w = new ReplayWindows(dir);
      for (const seq of [1, 2, 3]) {
        w.record('d', 'e', seq);
        w.persist();
      }
      w.close();
      execFileSync('chmod', ['0777', dir]);
      const before = files(dir);
      const code = `
        const { ReplayWindows } = await import(${JSON.stringify(join(repo, 'internal-network', 'distributor', 'security', 'replay-window.ts'))});
        try { const w = new ReplayWindows(${JSON.stringify(dir)}); console.log(w.check('d', 'e', 2)); w.close(); }
        catch (err) { console.log(err.code, err.details?.path); }`;
      const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
        uid: 65534,
        gid: 65534,
        cwd: repo,
        env: { ...process.env, TSX_DISABLE_CACHE: '1', HOME: root },
        encoding: 'utf8',
      });
      const [code_, path] = out.trim().split(' ');
      assert.equal(code_, 'DISTRIBUTOR_STATE_UNREADABLE', out);
      assert.ok(path?.startsWith(dir), `names the file: ${out}`);
      assert.deepEqual(files(dir), before, 'nothing removed, nothing begun');
      const again = new ReplayWindows(dir);
      assert.equal(again.check('d', 'e', 2), 'seen', 'read once it can be');
      again.close();
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('moves windows of the layout before the journal (two slots per device, and the older .json) into it', () => {
    inTempDir('replay-legacy', (dir) => {
      const ring = Buffer.alloc(WINDOW / 8);
      for (const seq of [7, 9]) ring[(seq % WINDOW) >> 3] = (ring[(seq % WINDOW) >> 3] as number) | (1 << (seq & 7));
      const slot = (generation: number, epochs: object) => {
        const body = JSON.stringify(epochs);
        return `fieldstream-replay-window-v3 ${generation} ${Buffer.byteLength(body)} ${crc32(body)}\n${body}`;
      };
      writeFileSync(join(dir, 'a.0.win'), slot(2, { e: { top: 9, ring: ring.toString('base64'), lastSeen: 1 } }));
      writeFileSync(join(dir, 'a.1.win'), slot(1, { e: { top: 5, ring: Buffer.alloc(WINDOW / 8).toString('base64'), lastSeen: 1 } }));
      const bits = Buffer.alloc(WINDOW / 8);
      bits[0] = 0b0010_0001; // version 1: bits 0 and 5, sequence numbers 100 and 95
      writeFileSync(join(dir, 'b.json'), JSON.stringify({ e: { top: 100, bits: bits.toString('base64'), lastSeen: 1 } }));
      const w = new ReplayWindows(dir);
      w.close();
      assert.ok(!files(dir).some((f) => /\.(win|json)$/.test(f)), `the old files are removed once moved: ${files(dir).join(' ')}`);
      const again = new ReplayWindows(dir);
      assert.deepEqual([7, 8, 9].map((s) => again.check('a', 'e', s)), ['seen', 'new', 'seen'], 'the newer slot');
      assert.deepEqual([95, 96, 100, 101].map((s) => again.check('b', 'e', s)), ['seen', 'new', 'seen', 'new']);
      again.close();
    });
  });

  it('keeps what was journalled after a compaction that wrote its snapshot and failed to begin the new journal', () => {
    inTempDir('replay-compact-failed', (dir) => {
      const w = new ReplayWindows(dir, { journalMaxBytes: 1 }); // every persist compacts
      const generation = Math.max(...files(dir).map((f) => Number(/^windows-(\d+)\./.exec(f)?.[1] ?? 0)));
      const next = generation + 1;
      // The next journal cannot be opened (a directory stands for EMFILE, ENOSPC, EDQUOT)...
      mkdirSync(join(dir, `windows-${next}.log`));
      w.record('d', 'e', 1);
      assert.throws(() => w.persist(), 'appended to the journal in use; the compaction fails after its snapshot');
      assert.ok(files(dir).includes(`windows-${next}.snap`));
      // ...then the next compaction cannot write its snapshot either (the disk filled meanwhile).
      mkdirSync(join(dir, `windows-${next}.snap.tmp-${process.pid}`));
      w.record('d', 'e', 2);
      assert.throws(() => w.persist(), 'appended to the journal in use; the compaction fails again');
      // SIGKILL (no close), and the disk is put right.
      rmdirSync(join(dir, `windows-${next}.log`));
      rmdirSync(join(dir, `windows-${next}.snap.tmp-${process.pid}`));
      const after = new ReplayWindows(dir);
      assert.equal(after.check('d', 'e', 1), 'seen');
      assert.equal(after.check('d', 'e', 2), 'seen', 'journalled (the message acknowledged), so never accepted again');
      after.close();
    });
  });

  it('leaves nothing behind but the current generation and the one before it', () => {
    inTempDir('replay-files', (dir) => {
      writeFileSync(join(dir, 'windows-3.snap.tmp-12345'), 'a compaction killed mid-write');
      const w = new ReplayWindows(dir, { journalMaxBytes: 200 });
      for (let seq = 1; seq <= 100; seq++) {
        w.record('d', 'e', seq);
        w.persist();
      }
      const names = files(dir);
      assert.equal(names.length, 4, names.join(' '));
      assert.ok(names.every((n) => /^windows-\d+\.(snap|log)$/.test(n)));
      appendFileSync(join(dir, names.find((n) => n.endsWith('.log')) as string), ''); // still writable
      w.close();
    });
  });
});
