import type { AckMode } from '../../shared/contract/downlink.ts';
import { randomBytes } from 'node:crypto';
import WebSocket from 'ws';
import type { KeyAndCert } from '../../pki/certificates.ts';
import type { InfluxV1 } from '../../scripts/local-stack/databases.ts';
import { sleep } from '../lib/context.ts';
import { connect, frame, groupFrame } from '../lib/fleet-device.ts';
import { latencyWindows, watchedPercentiles, type LatencyWindow } from '../lib/fleet-latency.ts';
import { issueFleet, type FleetDevice } from '../lib/fleet-pki.ts';
import { percentile } from '../lib/percentile.ts';
import { residentBytes, type CpuMeter, type CpuShare } from '../lib/proc-stats.ts';
import type { ThroughputResult } from '../lib/results.ts';

/** One DMZ server the fleet connects through: Caddy's WSS URL, and the processes whose memory is read. */
export interface FleetEdge {
  url: string;
  caddyPid: number;
  gatewayPid: number;
}

export interface FleetOptions {
  edges: readonly FleetEdge[];
  /** the run's PKI folder (the internal registry of signing keys is in it) */
  certsDir: string;
  ca: KeyAndCert;
  influx: InfluxV1;
  database: string;
  devices: number;
  /** seconds of load measured: each device takes one reading per second */
  seconds: number;
  /**
   * seconds of the same load before them, not measured (latency, CPU): the services and the
   * database meet the fleet cold at first, as in the throughput scenarios' warm-up round; a service
   * that runs for months is measured warm. Their readings must be stored all the same.
   */
  warmUpSeconds: number;
  /**
   * readings a device sends in one frame: 1, each reading in its own frame as it is taken, signed
   * alone (a simple device); more, a device that sends its readings this many at a time, every as
   * many seconds, in one frame signed as one group (as the field client does)
   */
  readingsPerFrame: number;
  /**
   * which acks the devices ask for (X-FieldStream-Acks on their upgrade): `none` by default, as a
   * device that keeps nothing it sent has no use for them (these read none); `all` measures the
   * same devices acked frame by frame, as before 2026-12-07
   */
  acks: AckMode;
  /** handshakes in progress at once */
  concurrency: number;
  meter?: CpuMeter;
}

export interface EdgeMemory {
  devices: number;
  caddyMiB: { idle: number; connected: number; end: number };
  gatewayMiB: { idle: number; connected: number; end: number };
  /** (resident once connected − idle) / devices on this edge */
  caddyKiBPerConnection: number;
  gatewayKiBPerConnection: number;
}

export interface FleetResult {
  scenario: string;
  devices: number;
  seconds: number;
  /** seconds of load before `seconds`, its readings counted (due, sent, stored, lost) but not timed */
  warmUpSeconds: number;
  /** readings in each device's frames (FleetOptions.readingsPerFrame) */
  readingsPerFrame: number;
  /** the acks the devices asked for (FleetOptions.acks) */
  acks: AckMode;
  /** frames the devices sent */
  frames: number;
  /** readings the devices were due to send, one per device per second, the warm-up's included */
  readings: number;
  /** readings each device had written to its socket (the rest: its connection was gone) */
  sent: number;
  stored: number;
  /** readings due but not in the database */
  lost: number;
  duplicated: number;
  /** coded errors the gateways answered with */
  errors: number;
  /** ack frames the devices received: none when they asked for none (FleetOptions.acks) */
  ackFrames: number;
  /** messages the distributor refused, by reason (its security events for these devices) */
  refused: Record<string, number>;
  /** connections closed during the run */
  closed: number;
  /** seconds to issue every device's key and certificate, and to connect them all (welcomed) */
  setup: { certificatesSeconds: number; connectSeconds: number };
  /** device → database, on every reading of one device in SAMPLE_EVERY */
  /**
   * Percentiles over every watched reading, those not seen within `lateAfterMs` included: a
   * percentile that falls among them is null (above lateAfterMs, not measured further).
   */
  latency: { samples: number; p50Ms: number | null; p95Ms: number | null; p99Ms: number | null; maxMs: number | null; late: number; lateAfterMs: number };
  /** the same by the time the readings were due, in windows of LATENCY_WINDOW_S (fleet-latency.ts) from the start of the warm-up: when in the run the slow ones were */
  latencyByWindow: LatencyWindow[];
  /** how late the load generator sent the readings due after the warm-up, against their due times: it must not be the bottleneck */
  generatorLagP99Ms: number;
  edges: EdgeMemory[];
  cpu?: CpuShare[];
}

