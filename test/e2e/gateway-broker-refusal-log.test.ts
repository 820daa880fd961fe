import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { connect, connectAsync, type MqttClient } from 'mqtt';
import { publishOnlineOnEveryConnect } from '../../dmz/gateway/gateway-presence.ts';
import { SecurityReporter } from '../../dmz/gateway/security-reporter.ts';
import type { GatewaySecurityReport } from '../../shared/contract/envelope.ts';
import { gatewayPresenceTopic, gatewaySecurityTopic } from '../../shared/contract/topics.ts';
import { LIMITS } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';
import { connectBridgeSession } from '../helpers/bridge-session.ts';
import { parseExposition } from '../helpers/exposition.ts';
import { tlsGatewayOnMosquitto } from '../helpers/tls-gateway.ts';
import { eventually, RawDevice } from '../helpers/ws-device.ts';

const KiB = 1024;
/** GATEWAY_BROKER_BACKLOG_MAX_MIB, scaled down: the first device's one frame fills it */
const MAX = 64 * KiB;
const DEVICES = 6;
/** frames each other device sends while the backlog is full */
const FRAMES = 10;

/**
 * While the broker does not take messages, every frame of every device is refused: each refusal
 * was a warning of its own in the gateway's log, whatever the number of devices, and a stall of
 * minutes with thousands of devices (each sending its window again after every back-off) wrote
 * lines by the thousand a second to the DMZ server's disk. All devices together log at most
 * LIMITS.gatewayPublishFailureLogMaxPerWindow such lines a window; every refusal is still
 * answered and counted. A real Mosquitto frozen with SIGSTOP, the real gateway terminating TLS.
 */
describe('refusals while the broker stalls: a bounded log for all devices together', () => {
  const fx = tlsGatewayOnMosquitto('gateway-refusal-log', { maxInFlight: 10_000 }, { brokerBacklogMaxBytes: MAX });

  const sample = async (name: string) => parseExposition(await fx.gateway.metrics.metrics.registry.metrics()).get(`${name}{service="gateway"}`) ?? -1;

  it('answers every refused frame, and logs a bounded number of lines', async () => {
    const ids = Array.from({ length: DEVICES }, (_, i) => `pump-${i}`);
    const devices = await Promise.all(ids.map((id) => RawDevice.connect(`wss://127.0.0.1:${fx.gateway.port}/ws`, fx.tlsOf(id))));
    try {
      await eventually(() => (devices.every((d) => d.welcome) ? true : undefined), 5_000, 'all welcomed');
      await fx.broker.pause();
      const [first, ...others] = devices as [RawDevice, ...RawDevice[]];
      const big = { dataType: 'event', messageId: 'pump-0.held', payload: { eventType: 'photo_note', severity: 'info', message: 'x'.repeat(MAX) } };
      first.send(JSON.stringify({ deviceId: 'pump-0', batch: [big] }));
      await eventually(async () => ((await sample('fieldstream_gateway_broker_backlog_bytes')) >= MAX ? true : undefined), 5_000, 'the backlog past the bound');
      const before = fx.logs.lines.length;
      for (const [n, d] of others.entries()) {
        for (let f = 0; f < FRAMES; f++) {
          d.send(JSON.stringify({ deviceId: `pump-${n + 1}`, batch: [{ dataType: 'event', messageId: `m.${f}`, payload: { eventType: 'x', severity: 'info', message: `${f}` } }] }));
        }
      }
      for (const d of others) {
        for (let f = 0; f < FRAMES; f++) {
          const answer = await d.next(5_000);
          assert.equal(answer.type, 'error');
          if (answer.type === 'error') assert.equal(answer.code, 'GATEWAY_BROKER_UNAVAILABLE');
        }
      }
      const refused = others.length * FRAMES;
      const lines = fx.logs.lines.slice(before).filter((l) => l.code === 'GATEWAY_BROKER_UNAVAILABLE').length;
      // and the backlog's own line, once a window (server.ts onBacklogFull)
      assert.ok(lines <= LIMITS.gatewayPublishFailureLogMaxPerWindow + 1, `${lines} log lines for ${refused} refused frames`);
      assert.ok(lines >= 1, 'the refusals are still logged');
    } finally {
      await fx.broker.resume();
      for (const d of devices) d.ws.terminate();
    }
  });
});

