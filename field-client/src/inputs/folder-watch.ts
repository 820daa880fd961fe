import { mkdirSync, readdirSync, statSync } from 'node:fs';
import { extname, join } from 'node:path';
import { unsafeFilenameReason } from '../../../shared/contract/filename.ts';
import type { Logger } from '../../../shared/logger.ts';
import type { FieldClient } from '../field-client.ts';
import type { LocalInput } from './input.ts';

const TYPES: Record<string, string> = {
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.png': 'image/png',
  '.tif': 'image/tiff',
  '.tiff': 'image/tiff',
  '.csv': 'text/csv',
  '.txt': 'text/plain',
  '.json': 'application/json',
  '.pdf': 'application/pdf',
  '.zip': 'application/zip',
};

/**
 * Sends every new file that appears in a folder. A file is taken once its size and modification
 * time held still for one interval (a camera may still be writing it), then moved into the outbox;
 * the folder is left empty of what was accepted. Polling, not inotify: it works the same on every
 * file system, network mounts and SD cards included. The folder is created on start if missing.
 */
export function folderInput(client: FieldClient, dir: string, intervalMs: number, log: Logger): LocalInput {
  const seen = new Map<string, string>();
  const busy = new Set<string>();
  const tick = () => {
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch (err) {
      log.warn({ dir, err: (err as Error).message }, 'cannot read the watched folder');
      return;
    }
    for (const name of names) {
      if (name.startsWith('.') || busy.has(name)) continue;
      const path = join(dir, name);
      let sig: string;
      try {
        const st = statSync(path);
        if (!st.isFile()) continue;
        sig = `${st.size}:${st.mtimeMs}`;
      } catch {
        continue;
      }
      if (seen.get(name) !== sig) {
        seen.set(name, sig);
        continue;
      }
      const reason = unsafeFilenameReason(name);
      if (reason) {
        log.warn({ code: 'FIELD_INPUT_INVALID', file: name }, `file name ${reason}; left in place`);
        continue;
      }
      busy.add(name);
      client
        .submitFile(path, { filename: name, contentType: TYPES[extname(name).toLowerCase()] ?? 'application/octet-stream', move: true })
        .then(
          (m) => log.info({ file: name, messageId: m.messageId }, 'file from the watched folder queued'),
          (err: Error) => log.warn({ file: name, err: err.message }, 'cannot take the file; will try again'),
        )
        .finally(() => {
          busy.delete(name);
          seen.delete(name);
        });
    }
    for (const name of seen.keys()) if (!names.includes(name)) seen.delete(name);
  };
  let timer: NodeJS.Timeout | undefined;
  return {
    name: 'folder',
    async start() {
      mkdirSync(dir, { recursive: true });
      timer = setInterval(tick, intervalMs);
    },
    async close() {
      clearInterval(timer);
    },
  };
}