/**
 * Every SAMPLE_EVERY-th device is watched in the database for each of its readings. One in 1,000
 * (10 devices, 600 readings in a minute at 10,000 devices): watching one in 100 cost InfluxDB and
 * the benchmark's process a fifth of a core once readings ran late (each look then reads every
 * reading not yet seen), which slowed the pipeline it measured.
 */
const SAMPLE_EVERY = 1_000;
/** milliseconds between looks into the database for the watched readings */
const POLL_EVERY_MS = 25;
/** milliseconds after which a watched reading stops being looked for (it is then late, or lost) */
const LATE_MS = 10_000;
/**
 * milliseconds the database gets after the load to hold every reading (the count also stops after
 * 15 s without progress): a backlog of minutes drains, so what is counted lost did not arrive
 */
const DRAIN_MS = 600_000;

const MiB = 1024 * 1024;
const mib = (bytes: number) => Math.round(bytes / MiB);

/**
 * A fleet of simple devices through the real edge: `devices` devices, each with its own key and
 * certificate, connect through Caddy (spread over `edges`) and each sends one seed-format reading
 * per second in its own frame, signed (version 1, one message), as a device without our field client
 * would: `devices` messages/s in all. Each device's sends are spread evenly over the second, device i
 * at i/devices of it. Every reading's timestamp is its due time, so each is one point in the
 * database and a device → database latency can be read from it; lost is counted exactly: readings
 * due minus points stored.
 *
 * With `readingsPerFrame` N > 1 the devices take the same readings but send them N at a time, in
 * one batch frame signed as one group (version 2, as the field client sends them), when the last of
 * them is due: `devices` / N frames a second. Device i sends after its readings k with
 * (k + i) mod N = N − 1 (and after its last), so that the frames too are spread evenly over time.
 * Latency is then measured from the moment a reading's frame was due, not the reading: the wait on
 * the device before it is the device's choice.
 */
