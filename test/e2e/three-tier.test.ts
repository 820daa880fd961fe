import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connectAsync } from 'mqtt';
import WebSocket from 'ws';
import { SEED_DEVICE_OF, SEED_MESSAGES } from '../fixtures/seed-messages.ts';
import { eventually, RawDevice } from '../helpers/ws-device.ts';
import { foreignDeviceCert, makeTestPki, tempDir } from '../helpers/pki.ts';
import { InfluxV1 } from '../../scripts/local-stack/databases.ts';
import { VictoriaMetrics } from '../../scripts/local-stack/victoria-metrics.ts';
import { api, extraDistributor, startTestStack, influxSettings } from '../helpers/stack.ts';
import { LogCapture } from '../helpers/embedded.ts';
import type { LocalStack } from '../../scripts/local-stack/stack.ts';
import type { ManagedProcess } from '../../scripts/local-stack/process.ts';
import { commandTopic, uplinkTopic } from '../../shared/contract/topics.ts';
import type { RunningFieldClient } from '../../field-client/src/start.ts';
import { startTestFieldClient } from '../helpers/field.ts';

const DB = 'sensor_data';
const DEVICES = ['sensor-001', 'camera-001', 'alarm-001', 'actuator-001', 'field-a', 'field-b', 'mallory'];

