import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { loadConsoleConfig } from '../../internal-network/console/config.ts';
import { Fleet } from '../../internal-network/console/fleet/fleet.ts';
import { loadLastPresences } from '../../internal-network/console/fleet/last-presences.ts';
import { LocalHistory } from '../../internal-network/console/history/local.ts';
import type { LastPresences } from '../../internal-network/console/history/presences.ts';
import { Ring } from '../../internal-network/console/fleet/ring.ts';
import { DeviceListing } from '../../internal-network/console/fleet/listing.ts';
import { SortedIds } from '../../internal-network/console/fleet/sorted-ids.ts';
import fc from 'fast-check';
import { DEVICE_STATES, type DeviceState, type StateChange } from '../../internal-network/console/fleet/types.ts';
import { bucketMs, downsample } from '../../internal-network/console/history/history.ts';
import { quoteIdent, quoteString } from '../../internal-network/console/history/influxql.ts';
import { BoundedSessionStore } from '../../internal-network/console/web/session-store.ts';
import type { StoredPoint } from '../../internal-network/distributor/points.ts';
import { isFieldStreamError } from '../../shared/errors.ts';
import { CONSOLE } from '../../shared/limits.ts';
import { parseExposition, sumOf } from '../../shared/metrics/exposition.ts';
import { createLogger } from '../../shared/logger.ts';
import { tempDir } from '../helpers/pki.ts';

/**
 * A fleet on a clock the test moves, recording every state change it reports, with `registered`
 * in its registry (only registered devices, or those seen in verified data, get rows).
 */
function fleetAt(start = 1_000_000, registered: readonly string[] = ['pump-1', 'pump-2']) {
  let now = start;
  const changes: StateChange[] = [];
  const fleet = new Fleet({ staleAfterMs: 180_000, now: () => now, onStateChange: (c) => changes.push(c) });
  for (const id of registered) fleet.register(id);
  return { fleet, changes, advance: (ms: number) => (now += ms), now: () => now };
}

const status = (device: string, state: 'online' | 'offline', time: number, extra: Record<string, number> = {}): StoredPoint => ({
  measurement: 'device_status',
  tags: { device, gateway: 'gw-1' },
  fields: { state, ...extra },
  time,
});
const reading = (device: string, time: number, fields: StoredPoint['fields']): StoredPoint => ({ measurement: 'readings', tags: { device }, fields, time });

