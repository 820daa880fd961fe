import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { gatewayPresenceTopic, gatewaySecurityTopic, statusTopic } from '../../shared/contract/topics.ts';
import { createLogger } from '../../shared/logger.ts';
import { loadDistributorConfig } from '../../internal-network/distributor/config.ts';
import { FileStore } from '../../internal-network/distributor/file-store.ts';
import { MessageHandler } from '../../internal-network/distributor/message-handler.ts';
import { DistributorMetrics } from '../../internal-network/distributor/metrics.ts';
import type { StoredPoint } from '../../internal-network/distributor/points.ts';
import { GatewayAdmission } from '../../internal-network/distributor/security/gateway-admission.ts';
import { MessageVerifier } from '../../internal-network/distributor/security/verifier.ts';
import { ReplayWindows } from '../../internal-network/distributor/security/replay-window.ts';
import { DeviceKeyRegistry } from '../../internal-network/shared/device-keys.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { tempDir } from '../helpers/pki.ts';

const log = createLogger('test', 'silent');

/**
 * Gateway ids are the DMZ's word, and each one a presence is stored under is a series of
 * gateway_status (and a tag value of device_status): a compromised DMZ inventing ids grew them
 * without bound. The real handler, with the admission the distributor gives it.
 */
describe('gateway ids the distributor stores presences under', () => {
  const tmp = tempDir('gateway-admission');
  after(() => tmp.cleanup());
  let n = 0;
  const setup = (admission: GatewayAdmission) => {
    const dir = join(tmp.dir, `h${++n}`);
    const written: StoredPoint[] = [];
    const sink = { description: 'memory', write: async (points: readonly StoredPoint[]) => void written.push(...points), close: async () => {} };
    const verifier = new MessageVerifier(new DeviceKeyRegistry(join(dir, 'keys')), new ReplayWindows(join(dir, 'replay')), { requireSignatures: false, freshnessMs: 30_000, maxDelayMs: 86_400_000 }, log);
    const metrics = new DistributorMetrics();
    return { written, metrics, handler: new MessageHandler(sink, new FileStore(join(dir, 'files')), verifier, metrics, undefined, admission) };
  };
  const gatewayPresence = (id: string) => Buffer.from(JSON.stringify({ v: 1, state: 'online', gatewayId: id, since: Date.now() - 1000 }));
  const devicePresence = (gatewayId: string) => Buffer.from(JSON.stringify({ v: 1, state: 'online', gatewayId, at: Date.now() }));
  const report = (id: string) => Buffer.from(JSON.stringify({ v: 1, gatewayId: id, from: Date.now() - 5000, to: Date.now(), events: [{ deviceId: 'sensor-1', code: 'GATEWAY_RATE_LIMITED', count: 3 }], dropped: 0 }));
  const gatewaysOf = (points: StoredPoint[]) => new Set(points.filter((p) => p.tags.gateway !== undefined).map((p) => p.tags.gateway));

  it('by default admits the first DISTRIBUTOR_MAX_GATEWAYS ids, remembered across a restart, and refuses the rest', async () => {
    const config = loadDistributorConfig({});
    assert.deepEqual(config.DISTRIBUTOR_GATEWAYS, []);
    assert.equal(config.DISTRIBUTOR_MAX_GATEWAYS, 1000);
    const file = join(tmp.dir, 'gateways.txt');
    const first = setup(new GatewayAdmission({ listed: [], max: 3, file }, log));
    for (let i = 0; i < 200; i++) {
      await first.handler.handle(gatewayPresenceTopic(`invented-${i}`), gatewayPresence(`invented-${i}`));
      await first.handler.handle(statusTopic('pump-7'), devicePresence(`other-${i}`));
      await first.handler.handle(gatewaySecurityTopic(`report-${i}`), report(`report-${i}`));
    }
    // The first three seen: a gateway's presence, a device's presence through another, a report.
    assert.deepEqual([...gatewaysOf(first.written)].sort(), ['invented-0', 'other-0']);
    assert.deepEqual(first.written.filter((p) => p.measurement === 'security_events').map((p) => p.fields.gateway), ['report-0'], 'no report of a gateway not admitted stored');
    assert.match(await first.metrics.metrics.registry.metrics(), /^fieldstream_distributor_security_events_total\{[^}]*reason="SECURITY_UNKNOWN_GATEWAY"[^}]*\} 597$/m);
    assert.deepEqual(readFileSync(file, 'utf8').split('\n').filter((l) => l !== '').map((l) => l.split(' ')[0]), ['invented-0', 'other-0', 'report-0']);

    // A restart does not open the bound again: the ids admitted are those remembered.
    const again = setup(new GatewayAdmission({ listed: [], max: 3, file }, log));
    await again.handler.handle(gatewayPresenceTopic('report-0'), gatewayPresence('report-0'));
    await again.handler.handle(gatewayPresenceTopic('new-after-restart'), gatewayPresence('new-after-restart'));
    assert.deepEqual([...gatewaysOf(again.written)], ['report-0']);
  });

  /**
   * A gateway's id is new at each of its starts unless GATEWAY_ID is set (the default is the host
   * name and a random suffix, and neither compose file nor Kubernetes, whose gateways an autoscaler
   * adds and removes, sets it): ids remembered for ever filled DISTRIBUTOR_MAX_GATEWAYS with the
   * gateways' own restarts, after which every gateway started since was refused, its presence and
   * its devices' no longer stored. An id not heard from for TIMINGS.gatewayAdmissionTtlMs is
   * forgotten, across a restart of the distributor too; the bound holds at every instant.
   */
  it('forgets a gateway id not heard from for a while, so restarted gateways (a new id each) are never refused', () => {
    const file = join(tmp.dir, 'restarts.txt');
    let now = 1_000_000;
    const o = { listed: [], max: 3, file, ttlMs: 10_000, now: () => now };
    const a = new GatewayAdmission(o, log);
    assert.ok(a.admits('gw-run-1') && a.admits('gw-run-2') && a.admits('gw-run-3'));
    assert.ok(!a.admits('invented'), 'the bound holds');
    now += 6_000;
    assert.ok(a.admits('gw-run-3'), 'heard from again');
    now += 6_000;
    // gw-run-1 and -2, silent for 12 s, forgotten; gw-run-3, heard 6 s ago, kept.
    assert.ok(a.admits('gw-run-4') && a.admits('gw-run-5'), 'the ids of gateways gone make room for those started since');
    assert.ok(!a.admits('gw-run-6'), 'three live at most');
    assert.ok(a.admits('gw-run-3'));
    // A restart of the distributor: the times come from the file.
    now += 1_000;
    const b = new GatewayAdmission(o, log);
    assert.equal(b.size, 3);
    assert.ok(b.admits('gw-run-3') && b.admits('gw-run-4') && !b.admits('gw-run-6'));
    // 1,000 restarts of one gateway, 20 s apart: never refused, the file kept short.
    for (let i = 0; i < 1000; i++) {
      now += 20_000;
      assert.ok(b.admits(`gw-restart-${i}`), `restart ${i}`);
    }
    assert.ok(readFileSync(file, 'utf8').split('\n').length < 100, 'the file is compacted');
    // Ids of an earlier version's file (no time) count as heard at the start.
    const old = join(tmp.dir, 'old.txt');
    writeFileSync(old, 'gw-old-1\ngw-old-2\n');
    const c = new GatewayAdmission({ ...o, file: old }, log);
    assert.equal(c.size, 2);
    assert.ok(c.admits('gw-old-1') && c.admits('gw-new') && !c.admits('gw-newer'));
  });

  it('takes no damaged line of its file for an admitted id: skipped and said, the room left to real gateways', () => {
    const file = join(tmp.dir, 'damaged.txt');
    const now = 1_000_000;
    // A block a power cut left as zeros, a line edited by hand, a time that is no number, and an append cut short.
    writeFileSync(file, `gw-1 ${now - 1000}\n${'\u0000'.repeat(4096)}\nnot a gateway id ${now}\ngw-2 soon\ngw-3\ngw-4 ${now}`);
    const logs = new LogCapture();
    const a = new GatewayAdmission({ listed: [], max: 3, file, ttlMs: 10_000, now: () => now }, logs.logger);
    assert.equal(a.size, 2, 'gw-1 and gw-3 (an earlier version\'s line, without a time)');
    assert.ok(a.admits('gw-real'), 'the room the damaged lines would have taken is left to a real gateway');
    const said = logs.lines.find((l) => l.file === file && l.damagedLines !== undefined);
    assert.equal(said?.damagedLines, 3);
    assert.ok(!readFileSync(file, 'utf8').includes('\u0000'), 'compacted without them');
  });

  it('with DISTRIBUTOR_GATEWAYS admits those listed only', async () => {
    const config = loadDistributorConfig({ DISTRIBUTOR_GATEWAYS: 'gw-1, gw-2' });
    assert.deepEqual(config.DISTRIBUTOR_GATEWAYS, ['gw-1', 'gw-2']);
    assert.throws(() => loadDistributorConfig({ DISTRIBUTOR_GATEWAYS: 'gw/1' }), /DISTRIBUTOR_GATEWAYS/);
    const h = setup(new GatewayAdmission({ listed: config.DISTRIBUTOR_GATEWAYS, max: 1000, file: join(tmp.dir, 'unused.txt') }, log));
    for (const id of ['gw-1', 'gw-3', 'gw-2', 'gw-4']) {
      await h.handler.handle(gatewayPresenceTopic(id), gatewayPresence(id));
      await h.handler.handle(statusTopic('pump-7'), devicePresence(id));
      await h.handler.handle(gatewaySecurityTopic(id), report(id));
    }
    assert.deepEqual([...gatewaysOf(h.written)].sort(), ['gw-1', 'gw-2']);
    assert.equal(h.written.filter((p) => p.measurement === 'security_events').length, 2);
    // Exposed at 0 from the start (a series that appears only at the first refusal hides it from increase()).
    assert.match(await new DistributorMetrics().metrics.registry.metrics(), /^fieldstream_distributor_security_events_total\{[^}]*reason="SECURITY_UNKNOWN_GATEWAY"[^}]*\} 0$/m);
  });
});
