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

/**
 * A compromised DMZ names any device ids it likes (a gateway's envelope up to 1,000): an id with no
 * key file must cost nothing that stays. The registry cached an entry per id asked for, for ever.
 */
describe('the device key registry under invented ids', () => {
  it('keeps nothing for ids it does not list, and still sees a device registered while running', async () => {
    const work = tempDir('device-keys-flood');
    try {
      const registry = new DeviceKeyRegistry(work.dir, undefined, { recheckMs: 40, fileRecheckMs: 400 });
      const real = hex();
      writeFileSync(join(work.dir, 'real-1.key'), real);
      assert.equal(registry.get('real-1')?.toString('hex'), real);
      for (let i = 0; i < 20_000; i++) assert.equal(registry.get(`x${i.toString(36)}`), undefined);
      assert.equal(registry.cachedKeys, 1, 'only the listed device is held');
      assert.equal(registry.has('x1'), false);

      const late = hex();
      writeFileSync(join(work.dir, 'late-2.key'), late);
      await sleep(60);
      assert.equal(registry.get('late-2')?.toString('hex'), late, 'registered while running');
      assert.deepEqual(registry.registered().sort(), ['late-2', 'real-1']);

      rmSync(join(work.dir, 'real-1.key'));
      await sleep(60);
      assert.equal(registry.get('real-1'), undefined, 'removed');
      assert.equal(registry.cachedKeys, 1, 'and its cached key forgotten');
    } finally {
      work.cleanup();
    }
  });
});