describe('the console fleet: online, stale, offline', () => {
  it('a registered device is unknown until heard of; presence makes it online, then offline', () => {
    const { fleet, changes } = fleetAt();
    fleet.register('pump-1');
    assert.equal(fleet.detail('pump-1')?.row.state, 'unknown');
    fleet.apply(status('pump-1', 'online', 1_000, { cert_days_left: 40 }));
    const row = fleet.detail('pump-1')?.row;
    assert.equal(row?.state, 'online');
    assert.equal(row?.certDaysLeft, 40);
    assert.equal(row?.gateway, 'gw-1');
    fleet.apply(status('pump-1', 'offline', 2_000));
    assert.equal(fleet.detail('pump-1')?.row.state, 'offline');
    assert.deepEqual(
      changes.map((c) => [c.state, c.previous]),
      [
        ['online', 'unknown'],
        ['offline', 'online'],
      ],
    );
  });

  it('an older presence arriving after a newer one changes nothing (consumers write in parallel)', () => {
    const { fleet } = fleetAt();
    fleet.apply(status('pump-1', 'offline', 5_000));
    fleet.apply(status('pump-1', 'online', 4_000));
    assert.equal(fleet.detail('pump-1')?.row.state, 'offline');
  });

  it('a connected device silent for longer than staleAfterMs is stale; data makes it online again', () => {
    const { fleet, changes, advance } = fleetAt();
    fleet.apply(status('pump-1', 'online', 1_000));
    advance(179_000);
    fleet.sweep();
    assert.equal(fleet.detail('pump-1')?.row.state, 'online');
    advance(2_000);
    fleet.sweep();
    assert.equal(fleet.detail('pump-1')?.row.state, 'stale');
    fleet.apply(reading('pump-1', 5_000, { flow: 3.5, note: 'ok' }));
    const d = fleet.detail('pump-1');
    assert.equal(d?.row.state, 'online');
    assert.deepEqual(d?.row.lastReading, { time: 5_000, fields: { flow: 3.5, note: 'ok' } });
    assert.deepEqual(d?.numericFields, ['flow']);
    assert.deepEqual(
      changes.map((c) => c.state),
      ['online', 'stale', 'online'],
    );
  });

  it('an offline device stays offline when late data arrives (a backlog drained after it left)', () => {
    const { fleet } = fleetAt();
    fleet.apply(status('pump-1', 'online', 1_000));
    fleet.apply(status('pump-1', 'offline', 2_000));
    fleet.apply(reading('pump-1', 1_500, { flow: 1 }));
    assert.equal(fleet.detail('pump-1')?.row.state, 'offline');
    assert.equal(fleet.detail('pump-1')?.row.lastReading?.time, 1_500);
  });

  it('a gateway gone takes its devices offline, not those on another gateway; their next presence counts', () => {
    const { fleet, changes } = fleetAt();
    fleet.apply(status('pump-1', 'online', 1_000));
    fleet.apply({ ...status('pump-2', 'online', 1_000), tags: { device: 'pump-2', gateway: 'gw-2' } });
    fleet.apply({ measurement: 'gateway_status', tags: { gateway: 'gw-1' }, fields: { state: 'offline', since: 500 }, time: 2_000 });
    assert.equal(fleet.detail('pump-1')?.row.state, 'offline');
    assert.equal(fleet.detail('pump-2')?.row.state, 'online');
    assert.equal(changes.at(-1)?.time, 2_000);
    fleet.apply(status('pump-1', 'online', 1_500));
    assert.equal(fleet.detail('pump-1')?.row.state, 'offline', 'a presence older than the gateway going changes nothing');
    fleet.apply(status('pump-1', 'online', 3_000));
    assert.equal(fleet.detail('pump-1')?.row.state, 'online', 'reconnected');
    fleet.apply({ measurement: 'gateway_status', tags: { gateway: 'gw-1' }, fields: { state: 'online', since: 2_500 }, time: 2_600 });
    assert.equal(fleet.detail('pump-1')?.row.state, 'online');
  });

  it("a device that moved to another DMZ server stays online: the old server's late offline, its stale online and its restart change nothing", () => {
    const { fleet } = fleetAt();
    const on = (gateway: string, state: 'online' | 'offline', time: number) => ({ ...status('pump-1', state, time), tags: { device: 'pump-1', gateway } });
    fleet.apply(on('gw-1', 'online', 1_000));
    fleet.apply(on('dmz2-gw-1', 'online', 2_000)); // moved: server 1 died
    fleet.apply(on('gw-1', 'offline', 2_500)); // server 1's gateway noticed the lost socket late
    assert.equal(fleet.detail('pump-1')?.row.state, 'online');
    assert.equal(fleet.detail('pump-1')?.row.gateway, 'dmz2-gw-1');
    fleet.apply(on('gw-1', 'online', 1_000)); // server 1's broker came back with its retained status
    fleet.apply({ measurement: 'gateway_status', tags: { gateway: 'gw-1' }, fields: { state: 'online', since: 3_000 }, time: 3_100 });
    fleet.apply({ measurement: 'gateway_status', tags: { gateway: 'gw-1' }, fields: { state: 'offline', since: 3_000 }, time: 3_200 });
    assert.equal(fleet.detail('pump-1')?.row.state, 'online');
    assert.equal(fleet.detail('pump-1')?.row.gateway, 'dmz2-gw-1');
    fleet.apply(on('dmz2-gw-1', 'offline', 4_000)); // the gateway holding it lost it: offline
    assert.equal(fleet.detail('pump-1')?.row.state, 'offline');
  });

  it('a compromised DMZ cannot lock a device offline, forge counts with built-in names, or give it endless fields', () => {
    const { fleet } = fleetAt();
    fleet.apply(status('pump-1', 'online', 1_000));
    // A gateway "started" in 2200: as if it started when its presence arrived, no later.
    fleet.apply({ measurement: 'gateway_status', tags: { gateway: 'gw-1' }, fields: { state: 'online', since: 7_258_118_400_000 }, time: 2_000 });
    assert.equal(fleet.detail('pump-1')?.row.state, 'offline');
    fleet.apply(status('pump-1', 'online', 3_000)); // the device connects again
    assert.equal(fleet.detail('pump-1')?.row.state, 'online', 'its genuine presence after counts');
    // Device ids that are names of Object's own properties count from 0.
    for (const id of ['constructor', 'toString']) fleet.register(id);
    for (const id of ['constructor', 'toString']) fleet.apply({ measurement: 'security_events', tags: { device: id, reason: 'SECURITY_UNSIGNED' }, fields: { detail: 'x' }, time: 3_000 });
    assert.deepEqual({ ...fleet.securitySummary().byDevice }, { constructor: 1, toString: 1 });
    // Numeric fields: as many as a reading may hold.
    for (let i = 0; i < 3; i++) fleet.apply(reading('pump-1', 4_000 + i, Object.fromEntries(Array.from({ length: 200 }, (_, k) => [`f${i}_${k}`, k]))));
    assert.equal(fleet.detail('pump-1')?.numericFields.length, 256);
  });

  it('a gateway that restarted holds none of its devices from before its start', () => {
    const { fleet } = fleetAt();
    fleet.apply(status('pump-1', 'online', 1_000));
    fleet.apply({ measurement: 'gateway_status', tags: { gateway: 'gw-1' }, fields: { state: 'online', since: 2_000 }, time: 2_100 });
    assert.equal(fleet.detail('pump-1')?.row.state, 'offline', 'killed with its broker: no will was sent');
    fleet.apply(status('pump-1', 'online', 2_200));
    assert.equal(fleet.detail('pump-1')?.row.state, 'online');
  });

  it("a device's presence that came before the console knew it is applied once it does: registered at the next look, or first heard of in verified data", () => {
    // Registered a moment before it connected: its gateway's presence (published once, retained)
    // reached the console before the console's next look at the registry.
    const { fleet, changes, advance } = fleetAt(1_000_000, []);
    fleet.apply(status('new-1', 'online', 1_000, { cert_days_left: 30 }));
    assert.equal(fleet.detail('new-1'), undefined, 'a presence alone makes no row');
    assert.equal(fleet.unregistered, 1, 'counted as ever');
    advance(4_000);
    fleet.register('new-1');
    const row = fleet.detail('new-1')?.row;
    assert.deepEqual([row?.state, row?.since, row?.gateway, row?.certDaysLeft], ['online', 1_000, 'gw-1', 30]);
    assert.equal(row?.lastSeen, 1_000_000, 'heard of when the presence came, not when the row was made');
    assert.deepEqual(changes.at(-1), { device: 'new-1', state: 'online', previous: 'unknown', time: 1_000 });

    // Its data first (a row of a device known from verified data): the row has the gateway too.
    fleet.apply(status('new-2', 'online', 2_000));
    fleet.apply(reading('new-2', 2_500, { flow: 1 }));
    assert.deepEqual([fleet.detail('new-2')?.row.state, fleet.detail('new-2')?.row.gateway], ['online', 'gw-1']);
    fleet.register('new-2');
    assert.equal(fleet.detail('new-2')?.row.gateway, 'gw-1');

    // Only its newest presence counts, as for a device with a row; it is applied once.
    fleet.apply(status('new-3', 'online', 1_000));
    fleet.apply(status('new-3', 'offline', 3_000));
    fleet.apply(status('new-3', 'online', 2_000)); // late, older
    fleet.register('new-3');
    assert.deepEqual([fleet.detail('new-3')?.row.state, fleet.detail('new-3')?.row.since], ['offline', 3_000]);
    assert.equal(fleet.pending.size, 0, 'nothing kept once applied');

    // Its gateway gone (or restarted) since: that presence says nothing any more.
    fleet.apply(status('new-4', 'online', 1_000));
    fleet.apply({ ...status('new-5', 'online', 1_000), tags: { device: 'new-5', gateway: 'gw-2' } });
    fleet.apply({ measurement: 'gateway_status', tags: { gateway: 'gw-1' }, fields: { state: 'offline', since: 500 }, time: 5_000 });
    fleet.register('new-4');
    assert.deepEqual([fleet.detail('new-4')?.row.state, fleet.detail('new-4')?.row.gateway], ['unknown', null]);
    fleet.register('new-5');
    assert.deepEqual([fleet.detail('new-5')?.row.state, fleet.detail('new-5')?.row.gateway], ['online', 'gw-2'], 'one through another gateway stays');

    // Kept for CONSOLE.pendingPresenceMaxAgeMs at most.
    fleet.apply(status('new-6', 'online', 6_000));
    advance(CONSOLE.pendingPresenceMaxAgeMs + 1);
    fleet.sweep();
    assert.equal(fleet.pending.size, 0);
    fleet.register('new-6');
    assert.equal(fleet.detail('new-6')?.row.state, 'unknown');
  });

  it('health sets the backlog and certificate days; the newest reading stays the last one', () => {
    const { fleet } = fleetAt();
    fleet.apply({ measurement: 'device_health', tags: { device: 'pump-1' }, fields: { queue_messages: 12, cert_days_left: 20, version: '0.1.0' }, time: 3_000 });
    fleet.apply(reading('pump-1', 9_000, { flow: 2 }));
    fleet.apply(reading('pump-1', 8_000, { flow: 1 }));
    const d = fleet.detail('pump-1');
    assert.equal(d?.row.backlog, 12);
    assert.equal(d?.row.certDaysLeft, 20);
    assert.equal(d?.row.lastReading?.fields.flow, 2);
    assert.equal(d?.health?.fields.version, '0.1.0');
  });

  it(`a device clock that jumped ahead once: its reading and health are replaced by the next, correct ones; a lead within CONSOLE.deviceClockMaxLeadMs still orders`, async () => {
    const { fleet, advance, now } = fleetAt(Date.UTC(2026, 0, 5));
    const health = (time: number, queue: number): StoredPoint => ({ measurement: 'device_health', tags: { device: 'pump-1' }, fields: { queue_messages: queue }, time });
    const shown = () => ({ flow: fleet.detail('pump-1')?.row.lastReading?.fields.flow, backlog: fleet.detail('pump-1')?.row.backlog });
    // One reading and one health message dated 2100 (a clock glitch; the contract allows up to
    // 8.64e15): the device's latest word, shown as such.
    fleet.apply(reading('pump-1', Date.UTC(2100, 0, 1), { flow: 999 }));
    fleet.apply(health(Date.UTC(2100, 0, 1), 5000));
    assert.deepEqual(shown(), { flow: 999, backlog: 5000 });
    // The clock is right again: the next messages replace them, and a day of them keeps doing so.
    for (let m = 1; m <= 1440; m++) {
      advance(60_000);
      fleet.apply(reading('pump-1', now(), { flow: 11 }));
      fleet.apply(health(now(), 0));
      if (m === 1) assert.deepEqual(shown(), { flow: 11, backlog: 0 }, 'replaced by the first correct message');
    }
    assert.deepEqual(shown(), { flow: 11, backlog: 0 });
    // A clock a little ahead, within the lead, still orders: a late, older message does not hide it.
    const ahead = now() + CONSOLE.deviceClockMaxLeadMs - 1_000;
    fleet.apply(reading('pump-1', ahead, { flow: 12 }));
    fleet.apply(health(ahead, 1));
    fleet.apply(reading('pump-1', now() - 60_000, { flow: 10 }));
    fleet.apply(health(now() - 60_000, 7));
    assert.deepEqual(shown(), { flow: 12, backlog: 1 });
    // The device page's charts hold a reading to the same lead (test/e2e/console-browser.test.ts).
    const { CLOCK_MAX_LEAD_MS } = await import(new URL('../../internal-network/console/public/charts.js', import.meta.url).href);
    assert.equal(CLOCK_MAX_LEAD_MS, CONSOLE.deviceClockMaxLeadMs);
  });

  it('a security event is counted per reason and device, and is no sign of life', () => {
    const { fleet } = fleetAt();
    fleet.register('pump-1');
    fleet.apply({ measurement: 'security_events', tags: { device: 'pump-1', reason: 'SECURITY_BAD_SIGNATURE' }, fields: { message_id: 'm1' }, time: 1_000 });
    fleet.apply({ measurement: 'security_events', tags: { device: 'pump-1', reason: 'SECURITY_REPLAY' }, fields: { message_id: 'm2' }, time: 1_001 });
    const s = fleet.securitySummary();
    assert.deepEqual(s.byReason, { SECURITY_BAD_SIGNATURE: 1, SECURITY_REPLAY: 1 });
    assert.deepEqual(s.byDevice, { 'pump-1': 2 });
    assert.equal(s.recent[0]?.reason, 'SECURITY_REPLAY', 'newest first');
    assert.equal(fleet.detail('pump-1')?.row.state, 'unknown');
    assert.equal(fleet.detail('pump-1')?.row.lastSeen, null);
  });

  it("counts a gateway's report by its count, marked as the gateway's", () => {
    const { fleet } = fleetAt();
    fleet.apply({ measurement: 'security_events', tags: { device: 'pump-1', reason: 'GATEWAY_RATE_LIMITED', source: 'gateway' }, fields: { count: 40, gateway: 'gw-1' }, time: 1_000 });
    const s = fleet.securitySummary();
    assert.equal(s.byReason.GATEWAY_RATE_LIMITED, 40);
    assert.equal(s.byDevice['pump-1'], 40);
    assert.deepEqual(s.reported[0], { time: 1_000, device: 'pump-1', reason: 'GATEWAY_RATE_LIMITED', count: 40, source: 'gateway' });
    assert.deepEqual(s.recent, [], "the distributor's own findings are kept apart");
  });

  it('the revoked list flags and unflags devices as it changes', () => {
    const { fleet } = fleetAt();
    fleet.register('pump-1');
    fleet.setRevoked(new Set(['pump-1', 'pump-2']));
    assert.equal(fleet.detail('pump-1')?.row.revoked, true);
    assert.equal(fleet.detail('pump-2')?.row.revoked, true);
    fleet.setRevoked(new Set(['pump-2']));
    assert.equal(fleet.detail('pump-1')?.row.revoked, false);
  });

  it('changedSince gives only the rows changed after a version', () => {
    const { fleet } = fleetAt();
    fleet.register('a');
    fleet.register('b');
    const v = fleet.currentVersion;
    assert.deepEqual(fleet.changedSince(v).rows, []);
    fleet.apply(reading('b', 1, { x: 1 }));
    const changed = fleet.changedSince(v);
    assert.deepEqual(
      changed.rows.map((r) => r.id),
      ['b'],
    );
    assert.deepEqual(fleet.changedSince(changed.version).rows, []);
  });

  it('changedSince looks only at what changed, not at every device, and keeps its log bounded', () => {
    // A live stream asks every second: 200 streams over 100,000 devices scanning them all was 20
    // million checks a second (web/live.ts).
    const ids = Array.from({ length: 20_000 }, (_, i) => `d${i}`);
    const { fleet } = fleetAt(1_000_000, ids);
    const devices = (fleet as unknown as { entries: { devices: Map<string, unknown> } }).entries.devices;
    let scans = 0;
    const values = devices.values.bind(devices);
    devices.values = () => {
      scans++;
      return values();
    };
    const behind = fleet.currentVersion;
    for (let i = 0; i < 60_000; i++) fleet.apply(reading(`d${i % 3}`, i, { x: i }));
    fleet.apply(reading('d19999', 1, { x: 1 }));
    const v = fleet.currentVersion;
    for (let i = 0; i < 200; i++) assert.deepEqual(fleet.changedSince(v).rows, []);
    fleet.apply(reading('d7', 2, { x: 2 }));
    const changed = fleet.changedSince(v);
    assert.deepEqual(
      changed.rows.map((r) => r.id),
      ['d7'],
    );
    assert.equal(changed.version, fleet.currentVersion);
    assert.equal(fleet.versionOf('d7'), fleet.currentVersion);
    // A stream far behind still gets every row changed since, once each.
    assert.deepEqual(fleet.changedSince(behind).rows.map((r) => r.id).sort(), ['d0', 'd1', 'd19999', 'd2', 'd7']);
    assert.equal(fleet.changedSince(0).rows.length, ids.length);
    assert.equal(scans, 0, 'the devices were scanned');
    const log = (fleet as unknown as { entries: { log: { length: number } } }).entries.log;
    assert.ok(log.length <= Math.max(CONSOLE.securityCountLogMin, 2 * fleet.size) + 1, `log of ${log.length}`);
  });

  it('a sweep looks at the devices that go stale, not at every device', () => {
    // A sweep every CONSOLE.staleSweepMs looked at each of 100,000 devices for the few gone silent.
    const S = 180_000;
    const ids = Array.from({ length: 20_000 }, (_, i) => `d${i}`);
    const { fleet, changes, advance, now } = fleetAt(1_000_000, ids);
    // The entries a sweep reads (their row or heardAt): the figure that must follow the devices
    // going stale, not the fleet.
    let sweeping = false;
    const looked = new Set<unknown>();
    const devices = (fleet as unknown as { entries: { devices: Map<string, { row: unknown; heardAt: number }> } }).entries.devices;
    for (const e of devices.values()) {
      let { row, heardAt } = e;
      const look = () => sweeping && looked.add(e);
      Object.defineProperty(e, 'row', { get: () => (look(), row), set: (v) => (row = v) });
      Object.defineProperty(e, 'heardAt', { get: () => (look(), heardAt), set: (v: number) => (heardAt = v) });
    }
    // Who is heard until when, and how: by data (even) or by its presence only (odd).
    const silentAt = new Map<string, number>();
    for (let i = 0; i < 10; i++) silentAt.set(`d${i}`, 0); // never heard again
    for (let i = 10; i < 20; i++) silentAt.set(`d${i}`, 100_000);
    for (let i = 200; i < 210; i++) silentAt.set(`d${i}`, 150_000); // heard every 5 s until then
    const often = (i: number) => i >= 100 && i < 210;
    const offlineAt50s = (i: number) => i >= 20 && i < 30;
    fleet.setRevoked(new Set(['d5', 'd15', 'd40'])); // revoked: goes stale as any other
    const start = now();
    const lastHeard = new Map<string, number>();
    const hear = (i: number) => {
      const id = `d${i}`;
      if (i % 2 === 0) fleet.apply(reading(id, now(), { x: i }));
      else fleet.apply(status(id, 'online', now()));
      lastHeard.set(id, now());
    };
    ids.forEach((_, i) => hear(i));
    let total = 0;
    for (let t = 5_000; t <= 400_000; t += 5_000) {
      advance(5_000);
      ids.forEach((id, i) => {
        if (t > (silentAt.get(id) ?? Infinity)) return;
        if (offlineAt50s(i)) {
          if (t === 50_000) fleet.apply(status(id, 'offline', now()));
          return;
        }
        if (often(i) || t % 30_000 === 0) hear(i);
      });
      looked.clear();
      sweeping = true;
      fleet.sweep();
      sweeping = false;
      total += looked.size;
    }
    const stale = changes.filter((c) => c.state === 'stale');
    assert.deepEqual(stale.map((c) => c.device).sort(), [...silentAt.keys()].sort());
    for (const c of stale) {
      const heard = lastHeard.get(c.device) as number;
      assert.ok(c.time - heard > S && c.time - 5_000 - heard <= S, `${c.device} stale at the first sweep past staleAfterMs (${c.time - start}, heard ${heard - start})`);
    }
    assert.ok(total <= 4 * stale.length, `${total} entries looked at by the sweeps for ${stale.length} devices going stale`);
    // The listing follows (the management API's filtered pages).
    assert.deepEqual(fleet.rowsPage(100, undefined, { state: 'stale' }).map((r) => r.id), [...silentAt.keys()].sort());
    assert.equal(fleet.rowsPage(100, undefined, { state: 'stale', revoked: true }).length, 2);
    assert.equal(fleet.rowsPage(100, undefined, { state: 'offline' }).length, 10);
    assert.equal(fleet.rowsPage(30_000, undefined, { state: 'online' }).length, ids.length - 30 - 10);
  });

  it('a sweep makes stale exactly the online devices silent for longer than staleAfterMs, whatever came before', () => {
    const S = 180_000;
    const id = fc.constantFrom('p0', 'p1', 'p2', 'p3', 'q0', 'q1');
    const op = fc.oneof(
      { arbitrary: fc.record({ advance: fc.integer({ min: -30_000, max: 90_000 }) }), weight: 3 }, // the clock may be set back
      { arbitrary: fc.record({ reading: id }), weight: 2 },
      { arbitrary: fc.record({ presence: id, online: fc.boolean(), gateway: fc.constantFrom('gw-1', 'gw-2'), back: fc.integer({ min: 0, max: 3 }) }), weight: 3 },
      { arbitrary: fc.record({ gatewayGone: fc.constantFrom('gw-1', 'gw-2') }), weight: 1 },
      { arbitrary: fc.record({ register: id }), weight: 1 },
      { arbitrary: fc.record({ revoke: fc.subarray(['p0', 'p1', 'q0']) }), weight: 1 },
      { arbitrary: fc.constant({ sweep: true }), weight: 3 },
    );
    fc.assert(
      fc.property(fc.array(op, { minLength: 20, maxLength: 100, size: 'max' }), (ops) => {
        // q0, q1 not registered: their presences are held until they are (applied late, heard then).
        const { fleet, changes, advance, now } = fleetAt(10_000_000, ['p0', 'p1', 'p2', 'p3']);
        const entries = (fleet as unknown as { entries: { devices: Map<string, { row: { state: DeviceState }; heardAt: number }> } }).entries.devices;
        let presenceTime = 1_000;
        // What a look at every row made stale, and nothing else: the sweep's changes, the listing.
        const sweep = () => {
          const going = [...entries].filter(([, e]) => e.row.state === 'online' && now() - e.heardAt > S).map(([d]) => d);
          const expected = new Map([...entries].map(([d, e]) => [d, going.includes(d) ? 'stale' : e.row.state]));
          const before = changes.length;
          fleet.sweep();
          assert.deepEqual(new Map([...entries].map(([d, e]) => [d, e.row.state])), expected);
          assert.deepEqual(
            changes.slice(before).sort((a, b) => (a.device < b.device ? -1 : 1)),
            going.sort().map((device) => ({ device, state: 'stale', previous: 'online', time: now() })),
          );
          for (const state of DEVICE_STATES) {
            const ids = [...expected].filter(([, s]) => s === state).map(([d]) => d);
            assert.deepEqual(fleet.rowsPage(10, undefined, { state }).map((r) => r.id), ids.sort());
          }
        };
        for (const o of ops) {
          if ('advance' in o) advance(o.advance);
          else if ('reading' in o) fleet.apply(reading(o.reading, now(), { x: 1 }));
          else if ('presence' in o) {
            presenceTime += 10;
            fleet.apply({ ...status(o.presence, o.online ? 'online' : 'offline', presenceTime - o.back * 10), tags: { device: o.presence, gateway: o.gateway } });
          } else if ('gatewayGone' in o) {
            presenceTime += 10;
            fleet.apply({ measurement: 'gateway_status', tags: { gateway: o.gatewayGone }, fields: { state: 'offline', since: presenceTime - 5 }, time: presenceTime });
          } else if ('register' in o) fleet.register(o.register);
          else if ('revoke' in o) fleet.setRevoked(new Set(o.revoke));
          else sweep();
        }
        sweep();
      }),
      { numRuns: 300 },
    );
  });

  it('keeps each ring bounded whatever arrives', () => {
    const { fleet } = fleetAt();
    for (let i = 0; i < CONSOLE.fleetRing + 500; i++) fleet.apply({ measurement: 'security_events', tags: { device: 'pump-1', reason: 'SECURITY_STALE' }, fields: {}, time: i });
    assert.equal(fleet.security.own.since(0).length, CONSOLE.fleetRing);
    assert.equal(fleet.detail('pump-1')?.security.length, CONSOLE.perDeviceRing);
  });
});

