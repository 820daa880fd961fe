import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { createServer as createTlsServer, type Server } from 'node:tls';
import mqttPacket from 'mqtt-packet';
import { freezableBroker } from '../helpers/freezable-broker.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { eventually } from '../helpers/ws-device.ts';
import { loadBrokerExporterConfig } from '../../internal-network/broker-exporter/config.ts';
import { startBrokerExporter, type BrokerExporter } from '../../internal-network/broker-exporter/exporter.ts';

/**
 * The broker exporter subscribes at QoS 0, and a broker sends a subscriber nothing at a higher QoS
 * than it granted (MQTT 3.1.1 §3.8.4, MQTT-3.8.4-6; MQTT 5 §3.8.4 likewise). A DMZ broker that sends
 * QoS 2 all the same, and never the PUBREL, had each message kept by mqtt.js until its PUBREL (its
 * incoming store, in memory): up to 65,535 packet identifiers of 64 KiB each, 4 GiB, in an exporter
 * whose container has 256 MiB.
 */
describe('the broker exporter facing a DMZ broker that sends $SYS at QoS 2 and never releases it', () => {
  const fx = freezableBroker('exporter-qos2', [], 'internal/mosquitto');
  const logs = new LogCapture();
  const MESSAGES = 500;
  let exporter: BrokerExporter | undefined;
  let rogue: Server | undefined;
  /** per connection to the rogue broker: PUBRECs it got, and whether the exporter closed it */
  const connections: Array<{ pubrecs: number; closed: boolean; sent: number }> = [];

  before(async () => {
    const p = fx.pki.paths;
    const dmz = p.service('dmz/mosquitto');
    rogue = createTlsServer({ key: readFileSync(dmz.key), cert: readFileSync(dmz.cert) }, (sock) => {
      const state = { pubrecs: 0, closed: false, sent: 0 };
      connections.push(state);
      const v5 = { protocolVersion: 5 } as const;
      const parser = mqttPacket.parser(v5);
      sock.on('error', () => undefined);
      sock.on('close', () => (state.closed = true));
      parser.on('packet', (packet) => {
        if (packet.cmd === 'connect') sock.write(mqttPacket.generate({ cmd: 'connack', reasonCode: 0, sessionPresent: false }, v5));
        if (packet.cmd === 'pubrec') state.pubrecs++;
        if (packet.cmd !== 'subscribe') return;
        sock.write(mqttPacket.generate({ cmd: 'suback', messageId: packet.messageId, granted: packet.subscriptions.map(() => 0) }, v5));
        const payload = Buffer.alloc(60 * 1024, 0x31);
        void (async () => {
          for (let id = 1; id <= MESSAGES && !state.closed; id++) {
            state.sent++;
            if (!sock.write(mqttPacket.generate({ cmd: 'publish', topic: '$SYS/broker/uptime', payload, qos: 2, messageId: id, dup: false, retain: false }, v5))) {
              await new Promise((r) => (sock.once('drain', r), sock.once('close', r)));
            }
          }
        })();
      });
      sock.on('data', (d: Buffer) => parser.parse(d));
    });
    await new Promise<void>((resolve) => (rogue as Server).listen(0, '127.0.0.1', resolve));
    const m = p.service('internal/monitor');
    exporter = await startBrokerExporter(
      loadBrokerExporterConfig({
        MQTT_URL: fx.broker.tlsUrl,
        MQTT_CA_FILE: p.publicCa,
        MQTT_CERT_FILE: m.cert,
        MQTT_KEY_FILE: m.key,
        DMZ_MQTT_URL: `mqtts://localhost:${((rogue as Server).address() as AddressInfo).port}`,
        DMZ_MQTT_CA_FILE: p.dmzBrokerCa.internal,
        BROKER_EXPORTER_CLIENT_ID: 'exporter-qos2-test',
        BROKER_EXPORTER_METRICS_PORT: '0',
      }),
      logs.logger,
    );
  });
  after(async () => {
    await exporter?.close();
    rogue?.close();
  });

  it('keeps none of them: the connection is closed at the first (MQTT_PROTOCOL_VIOLATION), nothing acknowledged', async () => {
    const first = await eventually(() => connections[0], 20_000, 'the exporter connected to the rogue DMZ broker');
    await eventually(() => (first.closed || first.sent >= MESSAGES ? true : undefined), 20_000, 'the rogue broker done');
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(first.pubrecs, 0, `${first.pubrecs} QoS 2 messages kept awaiting their PUBREL`);
    assert.equal(first.closed, true, 'the connection stood');
    assert.ok(logs.codes().includes('MQTT_PROTOCOL_VIOLATION'), `logged: ${JSON.stringify(logs.codes())}`);
  });
});
