import assert from 'node:assert/strict';
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { MessageAuthSchema, signGroup, signMessage, verifyGroup, verifyMessage } from '../../shared/security/message-auth.ts';
import { MessageVerifier } from '../../internal-network/distributor/security/verifier.ts';
import { subMillisecondNs } from '../../internal-network/distributor/points.ts';
import { DeviceKeyRegistry } from '../../internal-network/shared/device-keys.ts';
import type { UplinkEnvelope } from '../../shared/contract/envelope.ts';
import { createLogger } from '../../shared/logger.ts';
import { ReplayWindows } from '../../internal-network/distributor/security/replay-window.ts';
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

  it('signs exactly the text docs/message-contract.md documents', () => {
    const payloadJson = '{"t":21.5,"timestamp":"2024-01-01T12:00:00Z"}';
    const text = `fieldstream-auth-v1\nd1\ntimeseries\ne1\n7\n1700000000000\n${createHash('sha256').update(payloadJson).digest('hex')}`;
    assert.equal(signMessage(key, msg).mac, createHmac('sha256', key).update(text).digest('base64url'));
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
      // Events of several envelopes checked within one millisecond each keep their own point: its
      // time as written, the millisecond and the nanoseconds under it (points.ts). The millisecond
      // alone, 0 to 999 before the arrival, is shared by two of these ten about once in 22 runs.
      const times = [again, tampered, cut, headless].flatMap((v) => v.events.map((e) => `${e.time}.${subMillisecondNs(e)}`));
      assert.equal(new Set(times).size, times.length, 'no two security events share a time');
    });
  });

  it('takes a message that crossed a slow link for minutes after its signing (DISTRIBUTOR_TRANSIT_MAX_S), not one past it, nor one signed after it arrived', () => {
    inTempDir('transit', (dir) => {
      writeFileSync(join(dir, 'd1.key'), key.toString('hex'));
      const verifier = new MessageVerifier(
        new DeviceKeyRegistry(dir, join(dir, 'revoked.txt')),
        new ReplayWindows(join(dir, 'replay')),
        { requireSignatures: true, freshnessMs: 30_000, transitMs: 15 * 60_000, maxDelayMs: 86_400_000 },
        createLogger('test', 'silent'),
      );
      const now = Date.now();
      let seq = 0;
      // Signed at `signedAgo` ms before now, received by the gateway now.
      const reason = (signedAgo: number): string => {
        seq++;
        const payload = { t: seq };
        const auth = signMessage(key, { deviceId: 'd1', dataType: 'timeseries', epoch: 'slow', seq, ts: now - signedAgo, payload });
        const env = { v: 1, deviceId: 'd1', dataType: 'timeseries', gatewayId: 'gw', receivedAt: now, messages: [{ messageId: `slow.${seq}`, payload, auth }] } as unknown as UplinkEnvelope;
        const r = verifier.check(env);
        r.commit?.();
        return r.accepted ? 'accepted' : String(r.events[0]?.tags.reason);
      };
      // A file chunk behind others on a 370 kbit/s link: ten minutes from its signing to the gateway.
      assert.equal(reason(10 * 60_000), 'accepted');
      assert.equal(reason(14 * 60_000), 'accepted');
      assert.equal(reason(16 * 60_000), 'SECURITY_STALE', 'past the transit bound');
      assert.equal(reason(-20_000), 'accepted', 'clocks 20 s apart');
      assert.equal(reason(-31_000), 'SECURITY_STALE', 'signed 31 s after it arrived: a clock, or a copy, out of place');
    });
  });
});