describe("the last presences read at the console's start", () => {
  const silent = createLogger('test', 'silent');
  const gatewayStatus = (gateway: string, state: 'online' | 'offline', time: number, since: number): StoredPoint => ({ measurement: 'gateway_status', tags: { gateway }, fields: { state, since }, time });

  it('are applied in time order, within the window, and what the feed brings meanwhile wins', async () => {
    const { fleet, now } = fleetAt(10 * 86_400_000, ['pump-1', 'pump-2', 'pump-3']);
    const t = now();
    let answer: (r: LastPresences) => void = () => undefined;
    let asked: number | undefined;
    let known: ReadonlySet<string> | undefined;
    const reader = {
      lastPresences: (from: number, ids: ReadonlySet<string>) => {
        asked = from;
        known = ids;
        return new Promise<LastPresences>((resolve) => (answer = resolve));
      },
    };
    const loading = loadLastPresences(fleet, reader, silent, t);
    assert.equal(asked, t - CONSOLE.lastPresenceWindowMs);
    assert.deepEqual([...(known ?? [])].sort(), ['pump-1', 'pump-2', 'pump-3'], "the devices with a row, whose presences the store reads first");
    // While the store is read: pump-1 goes offline (a newer presence than the one read).
    fleet.apply({ ...status('pump-1', 'offline', t - 1_000), tags: { device: 'pump-1', gateway: 'gw-2' } });
    answer({
      // out of order, as a store may give them: pump-2's gateway restarted after its presence
      gateways: [gatewayStatus('gw-1', 'online', t - 5_000, t - 6_000)],
      devices: [status('pump-2', 'online', t - 60_000), status('pump-1', 'online', t - 50_000), status('pump-3', 'online', t - 4_000)],
    });
    await loading;
    const row = (id: string) => fleet.detail(id)?.row;
    assert.deepEqual([row('pump-1')?.state, row('pump-1')?.gateway], ['offline', 'gw-2'], 'the live presence, newer, wins');
    assert.deepEqual([row('pump-2')?.state, row('pump-2')?.gateway], ['offline', 'gw-1'], 'its gateway restarted since');
    assert.deepEqual([row('pump-3')?.state, row('pump-3')?.gateway], ['online', 'gw-1'], 'connected after the restart');
  });

  it("a gateway gone while the store is read takes offline the devices read as connected through it before", async () => {
    const { fleet, now } = fleetAt(10 * 86_400_000, ['pump-1', 'pump-2']);
    const t = now();
    let answer: (r: LastPresences) => void = () => undefined;
    const loading = loadLastPresences(fleet, { lastPresences: () => new Promise<LastPresences>((resolve) => (answer = resolve)) }, silent, t);
    // While the store is read: gw-1 goes (its will), and gw-2 restarts.
    fleet.apply(gatewayStatus('gw-1', 'offline', t - 1_000, t - 9_000_000));
    fleet.apply(gatewayStatus('gw-2', 'online', t - 900, t - 2_000));
    // The store was read before either was written.
    answer({ gateways: [], devices: [status('pump-1', 'online', t - 50_000), { ...status('pump-2', 'online', t - 40_000), tags: { device: 'pump-2', gateway: 'gw-2' } }] });
    await loading;
    assert.equal(fleet.detail('pump-1')?.row.state, 'offline', 'its gateway went after its presence, as the feed had it');
    assert.equal(fleet.detail('pump-2')?.row.state, 'offline', 'its gateway restarted after its presence');
    // A presence newer than the gateway's end is not touched by it.
    fleet.apply({ ...status('pump-1', 'online', t - 500), tags: { device: 'pump-1', gateway: 'gw-1' } });
    assert.equal(fleet.detail('pump-1')?.row.state, 'online');
  });

  it(`keep at most ${CONSOLE.lastPresenceMaxUnregistered} ids not registered (as pending), and a store that cannot be read changes nothing`, async () => {
    const { fleet, now } = fleetAt(10 * 86_400_000, ['pump-1']);
    const devices = [status('pump-1', 'online', now() - 1_000)];
    for (let i = 0; i < CONSOLE.lastPresenceMaxUnregistered + 50; i++) devices.push(status(`other-${i}`, 'online', now() - 2_000));
    await loadLastPresences(fleet, { lastPresences: async () => ({ devices, gateways: [] }) }, silent, now());
    assert.equal(fleet.detail('pump-1')?.row.state, 'online');
    assert.equal(fleet.pending.size, CONSOLE.lastPresenceMaxUnregistered);
    assert.equal(fleet.size, 1);

    const lines: Array<Record<string, unknown>> = [];
    const down = fleetAt(10 * 86_400_000, ['pump-1']).fleet;
    const log = { warn: (o: Record<string, unknown>) => lines.push(o), info: () => undefined } as unknown as typeof silent;
    await loadLastPresences(down, { lastPresences: () => Promise.reject(new Error('ECONNREFUSED')) }, log);
    assert.equal(down.detail('pump-1')?.row.state, 'unknown');
    assert.equal(lines[0]?.code, 'CONSOLE_PRESENCES_NOT_LOADED');
  });
});

