/** Code-unit order, as `<` compares strings: the order the management API has always paged in. */
const byCodeUnit = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/** Ids a chunk holds at most before it is split in two, and at least (but for the only one) before it joins a neighbour. */
const CHUNK_MAX = 256;
const CHUNK_MIN = CHUNK_MAX / 4;

/**
 * A set of ids in order, for the management API's device pages: the fleet's ids, and those of each
 * state and revoked flag (listing.ts). Ids come and go as devices change state, so the set is
 * sorted chunks of at most CHUNK_MAX ids: an id is found by two binary searches (the chunks' last
 * ids, then one chunk), and added or deleted by moving at most one chunk's ids and the list of
 * chunks, which stay few (each, but for a lone one, holds at least CHUNK_MIN). A page read from a
 * cursor costs a search and the ids read, whatever the set's size; a sorted array instead moved
 * the whole set for each change, and a filter read from the whole fleet skipped all it did not hold.
 */
export class SortedIds {
  /** non-empty, each sorted, every id of one before every id of the next */
  private chunks: string[][] = [];
  private count = 0;

  get size(): number {
    return this.count;
  }

  has(id: string): boolean {
    const c = this.chunks[this.chunkOf(id)];
    return c !== undefined && c[lowerBound(c, id)] === id;
  }

  /** Adds `id` (nothing if held already). */
  add(id: string): void {
    if (this.chunks.length === 0) {
      this.chunks.push([id]);
      this.count = 1;
      return;
    }
    // Past every id: into the last chunk.
    const ci = Math.min(this.chunkOf(id), this.chunks.length - 1);
    const c = this.chunks[ci] as string[];
    const i = lowerBound(c, id);
    if (c[i] === id) return;
    c.splice(i, 0, id);
    this.count++;
    if (c.length > CHUNK_MAX) this.chunks.splice(ci + 1, 0, c.splice(c.length >>> 1));
  }

  /** Deletes `id` (nothing if not held). */
  delete(id: string): void {
    const ci = this.chunkOf(id);
    const c = this.chunks[ci];
    if (c === undefined) return;
    const i = lowerBound(c, id);
    if (c[i] !== id) return;
    c.splice(i, 1);
    this.count--;
    if (c.length >= CHUNK_MIN || this.chunks.length === 1) {
      if (c.length === 0) this.chunks = [];
      return;
    }
    // Too small: joined with a neighbour (split again in halves if that makes one too large), so a
    // set emptied here and there is not left as many near-empty chunks.
    const at = ci > 0 ? ci - 1 : ci;
    const joined = this.chunks[at] as string[];
    for (const id of this.chunks[at + 1] as string[]) joined.push(id);
    if (joined.length > CHUNK_MAX) this.chunks[at + 1] = joined.splice(joined.length >>> 1);
    else this.chunks.splice(at + 1, 1);
  }

  /** Up to `n` ids after `after` (from the first if undefined), in order. */
  first(n: number, after?: string): string[] {
    const out: string[] = [];
    let ci = after === undefined ? 0 : this.chunkOf(after, true);
    let i = after === undefined ? 0 : upperBound(this.chunks[ci] ?? [], after);
    for (; ci < this.chunks.length && out.length < n; ci++, i = 0) {
      const c = this.chunks[ci] as string[];
      while (i < c.length && out.length < n) out.push(c[i++] as string);
    }
    return out;
  }

  /** The index of the first chunk whose last id is at or past `id` (past it if `strictly`); the chunks' count if none. */
  private chunkOf(id: string, strictly = false): number {
    let lo = 0;
    let hi = this.chunks.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const last = (this.chunks[mid] as string[]).at(-1) as string;
      if (strictly ? last > id : last >= id) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }
}

/** The index of the first id at or past `id` in the sorted `list` (its length if none). */
function lowerBound(list: readonly string[], id: string): number {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((list[mid] as string) < id) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The index of the first id past `id` in the sorted `list` (its length if none). */
function upperBound(list: readonly string[], id: string): number {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((list[mid] as string) > id) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/** The first `n` ids of several sorted lists, together, in order (each id once). */
export function mergeFirst(lists: readonly (readonly string[])[], n: number): string[] {
  if (lists.length === 1) return (lists[0] as string[]).slice(0, n);
  const at = lists.map(() => 0);
  const out: string[] = [];
  while (out.length < n) {
    let best = -1;
    for (let k = 0; k < lists.length; k++) {
      const id = (lists[k] as string[])[at[k] as number];
      if (id !== undefined && (best < 0 || byCodeUnit(id, (lists[best] as string[])[at[best] as number] as string) < 0)) best = k;
    }
    if (best < 0) break;
    const id = (lists[best] as string[])[at[best] as number] as string;
    if (out.at(-1) !== id) out.push(id);
    at[best] = (at[best] as number) + 1;
  }
  return out;
}
