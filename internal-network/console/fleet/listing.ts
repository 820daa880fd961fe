import { mergeFirst, SortedIds } from './sorted-ids.ts';
import { DEVICE_STATES, type DeviceRow, type DeviceState } from './types.ts';

/** What the management API's device list filters on; absent: either. */
export interface ListingFilter {
  state?: DeviceState;
  revoked?: boolean;
}

const STATE_INDEX = new Map<DeviceState, number>(DEVICE_STATES.map((s, i) => [s, i]));
/** The set of a state and flag: a number, so a row whose state and flag did not change costs one look-up. */
const setOf = (state: DeviceState, revoked: boolean) => (STATE_INDEX.get(state) as number) * 2 + (revoked ? 1 : 0);

/**
 * The fleet's device ids in order, for the management API's pages: all of them, and apart those of
 * each state and revoked flag together (8 sets), kept as rows change (`place`). A filtered page is
 * read from the sets that match it only (at most 4, merged), so it costs a search and the page:
 * read from all the ids and filtered, a filter few devices match (state=online in a fleet mostly
 * offline, revoked=true) made every page a scan of the whole fleet, 100,000 rows per request.
 */
export class DeviceListing {
  private readonly all = new SortedIds();
  private readonly sets = Array.from({ length: DEVICE_STATES.length * 2 }, () => new SortedIds());
  /** the set each id is in */
  private readonly where = new Map<string, number>();

  /** Puts the row's id in the set of its state and flag (taking it out of the one it was in). */
  place(row: Pick<DeviceRow, 'id' | 'state' | 'revoked'>): void {
    const to = setOf(row.state, row.revoked);
    const from = this.where.get(row.id);
    if (from === to) return;
    if (from === undefined) this.all.add(row.id);
    else this.sets[from]?.delete(row.id);
    this.sets[to]?.add(row.id);
    this.where.set(row.id, to);
  }

  /** Up to `n` ids after `after` (from the first if undefined) that `filter` lets through, in order. */
  first(n: number, after: string | undefined, filter: ListingFilter = {}): string[] {
    if (filter.state === undefined && filter.revoked === undefined) return this.all.first(n, after);
    const lists: string[][] = [];
    for (const state of filter.state === undefined ? DEVICE_STATES : [filter.state]) {
      for (const revoked of filter.revoked === undefined ? [false, true] : [filter.revoked]) lists.push((this.sets[setOf(state, revoked)] as SortedIds).first(n, after));
    }
    return mergeFirst(lists, n);
  }

  get size(): number {
    return this.all.size;
  }
}