describe('the last presences read from the local store', () => {
  // Day files as the distributor writes them: each presence in the file of the day it came, dated no
  // later than that (message-handler.ts: never after its arrival). Days 8 to 10 of June, at noon.
  const today = Date.UTC(2026, 5, 10);
  const now = today + 12 * 3_600_000;
  const from = now - CONSOLE.lastPresenceWindowMs;
  const HOUR = 3_600_000;
  const presence = (device: string, gateway: string, state: 'online' | 'offline', time: number): StoredPoint => ({ measurement: 'device_status', tags: { device, gateway }, fields: { state }, time });
  const storeOf = (days: Record<string, StoredPoint[]>) => {
    const store = tempDir('console-presences');
    for (const [day, points] of Object.entries(days)) {
      const lines = points.map((p) => JSON.stringify({ measurement: p.measurement, tags: p.tags, fields: p.fields, time: new Date(p.time).toISOString() }));
      writeFileSync(join(store.dir, `${day}.jsonl`), lines.join('\n') + '\n');
    }
    return store;
  };
  const pairs = (read: LastPresences) => read.devices.map((p) => `${p.tags.device}@${p.tags.gateway} ${p.fields.state} ${p.time}`).sort();
  assert.ok(from > Date.UTC(2026, 5, 9) && from < today, 'the window starts yesterday');
  // A line the distributor cannot have written there (dated after its file's day) tells whether a
  // file was read; so does an id without a row, kept as far as the files read go.
  const impossible = presence('stranger-impossible', 'gw-1', 'online', from + 3 * HOUR);

  it('stops once every registered device is online through a gateway after any line left, and reads no file that ended before the window', async () => {
    const store = storeOf({
      '2026-06-08': [impossible],
      '2026-06-09': [presence('pump-1', 'gw-1', 'online', from + HOUR), presence('stranger-old', 'gw-1', 'online', from + 2 * HOUR)],
      '2026-06-10': [
        presence('pump-1', 'gw-1', 'online', today + HOUR),
        reading('pump-1', today + HOUR, { pump_status: 1 }),
        presence('pump-2', 'gw-2', 'online', today + 2 * HOUR),
        presence('stranger-new', 'gw-1', 'online', today + 3 * HOUR),
      ],
    });
    try {
      const read = await new LocalHistory(store.dir).lastPresences(from, new Set(['pump-1', 'pump-2']));
      assert.deepEqual(pairs(read), [`pump-1@gw-1 online ${today + HOUR}`, `pump-2@gw-2 online ${today + 2 * HOUR}`, `stranger-new@gw-1 online ${today + 3 * HOUR}`]);
    } finally {
      store.cleanup();
    }
  });

  it("reads on while a registered device's newest presence is offline, or older than a line left, and gives what a read of every line gives", async () => {
    const store = storeOf({
      '2026-06-08': [impossible],
      '2026-06-09': [
        // pump-1 moved to gw-2; the late offline of the gateway it left came today
        presence('pump-1', 'gw-2', 'online', from + HOUR),
        // pump-2 moved to gw-3 late yesterday; its presence through gw-2, of before, came today
        presence('pump-2', 'gw-3', 'online', today - HOUR / 2),
        presence('stranger-old', 'gw-1', 'online', from + 2 * HOUR),
        // two presences of one pair and time: the one written later wins
        presence('pump-2', 'gw-4', 'offline', today - 2 * HOUR),
      ],
      '2026-06-10': [presence('pump-1', 'gw-1', 'offline', today + HOUR), presence('pump-2', 'gw-2', 'online', today - HOUR), presence('pump-2', 'gw-4', 'online', today - 2 * HOUR)],
    });
    try {
      const history = new LocalHistory(store.dir);
      const read = await history.lastPresences(from, new Set(['pump-1', 'pump-2']));
      assert.deepEqual(pairs(read), [
        `pump-1@gw-1 offline ${today + HOUR}`,
        `pump-1@gw-2 online ${from + HOUR}`,
        `pump-2@gw-2 online ${today - HOUR}`,
        `pump-2@gw-3 online ${today - HOUR / 2}`,
        `pump-2@gw-4 online ${today - 2 * HOUR}`,
        `stranger-old@gw-1 online ${from + 2 * HOUR}`,
      ]);
      const { fleet } = fleetAt(now, ['pump-1', 'pump-2']);
      await loadLastPresences(fleet, history, createLogger('test', 'silent'), now);
      assert.deepEqual([fleet.detail('pump-1')?.row.state, fleet.detail('pump-1')?.row.gateway], ['online', 'gw-2']);
      assert.deepEqual([fleet.detail('pump-2')?.row.state, fleet.detail('pump-2')?.row.gateway], ['online', 'gw-3']);
    } finally {
      store.cleanup();
    }
  });

  it("reads on while a registered device's newest online presence is dated before the day of the files read", async () => {
    const store = storeOf({
      '2026-06-09': [presence('pump-2', 'gw-3', 'online', today - HOUR / 2)],
      // pump-1 online after any line left; pump-2's presence came today but is of before pump-2 moved
      '2026-06-10': [presence('pump-1', 'gw-1', 'online', today + HOUR), presence('pump-2', 'gw-2', 'online', today - HOUR)],
    });
    try {
      const read = await new LocalHistory(store.dir).lastPresences(from, new Set(['pump-1', 'pump-2']));
      assert.deepEqual(pairs(read), [`pump-1@gw-1 online ${today + HOUR}`, `pump-2@gw-2 online ${today - HOUR}`, `pump-2@gw-3 online ${today - HOUR / 2}`]);
    } finally {
      store.cleanup();
    }
  });
});

