import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LIMITS } from '../../shared/limits.ts';
import { plantInput, T0, tahu } from '../helpers/sparkplug.ts';
import { eventually } from '../helpers/ws-device.ts';

const DEVICE = 'plc-gw-009';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * A packet over the Sparkplug input's bound, published retained on the plant's broker (real
 * Mosquitto) under a group it follows. The broker hands a retained message to every new
 * subscription, so it comes again on every connection the input makes.
 */
describe('a retained packet over the Sparkplug input bound on the plant broker', () => {
  const rig = plantInput('sparkplug-retained-oversize', DEVICE);
  const { logs } = rig;

  it('skips it unread on every connection, the connection kept: an edge node born after it stays born, its data stored', async () => {
    const sp = rig.field?.sparkplug;
    assert.ok(sp && rig.raw);
    const stats = sp.session.stats;
    const big = Buffer.alloc(LIMITS.sparkplugMaxPacketBytes + 1024);
    // At QoS 0 on a group followed (subscribed at QoS 0), and at QoS 1 on STATE (subscribed at QoS 1,
    // so the input must acknowledge it, or the broker holds it in flight).
    await rig.raw.publishAsync('spBv1.0/Plant1/NDATA/Junk', big, { qos: 1, retain: true });
    await rig.raw.publishAsync('spBv1.0/STATE/junk-host', big, { qos: 1, retain: true });
    await eventually(
      () => ((stats.refusedByCode.SPARKPLUG_PAYLOAD_INVALID ?? 0) >= 1 && (stats.refusedByCode.SPARKPLUG_STATE_INVALID ?? 0) >= 1) || logs.codes().includes('MQTT_PACKET_TOO_LARGE') ? true : undefined,
      15_000,
      'the packets over the bound seen',
    );
    // An edge node publishing on: born whenever the input is there to see it.
    const nbirth = Buffer.from(tahu.encodePayload({ timestamp: T0, seq: 0, metrics: [{ name: 'bdSeq', type: 'UInt64', value: 0 }, { name: 'Temp', alias: 1, type: 'Double', value: 20.5 }] }));
    await eventually(
      async () => {
        await rig.raw?.publishAsync('spBv1.0/Plant1/NBIRTH/Edge2', nbirth);
        return sp.session.host.session('Plant1', 'Edge2') ? true : undefined;
      },
      20_000,
      'an NBIRTH taken',
    );
    // Another host's STATE at QoS 1 after the one skipped: the stream read on in step, the PUBACK taken.
    await rig.raw.publishAsync('spBv1.0/STATE/scada-2', JSON.stringify({ online: true, timestamp: Date.now() }), { qos: 1, retain: true });
    await eventually(() => sp.session.peers.get('scada-2')?.online, 10_000, 'the next STATE read');
    const refusalsBefore = logs.codes().filter((c) => c === 'MQTT_PACKET_TOO_LARGE').length;
    await sleep(4 * 1_000);
    const refusals = logs.codes().filter((c) => c === 'MQTT_PACKET_TOO_LARGE').length;
    assert.equal(refusals, refusalsBefore, `the retained packet refused again and again: ${refusals} times`);
    assert.ok(sp.session.host.session('Plant1', 'Edge2'), 'the edge node still born');
    assert.equal(refusals, 0, 'the connection was never closed for it');
    assert.equal(stats.refusedByCode.SPARKPLUG_PAYLOAD_INVALID, 1, 'skipped once, counted as a payload not read');
    assert.equal(stats.refusedByCode.SPARKPLUG_STATE_INVALID, 1);
    assert.equal(sp.session.peers.get('junk-host'), undefined, 'the STATE skipped is no peer');
  });
});
