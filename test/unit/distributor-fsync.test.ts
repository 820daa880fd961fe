import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { tempDir } from '../helpers/pki.ts';

/**
 * What the distributor receipts must survive a power cut, and a new, renamed or removed name in a
 * folder is on disk only once that folder is fsync'ed (shared/durable-fs.ts). No test here can cut
 * the power: the calls are watched instead, with strace, in a real process storing chunks, setting
 * a failed file's chunks aside and writing a dead letter. Skipped where strace cannot run.
 */
const strace = spawnSync('strace', ['-o', '/dev/null', 'true']).status === 0;

describe('the distributor syncs the folders of what it receipts', { skip: !strace && 'strace is not available' }, () => {
  const tmp = tempDir('distributor-fsync');
  after(() => tmp.cleanup());

  it('syncs chunk folders, their new parents, the done marker, the set-aside chunks and a new dead-letter file', async () => {
    const root = join(tmp.dir, 'files');
    const letters = join(tmp.dir, 'dead-letter');
    const url = (p: string) => JSON.stringify(new URL(p, import.meta.url).href);
    const script = `
      import { createHash } from 'node:crypto';
      import { FileStore } from ${url('../../internal-network/distributor/file-store.ts')};
      import { DeadLetters } from ${url('../../internal-network/distributor/dead-letter.ts')};
      import { FieldStreamError } from ${url('../../shared/errors.ts')};
      const store = new FileStore(process.env.ROOT);
      const file = Buffer.from('two chunks of a file');
      const transfer = (id, index, sha256) => ({ id, index, count: 2, size: file.length, sha256 });
      const chunk = (id, index, sha256 = createHash('sha256').update(file).digest('hex')) =>
        ({ filename: 'a.bin', data: file.subarray(index * 10, index * 10 + 10).toString('base64'), transfer: transfer(id, index, sha256) });
      await store.storeChunk('cam-1', chunk('t1', 0));
      if (!(await store.storeChunk('cam-1', chunk('t1', 1)))) throw new Error('not stored');
      await store.storeChunk('cam-2', chunk('bad', 0, 'a'.repeat(64)));
      await store.storeChunk('cam-2', chunk('bad', 1, 'a'.repeat(64))).then(() => { throw new Error('stored'); }, (e) => { if (e.code !== 'DISTRIBUTOR_FILE_CHECKSUM') throw e; });
      await new DeadLetters(process.env.LETTERS).put('t', Buffer.from('x'), new FieldStreamError('DISTRIBUTOR_WRITE_REJECTED'));
    `;
    const log = join(tmp.dir, 'strace.log');
    // -y: each file descriptor printed with its path; -f: libuv's threads make the calls.
    const child = spawn('strace', ['-f', '-y', '-e', 'trace=fsync,fdatasync', '-o', log, process.execPath, '--import', 'tsx', '--input-type=module', '-e', script], {
      env: { ...process.env, ROOT: root, LETTERS: letters },
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    assert.equal(code, 0);
    const synced = new Set([...readFileSync(log, 'utf8').matchAll(/\b(?:fsync|fdatasync)\(\d+<([^>]*)>/g)].map((m) => m[1]!));
    const expect = (path: string, why: string) => assert.ok(synced.has(path), `${path} synced: ${why} (synced: ${[...synced].join(', ')})`);
    expect(join(root, '.partial', 'cam-1', 't1'), 'a chunk renamed into it');
    expect(join(root, '.partial', 'cam-1'), 'the transfer folder made in it, then the done marker');
    expect(join(root, '.partial'), "the device's chunk folder made in it");
    expect(root, 'the chunk folders made in it');
    assert.ok([...synced].some((p) => p.startsWith(join(root, '.partial', 'cam-1', 't1.done.json'))), 'the done marker written with fsync');
    expect(join(root, '.failed', 'cam-2'), 'the chunks of a failed file moved into it');
    expect(join(root, '.failed'), "the device's folder of set-aside chunks made in it");
    expect(join(root, '.partial', 'cam-2'), 'the chunks of a failed file moved out of it');
    expect(letters, "a new day's dead-letter file made in it");
  });
});
