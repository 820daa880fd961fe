import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, it, mock } from 'node:test';
import { LocalPointStore, readLocalStore } from '../../internal-network/distributor/sinks/local-store.ts';
import { RejectedMessages } from '../../field-client/src/rejected.ts';
import { isFieldStreamError } from '../../shared/errors.ts';
import { LineFile } from '../../shared/line-file.ts';
import { withFileSizeLimit } from '../helpers/file-size-limit.ts';
import { tempDir } from '../helpers/pki.ts';

/**
 * The files of lines that hold acknowledged data (shared/line-file.ts), through their users: the
 * distributor's local store and the field client's refused messages. A write the disk cuts short
 * is made real with the process's file size limit (prlimit): the kernel takes the bytes up to it,
 * then answers EFBIG.
 */
const point = (v: number) => ({ measurement: 'readings', tags: { device: 'line-1' }, fields: { v }, time: 1700000000000 + v });

describe('files of lines holding acknowledged data', () => {
  const tmp = tempDir('line-file');
  after(() => tmp.cleanup());

  it('the local store refuses a batch the disk took only part of, and the next batch is read back whole', async () => {
    const dir = join(tmp.dir, 'store');
    // The store's file is named by the day of the clock: held at noon (UTC), so that a midnight
    // during the test does not send the later batches to another file.
    mock.timers.enable({ apis: ['Date'], now: Date.UTC(2026, 0, 15, 12) });
    const store = new LocalPointStore(dir);
    const file = join(dir, '2026-01-15.jsonl');
    try {
      await store.write([point(1)]);
      await withFileSizeLimit(statSync(file).size + 30, () =>
        assert.rejects(store.write([point(2), point(3), point(4)]), (err) => isFieldStreamError(err, 'DISTRIBUTOR_WRITE_FAILED')),
      );
      // The distributor writes the refused batch again (its message is still unacknowledged), and goes on.
      await store.write([point(2), point(3), point(4)]);
      await store.write([point(5)]);
      await store.close();
    } finally {
      mock.timers.reset();
    }
    assert.deepEqual(
      readLocalStore(dir).map((p) => p.fields.v),
      [1, 2, 3, 4, 5],
    );
    assert.equal(readFileSync(file, 'utf8').split('\n').filter((l) => l !== '').length, 6, 'the torn part stays a line of its own');
  });

  it('a local store two writers share (compose mounts one folder into the distributor and the console, and into each --scale replica): a line the other left torn does not swallow the next batch', async () => {
    const dir = join(tmp.dir, 'shared-store');
    mock.timers.enable({ apis: ['Date'], now: Date.UTC(2026, 0, 15, 12) });
    const distributor = new LocalPointStore(dir);
    const other = new LocalPointStore(dir);
    const file = join(dir, '2026-01-15.jsonl');
    try {
      await distributor.write([point(1)]);
      // The other writer's batch cut short by the disk: its torn line ends the file.
      await withFileSizeLimit(statSync(file).size + 30, () => assert.rejects(other.write([point(2), point(3)])));
      // The distributor's next batch, acknowledged to the broker once this resolves.
      await distributor.write([point(4)]);
      await distributor.close();
      await other.close();
    } finally {
      mock.timers.reset();
    }
    assert.deepEqual(
      readLocalStore(dir).map((p) => p.fields.v),
      [1, 4],
    );
  });

  it('the field client sets refused messages aside on lines of their own after a torn one', () => {
    const rejected = new RejectedMessages(join(tmp.dir));
    writeFileSync(rejected.path, '{"at":"2024-01-01T00:00:00.000Z","code":"CONTRACT_INVA');
    rejected.put([], { code: 'CONTRACT_INVALID_MESSAGE', message: 'refused for the test', messageIds: ['e.7'] });
    const lines = readFileSync(rejected.path, 'utf8').split('\n');
    assert.equal(lines.length, 3);
    assert.deepEqual((JSON.parse(lines[1] as string) as { messageIds: string[] }).messageIds, ['e.7']);
    assert.equal(lines[2], '');
  });

  it('appends to a new file of that name after the held one was removed (an operator clearing letters): the later lines are not lost with it', async () => {
    const path = join(tmp.dir, 'removed.jsonl');
    const file = new LineFile(0o640);
    await file.append(path, '{"n":1}\n');
    rmSync(path);
    await file.append(path, '{"n":2}\n');
    await file.end();
    assert.equal(readFileSync(path, 'utf8'), '{"n":2}\n');
  });

  it('appends to a new file of that name after the held one was renamed away, the renamed one left as it was', async () => {
    const path = join(tmp.dir, 'renamed.jsonl');
    const file = new LineFile(0o640);
    await file.append(path, '{"n":1}\n');
    renameSync(path, `${path}.moved`);
    await file.append(path, '{"n":2}\n');
    await file.append(path, '{"n":3}\n');
    await file.end();
    assert.equal(readFileSync(`${path}.moved`, 'utf8'), '{"n":1}\n');
    assert.equal(readFileSync(path, 'utf8'), '{"n":2}\n{"n":3}\n');
  });

  it('makes its folder again when the folder was moved away (an operator making room in a full dead-letter folder): the later lines are written, not refused until a restart', async () => {
    const dir = join(tmp.dir, 'moved-folder');
    const path = join(dir, 'letters.jsonl');
    const file = new LineFile(0o640);
    mkdirSync(dir);
    await file.append(path, '{"n":1}\n');
    renameSync(dir, `${dir}.moved`);
    await file.append(path, '{"n":2}\n');
    await file.end();
    assert.equal(readFileSync(join(`${dir}.moved`, 'letters.jsonl'), 'utf8'), '{"n":1}\n');
    assert.equal(readFileSync(path, 'utf8'), '{"n":2}\n');
  });

  it('appends the lines again to the name when the file lost it while they were written (removed between the write and its sync)', async () => {
    const path = join(tmp.dir, 'raced.jsonl');
    const file = new LineFile(0o640);
    await file.append(path, '{"n":1}\n');
    // The removal lands while the next append is being synced: the moment the check before it cannot see.
    const probe = await open(path, 'r');
    const proto = Object.getPrototypeOf(probe) as { datasync: () => Promise<void> };
    await probe.close();
    const datasync = proto.datasync;
    let raced = false;
    proto.datasync = async function (this: unknown) {
      if (!raced) {
        raced = true;
        rmSync(path);
      }
      return datasync.call(this);
    };
    try {
      await file.append(path, '{"n":2}\n');
    } finally {
      proto.datasync = datasync;
    }
    await file.end();
    assert.ok(raced);
    assert.equal(readFileSync(path, 'utf8'), '{"n":2}\n', 'the line is in the file that has the name');
  });
});

