import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import type { EnvelopeOf } from '../../shared/contract/envelope.ts';
import { signGroup, signMessage } from '../../shared/security/message-auth.ts';
import { authenticMessages, sortBySignature } from '../../internal-network/shared/authentic.ts';

type Response = EnvelopeOf<'response'>['messages'][number];

describe('authentic messages of an envelope (internal-network/shared/authentic.ts)', () => {
  const key = randomBytes(32);
  const header = { deviceId: 'd1', dataType: 'response' as const, epoch: 'e1', ts: 1700000000000 };
  const payload = (n: number) => ({ commandId: `cmd-${n}`, status: 'completed' as const });
  const group = (k: Buffer, seqs: number[]): Response[] => {
    const members = seqs.map((seq) => ({ seq, payload: payload(seq) }));
    const auth = signGroup(k, header, members);
    return members.map((m, j) => ({ messageId: `m-${m.seq}`, ...(j === 0 ? { auth } : { seq: m.seq }), payload: m.payload }));
  };
  const single = (k: Buffer, seq: number): Response => ({ messageId: `m-${seq}`, auth: signMessage(k, { ...header, seq, payload: payload(seq) }), payload: payload(seq) });
  const unsigned = (n: number): Response => ({ messageId: `u-${n}`, payload: payload(n) });
  const env = (messages: Response[]) => ({ deviceId: 'd1', dataType: 'response' as const, messages });
  const ids = (ms: readonly Response[]) => ms.map((m) => m.messageId);

  it('sorts intact groups and singles, broken ones and unsigned messages, in order', () => {
    const brokenGroup = group(key, [20, 21]);
    (brokenGroup[1] as Response).payload = payload(99);
    const e = env([...group(key, [1, 2, 3]), unsigned(1), single(key, 10), single(randomBytes(32), 11), ...brokenGroup, ...group(key, [30, 31]).slice(0, 1)]);
    const s = sortBySignature(key, e);
    assert.deepEqual(s.authentic.map((a) => [a.message.messageId, a.epoch, a.seq]), [['m-1', 'e1', 1], ['m-2', 'e1', 2], ['m-3', 'e1', 3], ['m-10', 'e1', 10]]);
    assert.deepEqual(ids(s.unverified), ['m-11', 'm-20', 'm-21', 'm-30'], 'another key, an altered group, a group cut short');
    assert.deepEqual(ids(s.unsigned), ['u-1']);
    assert.deepEqual(authenticMessages(key, e), s.authentic);
  });

  it('counts a group member stripped of its head as unsigned, and nothing signed as authentic without a key', () => {
    const e = env([...group(key, [1, 2]).slice(1), single(key, 5)]);
    assert.deepEqual(ids(sortBySignature(key, e).unsigned), ['m-2']);
    const none = sortBySignature(undefined, e);
    assert.deepEqual(none.authentic, []);
    assert.deepEqual(ids(none.unverified), ['m-5']);
  });

  it('does not let a group swallow a message signed on its own', () => {
    const g = group(key, [1, 2]);
    const e = env([g[0] as Response, single(key, 2)]); // the second place taken by a message with its own auth
    const s = sortBySignature(key, e);
    assert.deepEqual(s.authentic, []);
    assert.deepEqual(ids(s.unverified), ['m-1', 'm-2']);
  });
});
