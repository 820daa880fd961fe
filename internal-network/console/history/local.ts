import { scanLocalStore } from '../../distributor/sinks/local-store.ts';
import { downsample, type HistoryReader, type Series } from './history.ts';

/** History from the local store of `npm start` (TIMESERIES_LOCAL_PATH): the day files of the window, a day either side. */
export class LocalHistory implements HistoryReader {
  readonly description: string;

  constructor(private readonly dir: string) {
    this.description = `local store ${dir}`;
  }

  async series(device: string, field: string, fromMs: number, toMs: number): Promise<Series> {
    // A redelivered message appended its points again: one value per time, as InfluxDB keeps it.
    const byTime = new Map<number, number>();
    for await (const p of scanLocalStore(this.dir, fromMs)) {
      if (p.measurement !== 'readings' || p.tags.device !== device || p.time < fromMs || p.time > toMs) continue;
      const v = p.fields[field];
      if (typeof v === 'number') byTime.set(p.time, v);
    }
    return downsample([...byTime], fromMs, toMs);
  }
}
