import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { connectAsync } from 'mqtt';
import { after, before, describe, it } from 'node:test';
import { runDoctor } from '../../field-client/src/doctor.ts';
import { InfluxV1 } from '../../scripts/local-stack/databases.ts';
import type { ManagedProcess } from '../../scripts/local-stack/process.ts';
import { freePort } from '../../scripts/local-stack/ports.ts';
import type { LocalStack } from '../../scripts/local-stack/stack.ts';
import type { DmzServer } from '../../scripts/local-stack/dmz-server.ts';
import { ConsoleSession, ROLE_TOKENS, writeRoleTokens } from '../helpers/console-client.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { startTestFieldClient } from '../helpers/field.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { api, HAPROXY_CFG, startHaproxy, startTestStack, influxSettings } from '../helpers/stack.ts';
import { eventually } from '../helpers/ws-device.ts';
import { parseExposition } from '../helpers/exposition.ts';
import { statusTopic } from '../../shared/contract/topics.ts';

const DB = 'sensor_data';
/** lists both servers' URLs in GATEWAY_URL */
const DEVICE = 'rover-1';
/** reaches both servers through HAProxy (haproxy/haproxy.cfg) */
const BALANCED = 'rover-2';
/** what `fieldstream doctor` checks, with both URLs */
const DOCTOR = 'rover-3';

type Field = Awaited<ReturnType<typeof startTestFieldClient>>;

/**
 * Two DMZ servers and one internal server on loopback (docs/deployment.md, "More than one DMZ
 * server"): the internal broker bridges out to both brokers. One device lists both servers' URLs,
 * another reaches them through HAProxy. DMZ server 1 dies whole (every process SIGKILLed, kept
 * dead) while both stream: they move to server 2, InfluxDB holds every reading once, a command sent
 * during the outage reaches its device, and the console shows the device online through server 2 —
 * also after server 1 came back with its old retained presence.
 */
