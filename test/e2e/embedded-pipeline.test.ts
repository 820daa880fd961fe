import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import { connectAsync } from 'mqtt';
import { SEED_DEVICE_OF, SEED_MESSAGES } from '../fixtures/seed-messages.ts';
import { eventually, RawDevice } from '../helpers/ws-device.ts';
import { startEmbeddedFixture, type EmbeddedFixture } from '../helpers/embedded.ts';
import { foreignDeviceCert, makeTestPki, tempDir } from '../helpers/pki.ts';
import { createLogger } from '../../shared/logger.ts';
import { startEmbeddedPipeline } from '../../embedded/pipeline.ts';
import { CommandEnvelopeSchema, ENVELOPE_VERSION } from '../../shared/contract/envelope.ts';
import { commandTopic } from '../../shared/contract/topics.ts';
import type { RunningFieldClient } from '../../field-client/src/start.ts';
import { startTestFieldClient } from '../helpers/field.ts';
import type { z } from 'zod';
import { signCommand } from '../../shared/security/command-auth.ts';
import { parseSigningKey } from '../../shared/security/message-auth.ts';

const DEVICES = ['sensor-001', 'camera-001', 'alarm-001', 'actuator-001', 'field-007'];

describe('the embedded pipeline over real WSS, MQTT and disk', () => {
  let fx: EmbeddedFixture;
  let url: string;
  before(async () => {
    fx = await startEmbeddedFixture(DEVICES, { GATEWAY_MAX_FRAME_BYTES: String(256 * 1024) });
    url = fx.pipeline.gatewayUrl;
  });
  after(() => fx.stop());

  const device = (id: string) => RawDevice.connect(url, RawDevice.tlsFor(fx.pki.paths, id));

  describe("the seed's four examples, typed as into wscat", () => {
    const acked: Record<string, string> = {};
    before(async () => {
      for (const [kind, text] of Object.entries(SEED_MESSAGES)) {
        const d = await device(SEED_DEVICE_OF[kind as keyof typeof SEED_DEVICE_OF]);
        d.send(text);
        const frame = await d.next();
        assert.equal(frame.type, 'ack', JSON.stringify(frame));
        assert.equal(frame.type === 'ack' && frame.messageIds.length, 1);
        acked[kind] = frame.type === 'ack' ? (frame.messageIds[0] as string) : '';
        d.close();
      }
    });

    it('stores the reading with its own timestamp, numbers as numbers', async () => {
      const [p] = await eventually(() => {
        const pts = fx.points({ measurement: 'readings', device: 'sensor-001' });
        return pts.length > 0 ? pts : undefined;
      });
      assert.equal(new Date(p!.time).toISOString(), '2024-01-01T12:00:00.000Z');
      assert.deepEqual(p!.fields, { temperature: 23.5, humidity: 65.2, pressure: 1013.25 });
      assert.ok(acked.timeseries && acked.timeseries.length > 0, 'the gateway gave the message an id');
    });

    it('stores the file under the device, byte for byte, and records it', async () => {
      const path = join(fx.data.files, 'camera-001', 'image_20240101_120000.jpg');
      await eventually(() => (existsSync(path) ? true : undefined));
      assert.deepEqual(readFileSync(path), Buffer.from('base64-encoded-content', 'base64'));
      const [rec] = await eventually(() => {
        const pts = fx.points({ measurement: 'files', device: 'camera-001' });
        return pts.length > 0 ? pts : undefined;
      });
      assert.equal(rec!.fields.path, join('camera-001', 'image_20240101_120000.jpg'));
      assert.equal(rec!.fields.declared_size, 1024000);
      assert.equal(rec!.fields.size, 16);
      assert.equal(rec!.fields.content_type, 'image/jpeg');
    });

    it('stores the event in a measurement of its own', async () => {
      const [p] = await eventually(() => {
        const pts = fx.points({ measurement: 'events', device: 'alarm-001' });
        return pts.length > 0 ? pts : undefined;
      });
      assert.deepEqual(p!.tags, { device: 'alarm-001', event_type: 'alarm', severity: 'high' });
      assert.equal(p!.fields.message, 'Temperature threshold exceeded');
      assert.equal(new Date(p!.time).toISOString(), '2024-01-01T12:00:00.000Z');
    });

    it('stores the command response against its command id', async () => {
      const [p] = await eventually(() => {
        const pts = fx.points({ measurement: 'command_responses', device: 'actuator-001' });
        return pts.length > 0 ? pts : undefined;
      });
      // The id a field, not a tag: a tag made a series per command (points.ts responsePoints).
      assert.deepEqual(p!.tags, { device: 'actuator-001', status: 'completed' });
      assert.equal(p!.fields.cmd_id, 'cmd-12345');
      assert.equal(p!.fields.result, 'valve opened');
    });
  });

  describe('identity comes from the client certificate', () => {
    it("refuses a message claiming another device's id, and stores nothing of it", async () => {
      const d = await device('sensor-001');
      d.send(JSON.stringify({ deviceId: 'camera-001', dataType: 'timeseries', messageId: 'spoof-1', payload: { spoofed: 1 } }));
      const frame = await d.next();
      assert.equal(frame.type, 'error');
      assert.equal(frame.type === 'error' && frame.code, 'GATEWAY_DEVICE_MISMATCH');
      assert.deepEqual(frame.type === 'error' && frame.messageIds, ['spoof-1']);
      // A batch with one foreign message is refused whole.
      d.send(JSON.stringify({ deviceId: 'sensor-001', batch: [{ dataType: 'timeseries', payload: { spoofed: 2 } }, { deviceId: 'camera-001', dataType: 'timeseries', payload: { spoofed: 3 } }] }));
      const second = await d.next();
      assert.equal(second.type === 'error' && second.code, 'GATEWAY_DEVICE_MISMATCH');
      // The connection stays usable, and a proper message after it goes through.
      d.send(JSON.stringify({ deviceId: 'sensor-001', dataType: 'timeseries', messageId: 'ok-1', payload: { marker: 1, timestamp: 1700000000000 } }));
      assert.deepEqual(await d.next(), { type: 'ack', messageIds: ['ok-1'] });
      await eventually(() => (fx.points({ measurement: 'readings' }).some((p) => p.fields.marker === 1) ? true : undefined));
      assert.ok(!fx.points().some((p) => 'spoofed' in p.fields));
      assert.ok(fx.logs.codes().includes('GATEWAY_DEVICE_MISMATCH'));
      d.close();
    });

    it('refuses a client without a certificate at the TLS handshake', async () => {
      await assert.rejects(RawDevice.connect(url, { ca: readFileSync(fx.pki.paths.publicCa, 'utf8') }));
    });

    it('resumes no TLS session: every connection is a full handshake, its certificate verified again', async () => {
      const { hostname, port } = new URL(url);
      const tls = RawDevice.tlsFor(fx.pki.paths, 'sensor-001');
      const handshake = (session?: Buffer) =>
        new Promise<{ reused: boolean; session: Buffer | undefined }>((resolve, reject) => {
          let offered: Buffer | undefined;
          const socket = tlsConnect({ host: hostname, port: Number(port), servername: 'localhost', ...tls, ...(session ? { session } : {}) });
          socket.on('session', (s: Buffer) => (offered = s));
          socket.on('error', reject);
          // Sessions arrive after the handshake (TLS 1.3 NewSessionTicket): wait for them before closing.
          socket.on('secureConnect', () => setTimeout(() => (resolve({ reused: socket.isSessionReused(), session: offered }), socket.destroy()), 200));
        });
      const first = await handshake();
      assert.equal(first.reused, false);
      assert.ok(first.session, 'the client kept a session to offer');
      const second = await handshake(first.session);
      assert.equal(second.reused, false, 'the gateway resumed a session without seeing the certificate');
    });

    it('refuses a certificate from another CA, even with a known device id', async () => {
      const foreign = foreignDeviceCert('sensor-001');
      await assert.rejects(RawDevice.connect(url, { ca: readFileSync(fx.pki.paths.publicCa, 'utf8'), cert: foreign.cert, key: foreign.key }));
    });

    it("refuses a service's certificate: it is not a device", async () => {
      const svc = fx.pki.paths.service('dmz/gateway');
      const err = await RawDevice.connect(url, { ca: readFileSync(fx.pki.paths.publicCa, 'utf8'), cert: readFileSync(svc.cert, 'utf8'), key: readFileSync(svc.key, 'utf8') }).then(
        () => assert.fail('connected'),
        (e: { status?: number; body?: string }) => e,
      );
      assert.equal(err.status, 403);
      assert.equal(JSON.parse(err.body ?? '{}').code, 'GATEWAY_NOT_A_DEVICE_CERTIFICATE');
    });

    it('answers another path with GATEWAY_WRONG_PATH', async () => {
      const err = await RawDevice.connect(url.replace('/ws', '/other'), RawDevice.tlsFor(fx.pki.paths, 'sensor-001')).then(
        () => assert.fail('connected'),
        (e: { status?: number; body?: string }) => e,
      );
      assert.equal(err.status, 404);
      assert.equal(JSON.parse(err.body ?? '{}').code, 'GATEWAY_WRONG_PATH');
    });
  });

  describe('bad input gets a coded error and the gateway stays up', () => {
    it('answers malformed, invalid and binary frames with their codes on a connection that stays open', async () => {
      const d = await device('field-007');
      const cases: Array<[string | Buffer, string]> = [
        ['{"deviceId": "field-007",', 'CONTRACT_MALFORMED_JSON'],
        [JSON.stringify({ deviceId: 'field-007', dataType: 'video', payload: {} }), 'CONTRACT_UNKNOWN_DATA_TYPE'],
        [JSON.stringify({ deviceId: 'field-007', dataType: 'timeseries', payload: { t: 'x'.repeat(70_000) } }), 'CONTRACT_INVALID_MESSAGE'],
        [JSON.stringify({ deviceId: 'field-007', dataType: 'timeseries' }), 'CONTRACT_INVALID_MESSAGE'],
        [JSON.stringify({ deviceId: 'field-007', dataType: 'file', messageId: 'evil', payload: { filename: '../../../etc/cron.d/x', data: 'aGk=' } }), 'CONTRACT_UNSAFE_FILENAME'],
        [Buffer.from([1, 2, 3]), 'CONTRACT_BINARY_FRAME'],
      ];
      for (const [frame, code] of cases) {
        d.send(frame as string);
        const answer = await d.next();
        assert.equal(answer.type, 'error');
        assert.equal(answer.type === 'error' && answer.code, code);
        assert.ok(answer.type === 'error' && answer.message.length > 0);
      }
      d.send(JSON.stringify({ deviceId: 'field-007', dataType: 'event', messageId: 'after-bad', payload: { eventType: 'still_alive' } }));
      assert.deepEqual(await d.next(), { type: 'ack', messageIds: ['after-bad'] });
      assert.ok(!existsSync(join(fx.data.root, 'etc')));
      d.close();
    });

    it('closes a connection that sends an oversized frame (1009) and keeps serving others', async () => {
      const d = await device('field-007');
      d.send('x'.repeat(300 * 1024));
      assert.equal(await d.closed(), 1009);
      const again = await device('field-007');
      again.send(JSON.stringify({ deviceId: 'field-007', dataType: 'timeseries', messageId: 'after-big', payload: { v: 1 } }));
      assert.deepEqual(await again.next(), { type: 'ack', messageIds: ['after-big'] });
      again.close();
    });
  });

  describe('the field client', () => {
    let field: RunningFieldClient;
    before(async () => {
      field = await startTestFieldClient(fx.pki.paths, 'field-007', url, fx.logs.logger, { FIELD_BATCH_MAX: '200' });
    });
    after(() => field.close());

    it('delivers 2,000 readings in batches, each stored exactly once', async () => {
      const base = Date.parse('2025-06-01T00:00:00Z');
      const ids = await Promise.all(Array.from({ length: 2000 }, (_, i) => field.client.submit('timeseries', { level: i, ok: i % 2 === 0, timestamp: base + i })));
      assert.equal(new Set(ids.map((m) => m.messageId)).size, 2000);
      const stored = await eventually(() => {
        const pts = fx.points({ measurement: 'readings', device: 'field-007' }).filter((p) => p.time >= base && p.time < base + 2000);
        return pts.length === 2000 ? pts : undefined;
      });
      assert.deepEqual(stored.map((p) => p.fields.level), Array.from({ length: 2000 }, (_, i) => i));
      assert.equal(stored[3]?.fields.ok, false);
    });

    it('signs an event as the internal side will read it, whatever the order of its fields', async () => {
      // The contract's schema puts eventType first; the client stamps the time last: the signed text
      // must still be the one the distributor re-serialises, or the event is refused, never stored.
      await field.client.submit('event', { zone: 'north', eventType: 'door_open' } as never);
      const stored = await eventually(() => fx.points({ measurement: 'events', device: 'field-007' }).find((p) => p.fields.zone === 'north'));
      assert.equal(stored.tags.event_type, 'door_open');
      assert.equal(fx.points({ measurement: 'security_events', device: 'field-007' }).filter((p) => p.tags.reason === 'SECURITY_BAD_SIGNATURE').length, 0);
      await eventually(() => (field.client.unacknowledged === 0 ? true : undefined), 10_000, 'the event committed');
    });

    it('receives a command through the broker and answers it; an unknown command is rejected', async () => {
      field.commands.register('open_valve', (params) => ({ status: 'completed', result: { opened: (params as { pct: number }).pct } }));
      const api = fx.pki.paths.service('internal/command-api');
      const mqtt = await connectAsync(`mqtts://127.0.0.1:${fx.pipeline.broker.port}`, {
        ca: readFileSync(fx.pki.paths.publicCa),
        cert: readFileSync(api.cert),
        key: readFileSync(api.key),
        protocolVersion: 4,
        clientId: 'test-command-api',
      });
      try {
        // Publishing as the command API, so authenticated as it does, with the device's key.
        const key = parseSigningKey(readFileSync(fx.pki.paths.device('field-007').signingKey, 'utf8')) as Buffer;
        const send = (commandId: string, command: string, params?: unknown) => {
          const issuedAt = Date.now();
          const auth = signCommand(key, { commandId, deviceId: 'field-007', command, params, issuedAt }, issuedAt + 60_000);
          const env: z.infer<typeof CommandEnvelopeSchema> = { v: ENVELOPE_VERSION, commandId, command, issuedAt, ...(params ? { params: params as never } : {}), auth };
          return mqtt.publishAsync(commandTopic('field-007'), JSON.stringify(env), { qos: 1 });
        };
        await send('cmd-open-1', 'open_valve', { pct: 40 });
        await send('cmd-unknown-1', 'self_destruct');
        const responses = await eventually(() => {
          const pts = fx.points({ measurement: 'command_responses', device: 'field-007' });
          return pts.length >= 2 ? pts : undefined;
        });
        const byId = Object.fromEntries(responses.map((p) => [p.fields.cmd_id, p]));
        assert.equal(byId['cmd-open-1']?.tags.status, 'completed');
        assert.deepEqual(JSON.parse(String(byId['cmd-open-1']?.fields.result)), { opened: 40 });
        assert.equal(byId['cmd-unknown-1']?.tags.status, 'rejected');
      } finally {
        await mqtt.endAsync();
      }
    });
  });

  it('the command API sends a command and reports the response against its id', async () => {
    const field = await startTestFieldClient(fx.pki.paths, 'sensor-001', url, fx.logs.logger, {
      FIELD_SIMULATE: 'true', // registers the simulator's commands (ping, set_interval)
      FIELD_SAMPLE_INTERVAL_MS: '3600000',
    });
    try {
      await eventually(() => (fx.points({ measurement: 'device_status', device: 'sensor-001' }).some((p) => p.fields.state === 'online') ? true : undefined));
      const base = `http://127.0.0.1:${fx.pipeline.commandApi.port}`;
      const headers = { authorization: `Bearer ${fx.pipeline.commandApiToken}`, 'content-type': 'application/json' };
      const res = await fetch(`${base}/v1/commands`, { method: 'POST', headers, body: JSON.stringify({ deviceId: 'sensor-001', command: 'set_interval', params: { ms: 5 } }) });
      assert.equal(res.status, 202);
      const { commands } = (await res.json()) as { commands: Array<{ commandId: string }> };
      const done = await eventually(async () => {
        const r = (await (await fetch(`${base}/v1/commands/${commands[0]?.commandId}`, { headers })).json()) as { state: string; response?: { result: string } };
        return r.state === 'failed' ? r : undefined;
      });
      assert.match(String(done.response?.result), /from 10 to 3600000/, 'the handler refused 5 ms and said why');
      const unauthorized = await fetch(`${base}/v1/commands`, { headers: { authorization: 'Bearer nope' } });
      assert.equal(unauthorized.status, 401);
    } finally {
      await field.close();
    }
  });

  it('never wrote outside its folders', () => {
    // The command journal's lock beside it while the pipeline runs (command-api/state-lock.ts).
    assert.deepEqual(readdirSync(fx.data.root).sort(), ['commands.jsonl', 'commands.jsonl.lock', 'dead-letter', 'distributor-state', 'files', 'timeseries']);
    assert.deepEqual(readdirSync(fx.data.files).sort(), ['camera-001']);
  });
});

