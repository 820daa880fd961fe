/** Code-unit order, as `<` compares strings: the order the management API has always paged in. */
const byCodeUnit = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/**
 * The fleet's device ids in order, kept as devices are added (the fleet never drops one), so a page
 * of the management API's device list is found by a binary search and read from there: its cost is
 * that of the page, not a sort of the whole fleet on every request.
 *
 * Ids added since the last read wait apart and are merged in at the next one: sorted among
 * themselves, then merged in one pass. Thousands registered at start-up are merged once, rather
 * than moving the whole array for each one inserted.
 */
export class SortedIds {
  private sorted: string[] = [];
  private pending: string[] = [];

  /** An id not already held. */
  add(id: string): void {
    this.pending.push(id);
  }

  get size(): number {
    return this.sorted.length + this.pending.length;
  }

  /** The ids after `after` (every id if undefined), in order. */
  *after(after: string | undefined): Generator<string> {
    this.merge();
    // This array, even should an id be added while the caller reads: a merge makes a new one.
    const list = this.sorted;
    for (let i = after === undefined ? 0 : firstAfter(list, after); i < list.length; i++) yield list[i] as string;
  }

  private merge(): void {
    if (this.pending.length === 0) return;
    const add = this.pending.sort(byCodeUnit);
    this.pending = [];
    const old = this.sorted;
    const merged: string[] = new Array<string>(old.length + add.length);
    let i = 0;
    let j = 0;
    let k = 0;
    while (i < old.length && j < add.length) merged[k++] = byCodeUnit(old[i] as string, add[j] as string) <= 0 ? (old[i++] as string) : (add[j++] as string);
    while (i < old.length) merged[k++] = old[i++] as string;
    while (j < add.length) merged[k++] = add[j++] as string;
    this.sorted = merged;
  }
}

/** The index of the first id greater than `after` in the sorted `list` (its length if none). */
function firstAfter(list: readonly string[], after: string): number {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((list[mid] as string) > after) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}
