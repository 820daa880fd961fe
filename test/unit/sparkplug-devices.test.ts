import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SparkplugHost } from '../../field-client/src/inputs/sparkplug/host.ts';
import { decodePayload, type SparkplugPayload } from '../../field-client/src/inputs/sparkplug/payload.ts';
import { DATA_TYPES as T, encodeWire } from '../../field-client/src/inputs/sparkplug/proto.ts';
import { parseTopic, type SparkplugTopic } from '../../field-client/src/inputs/sparkplug/topic.ts';
import { LIMITS } from '../../shared/limits.ts';

/**
 * Devices per edge node are bounded (LIMITS.sparkplugMaxDevicesPerNode): a DBIRTH of one more new
 * device id is refused with SPARKPLUG_TOO_MANY_DEVICES, without a gap or a rebirth request; a
 * device already born may be born again, and a DDEATH frees a place.
 */
const T0 = 1_700_000_000_000;
function topic(s: string): SparkplugTopic {
  const t = parseTopic(s);
  assert.ok(t && t !== 'state', s);
  return t;
}
const msg = (o: Record<string, unknown>) => decodePayload(encodeWire(o));
// One payload per seq, built once: the loop below reuses them for every device id.
const dbirths: SparkplugPayload[] = Array.from({ length: 256 }, (_, seq) => msg({ seq: String(seq), metrics: [{ name: 'Temp', datatype: T.Double, doubleValue: 1 }] }));
const ddeaths: SparkplugPayload[] = Array.from({ length: 256 }, (_, seq) => msg({ seq: String(seq) }));

describe('Sparkplug devices per edge node', () => {
  it('takes LIMITS.sparkplugMaxDevicesPerNode devices, refuses one more with SPARKPLUG_TOO_MANY_DEVICES, and goes on', () => {
    const host = new SparkplugHost({ rebirthMinIntervalMs: 5_000 });
    const nbirth = msg({ seq: '0', metrics: [{ name: 'bdSeq', datatype: T.UInt64, longValue: '0' }] });
    assert.equal(host.handle(topic('spBv1.0/G/NBIRTH/E'), nbirth, T0).refused, undefined);
    let seq = 0;
    const next = () => (seq = (seq + 1) % 256);
    for (let i = 0; i < LIMITS.sparkplugMaxDevicesPerNode; i++) {
      const out = host.handle(topic(`spBv1.0/G/DBIRTH/E/d${i}`), dbirths[next()] as SparkplugPayload, T0);
      assert.equal(out.refused, undefined, `device ${i}`);
    }
    const over = host.handle(topic('spBv1.0/G/DBIRTH/E/one-more'), dbirths[next()] as SparkplugPayload, T0);
    assert.equal(over.refused?.code, 'SPARKPLUG_TOO_MANY_DEVICES');
    assert.equal(over.readings.length, 0);
    assert.equal(over.rebirth, false);
    assert.equal(host.session('G', 'E')?.devices.size, LIMITS.sparkplugMaxDevicesPerNode);
    assert.equal(host.session('G', 'E')?.stale, false, 'the refused birth took its seq: no gap');
    // A device already born is born again; a death frees a place for a new one.
    assert.equal(host.handle(topic('spBv1.0/G/DBIRTH/E/d0'), dbirths[next()] as SparkplugPayload, T0).refused, undefined);
    assert.equal(host.handle(topic('spBv1.0/G/DDEATH/E/d1'), ddeaths[next()] as SparkplugPayload, T0).refused, undefined);
    assert.equal(host.handle(topic('spBv1.0/G/DBIRTH/E/one-more'), dbirths[next()] as SparkplugPayload, T0).refused, undefined);
  });
});
