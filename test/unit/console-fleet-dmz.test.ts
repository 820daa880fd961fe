import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, describe, it, mock } from 'node:test';
import { ChangeCounts } from '../../internal-network/console/fleet/counts.ts';
import { Fleet } from '../../internal-network/console/fleet/fleet.ts';
import type { SecurityEvent } from '../../internal-network/console/fleet/types.ts';
import { PipelinePoller, type PipelineView } from '../../internal-network/console/pipeline/pipeline-view.ts';
import { DistributorMetrics } from '../../internal-network/distributor/metrics.ts';
import { startMetricsServer } from '../../shared/metrics/server.ts';
import { LiveHub } from '../../internal-network/console/web/live.ts';
import { DeviceKeyRegistry } from '../../internal-network/shared/device-keys.ts';
import type { StoredPoint } from '../../internal-network/distributor/points.ts';
import { issueDeviceToken } from '../../pki/device-tokens.ts';
import { pkiPaths } from '../../pki/layout.ts';
import { CONSOLE } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';

/**
 * The console's fleet against a compromised DMZ (docs/console.md, "Where its data comes from"):
 * what its gateways report (security reports, device and gateway presences) may be forged, even
 * when well-formed. Forged reports cannot push the distributor's own findings out of view; ids they
 * name get no fleet row; a gateway's presence looks only at the devices it holds; a live stream is
 * sent only the security counts that changed.
 */

