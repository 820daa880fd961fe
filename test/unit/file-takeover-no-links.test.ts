import assert from 'node:assert/strict';
import { readdirSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { lookAt, takeOverFileAs, writeWhole, type MarkerRules, type SeenFile } from '../../shared/file-takeover.ts';
import { tempDir } from '../helpers/pki.ts';

/**
 * The take-over of a stale lock on a file system without hard links (FAT, exFAT: a field device's
 * SD card or USB stick), where link(2) fails with EPERM: the marker is made with O_EXCL instead, and
 * of two takers at once one takes the file, as with links. link(2) is made to fail as FAT's does
 * (mounting one needs a loop device, which CI machines may not have).
 */
describe('taking over a stale file where there are no hard links', () => {
  const tmp = tempDir('takeover-no-links');
  after(() => tmp.cleanup());
  const noLinks = (): void => {
    throw Object.assign(new Error('EPERM: operation not permitted, link'), { code: 'EPERM' });
  };
  /** Rules as the field client's lock has them: a marker saying nothing yet is being made (young). */
  const rules = (name: string): MarkerRules<string> => ({ text: name, running: (text, ageMs) => (text !== '' ? text : ageMs < 10_000 ? '(being made)' : undefined) });
  const stale = (path: string): SeenFile => {
    writeFileSync(path, 'a process gone\n');
    return lookAt(path) as SeenFile;
  };

  it('of two takers at once, one takes the file and the other finds it being taken', () => {
    const path = join(tmp.dir, 'first.lock');
    const seen = stale(path);
    writeWhole(`${path}.new-a`, 'lock of a\n');
    writeWhole(`${path}.new-b`, 'lock of b\n');
    let second: ReturnType<typeof takeOverFileAs<string>> | undefined;
    const first = takeOverFileAs(path, seen, `${path}.new-a`, rules('a'), () => {
      // b judged the same file stale at the same instant, and comes while a holds the marker.
      second = takeOverFileAs(path, seen, `${path}.new-b`, rules('b'), undefined, noLinks);
    }, noLinks);
    assert.equal(first, 'taken');
    assert.deepEqual(second, { by: 'a' });
    assert.equal(readFileSync(path, 'utf8'), 'lock of a\n');
    assert.deepEqual(readdirSync(tmp.dir).filter((n) => n.startsWith('first.lock.takeover')), [], 'no marker left');
  });

  it('passes over a marker whose maker was killed, and fails on any other error of link(2)', () => {
    const path = join(tmp.dir, 'second.lock');
    const seen = stale(path);
    // A taker killed mid-way left its marker, old and saying nothing.
    writeWhole(`${path}.takeover-${seen.dev}-${seen.ino}-0`, '');
    const old = new Date(Date.now() - 60_000);
    utimesSync(`${path}.takeover-${seen.dev}-${seen.ino}-0`, old, old);
    writeWhole(`${path}.new-c`, 'lock of c\n');
    assert.equal(takeOverFileAs(path, seen, `${path}.new-c`, rules('c'), undefined, noLinks), 'taken');
    assert.equal(readFileSync(path, 'utf8'), 'lock of c\n');

    const other = join(tmp.dir, 'third.lock');
    const seenOther = stale(other);
    writeWhole(`${other}.new-d`, 'lock of d\n');
    const brokenDisk = (): void => {
      throw Object.assign(new Error('EIO: i/o error, link'), { code: 'EIO' });
    };
    assert.throws(() => takeOverFileAs(other, seenOther, `${other}.new-d`, rules('d'), undefined, brokenDisk), /EIO/);
    assert.equal(readFileSync(other, 'utf8'), 'a process gone\n', 'the lock stays');
  });
});
