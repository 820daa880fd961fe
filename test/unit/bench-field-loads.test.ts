import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey, X509Certificate } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { issueFleet } from '../../bench/lib/fleet-pki.ts';
import { fleetTargets, sustainedTargets } from '../../bench/lib/targets.ts';
import { renderSustained } from '../../bench/lib/load-reports.ts';
import { hostCpuShare, hostCpuTicks, residentMemory } from '../../bench/lib/proc-stats.ts';
import type { FleetResult } from '../../bench/scenarios/fleet.ts';
import { groupFrame } from '../../bench/lib/fleet-device.ts';
import { latencyWindows, watchedPercentiles } from '../../bench/lib/fleet-latency.ts';
import { nearestRankIndex, percentile } from '../../bench/lib/percentile.ts';
import { parseUplinkFrame } from '../../shared/contract/uplink.ts';
import { verifyGroup } from '../../shared/security/message-auth.ts';
import { memoryOf } from '../../bench/lib/memory-figures.ts';
import { serverWrites, SLOW_WRITE_MS, slowestWrite } from '../../bench/lib/influx-access-log.ts';
import { bucketFloorMs, heldOverMs, type SustainedResult } from '../../bench/scenarios/sustained.ts';
import { EVENT_LOOP_DELAY_BUCKETS_S } from '../../shared/metrics/event-loop.ts';
import { pkiPaths } from '../../pki/layout.ts';
import { loadCa, setupPki } from '../../pki/onboarding.ts';

const dir = mkdtempSync(join(tmpdir(), 'fieldstream-bench-fleet-'));
after(() => rmSync(dir, { recursive: true, force: true }));

describe("the fleet's device certificates", () => {
  it('are each its own EC key, certified by the CA as a device for client authentication, with its signing key registered', () => {
    setupPki(dir, { domain: 'localhost' });
    const ca = loadCa(dir);
    const caCert = new X509Certificate(ca.certPem);
    const devices = issueFleet(dir, ca, ['fleet-00000', 'fleet-00001']);
    const serials = new Set<string>();
    for (const d of devices) {
      const cert = new X509Certificate(d.certPem);
      assert.equal(cert.subject, `CN=${d.id}\nO=FieldStream\nOU=devices`);
      assert.ok(cert.checkIssued(caCert) && cert.verify(caCert.publicKey), 'signed by the CA');
      assert.equal(cert.publicKey.asymmetricKeyType, 'ec');
      assert.ok(cert.checkPrivateKey(createPrivateKey(d.keyPem)), 'the key is the certificate\'s');
      assert.deepEqual(cert.keyUsage, ['1.3.6.1.5.5.7.3.2'], 'client authentication only');
      serials.add(cert.serialNumber);
      const registered = readFileSync(pkiPaths(dir).deviceKeyRegistry(d.id), 'utf8').trim();
      assert.equal(registered, d.signingKey.toString('hex'));
    }
    assert.equal(serials.size, 2);
    const [a, b] = devices.map((d) => createPublicKey(d.keyPem).export({ type: 'spki', format: 'der' }).toString('hex'));
    assert.notEqual(a, b, 'no two devices share a key');
    assert.ok(!existsSync(pkiPaths(dir).device('fleet-00000').cert), 'nothing written to the devices folder: the benchmark holds them');
  });

  it('send readings several at a time as one batch frame the gateway parses, signed as one group the distributor verifies', () => {
    setupPki(dir, { domain: 'localhost' });
    const [d] = issueFleet(dir, loadCa(dir), ['fleet-00002']);
    assert.ok(d);
    const readings = [7, 8, 9].map((k) => ({ k, at: Date.UTC(2026, 11, 2, 8, 0, k) }));
    const messages = parseUplinkFrame(groupFrame(d, 'e1', readings, Date.UTC(2026, 11, 2, 8, 0, 10)));
    assert.deepEqual(
      messages.map((m) => [m.deviceId, m.dataType, m.messageId, m.seq, (m.payload as { timestamp: string }).timestamp]),
      readings.map(({ k, at }) => ['fleet-00002', 'timeseries', `e1.${k}`, k, new Date(at).toISOString()]),
    );
    const auth = messages[0]?.auth;
    assert.ok(auth?.v === 2 && auth.count === 3 && auth.seq === 7 && auth.epoch === 'e1');
    assert.ok(messages.slice(1).every((m) => m.auth === undefined), 'one signature for the group');
    const members = messages.map((m) => ({ seq: m.seq as number, payload: m.payload }));
    assert.ok(verifyGroup(d.signingKey, { deviceId: d.id, dataType: 'timeseries' }, auth, members));
    assert.ok(!verifyGroup(d.signingKey, { deviceId: d.id, dataType: 'timeseries' }, auth, members.slice(0, 2)), 'the group whole, or not at all');
  });
});

