import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { LIMITS } from '../../shared/limits.ts';

/**
 * Which chunks of each transfer in progress are in its folder (ROOT/.partial/DEVICE/ID/INDEX.chunk),
 * as this distributor knows them: so that a chunk's arrival asks whether the set is complete in
 * time linear in the transfer's chunks over all its arrivals, not in a listing of the folder at
 * each one (65,536 chunks: about two billion entries read, the last arrivals each listing the
 * whole folder).
 *
 * Per transfer: a bitmap of the indexes known present and the lowest index not known present
 * (`firstUnknown`). The folder is listed once, when this process first meets the transfer (at its
 * start, after a restart, after the transfer was forgotten): what a killed process knew is on disk,
 * and nothing else is relied on. Later arrivals add their own index, and ask the disk only for the
 * index at `firstUnknown` (one lstat): one present there (a chunk another distributor sharing the
 * storage wrote) is marked and passed, one absent ends the look. Each index is passed once, and
 * each arrival meets at most one absent, so the looks cost count + arrivals in all. A chunk
 * delivered again finds its bit set and changes nothing.
 *
 * The bytes of the chunks known present are counted with them (each index once, at the size it has
 * when marked: a chunk is never put in place of another of another length, file-store.ts), so that
 * chunks adding up to more than the file declared are refused as they come, not at a join that waits
 * for every index: without chunk 0, up to 65,536 chunks each as large as the file were kept, never
 * joined. Those another distributor wrote count once this one meets them (its listing, or passing
 * them in order): distributors sharing the storage hold at most the file's size each.
 *
 * An index is marked only once its chunk has its name (linked in): chunks never leave the folder
 * but with the whole transfer (stored, or set aside with its verdict: the markers answer from then
 * on), or an operator moving it away; then the join finds a chunk missing and the caller forgets
 * the transfer (`forget`), which is listed again at its next chunk.
 */
export class ChunksPresent {
  /** by folder of chunks, least recently used first */
  private readonly transfers = new Map<string, Transfer>();

  constructor(private readonly maxTransfers: number = LIMITS.fileStoreChunkIndexTransfersMax) {}

  /**
   * Chunk `index`, of `bytes` bytes, is in `partial` (durably named): whether every index below
   * `count` is there now, and the bytes of the chunks known there (`held`).
   * Rejects with the file system's error (the folder gone: another consumer completed or set aside
   * the transfer meanwhile), the transfer forgotten.
   */
  async add(partial: string, index: number, count: number, bytes: number): Promise<{ complete: boolean; held: number }> {
    let t = this.transfers.get(partial);
    if (t) {
      this.transfers.delete(partial); // most recently used: to the end
      this.transfers.set(partial, t);
    } else {
      t = { bits: new Uint8Array(0), firstUnknown: 0, held: 0, listed: undefined };
      t.listed = listInto(partial, t);
      this.transfers.set(partial, t);
      // Bounded: a device may open transfers without end. One forgotten is listed again at its next chunk.
      if (this.transfers.size > this.maxTransfers) this.transfers.delete(this.transfers.keys().next().value as string);
    }
    try {
      await t.listed;
      mark(t, index, bytes);
      while (t.firstUnknown < count) {
        if (has(t, t.firstUnknown)) {
          t.firstUnknown++;
          continue;
        }
        const at = t.firstUnknown;
        const size = await chunkSize(partial, at);
        if (size === undefined) return { complete: false, held: t.held };
        mark(t, at, size); // the loop passes it (a concurrent arrival may have passed it already)
      }
      return { complete: true, held: t.held };
    } catch (err) {
      this.forget(partial);
      throw err;
    }
  }

  /** The transfer's chunks are no longer to be relied on as known (stored, set aside, or one found missing). */
  forget(partial: string): void {
    this.transfers.delete(partial);
  }

  /** transfers remembered (for tests and metrics) */
  get size(): number {
    return this.transfers.size;
  }
}

interface Transfer {
  /** bit i: chunk i is in the folder */
  bits: Uint8Array;
  /** every index below it is known present */
  firstUnknown: number;
  /** bytes of the chunks marked, each at the size it had when marked */
  held: number;
  /** the one listing of the folder, when this process met the transfer */
  listed: Promise<void> | undefined;
}

const CHUNK_NAME = /^(0|[1-9][0-9]{0,8})\.chunk$/;

/** The folder's chunks, marked with their sizes: once per transfer met. */
async function listInto(partial: string, t: Transfer): Promise<void> {
  for (const name of await readdir(partial)) {
    const m = CHUNK_NAME.exec(name);
    if (!m) continue;
    const size = await chunkSize(partial, Number(m[1]));
    if (size !== undefined) mark(t, Number(m[1]), size);
  }
}

/** Marks chunk `index` present, counting its `bytes` unless it was marked already. */
function mark(t: Transfer, index: number, bytes: number): void {
  // Never past the contract's bound on chunks (a name an operator or another program left there).
  if (index >= LIMITS.fileMaxChunks || has(t, index)) return;
  t.held += bytes;
  const byte = index >> 3;
  if (byte >= t.bits.length) {
    const grown = new Uint8Array(Math.min(Math.ceil(LIMITS.fileMaxChunks / 8), Math.max(byte + 1, t.bits.length * 2)));
    grown.set(t.bits);
    t.bits = grown;
  }
  t.bits[byte]! |= 1 << (index & 7);
}

function has(t: Transfer, index: number): boolean {
  const byte = index >> 3;
  return byte < t.bits.length && (t.bits[byte]! & (1 << (index & 7))) !== 0;
}

/** The size of INDEX.chunk in the folder, undefined when it is not there; a failure to tell but its absence is thrown. */
async function chunkSize(partial: string, index: number): Promise<number | undefined> {
  try {
    return (await lstat(join(partial, `${index}.chunk`))).size;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}