export async function fleet(o: FleetOptions): Promise<FleetResult> {
  const t0 = performance.now();
  const ids = Array.from({ length: o.devices }, (_, i) => `${i % SAMPLE_EVERY === 0 ? 'fleetp' : 'fleet'}-${String(i).padStart(5, '0')}`);
  const devices = issueFleet(o.certsDir, o.ca, ids);
  const certificatesSeconds = (performance.now() - t0) / 1000;
  const edgeOf = (i: number) => o.edges[i % o.edges.length] as FleetEdge;
  const readAll = () => o.edges.map((e) => ({ caddy: residentBytes(e.caddyPid), gateway: residentBytes(e.gatewayPid) }));
  const idle = readAll();

  const stats = { errors: 0, acks: 0, closed: 0, firstError: '' };
  const sockets: WebSocket[] = new Array(o.devices);
  const connectStarted = performance.now();
  let next = 0;
  const worker = async () => {
    while (next < devices.length) {
      const i = next++;
      sockets[i] = await connect(edgeOf(i).url, o.ca.certPem, devices[i] as FleetDevice, stats, o.acks);
    }
  };
  try {
    await Promise.all(Array.from({ length: o.concurrency }, worker));
    const connectSeconds = (performance.now() - connectStarted) / 1000;
    await sleep(3_000); // the gateways settle (presence published, buffers returned) before memory is read
    const connected = readAll();

    const epoch = randomBytes(6).toString('hex');
    const runSeconds = o.warmUpSeconds + o.seconds;
    const total = o.devices * runSeconds;
    const pending = new Map<string, number>();
    const latencies: number[] = [];
    /** the due time of each reading in `latencies` (same index), and of each late one */
    const dueOfSeen: number[] = [];
    const dueOfLate: number[] = [];
    const lags: number[] = [];
    let sent = 0;
    let frames = 0;
    let loading = true;
    // The watched devices by name: a regular expression on the tag made InfluxDB match it against
    // every device's series at each look, 40 times a second.
    const watchedTags = ids.filter((id) => id.startsWith('fleetp-')).map((id) => `device = '${id}'`).join(' OR ');
    const poll = (async () => {
      while (loading || pending.size > 0) {
        const now = Date.now();
        for (const [key, due] of pending) {
          if (now - due < LATE_MS) break;
          pending.delete(key);
          dueOfLate.push(due);
        }
        const oldest = pending.values().next().value;
        if (oldest !== undefined) {
          // A frame's readings were taken up to readingsPerFrame − 1 seconds before it was due.
          const since = oldest - (o.readingsPerFrame - 1) * 1000;
          const rows = await o.influx.rows(o.database, `SELECT temperature, device FROM readings WHERE (${watchedTags}) AND time >= ${since}ms`);
          const at = Date.now();
          for (const r of rows) {
            const key = `${String(r.device)}@${Number(r.time)}`;
            const due = pending.get(key);
            if (due === undefined) continue;
            pending.delete(key);
            latencies.push(at - due);
            dueOfSeen.push(due);
          }
        }
        await sleep(POLL_EVERY_MS);
      }
    })();

    const start = Math.ceil(Date.now() / 1000) * 1000 + 1000;
    /** the end of the warm-up: what is due from then on is measured */
    const measuredFrom = start + o.warmUpSeconds * 1000;
    let metering = false;
    await sleep(start - Date.now());
    // Reading n is device n mod N's (n div N)-th, due at start + n/N seconds: the devices' sends
    // are spread evenly over each second. Each pass sends what has fallen due, so a late pass
    // catches up (and the lag is measured).
    const per = o.readingsPerFrame;
    /** each device's readings taken and not yet sent (per > 1) */
    const held: Array<Array<{ k: number; at: number }>> = per > 1 ? Array.from({ length: o.devices }, () => []) : [];
    for (let n = 0; n < total; ) {
      if (!metering && Date.now() >= measuredFrom) {
        o.meter?.begin();
        metering = true;
      }
      const due = Math.min(total, Math.floor(((Date.now() - start) * o.devices) / 1000) + 1);
      for (; n < due; n++) {
        const i = n % o.devices;
        const k = Math.floor(n / o.devices);
        const at = start + k * 1000 + Math.floor((i * 1000) / o.devices);
        let batch: Array<{ k: number; at: number }> | undefined;
        if (per > 1) {
          batch = held[i] as Array<{ k: number; at: number }>;
          batch.push({ k, at });
          if ((k + i) % per !== per - 1 && k !== runSeconds - 1) continue;
          held[i] = [];
        }
        const ws = sockets[i] as WebSocket;
        if (ws.readyState !== WebSocket.OPEN) continue;
        const d = devices[i] as FleetDevice;
        const now = Date.now();
        ws.send(batch ? groupFrame(d, epoch, batch, now) : frame(d, epoch, k, at, now));
        sent += batch ? batch.length : 1;
        frames++;
        if (n % 10 === 0 && at >= measuredFrom) lags.push(now - at);
        // Keyed by the reading, timed from its frame's due time (the same for a single reading).
        if (i % SAMPLE_EVERY === 0) for (const r of batch ?? [{ k, at }]) pending.set(`${d.id}@${r.at}`, at);
      }
      await sleep(2);
    }
    loading = false;
    const end = readAll();
    const cpu = o.meter?.end();

    const count = () => o.influx.query(`SELECT count(temperature) FROM readings WHERE device =~ /^fleet/`, o.database).then((b) => Number(b.results?.[0]?.series?.[0]?.values[0]?.[1] ?? 0));
    const deadline = Date.now() + DRAIN_MS;
    let stored = await count();
    let last = { stored, at: Date.now() };
    while (stored < total && Date.now() < deadline && Date.now() - last.at < 15_000) {
      await sleep(1_000);
      stored = await count();
      if (stored !== last.stored) last = { stored, at: Date.now() };
    }
    await poll;
    const refusals = await o.influx.query(`SELECT count(message_id) FROM security_events WHERE device =~ /^fleet/ GROUP BY reason`, o.database);
    const refused = Object.fromEntries((refusals.results?.[0]?.series ?? []).map((x) => [String(x.tags?.reason), Number(x.values[0]?.[1] ?? 0)]));
    if (stats.firstError) process.stderr.write(`fleet: first error from a gateway: ${stats.firstError}\n`);
    const latencyByWindow = latencyWindows(
      latencies.map((ms, i) => ({ dueS: ((dueOfSeen[i] as number) - start) / 1000, ms })),
      dueOfLate.map((due) => (due - start) / 1000),
      runSeconds,
      o.warmUpSeconds,
    );
    // The figures of the run: what was due after the warm-up.
    const measured = latencies.filter((_, i) => (dueOfSeen[i] as number) >= measuredFrom);
    const measuredLate = dueOfLate.filter((due) => due >= measuredFrom).length;
    lags.sort((a, b) => a - b);
    const q = (xs: number[], f: number) => percentile(xs, f) ?? 0;
    return {
      scenario: `fleet: ${o.devices.toLocaleString('en')} devices through Caddy, one reading per second each${per === 1 ? '' : `, sent ${per} at a time`}${o.acks === 'all' ? ', every frame acked' : ', reading no acks'}`,
      devices: o.devices,
      seconds: o.seconds,
      warmUpSeconds: o.warmUpSeconds,
      readingsPerFrame: per,
      acks: o.acks,
      frames,
      readings: total,
      sent,
      stored,
      lost: total - stored,
      // One point per (device, time) and every reading's time its own: the database cannot hold more than were sent.
      duplicated: Math.max(0, stored - total),
      errors: stats.errors,
      ackFrames: stats.acks,
      refused,
      closed: stats.closed,
      setup: { certificatesSeconds: Math.round(certificatesSeconds * 10) / 10, connectSeconds: Math.round(connectSeconds * 10) / 10 },
      latency: { samples: measured.length, ...watchedPercentiles(measured, measuredLate), late: measuredLate, lateAfterMs: LATE_MS },
      latencyByWindow,
      generatorLagP99Ms: q(lags, 0.99),
      edges: o.edges.map((_, e) => {
        const n = Math.floor(o.devices / o.edges.length) + (e < o.devices % o.edges.length ? 1 : 0);
        type Rss = { caddy: number; gateway: number };
        const [a, b, c] = [idle[e], connected[e], end[e]] as [Rss, Rss, Rss];
        const perConn = (x: number, y: number) => Math.round(((y - x) / Math.max(1, n) / 1024) * 10) / 10;
        return {
          devices: n,
          caddyMiB: { idle: mib(a.caddy), connected: mib(b.caddy), end: mib(c.caddy) },
          gatewayMiB: { idle: mib(a.gateway), connected: mib(b.gateway), end: mib(c.gateway) },
          caddyKiBPerConnection: perConn(a.caddy, b.caddy),
          gatewayKiBPerConnection: perConn(a.gateway, b.gateway),
        };
      }),
      ...(cpu ? { cpu } : {}),
    };
  } finally {
    for (const ws of sockets) ws?.terminate();
  }
}

/** The fleet's figures in a throughput scenario's shape (for the profile report's CPU table). */
export function fleetAsThroughput(f: FleetResult): ThroughputResult {
  return {
    scenario: f.scenario,
    clients: f.devices,
    // The CPU was measured after the warm-up: the readings of that time.
    readings: Math.round((f.stored * f.seconds) / (f.seconds + f.warmUpSeconds)),
    seconds: f.seconds,
    readingsPerSecond: Math.round(f.stored / (f.seconds + f.warmUpSeconds)),
    lost: f.lost,
    duplicated: f.duplicated,
    ...(f.cpu ? { cpu: f.cpu } : {}),
  };
}
