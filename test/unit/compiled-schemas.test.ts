import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { z } from 'zod';
import { parseUplinkFrame, UplinkBatchSchema, UplinkMessageSchema } from '../../shared/contract/uplink.ts';
import { DownlinkFrameSchema } from '../../shared/contract/downlink.ts';
import { CommandEnvelopeSchema, GatewayEnvelopeSchema, parseEnvelope, UplinkEnvelopeSchema } from '../../shared/contract/envelope.ts';
import { JsonValueSchema } from '../../shared/contract/payloads.ts';
import { StoredFeedMessageSchema } from '../../internal-network/shared/stored-feed.ts';
import { parseQueuedRecord, QueuedRecordSchema } from '../../field-client/src/queue/queue-types.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { LIMITS } from '../../shared/limits.ts';

/**
 * The schemas checked for every message are compiled (zod's `z.compile`). A compiled schema answers
 * `safeParse` with generated code and, for what that code refuses, with zod's standard parser; the
 * standard parser alone answers `safeParseAsync`. So each input below is checked both ways: the
 * compiled code must accept exactly what the standard parser accepts, with the same output, and
 * refuse with the same issues.
 */
const RUNS = { numRuns: 400 };

async function sameAnswer(schema: z.ZodType, value: unknown): Promise<void> {
  const compiled = schema.safeParse(value);
  const standard = await schema.safeParseAsync(value);
  assert.equal(compiled.success, standard.success, `compiled ${compiled.success ? 'accepts' : 'refuses'} what the standard parser ${standard.success ? 'accepts' : 'refuses'}: ${JSON.stringify(value)?.slice(0, 300)}`);
  if (compiled.success && standard.success) assert.deepEqual(compiled.data, standard.data);
  else assert.deepEqual(compiled.error?.issues, standard.error?.issues);
}

/** A value with one place in it replaced (or, in an object, one key added): mostly invalid, always near a valid one. */
function mutated<T>(valid: fc.Arbitrary<T>): fc.Arbitrary<unknown> {
  return fc.tuple(valid, fc.array(fc.nat(), { maxLength: 6 }), fc.oneof(fc.anything(), fc.constantFrom(-1, 1.5, 2 ** 53, '', 'x'.repeat(200), null, [], {})), fc.boolean()).map(([v, path, replacement, addKey]) => {
    const root = structuredClone(v) as unknown;
    let parent: Record<string, unknown> | unknown[] | undefined;
    let key: string | number | undefined;
    let node: unknown = root;
    for (const step of path) {
      if (typeof node !== 'object' || node === null) break;
      const keys = Object.keys(node);
      if (keys.length === 0) break;
      parent = node as Record<string, unknown>;
      key = keys[step % keys.length] as string;
      node = (node as Record<string, unknown>)[key];
    }
    if (addKey && typeof node === 'object' && node !== null && !Array.isArray(node)) (node as Record<string, unknown>).extra = replacement;
    else if (parent !== undefined && key !== undefined) (parent as Record<string, unknown>)[key] = replacement;
    else return replacement;
    return root;
  });
}

const deviceId = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,20}$/);
const messageId = fc.stringMatching(/^[A-Za-z0-9._:-]{1,30}$/);
const seq = fc.nat();
const mac = fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => Buffer.from(b).toString('base64url'));
const epoch = fc.stringMatching(/^[A-Za-z0-9_-]{1,20}$/);
const auth = fc.oneof(
  fc.record({ v: fc.constant(1), epoch, seq, ts: fc.nat(), mac }),
  fc.record({ v: fc.constant(2), epoch, seq, ts: fc.nat(), mac, count: fc.integer({ min: 1, max: LIMITS.batchMaxMessages }) }),
);
const fieldName = fc.stringMatching(/^[A-Za-z_][A-Za-z0-9_]{0,10}$/).filter((k) => k !== 'timestamp');
const scalar = fc.oneof(fc.double({ noNaN: true, noDefaultInfinity: true }), fc.string({ maxLength: 20 }), fc.boolean());
const payloads = {
  timeseries: fc.tuple(fc.dictionary(fieldName, scalar, { minKeys: 1, maxKeys: 5 }), fc.option(fc.nat(), { nil: undefined })).map(([f, t]) => (t === undefined ? f : { ...f, timestamp: t })),
  event: fc.record({ eventType: fc.stringMatching(/^[a-z]{1,10}$/), severity: fc.constantFrom('info', 'critical'), message: fc.string({ maxLength: 20 }) }),
  response: fc.record({ commandId: messageId, status: fc.constantFrom('accepted', 'completed', 'failed', 'rejected'), result: fc.jsonValue({ maxDepth: 3 }) }),
  file: fc.record({ filename: fc.stringMatching(/^[a-z]{1,8}\.bin$/), data: fc.base64String({ maxLength: 40 }) }),
  health: fc.record({ uptimeSeconds: fc.nat(), queueMessages: fc.nat(), queueBytes: fc.nat(), awaitingReceipt: fc.nat(), version: fc.constant('1.0.0'), intervalSeconds: fc.integer({ min: 1, max: 60 }) }),
};
const dataType = fc.constantFrom('timeseries', 'event', 'response', 'file', 'health' as const);
const message = dataType.chain((t) => fc.record({ dataType: fc.constant(t), payload: payloads[t] as fc.Arbitrary<unknown>, messageId, seq, auth }, { requiredKeys: ['dataType', 'payload'] }));
const envelopeItem = (payload: fc.Arbitrary<unknown>) => fc.record({ messageId, seq, auth, receivedAt: fc.nat(), payload }, { requiredKeys: ['messageId', 'payload'] });

