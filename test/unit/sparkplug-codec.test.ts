import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as sparkplugPayload from 'sparkplug-payload';
import { isFieldStreamError } from '../../shared/errors.ts';
import { LIMITS } from '../../shared/limits.ts';
import { decodePayload, rebirthCommand, REBIRTH_METRIC, type SparkplugPayload } from '../../field-client/src/inputs/sparkplug/payload.ts';
import { DATA_TYPES, DATA_TYPE_MAX, encodeWire } from '../../field-client/src/inputs/sparkplug/proto.ts';
import { metricValue } from '../../field-client/src/inputs/sparkplug/values.ts';

/**
 * The Sparkplug B codec: our message definitions against bytes from an independent encoder
 * (sparkplug-payload, the Eclipse Tahu JavaScript library that sparkplug-client publishes with), a
 * round trip through our own encoder, every scalar data type, and malformed input refused with
 * SPARKPLUG_PAYLOAD_INVALID.
 */
const tahu = sparkplugPayload.get('spBv1.0');
if (!tahu) throw new Error('sparkplug-payload has no spBv1.0 codec');

const refusedWith = (code: string) => (err: unknown) => isFieldStreamError(err) && err.code === code;
const valueOf = (p: SparkplugPayload, i: number) => {
  const m = p.metrics[i];
  assert.ok(m);
  const v = metricValue(m.datatype as number, m.raw, m.isNull);
  return 'value' in v ? v.value : `skip: ${v.skip}`;
};

