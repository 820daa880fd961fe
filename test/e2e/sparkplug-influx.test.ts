import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connectAsync } from 'mqtt';
import { InfluxV1 } from '../../scripts/local-stack/databases.ts';
import type { LocalStack } from '../../scripts/local-stack/stack.ts';
import type { ManagedProcess } from '../../scripts/local-stack/process.ts';
import type { RunningFieldClient } from '../../field-client/src/start.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { startTestFieldClient } from '../helpers/field.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { edgeNode, startMosquitto, T0, tahu } from '../helpers/sparkplug.ts';
import { startTestStack, influxSettings } from '../helpers/stack.ts';
import { eventually } from '../helpers/ws-device.ts';

/**
 * Sparkplug into InfluxDB 1.x on the real three tiers (Caddy, both Mosquittos and the bridge, the
 * distributor): sparkplug-client publishes on a plant's Mosquitto, the field client follows it as
 * host, and InfluxDB holds the metrics with their types (booleans, strings, numbers) at their own
 * timestamps, and the births, rebirth request and death as events.
 */
const DB = 'sensor_data';
const DEVICE = 'plc-gw-003';

describe('Sparkplug B into InfluxDB 1.x through the real stack', () => {
  const work = tempDir('sparkplug-influx');
  const pki = makeTestPki([DEVICE]);
  const logs = new LogCapture();
  let influx: InfluxV1;
  let stack: LocalStack;
  let plant: { url: string; process: ManagedProcess };
  let field: RunningFieldClient;

  before(async () => {
    influx = await InfluxV1.start(join(work.dir, 'influxdb'), DB);
    ({ stack } = await startTestStack(pki.dir, join(work.dir, 'stack'), {
      ...influxSettings(influx, DB),
    }));
    plant = await startMosquitto(work.dir);
    field = await startTestFieldClient(pki.paths, DEVICE, stack.urls.wss, logs.logger, { FIELD_SPARKPLUG_URL: plant.url, FIELD_SPARKPLUG_GROUPS: 'Plant1' });
    await field.sparkplug?.ready;
  });
  after(async () => {
    await field?.close();
    await plant?.process.stop();
    await stack?.close();
    await influx?.process.stop();
    pki.cleanup();
    work.cleanup();
  });

  it('InfluxDB holds the metrics with their types and timestamps, and the lifecycle events', async () => {
    const stats = field.sparkplug?.session.stats;
    assert.ok(stats);
    const { edge, state } = edgeNode(plant.url, 'line4-influx');
    await eventually(() => (stats.events >= 2 ? true : undefined), 15_000, 'births taken');
    edge.publishNodeData({
      timestamp: T0 + 1000,
      metrics: [
        { alias: 1, type: 'Double', value: 22.25, timestamp: T0 + 1000 },
        { alias: 2, type: 'Boolean', value: false, timestamp: T0 + 1000 },
        { alias: 4, type: 'String', value: 'manual', timestamp: T0 + 1000 },
      ],
    });
    const raw = await connectAsync(plant.url, { clientId: 'raw-influx' });
    await raw.publishAsync('spBv1.0/Plant1/NDATA/Line4', Buffer.from(tahu.encodePayload({ timestamp: T0, seq: 200, metrics: [{ alias: 1, type: 'Double', value: 999 }] })));
    await raw.endAsync();
    await eventually(() => (state.rebirthRequests === 1 ? true : undefined), 15_000, 'rebirth after the gap');
    // 2 births, rebirth request, the device's death with the session the new NBIRTH replaces, 2 births.
    await eventually(() => (stats.events >= 6 ? true : undefined), 15_000, 'new births taken');
    edge.stop();
    await eventually(() => (stats.events >= 8 ? true : undefined), 15_000, 'death taken, its device dead with it');

    const rows = await eventually(async () => {
      const r = await influx.rows(DB, `SELECT "Plant1.Line4.Inputs.Temp", "Plant1.Line4.Running", "Plant1.Line4.Mode", "Plant1.Line4.Count", "Plant1.Line4.Press.Pressure" FROM readings WHERE device = '${DEVICE}'`);
      return r.length >= 2 ? r : undefined;
    }, 30_000, 'readings in InfluxDB');
    assert.deepEqual(rows, [
      { time: T0, 'Plant1.Line4.Inputs.Temp': 21.5, 'Plant1.Line4.Running': true, 'Plant1.Line4.Mode': 'auto', 'Plant1.Line4.Count': -5, 'Plant1.Line4.Press.Pressure': 2.5 },
      { time: T0 + 1000, 'Plant1.Line4.Inputs.Temp': 22.25, 'Plant1.Line4.Running': false, 'Plant1.Line4.Mode': 'manual', 'Plant1.Line4.Count': null, 'Plant1.Line4.Press.Pressure': null },
    ]);
    const types = Object.fromEntries((await influx.rows(DB, 'SHOW FIELD KEYS FROM readings')).map((t) => [t.fieldKey, t.fieldType]));
    assert.equal(types['Plant1.Line4.Inputs.Temp'], 'float');
    assert.equal(types['Plant1.Line4.Count'], 'float'); // every number is written as a float (line-protocol.ts)
    assert.equal(types['Plant1.Line4.Running'], 'boolean');
    assert.equal(types['Plant1.Line4.Mode'], 'string');
    const events = await eventually(async () => {
      const r = await influx.rows(DB, `SELECT * FROM events WHERE device = '${DEVICE}'`);
      return r.some((e) => e.event_type === 'sparkplug.ndeath') ? r : undefined;
    }, 30_000, 'events in InfluxDB');
    assert.deepEqual([...new Set(events.map((e) => e.event_type))].sort(), ['sparkplug.dbirth', 'sparkplug.ddeath', 'sparkplug.nbirth', 'sparkplug.ndeath', 'sparkplug.rebirth_requested']);
    assert.equal(events.find((e) => e.event_type === 'sparkplug.nbirth')?.time, T0);
  });
});