describe('compiled schemas answer as the standard parser does', () => {
  it('device frames: single messages and batches, valid and mutated', async () => {
    const single = fc.tuple(deviceId, message).map(([d, m]) => ({ deviceId: d, ...m }));
    const batch = fc.record({ deviceId, batch: fc.array(message, { minLength: 1, maxLength: 4 }) });
    await fc.assert(fc.asyncProperty(fc.oneof(single, mutated(single)), (v) => sameAnswer(UplinkMessageSchema, v)), RUNS);
    await fc.assert(fc.asyncProperty(fc.oneof(batch, mutated(batch)), (v) => sameAnswer(UplinkBatchSchema, v)), RUNS);
  });

  it("envelopes of a device and a gateway's envelopes of many, valid and mutated", async () => {
    const device = dataType.chain((t) =>
      fc.record({ v: fc.constant(1), deviceId, dataType: fc.constant(t), gatewayId: fc.constant('gw-1'), receivedAt: fc.nat(), messages: fc.array(envelopeItem(payloads[t] as fc.Arbitrary<unknown>), { minLength: 1, maxLength: 3 }) }),
    );
    const gateway = fc.record({
      v: fc.constant(1),
      gatewayId: fc.constant('gw-1'),
      receivedAt: fc.nat(),
      dataType: fc.constant('timeseries'),
      devices: fc.uniqueArray(fc.record({ deviceId, messages: fc.array(envelopeItem(payloads.timeseries), { minLength: 1, maxLength: 3 }) }), { minLength: 1, maxLength: 3, selector: (s) => s.deviceId }),
    });
    await fc.assert(fc.asyncProperty(fc.oneof(device, mutated(device)), (v) => sameAnswer(UplinkEnvelopeSchema, v)), RUNS);
    await fc.assert(fc.asyncProperty(fc.oneof(gateway, mutated(gateway)), (v) => sameAnswer(GatewayEnvelopeSchema, v)), RUNS);
  });

  it('frames to devices and stored-feed messages, valid and mutated', async () => {
    const downlink = fc.oneof(
      fc.record({ type: fc.constant('ack'), messageIds: fc.array(messageId, { minLength: 1, maxLength: 4 }) }),
      fc.record({ type: fc.constant('commit'), epoch, ranges: fc.constant([[1, 5]]), mac }),
      fc.record({ type: fc.constant('error'), code: fc.constant('CONTRACT_INVALID_MESSAGE'), message: fc.string({ maxLength: 20 }) }),
    );
    const feed = fc.record({
      v: fc.constant(1),
      source: fc.constant('distributor'),
      dropped: fc.nat(),
      points: fc.array(fc.record({ measurement: fc.constant('readings'), tags: fc.record({ device: deviceId }), fields: fc.dictionary(fieldName, scalar, { minKeys: 1, maxKeys: 3 }), time: fc.nat() }), { maxLength: 3 }),
    });
    await fc.assert(fc.asyncProperty(fc.oneof(downlink, mutated(downlink)), (v) => sameAnswer(DownlinkFrameSchema, v)), RUNS);
    await fc.assert(fc.asyncProperty(fc.oneof(feed, mutated(feed)), (v) => sameAnswer(StoredFeedMessageSchema, v)), RUNS);
  });

  it("the field client's queue records read back from disk, valid and mutated", async () => {
    const record = fc.record({ seq: fc.nat(), messageId: messageId, dataType, payload: fc.jsonValue({ maxDepth: 2 }), acceptedAt: fc.nat() });
    await fc.assert(fc.asyncProperty(fc.oneof(record, mutated(record)), (v) => sameAnswer(QueuedRecordSchema, v)), RUNS);
    const body = (v: unknown) => Buffer.from(JSON.stringify(v));
    const good = { seq: 7, messageId: 'e1.7', dataType: 'timeseries', payload: { t: 1 }, acceptedAt: 1 };
    assert.deepEqual(parseQueuedRecord(body(good)), good);
    assert.deepEqual(parseQueuedRecord(body({ ...good, payload: null })), { ...good, payload: null });
    const { payload: _, ...noPayload } = good;
    for (const bad of [noPayload, { ...good, seq: -1 }, { ...good, seq: '7' }, { ...good, acceptedAt: null }, [good], 'text']) {
      const r = parseQueuedRecord(body(bad));
      assert.ok('corrupt' in r && /^not a queued message: /.test(r.corrupt), JSON.stringify(bad));
    }
    assert.ok('corrupt' in parseQueuedRecord(Buffer.from('{"seq":')));
  });
});

