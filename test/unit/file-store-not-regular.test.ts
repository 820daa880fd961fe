import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, constants, mkdirSync, openSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { FileStore } from '../../internal-network/distributor/file-store.ts';
import { FieldStreamError, type ErrorCode } from '../../shared/errors.ts';
import { tempDir } from '../helpers/pki.ts';

/**
 * A FIFO or a folder in the place of a transfer's marker or of one of its chunks, in the
 * distributor's file storage: read as a file, a FIFO held the read (and the consumer) for ever.
 */
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const coded = (code: ErrorCode) => (e: unknown) => e instanceof FieldStreamError && e.code === code;

function chunksOf(file: Buffer, size: number, id: string) {
  const count = Math.ceil(file.length / size);
  return Array.from({ length: count }, (_, i) => ({
    filename: 'file.bin',
    data: file.subarray(i * size, (i + 1) * size).toString('base64'),
    transfer: { id, index: i, count, size: file.length, sha256: sha(file) },
  }));
}

/** `p`, or a rejection naming `what` after 3 s: a read that never returns fails the test rather than hanging it. */
function within<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer after 3 s`)), 3_000);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** Lets a reader held on the FIFO `path` go (a writer opens and closes it: the reader sees its end). */
function release(path: string): void {
  try {
    closeSync(openSync(path, constants.O_WRONLY | constants.O_NONBLOCK));
  } catch {
    // No reader on it (ENXIO): nothing held.
  }
}

describe('file storage: something other than a file in the place of a marker or a chunk', () => {
  const tmp = tempDir('file-not-regular');
  const root = join(tmp.dir, 'files');
  const store = new FileStore(root);
  after(() => tmp.cleanup());

  it("a FIFO under the name of an empty file sent whole is a name taken, the file stored beside it; never read for a hash held for ever", async () => {
    mkdirSync(join(root, 'dev-empty'), { recursive: true });
    const fifo = join(root, 'dev-empty', 'empty.txt');
    execFileSync('mkfifo', [fifo]);
    try {
      const stored = await within(store.store('dev-empty', { filename: 'empty.txt', data: '' }), 'the empty file stored');
      assert.notEqual(stored.path, 'dev-empty/empty.txt', `stored beside the FIFO: ${JSON.stringify(stored)}`);
      assert.equal(stored.size, 0);
    } finally {
      release(fifo);
    }
  });

  for (const kind of ['FIFO', 'folder'] as const) {
    const make = (p: string) => (kind === 'FIFO' ? execFileSync('mkfifo', [p]) : mkdirSync(p));

    it(`a ${kind} as a transfer's done marker is DISTRIBUTOR_FILE_MARKER_DAMAGED (a dead letter, receipted) at once, not a read held for ever or a retry for ever`, async () => {
      const id = `done-${kind}`;
      const chunks = chunksOf(Buffer.from('two chunks and a marker that is no file'), 20, id);
      const done = join(root, '.partial', 'cam-1', `${id}.done.json`);
      mkdirSync(join(root, '.partial', 'cam-1'), { recursive: true });
      make(done);
      try {
        for (const c of chunks) {
          const err = await within(store.storeChunk('cam-1', c), `chunk ${c.transfer.index}`).then(() => assert.fail('answered'), (e: unknown) => e);
          assert.ok(coded('DISTRIBUTOR_FILE_MARKER_DAMAGED')(err), String(err));
          assert.equal((err as FieldStreamError).details?.path, done, 'the marker named');
        }
        await assert.rejects(within(store.recordOf('cam-1', id), 'the dry run of a replay'), coded('DISTRIBUTOR_FILE_MARKER_DAMAGED'));
      } finally {
        if (kind === 'FIFO') release(done);
      }
    });

    it(`a ${kind} as a transfer's failed marker is DISTRIBUTOR_FILE_MARKER_DAMAGED at once`, async () => {
      const id = `failed-${kind}`;
      const chunks = chunksOf(Buffer.from('two chunks and a verdict that is no file'), 25, id);
      mkdirSync(join(root, '.failed', 'cam-1'), { recursive: true });
      const verdict = join(root, '.failed', 'cam-1', `${id}.json`);
      make(verdict);
      try {
        await assert.rejects(within(store.storeChunk('cam-1', chunks[0]!), 'chunk 0'), coded('DISTRIBUTOR_FILE_MARKER_DAMAGED'));
      } finally {
        if (kind === 'FIFO') release(verdict);
      }
    });

    it(`a ${kind} in place of a chunk received is DISTRIBUTOR_FILE_MARKER_DAMAGED at the join, at once, and the join's copy goes`, async () => {
      const id = `chunk-${kind}`;
      const chunks = chunksOf(Buffer.from('three chunks, the first replaced by hand'), 15, id);
      assert.equal(chunks.length, 3);
      assert.equal(await store.storeChunk('cam-2', chunks[0]!), undefined);
      assert.equal(await store.storeChunk('cam-2', chunks[1]!), undefined);
      const first = join(root, '.partial', 'cam-2', id, '0.chunk');
      rmSync(first);
      make(first);
      try {
        const err = await within(store.storeChunk('cam-2', chunks[2]!), 'the completing chunk').then(() => assert.fail('answered'), (e: unknown) => e);
        assert.ok(coded('DISTRIBUTOR_FILE_MARKER_DAMAGED')(err), String(err));
        assert.equal((err as FieldStreamError).details?.path, first, 'the chunk named');
        assert.deepEqual(readdirSync(join(root, '.partial', 'cam-2', id)).filter((f) => f.startsWith('.incoming-')), [], "the join's copy removed");
      } finally {
        if (kind === 'FIFO') release(first);
      }
    });
  }
});
