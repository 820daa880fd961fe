import assert from 'node:assert/strict';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { after, before, describe, it } from 'node:test';
import mqttPacket from 'mqtt-packet';
import type { RunningFieldClient } from '../../field-client/src/start.ts';
import { freePort } from '../../scripts/local-stack/ports.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { startTestFieldClient } from '../helpers/field.ts';
import { makeTestPki } from '../helpers/pki.ts';
import { eventually } from '../helpers/ws-device.ts';

const DEVICE = 'plc-gw-009';

/**
 * The Sparkplug input subscribes to its groups at QoS 0 and to STATE at QoS 1, and a broker sends a
 * subscriber nothing above the QoS it granted (MQTT 3.1.1 §3.8.4, MQTT-3.8.4-6). A plant broker
 * that sends QoS 2 all the same, and never the PUBREL, had each message kept by mqtt.js until then:
 * up to 65,535 packet identifiers of a packet of up to LIMITS.sparkplugMaxPacketBytes each, on a
 * device. A broker written here with mqtt-packet, as no real one misbehaves so.
 */
describe('the Sparkplug input facing a plant broker that sends QoS 2 and never releases it', () => {
  const pki = makeTestPki([DEVICE]);
  const logs = new LogCapture();
  const MESSAGES = 200;
  let field: RunningFieldClient | undefined;
  let rogue: Server | undefined;
  /** per connection to the rogue broker: PUBRECs it got, whether the input closed it, messages sent */
  const connections: Array<{ pubrecs: number; closed: boolean; sent: number }> = [];

  before(async () => {
    rogue = createServer((sock) => {
      const state = { pubrecs: 0, closed: false, sent: 0 };
      connections.push(state);
      const v4 = { protocolVersion: 4 } as const;
      const parser = mqttPacket.parser(v4);
      sock.on('error', () => undefined);
      sock.on('close', () => (state.closed = true));
      let subscribed = 0;
      parser.on('packet', (packet) => {
        if (packet.cmd === 'connect') sock.write(mqttPacket.generate({ cmd: 'connack', returnCode: 0, sessionPresent: false }, v4));
        if (packet.cmd === 'pubrec') state.pubrecs++;
        if (packet.cmd !== 'subscribe') return;
        sock.write(mqttPacket.generate({ cmd: 'suback', messageId: packet.messageId, granted: packet.subscriptions.map((s) => s.qos) }, v4));
        // Once both subscriptions (STATE, then the groups) are in.
        if (++subscribed < 2) return;
        const payload = Buffer.alloc(60 * 1024, 0x31);
        void (async () => {
          for (let id = 1; id <= MESSAGES && !state.closed; id++) {
            state.sent++;
            if (!sock.write(mqttPacket.generate({ cmd: 'publish', topic: 'spBv1.0/Plant1/NDATA/Edge1', payload, qos: 2, messageId: id, dup: false, retain: false }, v4))) {
              await new Promise((r) => (sock.once('drain', r), sock.once('close', r)));
            }
          }
        })();
      });
      sock.on('data', (d: Buffer) => parser.parse(d));
    });
    await new Promise<void>((resolve) => (rogue as Server).listen(0, '127.0.0.1', resolve));
    field = await startTestFieldClient(pki.paths, DEVICE, `wss://127.0.0.1:${await freePort()}/ws`, logs.logger, {
      FIELD_SPARKPLUG_URL: `mqtt://127.0.0.1:${((rogue as Server).address() as AddressInfo).port}`,
      FIELD_SPARKPLUG_GROUPS: 'Plant1',
    });
  });
  after(async () => {
    await field?.close();
    rogue?.close();
    pki.cleanup();
  });

  it('keeps none of them: the connection is closed at the first (MQTT_PROTOCOL_VIOLATION), nothing acknowledged', async () => {
    const first = await eventually(() => connections[0], 20_000, 'the input connected to the rogue plant broker');
    await eventually(() => (first.closed || first.sent >= MESSAGES ? true : undefined), 20_000, 'the rogue broker done');
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(first.pubrecs, 0, `${first.pubrecs} QoS 2 messages kept awaiting their PUBREL`);
    assert.equal(first.closed, true, 'the connection stood');
    assert.ok(logs.codes().includes('MQTT_PROTOCOL_VIOLATION'), `logged: ${JSON.stringify(logs.codes())}`);
  });
});