const fleetOf = (registered: Iterable<string>) => {
  const fleet = new Fleet({ staleAfterMs: 180_000, now: () => 1_000_000 });
  for (const id of registered) fleet.register(id);
  return fleet;
};
const ids = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}-${i}`);

/** A finding of the distributor's own (a signature that failed): one refusal. */
const finding = (device: string, time: number): StoredPoint => ({ measurement: 'security_events', tags: { device, reason: 'SECURITY_BAD_SIGNATURE' }, fields: { message_id: `m${time}` }, time });
/** A gateway's report (the DMZ's word): refusals counted. */
const report = (device: string, time: number, count = 5): StoredPoint => ({
  measurement: 'security_events',
  tags: { device, reason: 'GATEWAY_RATE_LIMITED', source: 'gateway' },
  fields: { count, gateway: 'gw-1' },
  time,
});
const presence = (device: string, state: 'online' | 'offline', time: number, gateway = 'gw-1'): StoredPoint => ({ measurement: 'device_status', tags: { device, gateway }, fields: { state }, time });
const gatewayGone = (gateway: string, time: number): StoredPoint => ({ measurement: 'gateway_status', tags: { gateway }, fields: { state: 'offline', since: 0 }, time });
const reading = (device: string, time: number): StoredPoint => ({ measurement: 'readings', tags: { device }, fields: { v: 1 }, time });

describe("the console's fleet against a compromised DMZ", () => {
  it("a flood of forged gateway reports cannot push the distributor's own findings out of view", () => {
    const fleet = fleetOf(['pump-1', 'pump-2']);
    for (let t = 1; t <= 3; t++) fleet.apply(finding('pump-1', t));
    // Far more than any ring holds, about the same device and others.
    for (let t = 10; t < 10 + 5 * CONSOLE.fleetRing; t++) fleet.apply(report(t % 2 === 0 ? 'pump-1' : 'pump-2', t));

    const own = (list: SecurityEvent[]) => list.filter((e) => e.reason === 'SECURITY_BAD_SIGNATURE').map((e) => e.time);
    const summary = fleet.securitySummary();
    assert.deepEqual(own(summary.recent), [3, 2, 1], "the snapshot's findings: all three, newest first");
    const page = fleet.detail('pump-1')?.security ?? [];
    assert.deepEqual(own(page), [3, 2, 1], "the device page's findings: all three");
    // Both are still shown, the reports marked as the gateway's, and memory stays bounded.
    assert.ok(page.some((e) => e.source === 'gateway' && e.count === 5), 'the reports are on the page too, marked');
    assert.ok(page.every((e) => (e.reason === 'GATEWAY_RATE_LIMITED') === (e.source === 'gateway')));
    assert.equal(page.filter((e) => e.source === 'gateway').length, CONSOLE.perDeviceGatewayReports);
    assert.equal(summary.reported.length, CONSOLE.snapshotRecent);
    assert.ok(summary.reported.every((e) => e.source === 'gateway'));
    assert.equal(fleet.security.reported.since(0).length, CONSOLE.gatewayReportsRing);
    // Counted all the same, both sources together.
    assert.equal(summary.byReason.SECURITY_BAD_SIGNATURE, 3);
    assert.equal(summary.byReason.GATEWAY_RATE_LIMITED, 5 * 5 * CONSOLE.fleetRing);
  });

  it('ids named only by presences and security events get no row; 100,000 of them cannot block a registered device', () => {
    const fleet = fleetOf(['pump-1']);
    const junk = ids('junk', CONSOLE.maxDevices);
    for (const id of junk) fleet.apply(presence(id, 'online', 1_000));
    for (const id of junk.slice(0, 1000)) fleet.apply(report(id, 2_000));
    for (const id of junk.slice(0, 1000)) fleet.apply(finding(id, 3_000)); // a forged message naming it, refused
    assert.equal(fleet.size, 1, 'only the registered device');
    assert.equal(fleet.detail('junk-0'), undefined);
    assert.equal(fleet.unregistered, CONSOLE.maxDevices + 2000, 'counted');
    assert.equal(fleet.untracked, 0);
    // Still shown fleet-wide (what was refused is a finding), but counted per device only for rows.
    assert.equal(fleet.securitySummary().byReason.SECURITY_BAD_SIGNATURE, 1000);
    assert.deepEqual(fleet.securitySummary().byDevice, {});

    // A device registered afterwards gets its row, and its presences count.
    fleet.register('pump-2');
    assert.equal(fleet.detail('pump-2')?.row.state, 'unknown');
    fleet.apply(presence('pump-2', 'online', 4_000));
    assert.equal(fleet.detail('pump-2')?.row.state, 'online');
    assert.equal(fleet.untracked, 0);
  });

  it('presences of ids with no row are kept to be applied if the id is registered later: at most CONSOLE.maxPendingPresences, the oldest forgotten first, each looked at by its own gateway only', () => {
    const fleet = fleetOf(['pump-1']);
    fleet.apply(presence('late-1', 'online', 1_000, 'gw-9'));
    // Far more invented ids than kept (a distributor storing anything, DISTRIBUTOR_REQUIRE_SIGNATURES=false).
    const junk = ids('junk', 2 * CONSOLE.maxPendingPresences);
    for (const id of junk) fleet.apply(presence(id, 'online', 2_000));
    assert.equal(fleet.pending.size, CONSOLE.maxPendingPresences, 'bounded');
    assert.equal(fleet.size, 1, 'and no row made');
    fleet.register('late-1');
    assert.equal(fleet.detail('late-1')?.row.state, 'unknown', 'pushed out by newer ones');
    fleet.register('junk-0');
    assert.equal(fleet.detail('junk-0')?.row.state, 'unknown');
    const last = junk.at(-1) as string;
    fleet.register(last);
    assert.deepEqual([fleet.detail(last)?.row.state, fleet.detail(last)?.row.gateway], ['online', 'gw-1']);

    // A gateway's presence looks at the presences kept through it only, and at none it cannot take.
    const visitedBefore = fleet.pending.gateways.visited;
    fleet.apply(presence('late-2', 'online', 2_000, 'gw-2'));
    for (let i = 0; i < 1000; i++) fleet.apply(gatewayGone('gw-2', 3_000 + i));
    for (let i = 0; i < 1000; i++) fleet.apply(gatewayGone('gw-1', 1_000));
    assert.equal(fleet.pending.gateways.visited - visitedBefore, 1);
    fleet.register('late-2');
    assert.equal(fleet.detail('late-2')?.row.state, 'unknown', 'its gateway gone since');
  });

  it('data the distributor verified gives a row; such rows have a bound of their own, registered devices still get theirs', () => {
    const fleet = fleetOf([]);
    fleet.apply(reading('new-1', 1_000));
    assert.equal(fleet.detail('new-1')?.row.state, 'online', 'proven by a verified point');
    // Unsigned data stored by a distributor that accepts it (DISTRIBUTOR_REQUIRE_SIGNATURES=false) proves nothing of an id.
    for (const id of ids('unsigned', CONSOLE.maxDevices)) fleet.apply(reading(id, 2_000));
    assert.equal(fleet.size, CONSOLE.maxUnregisteredDevices);
    assert.equal(fleet.untracked, CONSOLE.maxDevices + 1 - CONSOLE.maxUnregisteredDevices);
    fleet.register('pump-1');
    assert.ok(fleet.detail('pump-1'), 'a registered device is never kept out by them');
    // A proven device the registry lists later is a registered one: it leaves room for another.
    fleet.register('new-1');
    fleet.apply(reading('unsigned-late', 3_000));
    assert.ok(fleet.detail('unsigned-late'));
  });

  it('a token device is registered too (its signing key is in the registry): it gets a row', async () => {
    const root = mkdtempSync(join(tmpdir(), 'console-token-device-'));
    try {
      await issueDeviceToken(root, 'plc-3');
      const registry = new DeviceKeyRegistry(dirname(pkiPaths(root).deviceKeyRegistry('plc-3')));
      assert.deepEqual(registry.registered(), ['plc-3']);
      const fleet = fleetOf(registry.registered());
      fleet.apply(presence('plc-3', 'online', 1_000));
      assert.equal(fleet.detail('plc-3')?.row.state, 'online');
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it("a gateway's presence takes its own connected devices offline and looks at no other", () => {
    const gw1 = ids('a', 10);
    const gw2 = ids('b', 5000);
    const fleet = fleetOf([...gw1, ...gw2, 'moved', 'left']);
    for (const id of gw1) fleet.apply(presence(id, 'online', 1_000, 'gw-1'));
    for (const id of gw2) fleet.apply(presence(id, 'online', 1_000, 'gw-2'));
    fleet.apply(presence('moved', 'online', 1_000, 'gw-1'));
    fleet.apply(presence('moved', 'online', 1_100, 'gw-2')); // now held by gw-2
    fleet.apply(presence('left', 'online', 1_000, 'gw-1'));
    fleet.apply(presence('left', 'offline', 1_200, 'gw-1'));

    const visitedBefore = fleet.gateways.visited;
    fleet.apply(gatewayGone('gw-1', 2_000));
    for (const id of gw1) assert.equal(fleet.detail(id)?.row.state, 'offline', id);
    for (const id of gw2) assert.equal(fleet.detail(id)?.row.state, 'online', id);
    assert.equal(fleet.detail('moved')?.row.state, 'online', 'held by another gateway since');
    assert.equal(fleet.detail('left')?.row.state, 'offline');
    assert.equal(fleet.gateways.visited - visitedBefore, gw1.length, "only gw-1's connected devices were looked at");

    // The same presence again and again (a hostile DMZ sending it fast): nothing left to look at.
    for (let i = 0; i < 1000; i++) fleet.apply(gatewayGone('gw-1', 2_001 + i));
    // An old restart of gw-2 (before every presence of its devices): none looked at either.
    for (let i = 0; i < 1000; i++) fleet.apply({ measurement: 'gateway_status', tags: { gateway: 'gw-2' }, fields: { state: 'online', since: 500 }, time: 3_000 + i });
    assert.equal(fleet.gateways.visited - visitedBefore, gw1.length);
    for (const id of gw2) assert.equal(fleet.detail(id)?.row.state, 'online', id);

    // A device back on gw-1 is in its index again; gw-2 going takes its own (and `moved`).
    fleet.apply(presence('a-0', 'online', 5_000, 'gw-1'));
    fleet.apply(gatewayGone('gw-2', 6_000));
    assert.equal(fleet.detail('a-0')?.row.state, 'online');
    assert.equal(fleet.detail('moved')?.row.state, 'offline');
    assert.ok(gw2.every((id) => fleet.detail(id)?.row.state === 'offline'));
    assert.equal(fleet.gateways.visited - visitedBefore, gw1.length + gw2.length + 1);
    assert.equal(fleet.gateways.size, 1, 'only gw-1 holds a device');
  });
});

/** A response the live hub writes its server-sent events to, read back as events. */
class FakeResponse extends EventEmitter {
  readonly chunks: string[] = [];
  destroyed = false;
  writableEnded = false;
  writableLength = 0;
  writeHead(): this {
    return this;
  }
  write(chunk: string): boolean {
    this.chunks.push(chunk);
    return true;
  }
  end(): void {
    this.writableEnded = true;
  }
  destroy(): void {
    this.destroyed = true;
  }
  /** The events of that name, whatever pieces they were written in. */
  events(name: string): any[] {
    return this.chunks
      .join('')
      .split('\n\n')
      .filter((c) => c.startsWith(`event: ${name}\n`))
      .map((c) => JSON.parse(c.slice(c.indexOf('data: ') + 'data: '.length)));
  }
  /** The snapshot as the page puts it together: one `snapshot` event, or a fleet in several parts. */
  snapshot(): any {
    const [whole] = this.events('snapshot');
    if (whole) return whole;
    const [end] = this.events('snapshot-end');
    return { ...end, devices: [...this.events('snapshot-part').flatMap((p) => p.devices), ...end.devices] };
  }
}

describe("the console's live security updates", () => {
  after(() => mock.timers.reset());

  it('send only the counts that changed since the last look, and the page merges them', async () => {
    mock.timers.enable({ apis: ['setInterval'] });
    const devices = ids('dev', 5000);
    const fleet = fleetOf(devices);
    for (const [i, id] of devices.entries()) fleet.apply(finding(id, i + 1));
    const view: PipelineView = { at: 0, services: [], brokers: [], bridgeConnected: null, readingsPerSecond: null, writeFailures: null, deadLetters: null, feedDropped: null, feedRefused: null, feedConnected: null, feedDownSince: null };
    const hub = new LiveHub({ fleet, pipeline: () => view, deviceDetail: async () => undefined, sessionAlive: () => true }, createLogger('test', 'silent'));
    const res = new FakeResponse();
    try {
      await hub.open(res as unknown as ServerResponse, { sessionId: 's', user: 'viewer-user', expiresAt: Date.now() + 60_000 }, undefined);
      const snapshot = res.snapshot();
      assert.equal(snapshot.devices.length, devices.length, 'the snapshot: every device');
      assert.equal(Object.keys(snapshot.security.byDevice).length, devices.length, 'the snapshot: the whole picture');

      fleet.apply(finding('dev-7', 10_000));
      fleet.apply(report('dev-9', 10_001, 40));
      mock.timers.tick(CONSOLE.liveFlushMs);
      const [update] = res.events('security');
      assert.ok(update, 'an update was sent');
      assert.deepEqual(update.byDevice, { 'dev-7': 2, 'dev-9': 41 }, 'only the devices whose counts changed');
      assert.deepEqual(update.byReason, { SECURITY_BAD_SIGNATURE: devices.length + 1, GATEWAY_RATE_LIMITED: 40 });
      assert.deepEqual(
        update.events.map((e: SecurityEvent) => [e.device, e.source ?? 'distributor']),
        [
          ['dev-9', 'gateway'],
          ['dev-7', 'distributor'],
        ],
      );
      assert.ok(JSON.stringify(update).length < 1000, 'a few hundred bytes, whatever the fleet');
      mock.timers.tick(CONSOLE.liveFlushMs);
      assert.equal(res.events('security').length, 1, 'nothing new: nothing sent');

      // The page's store (public/store.js) sets them over the snapshot's counts.
      (globalThis as { requestAnimationFrame?: unknown }).requestAnimationFrame = () => 1;
      const { Store } = await import(new URL('../../internal-network/console/public/store.js', import.meta.url).href);
      const store = new Store();
      store.apply('snapshot', snapshot);
      store.apply('security', update);
      assert.equal(store.security.byDevice['dev-7'], 2);
      assert.equal(store.security.byDevice['dev-9'], 41);
      assert.equal(store.security.byDevice['dev-8'], 1, 'the others as the snapshot had them');
      assert.equal(Object.keys(store.security.byDevice).length, devices.length);
      assert.equal(store.security.byReason.SECURITY_BAD_SIGNATURE, devices.length + 1);
      assert.equal(store.security.recent[0].device, 'dev-7', "the distributor's finding in its list");
      assert.equal(store.security.reported[0].device, 'dev-9', "the gateway's report in its own");
    } finally {
      hub.close();
      mock.timers.reset();
      delete (globalThis as { requestAnimationFrame?: unknown }).requestAnimationFrame;
    }
  });

  it('name the devices with most events, largest first, and rank them all for the page that reads the rest a page at a time', () => {
    const counts = new ChangeCounts();
    const n = 5000;
    for (let i = 0; i < n; i++) counts.add(`d${i}`, 1 + ((i * 7919) % 1000));
    counts.add('__proto__', 999);
    const all = Object.entries(counts.all()).sort(([ka, a], [kb, b]) => b - a || (ka < kb ? -1 : 1));
    assert.deepEqual(counts.top(CONSOLE.liveSecurityTopDevices), all.slice(0, CONSOLE.liveSecurityTopDevices));
    assert.deepEqual(counts.ranked(), all);
    assert.equal(counts.ranked(), counts.ranked(), 'worked out again only when a count changed');
    counts.add('d1', 5000);
    assert.deepEqual(counts.ranked(Date.now() + CONSOLE.securityDevicesRankEveryMs)[0], ['d1', counts.get('d1')]);
    assert.deepEqual(counts.top(0), []);
  });

  it('rank every count again at most once a CONSOLE.securityDevicesRankEveryMs, however often one changes and the page is asked for', () => {
    // Under an attack a count changes with every event: ranked again at every request, each of
    // 110,000 counts was some 50 ms of the console's one thread per GET /api/security/devices.
    const counts = new ChangeCounts();
    for (let i = 0; i < 100; i++) counts.add(`d${i}`, 1 + i);
    const t0 = 1_000_000;
    const first = counts.ranked(t0);
    counts.add('d0', 1000);
    assert.equal(counts.ranked(t0 + CONSOLE.securityDevicesRankEveryMs - 1), first, 'a ranking as old as the bound at most is kept');
    const next = counts.ranked(t0 + CONSOLE.securityDevicesRankEveryMs);
    assert.notEqual(next, first);
    assert.deepEqual(next[0], ['d0', 1001], 'ranked again once the bound has passed');
    assert.equal(counts.ranked(t0 + 10 * CONSOLE.securityDevicesRankEveryMs), next, 'and not again while no count changed');
  });

  it("list on the security page, at every \"Show more\", the devices the console ranks first, none left out", async () => {
    const { listedDevices } = (await import(new URL('../../internal-network/console/public/pages/security-devices.js', import.meta.url).href)) as {
      listedDevices: (byDevice: Record<string, number>, read: Array<[string, number]>, top: number) => Array<[string, number]>;
    };
    const TOP = 50;
    const MORE = 100;
    // The page as security.js runs it: the store's counts (the snapshot's devices with most events,
    // then every count that changed), and the pages it read from GET /api/security/devices.
    const page = (counts: ChangeCounts) => {
      const byDevice: Record<string, number> = Object.fromEntries(counts.top(CONSOLE.liveSecurityTopDevices));
      const read: Array<[string, number]> = [];
      let t = 0;
      const ranked = () => counts.ranked((t += CONSOLE.securityDevicesRankEveryMs));
      return {
        byDevice,
        rows: () => listedDevices(byDevice, read, TOP),
        // Read after the last device listed (its keyset cursor, as GET /api/security/devices?after= reads it).
        showMore() {
          const have = new Set(read.map(([d]) => d));
          const last = this.rows().at(-1);
          for (const [d, n] of counts.rankedAfter(last, MORE, (t += CONSOLE.securityDevicesRankEveryMs)).page) if (!have.has(d)) read.push([d, n]);
        },
        ranked,
      };
    };
    const same = (p: ReturnType<typeof page>, what: string) => {
      const rows = p.rows();
      assert.deepEqual(rows, p.ranked().slice(0, rows.length), what);
    };

    // Equal counts, the console ranking them by id in code-unit order ('B…' before 'a…').
    const ties = new ChangeCounts();
    for (let i = 0; i < 30; i++) ties.add(`a${i}`, 1);
    for (let i = 0; i < 30; i++) ties.add(`B${i}`, 1);
    const p1 = page(ties);
    same(p1, 'the devices with most, as the console ranks them');
    p1.showMore();
    assert.equal(p1.rows().length, 60, 'every device listed after one "Show more"');
    same(p1, 'in the console\'s order');

    // A device read past the first ones moves up among them: the one it passes stays listed.
    const moves = new ChangeCounts();
    for (let i = 0; i < 300; i++) moves.add(`d${String(i).padStart(3, '0')}`, 1000 - i);
    const p2 = page(moves);
    p2.showMore();
    same(p2, 'the first 150');
    moves.add('d100', 1000);
    p2.byDevice.d100 = moves.get('d100')!;
    same(p2, 'd100 among the first, d049 still listed after them');
    p2.showMore();
    same(p2, 'the next ones read after those listed');
    assert.equal(p2.rows().length, 250);
  });

  it('tell a stream every count changed however far behind it is, and keep their log bounded', () => {
    const counts = new ChangeCounts();
    counts.add('a', 1);
    const seen = counts.seq;
    for (let i = 0; i < 50_000; i++) counts.add(`k${i % 100}`, 1);
    assert.ok(counts.logLength <= Math.max(CONSOLE.securityCountLogMin, 2 * counts.size) + 1, `log of ${counts.logLength}`);
    const changed = counts.changedSince(seen);
    assert.equal(Object.keys(changed).length, 100);
    assert.equal(changed.k0, 500);
    assert.equal(changed.a, undefined, 'unchanged since');
    assert.deepEqual(counts.changedSince(counts.seq), {});
    assert.equal(counts.changedSince(0).a, 1);
    // Names of Object's own properties are counts like any other.
    counts.add('__proto__', 2);
    counts.add('constructor', 3);
    assert.deepEqual(Object.entries(counts.changedSince(counts.seq - 2)), [
      ['__proto__', 2],
      ['constructor', 3],
    ]);
  });
});

describe("the pipeline page's count of refused feed messages", () => {
  it("shows the console's own count of stored-feed messages it refused (forged, replayed, stale), unknown without one", async () => {
    let refused = 0;
    const poller = new PipelinePoller([], createLogger('test', 'silent'), () => ({ feedRefused: refused }));
    assert.equal((await poller.poll()).feedRefused, 0);
    refused = 3;
    assert.equal((await poller.poll()).feedRefused, 3);
    assert.equal((await new PipelinePoller([], createLogger('test', 'silent')).poll()).feedRefused, null);
  });
});

describe("the pipeline page's looks", () => {
  it('are one at a time: a look still waiting for a slow service is not joined by the next', async () => {
    // A look asks /readyz then /metrics, each allowed CONSOLE.pipelineRequestTimeoutMs: past
    // CONSOLE.pipelinePollMs in all, the next look began beside it, and a service slow to answer
    // was asked ever more at once, the older look's view written over the newer one's.
    const consoleTable = CONSOLE as unknown as Record<string, number>;
    const saved = consoleTable.pipelinePollMs as number;
    consoleTable.pipelinePollMs = 100;
    let open = 0;
    let most = 0;
    const slow = createServer((req, res) => {
      open++;
      most = Math.max(most, open);
      setTimeout(() => {
        open--;
        res.writeHead(req.url === '/readyz' ? 200 : 404, { 'content-type': 'application/json' }).end('{"status":"ready"}');
      }, 300);
    });
    await new Promise<void>((r) => slow.listen(0, '127.0.0.1', r));
    const poller = new PipelinePoller([{ name: 'slow', url: `http://127.0.0.1:${(slow.address() as AddressInfo).port}` }], createLogger('test', 'silent'));
    try {
      poller.start();
      await new Promise((r) => setTimeout(r, 1_500));
      await poller.stop();
      assert.equal(most, 1, `${most} requests at once`);
      assert.equal(poller.current().services[0]?.ready, true);
    } finally {
      consoleTable.pipelinePollMs = saved;
      slow.closeAllConnections();
      await new Promise((r) => slow.close(r));
    }
  });
});

