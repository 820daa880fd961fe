import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { ReceiptsEnvelopeSchema } from '../../shared/contract/receipt.ts';
import { DownlinkFrameSchema } from '../../shared/contract/downlink.ts';
import { parseTopic, receiptTopic } from '../../shared/contract/topics.ts';
import { rangesSize, SeqRangesSchema, signReceipt, toRanges, verifyReceipt } from '../../shared/security/receipt-auth.ts';
import { signGroup } from '../../shared/security/message-auth.ts';
import { MacSchema } from '../../shared/security/mac.ts';
import { ReceiptPublisher } from '../../internal-network/distributor/receipts.ts';
import type { Logger } from '../../shared/logger.ts';

describe('commit receipt ranges', () => {
  it('are the canonical form of any set of sequence numbers', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 500 }), { minLength: 1, maxLength: 200 }), (seqs) => {
        const ranges = toRanges(seqs);
        assert.ok(SeqRangesSchema.safeParse(ranges).success, JSON.stringify(ranges));
        assert.equal(rangesSize(ranges), new Set(seqs).size);
        for (const s of seqs) assert.ok(ranges.some(([a, b]) => s >= a && s <= b));
      }),
    );
    assert.deepEqual(toRanges([7, 3, 4, 5, 9, 8, 20]), [[3, 5], [7, 9], [20, 20]]);
  });

  it('refuse overlapping, touching, descending or reversed ranges (one set, one encoding)', () => {
    for (const bad of [[[3, 5], [5, 7]], [[3, 5], [6, 7]], [[8, 9], [1, 2]], [[5, 3]], []]) {
      assert.ok(!SeqRangesSchema.safeParse(bad).success, JSON.stringify(bad));
    }
  });
});

describe('commit receipt MAC', () => {
  const key = randomBytes(32);
  const ranges: [number, number][] = [[1, 500], [502, 600]];
  const mac = signReceipt(key, 'd1', 'e1', ranges);

  it('verifies what was signed, and nothing else', () => {
    assert.ok(verifyReceipt(key, 'd1', 'e1', ranges, mac));
    assert.ok(!verifyReceipt(key, 'd2', 'e1', ranges, mac), 'another device');
    assert.ok(!verifyReceipt(key, 'd1', 'e2', ranges, mac), 'another epoch');
    assert.ok(!verifyReceipt(key, 'd1', 'e1', [[1, 501], [502, 600]], mac), 'more sequence numbers');
    assert.ok(!verifyReceipt(key, 'd1', 'e1', [[1, 500]], mac), 'fewer ranges');
    assert.ok(!verifyReceipt(randomBytes(32), 'd1', 'e1', ranges, mac), 'another key');
    assert.ok(!verifyReceipt(key, 'd1', 'e1', ranges, (mac.startsWith('A') ? 'B' : 'A') + mac.slice(1)), 'another MAC');
  });

  it('has one spelling: the padding bits of the last character must be zero (RFC 4648 §3.5)', () => {
    // The last of 43 characters carries 4 bits of the MAC and 2 of padding; the three other
    // characters that differ only in the padding decode to the same bytes and must still be refused.
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const last = alphabet.indexOf(mac.at(-1)!);
    assert.equal(last & 3, 0, 'Node writes the canonical form');
    for (const pad of [1, 2, 3]) {
      const respelt = mac.slice(0, -1) + alphabet[last | pad];
      assert.deepEqual(Buffer.from(respelt, 'base64url'), Buffer.from(mac, 'base64url'), 'same bytes');
      assert.ok(!verifyReceipt(key, 'd1', 'e1', ranges, respelt), `padding bits ${pad}`);
      assert.ok(!MacSchema.safeParse(respelt).success, `schema, padding bits ${pad}`);
    }
    assert.ok(MacSchema.safeParse(mac).success);
  });

  it('cannot be made from a MAC the device put on its own messages (domain separation)', () => {
    // Whatever the DMZ sees of a device's messages is MACs over "fieldstream-auth-v2 ..." text.
    const auth = signGroup(key, { deviceId: 'd1', dataType: 'timeseries', epoch: 'e1', ts: 1 }, [{ seq: 1, payload: {} }]);
    assert.ok(!verifyReceipt(key, 'd1', 'e1', [[1, 1]], auth.mac));
    const plain = createHmac('sha256', key).update('d1\ne1\n1-1').digest('base64url');
    assert.ok(!verifyReceipt(key, 'd1', 'e1', [[1, 1]], plain), 'a MAC without the prefix');
  });
});

describe('receipts on the wire', () => {
  it('travel on the receiving gateway topic, in envelopes and commit frames that are checked', () => {
    assert.equal(receiptTopic('gw-1'), 'fieldstream/v1/gateways/gw-1/receipts');
    assert.deepEqual(parseTopic('fieldstream/v1/gateways/gw-1/receipts'), { kind: 'receipts', gatewayId: 'gw-1' });
    for (const bad of ['fieldstream/v1/gateways/+/receipts', 'fieldstream/v1/gateways/gw/receipts/x', 'fieldstream/v1/gateways/gw/other']) {
      assert.throws(() => parseTopic(bad), { code: 'CONTRACT_INVALID_TOPIC' });
    }
    assert.throws(() => receiptTopic('a/b'), { code: 'CONTRACT_INVALID_TOPIC' });
    const mac = signReceipt(randomBytes(32), 'd1', 'e1', [[1, 2]]);
    const receipt = { deviceId: 'd1', epoch: 'e1', ranges: [[1, 2]], mac };
    assert.ok(ReceiptsEnvelopeSchema.safeParse({ v: 1, gatewayId: 'gw-1', receipts: [receipt] }).success);
    assert.ok(!ReceiptsEnvelopeSchema.safeParse({ v: 1, gatewayId: 'gw-1', receipts: [{ ...receipt, deviceId: '../x' }] }).success);
    assert.ok(!ReceiptsEnvelopeSchema.safeParse({ v: 1, gatewayId: 'gw-1', receipts: [] }).success);
    assert.ok(DownlinkFrameSchema.safeParse({ type: 'commit', epoch: 'e1', ranges: [[1, 2]], mac }).success);
    assert.ok(!DownlinkFrameSchema.safeParse({ type: 'commit', epoch: 'e1', ranges: [[1, 2]], mac, extra: 1 }).success);
    assert.ok(!DownlinkFrameSchema.safeParse({ type: 'commit', epoch: 'e1', ranges: [[2, 1]], mac }).success);
  });
});

describe('the receipt publisher', () => {
  it('logs receipts it has no way back for now and then, not once per copy the DMZ sends', () => {
    // A compromised DMZ replays one genuine message, each copy under a gateway id that cannot be a
    // topic level: each copy is a duplicate, answered with a receipt that has nowhere to go.
    let lines = 0;
    const count = () => void lines++;
    const log = { warn: count, error: count, info: count, debug: () => {} } as unknown as Logger;
    const publisher = new ReceiptPublisher([], { get: () => randomBytes(32) }, log);
    for (let i = 0; i < 10_000; i++) publisher.add({ gatewayId: 'gw/#', deviceId: 'd1', ids: [{ epoch: 'e1', seq: 1 }] });
    assert.ok(lines <= 2, `${lines} log lines for 10,000 receipts`);
    assert.equal(publisher.stats.noRoute, 10_000, 'every one counted');
  });
});
