import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { retireFreeSlots } from '../../internal-network/distributor/session-retirement.ts';
import { claimStateSlot, slotDir } from '../../internal-network/distributor/state-lease.ts';
import { createLogger } from '../../shared/logger.ts';
import { cannotRunAsNobody } from '../helpers/as-nobody.ts';

const repo = join(import.meta.dirname, '..', '..');

/**
 * The list of earlier consumer sessions (DISTRIBUTOR_STATE_DIR/consumer-sessions.json) that cannot
 * be read is not taken for an empty one: rewritten without the ids it held, their sessions were
 * never retired, and each kept collecting its share of the messages with nothing taking them.
 * The distributor runs as `nobody` here and finds root's list unreadable (EACCES), as a failing
 * disk (EIO) or a process out of descriptors (EMFILE) would have it.
 */
describe('the list of earlier consumer sessions', () => {
  it('that cannot be read is kept as it is, and the retirement fails with a code, rather than the list being rewritten without its ids', async (t) => {
    const cannot = cannotRunAsNobody('the distributor');
    if (cannot) return t.skip(cannot);
    const root = mkdtempSync('/tmp/fieldstream-consumer-sessions-');
    try {
      execFileSync('chmod', ['0755', root]);
      const state = join(root, 'state');
      mkdirSync(state);
      execFileSync('chmod', ['0777', state]);
      const file = join(state, 'consumer-sessions.json');
      const earlier = `${JSON.stringify({ clientIds: ['distributor-oldhost', 'distributor-oldhost-2'] })}\n`;
      writeFileSync(file, earlier, { mode: 0o600 });
      const code = `
        const { retireConsumerSessions } = await import(${JSON.stringify(join(repo, 'internal-network', 'distributor', 'session-retirement.ts'))});
        const { createLogger } = await import(${JSON.stringify(join(repo, 'shared', 'logger.ts'))});
        try {
          await retireConsumerSessions({
            stateFile: ${JSON.stringify(file)},
            current: ['distributor-newhost'],
            base: 'distributor-newhost',
            maxConsumers: 1,
            filters: ['fieldstream/#'],
            connect: () => { throw new Error('no broker here: nothing may be connected to'); },
            consume: () => { throw new Error('no broker here'); },
            signal: new AbortController().signal,
            log: createLogger('distributor', 'silent'),
          });
          console.log('resolved');
        } catch (err) { console.log(err.code ?? err.message); }`;
      const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
        uid: 65534,
        gid: 65534,
        cwd: repo,
        env: { ...process.env, TSX_DISABLE_CACHE: '1', HOME: root },
        encoding: 'utf8',
      });
      assert.equal(out.trim(), 'DISTRIBUTOR_STATE_UNREADABLE');
      assert.equal(readFileSync(file, 'utf8'), earlier, 'the earlier ids are still listed, for a start that can read them');
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it("of a free slot that cannot be read holds back that slot only: the other free slots' sessions are taken over", async () => {
    const root = mkdtempSync('/tmp/fieldstream-free-slots-');
    const lease = claimStateSlot(root, 'distributor-a', () => undefined);
    try {
      // Slot 2: a folder in the place of its list; slot 3: a list of one session.
      mkdirSync(join(slotDir(root, 2), 'consumer-sessions.json'), { recursive: true });
      mkdirSync(slotDir(root, 3), { recursive: true });
      writeFileSync(join(slotDir(root, 3), 'consumer-sessions.json'), `${JSON.stringify({ clientIds: ['distributor-gone-1'] })}\n`);
      const tried: string[] = [];
      const result = await retireFreeSlots({
        stateFile: join(lease.dir, 'consumer-sessions.json'),
        current: ['distributor-a'],
        filters: ['fieldstream/#'],
        stateRoot: root,
        lease,
        graceMs: 0,
        seen: new Map([
          [2, 0],
          [3, 0],
        ]),
        connect: (id: string) => {
          tried.push(id);
          throw new Error('no broker here');
        },
        consume: () => {
          throw new Error('no broker here');
        },
        signal: new AbortController().signal,
        log: createLogger('distributor', 'silent'),
      });
      assert.deepEqual(tried, ['distributor-gone-1'], "slot 3's session is taken over");
      assert.deepEqual(result.failed, ['distributor-gone-1'], 'and, not retired here (no broker), kept for the next start');
    } finally {
      lease.release();
      rmSync(root, { recursive: true, force: true });
    }
  });
});