describe('Sparkplug B codec', () => {
  it('decodes what an independent encoder wrote: every scalar data type, with its type kept', () => {
    const bytes = tahu.encodePayload({
      timestamp: 1_700_000_000_000,
      seq: 7,
      metrics: [
        { name: 'i8', type: 'Int8', value: -3 },
        { name: 'i16', type: 'Int16', value: -300 },
        { name: 'i32', type: 'Int32', value: -70_000 },
        { name: 'i64', type: 'Int64', value: -5_000_000_000 },
        { name: 'u8', type: 'UInt8', value: 250 },
        { name: 'u16', type: 'UInt16', value: 65_000 },
        { name: 'u32', type: 'UInt32', value: 4_000_000_000 },
        { name: 'u64', type: 'UInt64', value: 9_007_199_254_740_991 },
        { name: 'f', type: 'Float', value: 1.5 },
        { name: 'd', type: 'Double', value: 2.25e-7 },
        { name: 'b', type: 'Boolean', value: false },
        { name: 's', type: 'String', value: 'auto' },
        { name: 't', type: 'Text', value: 'long text' },
        { name: 'uuid', type: 'UUID', value: '0b7e1a9e-7b6c-4d6e-9d1a-2f9c3a7e5b10' },
        { name: 'dt', type: 'DateTime', value: 1_600_000_000_123, alias: 9, timestamp: 1_700_000_000_500 },
        { name: 'bytes', type: 'Bytes', value: Buffer.from('abc') },
        { name: 'n', type: 'Double', value: null },
      ],
    });
    const p = decodePayload(bytes);
    assert.equal(p.seq, 7);
    assert.equal(p.timestamp, 1_700_000_000_000);
    assert.deepEqual(
      p.metrics.map((_, i) => valueOf(p, i)),
      [-3, -300, -70_000, -5_000_000_000, 250, 65_000, 4_000_000_000, 9_007_199_254_740_991, 1.5, 2.25e-7, false, 'auto', 'long text', '0b7e1a9e-7b6c-4d6e-9d1a-2f9c3a7e5b10', 1_600_000_000_123, 'skip: data type Bytes is not stored as a field', 'skip: null value'],
    );
    assert.equal(p.metrics[14]?.alias, 9);
    assert.equal(p.metrics[14]?.timestamp, 1_700_000_000_500);
    assert.equal(p.metrics[16]?.isNull, true);
  });

  it('reads a Float as the decimal its publisher wrote, not the 32-bit float widened to a double (21.4, not 21.399999618530273)', () => {
    const written = [21.4, 0.1, -7.3, 1e-7, 3.4028235e38, 16_777_217, 1.5, 0];
    const bytes = tahu.encodePayload({ timestamp: 1_700_000_000_000, seq: 1, metrics: written.map((value, i) => ({ name: `f${i}`, type: 'Float', value })) });
    const p = decodePayload(bytes);
    // 16,777,217 is not a 32-bit float: its nearest one is 16,777,216.
    assert.deepEqual(p.metrics.map((_, i) => valueOf(p, i)), [21.4, 0.1, -7.3, 1e-7, 3.4028235e38, 16_777_216, 1.5, 0]);
    // Each still the same 32-bit float; a Float sent in double_value (a publisher's choice) kept as sent.
    for (const [i, v] of p.metrics.map((_, j) => valueOf(p, j)).entries()) assert.equal(Math.fround(v as number), Math.fround(written[i] as number));
    assert.deepEqual(metricValue(DATA_TYPES.Float, { kind: 'double', v: 21.399999618530273 }, false), { value: 21.399999618530273 });
  });

  it('round-trips through its own encoder, 64-bit values exact, negative small integers in either two\'s complement', () => {
    const bytes = encodeWire({
      timestamp: '1700000000000',
      seq: '255',
      uuid: 'u-1',
      metrics: [
        { name: 'Inputs/A', alias: '42', datatype: DATA_TYPES.Int8, intValue: 0xffff_ffff }, // -1, 32-bit two's complement
        { alias: '43', datatype: DATA_TYPES.Int8, intValue: 0xfe }, // -2, 8-bit two's complement
        { alias: '44', datatype: DATA_TYPES.Int16, intValue: 0xfffd }, // -3, 16-bit
        { alias: '45', datatype: DATA_TYPES.UInt64, longValue: '18446744073709551615' },
        { alias: '46', datatype: DATA_TYPES.Int64, longValue: '18446744073709551615' }, // -1 as Int64
        { alias: '47', datatype: DATA_TYPES.UInt32, longValue: '7' }, // UInt32 in long_value (older publishers)
        { alias: '48', datatype: DATA_TYPES.Boolean, booleanValue: true, isHistorical: true },
        { alias: '49', datatype: DATA_TYPES.Float, floatValue: Number.NaN },
      ],
    });
    const p = decodePayload(bytes);
    assert.equal(p.seq, 255);
    assert.equal(p.uuid, 'u-1');
    assert.equal(p.metrics[0]?.name, 'Inputs/A');
    assert.equal(p.metrics[0]?.alias, 42);
    assert.equal(p.metrics[1]?.name, undefined);
    assert.deepEqual(
      p.metrics.map((_, i) => valueOf(p, i)),
      [-1, -2, -3, 18446744073709551615, -1, 7, true, 'skip: NaN or infinite'],
    );
    assert.equal(p.metrics[6]?.isHistorical, true);
  });

  it('keeps zero and false as present values (proto2 presence): seq 0 of a birth, a false Boolean, a 0 integer', () => {
    const p = decodePayload(encodeWire({ seq: '0', metrics: [{ name: 'off', datatype: DATA_TYPES.Boolean, booleanValue: false }, { name: 'zero', datatype: DATA_TYPES.Int32, intValue: 0 }] }));
    assert.equal(p.seq, 0);
    assert.deepEqual([valueOf(p, 0), valueOf(p, 1)], [false, 0]);
    const theirs = tahu.decodePayload(encodeWire({ seq: '0', metrics: [{ name: 'off', datatype: DATA_TYPES.Boolean, booleanValue: false }] }));
    assert.equal(Number(theirs.seq), 0);
    assert.equal(theirs.metrics?.[0]?.value, false);
  });

  it('writes the rebirth request of §6.4.6: NCMD with Node Control/Rebirth = true, readable by the independent decoder', () => {
    const decoded = tahu.decodePayload(rebirthCommand(1_700_000_000_000));
    assert.equal(decoded.metrics?.[0]?.name, REBIRTH_METRIC);
    assert.equal(decoded.metrics?.[0]?.type, 'Boolean');
    assert.equal(decoded.metrics?.[0]?.value, true);
  });

  it('refuses malformed protobuf with SPARKPLUG_PAYLOAD_INVALID, whatever the bytes', () => {
    for (const bytes of [Buffer.from([0xff, 0xff, 0xff]), Buffer.from('{"not":"protobuf"}'), Buffer.from([0x12, 0x05, 0x0a]), Buffer.from([0x08])]) {
      assert.throws(() => decodePayload(bytes), refusedWith('SPARKPLUG_PAYLOAD_INVALID'), bytes.toString('hex'));
    }
    // Random bytes: refused or decoded, never anything else thrown.
    for (let i = 0; i < 500; i++) {
      const bytes = Buffer.from(Array.from({ length: 1 + (i % 40) }, () => Math.floor(Math.random() * 256)));
      try {
        decodePayload(bytes);
      } catch (err) {
        assert.ok(refusedWith('SPARKPLUG_PAYLOAD_INVALID')(err), `${bytes.toString('hex')}: ${(err as Error).message}`);
      }
    }
  });

  it('refuses what decodes but breaks the rules: seq beyond 255, an unknown data type, no name nor alias, compressed, too large', () => {
    const cases: Record<string, unknown>[] = [
      { seq: '256', metrics: [] },
      { seq: '1', metrics: [{ name: 'x', datatype: DATA_TYPE_MAX + 1, intValue: 1 }] },
      { seq: '1', metrics: [{ datatype: DATA_TYPES.Int32, intValue: 1 }] },
      { seq: '1', uuid: 'SPBV1.0_COMPRESSED', body: Buffer.from('x') },
      { seq: '1', metrics: [{ name: 'x', alias: '9007199254740992', datatype: DATA_TYPES.Int32, intValue: 1 }] },
    ];
    for (const c of cases) assert.throws(() => decodePayload(encodeWire(c)), refusedWith('SPARKPLUG_PAYLOAD_INVALID'), JSON.stringify(c));
    assert.throws(() => decodePayload(Buffer.alloc(LIMITS.sparkplugPayloadMaxBytes + 1)), refusedWith('SPARKPLUG_PAYLOAD_INVALID'));
  });

  it('refuses a string that is not UTF-8 (a value, a name, a template member\'s, a property key), at any depth', () => {
    // Written with a marker, then its middle byte made 0xFC: "Tür" in Latin-1, not UTF-8.
    const latin1 = (payload: Record<string, unknown>) => {
      const bytes = Buffer.from(encodeWire(payload));
      const at = bytes.indexOf(Buffer.from('TXr'));
      assert.ok(at >= 0);
      bytes[at + 1] = 0xfc;
      return bytes;
    };
    const cases: Record<string, unknown>[] = [
      { seq: '1', metrics: [{ name: 'Door', datatype: DATA_TYPES.String, stringValue: 'TXr offen' }] },
      { seq: '1', metrics: [{ name: 'TXr', datatype: DATA_TYPES.Int32, intValue: 1 }] },
      { seq: '1', metrics: [{ name: 'T', datatype: DATA_TYPES.Template, templateValue: { metrics: [{ name: 'TXr', datatype: DATA_TYPES.Int32, intValue: 1 }] } }] },
      { seq: '1', metrics: [{ name: 'x', datatype: DATA_TYPES.Int32, intValue: 1, properties: { keys: ['TXr'], values: [{ type: DATA_TYPES.Int32, intValue: 1 }] } }] },
    ];
    for (const c of cases) {
      assert.throws(() => decodePayload(latin1(c)), (err: unknown) => refusedWith('SPARKPLUG_PAYLOAD_INVALID')(err) && /UTF-8/.test((err as Error).message), JSON.stringify(c));
    }
    // UTF-8 itself, letters of two, three and four bytes, is taken as written.
    const p = decodePayload(encodeWire({ seq: '1', metrics: [{ name: 'Tür/°C', datatype: DATA_TYPES.String, stringValue: 'Tür offen 🚪' }] }));
    assert.equal(p.metrics[0]?.name, 'Tür/°C');
    assert.equal(valueOf(p, 0), 'Tür offen 🚪');
  });

  it('refuses a value whose protobuf member contradicts its data type, or out of its range', () => {
    const p = decodePayload(
      encodeWire({
        seq: '0',
        metrics: [
          { name: 'a', datatype: DATA_TYPES.Boolean, stringValue: 'true' },
          { name: 'b', datatype: DATA_TYPES.UInt8, intValue: 300 },
          { name: 'c', datatype: DATA_TYPES.String, intValue: 1 },
        ],
      }),
    );
    for (const m of p.metrics) assert.throws(() => metricValue(m.datatype as number, m.raw, m.isNull), refusedWith('SPARKPLUG_PAYLOAD_INVALID'), m.name);
  });
});
