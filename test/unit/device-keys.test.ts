import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { DeviceKeyRegistry } from '../../internal-network/shared/device-keys.ts';
import { tempDir } from '../helpers/pki.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const hex = () => randomBytes(32).toString('hex');

/**
 * The registry looks at its folder, not at every device's file, each time a key's trust runs out;
 * a device's file only when the folder changed, or after the longer recheck (a file overwritten in
 * place leaves the folder as it was).
 */
describe('the device key registry', () => {
  it('picks up keys added, replaced, removed and overwritten in place', async () => {
    const work = tempDir('device-keys');
    try {
      const registry = new DeviceKeyRegistry(work.dir, undefined, { recheckMs: 40, fileRecheckMs: 400 });
      const file = join(work.dir, 'd1.key');
      const first = hex();
      assert.equal(registry.get('d1'), undefined, 'no key yet');
      writeFileSync(file, first);
      await sleep(60);
      assert.equal(registry.get('d1')?.toString('hex'), first, 'a new file changes the folder');

      const second = hex();
      writeFileSync(`${file}.tmp`, second);
      renameSync(`${file}.tmp`, file);
      await sleep(60);
      assert.equal(registry.get('d1')?.toString('hex'), second, 'replaced by a rename');

      const third = hex();
      await sleep(20); // a later mtime than the rename's
      writeFileSync(file, third);
      await sleep(60);
      assert.equal(registry.get('d1')?.toString('hex'), second, 'overwritten in place: the folder is unchanged, the file not due yet');
      await sleep(400);
      assert.equal(registry.get('d1')?.toString('hex'), third, 'and looked at after the longer recheck');

      rmSync(file);
      await sleep(60);
      assert.equal(registry.get('d1'), undefined, 'removed');
      assert.equal(registry.get('../d1'), undefined, 'not a device id');
    } finally {
      work.cleanup();
    }
  });
});