/**
 * A DMZ broker the internal network's bridge never connected to (or whose session of the bridge
 * expired) has no subscriber for a device's messages: Mosquitto answers PUBACK with reason code
 * 0x10 (No matching subscribers, MQTT 5 §3.4.2.1) and drops the message. Acked then, it was lost
 * for a device that lets go of what is acked (one sending unsigned messages, by wscat). Refused
 * instead, with the code devices send again on (and move to their next gateway URL on); once the
 * bridge's persistent session exists, online or not, the broker keeps what it takes for it, and
 * the gateway acks. A real Mosquitto, the real gateway terminating TLS.
 */
describe('a DMZ broker with no subscriber: nothing acked that the broker drops', () => {
  const fx = tlsGatewayOnMosquitto('gateway-no-subscriber', {}, {}, { bridge: false });

  it('refuses a device\'s messages until the bridge\'s session exists, then acks them and the bridge gets them', async () => {
    const device = await RawDevice.connect(`wss://127.0.0.1:${fx.gateway.port}/ws`, fx.tlsOf('pump-9'));
    let bridge: MqttClient | undefined;
    try {
      await eventually(() => (device.welcome ? true : undefined), 5_000, 'welcomed');
      // A reading (the gateway's envelope) and an event (the device's own): both topics.
      const batch = [
        { dataType: 'timeseries', messageId: 'pump-9.r', payload: { v: 1 } },
        { dataType: 'event', messageId: 'pump-9.e', payload: { eventType: 'photo_note', severity: 'info', message: 'kept' } },
      ];
      const ids = batch.map((m) => m.messageId).sort();
      const frame = JSON.stringify({ deviceId: 'pump-9', batch });
      device.send(frame);
      const refused: string[] = [];
      while (refused.length < ids.length) {
        const answer = await device.next(5_000);
        assert.equal(answer.type, 'error', `acked what the broker dropped: ${JSON.stringify(answer).slice(0, 300)}`);
        if (answer.type !== 'error') return;
        assert.equal(answer.code, 'GATEWAY_BROKER_UNAVAILABLE');
        assert.match(answer.message, /no subscriber/i);
        assert.match(answer.message, /bridge/);
        refused.push(...(answer.messageIds ?? []));
      }
      assert.deepEqual(refused.sort(), ids);

      // The bridge's session made, and left offline (its link down): the broker queues for it.
      const delivered: string[] = [];
      const onMessage = (_topic: string, payload: Buffer) => {
        const env = JSON.parse(payload.toString('utf8')) as { messages?: Array<{ messageId: string }>; devices?: Array<{ messages: Array<{ messageId: string }> }> };
        for (const m of [...(env.messages ?? []), ...(env.devices ?? []).flatMap((d) => d.messages)]) delivered.push(m.messageId);
      };
      await (await connectBridgeSession(fx.brokerUrl, 'gateway-no-subscriber-bridge')).endAsync();
      device.send(frame);
      const acked: string[] = [];
      while (acked.length < ids.length) {
        const answer = await device.next(5_000);
        assert.equal(answer.type, 'ack', JSON.stringify(answer).slice(0, 300));
        if (answer.type === 'ack') acked.push(...answer.messageIds);
      }
      assert.deepEqual(acked.sort(), ids);
      // The bridge connects: what was acked reaches it.
      bridge = await connectBridgeSession(fx.brokerUrl, 'gateway-no-subscriber-bridge', { onMessage });
      await eventually(() => (delivered.length >= ids.length ? true : undefined), 5_000, 'the bridge to get both messages');
      assert.deepEqual(delivered.sort(), ids);
    } finally {
      await bridge?.endAsync(true);
      device.ws.terminate();
    }
  });
});

