import { statfs } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { ServiceMetrics } from './registry.ts';

/** A folder (or file) a service keeps durable data in, by the setting that names it (FILE_STORAGE_PATH, ...). */
export interface DurableFolder {
  setting: string;
  path: string;
}

/** The file system holding `path` (or, while it does not exist yet, its folder); undefined when neither can be read. */
async function fileSystemOf(path: string): Promise<{ available: number; size: number } | undefined> {
  for (const p of [path, dirname(path)]) {
    try {
      const s = await statfs(p);
      return { available: s.bavail * s.bsize, size: s.blocks * s.bsize };
    } catch {
      /* the next, or none */
    }
  }
  return undefined;
}

/**
 * `filesystem_available_bytes{setting}` and `filesystem_size_bytes{setting}` of the file system each
 * durable folder is on, measured at each scrape (statfs: the blocks this process may still write,
 * and all of them). A full one stops what writes there (the files stored, the dead letters, the
 * command journal, the local time-series store), and nothing else said it was filling: the alert
 * FieldStreamDiskFilling reads the fraction. Folders on one file system report the same figures.
 */
export function durableFolderSpace(m: ServiceMetrics, folders: readonly DurableFolder[]): ServiceMetrics {
  const wanted = folders.filter((f) => f.path !== '');
  if (wanted.length === 0) return m;
  const measure = (pick: (fs: { available: number; size: number }) => number) =>
    async function (this: { reset(): void; set(labels: { setting: string }, v: number): void }) {
      const seen = await Promise.all(wanted.map(async (f) => [f.setting, await fileSystemOf(f.path)] as const));
      this.reset();
      for (const [setting, fs] of seen) if (fs) this.set({ setting }, pick(fs));
    };
  m.gauge('filesystem_available_bytes', 'Bytes the service may still write on the file system of the folder a setting names (statfs: available blocks), measured at each scrape.', ['setting'], measure((fs) => fs.available));
  m.gauge('filesystem_size_bytes', 'Bytes of the file system of the folder a setting names (statfs: all its blocks), measured at each scrape.', ['setting'], measure((fs) => fs.size));
  return m;
}
