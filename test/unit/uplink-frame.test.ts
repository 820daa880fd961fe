import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { parseUplinkFrame } from '../../shared/contract/uplink.ts';
import { batchFrame, type FrameItem } from '../../shared/contract/uplink-frame.ts';
import { COMMAND_RESPONSE_STATUSES, JsonValueSchema } from '../../shared/contract/payloads.ts';
import { LIMITS } from '../../shared/limits.ts';
import { isFieldStreamError } from '../../shared/errors.ts';

/**
 * The frame writer (the field client's) and the frame parser (the gateway's) agree: parsing a frame
 * batchFrame wrote gives back exactly what was sent, for every data type, with and without
 * signatures. Each payload travels as the text the queue made of it, so it must also come back as
 * that same text (its signature covers it).
 */
const RUNS = { numRuns: 500 };
const deviceId = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,30}$/);
const messageId = fc.stringMatching(/^[A-Za-z0-9._:-]{1,40}$/);
const seq = fc.oneof(fc.nat(), fc.maxSafeNat());
const fieldName = fc.stringMatching(/^[A-Za-z_][A-Za-z0-9_.-]{0,15}$/).filter((k) => k !== 'timestamp');
const text = fc.string({ maxLength: 30, unit: 'grapheme' });
const scalar = fc.oneof(fc.double({ noNaN: true, noDefaultInfinity: true }), fc.integer(), text, fc.boolean());
const timestamp = fc.oneof(fc.nat({ max: 4_102_444_800_000 }), fc.constant('2024-01-01T12:00:00Z'), fc.constant('2024-06-30T23:59:59.123+02:00'));
const opt = <T>(arb: fc.Arbitrary<T>) => fc.option(arb, { nil: undefined });
/** drops the keys an optional generator left undefined, as JSON.stringify does */
const defined = (o: Record<string, unknown>) => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));

const payloads = {
  timeseries: fc
    .tuple(fc.dictionary(fieldName, scalar, { minKeys: 1, maxKeys: 8 }), opt(timestamp))
    .map(([fields, ts]) => defined({ ...fields, timestamp: ts })),
  event: fc
    .record({ eventType: fc.stringMatching(/^[A-Za-z0-9._-]{1,20}$/), severity: opt(fc.constantFrom('info', 'warning', 'critical')), message: opt(text), timestamp: opt(timestamp) })
    // The contract's fields first, as the local inputs' check returns them: the parser puts an
    // event's known fields before its others, so another order would not serialise back the same.
    .chain((e) => fc.dictionary(fieldName.filter((k) => !(k in e)), scalar, { maxKeys: 3 }).map((extra) => defined({ ...e, ...extra }))),
  // (a "__proto__" key is refused by the contract: tested below)
  response: fc
    .record({ commandId: messageId, status: fc.constantFrom(...COMMAND_RESPONSE_STATUSES), result: opt(fc.jsonValue({ maxDepth: 2 }).filter((v) => JsonValueSchema.safeParse(v).success)), timestamp: opt(timestamp) })
    .map(defined),
  file: fc
    .record({
      filename: fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9_-]{0,20}\.(jpg|csv|bin)$/),
      contentType: opt(fc.constantFrom('image/jpeg', 'text/csv', 'application/octet-stream')),
      data: fc.base64String({ maxLength: 80 }),
    })
    .map(defined),
};
const dataType = fc.constantFrom(...(Object.keys(payloads) as (keyof typeof payloads)[]));
// Any HMAC-SHA256, as every encoder writes it (canonical base64url: one spelling per MAC).
const mac = fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => Buffer.from(b).toString('base64url'));
const auth = fc.oneof(
  fc.record({ v: fc.constant(1 as const), epoch: fc.stringMatching(/^[A-Za-z0-9_-]{1,20}$/), seq, ts: fc.nat(), mac }),
  fc.record({ v: fc.constant(2 as const), epoch: fc.stringMatching(/^[A-Za-z0-9_-]{1,20}$/), seq, ts: fc.nat(), mac, count: fc.integer({ min: 1, max: LIMITS.batchMaxMessages }) }),
).map((a) => ({ ...a })); // a plain object, as the queue holds it (fast-check may build one without a prototype)
const item: fc.Arbitrary<FrameItem> = dataType.chain((type) =>
  fc.record({ dataType: fc.constant(type), messageId, seq, payloadJson: payloads[type].map((p) => JSON.stringify(p)), auth: opt(auth) }).map((m) => {
    if (m.auth === undefined) delete m.auth;
    return m;
  }),
);

describe('the uplink frame writer', () => {
  it('what batchFrame writes, parseUplinkFrame gives back exactly: device id, data types, ids, seqs, payloads, signatures', () => {
    fc.assert(
      fc.property(deviceId, fc.array(item, { minLength: 1, maxLength: 20 }), (device, items) => {
        const parsed = parseUplinkFrame(batchFrame(device, items));
        assert.equal(parsed.length, items.length);
        parsed.forEach((m, i) => {
          const sent = items[i] as FrameItem;
          const expected: Record<string, unknown> = { deviceId: device, dataType: sent.dataType, messageId: sent.messageId, seq: sent.seq, payload: JSON.parse(sent.payloadJson) };
          if (sent.auth) expected.auth = sent.auth;
          assert.deepEqual(m, expected);
          // The payload's text is what its signature covers: it serialises back to the same text.
          assert.equal(JSON.stringify(m.payload), sent.payloadJson);
        });
      }),
      RUNS,
    );
  });

  it('refuses a payload whose JSON holds a "__proto__" key, which no copy of it would keep (its signature would not match)', () => {
    for (const result of ['{"__proto__":""}', '[1,{"a":{"__proto__":{"x":1}}}]']) {
      const payloadJson = `{"commandId":"c-1","status":"completed","result":${result}}`;
      assert.throws(
        () => parseUplinkFrame(batchFrame('dev-1', [{ dataType: 'response', messageId: 'm-1', seq: 0, payloadJson }])),
        (err: unknown) => isFieldStreamError(err) && /__proto__/.test(err.message),
      );
    }
  });

  it('refuses a MAC spelt with padding bits set, which would decode to the same bytes as another', () => {
    const auth = { v: 1 as const, epoch: 'e1', seq: 0, ts: 1, mac: `${'A'.repeat(42)}B` };
    assert.throws(
      () => parseUplinkFrame(batchFrame('dev-1', [{ dataType: 'timeseries', messageId: 'm-1', seq: 0, payloadJson: '{"t":1}', auth }])),
      (err: unknown) => isFieldStreamError(err) && /canonical base64url/.test(err.message),
    );
  });

  it('writes the frame the contract describes', () => {
    const auth = { v: 1 as const, epoch: 'e1', seq: 7, ts: 1_700_000_000_000, mac: 'A'.repeat(43) };
    const frame = batchFrame('dev-1', [
      { dataType: 'timeseries', messageId: 'm-1', seq: 7, payloadJson: '{"t":1.5}', auth },
      { dataType: 'event', messageId: 'm-2', seq: 8, payloadJson: '{"eventType":"door"}' },
    ]);
    assert.deepEqual(JSON.parse(frame), {
      deviceId: 'dev-1',
      batch: [
        { dataType: 'timeseries', messageId: 'm-1', seq: 7, payload: { t: 1.5 }, auth },
        { dataType: 'event', messageId: 'm-2', seq: 8, payload: { eventType: 'door' } },
      ],
    });
  });
});
