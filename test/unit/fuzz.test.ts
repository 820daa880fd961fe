import assert from 'node:assert/strict';
import { resolve, sep } from 'node:path';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { parseUplinkFrame } from '../../shared/contract/uplink.ts';
import { parseEnvelope, UplinkEnvelopeSchema, CommandEnvelopeSchema, GatewayEnvelopeSchema } from '../../shared/contract/envelope.ts';
import { parseTopic, uplinkTopic } from '../../shared/contract/topics.ts';
import { unsafeFilenameReason } from '../../shared/contract/filename.ts';
import { DATA_TYPES } from '../../shared/contract/payloads.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { CommandRequestSchema } from '../../internal-network/command-api/schemas.ts';
import { decodeRecord, encodeRecord } from '../../field-client/src/queue/record-codec.ts';

/**
 * Property-based tests of every parser at a trust boundary: whatever arrives, the answer is a
 * value or a coded FieldStreamError — never another exception, never a crash. Bounded runs, so
 * they fit in CI.
 */
const RUNS = { numRuns: 1500 };
const onlyCoded = (fn: () => unknown) => {
  try {
    fn();
  } catch (err) {
    if (!(err instanceof FieldStreamError)) throw err;
  }
};
const deviceId = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,20}$/);
const fieldName = fc.stringMatching(/^[A-Za-z_][A-Za-z0-9_]{0,10}$/).filter((k) => k !== 'timestamp');
const scalar = fc.oneof(fc.double({ noNaN: true, noDefaultInfinity: true }), fc.string({ maxLength: 20 }), fc.boolean());

describe('fuzzing the parsers', () => {
  it('device frames: any text, any JSON, any bytes', () => {
    fc.assert(fc.property(fc.string(), (s) => onlyCoded(() => parseUplinkFrame(s))), RUNS);
    fc.assert(fc.property(fc.json(), (s) => onlyCoded(() => parseUplinkFrame(s))), RUNS);
    fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), (b) => onlyCoded(() => parseUplinkFrame(Buffer.from(b)))), RUNS);
  });

  it('device frames: mutated valid messages and batches', () => {
    const message = fc.record({
      deviceId,
      dataType: fc.constantFrom(...DATA_TYPES, 'video', 7, null),
      payload: fc.oneof(fc.dictionary(fieldName, scalar, { minKeys: 1, maxKeys: 5 }), fc.anything()),
      messageId: fc.option(fc.string({ maxLength: 10 }), { nil: undefined }),
      seq: fc.option(fc.oneof(fc.integer(), fc.double()), { nil: undefined }),
    });
    fc.assert(fc.property(message, (m) => onlyCoded(() => parseUplinkFrame(JSON.stringify(m)))), RUNS);
    fc.assert(fc.property(deviceId, fc.array(message, { maxLength: 5 }), (d, batch) => onlyCoded(() => parseUplinkFrame(JSON.stringify({ deviceId: d, batch })))), RUNS);
  });

  it('file chunks: mutated transfer descriptions are accepted or refused with a code', () => {
    const chunk = fc.record({
      filename: fc.oneof(fc.constant('a.bin'), fc.string({ maxLength: 12 })),
      data: fc.oneof(fc.base64String({ maxLength: 40 }), fc.string({ maxLength: 10 })),
      transfer: fc.record({
        id: fc.oneof(fc.stringMatching(/^[a-z0-9]{1,10}$/), fc.string({ maxLength: 10 })),
        index: fc.oneof(fc.nat({ max: 10 }), fc.integer(), fc.double()),
        count: fc.oneof(fc.integer({ min: 1, max: 10 }), fc.integer()),
        size: fc.oneof(fc.nat(), fc.integer()),
        sha256: fc.oneof(fc.stringMatching(/^[0-9a-f]{64}$/), fc.string({ maxLength: 64 })),
      }),
    });
    fc.assert(fc.property(deviceId, chunk, (d, payload) => onlyCoded(() => parseUplinkFrame(JSON.stringify({ deviceId: d, dataType: 'file', payload })))), RUNS);
  });

  it('valid readings are accepted and keep their values', () => {
    fc.assert(
      fc.property(deviceId, fc.dictionary(fieldName, scalar, { minKeys: 1, maxKeys: 8 }), (d, payload) => {
        const [m] = parseUplinkFrame(JSON.stringify({ deviceId: d, dataType: 'timeseries', payload }));
        assert.deepEqual(m?.payload, JSON.parse(JSON.stringify(payload)));
      }),
      RUNS,
    );
  });

  it('broker envelopes and command envelopes: any bytes', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 400 }), (b) => onlyCoded(() => parseEnvelope(UplinkEnvelopeSchema, Buffer.from(b)))), RUNS);
    fc.assert(fc.property(fc.json(), (s) => onlyCoded(() => parseEnvelope(UplinkEnvelopeSchema, Buffer.from(s)))), RUNS);
    fc.assert(fc.property(fc.json(), (s) => onlyCoded(() => parseEnvelope(CommandEnvelopeSchema, Buffer.from(s)))), RUNS);
    fc.assert(fc.property(fc.uint8Array({ maxLength: 400 }), (b) => onlyCoded(() => parseEnvelope(GatewayEnvelopeSchema, Buffer.from(b)))), RUNS);
    fc.assert(fc.property(fc.json(), (s) => onlyCoded(() => parseEnvelope(GatewayEnvelopeSchema, Buffer.from(s)))), RUNS);
  });

  it('topics: any string parses or is refused; built topics round-trip', () => {
    fc.assert(fc.property(fc.string({ maxLength: 80 }), (t) => onlyCoded(() => parseTopic(t))), RUNS);
    fc.assert(fc.property(deviceId, fc.constantFrom(...DATA_TYPES), (d, k) => assert.deepEqual(parseTopic(uplinkTopic(d, k)), { kind: 'uplink', deviceId: d, dataType: k })), RUNS);
  });

  it('file names: every name the check lets through stays inside its folder', () => {
    const dir = resolve('/srv/files/device-1');
    const names = fc.oneof(fc.string({ maxLength: 30 }), fc.constantFrom('..', '.', '../x', 'a/../../b', '..\\x', '\u0000', 'ok.jpg'));
    fc.assert(
      fc.property(names, (name) => {
        if (unsafeFilenameReason(name) === undefined) assert.ok(resolve(dir, name).startsWith(dir + sep), name);
      }),
      RUNS,
    );
  });

  it('command API bodies: any JSON is a value or a list of issues', () => {
    fc.assert(fc.property(fc.anything(), (v) => void CommandRequestSchema.safeParse(v)), RUNS);
  });

  it('queue records: any bytes decode to a record, "incomplete" or "corrupt"; good records round-trip', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.nat({ max: 50 }), (b, off) => {
        const r = decodeRecord(Buffer.from(b), Math.min(off, b.length));
        assert.ok(['record', 'incomplete', 'corrupt'].includes(r.kind));
      }),
      RUNS,
    );
    fc.assert(
      fc.property(fc.string({ unit: 'binary', minLength: 1, maxLength: 200 }), (text) => {
        const r = decodeRecord(encodeRecord(text), 0);
        assert.ok(r.kind === 'record' && r.body.equals(Buffer.from(text, 'utf8')));
      }),
      RUNS,
    );
  });
});
