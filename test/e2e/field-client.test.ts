import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connectAsync } from 'mqtt';
import { WebSocketServer } from 'ws';
import { LIMITS } from '../../shared/limits.ts';
import { eventually } from '../helpers/ws-device.ts';
import { startEmbeddedFixture, type EmbeddedFixture } from '../helpers/embedded.ts';
import { startTestFieldClient } from '../helpers/field.ts';
import { tempDir } from '../helpers/pki.ts';
import { TcpRelay } from '../helpers/tcp-relay.ts';

const REPO = join(import.meta.dirname, '..', '..');

/** Runs a command without blocking this process (the services it talks to live in it). */
function run(args: string[], env: Record<string, string | undefined>): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(join(REPO, 'bin', 'fieldstream'), args, { env, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ status: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}
type TestField = Awaited<ReturnType<typeof startTestFieldClient>>;
const DEVICES = ['dev-http', 'dev-mqtt', 'dev-watch', 'dev-file', 'dev-cmd', 'dev-full', 'dev-doctor'];

describe('the field client: local inputs, files, commands, diagnostics', () => {
  let fx: EmbeddedFixture;
  const tmp = tempDir('field');
  before(async () => {
    fx = await startEmbeddedFixture(DEVICES);
  });
  after(async () => {
    await fx.stop();
    tmp.cleanup();
  });
  const api = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`http://127.0.0.1:${fx.pipeline.commandApi.port}${path}`, {
      method,
      headers: { authorization: `Bearer ${fx.pipeline.commandApiToken}`, 'content-type': 'application/json' },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    return (await res.json()) as any;
  };
  const commandState = (id: string, final: string[]) =>
    eventually(async () => {
      const r = await api('GET', `/v1/commands/${id}`);
      return final.includes(r.state) ? r : undefined;
    });

  describe('local inputs', () => {
    let field: TestField;
    before(async () => {
      field = await startTestFieldClient(fx.pki.paths, 'dev-http', fx.pipeline.gatewayUrl, fx.logs.logger, {
        FIELD_HTTP_PORT: '0',
        FIELD_MQTT_PORT: '0',
        FIELD_WATCH_DIR: join(tmp.dir, 'watched'),
        FIELD_WATCH_INTERVAL_MS: '100',
      });
    });
    after(() => field.close());
    const http = (path: string, body: string, type = 'application/json') =>
      fetch(`http://127.0.0.1:${field.httpPort}${path}`, { method: 'POST', headers: { 'content-type': type }, body });

    it('HTTP: readings and events are acknowledged once on disk, and arrive', async () => {
      const r = await http('/v1/timeseries', JSON.stringify([{ level: 1.5, timestamp: 1760000000000 }, { level: 2.5, timestamp: 1760000000001 }]));
      assert.equal(r.status, 202);
      assert.equal(((await r.json()) as { accepted: number }).accepted, 2);
      assert.equal((await http('/v1/events', JSON.stringify({ eventType: 'door_open', severity: 'low' }))).status, 202);
      await eventually(() => (fx.points({ measurement: 'readings', device: 'dev-http' }).length === 2 ? true : undefined));
      await eventually(() => (fx.points({ measurement: 'events', device: 'dev-http' }).length === 1 ? true : undefined));
      const ev = fx.points({ measurement: 'events', device: 'dev-http' })[0];
      assert.ok(ev && Math.abs(ev.time - Date.now()) < 60_000, 'an event without a timestamp gets the device clock');
    });

    it('HTTP: bad input gets FIELD_INPUT_INVALID and the client stays up', async () => {
      for (const [path, body] of [
        ['/v1/timeseries', '{"level": '],
        ['/v1/timeseries', '{"level": {"nested": 1}}'],
        ['/v1/events', '{"severity": "high"}'],
        ['/v1/timeseries', '[]'],
        ['/v1/files?filename=../../etc/passwd', 'x'],
        ['/v1/nothing', '{}'],
      ] as const) {
        const r = await http(path, body);
        assert.equal(r.status, 400, `${path} ${body}`);
        assert.equal(((await r.json()) as { code: string }).code, 'FIELD_INPUT_INVALID');
      }
      const status = (await (await fetch(`http://127.0.0.1:${field.httpPort}/status`)).json()) as { connection: { state: string } };
      assert.equal(status.connection.state, 'connected');
    });

    it('MQTT: a QoS 1 reading is PUBACKed once on disk and arrives; garbage closes the sensor connection', async () => {
      const sensor = await connectAsync(`mqtt://127.0.0.1:${field.mqttPort}`, { protocolVersion: 4, clientId: 'weather-station', reconnectPeriod: 0 });
      await sensor.publishAsync('fieldstream/local/timeseries', JSON.stringify({ wind: 7.2, dir: 'NW', timestamp: 1760000001000 }), { qos: 1 });
      await eventually(() => (fx.points({ measurement: 'readings', device: 'dev-http' }).some((p) => p.fields.wind === 7.2) ? true : undefined));
      const closed = new Promise<void>((resolve) => sensor.once('close', () => resolve()));
      sensor.publish('fieldstream/local/timeseries', 'not json', { qos: 1 });
      await closed;
      await sensor.endAsync(true);
      assert.ok(fx.logs.codes().includes('FIELD_INPUT_INVALID'));
    });

    it('a watched folder: new files are sent and moved out of it', async () => {
      const content = randomBytes(200_000);
      writeFileSync(join(tmp.dir, 'watched', 'frame-0001.jpg'), content);
      const stored = join(fx.data.files, 'dev-http', 'frame-0001.jpg');
      await eventually(() => (existsSync(stored) ? true : undefined));
      assert.ok(readFileSync(stored).equals(content));
      assert.deepEqual(readdirSync(join(tmp.dir, 'watched')), []);
      // The file is stored before its record is written: wait for the record too.
      const rec = await eventually(() => fx.points({ measurement: 'files', device: 'dev-http' }).find((p) => p.fields.filename === 'frame-0001.jpg'));
      assert.equal(rec.fields.content_type, 'image/jpeg');
    });

    it('the CLI sends through the running client and shows its status', async () => {
      const env = { PATH: process.env.PATH, FIELDSTREAM_ENV_FILE: '/dev/null', FIELD_HTTP_PORT: String(field.httpPort) };
      const send = await run(['send', 'timeseries', '{"cli_level": 3, "timestamp": 1760000002000}'], env);
      assert.equal(send.status, 0, send.stderr);
      assert.match(send.stdout, /^accepted 1 message\(s\): \S+\.\d+$/m);
      const bad = await run(['send', 'event', '{}'], env);
      assert.equal(bad.status, 1);
      assert.match(bad.stderr, /FIELD_INPUT_INVALID/);
      const status = await run(['status'], env);
      assert.equal(JSON.parse(status.stdout).deviceId, 'dev-http');
    });
  });

  it('a 30 MB file in chunks resumes after a cut connection at the last acknowledged chunk, and arrives intact', async () => {
    const gw = new URL(fx.pipeline.gatewayUrl);
    const relay = new TcpRelay({ host: '127.0.0.1', port: Number(gw.port) });
    await relay.start();
    const field = await startTestFieldClient(fx.pki.paths, 'dev-file', `wss://localhost:${relay.port}/ws`, fx.logs.logger, { FIELD_FILE_CHUNK_BYTES: String(256 * 1024) });
    try {
      const src = join(tmp.dir, 'survey.tif');
      const content = randomBytes(30 * 1024 * 1024);
      writeFileSync(src, content);
      await field.client.submitFile(src, { contentType: 'image/tiff' });
      const outgoing = join(field.dataDir, 'outgoing');
      const progress = () => {
        const f = readdirSync(outgoing).find((n) => n.endsWith('.progress'));
        return f ? Number(readFileSync(join(outgoing, f), 'utf8')) : 0;
      };
      await eventually(() => (progress() >= 20 ? true : undefined), 30_000, 'some chunks acknowledged');
      await relay.cut();
      const at = progress();
      await new Promise((r) => setTimeout(r, 1500));
      await relay.restore();
      const stored = join(fx.data.files, 'dev-file', 'survey.tif');
      await eventually(() => (existsSync(stored) ? true : undefined), 60_000, 'the file stored');
      assert.equal(createHash('sha256').update(readFileSync(stored)).digest('hex'), createHash('sha256').update(content).digest('hex'));
      const chunks = 120;
      assert.ok(field.client.stats.sent < chunks + at, `resumed, not restarted: ${field.client.stats.sent} chunks sent for ${chunks}`);
      // The device lets go of its copy at the receipt of the stored file, which follows the store.
      await eventually(() => (readdirSync(outgoing).length === 0 ? true : undefined), 10_000, 'the outbox copy gone at the receipt');
      assert.equal(field.client.receiptStats.receiptsInvalid, 0);
    } finally {
      await field.close();
      await relay.close();
    }
  });

  describe('commands', () => {
    let field: TestField;
    let local: Awaited<ReturnType<typeof connectAsync>>;
    const commandsFile = join(tmp.dir, 'commands.json');
    before(async () => {
      writeFileSync(
        commandsFile,
        JSON.stringify({
          add: { type: 'exec', program: 'sh', args: ['-c', 'read p; echo "{\\"sum\\": $(( $(echo $p | tr -dc 0-9+) ))}"'] },
          slow: { type: 'exec', program: 'sleep', args: ['5'], timeoutMs: 300 },
          broken: { type: 'exec', program: 'sh', args: ['-c', 'echo oops >&2; exit 3'] },
          set_gain: { type: 'mqtt', topic: 'local/amplifier/gain' },
        }),
      );
      field = await startTestFieldClient(fx.pki.paths, 'dev-cmd', fx.pipeline.gatewayUrl, fx.logs.logger, { FIELD_COMMANDS_FILE: commandsFile, FIELD_MQTT_PORT: '0' });
      local = await connectAsync(`mqtt://127.0.0.1:${field.mqttPort}`, { protocolVersion: 4, reconnectPeriod: 0 });
      await eventually(() => (fx.points({ measurement: 'device_status', device: 'dev-cmd' }).some((p) => p.fields.state === 'online') ? true : undefined));
    });
    after(async () => {
      await local.endAsync();
      await field.close();
    });

    it('runs a program, publishes to a local topic, rejects what it does not know: one answer each', async () => {
      const gains: string[] = [];
      local.on('message', (_t, m) => gains.push(m.toString()));
      await local.subscribeAsync('local/amplifier/gain', { qos: 1 });
      const ids: Record<string, string> = {};
      for (const [command, params] of [['add', '2+3'], ['slow', null], ['broken', null], ['set_gain', { db: 6 }], ['self_destruct', null]] as const) {
        const r = await api('POST', '/v1/commands', { deviceId: 'dev-cmd', command, ...(params !== null ? { params } : {}) });
        ids[command] = r.commands[0].commandId;
      }
      const add = await commandState(ids.add as string, ['completed']);
      assert.deepEqual(add.response.result, { sum: 5 });
      const slow = await commandState(ids.slow as string, ['failed']);
      assert.match(slow.response.result, /FIELD_COMMAND_TIMEOUT/);
      const broken = await commandState(ids.broken as string, ['failed']);
      assert.match(broken.response.result, /exit code 3: oops/);
      await commandState(ids.set_gain as string, ['completed']);
      assert.deepEqual(gains.map((g) => JSON.parse(g)), [{ db: 6 }]);
      await commandState(ids.self_destruct as string, ['rejected']);
      await eventually(() => (fx.points({ measurement: 'command_responses', device: 'dev-cmd' }).length === 5 ? true : undefined));
    });

    it('a command its client stops while it runs is answered of unknown outcome ("failed" with FIELD_COMMAND_OUTCOME_UNKNOWN), never run twice', async () => {
      writeFileSync(commandsFile, JSON.stringify({ long: { type: 'exec', program: 'sleep', args: ['3'], timeoutMs: 10_000 } }));
      const dataDir = join(tmp.dir, 'cmd-data'); // kept across the restarts below
      await field.close();
      field = await startTestFieldClient(fx.pki.paths, 'dev-cmd', fx.pipeline.gatewayUrl, fx.logs.logger, { FIELD_COMMANDS_FILE: commandsFile, FIELD_DATA_DIR: dataDir });
      const r = await api('POST', '/v1/commands', { deviceId: 'dev-cmd', command: 'long' });
      const id = r.commands[0].commandId as string;
      const journal = join(dataDir, 'commands.journal');
      await eventually(() => (existsSync(journal) && readFileSync(journal, 'utf8').includes(`${id} started`) ? true : undefined));
      await field.close(); // the client goes away while the command runs
      field = await startTestFieldClient(fx.pki.paths, 'dev-cmd', fx.pipeline.gatewayUrl, fx.logs.logger, { FIELD_COMMANDS_FILE: commandsFile, FIELD_DATA_DIR: dataDir });
      const done = await commandState(id, ['failed']); // the API sends it again when the device is back
      // The orderly stop ended the program (SIGTERM to its process group) and answered so.
      assert.match(done.response.result, /^FIELD_COMMAND_OUTCOME_UNKNOWN: /);
      await new Promise((res) => setTimeout(res, 500));
      const answers = fx.points({ measurement: 'command_responses', device: 'dev-cmd' }).filter((p) => p.fields.cmd_id === id);
      assert.equal(answers.length, 1);
    });
  });

  describe('a full queue', () => {
    for (const policy of ['reject', 'drop-oldest'] as const) {
      it(`follows its policy (${policy}) and counts`, async () => {
        // The gateway is unreachable, so everything stays queued until the 1 MiB limit.
        const field = await startTestFieldClient(fx.pki.paths, 'dev-full', 'wss://localhost:1/ws', fx.logs.logger, {
          FIELD_QUEUE_MAX_BYTES: String(1024 * 1024),
          FIELD_QUEUE_FULL_POLICY: policy,
          FIELD_HTTP_PORT: '0',
        });
        try {
          // A file first, waiting in the outbox: it shares the bound with the readings.
          const file = await fetch(`http://127.0.0.1:${field.httpPort}/v1/files?filename=big.bin`, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: randomBytes(300 * 1024) });
          assert.equal(file.status, 202, await file.text());
          const batch = JSON.stringify(Array.from({ length: 200 }, (_, i) => ({ level: i, note: 'x'.repeat(100) })));
          let refused = 0;
          for (let i = 0; i < 60; i++) {
            const r = await fetch(`http://127.0.0.1:${field.httpPort}/v1/timeseries`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: batch });
            if (r.status === 507) {
              refused++;
              assert.equal(((await r.json()) as { code: string }).code, 'FIELD_QUEUE_FULL');
            } else assert.equal(r.status, 202);
          }
          const status = (await (await fetch(`http://127.0.0.1:${field.httpPort}/status`)).json()) as { queue: { refused: number; dropped: number; bytes: number; outboxBytes: number; depth: number } };
          assert.ok(status.queue.bytes + status.queue.outboxBytes <= 1024 * 1024, `the queue and the outbox within the bound: ${JSON.stringify(status.queue)}`);
          if (policy === 'reject') {
            assert.ok(refused > 0 && status.queue.refused === refused * 200, JSON.stringify(status.queue));
            assert.equal(status.queue.dropped, 0);
            assert.ok(status.queue.outboxBytes >= 300 * 1024, 'the file still waits');
          } else {
            assert.equal(refused, 0);
            assert.ok(status.queue.dropped > 0);
            // The file was the oldest: dropped with its record, its bytes given back.
            assert.equal(status.queue.depth + status.queue.dropped, 60 * 200 + 1);
            assert.equal(status.queue.outboxBytes, 0);
            assert.deepEqual(readdirSync(join(field.dataDir, 'outgoing')), []);
          }
        } finally {
          await field.close();
        }
      });
    }
  });

  describe('fieldstream doctor', () => {
    const doctor = (env: Record<string, string>) =>
      run(['doctor'], {
          PATH: process.env.PATH,
          FIELDSTREAM_ENV_FILE: '/dev/null',
          DEVICE_ID: 'dev-doctor',
          GATEWAY_URL: fx.pipeline.gatewayUrl,
          FIELD_CA_FILE: fx.pki.paths.publicCa,
          FIELD_CERT_FILE: fx.pki.paths.device('dev-doctor').cert,
          FIELD_KEY_FILE: fx.pki.paths.device('dev-doctor').key,
          FIELD_DATA_DIR: join(tmp.dir, 'doctor'),
          FIELD_HTTP_PORT: 'off',
          ...env,
      });

    it('passes every check against a healthy pipeline', async () => {
      const r = await doctor({});
      assert.equal(r.status, 0, r.stdout + r.stderr);
      for (const name of ['configuration', 'certificates', 'dns', 'tcp', 'tls', 'websocket', 'round trip', 'clock', 'queue', 'disk']) {
        assert.match(r.stdout, new RegExp(`^✔ ${name}`, 'm'), name);
      }
    });

    it('names what is wrong, and what to do', async () => {
      const missing = await doctor({ DEVICE_ID: '' });
      assert.equal(missing.status, 1);
      assert.match(missing.stdout, /✖ configuration .*DEVICE_ID/);
      const wrongKey = await doctor({ FIELD_KEY_FILE: fx.pki.paths.device('dev-http').key });
      assert.match(wrongKey.stdout, /✖ certificates .*not the key/);
      const wrongDevice = await doctor({ DEVICE_ID: 'dev-http' });
      assert.match(wrongDevice.stdout, /✖ certificates .*"dev-doctor", DEVICE_ID is "dev-http"/);
      const noServer = await doctor({ GATEWAY_URL: 'wss://localhost:1/ws' });
      assert.match(noServer.stdout, /✖ tcp .*ECONNREFUSED/);
      assert.match(noServer.stdout, /→ Check the network path/);
      assert.match(noServer.stdout, /disk /, 'the local checks still run');
      const noDns = await doctor({ GATEWAY_URL: 'wss://no-such-host.invalid/ws' });
      assert.match(noDns.stdout, /✖ dns .*no-such-host\.invalid/);
    });

    it('warns of a device that would run commands nobody authenticated', async () => {
      const unsigned = await doctor({ FIELD_ALLOW_UNSIGNED_COMMANDS: 'true' });
      assert.match(unsigned.stdout, /^! commands .*FIELD_ALLOW_UNSIGNED_COMMANDS=true and no FIELD_SIGNING_KEY_FILE/m);
      assert.match(unsigned.stdout, /→ Set FIELD_SIGNING_KEY_FILE/);
      const doctorEvents = () => fx.points({ measurement: 'events', device: 'dev-doctor' }).length;
      const before = doctorEvents();
      const signed = await doctor({ FIELD_SIGNING_KEY_FILE: fx.pki.paths.device('dev-doctor').signingKey });
      assert.match(signed.stdout, /^✔ commands .*only commands authenticated for this device run/m);
      // Its test event is signed with the device's key, as the client signs: stored, where one the
      // distributor could not verify would be refused (SECURITY_BAD_SIGNATURE), and one unsigned
      // refused by a distributor requiring signatures (SECURITY_UNSIGNED), a security event each run.
      assert.match(signed.stdout, /^✔ round trip .*; signed\)/m);
      await eventually(() => (doctorEvents() > before ? true : undefined), 15_000, "the signed test event stored");
      assert.deepEqual(fx.points({ measurement: 'security_events', device: 'dev-doctor' }), []);
    });

    it('says when another connection of the device took over its connection, and never blames the broker for it', async () => {
      // A gateway that welcomes the doctor, then closes its connection as the real one does when the
      // device's running client reconnects meanwhile (4009 GATEWAY_SUPERSEDED: the newest connection
      // of a device wins), instead of acknowledging the test event; then with another close code.
      const edge = fx.pki.paths.service('dmz/edge');
      const server = createHttpsServer({ cert: readFileSync(edge.cert), key: readFileSync(edge.key) });
      const wss = new WebSocketServer({ server, path: '/ws' });
      let close: { code: number; reason: string; atWelcome?: boolean } = { code: 4009, reason: 'GATEWAY_SUPERSEDED' };
      wss.on('connection', (ws) => {
        const limits = { frameMaxBytes: LIMITS.frameMaxBytes, batchMaxMessages: LIMITS.batchMaxMessages };
        ws.send(JSON.stringify({ type: 'welcome', deviceId: 'dev-doctor', gatewayId: 'gw-test', serverTime: Date.now(), limits }));
        if (close.atWelcome) ws.close(close.code, close.reason);
        else ws.once('message', () => ws.close(close.code, close.reason));
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      const GATEWAY_URL = `wss://localhost:${(server.address() as AddressInfo).port}/ws`;
      try {
        for (const atWelcome of [false, true]) {
          close = { code: 4009, reason: 'GATEWAY_SUPERSEDED', atWelcome };
          const r = await doctor({ GATEWAY_URL });
          assert.equal(r.status, 1, r.stdout);
          assert.match(r.stdout, /^✔ websocket /m);
          assert.match(r.stdout, /^✖ round trip +GATEWAY_SUPERSEDED: another connection of device dev-doctor took over before the test event was acknowledged \(close code 4009\)$/m);
          assert.match(r.stdout, /→ Another connection of this device took over .*: stop the device's client while running doctor .*, or run doctor with another device id\.$/m);
          assert.doesNotMatch(r.stdout, /broker|no ack within/, 'not the broker: nothing is wrong with the pipeline');
        }
        close = { code: 1011, reason: 'unexpected condition' };
        const other = await doctor({ GATEWAY_URL });
        assert.equal(other.status, 1);
        assert.match(other.stdout, /^✖ round trip +the gateway closed the connection before the test event was acknowledged: close code 1011 unexpected condition$/m);
        assert.doesNotMatch(other.stdout, /broker|no ack within/);
      } finally {
        for (const c of wss.clients) c.terminate();
        wss.close();
        await new Promise((resolve) => server.close(resolve));
      }
    });
  });
});

describe('the field client command line, where its HTTP input cannot be reached', () => {
  it('send, health and status name FIELD_HTTP_PORT (off, 0, not a port) as the cause: CONFIG_INVALID, exit 78', async () => {
    for (const port of ['off', '0', 'http']) {
      for (const args of [['status'], ['health'], ['send', 'event', '{"eventType": "x"}']]) {
        const r = await run(args, { PATH: process.env.PATH, FIELDSTREAM_ENV_FILE: '/dev/null', FIELD_HTTP_PORT: port });
        assert.equal(r.status, 78, `${port} ${args.join(' ')}: ${r.stderr}`);
        assert.match(r.stderr, /^error CONFIG_INVALID: FIELD_HTTP_PORT/, `${port} ${args.join(' ')}`);
      }
    }
  });

  it('status reaches an input on an IPv6 address (FIELD_HTTP_HOST=::1)', async () => {
    // The client listens on such an address as on any other: the command line's URL must name it in brackets.
    const server = createHttpServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"ready":true}'));
    await new Promise<void>((resolve) => server.listen(0, '::1', resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const r = await run(['status'], { PATH: process.env.PATH, FIELDSTREAM_ENV_FILE: '/dev/null', FIELD_HTTP_HOST: '::1', FIELD_HTTP_PORT: String(port) });
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /"ready": true/);
    } finally {
      server.close();
    }
  });
});
