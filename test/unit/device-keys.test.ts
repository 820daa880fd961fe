import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { DeviceKeyRegistry } from '../../internal-network/shared/device-keys.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { captureLogs } from '../helpers/gateway-fixture.ts';
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
      // The longer recheck well past the ~80 ms the overwrite takes to check: a loaded machine's
      // stall of a few hundred ms made the file due before the "not due yet" look.
      const registry = new DeviceKeyRegistry(work.dir, undefined, { recheckMs: 40, fileRecheckMs: 1_500 });
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
      await sleep(1_500);
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

describe('the device key registry when its folder cannot be looked at for a moment', () => {
  it('keeps the devices listed last and their keys (EMFILE, EIO, ENOTDIR), logged once; a key removed is gone', async () => {
    const work = tempDir('device-keys-unlisted');
    try {
      const { lines, logger } = captureLogs();
      const dir = join(work.dir, 'keys');
      mkdirSync(dir);
      const key = hex();
      writeFileSync(join(dir, 'd1.key'), key);
      const registry = new DeviceKeyRegistry(dir, undefined, { recheckMs: 20, fileRecheckMs: 40 }, logger);
      assert.equal(registry.get('d1')?.toString('hex'), key);
      // The folder cannot be listed nor its files looked at (a file in its place: ENOTDIR, as
      // EMFILE or EIO would fail them): taken as empty, every message of d1 was refused as unknown.
      renameSync(dir, `${dir}.away`);
      writeFileSync(dir, 'not a folder');
      for (let i = 0; i < 3; i++) {
        await sleep(60);
        assert.equal(registry.has('d1'), true, 'still registered');
        assert.equal(registry.get('d1')?.toString('hex'), key, 'its key kept');
      }
      assert.equal(lines.filter((l) => l.code === 'CONFIG_FILE_UNREADABLE').length, 1, 'logged once while it lasts');
      rmSync(dir);
      renameSync(`${dir}.away`, dir);
      rmSync(join(dir, 'd1.key'));
      await sleep(60);
      assert.equal(registry.get('d1'), undefined, 'a key removed is gone');
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

/**
 * A device is onboarded (its key written) and started a moment later: its first message must find
 * its key, not wait out the recheck of keys already trusted. It was refused as an unknown device
 * (a security event, and its messages held until the commit timeout) when its key was written
 * within a second of the last look at the folder.
 */
describe('the device key registry and a device onboarded just now', () => {
  it('knows a key written a moment before the first message of its device', async () => {
    const work = tempDir('device-keys-new');
    try {
      const registry = new DeviceKeyRegistry(work.dir, undefined, { recheckMs: 1_000, fileRecheckMs: 10_000, missRecheckMs: 20 });
      writeFileSync(join(work.dir, 'old-1.key'), hex());
      assert.ok(registry.get('old-1'), 'the folder was just looked at');
      const fresh = hex();
      writeFileSync(join(work.dir, 'new-2.key'), fresh);
      await sleep(40);
      assert.equal(registry.has('new-2'), true);
      assert.equal(registry.get('new-2')?.toString('hex'), fresh);
    } finally {
      work.cleanup();
    }
  });
});

describe('the device key registry under invented ids, between its looks', () => {
  it('looks at its folder no more often than the miss recheck, however many ids it lacks', () => {
    const work = tempDir('device-keys-miss');
    try {
      const registry = new DeviceKeyRegistry(work.dir, undefined, { recheckMs: 60_000, fileRecheckMs: 600_000, missRecheckMs: 60_000 });
      for (let i = 0; i < 1_000; i++) assert.equal(registry.get(`x${i}`), undefined);
      writeFileSync(join(work.dir, 'next-3.key'), hex());
      // Listed now, but the folder was looked at under a minute ago: not looked at again.
      assert.equal(registry.get('next-3'), undefined);
      assert.equal(registry.has('next-3'), false);
    } finally {
      work.cleanup();
    }
  });
});

/**
 * The revoked list is what keeps a revoked device out inside whatever key file of it is still
 * around (the distributor, the command API, the console read it so). A read that failed for any
 * reason (a folder in its place, no permission, too many open files, an I/O error) emptied it until
 * the next look: a second in which the device's messages and responses were accepted and commands
 * sent to it.
 */
describe("the device key registry's revoked list", () => {
  it('keeps the ids read last when the list cannot be read, logged once; reads it again when it can', async () => {
    const work = tempDir('device-keys-revoked');
    try {
      const { lines, logger } = captureLogs();
      const revokedFile = join(work.dir, 'revoked-devices.txt');
      writeFileSync(revokedFile, 'gone-1\n');
      writeFileSync(join(work.dir, 'gone-1.key'), hex());
      const registry = new DeviceKeyRegistry(work.dir, revokedFile, { recheckMs: 20, fileRecheckMs: 400 }, logger);
      assert.equal(registry.isRevoked('gone-1'), true);
      rmSync(revokedFile);
      mkdirSync(revokedFile); // EISDIR on read, as EACCES, EMFILE or EIO would fail it
      for (let i = 0; i < 3; i++) {
        await sleep(40);
        assert.equal(registry.isRevoked('gone-1'), true, 'unreadable: the device stays revoked');
      }
      const warned = lines.filter((l) => l.code === 'CONFIG_FILE_UNREADABLE');
      assert.equal(warned.length, 1, 'logged once while it lasts');
      assert.equal(warned[0]?.path, revokedFile);
      rmSync(revokedFile, { recursive: true });
      writeFileSync(revokedFile, 'gone-1\ngone-2\n');
      await sleep(40);
      assert.deepEqual([...registry.revokedIds()].sort(), ['gone-1', 'gone-2'], 'read again once it can be');
    } finally {
      work.cleanup();
    }
  });

  it('never un-revokes while it runs: a list that reads empty (a cp caught half-way), shorter or not at all keeps every id read before', async () => {
    const work = tempDir('device-keys-revoked-shorter');
    try {
      const { lines, logger } = captureLogs();
      const revokedFile = join(work.dir, 'revoked-devices.txt');
      writeFileSync(revokedFile, 'gone-1\ngone-2\n');
      const registry = new DeviceKeyRegistry(work.dir, revokedFile, { recheckMs: 20, fileRecheckMs: 400 }, logger);
      writeFileSync(revokedFile, ''); // cp and scp truncate the file before they write it
      await sleep(40);
      assert.deepEqual([...registry.revokedIds()].sort(), ['gone-1', 'gone-2'], 'read empty');
      writeFileSync(revokedFile, 'gone-2\ngone-3\n'); // an older copy, with a revocation of its own
      await sleep(40);
      assert.deepEqual([...registry.revokedIds()].sort(), ['gone-1', 'gone-2', 'gone-3'], 'shorter: the new id taken, none dropped');
      rmSync(revokedFile); // renamed away for a moment
      await sleep(40);
      assert.deepEqual([...registry.revokedIds()].sort(), ['gone-1', 'gone-2', 'gone-3'], 'gone');
      assert.ok(lines.some((l) => l.code === 'CONFIG_FILE_UNREADABLE' && l.path === revokedFile), 'logged');
    } finally {
      work.cleanup();
    }
  });

  it('does not start on a list it cannot read (fail closed); a missing one is nothing revoked yet', () => {
    const work = tempDir('device-keys-revoked-start');
    try {
      const revokedFile = join(work.dir, 'revoked-devices.txt');
      assert.equal(new DeviceKeyRegistry(work.dir, revokedFile).revokedIds().size, 0, 'missing: nothing revoked');
      mkdirSync(revokedFile); // what Docker mounts where the file is missing
      assert.throws(() => new DeviceKeyRegistry(work.dir, revokedFile), (err: unknown) => err instanceof FieldStreamError && err.code === 'CONFIG_FILE_UNREADABLE');
    } finally {
      work.cleanup();
    }
  });
});
