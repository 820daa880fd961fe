import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isFieldStreamError } from '../../shared/errors.ts';
import { LIMITS } from '../../shared/limits.ts';
import { decodePayload } from '../../field-client/src/inputs/sparkplug/payload.ts';
import { encodeWire } from '../../field-client/src/inputs/sparkplug/proto.ts';

/**
 * LIMITS.sparkplugMaxMetrics is applied on the wire, before protobufjs decodes a metric: a payload
 * of millions of empty metrics is refused with SPARKPLUG_PAYLOAD_INVALID without being decoded.
 */
describe('Sparkplug B metric count', () => {
  it('refuses two million empty metrics (bytes 12 00) with SPARKPLUG_PAYLOAD_INVALID', () => {
    const bytes = Buffer.alloc(LIMITS.sparkplugPayloadMaxBytes);
    for (let i = 0; i < bytes.length; i += 2) bytes[i] = 0x12; // field 2, wire type 2, length 0
    assert.throws(
      () => decodePayload(bytes),
      (err: unknown) => isFieldStreamError(err, 'SPARKPLUG_PAYLOAD_INVALID') && /more than 10000 metrics|sparkplugMaxMetrics/.test(err.message),
    );
  });

  it('still decodes a payload of exactly LIMITS.sparkplugMaxMetrics metrics', () => {
    const metrics = Array.from({ length: LIMITS.sparkplugMaxMetrics }, (_, i) => ({ name: `m${i}`, datatype: 10, doubleValue: i }));
    const p = decodePayload(encodeWire({ timestamp: '1700000000000', seq: '0', metrics }));
    assert.equal(p.metrics.length, LIMITS.sparkplugMaxMetrics);
    assert.equal(p.metrics[LIMITS.sparkplugMaxMetrics - 1]?.name, `m${LIMITS.sparkplugMaxMetrics - 1}`);
  });

  it('refuses one metric more than the limit, and malformed wire data, with the code', () => {
    const metrics = Array.from({ length: LIMITS.sparkplugMaxMetrics + 1 }, (_, i) => ({ name: `m${i}` }));
    assert.throws(() => decodePayload(encodeWire({ seq: '0', metrics })), (err: unknown) => isFieldStreamError(err, 'SPARKPLUG_PAYLOAD_INVALID'));
    assert.throws(() => decodePayload(Uint8Array.from([0x12, 0x05, 0x0a])), (err: unknown) => isFieldStreamError(err, 'SPARKPLUG_PAYLOAD_INVALID'));
  });
});