describe('Ring', () => {
  it('gives what came after a sequence number, the newest first on request', () => {
    const r = new Ring<number>(3);
    for (const n of [1, 2, 3, 4, 5]) r.push(n);
    assert.equal(r.seq, 5);
    assert.deepEqual(r.since(0), [3, 4, 5]);
    assert.deepEqual(r.since(3), [4, 5]);
    assert.deepEqual(r.since(5), []);
    assert.deepEqual(r.newest(2), [5, 4]);
  });
});

describe("the management API's device index (SortedIds, DeviceListing)", () => {
  const byCodeUnit = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
  /** Up to `n` of the sorted `model` after `after`: what a page must hold. */
  const expected = (model: Iterable<string>, n: number, after?: string) => [...model].sort(byCodeUnit).filter((id) => after === undefined || id > after).slice(0, n);

  it('holds ids in code-unit order through adds and deletes that split and join its chunks, and pages from any cursor', () => {
    // Few distinct ids (so deletes hit), in runs long enough to fill and empty chunks of 1024 (the
    // zeros keep a run of numbers a run of ids in order).
    const name = (i: number) => `d-${String(i).padStart(5, '0')}`;
    const id = fc.integer({ min: 0, max: 5_000 }).map(name);
    const op = fc.oneof(
      fc.record({ add: fc.constant(true), from: id, run: fc.integer({ min: 1, max: 1_500 }) }),
      fc.record({ add: fc.constant(false), from: id, run: fc.integer({ min: 1, max: 1_500 }) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 12 }), fc.array(fc.tuple(fc.option(id, { nil: undefined }), fc.integer({ min: 1, max: 3_000 })), { minLength: 1, maxLength: 5 }), (ops, reads) => {
        const set = new SortedIds();
        const model = new Set<string>();
        for (const o of ops) {
          const start = Number(o.from.slice(2));
          for (let i = start; i < start + o.run; i++) {
            if (o.add) {
              set.add(name(i));
              model.add(name(i));
            } else {
              set.delete(name(i));
              model.delete(name(i));
            }
          }
          assert.equal(set.size, model.size);
          for (const [after, n] of reads) assert.deepEqual(set.first(n, after), expected(model, n, after));
        }
        for (const probe of [name(0), name(2_500), name(4_999), 'd-9']) assert.equal(set.has(probe), model.has(probe));
      }),
      { numRuns: 60 },
    );
  });

  it('gives the ids of a state, a revoked flag or both, in order, as rows move between them', () => {
    const row = fc.record({ id: fc.integer({ min: 0, max: 300 }).map((i) => `d-${String(i).padStart(3, '0')}`), state: fc.constantFrom(...DEVICE_STATES), revoked: fc.boolean() });
    const filter = fc.record({ state: fc.option(fc.constantFrom(...DEVICE_STATES), { nil: undefined }), revoked: fc.option(fc.boolean(), { nil: undefined }) });
    fc.assert(
      fc.property(fc.array(row, { maxLength: 2_000 }), fc.array(fc.tuple(filter, fc.option(row.map((r) => r.id), { nil: undefined }), fc.integer({ min: 1, max: 50 })), { minLength: 1, maxLength: 8 }), (rows, reads) => {
        const listing = new DeviceListing();
        const model = new Map<string, { state: DeviceState; revoked: boolean }>();
        for (const r of rows) {
          listing.place(r);
          model.set(r.id, r);
        }
        assert.equal(listing.size, model.size);
        for (const [f, after, n] of reads) {
          const matching = [...model].filter(([, r]) => (f.state === undefined || r.state === f.state) && (f.revoked === undefined || r.revoked === f.revoked)).map(([id]) => id);
          assert.deepEqual(listing.first(n, after, f), expected(matching, n, after), JSON.stringify({ f, after, n }));
        }
      }),
      { numRuns: 100 },
    );
  });
});