/**
 * A file of lines FieldStream keeps (a journal, a list) with something other than a regular file in
 * its place: a FIFO held the read for ever (the open waits for a writer), so the field client's
 * start hung on its command journal without a word; a link to /dev/zero was read for ever, a line
 * without end. Refused at once, with a code.
 */
describe('a file of lines read back', () => {
  const tmp = tempDir('line-file-kinds');
  after(() => tmp.cleanup());
  const repo = join(import.meta.dirname, '..', '..');

  for (const kind of ['fifo', 'device', 'folder'] as const) {
    it(`is refused when a ${kind} stands in its place, rather than waited on or read for ever (the field client's command journal)`, () => {
      const path = join(tmp.dir, `commands-${kind}.journal`);
      if (kind === 'fifo') execFileSync('mkfifo', [path]);
      else if (kind === 'device') symlinkSync('/dev/zero', path);
      else mkdirSync(path);
      const code = `
        const { CommandJournal } = await import(${JSON.stringify(join(repo, 'field-client', 'src', 'command-journal.ts'))});
        try { new CommandJournal(${JSON.stringify(path)}, 10); console.log('read'); } catch (err) { console.log(err.code); }`;
      const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { cwd: repo, encoding: 'utf8', timeout: 20_000 });
      assert.equal(r.signal, null, `ended by itself, not killed after 20 s: ${r.stderr.slice(-300)}`);
      assert.equal(r.stdout.trim(), 'FILE_NOT_REGULAR');
    });
  }
});