const fleet = (over: Partial<FleetResult> = {}): FleetResult => ({
  scenario: 'fleet',
  devices: 10_000,
  seconds: 60,
  warmUpSeconds: 0,
  readingsPerFrame: 1,
  acks: 'none',
  ackFrames: 0,
  frames: 600_000,
  readings: 600_000,
  sent: 600_000,
  stored: 600_000,
  lost: 0,
  duplicated: 0,
  errors: 0,
  refused: {},
  closed: 0,
  setup: { certificatesSeconds: 8, connectSeconds: 75 },
  latency: { samples: 6000, p50Ms: 80, p95Ms: 200, p99Ms: 250, maxMs: 300, late: 0, lateAfterMs: 10_000 },
  latencyByWindow: [],
  generatorLagP99Ms: 3,
  edges: [{ devices: 5000, caddyMiB: { idle: 34, connected: 960, end: 960 }, gatewayMiB: { idle: 100, connected: 295, end: 300 }, caddyKiBPerConnection: 190, gatewayKiBPerConnection: 40 }],
  ...over,
});

const quiet = { cacheSnapshots: 0, compactions: 0, compactionMs: 0, gcPauseMs: 0.5 };
const host = { busyPercent: 90, stealPercent: 0, iowaitPercent: 1 };
const processes = { distributor: { cpuPercent: 40, gcMs: 12, heldOverMs: 25, requestOverMs: 100 } };
const sustained = (over: Partial<SustainedResult> = {}): SustainedResult => ({
  scenario: 'sustained',
  devices: 'apart',
  maximumPerSecond: 70_000,
  startedAt: '2026-12-02T05:00:00.000Z',
  offeredPerSecond: 56_000,
  minutes: 10,
  warmUpSeconds: 60,
  readings: 33_600_000,
  probes: 12_000,
  lost: 0,
  duplicated: 0,
  heldByDevices: 0,
  shards: 1,
  windows: [
    { endS: 60, storedPerSecond: 40_000, offeredPerSecond: 56_000, probes: 200, p99Ms: 300, influx: quiet, host, processes },
    { endS: 70, storedPerSecond: 50_400, offeredPerSecond: 56_000, probes: 200, p99Ms: 500, influx: quiet, host, processes },
  ],
  memory: [
    { service: 'gateway-1', startMiB: 250, endMiB: 290, firstFloorMiB: 250, secondFloorMiB: 280, growthPercent: 12, slopeMiBPerMinute: 3.3, anon: { startMiB: 200, endMiB: 230, firstFloorMiB: 200, secondFloorMiB: 220, growthPercent: 10, slopeMiBPerMinute: 2.2 }, anonByMinute: [200, 220] },
    { service: 'InfluxDB', startMiB: 70, endMiB: 950, firstFloorMiB: 400, secondFloorMiB: 900, growthPercent: 125, slopeMiBPerMinute: 55, anon: { startMiB: 70, endMiB: 600, firstFloorMiB: 260, secondFloorMiB: 520, growthPercent: 100, slopeMiBPerMinute: 29 }, anonByMinute: [260, 520] },
  ],
  heap: [],
  ...over,
});

