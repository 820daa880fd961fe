import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connectAsync } from 'mqtt';
import type { LastHealth } from '../../field-client/src/health.ts';
import type { StoredPoint } from '../../internal-network/distributor/points.ts';
import { LIMITS } from '../../shared/limits.ts';
import { startEmbeddedFixture, type EmbeddedFixture } from '../helpers/embedded.ts';
import { startTestFieldClient } from '../helpers/field.ts';
import { eventually } from '../helpers/ws-device.ts';

const VERSION = (JSON.parse(readFileSync(join(import.meta.dirname, '..', '..', 'package.json'), 'utf8')) as { version: string }).version;
/** The fields every health point has, whatever the device. */
const ALWAYS = ['uptime_s', 'queue_messages', 'queue_bytes', 'awaiting_receipt', 'version', 'interval_s'];
/** What this device can tell too: a readable certificate, a data folder, a gateway's welcome. */
const KNOWN_HERE = ['free_disk_bytes', 'cert_days_left', 'clock_offset_ms'];

type Field = Awaited<ReturnType<typeof startTestFieldClient>>;

function cli(args: string[], httpPort: number): Promise<{ status: number; stdout: string; stderr: string }> {
  const env = { PATH: process.env.PATH, FIELDSTREAM_ENV_FILE: '/dev/null', FIELD_HTTP_PORT: String(httpPort) };
  return new Promise((resolve) => {
    execFile(join(import.meta.dirname, '..', '..', 'bin', 'fieldstream'), args, { env, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ status: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

/**
 * Health heartbeats through the embedded pipeline: a field client queues them, signed and durable
 * like any message, with the values a local program gave its HTTP or MQTT input, and the
 * distributor stores each as a device_health point.
 */
describe('health messages, from the field client to the device_health measurement', () => {
  let fx: EmbeddedFixture;
  let field: Field;
  let hourly: Field;
  let startedAt: number;
  before(async () => {
    fx = await startEmbeddedFixture(['health-001', 'health-002']);
    startedAt = Date.now();
    field = await startTestFieldClient(fx.pki.paths, 'health-001', fx.pipeline.gatewayUrl, fx.logs.logger, {
      FIELD_HEALTH_INTERVAL_S: '1',
      FIELD_HTTP_PORT: '0',
      FIELD_MQTT_PORT: '0',
    });
    // An interval far longer than the test: only the first message, which goes at the welcome, can arrive.
    hourly = await startTestFieldClient(fx.pki.paths, 'health-002', fx.pipeline.gatewayUrl, fx.logs.logger, { FIELD_HEALTH_INTERVAL_S: '3600' });
  });
  after(async () => {
    await hourly?.close();
    await field?.close();
    await fx?.stop();
  });

  const url = (path: string) => `http://127.0.0.1:${field.httpPort}${path}`;
  const put = (body: string, method = 'PUT') => fetch(url('/v1/health'), { method, headers: { 'content-type': 'application/json' }, body });
  const healthPoints = (device: string) => fx.points({ measurement: 'device_health', device });

  it('sends the first health message at the connection, not an interval later', async () => {
    const [p] = await eventually(() => (healthPoints('health-002').length > 0 ? healthPoints('health-002') : undefined), 10_000, 'the first health point');
    assert.ok(Date.now() - startedAt < 10_000);
    assert.equal(p!.fields.interval_s, 3600);
    assert.deepEqual(Object.keys(p!.fields).sort(), [...ALWAYS, ...KNOWN_HERE].sort(), 'no local values given: none stored');
  });

  it('takes local values over HTTP and stores them with every figure, under the names the console reads', async () => {
    const r = await put(JSON.stringify({ battery: 87, signal_dbm: -71, network: 'LTE' }));
    assert.equal(r.status, 200);
    assert.deepEqual(((await r.json()) as { local: unknown }).local, { battery: 87, signal_dbm: -71, network: 'LTE' });

    const p = await eventually(() => healthPoints('health-001').find((x) => x.fields.local_battery === 87), 10_000, 'a health point with the local values');
    assert.deepEqual(Object.keys(p.fields).sort(), [...ALWAYS, ...KNOWN_HERE, 'local_battery', 'local_network', 'local_signal_dbm'].sort());
    assert.deepEqual(p.tags, { device: 'health-001' });
    assert.equal(p.fields.local_signal_dbm, -71);
    assert.equal(p.fields.local_network, 'LTE');
    assert.equal(p.fields.version, VERSION);
    assert.equal(p.fields.interval_s, 1);
    assert.ok((p.fields.free_disk_bytes as number) > 0);
    assert.ok((p.fields.cert_days_left as number) > 0);
    assert.ok(Math.abs(p.fields.clock_offset_ms as number) < 5_000, 'one machine: gateway and device share a clock');
    assert.ok((p.fields.uptime_s as number) >= 0);
  });

  it("stores each message at its own timestamp, with the figures the device sent", async () => {
    const { last } = (await (await fetch(url('/v1/health'))).json()) as { last: LastHealth };
    const p = await eventually(() => healthPoints('health-001').find((x) => x.time === Date.parse(last.payload.timestamp as string)), 10_000, 'the point of the last message');
    const h = last.payload;
    assert.deepEqual(p.fields, {
      uptime_s: h.uptimeSeconds,
      queue_messages: h.queueMessages,
      queue_bytes: h.queueBytes,
      awaiting_receipt: h.awaitingReceipt,
      ...(h.oldestUnsentAgeSeconds !== undefined ? { oldest_unsent_age_s: h.oldestUnsentAgeSeconds } : {}),
      free_disk_bytes: h.freeDiskBytes,
      cert_days_left: h.certDaysLeft,
      clock_offset_ms: h.clockOffsetMs,
      version: h.version,
      interval_s: 1,
      ...Object.fromEntries(Object.entries(h.local ?? {}).map(([k, v]) => [`local_${k}`, v])),
    } as StoredPoint['fields']);
  });

  it('refuses bad local values with FIELD_INPUT_INVALID and keeps the good ones', async () => {
    const tooMany = JSON.stringify(Object.fromEntries(Array.from({ length: LIMITS.healthLocalMaxValues + 1 }, (_, i) => [`v${i}`, i])));
    for (const [body, method] of [
      ['{"battery": ', 'PUT'],
      ['[87]', 'PUT'],
      ['{"bad name": 1}', 'PUT'],
      ['{"1st": 1}', 'PUT'],
      [`{"${'n'.repeat(65)}": 1}`, 'PUT'],
      ['{"nested": {"a": 1}}', 'PUT'],
      [`{"note": "${'x'.repeat(LIMITS.healthLocalStringMaxChars + 1)}"}`, 'PUT'],
      [tooMany, 'PUT'],
      [JSON.stringify({ big: 'x'.repeat(LIMITS.healthLocalBodyMaxBytes) }), 'PUT'],
      ['{"battery": 1}', 'POST'],
    ] as const) {
      const r = await put(body, method);
      assert.equal(r.status, 400, `${method} ${body.slice(0, 40)}`);
      assert.equal(((await r.json()) as { code: string }).code, 'FIELD_INPUT_INVALID');
    }
    const now = (await (await fetch(url('/v1/health'))).json()) as { local: Record<string, unknown> };
    assert.deepEqual(now.local, { battery: 87, signal_dbm: -71, network: 'LTE' }, 'nothing refused was taken');
  });

  it('takes local values over MQTT too, null removing one; garbage closes the connection', async () => {
    const sensor = await connectAsync(`mqtt://127.0.0.1:${field.mqttPort}`, { protocolVersion: 4, clientId: 'battery-monitor', reconnectPeriod: 0 });
    await sensor.publishAsync('fieldstream/local/health', JSON.stringify({ battery: 42, network: null }), { qos: 1 });
    const p = await eventually(() => healthPoints('health-001').find((x) => x.fields.local_battery === 42), 10_000, 'a point with the MQTT value');
    assert.equal(p.fields.local_signal_dbm, -71, 'the value not named is kept');
    assert.equal(p.fields.local_network, undefined, 'null removed it');
    const closed = new Promise<void>((resolve) => sensor.once('close', () => resolve()));
    sensor.publish('fieldstream/local/health', '{"bad name": 1}', { qos: 1 });
    await closed;
    await sensor.endAsync(true);
    assert.ok(fx.logs.lines.some((l) => l.code === 'FIELD_INPUT_INVALID' && l.topic === 'fieldstream/local/health'));
  });

  it('takes local values from the command line, which shows them back', async () => {
    const set = await cli(['health', '{"battery": 55}'], field.httpPort!);
    assert.equal(set.status, 0, set.stderr);
    assert.equal((JSON.parse(set.stdout) as { local: { battery: number } }).local.battery, 55);
    const bad = await cli(['health', '{"bad name": 1}'], field.httpPort!);
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /FIELD_INPUT_INVALID/);
    const shown = await cli(['health'], field.httpPort!);
    assert.equal((JSON.parse(shown.stdout) as { local: { battery: number } }).local.battery, 55);
    await eventually(() => healthPoints('health-001').find((x) => x.fields.local_battery === 55), 10_000, 'a point with the value from the command line');
  });

  it('shows the last health message in /status', async () => {
    const status = (await (await fetch(url('/status'))).json()) as { health: { intervalSeconds: number; last: LastHealth | null } };
    assert.equal(status.health.intervalSeconds, 1);
    assert.ok(status.health.last && status.health.last.payload.version === VERSION);
  });
});
