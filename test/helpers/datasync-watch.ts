import { readlinkSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * Records every FileHandle.datasync() of this process as it ends, as `queue synced` for a file under
 * `dir` and `synced PATH` for any other, in `events` (which a test shares with its own events, to
 * tell their order). `restore()` puts the method back. Linux only: the path of each handle is read
 * from /proc/self/fd ('?' elsewhere, and the test's assertion then says the order cannot be told).
 */
export async function watchDatasync(scratch: string, dir: string, events: string[]): Promise<{ restore: () => void }> {
  const probe = await open(join(scratch, 'datasync-probe'), 'w');
  const proto = Object.getPrototypeOf(probe) as { datasync: () => Promise<void> };
  await probe.close();
  const datasync = proto.datasync;
  proto.datasync = async function (this: { fd: number }) {
    let path = '?';
    try {
      path = readlinkSync(`/proc/self/fd/${this.fd}`);
    } catch {
      // not Linux
    }
    await datasync.call(this);
    events.push(path.startsWith(dir) ? 'queue synced' : `synced ${path}`);
  };
  return { restore: () => void (proto.datasync = datasync) };
}
