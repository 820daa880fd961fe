import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { MessageAuthSchema, signGroup, signMessage, verifyGroup, verifyMessage } from '../../shared/security/message-auth.ts';
import { MessageVerifier } from '../../internal-network/distributor/security/verifier.ts';
import { DeviceKeyRegistry } from '../../internal-network/shared/device-keys.ts';
import type { UplinkEnvelope } from '../../shared/contract/envelope.ts';
import { createLogger } from '../../shared/logger.ts';
import { ReplayWindows, WINDOW } from '../../internal-network/distributor/security/replay-window.ts';
import { inTempDir } from '../helpers/pki.ts';

describe('message signatures', () => {
  const key = randomBytes(32);
  const msg = { deviceId: 'd1', dataType: 'timeseries', epoch: 'e1', seq: 7, ts: 1700000000000, payload: { t: 21.5, timestamp: '2024-01-01T12:00:00Z' } };

  it('verifies what was signed, and nothing else', () => {
    const auth = signMessage(key, msg);
    assert.ok(MessageAuthSchema.safeParse(auth).success);
    assert.ok(verifyMessage(key, msg, auth));
    // the payload survives a JSON round trip (the gateway and the distributor re-serialise it)
    assert.ok(verifyMessage(key, { ...msg, payload: JSON.parse(JSON.stringify(msg.payload)) }, auth));
    assert.ok(!verifyMessage(key, { ...msg, payload: { ...msg.payload, t: 21.6 } }, auth), 'tampered payload');
    assert.ok(!verifyMessage(key, { ...msg, deviceId: 'd2' }, auth), 'another device');
    assert.ok(!verifyMessage(key, { ...msg, dataType: 'event' }, auth), 'another kind');
    assert.ok(!verifyMessage(key, msg, { ...auth, seq: 8 }), 'another sequence number');
    assert.ok(!verifyMessage(key, msg, { ...auth, ts: auth.ts + 1 }), 'another time');
    assert.ok(!verifyMessage(randomBytes(32), msg, auth), 'another key');
  });
});

