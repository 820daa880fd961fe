import assert from 'node:assert/strict';
import { readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import pino from 'pino';
import { ReloadingCredentials, sha256Hex } from '../../internal-network/shared/credentials.ts';
import { isFieldStreamError } from '../../shared/errors.ts';
import { TIMINGS } from '../../shared/limits.ts';
import { ReloadedFile } from '../../shared/reloaded-file.ts';
import { tempDir } from '../helpers/pki.ts';

/**
 * The console's role credentials read again when COMMAND_API_TOKENS_FILE changes
 * (ReloadingCredentials), and the file reader under it and the device tokens view (ReloadedFile):
 * looked at once per interval at most, read only when changed, the last valid version kept.
 */

const TOKEN = 'operator-env-token-0123456789abcdef';
const ALICE = 'alice-token-0123456789abcdef012345';
const BOB = 'bob-token-0123456789abcdef01234567';

/** A new file renamed over the old, as an operator should write it. */
function replace(path: string, content: string): void {
  writeFileSync(`${path}.new`, content);
  renameSync(`${path}.new`, path);
}

const entry = (name: string, role: string, token: string) => ({ name, role, sha256: sha256Hex(token) });

function capture() {
  const lines: Array<Record<string, unknown>> = [];
  const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
  return { lines, log };
}

describe('ReloadedFile', () => {
  it('is looked at once per interval at most, read only when it changed, and keeps the last good value of a version it cannot read', () => {
    const tmp = tempDir('reloaded-file');
    try {
      const path = join(tmp.dir, 'f.json');
      writeFileSync(path, '1');
      let reads = 0;
      const invalid: string[] = [];
      const changes: number[] = [];
      const file = new ReloadedFile<number>({
        path,
        recheckMs: 1_000,
        read: (p) => {
          reads++;
          const n = Number(JSON.parse(readFileSync(p, 'utf8')));
          if (!Number.isInteger(n)) throw new Error('not an integer');
          return n;
        },
        whenMissing: 'keep',
        onInvalid: (err) => invalid.push(err.message),
        onChange: (v) => changes.push(v),
      });
      const t0 = 1_000_000;
      assert.equal(file.load(t0), 1);
      assert.equal(reads, 1);
      for (let i = 0; i < 1_000; i++) file.current(t0 + 2_000 + i);
      assert.equal(reads, 1, 'unchanged: never read again');

      replace(path, '2');
      assert.equal(file.current(t0 + 2_500), 1, 'within the interval of the last look: not looked at');
      assert.equal(file.current(t0 + 3_000), 2, 'at the next look: read');
      assert.deepEqual(changes, [2]);

      replace(path, '"x"');
      assert.equal(file.current(t0 + 4_000), 2, 'not valid: the last good value');
      assert.equal(file.current(t0 + 5_000), 2);
      assert.equal(invalid.length, 1, 'reported once for that version');
      rmSync(path);
      assert.equal(file.current(t0 + 6_000), 2, 'removed: kept');
      assert.equal(file.current(t0 + 7_000), 2);
      assert.equal(invalid.length, 2, 'reported once');
      replace(path, '3');
      assert.equal(file.current(t0 + 8_000), 3, 'back, and valid');
      assert.deepEqual(changes, [2, 3]);
    } finally {
      tmp.cleanup();
    }
  });

  it('with whenMissing "forget", a file that is not there has no value until it is back', () => {
    const tmp = tempDir('reloaded-file-forget');
    try {
      const path = join(tmp.dir, 'f.txt');
      const file = new ReloadedFile<string>({ path, recheckMs: 10, read: (p) => readFileSync(p, 'utf8'), whenMissing: 'forget', onInvalid: () => assert.fail('nothing invalid') });
      assert.equal(file.current(0), undefined);
      writeFileSync(path, 'a');
      assert.equal(file.current(100), 'a');
      rmSync(path);
      assert.equal(file.current(200), undefined);
    } finally {
      tmp.cleanup();
    }
  });
});

describe('ReloadingCredentials', () => {
  it('takes a token out, adds one, and changes a role within TIMINGS.roleTokensReloadMs of the change; COMMAND_API_TOKEN stays', () => {
    const tmp = tempDir('role-credentials');
    try {
      const path = join(tmp.dir, 'tokens.json');
      writeFileSync(path, JSON.stringify([entry('alice', 'viewer', ALICE)]));
      const { lines, log } = capture();
      const creds = new ReloadingCredentials({ token: TOKEN, tokensFile: path }, log);
      let changed = 0;
      creds.onChange(() => changed++);
      const t0 = Date.now();
      assert.deepEqual(creds.verify(ALICE, t0), { name: 'alice', role: 'viewer' });
      assert.equal(creds.verify(BOB, t0), undefined);

      replace(path, JSON.stringify([entry('alice', 'admin', ALICE), entry('bob', 'operator', BOB)]));
      const t1 = t0 + TIMINGS.roleTokensReloadMs;
      assert.deepEqual(creds.verify(ALICE, t1), { name: 'alice', role: 'admin' }, 'the role changed');
      assert.deepEqual(creds.verify(BOB, t1), { name: 'bob', role: 'operator' }, 'a token added');
      assert.deepEqual(creds.verify(TOKEN, t1), { name: 'COMMAND_API_TOKEN', role: 'operator' });
      assert.equal(changed, 1);

      replace(path, JSON.stringify([entry('bob', 'operator', BOB)]));
      const t2 = t1 + TIMINGS.roleTokensReloadMs;
      assert.equal(creds.verify(ALICE, t2), undefined, 'a token taken out');
      assert.equal(changed, 2);
      assert.ok(lines.some((l) => l.msg === 'role tokens file read again' && l.tokens === 2));
    } finally {
      tmp.cleanup();
    }
  });

  it('a file that is no longer valid, or removed, keeps the last valid set, logged as ROLE_TOKENS_INVALID with its cause; an invalid file at start stops the start', () => {
    const tmp = tempDir('role-credentials-invalid');
    try {
      const path = join(tmp.dir, 'tokens.json');
      writeFileSync(path, JSON.stringify([entry('alice', 'viewer', ALICE)]));
      const { lines, log } = capture();
      const creds = new ReloadingCredentials({ tokensFile: path }, log);
      let t = Date.now();
      for (const [content, cause] of [
        ['[{"name": "alice"', 'CONFIG_INVALID'],
        [JSON.stringify([{ name: 'alice', role: 'root', sha256: sha256Hex(ALICE) }]), 'CONFIG_INVALID'],
        [JSON.stringify([{ name: 'alice', role: 'viewer', sha256: 'plain-text-token' }]), 'CONFIG_INVALID'],
        [undefined, 'CONFIG_FILE_UNREADABLE'],
      ] as const) {
        if (content === undefined) rmSync(path);
        else replace(path, content);
        t += TIMINGS.roleTokensReloadMs;
        assert.deepEqual(creds.verify(ALICE, t), { name: 'alice', role: 'viewer' }, `${cause}: the last valid set`);
        const line = lines.at(-1);
        assert.deepEqual([line?.code, line?.cause, line?.level, line?.path], ['ROLE_TOKENS_INVALID', cause, 50, path]);
      }
      assert.equal(lines.filter((l) => l.code === 'ROLE_TOKENS_INVALID').length, 4, 'once per version');

      writeFileSync(path, 'not json');
      assert.throws(
        () => new ReloadingCredentials({ tokensFile: path }, log),
        (err) => isFieldStreamError(err, 'CONFIG_INVALID') && /COMMAND_API_TOKENS_FILE=.* is not JSON/.test(err.message),
      );
      rmSync(path);
      assert.throws(
        () => new ReloadingCredentials({ tokensFile: path }, log),
        (err) => isFieldStreamError(err, 'CONFIG_FILE_UNREADABLE') && /cannot be read/.test(err.message),
      );
    } finally {
      tmp.cleanup();
    }
  });

  it('a file that names one token twice, a name twice, or COMMAND_API_TOKEN\'s token or name is refused: one token, one name, one role', () => {
    // The last entry of a token found won: the operator token listed again as a viewer's made its
    // holder a viewer, a token listed under two names logged under either, and two "alice" entries
    // were told apart by nothing in the logs.
    const tmp = tempDir('role-credentials-ambiguous');
    try {
      const path = join(tmp.dir, 'tokens.json');
      const { log } = capture();
      for (const [entries, why] of [
        [[entry('alice', 'admin', ALICE), entry('alice-viewer', 'viewer', ALICE)], /token .*twice/],
        [[entry('alice', 'admin', ALICE), entry('alice', 'viewer', BOB)], /"alice".*twice/],
        [[entry('reader', 'viewer', TOKEN)], /COMMAND_API_TOKEN's token/],
        [[entry('COMMAND_API_TOKEN', 'viewer', BOB)], /COMMAND_API_TOKEN/],
      ] as const) {
        writeFileSync(path, JSON.stringify(entries));
        assert.throws(
          () => new ReloadingCredentials({ token: TOKEN, tokensFile: path }, log),
          (err) => isFieldStreamError(err, 'CONFIG_INVALID') && why.test(err.message),
          JSON.stringify(entries),
        );
      }
      // Read again while running: the last valid set stays.
      writeFileSync(path, JSON.stringify([entry('alice', 'admin', ALICE)]));
      const creds = new ReloadingCredentials({ token: TOKEN, tokensFile: path }, log);
      replace(path, JSON.stringify([entry('alice', 'admin', ALICE), entry('mallory', 'viewer', TOKEN)]));
      const t = Date.now() + TIMINGS.roleTokensReloadMs;
      assert.deepEqual(creds.verify(TOKEN, t), { name: 'COMMAND_API_TOKEN', role: 'operator' });
      assert.deepEqual(creds.verify(ALICE, t), { name: 'alice', role: 'admin' });
    } finally {
      tmp.cleanup();
    }
  });
});