describe('console sessions', () => {
  it('expire, and never exceed the bound (the least recently used go first)', () => {
    let now = 0;
    const store = new BoundedSessionStore(1_000, () => now);
    const session = { cookie: { originalMaxAge: 1_000 } };
    const get = (id: string) => {
      let out: unknown;
      store.get(id, (_e, s) => (out = s));
      return out;
    };
    store.set('a', session, () => undefined);
    assert.equal(get('a'), session);
    now = 1_001;
    assert.equal(get('a'), null, 'expired');
    for (let i = 0; i < CONSOLE.maxSessions + 10; i++) store.set(`s${i}`, session, () => undefined);
    assert.equal(store.size, CONSOLE.maxSessions);
    assert.equal(get('s0'), null, 'the oldest went first');
    assert.equal(get(`s${CONSOLE.maxSessions + 9}`), session);
    // A session read by a request is in use (sessions are saved at login only): it goes after the others.
    assert.equal(get('s10'), session);
    store.set('next', session, () => undefined);
    assert.equal(get('s11'), null, 'the least recently used went');
    assert.equal(get('s10'), session, 'the one just read stayed');
  });
  it('drops sessions that are not logged in first: a flood of them never pushes out a login; a login ends its TTL after it, however often saved', () => {
    let now = 0;
    const store = new BoundedSessionStore(1_000, () => now);
    const get = (id: string) => {
      let out: unknown;
      store.get(id, (_e, s) => (out = s));
      return out;
    };
    const op = { cookie: { originalMaxAge: 1_000 }, principal: { name: 'op', role: 'operator' }, commandToken: 't', loggedInAt: 0 } as never;
    // As a login does it: regenerate() stores an empty session under the new id, then the login fills it in.
    store.set('op', { cookie: { originalMaxAge: 1_000 } } as never, () => undefined);
    store.set('op', op, () => undefined);
    for (let i = 0; i < CONSOLE.maxSessions * 2; i++) store.set(`anon${i}`, { cookie: { originalMaxAge: 1_000 } } as never, () => undefined);
    assert.equal(store.size, CONSOLE.maxSessions);
    assert.equal(get('op'), op, 'the login is kept');
    assert.ok(store.has('op'));
    now = 900;
    store.set('op', op, () => undefined);
    now = 1_001;
    assert.equal(get('op'), null, 'gone at loggedInAt + TTL, though saved at 900');
    assert.equal(store.has('op'), false);
  });
  it('never stores again a login that ended (logged out, replaced, expired): a save from a request that ran meanwhile is refused', () => {
    let now = 0;
    const store = new BoundedSessionStore(1_000, () => now);
    const login = (id: string) => {
      const s = { cookie: { originalMaxAge: 1_000 }, principal: { name: 'op', role: 'operator' }, commandToken: 't', loggedInAt: now } as never;
      store.set(id, { cookie: { originalMaxAge: 1_000 } } as never, () => undefined);
      store.set(id, s, () => undefined);
      return s;
    };
    const save = (id: string, s: never) => {
      let err: unknown;
      store.set(id, s, (e) => (err = e));
      return err;
    };
    const out = login('a');
    assert.equal(save('a', out), undefined, 'a live login is saved again');
    store.destroy('a', () => undefined);
    assert.equal((save('a', out) as { code?: string })?.code, 'CONSOLE_UNAUTHORIZED');
    assert.equal(store.has('a'), false, 'the logout holds');
    const expiring = login('b');
    now = 1_001;
    assert.ok(save('b', expiring), 'an expired login is not stored again');
    assert.equal(store.has('b'), false);
    // A session that is not logged in carries nothing worth refusing: a new login's id is stored.
    assert.equal(save('c', { cookie: { originalMaxAge: 1_000 } } as never), undefined);
  });
  it('a login into a store full of logins is taken, the least recently used login ending for it: the new one is not what goes', () => {
    const store = new BoundedSessionStore(3_600_000, () => 0);
    const get = (id: string) => {
      let out: unknown;
      store.get(id, (_e, s) => (out = s));
      return out;
    };
    // As a login does it: regenerate() stores an empty session under the new id, then the login fills it in.
    const login = (id: string, name: string) => {
      const errors: unknown[] = [];
      store.set(id, { cookie: { originalMaxAge: 1_000 } } as never, (e) => void (e && errors.push(e)));
      store.set(id, { cookie: { originalMaxAge: 1_000 }, principal: { name, role: 'viewer' }, commandToken: 't', loggedInAt: 0 } as never, (e) => void (e && errors.push(e)));
      return errors;
    };
    // Many users (each within CONSOLE.maxSessionsPerUser) filling the store.
    for (let i = 0; i < CONSOLE.maxSessions; i++) assert.deepEqual(login(`s${i}`, `user-${Math.floor(i / CONSOLE.maxSessionsPerUser)}`), []);
    assert.equal(store.size, CONSOLE.maxSessions);
    assert.ok(get('s0'), 'the first login, just used');
    assert.deepEqual(login('new', 'late-user'), [], 'the new login is stored');
    assert.ok(store.has('new'), 'and kept');
    assert.equal(store.size, CONSOLE.maxSessions);
    assert.equal(store.has('s1'), false, 'the least recently used login ended for it');
    assert.ok(store.has('s0'), 'the one just used stayed');
  });
  it(`holds at most ${CONSOLE.maxSessionsPerUser} logins of one user, ending that user's oldest: one user logging in over and over pushes no one else out`, () => {
    const store = new BoundedSessionStore(3_600_000, () => 0);
    const login = (id: string, name: string) => {
      store.set(id, { cookie: { originalMaxAge: 1_000 } } as never, () => undefined);
      store.set(id, { cookie: { originalMaxAge: 1_000 }, principal: { name, role: 'viewer' }, commandToken: 't', loggedInAt: 0 } as never, () => undefined);
    };
    login('op', 'operator-user');
    // More logins of one viewer than the store holds in all (from many addresses, or over hours).
    for (let i = 0; i < CONSOLE.maxSessions + 5; i++) login(`v${i}`, 'viewer-user');
    assert.ok(store.has('op'), "the operator's login is kept");
    assert.equal(store.size, 1 + CONSOLE.maxSessionsPerUser);
    const last = CONSOLE.maxSessions + 4;
    assert.ok(store.has(`v${last}`) && store.has(`v${last - CONSOLE.maxSessionsPerUser + 1}`), "the viewer's newest logins are kept");
    assert.equal(store.has(`v${last - CONSOLE.maxSessionsPerUser}`), false, "and the viewer's older ones ended");
    // A logout frees a place: the next login ends none of the others.
    store.destroy(`v${last}`, () => undefined);
    login('again', 'viewer-user');
    assert.ok(store.has(`v${last - CONSOLE.maxSessionsPerUser + 1}`));
    assert.equal(store.size, 1 + CONSOLE.maxSessionsPerUser);
  });
});

