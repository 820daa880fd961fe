import assert from 'node:assert/strict';
import { mkdirSync, renameSync, rmSync, rmdirSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { RevokedSerials } from '../../dmz/gateway/revocation.ts';
import { isFieldStreamError } from '../../shared/errors.ts';
import { TIMINGS } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';
import { captureLogs } from '../helpers/gateway-fixture.ts';
import { tempDir } from '../helpers/pki.ts';

const tick = () => new Promise((r) => setTimeout(r, TIMINGS.revokedSerialsReloadMs + 300));

describe("the gateway's revoked serials", () => {
  it('keep what was read when the file is gone, a folder, unreadable, empty or shorter, and never end the process; take a longer list', async () => {
    const tmp = tempDir('revoked-serials');
    const path = join(tmp.dir, 'revoked-serials.txt');
    const { lines, logger } = captureLogs();
    const changes: number[] = [];
    writeFileSync(path, 'AA01\nbb02\n');
    const list = new RevokedSerials(path, logger, (s) => changes.push(s.size));
    const touched = (at: number) => utimesSync(path, at, at);
    try {
      assert.ok(list.has('aa01') && list.has('BB02'));
      // cp truncates before it writes: an empty read must not un-revoke anything
      writeFileSync(path, '');
      touched(1_000);
      await tick();
      assert.ok(list.has('AA01') && list.has('BB02'), 'an empty read keeps both');
      // an older copy put back
      writeFileSync(path, 'AA01\n');
      touched(2_000);
      await tick();
      assert.ok(list.has('BB02'), 'a shorter list keeps what it lacks');
      // renamed away for a moment, then a folder where Docker found no file
      renameSync(path, `${path}.moved`);
      await tick();
      mkdirSync(path);
      await tick();
      assert.ok(list.has('AA01') && list.has('BB02'), 'gone, or a folder: both stay revoked');
      rmdirSync(path);
      writeFileSync(path, 'AA01\nBB02\nCC03\n');
      touched(3_000);
      await tick();
      assert.ok(list.has('CC03') && list.has('AA01') && list.has('BB02'), 'a longer list is taken');
      assert.deepEqual(changes, [2, 3], 'told at the first read and of the one real change');
      const warned = lines.filter((l) => l.code === 'CONFIG_FILE_UNREADABLE');
      assert.ok(warned.length >= 2 && warned.length <= 4, `each problem logged once (${warned.length})`);
    } finally {
      list.close();
      rmSync(`${path}.moved`, { force: true });
      tmp.cleanup();
    }
  });
});

/**
 * A serial added under the file's old mtime (cp -p or rsync -t of a list, a restore, or an append
 * within one tick of a coarse clock after the gateway's last read) went unnoticed: the gateway
 * looked at the mtime only, and the revoked certificate kept connecting.
 */
describe("the gateway's revoked serials under an unchanged mtime", () => {
  it('takes a serial added to the file whatever its mtime says (its size or inode changed)', async () => {
    const tmp = tempDir('revoked-serials-stamp');
    const path = join(tmp.dir, 'revoked-serials.txt');
    writeFileSync(path, 'AA01\n');
    utimesSync(path, 1_000, 1_000);
    const list = new RevokedSerials(path, createLogger('gateway', 'silent'));
    try {
      assert.ok(list.has('AA01'));
      writeFileSync(path, 'AA01\nBB02\n');
      utimesSync(path, 1_000, 1_000);
      await tick();
      assert.ok(list.has('BB02'), 'the serial added is revoked');
    } finally {
      list.close();
      tmp.cleanup();
    }
  });
});

/**
 * A gateway started on a revoked-serials file it could not read (a folder, no permission) let every
 * revoked certificate in until the file could be read, only a warning saying so.
 */
describe("the gateway's revoked serials at start", () => {
  it('does not start on a file it cannot read (fail closed); a missing one is nothing revoked yet', () => {
    const tmp = tempDir('revoked-serials-start');
    const path = join(tmp.dir, 'revoked-serials.txt');
    const log = createLogger('gateway', 'silent');
    try {
      const missing = new RevokedSerials(path, log);
      missing.close();
      assert.equal(missing.has('AA01'), false);
      mkdirSync(path); // EISDIR, as EACCES or EIO would fail it
      assert.throws(() => new RevokedSerials(path, log).close(), (err: unknown) => isFieldStreamError(err, 'CONFIG_FILE_UNREADABLE'));
    } finally {
      tmp.cleanup();
    }
  });
});

/**
 * After a restore of an older certificates folder, the lists the tooling writes lack the serials
 * revoked since the backup until each such device is revoked again (docs/operations.md). The gateway
 * refused such a list whole: a certificate revoked after the restore, before those, kept connecting
 * until the gateways restarted.
 */
describe("the gateway's revoked serials from a list that lacks some read before", () => {
  it('takes the serials it adds, keeps those it lacks, and says so', async () => {
    const tmp = tempDir('revoked-serials-restored');
    const path = join(tmp.dir, 'revoked-serials.txt');
    const { lines, logger } = captureLogs();
    const told: string[][] = [];
    writeFileSync(path, 'AA01\nBB02\n');
    const list = new RevokedSerials(path, logger, (s) => told.push([...s].sort()));
    try {
      // the list of a restored folder (no BB02), with a revocation made since: CC03
      writeFileSync(path, 'AA01\nCC03\n');
      await tick();
      assert.ok(list.has('CC03'), 'the serial revoked after the restore is revoked');
      assert.ok(list.has('AA01') && list.has('BB02'), 'what it lacks stays revoked');
      assert.deepEqual(told.at(-1), ['AA01', 'BB02', 'CC03'], 'the gateway told, to close the connections of CC03');
      assert.ok(lines.some((l) => l.code === 'CONFIG_FILE_UNREADABLE' && typeof l.problem === 'string' && l.problem.startsWith('dropped')), 'the serials it lacks are logged');
    } finally {
      list.close();
      tmp.cleanup();
    }
  });
});
