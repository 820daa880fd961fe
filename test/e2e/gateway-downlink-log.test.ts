import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { connectAsync } from 'mqtt';
import { ENVELOPE_VERSION } from '../../shared/contract/envelope.ts';
import { commandTopic, receiptTopic } from '../../shared/contract/topics.ts';
import { LIMITS } from '../../shared/limits.ts';
import { tlsGatewayOnMosquitto } from '../helpers/tls-gateway.ts';
import { eventually, RawDevice } from '../helpers/ws-device.ts';

/** messages of each kind the DMZ broker sends: well past the bound */
const FLOOD = 3 * LIMITS.gatewayDownlinkLogMaxPerWindow;

/**
 * Whoever holds the DMZ broker (a compromised DMZ server: SECURITY.md) decides how many messages it
 * hands the gateway on a device's command topic and on the gateway's receipts topic: a genuine
 * signed command replayed without end, or garbage. The gateway logged a line for each (a command
 * forwarded at info, a refusal at warn), and the DMZ server's disk filled at that rate. Now at most
 * LIMITS.gatewayDownlinkLogMaxPerWindow lines of each kind a window, the rest counted into the next;
 * every command is still forwarded. A real Mosquitto, the real gateway terminating TLS.
 */
describe("messages from the DMZ broker to a device: the gateway's log is bounded", () => {
  const fx = tlsGatewayOnMosquitto('gateway-downlink-log', {});

  it('forwards every command and logs at most the bound of each kind', async () => {
    const device = await RawDevice.connect(`wss://127.0.0.1:${fx.gateway.port}/ws`, fx.tlsOf('pump-1'));
    const dmz = await connectAsync(fx.brokerUrl, { clientId: 'downlink-log-dmz' });
    try {
      await eventually(() => (device.welcome ? true : undefined), 5_000, 'the device welcomed');
      // The gateway subscribes to the device's command topic once it holds it.
      const topic = commandTopic('pump-1');
      await eventually(
        async () => {
          await dmz.publishAsync(topic, JSON.stringify({ v: ENVELOPE_VERSION, commandId: 'probe', command: 'noop', issuedAt: Date.now() }), { qos: 1 });
          const frame = await device.next(300).catch(() => undefined);
          return frame?.type === 'command' ? true : undefined;
        },
        10_000,
        'a command forwarded',
      );
      const before = fx.logs.lines.length;
      for (let i = 0; i < FLOOD; i++) {
        await dmz.publishAsync(topic, JSON.stringify({ v: ENVELOPE_VERSION, commandId: `cmd-${i}`, command: 'noop', issuedAt: Date.now() }), { qos: 1 });
        await dmz.publishAsync(topic, '{"not":"a command"}', { qos: 1 });
        await dmz.publishAsync(receiptTopic(`gw-gateway-downlink-log`), '{"not":"receipts"}', { qos: 1 });
      }
      let forwarded = 0;
      while (forwarded < FLOOD) {
        const frame = await device.next(5_000);
        if (frame.type === 'command' && frame.commandId.startsWith('cmd-')) forwarded++;
      }
      const lines = fx.logs.lines.slice(before);
      const count = (pred: (l: Record<string, unknown>) => boolean) => lines.filter(pred).length;
      const forwardedLines = count((l) => l.msg === 'command forwarded');
      const refusedCommands = count((l) => l.code === 'CONTRACT_INVALID_ENVELOPE' && String(l.topic).endsWith('/down/command'));
      const refusedReceipts = count((l) => l.code === 'CONTRACT_INVALID_ENVELOPE' && String(l.topic).includes('/receipts'));
      assert.equal(forwarded, FLOOD, 'every command forwarded');
      assert.ok(forwardedLines >= 1 && forwardedLines <= LIMITS.gatewayDownlinkLogMaxPerWindow, `${forwardedLines} lines for ${FLOOD} commands forwarded`);
      assert.ok(refusedCommands >= 1 && refusedCommands <= LIMITS.gatewayDownlinkLogMaxPerWindow, `${refusedCommands} lines for ${FLOOD} commands refused`);
      assert.ok(refusedReceipts >= 1 && refusedReceipts <= LIMITS.gatewayDownlinkLogMaxPerWindow, `${refusedReceipts} lines for ${FLOOD} receipts messages refused`);
    } finally {
      await dmz.endAsync();
      device.close();
    }
  });
});