describe('the fleet-wide anomaly list', () => {
  it("takes at most fleetAnomaliesPerDevicePerMinute of one device a minute: a device flagged on every field cannot push the others' off; its page keeps them all", () => {
    const { fleet, advance } = fleetAt();
    const anomaly = (device: string, time: number, field: string) => ({ time, device, field, detector: 'mad', score: 9, kind: 'spike' });
    fleet.addAnomaly(anomaly('pump-2', 1, 'flow'));
    for (let i = 0; i < 32 * 60; i++) fleet.addAnomaly(anomaly('pump-1', 2 + i, `f${i % 32}`)); // 32 fields, a reading a second, a minute
    const listed = fleet.anomalies.newest(CONSOLE.fleetRing);
    assert.equal(listed.filter((a) => a.device === 'pump-1').length, CONSOLE.fleetAnomaliesPerDevicePerMinute);
    assert.ok(listed.some((a) => a.device === 'pump-2'), "the other device's anomaly is still listed");
    assert.equal(fleet.detail('pump-1')?.anomalies.length, CONSOLE.perDeviceRing, 'its page keeps its newest');
    advance(60_000);
    fleet.addAnomaly(anomaly('pump-1', 5_000, 'f0'));
    assert.equal(fleet.anomalies.newest(1)[0]?.time, 5_000, 'the next minute lets it in again');
  });

  it('takes at most fleetAnomaliesPerDevicePerMinute a minute of the devices with no row together (past the fleet\'s bounds): they cannot push the others\' off either', () => {
    const { fleet, advance } = fleetAt();
    const anomaly = (device: string, time: number, field: string) => ({ time, device, field, detector: 'mad', score: 9, kind: 'spike' });
    fleet.addAnomaly(anomaly('pump-2', 1, 'flow'));
    // No row: the fleet was full when its data came (CONSOLE.maxDevices, maxUnregisteredDevices).
    for (let i = 0; i < 32 * 60; i++) fleet.addAnomaly(anomaly(i % 2 ? 'untracked-1' : 'untracked-2', 2 + i, `f${i % 32}`));
    const listed = fleet.anomalies.newest(CONSOLE.fleetRing);
    assert.equal(listed.filter((a) => a.device.startsWith('untracked-')).length, CONSOLE.fleetAnomaliesPerDevicePerMinute);
    assert.ok(listed.some((a) => a.device === 'pump-2'), "the other device's anomaly is still listed");
    advance(60_000);
    fleet.addAnomaly(anomaly('untracked-1', 5_000, 'f0'));
    assert.equal(fleet.anomalies.newest(1)[0]?.time, 5_000, 'the next minute lets them in again');
  });
});

