import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { newClient } from 'sparkplug-client';
import { plantInput, T0 } from '../helpers/sparkplug.ts';
import { eventually } from '../helpers/ws-device.ts';

const DEVICE = 'plc-gw-011';
const TEMP = 'Plant1.Line7.Inputs.Temp';
const LEVEL = 'Plant1.Line7.Tank.Level';

/**
 * Sparkplug 3.0.0 §6.4.9.1 (Quality Codes): a metric's `Quality` property (Int32) says whether its
 * value may be trusted: 0 BAD, 192 GOOD, 500 STALE. An edge node whose sensor fails, or whose PLC it
 * no longer reads, keeps publishing the metric with its quality BAD or STALE, and a value beside it
 * (the last one read, or whatever the driver holds). Such a value was stored as any other, a
 * measurement that was never made indistinguishable in the series from the real ones. Published
 * here by sparkplug-client on a real Mosquitto, read by the field client's Sparkplug input.
 */
describe('the Sparkplug input and the Quality property of metrics', () => {
  const rig = plantInput('sparkplug-quality', DEVICE);

  it('stores values of GOOD quality, or with no quality, and skips (counts) those of BAD or STALE quality', async () => {
    const sp = rig.field?.sparkplug;
    const queue = rig.field?.client.queue;
    assert.ok(sp && queue);
    const stats = sp.session.stats;
    const edge = newClient({ serverUrl: rig.fx.broker.url, username: 'edge', password: 'edge', groupId: 'Plant1', edgeNode: 'Line7', clientId: 'line7-edge', publishDeath: true, version: 'spBv1.0' });
    const quality = (q: number) => ({ Quality: { type: 'Int32' as const, value: q } });
    edge.on('birth', () => {
      edge.publishNodeBirth({
        timestamp: T0,
        metrics: [
          { name: 'Inputs/Temp', alias: 1, type: 'Double', value: 21.5, properties: quality(192) },
          { name: 'Running', alias: 2, type: 'Boolean', value: true },
        ],
      });
      edge.publishDeviceBirth('Tank', { timestamp: T0, metrics: [{ name: 'Level', alias: 10, type: 'Float', value: 1.25, properties: quality(500) }] });
    });
    try {
      await eventually(() => (stats.events >= 2 ? true : undefined), 15_000, 'NBIRTH and DBIRTH taken');
      edge.publishNodeData({
        timestamp: T0 + 1000,
        metrics: [
          { alias: 1, type: 'Double', value: -999, timestamp: T0 + 1000, properties: quality(0) },
          { alias: 2, type: 'Boolean', value: false, timestamp: T0 + 1000 },
        ],
      });
      edge.publishDeviceData('Tank', { timestamp: T0 + 1500, metrics: [{ alias: 10, type: 'Float', value: 2.5, timestamp: T0 + 1500, properties: quality(192) }] });
      edge.publishNodeData({ timestamp: T0 + 2000, metrics: [{ alias: 1, type: 'Double', value: 22.75, timestamp: T0 + 2000, properties: quality(192) }] });
      await eventually(() => (sp.session.host.session('Plant1', 'Line7')?.seq === 4 ? true : undefined), 15_000, 'the data taken');
      await sp.session.drained();

      const series = (field: string) =>
        queue
          .find((m) => m.dataType === 'timeseries' && field in (m.payload as Record<string, unknown>))
          .map((m) => [(m.payload as Record<string, unknown>).timestamp, (m.payload as Record<string, unknown>)[field]])
          .sort((a, b) => Number(a[0]) - Number(b[0]));
      // The BAD value of Temp (-999 at T0 + 1000) is not a measurement; Running beside it is one.
      assert.deepEqual(series(TEMP), [
        [T0, 21.5],
        [T0 + 2000, 22.75],
      ]);
      assert.deepEqual(series('Plant1.Line7.Running'), [
        [T0, true],
        [T0 + 1000, false],
      ]);
      // The STALE birth value of Level is not stored, the GOOD one after it is.
      assert.deepEqual(series(LEVEL), [[T0 + 1500, 2.5]]);
      assert.equal(stats.metricsSkipped, 2);
      assert.equal(stats.refusedByCode.SPARKPLUG_PAYLOAD_INVALID, undefined);
    } finally {
      edge.stop();
    }
  });
});