/**
 * The gateway's own messages to a DMZ broker with no subscriber (the bridge has no session there):
 * Mosquitto answers PUBACK 0x10 and drops them. A security report thought delivered then had its
 * counts lost; the gateway's `online` (not retained) was never seen inside until its next
 * connection. Now the report's counts go with the next report, and the `online` is published again
 * until the broker takes it. (A device's presence is retained: Mosquitto answers 0x10 for it too,
 * and keeps it for the bridge's subscription.) A real Mosquitto.
 */
describe("the gateway's own messages to a DMZ broker with no subscriber", () => {
  const fx = tlsGatewayOnMosquitto('gateway-own-no-subscriber', {}, {}, { bridge: false });
  const log = createLogger('test', 'silent');

  it('keeps the counts of a security report the broker dropped, and sends them with the next', async () => {
    const mqtt = await connectAsync(fx.brokerUrl, { protocolVersion: 5, clientId: 'gw-reports' });
    const reporter = new SecurityReporter(mqtt, 'gw-reports', log);
    let bridge: MqttClient | undefined;
    try {
      const before = Date.now();
      for (let i = 0; i < 3; i++) reporter.note('pump-1', 'GATEWAY_RATE_LIMITED');
      reporter.flush();
      // Settled: answered 0x10, dropped.
      await eventually(() => (Object.keys(mqtt.outgoing).length === 0 ? true : undefined), 5_000, 'the PUBACK');
      const reports: GatewaySecurityReport[] = [];
      bridge = await connectBridgeSession(fx.brokerUrl, 'gateway-own-no-subscriber-bridge', {
        onMessage: (topic, payload) => {
          if (topic === gatewaySecurityTopic('gw-reports')) reports.push(JSON.parse(payload.toString('utf8')) as GatewaySecurityReport);
        },
      });
      reporter.note('pump-1', 'GATEWAY_DEVICE_MISMATCH');
      reporter.flush();
      await eventually(() => (reports.length > 0 ? true : undefined), 5_000, 'a report at the bridge');
      const [report] = reports as [GatewaySecurityReport];
      assert.deepEqual(
        report.events.map((e) => [e.deviceId, e.code, e.count]).sort(),
        [
          ['pump-1', 'GATEWAY_DEVICE_MISMATCH', 1],
          ['pump-1', 'GATEWAY_RATE_LIMITED', 3],
        ],
      );
      assert.ok(report.from <= before + 5, 'the report covers the time of the first counts');
    } finally {
      reporter.close();
      await mqtt.endAsync(true);
      await bridge?.endAsync(true);
      // Its session gone too: a broker with no subscriber again.
      await (await connectAsync(fx.brokerUrl, { protocolVersion: 4, clientId: 'gateway-own-no-subscriber-bridge', clean: true })).endAsync();
    }
  });

  it("publishes the gateway's online again until the broker takes it", async () => {
    const topic = gatewayPresenceTopic('gw-presence');
    const online = JSON.stringify({ v: 1, state: 'online', gatewayId: 'gw-presence', since: Date.now() });
    const mqtt = connectMqttPlain(fx.brokerUrl, 'gw-presence');
    const stop = publishOnlineOnEveryConnect(mqtt, topic, online, log, 100);
    let bridge: MqttClient | undefined;
    try {
      const seen: string[] = [];
      let answered = 0;
      mqtt.on('packetreceive', (p) => {
        if (p.cmd === 'puback' && p.reasonCode === 0x10) answered++;
      });
      await eventually(() => (answered > 0 ? true : undefined), 5_000, 'a PUBACK of 0x10 for the online');
      bridge = await connectBridgeSession(fx.brokerUrl, 'gateway-own-no-subscriber-bridge-2', {
        onMessage: (t, payload) => {
          if (t === topic) seen.push(payload.toString('utf8'));
        },
      });
      await eventually(() => (seen.length > 0 ? true : undefined), 5_000, "the gateway's online at the bridge");
      assert.equal(seen[0], online);
      // Taken: no more of it.
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(seen.length, 1);
    } finally {
      stop();
      await mqtt.endAsync(true);
      await bridge?.endAsync(true);
    }
  });
});

function connectMqttPlain(url: string, clientId: string): MqttClient {
  const client = connect(url, { protocolVersion: 5, clientId, reconnectPeriod: 100 });
  client.on('error', () => undefined);
  return client;
}