describe('console history helpers', () => {
  it('buckets a window into at most historyMaxPoints means', () => {
    const from = 0;
    const to = 3_600_000;
    const size = bucketMs(from, to);
    assert.ok((to - from) / size <= CONSOLE.historyMaxPoints);
    const pts = Array.from({ length: 10_000 }, (_, i) => [i * 360, i % 2] as [number, number]);
    const out = downsample(pts, from, to);
    assert.ok(out.length <= CONSOLE.historyMaxPoints);
    assert.ok(out.every(([, v]) => v >= 0 && v <= 1));
    assert.deepEqual(downsample([[10, 1], [11, 3], [5_000_000, 9]], 0, 4_000_000), [[0, 2]], 'one bucket averaged; outside the window: dropped');
    // On the epoch's grid, as InfluxQL's GROUP BY time() and the PostgreSQL reader put them: the
    // same window read from any store gives the same bucket times.
    const step = bucketMs(1_000, 1_000 + 3_600_000);
    const grid = downsample([[1_000, 1], [1_000 + step, 2]], 1_000, 1_000 + 3_600_000);
    assert.deepEqual(grid.map(([t]) => t), [0, step], 'bucket starts are multiples of the bucket size');
  });

  it('quotes InfluxQL identifiers and strings so nothing escapes them', () => {
    assert.equal(quoteIdent('a"b\\c'), '"a\\"b\\\\c"');
    assert.equal(quoteString("x' OR 1=1 --"), "'x\\' OR 1=1 --'");
  });
});

describe('console settings', () => {
  const base = { COMMAND_API_TOKEN: 'x'.repeat(32) };
  it('reads the pipeline targets as name=url pairs', () => {
    const c = loadConsoleConfig({ ...base, CONSOLE_PIPELINE_TARGETS: 'distributor=http://d:9465/, command-api=http://c:9466' });
    assert.deepEqual(c.CONSOLE_PIPELINE_TARGETS, [
      { name: 'distributor', url: 'http://d:9465' },
      { name: 'command-api', url: 'http://c:9466' },
    ]);
  });
  it('reads CONSOLE_TRUSTED_PROXY as addresses and CIDR ranges; unset or empty is no one', () => {
    assert.deepEqual(loadConsoleConfig({ ...base, CONSOLE_TRUSTED_PROXY: '10.0.0.5, 172.18.0.0/16,::1,fd00::/8' }).CONSOLE_TRUSTED_PROXY, ['10.0.0.5', '172.18.0.0/16', '::1', 'fd00::/8']);
    assert.equal(loadConsoleConfig(base).CONSOLE_TRUSTED_PROXY, undefined);
    assert.equal(loadConsoleConfig({ ...base, CONSOLE_TRUSTED_PROXY: '' }).CONSOLE_TRUSTED_PROXY, undefined);
    for (const bad of ['proxy.example', '10.0.0.0/33', '0.0.0.0/0', '::/0', '10.0.0.1/8/8', 'true', '10.0.0.1/x']) {
      assert.throws(
        () => loadConsoleConfig({ ...base, CONSOLE_TRUSTED_PROXY: bad }),
        (e: unknown) => isFieldStreamError(e, 'CONFIG_INVALID') && e.message.includes('CONSOLE_TRUSTED_PROXY'),
        bad,
      );
    }
  });
  it('refuses a bad target, and a console no one could log in to', () => {
    for (const env of [{ ...base, CONSOLE_PIPELINE_TARGETS: 'distributor' }, {}]) {
      assert.throws(
        () => loadConsoleConfig(env),
        (e: unknown) => isFieldStreamError(e, 'CONFIG_INVALID'),
      );
    }
  });
});

describe('text exposition', () => {
  it('reads samples, labels (escaped too) and sums', () => {
    const s = parseExposition('# HELP x y\nfoo_total{a="1",b="q\\"x"} 3\nfoo_total{a="2"} 4 1700000000\nbar 1.5\nnot a sample line\n');
    assert.equal(s.length, 3);
    assert.equal(s[0]?.labels.b, 'q"x');
    assert.equal(sumOf(s, 'foo_total'), 7);
    assert.equal(sumOf(s, 'foo_total', { a: '2' }), 4);
    assert.equal(sumOf(s, 'missing'), undefined);
  });
});