describe('signed groups (version 2)', () => {
  const key = randomBytes(32);
  const header = { deviceId: 'd1', dataType: 'timeseries', epoch: 'e1', ts: 1700000000000 };
  const members = [5, 6, 7].map((seq) => ({ seq, payload: { t: seq / 10, timestamp: 1700000000000 + seq } }));

  it('verifies exactly the group that was signed', () => {
    const auth = signGroup(key, header, members);
    assert.ok(MessageAuthSchema.safeParse(auth).success);
    assert.equal(auth.count, 3);
    assert.ok(verifyGroup(key, header, auth, members));
    assert.ok(!verifyGroup(key, header, auth, members.slice(0, 2)), 'a message dropped');
    assert.ok(!verifyGroup(key, header, auth, [members[0]!, members[2]!, members[1]!]), 'reordered');
    assert.ok(!verifyGroup(key, header, auth, members.map((m, i) => (i === 2 ? { ...m, payload: { ...m.payload, t: 9 } } : m))), 'one payload tampered');
    assert.ok(!verifyGroup(key, header, auth, members.map((m, i) => (i === 1 ? { ...m, seq: 60 } : m))), 'one sequence number changed');
    assert.ok(!verifyGroup(key, { ...header, dataType: 'event' }, auth, members), 'another kind');
    assert.ok(!verifyGroup(key, { ...header, deviceId: 'd2' }, auth, members), 'another device');
    assert.ok(!verifyGroup(key, header, { ...auth, ts: auth.ts + 1 }, members), 'another time');
    assert.ok(!verifyGroup(randomBytes(32), header, auth, members), 'another key');
  });

  it('signs exactly the text docs/message-contract.md documents', () => {
    const auth = signGroup(key, header, members.slice(0, 2));
    const text = 'fieldstream-auth-v2\nd1\ntimeseries\ne1\n1700000000000\n2\n5\n{"t":0.5,"timestamp":1700000000005}\n6\n{"t":0.6,"timestamp":1700000000006}\n';
    assert.equal(auth.mac, createHmac('sha256', key).update(text).digest('base64url'));
  });

  it('makes the distributor write a whole intact group and refuse every message of a broken one', () => {
    inTempDir('groups', (dir) => {
      writeFileSync(join(dir, 'd1.key'), key.toString('hex'));
      const verifier = new MessageVerifier(
        new DeviceKeyRegistry(dir, join(dir, 'revoked.txt')),
        new ReplayWindows(join(dir, 'replay')),
        { requireSignatures: true, freshnessMs: 30_000, maxDelayMs: 86_400_000 },
        createLogger('test', 'silent'),
      );
      const now = Date.now();
      const envelope = (epoch: string, items: { seq: number; payload: { t: number; timestamp: number } }[], tamper?: (m: UplinkEnvelope['messages']) => void) => {
        const auth = signGroup(key, { ...header, epoch, ts: now }, items);
        const messages = items.map((m, i) => ({ messageId: `${epoch}.${m.seq}`, seq: m.seq, payload: { ...m.payload }, ...(i === 0 ? { auth } : {}) }));
        tamper?.(messages);
        return { v: 1, deviceId: 'd1', dataType: 'timeseries', gatewayId: 'gw', receivedAt: now, messages } as UplinkEnvelope;
      };
      const good = verifier.check(envelope('a', members));
      assert.equal(good.accepted?.messages.length, 3);
      assert.equal(good.events.length, 0);
      good.commit();
      const again = verifier.check(envelope('a', members));
      assert.equal(again.accepted, undefined);
      assert.deepEqual(again.events.map((e) => e.tags.reason), ['SECURITY_DUPLICATE', 'SECURITY_DUPLICATE', 'SECURITY_DUPLICATE']);
      const tampered = verifier.check(envelope('b', members, (m) => ((m[1] as unknown as { payload: { t: number } }).payload.t = 99)));
      assert.equal(tampered.accepted, undefined);
      assert.deepEqual(tampered.events.map((e) => e.tags.reason), ['SECURITY_BAD_SIGNATURE', 'SECURITY_BAD_SIGNATURE', 'SECURITY_BAD_SIGNATURE']);
      const cut = verifier.check(envelope('c', members, (m) => m.pop()));
      assert.equal(cut.accepted, undefined, 'a group missing its last message');
      assert.equal(cut.events.length, 2);
      const headless = verifier.check(envelope('d', members, (m) => m.shift()));
      assert.equal(headless.accepted, undefined, 'followers without their group are unsigned');
      assert.deepEqual(headless.events.map((e) => e.tags.reason), ['SECURITY_UNSIGNED', 'SECURITY_UNSIGNED']);
      // Events of several envelopes checked within one millisecond each keep their own point.
      const times = [again, tampered, cut, headless].flatMap((v) => v.events.map((e) => e.time));
      assert.equal(new Set(times).size, times.length, 'no two security events share a time');
    });
  });
});

