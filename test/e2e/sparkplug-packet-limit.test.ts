import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LIMITS } from '../../shared/limits.ts';
import { plantInput, T0, tahu } from '../helpers/sparkplug.ts';
import { eventually } from '../helpers/ws-device.ts';

const DEVICE = 'plc-gw-008';

/**
 * An MQTT packet larger than the Sparkplug input reads from the plant's broker. Anyone who may publish
 * under `spBv1.0/` there (a hostile or broken edge node) could send one of MQTT's 256 MB, and mqtt.js
 * buffered it whole (twice: its parser's list, then the payload sliced from it) before the input's
 * own 4 MiB bound looked at it: a field client on a device of 512 MB was killed for its memory. Now
 * such a packet is skipped as its bytes arrive, never buffered beyond its topic, and taken as a
 * payload that cannot be decoded (SPARKPLUG_PAYLOAD_INVALID), the connection kept (closing it, as
 * before, let a retained one keep the input off the broker: sparkplug-retained-oversize.test.ts); a
 * payload over the 4 MiB it decodes but within the packet bound is refused alone, as before.
 */
describe('the Sparkplug input bounds the packets it reads from the plant broker', () => {
  const rig = plantInput('sparkplug-packet-limit', DEVICE);
  const { logs } = rig;

  it('refuses a payload over 4 MiB alone, and skips a packet over its bound unread, the connection kept', async () => {
    const sp = rig.field?.sparkplug;
    assert.ok(sp && rig.raw);
    const stats = sp.session.stats;

    // Over what the input decodes, within what it reads: refused alone, the connection kept.
    await rig.raw.publishAsync('spBv1.0/Plant1/NDATA/Edge1', Buffer.alloc(LIMITS.sparkplugPayloadMaxBytes + 1024));
    await eventually(() => (stats.refusedByCode.SPARKPLUG_PAYLOAD_INVALID === 1 ? true : undefined), 15_000, 'the payload over 4 MiB refused');

    // Over the packet bound: skipped as it arrives, refused the same, the connection kept.
    await rig.raw.publishAsync('spBv1.0/Plant1/NDATA/Edge1', Buffer.alloc(LIMITS.sparkplugMaxPacketBytes + 1024));
    await eventually(() => (stats.refusedByCode.SPARKPLUG_PAYLOAD_INVALID === 2 ? true : undefined), 15_000, 'the packet over the bound refused');
    assert.ok(!logs.codes().includes('MQTT_PACKET_TOO_LARGE'), 'the connection was not closed for it');
    assert.ok(!logs.codes().includes('SPARKPLUG_BROKER_UNAVAILABLE'), 'the connection was not lost');

    // The input takes what edge nodes publish next.
    const nbirth = tahu.encodePayload({ timestamp: T0, seq: 0, metrics: [{ name: 'bdSeq', type: 'UInt64', value: 0 }, { name: 'Temp', alias: 1, type: 'Double', value: 20.5 }] });
    await eventually(
      async () => {
        await rig.raw?.publishAsync('spBv1.0/Plant1/NBIRTH/Edge2', Buffer.from(nbirth));
        return sp.session.host.session('Plant1', 'Edge2') ? true : undefined;
      },
      20_000,
      'an NBIRTH taken after it',
    );
  });
});