describe('JSON of free form (command parameters and results)', () => {
  const nested = (levels: number) => `${'['.repeat(levels)}${']'.repeat(levels)}`;
  const response = (result: string) => `{"deviceId":"d-1","dataType":"response","payload":{"commandId":"c-1","status":"completed","result":${result}}}`;

  it(`accepts ${LIMITS.jsonMaxDepth} levels of nesting and refuses one more, with a coded error`, () => {
    assert.equal(parseUplinkFrame(response(nested(LIMITS.jsonMaxDepth))).length, 1);
    assert.throws(
      () => parseUplinkFrame(response(nested(LIMITS.jsonMaxDepth + 1))),
      (e: unknown) => e instanceof FieldStreamError && e.code === 'CONTRACT_INVALID_MESSAGE' && /deeper than 32 levels/.test(e.message),
    );
  });

  it('refuses nesting deep enough to overflow a recursive check, in a frame, an envelope and a command, without overflowing its own', () => {
    // 100,000 levels: 200 KB, far under the frame limit; a recursive walk of it overflows the stack.
    const deep = nested(100_000);
    assert.throws(() => parseUplinkFrame(response(deep)), (e: unknown) => e instanceof FieldStreamError && e.code === 'CONTRACT_INVALID_MESSAGE');
    const envelope = `{"v":1,"deviceId":"d-1","dataType":"response","gatewayId":"gw","receivedAt":1,"messages":[{"messageId":"m","payload":{"commandId":"c-1","status":"completed","result":${deep}}}]}`;
    assert.throws(() => parseEnvelope(UplinkEnvelopeSchema, Buffer.from(envelope)), (e: unknown) => e instanceof FieldStreamError && e.code === 'CONTRACT_INVALID_ENVELOPE');
    const command = `{"v":1,"commandId":"c-1","command":"reboot","params":${deep},"issuedAt":1}`;
    assert.throws(() => parseEnvelope(CommandEnvelopeSchema, Buffer.from(command)), (e: unknown) => e instanceof FieldStreamError && e.code === 'CONTRACT_INVALID_ENVELOPE');
  });

  it('refuses what is not JSON or would not survive a copy: non-finite numbers, "__proto__" keys, more than the size limit', () => {
    for (const [value, why] of [
      [Infinity, /number JSON cannot represent/],
      [[1, { a: JSON.parse('{"__proto__":{"x":1}}') }], /__proto__/],
      [{ a: undefined }, /not JSON/],
      [new Date(0), /not JSON/],
      ['x'.repeat(LIMITS.stringMaxChars), /larger than/],
      [undefined, /JSON value/],
    ] as const) {
      const r = JsonValueSchema.safeParse(value);
      assert.ok(!r.success && why.test(r.error.issues[0]?.message ?? ''), `${String(value).slice(0, 40)}: ${r.error?.issues[0]?.message}`);
    }
    for (const value of [null, 0, -1.5, 'text', true, [], {}, { a: [1, 'b', null, { c: false }] }]) assert.ok(JsonValueSchema.safeParse(value).success, JSON.stringify(value));
  });
});
