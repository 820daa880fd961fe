import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import mqtt from 'mqtt';
import { mqttInput } from '../../field-client/src/inputs/mqtt-input.ts';
import { DATA_TYPES as T, encodeWire } from '../../field-client/src/inputs/sparkplug/proto.ts';
import { parseTopic } from '../../field-client/src/inputs/sparkplug/topic.ts';
import type { Submission } from '../../field-client/src/client-options.ts';
import type { FieldClient } from '../../field-client/src/field-client.ts';
import { createLogger } from '../../shared/logger.ts';

/**
 * The host keys an edge node by its group and edge node ids joined with U+0000. MQTT 3.1.1 §1.5.3
 * forbids that character in a topic, but aedes (the local MQTT input) delivers it: group `G\0H`,
 * edge node `E` and group `G`, edge node `H\0E` were one edge node to the host (one's data read
 * against the other's birth, stored under its fields), and the deaths it records split the key
 * back into group `G`, edge node `H` (an edge node nobody published). Such an id is no Sparkplug
 * id: refused as a topic outside the namespace.
 */
const T0 = Date.now();
const bdSeq = { name: 'bdSeq', datatype: T.UInt64, longValue: '0' };
const birth = encodeWire({ timestamp: String(T0), seq: '0', metrics: [bdSeq, { name: 'Temp', alias: '1', datatype: T.Double, doubleValue: 20 }] });
const data = encodeWire({ timestamp: String(T0 + 1), seq: '1', metrics: [{ alias: '1', doubleValue: 99 }] });

describe('Sparkplug ids holding U+0000', () => {
  const appends: Submission[][] = [];
  const client = { submitMany: async (items: Submission[]) => void appends.push([...items]) } as unknown as FieldClient;
  const input = mqttInput(client, '127.0.0.1', 0, 'fieldstream/local', createLogger('test', 'silent'), undefined, { groups: [] });
  before(() => input.start());
  after(() => input.close());

  it('are not Sparkplug topics', () => {
    assert.equal(parseTopic('spBv1.0/G\u0000H/NBIRTH/E'), undefined);
    assert.equal(parseTopic('spBv1.0/G/NDATA/H\u0000E'), undefined);
    assert.equal(parseTopic('spBv1.0/G/DDATA/E/D\u0000'), undefined);
    assert.deepEqual(parseTopic('spBv1.0/G/DDATA/E/D'), { group: 'G', type: 'DDATA', edge: 'E', device: 'D' });
  });

  it('are refused on the local MQTT input (SPARKPLUG_TOPIC_INVALID, acknowledged), nothing stored', async () => {
    const edge = await mqtt.connectAsync(`mqtt://127.0.0.1:${input.port}`, { reconnectPeriod: 0, clientId: 'edge-nul', protocolVersion: 4 });
    try {
      await edge.publishAsync('spBv1.0/G\u0000H/NBIRTH/E', Buffer.from(birth), { qos: 1 });
      // Another edge node's NDATA, whose ids join to the same key: read against the birth above, its
      // value was stored under G_H.E.Temp.
      await edge.publishAsync('spBv1.0/G/NDATA/H\u0000E', Buffer.from(data), { qos: 1 });
    } finally {
      await edge.endAsync(true);
    }
    assert.deepEqual(appends.flat(), [], JSON.stringify(appends));
    assert.equal(input.sparkplug?.stats.refusedByCode['SPARKPLUG_TOPIC_INVALID'], 2);
  });
});