/**
 * EMBEDDED_HOST is where the pipeline listens; its own clients (the services on the broker, the
 * simulated device on the gateway) must still reach and verify it. With 0.0.0.0 they dialled
 * 0.0.0.0, which no certificate names, and with an address the certificates lack they retried
 * forever: npm start printed nothing more and never said why.
 */
describe('the embedded pipeline on an EMBEDDED_HOST other than 127.0.0.1', () => {
  /** startEmbeddedPipeline, failing the test instead of hanging it */
  const within = <T>(p: Promise<T>, ms: number) =>
    Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`not settled within ${ms} ms`)), ms).unref())]);

  it('0.0.0.0 (every address): starts, its clients dialling loopback, and a device is answered', { timeout: 60_000 }, async () => {
    const fx = await within(startEmbeddedFixture(['sensor-001'], {}, { host: '0.0.0.0' }), 30_000);
    try {
      assert.match(fx.pipeline.gatewayUrl, /^wss:\/\/localhost:\d+\/ws$/);
      const d = await RawDevice.connect(fx.pipeline.gatewayUrl, RawDevice.tlsFor(fx.pki.paths, 'sensor-001'));
      d.send(JSON.stringify({ deviceId: 'sensor-001', dataType: 'timeseries', payload: { temperature: 1 } }));
      assert.equal((await d.next()).type, 'ack');
      d.close();
    } finally {
      await fx.stop();
    }
  });

  // An IPv6 address is put in brackets in a URL: `mqtts://::1:8883` is none, and npm start stopped
  // with CONFIG_INVALID naming MQTT_URL, a setting the user never set, for an address its
  // development certificates name. With the console, which reaches the command API by URL too.
  it('::1 (IPv6 loopback, which the development certificates name): starts, and a device is answered', { timeout: 60_000 }, async () => {
    const fx = await within(startEmbeddedFixture(['sensor-001'], {}, { host: '::1', console: true }), 30_000);
    try {
      assert.match(fx.pipeline.gatewayUrl, /^wss:\/\/\[::1\]:\d+\/ws$/);
      const d = await RawDevice.connect(fx.pipeline.gatewayUrl, RawDevice.tlsFor(fx.pki.paths, 'sensor-001'));
      d.send(JSON.stringify({ deviceId: 'sensor-001', dataType: 'timeseries', payload: { temperature: 1 } }));
      assert.equal((await d.next()).type, 'ack');
      d.close();
    } finally {
      await fx.stop();
    }
  });

  it('an address its certificates do not name: stops at once with CONFIG_INVALID naming EMBEDDED_HOST', { timeout: 60_000 }, async () => {
    const pki = makeTestPki([]);
    const data = tempDir('embedded-host');
    try {
      const started = startEmbeddedPipeline({
        env: { FILE_STORAGE_PATH: join(data.dir, 'files'), TIMESERIES_LOCAL_PATH: join(data.dir, 'ts'), DEAD_LETTER_PATH: join(data.dir, 'dl'), COMMAND_STATE_PATH: join(data.dir, 'c.jsonl'), DISTRIBUTOR_STATE_DIR: join(data.dir, 'ds') },
        logger: createLogger('test', 'silent'),
        certsDir: pki.dir,
        host: '127.0.0.2',
        gatewayPort: 0,
        brokerPort: 0,
        commandApiPort: 0,
        commandApiToken: 'embedded-test-token-0123456789abcdef',
        simulatedDeviceId: undefined,
      });
      await assert.rejects(within(started, 20_000), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'CONFIG_INVALID', err.message);
        assert.match(err.message, /EMBEDDED_HOST=127\.0\.0\.2/);
        return true;
      });
    } finally {
      pki.cleanup();
      data.cleanup();
    }
  });
});