describe("the pipeline page's readings per second", () => {
  /** A distributor's own metrics server (its counters, its /readyz), on a port of its own, which may be stopped and started again. */
  const distributor = async (log = createLogger('test', 'silent')) => {
    const metrics = new DistributorMetrics();
    let server = await startMetricsServer({ metrics: metrics.metrics, host: '127.0.0.1', port: 0, setting: 'CONSOLE_METRICS_PORT', log });
    const port = server.port;
    return {
      metrics,
      url: `http://127.0.0.1:${port}`,
      stop: () => server.close(),
      start: async () => void (server = await startMetricsServer({ metrics: metrics.metrics, host: '127.0.0.1', port, setting: 'CONSOLE_METRICS_PORT', log })),
      close: () => server.close(),
    };
  };

  it('is the sum of each distributor\'s own rate: one that did not answer a look, or restarted, makes no spike and hides no other', async () => {
    const a = await distributor();
    const b = await distributor();
    try {
      const poller = new PipelinePoller(
        [
          { name: 'distributor-a', url: a.url },
          { name: 'distributor-b', url: b.url },
        ],
        createLogger('test', 'silent'),
      );
      a.metrics.messages('timeseries', 100);
      b.metrics.messages('timeseries', 1_000_000);
      await b.stop();
      const first = await poller.poll();
      assert.equal(first.readingsPerSecond, null, 'no rate from a single look');
      await b.start();
      // a wrote 10 more; b, back (a look it missed: a network hiccup, a slow answer), wrote none since.
      a.metrics.messages('timeseries', 10);
      const second = await poller.poll();
      const rate = (n: number, from: PipelineView, to: PipelineView) => (n * 1000) / (to.at - from.at);
      assert.ok(second.readingsPerSecond !== null && Math.abs(second.readingsPerSecond - rate(10, first, second)) < 1e-6, `10 readings in ${second.at - first.at} ms, not b's whole count: ${second.readingsPerSecond}`);
      // a restarts (its counter starts again at 0, then 5) while b writes 1,000: b's 1,000 are counted, whatever a's counter did.
      await a.stop();
      a.metrics.metrics.registry.resetMetrics();
      a.metrics.messages('timeseries', 5);
      await a.start();
      b.metrics.messages('timeseries', 1000);
      const third = await poller.poll();
      assert.ok(third.readingsPerSecond !== null && Math.abs(third.readingsPerSecond - rate(1000, second, third)) < 1e-6, `b's 1,000 in ${third.at - second.at} ms: ${third.readingsPerSecond}`);
    } finally {
      await a.close();
      await b.close();
    }
  });
});