describe('three tiers on real components: Caddy, two Mosquittos and the bridge, InfluxDB 1.x, VictoriaMetrics', () => {
  const work = tempDir('stack');
  const pki = makeTestPki(DEVICES);
  let influx: InfluxV1;
  let vm: VictoriaMetrics;
  let stack: LocalStack;
  let token: string;
  let vmDistributor: ManagedProcess;
  const logs = new LogCapture();

  before(async () => {
    influx = await InfluxV1.start(join(work.dir, 'influxdb'), DB);
    vm = await VictoriaMetrics.start(join(work.dir, 'vm'));
    ({ stack, token } = await startTestStack(pki.dir, join(work.dir, 'stack'), {
      ...influxSettings(influx, DB),
    }, { gateways: 2 }));
    // A second distributor, in a share group of its own, writes everything to VictoriaMetrics
    // through @influxdata/influxdb-client (the InfluxDB 2.x path).
    vmDistributor = extraDistributor('distributor-vm', pki.paths, stack.urls.internalMqtt, join(work.dir, 'stack'), {
      INFLUXDB_URL: vm.url,
      INFLUXDB_TOKEN: 'victoria-metrics-ignores-it',
      INFLUXDB_ORG: 'fieldstream',
      INFLUXDB_BUCKET: 'sensor-data',
    });
    await vmDistributor.start();
  });
  after(async () => {
    await vmDistributor?.stop();
    await stack?.close();
    await vm?.process.stop();
    await influx?.process.stop();
    pki.cleanup();
    work.cleanup();
  });

  describe("the seed's four examples typed into a raw WebSocket, through every tier", () => {
    before(async () => {
      for (const [kind, text] of Object.entries(SEED_MESSAGES)) {
        const d = await RawDevice.connect(stack.urls.wss, RawDevice.tlsFor(pki.paths, SEED_DEVICE_OF[kind as keyof typeof SEED_DEVICE_OF]));
        d.send(text);
        const frame = await d.next();
        assert.equal(frame.type, 'ack', JSON.stringify(frame));
        d.close();
      }
    });

    it('InfluxDB 1.x holds the reading: values as floats, the device timestamp', async () => {
      const rows = await eventually(async () => {
        const r = await influx.rows(DB, `SELECT * FROM readings WHERE device = 'sensor-001'`);
        return r.length > 0 ? r : undefined;
      });
      assert.deepEqual(rows, [{ time: Date.parse('2024-01-01T12:00:00Z'), device: 'sensor-001', temperature: 23.5, humidity: 65.2, pressure: 1013.25 }]);
      const types = await influx.rows(DB, 'SHOW FIELD KEYS FROM readings');
      assert.ok(types.every((t) => t.fieldType === 'float'), JSON.stringify(types));
    });

    it('InfluxDB 1.x holds the event, the command response and the file record, strings kept', async () => {
      const ev = await eventually(async () => {
        const r = await influx.rows(DB, `SELECT * FROM events WHERE device = 'alarm-001'`);
        return r.length > 0 ? r : undefined;
      });
      assert.deepEqual(ev, [{ time: Date.parse('2024-01-01T12:00:00Z'), device: 'alarm-001', event_type: 'alarm', severity: 'high', message: 'Temperature threshold exceeded' }]);
      const resp = await eventually(async () => {
        const r = await influx.rows(DB, `SELECT * FROM command_responses WHERE device = 'actuator-001'`);
        return r.length > 0 ? r : undefined;
      });
      assert.equal(resp[0]?.cmd_id, 'cmd-12345');
      assert.equal(resp[0]?.status, 'completed');
      assert.equal(resp[0]?.result, 'valve opened');
      const files = await eventually(async () => {
        const r = await influx.rows(DB, `SELECT * FROM files WHERE device = 'camera-001'`);
        return r.length > 0 ? r : undefined;
      });
      assert.equal(files[0]?.filename, 'image_20240101_120000.jpg');
      assert.equal(files[0]?.size, 16);
      assert.equal(files[0]?.content_type, 'image/jpeg');
    });

    it('VictoriaMetrics holds the reading through the v2 write API, same values and timestamp', async () => {
      const series = await eventually(async () => {
        const s = await vm.export('readings_.*');
        return s.filter((x) => x.metric.device === 'sensor-001').length === 3 ? s.filter((x) => x.metric.device === 'sensor-001') : undefined;
      });
      const byName = Object.fromEntries(series.map((s) => [s.metric.__name__, s]));
      assert.deepEqual(byName.readings_temperature?.values, [23.5]);
      assert.deepEqual(byName.readings_humidity?.values, [65.2]);
      assert.deepEqual(byName.readings_pressure?.values, [1013.25]);
      assert.deepEqual(byName.readings_temperature?.timestamps, [Date.parse('2024-01-01T12:00:00Z')]);
    });

    it('the file arrives byte-identical', async () => {
      const path = join(stack.dataDir.files, 'camera-001', 'image_20240101_120000.jpg');
      await eventually(() => (existsSync(path) ? true : undefined));
      assert.deepEqual(readFileSync(path), Buffer.from('base64-encoded-content', 'base64'));
    });
  });

  describe('the field client through Caddy', () => {
    let field: RunningFieldClient;
    before(async () => {
      field = await startTestFieldClient(pki.paths, 'field-a', stack.urls.wss, logs.logger);
    });
    after(() => field.close());

    it('streams readings and a binary file that arrive intact', async () => {
      const base = Date.parse('2025-03-01T00:00:00Z');
      const file = Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 7919) % 256));
      await Promise.all([
        ...Array.from({ length: 500 }, (_, i) => field.client.submit('timeseries', { flow: i * 0.5, pump_on: i % 2 === 0, mode: 'auto', timestamp: base + i * 1000 })),
        field.client.submit('file', { filename: 'capture.bin', contentType: 'application/octet-stream', data: file.toString('base64') }),
      ]);
      const rows = await eventually(async () => {
        const r = await influx.rows(DB, `SELECT * FROM readings WHERE device = 'field-a'`);
        return r.length === 500 ? r : undefined;
      }, 30_000);
      assert.deepEqual(rows[7], { time: base + 7000, device: 'field-a', flow: 3.5, pump_on: false, mode: 'auto', humidity: null, pressure: null, temperature: null });
      const path = join(stack.dataDir.files, 'field-a', 'capture.bin');
      await eventually(() => (existsSync(path) ? true : undefined));
      assert.ok(readFileSync(path).equals(file));
    });
  });

  describe('commands both ways, whichever gateway holds the device', () => {
    const fields: RunningFieldClient[] = [];
    before(async () => {
      for (const id of ['field-b', 'actuator-001']) {
        const f = await startTestFieldClient(pki.paths, id, stack.urls.wss, logs.logger);
        f.commands.register('open_valve', (params) => ({ status: 'completed', result: `valve opened to ${(params as { pct: number }).pct}%` }));
        fields.push(f);
      }
      // Caddy spreads connections over both gateways; wait until both devices are online.
      await eventually(async () => {
        const r = await influx.rows(DB, `SELECT last(state) FROM device_status WHERE device = 'field-b' OR device = 'actuator-001' GROUP BY device, gateway`);
        return r.length >= 2 ? r : undefined;
      });
    });
    after(async () => {
      for (const f of fields) await f.close();
    });

    it('sends a command to a group of devices; each response is recorded against its command id', async () => {
      const issued = await api(stack, token, 'POST', '/v1/commands', { deviceIds: ['field-b', 'actuator-001'], command: 'open_valve', params: { pct: 30 } });
      assert.equal(issued.status, 202);
      assert.equal(issued.body.commands.length, 2);
      for (const c of issued.body.commands as Array<{ commandId: string; deviceId: string }>) {
        const done = await eventually(async () => {
          const r = await api(stack, token, 'GET', `/v1/commands/${c.commandId}`);
          return r.body.state === 'completed' ? r.body : undefined;
        });
        assert.equal(done.deviceId, c.deviceId);
        assert.equal(done.response.result, 'valve opened to 30%');
      }
    });

    it('the devices sat on different gateways', async () => {
      const body = await influx.query(`SELECT last(state) FROM device_status WHERE (device = 'field-b' OR device = 'actuator-001') AND state = 'online' GROUP BY device, gateway`, DB);
      const byDevice = new Map<string, Set<string>>();
      for (const s of (body.results?.[0]?.series ?? []) as Array<{ tags?: Record<string, string> }>) {
        const tags = s.tags ?? {};
        if (!tags.device || !tags.gateway) continue;
        byDevice.set(tags.device, (byDevice.get(tags.device) ?? new Set()).add(tags.gateway));
      }
      const gatewaysUsed = new Set([...byDevice.values()].flatMap((s) => [...s]));
      assert.ok(gatewaysUsed.size === 2, `both gateways held a device: ${JSON.stringify([...byDevice].map(([d, g]) => [d, [...g]]))}`);
    });

    it('answers an unknown command "rejected", and refuses bad requests with codes', async () => {
      const issued = await api(stack, token, 'POST', '/v1/commands', { deviceId: 'field-b', command: 'launch_rocket' });
      const id = issued.body.commands[0].commandId as string;
      const done = await eventually(async () => {
        const r = await api(stack, token, 'GET', `/v1/commands/${id}`);
        return r.body.state === 'rejected' ? r.body : undefined;
      });
      assert.match(String(done.response.result), /unknown command/);
      assert.equal((await api(stack, 'wrong-token', 'GET', '/v1/commands')).body.code, 'API_UNAUTHORIZED');
      assert.equal((await api(stack, token, 'POST', '/v1/commands', '{"deviceId": ')).body.code, 'API_INVALID_BODY');
      assert.equal((await api(stack, token, 'POST', '/v1/commands', { deviceId: '../x', command: 'a' })).body.code, 'API_INVALID_BODY');
      assert.equal((await api(stack, token, 'POST', '/v1/commands', { deviceId: 'a', deviceIds: ['b'], command: 'a' })).body.code, 'API_INVALID_BODY');
      assert.equal((await api(stack, token, 'POST', '/v1/commands', { group: 'nobody', command: 'a' })).body.code, 'API_UNKNOWN_GROUP');
      assert.equal((await api(stack, token, 'GET', '/v1/commands/cmd-none')).status, 404);
    });
  });

  describe('refused, each with its documented error', () => {
    it('no client certificate: Caddy refuses the handshake', async () => {
      await assert.rejects(RawDevice.connect(stack.urls.wss, { ca: readFileSync(pki.paths.publicCa, 'utf8') }));
    });

    it('a certificate from another CA: refused', async () => {
      const f = foreignDeviceCert('sensor-001');
      await assert.rejects(RawDevice.connect(stack.urls.wss, { ca: readFileSync(pki.paths.publicCa, 'utf8'), cert: f.cert, key: f.key }));
    });

    it("a device claiming another device's id: GATEWAY_DEVICE_MISMATCH", async () => {
      const d = await RawDevice.connect(stack.urls.wss, RawDevice.tlsFor(pki.paths, 'mallory'));
      d.send(SEED_MESSAGES.timeseries);
      const frame = await d.next();
      assert.equal(frame.type === 'error' && frame.code, 'GATEWAY_DEVICE_MISMATCH');
      d.close();
    });

    it('an identity header sent by a client never gets through', async () => {
      const victimDer = new X509Certificate(readFileSync(pki.paths.device('sensor-001').cert)).raw.toString('base64');
      const ws = new WebSocket(stack.urls.wss, {
        ...RawDevice.tlsFor(pki.paths, 'mallory'),
        headers: { 'X-FieldStream-Client-Cert': victimDer },
      });
      const frames: string[] = [];
      ws.on('message', (m) => {
        if (JSON.parse(m.toString()).type !== 'welcome') frames.push(m.toString());
      });
      await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
      ws.send(SEED_MESSAGES.timeseries);
      await eventually(() => (frames.length > 0 ? true : undefined));
      assert.equal(JSON.parse(frames[0] as string).code, 'GATEWAY_DEVICE_MISMATCH', 'the gateway still sees mallory');
      ws.close();
    });

    it('a device connecting straight to a gateway, around Caddy: GATEWAY_UNTRUSTED_PROXY', async () => {
      const err = await RawDevice.connect(`wss://localhost:${stack.ports.gateways[0]}/ws`, RawDevice.tlsFor(pki.paths, 'sensor-001')).then(
        () => assert.fail('connected'),
        (e: { status?: number; body?: string }) => e,
      );
      assert.equal(err.status, 403);
      assert.equal(JSON.parse(err.body ?? '{}').code, 'GATEWAY_UNTRUSTED_PROXY');
    });

    it('a handshake that skipped client authentication never reaches a gateway', async () => {
      // TLS client authentication is chosen by SNI. Another SNI gets no certificate at all; no SNI
      // gets a handshake without client_auth, and then strict_sni_host answers 421.
      const attempt = (servername: string) =>
        new Promise<string>((resolve, reject) => {
          const ws = new WebSocket(stack.urls.wss.replace('localhost', '127.0.0.1'), {
            headers: { host: `localhost:${stack.ports.https}` },
            servername,
            rejectUnauthorized: false,
          } as WebSocket.ClientOptions);
          ws.once('unexpected-response', (_q, r) => resolve(`HTTP ${r.statusCode}`));
          ws.once('open', () => reject(new Error('opened')));
          ws.once('error', (e) => resolve(e.message));
        });
      assert.match(await attempt('not-our-site.example'), /alert/);
      assert.equal(await attempt(''), 'HTTP 421');
    });

    for (const broker of ['dmzMqtt', 'internalMqtt'] as const) {
      it(`a client without a valid certificate cannot connect to the ${broker === 'dmzMqtt' ? 'DMZ' : 'internal'} broker`, async () => {
        const url = stack.urls[broker];
        await assert.rejects(connectAsync(url, { ca: readFileSync(pki.paths.publicCa), protocolVersion: 5, reconnectPeriod: 0, connectTimeout: 5000 }));
        const f = foreignDeviceCert('gateway');
        await assert.rejects(connectAsync(url, { ca: readFileSync(pki.paths.publicCa), cert: f.cert, key: f.key, protocolVersion: 5, reconnectPeriod: 0, connectTimeout: 5000 }));
      });
    }

    it("the gateway's certificate cannot publish outside its topics (PUBACK 135)", async () => {
      const gw = pki.paths.service('dmz/gateway');
      const c = await connectAsync(stack.urls.dmzMqtt, { ca: readFileSync(pki.paths.publicCa), cert: readFileSync(gw.cert), key: readFileSync(gw.key), protocolVersion: 5, reconnectPeriod: 0 });
      try {
        await assert.rejects(c.publishAsync(commandTopic('sensor-001'), '{}', { qos: 1 }), (e: { code?: number }) => e.code === 135);
        await assert.rejects(c.publishAsync('$SYS/anything', 'x', { qos: 1 }), (e: { code?: number }) => e.code === 135);
        await c.publishAsync(uplinkTopic('sensor-001', 'event'), 'not an envelope', { qos: 1 }); // allowed: the distributor will dead-letter it
      } finally {
        await c.endAsync();
      }
    });

    it("a device cannot read another device's commands, nor publish", async () => {
      const ca = readFileSync(pki.paths.publicCa);
      const as = (f: { cert: string; key: string }, url: string) =>
        connectAsync(url, { ca, cert: readFileSync(f.cert), key: readFileSync(f.key), protocolVersion: 5, reconnectPeriod: 0 });
      const mallory = await as(pki.paths.device('mallory'), stack.urls.dmzMqtt);
      const control = await as(pki.paths.service('dmz/gateway'), stack.urls.dmzMqtt); // allowed to read commands
      const sender = await as(pki.paths.service('internal/command-api'), stack.urls.internalMqtt);
      try {
        const stolen: string[] = [];
        const seen: string[] = [];
        mallory.on('message', (t) => stolen.push(t));
        control.on('message', (t) => seen.push(t));
        // Mosquitto 2.0 grants the SUBACK and enforces "read" on delivery: nothing must arrive.
        await mallory.subscribeAsync(commandTopic('sensor-001'), { qos: 1 }).catch(() => undefined);
        await control.subscribeAsync(commandTopic('sensor-001'), { qos: 1 });
        await sender.publishAsync(commandTopic('sensor-001'), JSON.stringify({ v: 1, commandId: 'cmd-acl-probe', command: 'ping', issuedAt: Date.now() }), { qos: 1 });
        await eventually(() => (seen.length > 0 ? true : undefined), 10_000, 'the command to cross the bridge');
        await new Promise((r) => setTimeout(r, 500));
        assert.deepEqual(stolen, []);
        await assert.rejects(mallory.publishAsync(uplinkTopic('mallory', 'timeseries'), '{}', { qos: 1 }), (e: { code?: number }) => e.code === 135);
      } finally {
        for (const c of [mallory, control, sender]) await c.endAsync();
      }
    });
  });
});