describe('replay windows', () => {
  it('accepts each sequence number once, in any order within the window, and survives a restart', () => {
    inTempDir('replay', (dir) => {
      const w = new ReplayWindows(dir);
      for (const seq of [5, 3, 4, 10]) {
        assert.equal(w.check('d', 'e', seq), 'new');
        w.record('d', 'e', seq);
      }
      assert.equal(w.check('d', 'e', 3), 'seen');
      assert.equal(w.check('d', 'e', 6), 'new', 'a gap is not a replay');
      assert.equal(w.check('d', 'other-epoch', 3), 'new');
      w.record('d', 'e', WINDOW + 20);
      assert.equal(w.check('d', 'e', 10), 'too-old');
      assert.equal(w.check('d', 'e', 21), 'new');
      w.record('d', 'e', 30);
      w.persist();
      const again = new ReplayWindows(dir);
      assert.equal(again.check('d', 'e', WINDOW + 20), 'seen');
      assert.equal(again.check('d', 'e', 30), 'seen');
      assert.equal(again.check('d', 'e', 31), 'new');
      assert.equal(again.check('d', 'e', 5), 'too-old');
    });
  });

  it('keeps the right bits across shifts of every size', () => {
    inTempDir('replay2', (dir) => {
      const w = new ReplayWindows(dir);
      const accepted = new Set<number>();
      let seq = 0;
      for (let step = 1; step < 70; step += 3) {
        seq += step;
        w.record('d', 'e', seq);
        accepted.add(seq);
      }
      for (let s = seq - 2000; s <= seq; s++) if (s >= 0) assert.equal(w.check('d', 'e', s), accepted.has(s) ? 'seen' : 'new', String(s));
    });
  });

  it('survives a write torn by a crash: the other slot holds the update before it', () => {
    inTempDir('replay-torn', (dir) => {
      const w = new ReplayWindows(dir);
      for (let seq = 1; seq <= 3000; seq += 2) w.record('d', `e${seq % 7}`, seq); // several epochs: a write of 77 KB
      w.persist(); // generation 1, slot 1
      w.record('d', 'e1', 5001);
      w.persist(); // generation 2, slot 0
      w.record('d', 'e1', 5003);
      w.persist(); // generation 3, slot 1, in place over generation 1
      assert.equal(new ReplayWindows(dir).check('d', 'e1', 5003), 'seen', 'the newest slot is read');
      const newest = join(dir, 'd.1.win');
      const bytes = readFileSync(newest);
      writeFileSync(newest, bytes.subarray(0, bytes.length - 4000)); // torn mid-write
      const after = new ReplayWindows(dir);
      assert.equal(after.check('d', 'e1', 5001), 'seen', 'generation 2 is what remains');
      assert.equal(after.check('d', 'e1', 5003), 'new', 'only the torn update is lost');
      assert.equal(after.check('d', 'e6', 55), 'seen');
      after.record('d', 'e1', 5005);
      after.persist(); // writes over the torn slot
      const again = new ReplayWindows(dir);
      assert.equal(again.check('d', 'e1', 5005), 'seen');
      assert.equal(again.check('d', 'e1', 5001), 'seen');
      writeFileSync(join(dir, 'd.0.win'), 'garbage');
      writeFileSync(join(dir, 'd.1.win'), `${'x'.repeat(50)}\n{}`);
      assert.equal(new ReplayWindows(dir).check('d', 'e1', 5005), 'new', 'damaged slots are not trusted, and do not crash');
    });
  });

  it('reads windows persisted in the earlier shifted-bitmap layout', () => {
    inTempDir('replay3', (dir) => {
      const bits = Buffer.alloc(WINDOW / 8);
      bits[0] = 0b0010_0001; // bits 0 and 5: sequence numbers 100 and 95 were accepted
      writeFileSync(join(dir, 'd.json'), JSON.stringify({ e: { top: 100, bits: bits.toString('base64'), lastSeen: 1 } }));
      const w = new ReplayWindows(dir);
      assert.equal(w.check('d', 'e', 100), 'seen');
      assert.equal(w.check('d', 'e', 95), 'seen');
      assert.equal(w.check('d', 'e', 96), 'new');
      assert.equal(w.check('d', 'e', 101), 'new');
    });
  });

  it('agrees with a plain set of accepted numbers across random arrivals and jumps', () => {
    inTempDir('replay4', (dir) => {
      const w = new ReplayWindows(dir);
      const accepted = new Set<number>();
      let top = -1;
      let x = 12345;
      const rand = (n: number) => {
        x = (x * 1103515245 + 12345) % 2 ** 31;
        return x % n;
      };
      for (let k = 0; k < 20_000; k++) {
        const seq = Math.max(0, rand(50) === 0 ? top + rand(3 * WINDOW) : top + 5 - rand(200));
        const expected = seq > top ? 'new' : top - seq >= WINDOW ? 'too-old' : accepted.has(seq) ? 'seen' : 'new';
        assert.equal(w.check('d', 'e', seq), expected, `seq ${seq}, top ${top}`);
        if (expected === 'new') {
          w.record('d', 'e', seq);
          accepted.add(seq);
          top = Math.max(top, seq);
        }
      }
    });
  });
});
