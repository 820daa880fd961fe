import assert from 'node:assert/strict';
import fs, { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { CommandRecord } from '../../internal-network/command-api/schemas.ts';
import { CommandStore } from '../../internal-network/command-api/store.ts';
import { CommandJournal } from '../../field-client/src/command-journal.ts';
import { RejectedMessages } from '../../field-client/src/rejected.ts';
import { isFieldStreamError } from '../../shared/errors.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { failing } from '../helpers/failing-fs.ts';
import { tempDir } from '../helpers/pki.ts';

/**
 * The command journal's append (shared/line-file.ts appendLinesSync) on a real file whose fsync or
 * close the disk refuses. NFS reports a write-back error at close too: after the fsync took the
 * lines, a failed close left them journaled (and dispatched after a restart) while the request was
 * refused, and the operator's retry made the command twice.
 */
const temp = tempDir('command-journal-close');
after(() => temp.cleanup());
const logs = new LogCapture('debug');
const lines = logs.lines;
const log = logs.logger;

let n = 0;
function record(): CommandRecord {
  const now = Date.now();
  n++;
  return { commandId: `cmd-${n}`, deviceId: 'pump-1', command: 'reboot', issuedAt: now, expiresAt: now + 60_000, state: 'queued', attempts: 0, updatedAt: now };
}

const journaled = (path: string) =>
  readFileSync(path, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => (JSON.parse(l) as { commandId: string }).commandId);

describe('the command journal when the disk fails the append', () => {
  it('takes new commands whose lines were synced though the close after failed: they are journaled once, and read back', () => {
    const dir = join(temp.dir, 'close');
    const path = join(dir, 'commands.jsonl');
    const store = new CommandStore(path, log);
    const before = record();
    store.add([before]);
    const a = record();
    const b = record();
    lines.length = 0;
    failing('closeSync', dir, () => store.add([a, b]));
    assert.equal(store.get(a.commandId)?.state, 'queued', 'kept in memory: answered 202');
    assert.equal(store.get(b.commandId)?.state, 'queued');
    assert.ok(
      lines.some((l) => l.code === 'API_STATE_CLOSE_FAILED' && l.level === 40),
      `the close's failure is logged: ${JSON.stringify(lines)}`,
    );
    // The next change is appended after them, not with them again.
    store.put({ ...before, state: 'sent', updatedAt: Date.now() });
    store.flush();
    assert.deepEqual(journaled(path), [before.commandId, a.commandId, b.commandId, before.commandId], 'each line once');
    const again = new CommandStore(path, log);
    assert.deepEqual([...again.all()].map((r) => r.commandId).sort(), [before.commandId, a.commandId, b.commandId].sort());
  });

  it('refuses new commands whose fsync failed, and leaves no line of them that a restart would take', () => {
    const dir = join(temp.dir, 'fsync');
    const path = join(dir, 'commands.jsonl');
    const store = new CommandStore(path, log);
    const kept = record();
    store.add([kept]);
    const refused = record();
    lines.length = 0;
    let thrown: unknown;
    failing('fsyncSync', dir, () => {
      try {
        store.add([refused]);
      } catch (err) {
        thrown = err;
      }
    });
    assert.ok(isFieldStreamError(thrown) && thrown.code === 'API_STATE_WRITE_FAILED', String(thrown));
    assert.equal(store.get(refused.commandId), undefined, 'not kept');
    assert.deepEqual(journaled(path), [kept.commandId], 'the journal as before the refused append');
    assert.deepEqual([...new CommandStore(path, log).all()].map((r) => r.commandId), [kept.commandId]);
    // The disk back: the next command is written and read back.
    const next = record();
    store.add([next]);
    assert.deepEqual([...new CommandStore(path, log).all()].map((r) => r.commandId), [kept.commandId, next.commandId]);
  });
});

describe('the command journal when the disk fails the append, and then the cut that takes it back', () => {
  const sorted = (records: Iterable<CommandRecord>) => [...records].map((r) => r.commandId).sort();

  it('keeps new commands whose lines a restart reads back, and answers API_STATE_UNCERTAIN rather than refusing them', () => {
    const dir = join(temp.dir, 'cut');
    const path = join(dir, 'commands.jsonl');
    const store = new CommandStore(path, log);
    const kept = record();
    store.add([kept]);
    // One request's two commands, under an Idempotency-Key: read back all or none.
    const request = { by: 'ops', key: 'k-1', sha256: 'a'.repeat(64) };
    const a = { ...record(), request };
    const b = { ...record(), request };
    lines.length = 0;
    let thrown: unknown;
    let sentAgain: unknown;
    // The journal's fsync fails, then the cut, then the rewrite from memory (its fsync, in the same folder).
    failing(['fsyncSync', 'ftruncateSync'], dir, () => {
      try {
        store.add([a, b]);
      } catch (err) {
        thrown = err;
      }
      // The request sent again under its key, the disk still failing: told the same, not 202.
      try {
        store.confirmDurable(store.byRequest('ops', 'k-1'));
      } catch (err) {
        sentAgain = err;
      }
    });
    const all = sorted([kept, a, b]);
    // What a restart does on this journal: the lines stayed, so it reads them back and sends them.
    assert.deepEqual(sorted(new CommandStore(path, log).all()), all, 'a restart takes them');
    // Not refused then: kept and sent as the restart does, told as taken but perhaps not durable.
    assert.ok(isFieldStreamError(thrown, 'API_STATE_UNCERTAIN'), `not refused: ${String(thrown)}`);
    assert.deepEqual(thrown.details?.commandIds, [a.commandId, b.commandId]);
    assert.equal(store.get(a.commandId)?.state, 'queued', 'kept, as a restart keeps it');
    assert.equal(store.get(b.commandId)?.state, 'queued');
    assert.ok(
      lines.some((l) => l.code === 'API_STATE_UNCERTAIN' && l.level === 50),
      `logged: ${JSON.stringify(lines)}`,
    );
    assert.ok(isFieldStreamError(sentAgain, 'API_STATE_UNCERTAIN'), `sent again: ${String(sentAgain)}`);
    // The disk back: the next change's append goes through, and the journal is rewritten from memory.
    store.put({ ...kept, state: 'sent', updatedAt: Date.now() });
    store.flush();
    assert.deepEqual(journaled(path).sort(), all, 'each command once');
    store.confirmDurable(store.byRequest('ops', 'k-1'));
    const again = new CommandStore(path, log);
    assert.deepEqual(sorted(again.all()), all);
    assert.equal(again.get(kept.commandId)?.state, 'sent');
  });

  it('answers 202 when the journal, its cut failed, is rewritten from memory at once', () => {
    const dir = join(temp.dir, 'cut-rewritten');
    const path = join(dir, 'commands.jsonl');
    const store = new CommandStore(path, log);
    const kept = record();
    store.add([kept]);
    const a = record();
    // The journal itself fails; the file written aside to replace it does not.
    failing(['fsyncSync', 'ftruncateSync'], (p) => p === path, () => store.add([a]));
    assert.equal(store.get(a.commandId)?.state, 'queued');
    assert.deepEqual(journaled(path), [kept.commandId, a.commandId], 'each command once');
    assert.deepEqual(sorted(new CommandStore(path, log).all()), sorted([kept, a]));
  });
});

describe("the field client's line files when the close after the sync fails", () => {
  it('counts the refused messages set aside in rejected.jsonl, and logs FILE_CLOSE_FAILED', () => {
    const dir = join(temp.dir, 'rejected');
    fs.mkdirSync(dir);
    const rejected = new RejectedMessages(dir, log);
    const text = `${JSON.stringify({ at: 'now', code: 'CONTRACT_INVALID_MESSAGE', reason: 'bad', messageIds: ['m1'] })}\n`;
    // A first append syncs the file's name: the failing close below is the file's own.
    rejected.write(text);
    lines.length = 0;
    failing('closeSync', dir, () => rejected.write(text));
    assert.equal(rejected.bytes, 2 * Buffer.byteLength(text), 'counted as set aside');
    assert.equal(readFileSync(rejected.path, 'utf8'), text + text, 'on the disk once');
    assert.ok(
      lines.some((l) => l.code === 'FILE_CLOSE_FAILED' && l.level === 40 && l.path === rejected.path),
      `the close's failure is logged: ${JSON.stringify(lines)}`,
    );
  });

  it("keeps the command journal's line and hands over the close's failure once", () => {
    const dir = join(temp.dir, 'field-journal');
    fs.mkdirSync(dir);
    const path = join(dir, 'commands.journal');
    const journal = new CommandJournal(path, 10);
    journal.write('c-0', { state: 'started', issuedAt: Date.now() });
    failing('closeSync', dir, () => journal.write('c-1', { state: 'started', issuedAt: Date.now() }));
    assert.equal(journal.get('c-1')?.state, 'started', 'remembered: the line is written');
    assert.match(String(journal.takeCloseFailure()?.message), /EIO/);
    assert.equal(journal.takeCloseFailure(), undefined, 'once');
    assert.equal(new CommandJournal(path, 10).get('c-1')?.state, 'started', 'read back');
  });
});
