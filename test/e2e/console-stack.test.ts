import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Anomaly, DeviceRow } from '../../internal-network/console/fleet/types.ts';
import { InfluxV1 } from '../../scripts/local-stack/databases.ts';
import type { LocalStack } from '../../scripts/local-stack/stack.ts';
import { ConsoleSession, ROLE_TOKENS, writeRoleTokens, type SseEvent } from '../helpers/console-client.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { startTestFieldClient } from '../helpers/field.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { startTestStack, influxSettings } from '../helpers/stack.ts';
import { eventually } from '../helpers/ws-device.ts';

const DB = 'sensor_data';
const DEVICE = 'boiler-1';

/**
 * The console as `npm run stack` runs it, its own process with the console certificate on the real
 * internal Mosquitto (the stored feed is all it may read), writing to and reading from a real
 * InfluxDB 1.x: the device shows up live, a spike in its readings is flagged as an anomaly live and
 * stored, its state changes are stored, its history comes back through InfluxQL.
 */
describe('the console on the real stack, with InfluxDB', () => {
  const work = tempDir('console-stack');
  const pki = makeTestPki([DEVICE]);
  const logs = new LogCapture();
  let influx: InfluxV1;
  let stack: LocalStack;
  let field: Awaited<ReturnType<typeof startTestFieldClient>>;
  let s: ConsoleSession;

  before(async () => {
    influx = await InfluxV1.start(join(work.dir, 'influxdb'), DB);
    ({ stack } = await startTestStack(pki.dir, join(work.dir, 'stack'), {
      ...influxSettings(influx, DB),
      COMMAND_API_TOKENS_FILE: writeRoleTokens(work.dir),
    }));
    field = await startTestFieldClient(pki.paths, DEVICE, stack.urls.wss, logs.logger);
    s = new ConsoleSession(stack.urls.console);
    await s.login(ROLE_TOKENS.viewer);
  });
  after(async () => {
    await field?.close();
    await stack?.close();
    await influx?.process.stop();
    pki.cleanup();
    work.cleanup();
  });

  it('shows the device live, flags a spike as an anomaly live, and stores states and anomalies in InfluxDB', async () => {
    const live = await s.live();
    try {
      await live.until((e: SseEvent) => {
        const rows = e.event === 'snapshot' ? (e.data as { devices: DeviceRow[] }).devices : e.event === 'devices' ? (e.data as { rows: DeviceRow[] }).rows : [];
        return rows.find((r) => r.id === DEVICE && r.state === 'online');
      });
      // A steady signal with a little noise, then one reading far outside it.
      const t0 = Date.now() - 10 * 60_000;
      const normal = Array.from({ length: 120 }, (_, i) => ({ dataType: 'timeseries' as const, payload: { temperature: 60 + Math.sin(i / 5) * 0.5 + (i % 3) * 0.05, timestamp: t0 + i * 1000 } }));
      await field.client.submitMany(normal);
      // The spike only once the steady readings are in the database (and so in the stored feed
      // before it): frames travel in envelopes the distributor's consumers write in parallel, so a
      // spike sent at once could reach the detectors before the readings it stands out from.
      await eventually(() => (field.client.unacknowledged === 0 ? true : undefined), 30_000, 'the steady readings committed');
      await field.client.submit('timeseries', { temperature: 250, timestamp: t0 + 121_000 });
      const spike = await live.until((e) => (e.event === 'anomalies' || e.event === 'snapshot' ? (e.data as { anomalies: Anomaly[] }).anomalies.find((a) => a.device === DEVICE && a.field === 'temperature') : undefined), 30_000);
      assert.equal(spike.time, t0 + 121_000, 'the reading that was out of line');
      assert.equal(spike.value, 250);
    } finally {
      live.close();
    }
    const stored = await eventually(async () => {
      const rows = await influx.rows(DB, `SELECT score, value FROM anomalies WHERE device = '${DEVICE}' AND field_name = 'temperature'`);
      return rows.length > 0 ? rows : undefined;
    }, 20_000, 'the anomaly in InfluxDB');
    assert.equal(stored[0]?.value, 250);
    const states = await eventually(async () => {
      const rows = await influx.rows(DB, `SELECT state, previous FROM device_state WHERE device = '${DEVICE}'`);
      return rows.some((r) => r.state === 'online') ? rows : undefined;
    }, 20_000, 'the state change in InfluxDB');
    assert.ok(states.length >= 1);
  });

  it("takes the device offline when its gateway dies (the broker's will), and online again when it reconnects", async () => {
    const live = await s.live();
    const stateOf = (state: string) => (e: SseEvent) => {
      const rows = e.event === 'snapshot' ? (e.data as { devices: DeviceRow[] }).devices : e.event === 'devices' ? (e.data as { rows: DeviceRow[] }).rows : [];
      return rows.find((r) => r.id === DEVICE && r.state === state);
    };
    try {
      await live.until(stateOf('online'));
      const before = live.events.length;
      await stack.kill('gateway-1'); // SIGKILL: no word from the gateway; the supervisor starts it again
      const offline = await live.until((e) => (live.events.indexOf(e) >= before ? stateOf('offline')(e) : undefined), 30_000);
      assert.equal(offline.gateway, 'gateway-1');
      await live.until((e) => (live.events.indexOf(e) > live.events.findIndex((x) => x.event !== 'snapshot' && stateOf('offline')(x)) ? stateOf('online')(e) : undefined), 60_000);
    } finally {
      live.close();
    }
    const stored = await influx.rows(DB, `SELECT state FROM gateway_status WHERE gateway = 'gateway-1'`);
    assert.ok(stored.some((r) => r.state === 'offline'), 'the gateway gone is stored');
  });

  it('reads history through InfluxQL', async () => {
    const now = Date.now();
    const h = await s.request(`/api/devices/${DEVICE}/history?field=temperature&from=${now - 30 * 60_000}&to=${now}`);
    assert.equal(h.status, 200, JSON.stringify(h.body));
    const values = (h.body.points as Array<[number, number]>).map((p) => p[1]);
    assert.ok(values.length >= 20, `history points: ${values.length}`);
    assert.ok(Math.max(...values) > 60, 'the spike is in the window (averaged into its bucket)');
  });

  it('keeps what the anomaly detectors learnt across a restart: the first reading after it is scored against the device\'s baseline', async () => {
    // The device's 120 readings above made its baseline. Restarted afresh, the console would score
    // nothing of it before madMinSamples (32) new readings; restored, a spike is flagged at once.
    await stack.component('console').restart();
    const saved = readFileSync(join(work.dir, 'stack', 'console-state', 'anomaly-state.jsonl'), 'utf8').split('\n');
    assert.ok(saved.some((l) => l.startsWith(`{"id":"${DEVICE}"`)), 'the device is in the saved state');
    const restored = await eventually(() => (stack.component('console').tail(400).includes('anomaly state restored') ? true : undefined), 10_000, 'the restored state in the log');
    assert.ok(restored);
    const session = new ConsoleSession(stack.urls.console);
    await session.login(ROLE_TOKENS.viewer);
    const live = await session.live();
    try {
      const at = Date.now() - 60_000;
      await field.client.submit('timeseries', { temperature: -120, timestamp: at });
      const spike = await live.until((e) => (e.event === 'anomalies' || e.event === 'snapshot' ? (e.data as { anomalies: Anomaly[] }).anomalies.find((a) => a.device === DEVICE && a.time === at) : undefined), 30_000);
      assert.deepEqual([spike.detector, spike.field, spike.value], ['mad', 'temperature', -120]);
    } finally {
      live.close();
    }
  });
});