describe('the field loads against their targets', () => {
  it('fleet: met at the very targets, missed by how much, and not held to them when smaller', () => {
    assert.deepEqual(fleetTargets(fleet()).map((t) => t.verdict), ['met', 'met', 'met']);
    const missed = fleetTargets(fleet({ lost: 12, stored: 599_988, latency: { ...fleet().latency, p99Ms: 500 }, edges: [{ ...(fleet().edges[0] as FleetResult['edges'][number]), gatewayKiBPerConnection: 58 }] }));
    assert.deepEqual(missed.map((t) => t.verdict), ['missed: 12 lost', 'missed by 100 %', 'missed by 45 %']);
    assert.ok(fleetTargets(fleet({ devices: 50, seconds: 5 })).every((t) => t.verdict === 'not held to it: 50 devices × 5 s'));
    // The targets are for a reading per frame: readings sent five at a time are another load.
    assert.ok(fleetTargets(fleet({ readingsPerFrame: 5, frames: 120_000 })).every((t) => t.verdict === 'not held to it: 5 readings a frame'));
    // Most watched readings late: the p99 is among them, not the few seen early.
    const late = fleetTargets(fleet({ latency: { samples: 1, late: 599, lateAfterMs: 10_000, ...watchedPercentiles([6361], 599) } }))[1];
    assert.equal(late?.verdict, 'missed: over 10,000 ms');
    assert.match(late?.measured ?? '', /^> 10,000 ms \(600 readings watched, 599 not seen within 10,000 ms; devices reading no acks\)$/);
    // Whether the devices read acks is said beside the figure: both are the targets' load.
    assert.match(fleetTargets(fleet({ acks: 'all' }))[1]?.measured ?? '', /; every frame acked\)$/);
  });

  it('percentiles by nearest rank: the smallest value with at least that share of the values at or below it', () => {
    const hundred = Array.from({ length: 100 }, (_, i) => i + 1);
    // The p99 of 100 values is the 99th, not the largest; the p50 of two is the smaller.
    assert.equal(percentile(hundred, 0.99), 99);
    assert.equal(percentile(hundred, 0.5), 50);
    assert.equal(percentile(hundred, 1), 100);
    assert.equal(percentile([3, 8], 0.5), 3);
    assert.equal(percentile([7], 0.99), 7);
    assert.equal(percentile([], 0.99), undefined);
    // Not a rank too high when f·n is whole in floating point only roughly (0.07 × 100 = 7.000000000000001).
    assert.equal(percentile(hundred, 0.07), 7);
    assert.equal(percentile(hundred, 0.57), 57);
    // 600 watched readings (the fleet's minute): the p99 is the 594th.
    assert.equal(nearestRankIndex(600, 0.99), 593);
    assert.equal(nearestRankIndex(0, 0.5), -1);
  });

  it('fleet latency: percentiles over every watched reading, the late ones included', () => {
    const seen = Array.from({ length: 990 }, (_, i) => i + 1);
    assert.deepEqual(watchedPercentiles(seen, 0), { p50Ms: 495, p95Ms: 941, p99Ms: 981, maxMs: 990 });
    assert.deepEqual(watchedPercentiles(seen, 10), { p50Ms: 500, p95Ms: 950, p99Ms: 990, maxMs: null });
    // One in a hundred late is within the p99 (the 99th value is one seen); two are not.
    assert.deepEqual(watchedPercentiles(seen.slice(0, 99), 1), { p50Ms: 50, p95Ms: 95, p99Ms: 99, maxMs: null });
    assert.deepEqual(watchedPercentiles(seen.slice(0, 98), 2), { p50Ms: 50, p95Ms: 95, p99Ms: null, maxMs: null });
    assert.deepEqual(watchedPercentiles([5], 0), { p50Ms: 5, p95Ms: 5, p99Ms: 5, maxMs: 5 });
    assert.deepEqual(watchedPercentiles([], 0), { p50Ms: 0, p95Ms: 0, p99Ms: 0, maxMs: 0 });
  });

  it('fleet latency by window: each watched reading in the window of its due time, the late ones included', () => {
    // 25 s of load: windows 0–10, 10–20 and 20–25; the first slow, the second with a late reading.
    const seen = [
      ...Array.from({ length: 100 }, (_, i) => ({ dueS: i / 10, ms: 1_000 + i })),
      ...Array.from({ length: 99 }, (_, i) => ({ dueS: 10 + i / 10, ms: 20 + (i % 10) })),
      ...Array.from({ length: 50 }, (_, i) => ({ dueS: 20 + i / 10, ms: 30 })),
    ];
    assert.deepEqual(latencyWindows(seen, [19.95], 25), [
      { fromS: 0, toS: 10, watched: 100, p50Ms: 1_049, p99Ms: 1_098, late: 0 },
      { fromS: 10, toS: 20, watched: 100, p50Ms: 24, p99Ms: 29, late: 1 },
      { fromS: 20, toS: 25, watched: 50, p50Ms: 30, p99Ms: 30, late: 0 },
    ]);
    assert.deepEqual(latencyWindows([], [], 5), [{ fromS: 0, toS: 5, watched: 0, p50Ms: 0, p99Ms: 0, late: 0 }]);
    // A warm-up of 3 s: a window of its own, the 10 s windows after it.
    assert.deepEqual(
      latencyWindows(seen, [19.95], 25, 3).map((w) => [w.fromS, w.toS, w.watched, w.late]),
      [
        [0, 3, 30, 0],
        [3, 13, 100, 0],
        [13, 23, 100, 1],
        [23, 25, 20, 0],
      ],
    );
  });

  it('sustained: our services and the database apart; a sag after the warm-up only; a lost probe misses the p99', () => {
    assert.deepEqual(sustainedTargets(sustained()).map((t) => t.verdict), ['met', 'met', 'missed by 900 %', 'met', 'met']);
    const worse = sustainedTargets(sustained({ windows: [...sustained().windows, { endS: 80, storedPerSecond: 50_000, offeredPerSecond: 56_000, probes: 200, p99Ms: -1, influx: quiet, host, processes }] }));
    assert.equal(worse[3]?.measured, 'a probe never arrived');
    assert.equal(worse[4]?.verdict, 'missed by 1 %');
    assert.match(sustainedTargets(sustained({ minutes: 2 }))[1]?.verdict ?? '', /over 2 min, not 10/);
    // A window in which the devices' own process fell behind offered less: the pipeline stored all of it, no sag.
    const behind = sustainedTargets(sustained({ windows: [...sustained().windows, { endS: 80, storedPerSecond: 39_000, offeredPerSecond: 40_000, probes: 200, p99Ms: 300, influx: quiet, host, processes }] }));
    assert.equal(behind[4]?.verdict, 'met');
    assert.equal(behind[4]?.measured, 'lowest 50,400 of 56,000/s (60–70 s)');
  });

  it('sustained memory: the floors of the two halves after the warm-up, anonymous memory apart, its slope and its minutes', () => {
    const MiB = 1024 * 1024;
    const series = (anonMiB: (atS: number) => number, fileMiB: (atS: number) => number = () => 50) =>
      Array.from({ length: 61 }, (_, w) => {
        const atS = w * 10;
        return { atS, m: { anon: anonMiB(atS) * MiB, file: fileMiB(atS) * MiB, rss: (anonMiB(atS) + fileMiB(atS)) * MiB } };
      });
    // Breathing ±20 MiB around 100 every window, and a mapped file growing 1 MiB a window.
    const m = memoryOf('gateway-1', series((t) => (t % 20 === 0 ? 120 : 80), (t) => 50 + t / 10), 60, 600);
    // One read at 60 s and one at 600 s (both 120) say flat; so do the floors, 80 and 80.
    assert.deepEqual([m.anon.startMiB, m.anon.firstFloorMiB, m.anon.secondFloorMiB, m.anon.growthPercent], [120, 80, 80, 0]);
    assert.ok(Math.abs(m.anon.slopeMiBPerMinute) < 0.5, String(m.anon.slopeMiBPerMinute));
    // The resident total grows with the file's pages (floors 80 + 57 at 70 s, 80 + 85 at 350 s), not judged.
    assert.deepEqual([m.firstFloorMiB, m.secondFloorMiB, m.growthPercent], [137, 165, 20.4]);
    assert.deepEqual(m.anonByMinute, [120, 120, 120, 120, 120, 120, 120, 120, 120, 120]);
    // A leak of 1 MiB a window: the floors 107 (70 s) and 134 (340 s), 6 MiB a minute.
    const l = memoryOf('gateway-1', series((t) => 100 + t / 10), 60, 600);
    assert.deepEqual(l.anon, { startMiB: 100, endMiB: 160, firstFloorMiB: 107, secondFloorMiB: 134, growthPercent: 25.2, slopeMiBPerMinute: 6 });
    // A saw with no trend (a Go heap between collections: 250 to 900 MiB over 4 minutes), whichever
    // minute it starts in: each half holds a collection, the floors are equal.
    for (const phase of [0, 60, 120, 180]) {
      const g = memoryOf('InfluxDB', series((t) => 250 + (((t + phase) % 240) / 240) * 650), 60, 600);
      assert.ok(Math.abs(g.anon.growthPercent) <= 2, `${phase}: ${JSON.stringify(g.anon)}`);
    }
  });

  it('sustained: the report says how many slow windows had InfluxDB compacting in them or the window before', () => {
    const compacting = { cacheSnapshots: 1, compactions: 2, compactionMs: 840, gcPauseMs: 3 };
    const windows = [
      { endS: 10, storedPerSecond: 50_000, offeredPerSecond: 56_000, probes: 200, p99Ms: 120, influx: compacting, host, processes },
      { endS: 20, storedPerSecond: 45_000, offeredPerSecond: 56_000, probes: 200, p99Ms: 900, influx: quiet, host, processes }, // slow, after a compaction
      { endS: 30, storedPerSecond: 50_000, offeredPerSecond: 56_000, probes: 200, p99Ms: 100, influx: quiet, host, processes },
      { endS: 40, storedPerSecond: 50_000, offeredPerSecond: 56_000, probes: 200, p99Ms: 700, influx: quiet, host: { busyPercent: 100, stealPercent: 4, iowaitPercent: 0 }, processes: { distributor: { cpuPercent: 90, gcMs: 300, heldOverMs: 250, requestOverMs: 1000 }, gateway: { cpuPercent: 30, heldOverMs: 50, requestOverMs: 0 } } }, // slow, nothing around it
    ];
    const lines = renderSustained(sustained({ windows }));
    assert.ok(
      lines.includes(
        'Windows with p99 over 500 ms: 2 of 4; of them 1 with an InfluxDB cache snapshot or compaction finishing in them or the window before (such windows: 2 of 4). The machine in the slow windows: CPU busy 100 %, stolen 4 %, waiting for the disk 1 % (medians; the other windows: CPU busy 90 %, stolen 0 %, waiting for the disk 1 %).',
      ),
      lines.join('\n'),
    );
    assert.ok(lines.includes('| 0–10 | 56,000 | 50,000 | 200 | 120 ms | 1, 2 (840 ms) | 3 ms | — | 90 %, 0 %, 1 % |'), lines.join('\n'));
    // No access log read: nothing said of the database's own time per write.
    assert.ok(!lines.some((l) => l.startsWith("The database's own time")), lines.join('\n'));
    // The slow windows' medians: the distributor's 40 and 90 % (upper median), 12 and 300 ms of GC.
    assert.ok(lines.includes('| distributor | 90 | 40 | 300 | 12 | > 250 ms | > 25 ms | > 1000 ms | > 100 ms |'), lines.join('\n'));
    // Each slow window's held event loops of 100 ms or more; the gateway's 50 ms is not named.
    assert.ok(lines.includes('Event loops held over 100 ms in the slow windows: 20 s (p99 900 ms): none; 40 s (p99 700 ms): distributor > 250 ms.'), lines.join('\n'));
    // Each slow window's slowest request, of the services that wait on one: here a database request over a second.
    assert.ok(
      lines.includes(
        'The slowest request in each slow window (the gateway: an envelope published to its PUBACK; the distributor: a database request): 20 s (p99 900 ms): distributor > 100 ms; 40 s (p99 700 ms): distributor > 1000 ms, gateway ≤ 1 ms.',
      ),
      lines.join('\n'),
    );
  });

  it("sustained: the database's own time per write request, from its access log, in each window and in the slow ones against the others", () => {
    const at = Date.UTC(2026, 11, 2, 0, 29, 35);
    const line = (time: string, path: string, micros: number) => `[httpd] 127.0.0.1 - fieldstream [${time}] "POST ${path} HTTP/1.1" 204 0 "-" "-" 738ff10c-ede7-11f1-8005-000000000000 ${micros}`;
    const log = [
      'ts=2026-12-02T00:29:30.000000Z lvl=info msg="Storing statistics" log_id=16u2LOC0000',
      line('02/Dec/2026:00:29:35 +0000', '/write?db=bench&precision=ms', 37_555),
      line('02/Dec/2026:01:29:36 +0100', '/write?db=bench&precision=ms', 922_975), // the same clock, another zone
      '[httpd] 127.0.0.1 - fieldstream [02/Dec/2026:00:29:36 +0000] "GET /query?db=bench&q=SELECT HTTP/1.1" 200 57 "-" "-" 7390-1 2000000',
      line('02/Dec/2026:00:29:45 +0000', '/write?db=bench&precision=ms', 260_000),
      '[httpd] damaged line 5',
    ].join('\n');
    const writes = serverWrites(log);
    assert.deepEqual(writes, [
      { atMs: at, ms: 37.555, status: 204 },
      { atMs: at + 1000, ms: 922.975, status: 204 },
      { atMs: at + 10_000, ms: 260, status: 204 },
    ]);
    assert.deepEqual(slowestWrite(writes, at, at + 10_000, SLOW_WRITE_MS), { slowestMs: 923, over: 1 });
    assert.deepEqual(slowestWrite(writes, at + 10_000, at + 20_000, SLOW_WRITE_MS), { slowestMs: 260, over: 1 });
    assert.deepEqual(slowestWrite(writes, at + 20_000, at + 30_000, SLOW_WRITE_MS), { slowestMs: 0, over: 0 });

    const windows = [
      { endS: 10, storedPerSecond: 50_000, offeredPerSecond: 56_000, probes: 200, p99Ms: 900, influx: { ...quiet, slowestWriteMs: 923, slowWrites: 2 }, host, processes },
      { endS: 20, storedPerSecond: 50_000, offeredPerSecond: 56_000, probes: 200, p99Ms: 200, influx: { ...quiet, slowestWriteMs: 120, slowWrites: 0 }, host, processes },
    ];
    const lines = renderSustained(sustained({ windows }));
    assert.ok(lines.some((l) => l.startsWith('| window (s) |') && l.includes('| InfluxDB: slowest write request (its log), writes over 250 ms |')), lines.join('\n'));
    assert.ok(lines.includes('| 0–10 | 56,000 | 50,000 | 200 | 900 ms | 0, 0 (0 ms) | 0.5 ms | 923 ms, 2 | 90 %, 0 %, 1 % |'), lines.join('\n'));
    assert.ok(
      lines.includes("The database's own time per write request (its access log): the slowest in the median slow window 923 ms, 2 writes over 250 ms in 1 window; in the median other window 120 ms, 0 writes over 250 ms in 1 window."),
      lines.join('\n'),
    );
  });

  it('sustained: the longest an event loop was held, from two reads of its cumulative delay buckets', () => {
    const read = (counts: number[]) => new Map([...EVENT_LOOP_DELAY_BUCKETS_S, Infinity].map((b, i) => [b, counts[i] as number]));
    //                  5ms 10  25  50  100 250 500 1s 2.5 5  +Inf
    const before = read([90, 95, 98, 99, 99, 99, 99, 99, 99, 99, 99]);
    assert.equal(heldOverMs(before, before), 0);
    assert.equal(heldOverMs(before, read([190, 195, 198, 199, 199, 199, 199, 199, 199, 199, 199])), 0, 'every new tick within 5 ms');
    assert.equal(heldOverMs(before, read([180, 190, 196, 198, 198, 199, 200, 200, 200, 200, 200])), 250, 'one tick between 250 and 500 ms');
    assert.equal(heldOverMs(before, read([100, 105, 108, 109, 109, 109, 109, 109, 109, 109, 110])), 5_000, 'one past the last bound');
    assert.equal(bucketFloorMs(0.003), 0);
    assert.equal(bucketFloorMs(0.3), 250);
    assert.equal(bucketFloorMs(7), 5_000);
  });

  it("sustained: the machine's CPU in a window, from two readings of /proc/stat", () => {
    assert.deepEqual(hostCpuShare({ busy: 100, idle: 900, iowait: 50, steal: 0 }, { busy: 1_700, idle: 1_200, iowait: 150, steal: 100 }), { busyPercent: 80, stealPercent: 5, iowaitPercent: 5 });
    const now = hostCpuTicks();
    assert.ok(now.busy > 0 && now.idle > 0 && now.steal >= 0, JSON.stringify(now));
    assert.deepEqual(hostCpuShare(now, now), { busyPercent: 0, stealPercent: 0, iowaitPercent: 0 });
    // This process's own memory, as /proc/self/status gives it: the anonymous and file-backed parts within the whole.
    const own = residentMemory(process.pid);
    assert.ok(own.anon > 0 && own.file > 0 && own.anon + own.file <= own.rss + 4096 * 64, JSON.stringify(own));
  });

  it('sustained: the report shows each Node service’s heap floors in the two halves after the warm-up, when it was read', () => {
    assert.ok(!renderSustained(sustained()).some((l) => l.includes('V8 heap')));
    const lines = renderSustained(sustained({ heap: [{ service: 'console', firstFloorMiB: 40.2, secondFloorMiB: 41.5, growthPercent: 3.2, samples: 60 }] }));
    assert.ok(lines.includes('| console | 40.2 | 41.5 | 3.2 % | 60 |'), lines.join('\n'));
  });

  it('sustained: the report says how many of the database’s shards the load wrote into', () => {
    assert.match(renderSustained(sustained())[0] ?? '', /0 lost, 0 duplicated; InfluxDB shards written: 1 \(/);
    assert.match(renderSustained(sustained({ shards: 9 }))[0] ?? '', /InfluxDB shards written: 9 /);
    // The probe's readings are counted with the rest; what the devices still held at the end is said.
    assert.match(renderSustained(sustained({ lost: 1, heldByDevices: 1 }))[0] ?? '', /33,600,000 readings \(the probe's 12,000 among them\), counted device by device: 1 lost, 0 duplicated \(1 still in the devices' queues when they stopped/);
    assert.equal(sustainedTargets(sustained({ duplicated: 2 }))[0]?.verdict, 'missed: 0 lost, 2 duplicated');
  });
});