describe('two DMZ servers: a device moves when its server dies', () => {
  const work = tempDir('multi-dmz');
  const pki = makeTestPki([DEVICE, BALANCED, DOCTOR]);
  const logs = new LogCapture();
  let influx: InfluxV1;
  let stack: LocalStack;
  let token: string;
  let s1: DmzServer;
  let s2: DmzServer;
  let haproxy: ManagedProcess;
  let field: Field;
  let balanced: Field;
  let session: ConsoleSession;
  const ran: string[] = [];
  const sent = new Map<string, number>([[DEVICE, 0], [BALANCED, 0]]);
  const gatewayOf = (f: Field) => (f.connection.isOpen ? f.client.status().connection.gatewayId : null);
  const stream = (f: Field, id: string, n: number) =>
    Promise.all(
      Array.from({ length: n }, () => {
        const seq = (sent.get(id) as number) + 1;
        sent.set(id, seq);
        return f.client.submit('timeseries', { seq, timestamp: Date.parse('2026-01-01T00:00:00Z') + seq * 1000 });
      }),
    );
  /** the sequence numbers of the device's stored readings, a row each (a reading written through two gateways is two series: two rows) */
  const storedSeqs = async (id: string) => (await influx.rows(DB, `SELECT seq FROM readings WHERE device = '${id}'`)).map((r) => Number(r.seq));
  /**
   * Every reading stored, and each once: as many rows as distinct sequence numbers, as many as were
   * sent. Counted here from the rows, not by InfluxDB's COUNT(DISTINCT()): the aggregates of one
   * InfluxDB 1.x SELECT each read on a cursor of their own.
   */
  const stored = async (id: string) => {
    const seqs = await storedSeqs(id);
    return { total: seqs.length, distinct: new Set(seqs).size };
  };
  /** For a failure's message: the codes of the warnings and errors in the services' logs under `dir`, counted by log file. */
  const warningCodes = (dir: string) => {
    const tally: Record<string, number> = {};
    for (const f of readdirSync(dir, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.log'))) {
      for (const line of readFileSync(join(dir, f), 'utf8').split('\n')) {
        let l: { level?: number; code?: string; msg?: string };
        try {
          l = JSON.parse(line) as typeof l;
        } catch {
          continue; // not a pino line (Mosquitto's, Caddy's), or cut short
        }
        const key = `${basename(f)} ${l.code ?? l.msg?.slice(0, 60)}`;
        if ((l.level ?? 0) >= 40) tally[key] = (tally[key] ?? 0) + 1;
      }
    }
    return tally;
  };
  /** For a failure's message: which sequence numbers are missing, and what the distributor counted of what it did not write. */
  const whyNot = async (id: string) => {
    const have = new Set(await storedSeqs(id));
    const missing: string[] = [];
    for (let s = 1; s <= (sent.get(id) as number); s++) {
      if (have.has(s)) continue;
      let e = s;
      while (e + 1 <= (sent.get(id) as number) && !have.has(e + 1)) e++;
      missing.push(s === e ? `${s}` : `${s}-${e}`);
      s = e;
    }
    const m = parseExposition(await (await fetch(`${stack.metrics.distributor}/metrics`)).text());
    const counters = [...m].filter(([k, v]) => v !== 0 && /^fieldstream_distributor_(duplicates|dead_letters|security_events|write_failures|messages)_total/.test(k));
    return `missing seq ${missing.join(',')}; distributor ${JSON.stringify(Object.fromEntries(counters))}; warnings logged by the stack's services ${JSON.stringify(warningCodes(join(work.dir, 'stack')))}`;
  };
  const allStored = async (id: string) => {
    let last = { total: 0, distinct: 0 };
    try {
      return await eventually(async () => {
        last = await stored(id);
        return last.distinct === sent.get(id) ? last : undefined;
      }, 60_000);
    } catch {
      const f = id === DEVICE ? field : balanced;
      throw new Error(`${id}: ${last.distinct} distinct readings stored of ${sent.get(id)} sent; ${await whyNot(id)}; its client: ${JSON.stringify({ ...f.client.status(), commands: undefined })}; the clients' warnings: ${JSON.stringify(logs.lines.filter((l) => Number(l.level) >= 40).slice(-20))}`);
    }
  };

  before(async () => {
    influx = await InfluxV1.start(join(work.dir, 'influxdb'), DB);
    ({ stack, token } = await startTestStack(pki.dir, join(work.dir, 'stack'), {
      ...influxSettings(influx, DB),
      COMMAND_API_TOKENS_FILE: writeRoleTokens(work.dir),
    }, { dmzServers: 2 }));
    [s1, s2] = stack.dmzServers as [DmzServer, DmzServer];
    let hp: number;
    ({ process: haproxy, port: hp } = await startHaproxy([s1, s2], work.dir, join(work.dir, 'logs', 'haproxy.log')));
    field = await startTestFieldClient(pki.paths, DEVICE, `${s1.urls.wss},${s2.urls.wss}`, logs.logger);
    field.commands.register('ping', () => {
      ran.push('ping');
      return { status: 'completed', result: 'pong' };
    });
    balanced = await startTestFieldClient(pki.paths, BALANCED, `wss://localhost:${hp}/ws`, logs.logger);
    session = new ConsoleSession(stack.urls.console);
    await session.login(ROLE_TOKENS.viewer);
  });
  after(async () => {
    await field?.close();
    await balanced?.close();
    await haproxy?.stop();
    await stack?.close();
    await influx?.process.stop();
    pki.cleanup();
    work.cleanup();
  });

  it('haproxy -c accepts haproxy/haproxy.cfg with its servers set, and refuses it without them', () => {
    const check = (env: Record<string, string>) => spawnSync('haproxy', ['-c', '-f', HAPROXY_CFG], { env: { PATH: process.env.PATH, ...env }, encoding: 'utf8' });
    const ok = check({ HAPROXY_DMZ1: '192.0.2.1:443', HAPROXY_DMZ2: '192.0.2.2:443', HAPROXY_BIND: '127.0.0.1:8443' });
    assert.equal(ok.status, 0, ok.stderr);
    const missing = check({});
    assert.notEqual(missing.status, 0);
    assert.match(missing.stderr, /'server' expects <name> and <addr>/);
  });

  it('the internal broker bridges to both DMZ brokers, one connection and client id each', () => {
    const bridges = join(work.dir, 'stack', 'internal-mosquitto', 'bridges');
    const text = [1, 2].map((n) => spawnSync('cat', [join(bridges, `bridge-${n}.conf`)], { encoding: 'utf8' }).stdout);
    assert.match(text[0] as string, new RegExp(`^connection dmz\\naddress localhost:${s1.ports.mqtt}$`, 'm'));
    assert.match(text[1] as string, new RegExp(`^connection dmz2\\naddress localhost:${s2.ports.mqtt}$`, 'm'));
    assert.match(text[0] as string, /^local_clientid fieldstream-bridge-local$/m);
    assert.match(text[1] as string, /^local_clientid fieldstream-bridge-2-local$/m);
  });

  it('the broker exporter expects and reports both bridges, by client id', async () => {
    const S = 'service="broker-exporter"';
    await eventually(async () => {
      const m = parseExposition(await (await fetch(`${stack.metrics.brokerExporter}/metrics`)).text());
      const ok = m.get(`fieldstream_bridge_connected{${S}}`) === 1 && m.get(`fieldstream_bridge_up{bridge="fieldstream-bridge",${S}}`) === 1 && m.get(`fieldstream_bridge_up{bridge="fieldstream-bridge-2",${S}}`) === 1;
      return ok && m.get(`fieldstream_bridge_states_ignored_total{broker="internal",${S}}`) === 0 ? true : undefined;
    }, 30_000, 'both bridges reported connected, no state ignored');
  });

  it('fieldstream doctor checks every URL of GATEWAY_URL', async () => {
    const d = pki.paths.device(DOCTOR);
    const results = await runDoctor({ DEVICE_ID: DOCTOR, GATEWAY_URL: `${s1.urls.wss},${s2.urls.wss}`, FIELD_CA_FILE: pki.paths.publicCa, FIELD_CERT_FILE: d.cert, FIELD_KEY_FILE: d.key, FIELD_DATA_DIR: join(work.dir, 'doctor'), FIELD_HTTP_PORT: 'off' });
    assert.deepEqual(results.filter((r) => r.level === 'fail'), []);
    for (const url of [s1.urls.wss, s2.urls.wss]) {
      for (const name of ['tcp', 'tls', 'websocket', 'round trip']) {
        assert.ok(results.some((r) => r.name === name && r.level === 'ok' && r.detail.startsWith(`${url}: `)), `${name} for ${url}: ${JSON.stringify(results)}`);
      }
    }
    // Server 1 unreachable: its checks fail, server 2's still pass.
    const dead = `wss://localhost:${await freePort()}/ws`;
    const partly = await runDoctor({ DEVICE_ID: DOCTOR, GATEWAY_URL: `${dead},${s2.urls.wss}`, FIELD_CA_FILE: pki.paths.publicCa, FIELD_CERT_FILE: d.cert, FIELD_KEY_FILE: d.key, FIELD_DATA_DIR: join(work.dir, 'doctor'), FIELD_HTTP_PORT: 'off' });
    assert.ok(partly.some((r) => r.name === 'tcp' && r.level === 'fail' && r.detail.startsWith(`${dead}: `)));
    assert.ok(partly.some((r) => r.name === 'round trip' && r.level === 'ok' && r.detail.startsWith(`${s2.urls.wss}: `)));
  });

  /** the times server 1's broker saved its state to disk (autosave_interval): then it keeps the device's "online" */
  const saves = () => readFileSync(join(work.dir, 'stack', 'logs', 'dmz-mosquitto.log'), 'utf8').split('Saving in-memory database').length - 1;

  it('both devices stream, the first through server 1 (its first URL)', async () => {
    await eventually(() => (gatewayOf(field) === 'gateway-1' && gatewayOf(balanced) !== null ? true : undefined), 30_000, 'both devices connected');
    const saved = saves();
    await Promise.all([stream(field, DEVICE, 200), stream(balanced, BALANCED, 200)]);
    assert.deepEqual(await allStored(DEVICE), { total: 200, distinct: 200 });
    assert.deepEqual(await allStored(BALANCED), { total: 200, distinct: 200 });
    // So that server 1, when it comes back, brings back its retained "online" of the device from before.
    await eventually(() => (saves() > saved ? true : undefined), 30_000, "server 1's broker saved its state");
  });

  it('server 1 dies whole while both stream: they move to server 2, every reading is stored once, a command sent meanwhile arrives', async () => {
    const streaming = (async () => {
      for (let i = 0; i < 40; i++) {
        await Promise.all([stream(field, DEVICE, 10), stream(balanced, BALANCED, 10)]);
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    await new Promise((r) => setTimeout(r, 500));
    // Every process of the server at once, as a power cut would; kill() also stops its supervision.
    await Promise.all(s1.all.map((p) => p.kill()));
    const issued = await api(stack, token, 'POST', '/v1/commands', { deviceId: DEVICE, command: 'ping' });
    assert.equal(issued.status, 202, JSON.stringify(issued.body));
    const commandId = issued.body.commands[0].commandId as string;
    await streaming;
    await eventually(() => (gatewayOf(field) === 'dmz2-gateway-1' ? true : undefined), 60_000, `${DEVICE} on server 2`);
    await eventually(() => (gatewayOf(balanced) === 'dmz2-gateway-1' ? true : undefined), 60_000, `${BALANCED} on server 2 through HAProxy`);
    await Promise.all([stream(field, DEVICE, 50), stream(balanced, BALANCED, 50)]);
    for (const id of [DEVICE, BALANCED]) {
      const n = sent.get(id) as number;
      assert.deepEqual(await allStored(id), { total: n, distinct: n }, `${id}: each of its ${n} readings once`);
    }
    // The devices let go of every reading: each was committed, through whichever server.
    await eventually(() => (field.client.unacknowledged === 0 && balanced.client.unacknowledged === 0 ? true : undefined), 60_000, 'every reading committed');
    const done = await eventually(async () => {
      const r = await api(stack, token, 'GET', `/v1/commands/${commandId}`);
      return r.body.state === 'completed' ? r.body : undefined;
    }, 60_000, 'the command sent during the outage answered');
    assert.equal(done.response.result, 'pong');
    assert.deepEqual(ran, ['ping'], 'it ran once');
    const row = await eventually(async () => {
      const r = await session.request(`/api/devices/${DEVICE}`);
      return r.body?.row?.state === 'online' && r.body.row.gateway === 'dmz2-gateway-1' ? r.body.row : undefined;
    }, 30_000, 'the console shows the device online through server 2');
    assert.equal(row.gateway, 'dmz2-gateway-1');
  });

  it('server 1 comes back: its old presence changes nothing, the devices stay where they are, commands still arrive', async () => {
    const back = Date.now();
    for (const p of s1.all) await p.start();
    // Its gateway's presence in InfluxDB: the bridge to server 1 is up again and has passed on what
    // that broker kept (its retained statuses come first, when the bridge subscribes).
    await eventually(async () => ((await influx.rows(DB, `SELECT * FROM gateway_status WHERE gateway = 'gateway-1' AND time >= ${back}ms`)).length > 0 ? true : undefined), 60_000, "server 1's gateway seen again");
    // The internal broker now holds server 1's old "online" of the device as its retained status
    // (bridged in again when the bridge subscribed): the case the presence must withstand.
    const reader = pki.paths.service('internal/command-api');
    const mqtt = await connectAsync(stack.urls.internalMqtt, { ca: readFileSync(pki.paths.publicCa), cert: readFileSync(reader.cert), key: readFileSync(reader.key), protocolVersion: 5, reconnectPeriod: 0, clientId: 'multi-dmz-test' });
    try {
      const retained = new Promise<{ gatewayId: string; state: string }>((resolve) => mqtt.on('message', (_t, payload) => resolve(JSON.parse(payload.toString()))));
      await mqtt.subscribeAsync(statusTopic(DEVICE), { qos: 1 });
      assert.deepEqual(await retained.then((r) => [r.gatewayId, r.state]), ['gateway-1', 'online']);
    } finally {
      await mqtt.endAsync();
    }
    const status = await influx.rows(DB, `SELECT * FROM device_status WHERE device = '${DEVICE}' ORDER BY time DESC LIMIT 1`);
    assert.equal(status[0]?.gateway, 'dmz2-gateway-1', 'the newest stored presence is from server 2');
    assert.equal(status[0]?.state, 'online');
    const r = await session.request(`/api/devices/${DEVICE}`);
    assert.equal(r.body.row.state, 'online');
    assert.equal(r.body.row.gateway, 'dmz2-gateway-1');
    assert.equal(gatewayOf(field), 'dmz2-gateway-1', 'no move back: the client returns to a URL only by rotation');
    const issued = await api(stack, token, 'POST', '/v1/commands', { deviceId: DEVICE, command: 'ping' });
    const id = issued.body.commands[0].commandId as string;
    await eventually(async () => ((await api(stack, token, 'GET', `/v1/commands/${id}`)).body.state === 'completed' ? true : undefined), 30_000, 'a command after the return');
    assert.deepEqual(ran, ['ping', 'ping']);
  });
});
