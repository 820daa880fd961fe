import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { MqttClient } from 'mqtt';
import { SecurityReporter } from '../../dmz/gateway/security-reporter.ts';
import type { GatewaySecurityReport } from '../../shared/contract/envelope.ts';
import { gatewaySecurityTopic } from '../../shared/contract/topics.ts';
import { LIMITS } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';
import { FileStore } from '../../internal-network/distributor/file-store.ts';
import { MessageHandler } from '../../internal-network/distributor/message-handler.ts';
import { DistributorMetrics } from '../../internal-network/distributor/metrics.ts';
import type { StoredPoint } from '../../internal-network/distributor/points.ts';
import { MessageVerifier } from '../../internal-network/distributor/security/verifier.ts';
import { ReplayWindows } from '../../internal-network/distributor/security/replay-window.ts';
import { DeviceKeyRegistry } from '../../internal-network/shared/device-keys.ts';
import { tempDir } from '../helpers/pki.ts';

/** A gateway's security report, as the distributor stores and counts it. */
describe("a gateway's security report", () => {
  const tmp = tempDir('gateway-reports');
  after(() => tmp.cleanup());

  it('is stored per device and code, and what it could not list is counted', async () => {
    const written: StoredPoint[] = [];
    const sink = { description: 'memory', write: async (points: readonly StoredPoint[]) => void written.push(...points), close: async () => {} };
    const log = createLogger('test', 'silent');
    const verifier = new MessageVerifier(new DeviceKeyRegistry(join(tmp.dir, 'keys')), new ReplayWindows(join(tmp.dir, 'replay')), { requireSignatures: false, freshnessMs: 30_000, maxDelayMs: 86_400_000 }, log);
    const metrics = new DistributorMetrics();
    const handler = new MessageHandler(sink, new FileStore(join(tmp.dir, 'files')), verifier, metrics);
    const now = Date.now();
    const report = { v: 1, gatewayId: 'gw-1', from: now - 5000, to: now, events: [{ deviceId: 'sensor-1', code: 'GATEWAY_RATE_LIMITED', count: 3 }], dropped: 41 };
    await handler.handle(gatewaySecurityTopic('gw-1'), Buffer.from(JSON.stringify(report)));
    assert.deepEqual(
      written.map((p) => [p.measurement, p.tags.device, p.tags.reason, p.tags.source, p.fields.count]),
      [['security_events', 'sensor-1', 'GATEWAY_RATE_LIMITED', 'gateway', 3]],
    );
    const text = await metrics.metrics.registry.metrics();
    assert.match(text, /^fieldstream_distributor_gateway_unlisted_refusals_total\{[^}]*\} 41$/m);
    assert.match(text, /^fieldstream_distributor_security_events_total\{[^}]*reason="GATEWAY_RATE_LIMITED"[^}]*\} 3$/m);
  });
});

/** The gateway's side: a report the broker did not take is not lost (the real broker's 0x10: test/e2e/gateway-broker-refusal-log.test.ts). */
describe('a security report the broker did not take', () => {
  it('has its counts sent with the next report, within the same bounds', () => {
    const sent: GatewaySecurityReport[] = [];
    let fail = true;
    const mqtt = Object.assign(new EventEmitter(), {
      connected: true,
      publish(_topic: string, payload: string, _opts: unknown, cb: (err?: Error, packet?: { messageId: number }) => void) {
        sent.push(JSON.parse(payload) as GatewaySecurityReport);
        cb(fail ? new Error('Connection closed') : undefined, { messageId: sent.length });
      },
    }) as unknown as MqttClient;
    const reporter = new SecurityReporter(mqtt, 'gw-1', createLogger('test', 'silent'));
    try {
      const max = LIMITS.gatewaySecurityReportMaxEntries;
      for (let i = 0; i <= max; i++) reporter.note(`d-${i}`, 'GATEWAY_RATE_LIMITED');
      reporter.flush();
      const first = sent[0] as GatewaySecurityReport;
      assert.equal(first.events.length, max);
      assert.equal(first.dropped, 1);
      // Not taken: kept, and what comes meanwhile joins it, past the bound counted as dropped.
      reporter.note('d-0', 'GATEWAY_RATE_LIMITED');
      reporter.note('d-new', 'GATEWAY_DEVICE_MISMATCH');
      fail = false;
      reporter.flush();
      const second = sent[1] as GatewaySecurityReport;
      assert.equal(second.from, first.from);
      assert.equal(second.events.length, max);
      assert.equal(second.events.find((e) => e.deviceId === 'd-0')?.count, 2);
      assert.equal(second.events.reduce((n, e) => n + e.count, 0) + second.dropped, max + 3);
      // Taken: nothing left to send.
      reporter.flush();
      assert.equal(sent.length, 2);
    } finally {
      reporter.close();
    }
  });
});
