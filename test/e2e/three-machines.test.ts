import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { NetnsLab, netnsUnavailable, type Machine } from '../helpers/netns.ts';
import { tempDir } from '../helpers/pki.ts';
import { REPO_ROOT } from '../helpers/stack.ts';
import { eventually } from '../helpers/ws-device.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { setupPki } from '../../pki/onboarding.ts';
import { issueDeviceCertificate } from '../../pki/device-bundle.ts';
import { pkiPaths } from '../../pki/layout.ts';
import { InfluxV1 } from '../../scripts/local-stack/databases.ts';
import { startDmzServer, type DmzServer } from '../../scripts/local-stack/dmz-server.ts';
import { startInternalServer, type InternalServer } from '../../scripts/local-stack/internal-server.ts';
import type { ManagedProcess } from '../../scripts/local-stack/process.ts';
import { fieldClientProcess } from '../helpers/field.ts';
import { TEST_COMMAND } from '../../shared/contract/test-command.ts';
import { ROLE_TOKENS, writeRoleTokens } from '../helpers/console-client.ts';

/**
 * The deployment on three real machines (network namespaces, test/helpers/netns.ts): the field
 * device, two DMZ servers and the internal server behind a router that plays the corporate egress,
 * each running its real processes from the files the compose files mount, each behind its own
 * firewall applied by scripts/setup-firewall.sh. Then a DMZ server dies entirely.
 */
const why = netnsUnavailable();
const DB = 'fieldstream';
const DEVICE = 'ns-dev-1';
const NAMES = { dmz1: 'dmz1.fieldstream.test', dmz2: 'dmz2.fieldstream.test' } as const;
/** fixed ports inside the namespaces (each has its own port space) */
const PORTS = {
  https: 443,
  http: 80,
  dmzMqtt: 8883,
  gateway: 9444,
  internalMqtt: 8883,
  commandApi: 8080,
  console: 8090,
  brokerExporter: 9100,
  distributorMetrics: 9101,
  commandApiMetrics: 9102,
  consoleMetrics: 9103,
  influx: 8086,
  influxRpc: 8088,
  fieldHttp: 8081,
} as const;

describe('three machines in network namespaces, behind their firewalls, with two DMZ servers', { skip: why ? `skipped: ${why}` : false }, () => {
  const lab = new NetnsLab();
  const work = tempDir('machines');
  const certs = join(work.dir, 'certs');
  const logs = new LogCapture();
  const token = randomBytes(24).toString('hex');
  let influx: InfluxV1;
  const dmz: Partial<Record<'dmz1' | 'dmz2', DmzServer>> = {};
  let internal: InternalServer;
  let field: ManagedProcess;
  const commandApi = () => `http://${lab.addr.internalOperatorSide}:${PORTS.commandApi}`;
  const consoleApi = () => `http://${lab.addr.internalOperatorSide}:${PORTS.console}/api/v1/manage`;
  const bearer = { authorization: `Bearer ${token}` };

  const firewall = (machine: Machine, args: string[]) =>
    new Promise<void>((resolve, reject) =>
      execFile('ip', ['netns', 'exec', lab.ns(machine), 'bash', join(REPO_ROOT, 'scripts', 'setup-firewall.sh'), ...args, '--env-file', '/dev/null'], (err, _o, stderr) =>
        err ? reject(new Error(`setup-firewall.sh ${args[0]} in ${machine}: ${stderr}`)) : resolve(),
      ),
    );
  /** Readings the device's local HTTP input took (201: on its disk), from inside the field machine. */
  const post = async (path: string, body: string) => {
    const r = await lab.exec('field', 'curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '-X', 'POST', `http://127.0.0.1:${PORTS.fieldHttp}${path}`, '-H', 'Content-Type: application/json', '--data-binary', body]);
    assert.match(r.stdout, /^20\d$/, `the field client took ${path}: ${r.stdout} ${r.stderr}`);
  };
  const rows = (q: string) => influx.rows(DB, q);
  /** The test event every field client answers (shared/contract/test-command.ts), through the command API, as an admin (it is theirs). */
  const command = async (note: string) => {
    const res = await fetch(`${commandApi()}/v1/commands`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ROLE_TOKENS.admin}`, 'content-type': 'application/json' },
      body: JSON.stringify({ deviceId: DEVICE, command: TEST_COMMAND, params: { note }, ttlSeconds: 600 }),
    });
    assert.equal(res.status, 202, await res.clone().text());
    const body = (await res.json()) as { commands: { commandId: string }[] };
    return body.commands[0]!.commandId;
  };
  const commandState = async (id: string) => ((await (await fetch(`${commandApi()}/v1/commands/${id}`, { headers: bearer })).json()) as { state: string }).state;

  before(async () => {
    lab.build();
    const names = { [NAMES.dmz1]: lab.addr.dmz1, [NAMES.dmz2]: lab.addr.dmz2 };
    lab.hosts('field', names);
    lab.hosts('internal', names);
    // One certificate set, as generate-certificates.sh makes it for two DMZ servers devices reach by
    // name (--edge-host) and the internal broker dials by name (--dmz-broker-host).
    setupPki(certs, { domain: 'fieldstream.test', edgeHosts: Object.keys(names), dmzBrokerHosts: Object.keys(names) });
    issueDeviceCertificate(certs, DEVICE);

    // Every machine's firewall is up before anything of ours runs.
    for (const m of ['dmz1', 'dmz2'] as const) await firewall(m, ['dmz', '--corp-egress-ip', lab.addr.corpEgress, '--caddy-tls', 'files', '--token-route', 'off']);
    await firewall('internal', ['internal', '--dmz-server-ip', `${lab.addr.dmz1},${lab.addr.dmz2}`, '--operator-net', `${lab.addr.operator}/32`]);
    await firewall('field', ['field', '--dmz-server-ip', `${lab.addr.dmz1},${lab.addr.dmz2}`, '--gateway-port', String(PORTS.https)]);

    influx = await InfluxV1.start(join(work.dir, 'influx'), DB, { netns: lab.ns('internal'), port: PORTS.influx, rpcPort: PORTS.influxRpc });
    const common = { repoRoot: REPO_ROOT, certsDir: certs, logger: logs.logger, bindHost: '0.0.0.0' };
    for (const m of ['dmz1', 'dmz2'] as const) {
      dmz[m] = await startDmzServer({
        ...common,
        id: m,
        workDir: join(work.dir, m),
        netns: lab.ns(m),
        domainName: NAMES[m],
        env: { LOG_LEVEL: 'info' },
        ports: { https: PORTS.https, http: PORTS.http, mqtt: PORTS.dmzMqtt, gateway: PORTS.gateway },
      });
    }
    internal = await startInternalServer({
      ...common,
      workDir: join(work.dir, 'internal'),
      netns: lab.ns('internal'),
      commandApiToken: token,
      dmzBrokers: [
        { host: NAMES.dmz1, port: PORTS.dmzMqtt },
        { host: NAMES.dmz2, port: PORTS.dmzMqtt },
      ],
      env: {
        LOG_LEVEL: 'info',
        COMMAND_API_TOKENS_FILE: writeRoleTokens(work.dir),
        INFLUXDB_URL: `http://127.0.0.1:${PORTS.influx}`,
        INFLUXDB_DATABASE: DB,
        INFLUXDB_USERNAME: influx.user,
        INFLUXDB_PASSWORD: influx.password,
      },
      ports: {
        mqtt: PORTS.internalMqtt,
        commandApi: PORTS.commandApi,
        console: PORTS.console,
        brokerExporter: PORTS.brokerExporter,
        distributorMetrics: PORTS.distributorMetrics,
        commandApiMetrics: PORTS.commandApiMetrics,
        consoleMetrics: PORTS.consoleMetrics,
      },
    });

    ({ process: field } = await fieldClientProcess({
      paths: pkiPaths(certs),
      deviceId: DEVICE,
      // Both DMZ servers by name, tried in turn.
      gatewayUrl: `wss://${NAMES.dmz1}/ws,wss://${NAMES.dmz2}/ws`,
      dataDir: join(work.dir, 'field-data'),
      logFile: join(work.dir, 'logs', 'field-client.log'),
      netns: lab.ns('field'),
      httpPort: PORTS.fieldHttp,
      // a dead server is left quickly for the next one
      env: { LOG_LEVEL: 'info', FIELD_RECONNECT_MAX_MS: '2000' },
    }));
    await field.start();
  });

  after(async () => {
    await field?.stop().catch(() => undefined);
    await internal?.close().catch(() => undefined);
    for (const m of ['dmz1', 'dmz2'] as const) await dmz[m]?.close().catch(() => undefined);
    await influx?.process.stop().catch(() => undefined);
    lab.cleanup();
    work.cleanup();
  });

  it('readings and files flow end to end, and commands come back', async () => {
    for (let i = 1; i <= 20; i++) await post('/v1/timeseries', JSON.stringify({ phase: 1, n: i, timestamp: 1_790_000_000_000 + i }));
    await post('/v1/files?filename=notes.txt&contentType=text/plain', 'from the field machine');
    const got = await eventually(async () => {
      const r = await rows(`SELECT "n" FROM "readings" WHERE "device" = '${DEVICE}' AND "phase" = 1`);
      return r.length >= 20 ? r : undefined;
    }, 60_000, 'readings in InfluxDB on the internal machine');
    assert.deepEqual(got.map((r) => r.n).sort((a, b) => Number(a) - Number(b)), Array.from({ length: 20 }, (_, i) => i + 1));
    await eventually(() => {
      const dir = internal.dataDir.files;
      if (!existsSync(dir)) return undefined;
      const found = walk(dir).find((f) => f.endsWith('notes.txt'));
      return found && readFileSync(found, 'utf8') === 'from the field machine' ? found : undefined;
    }, 60_000, 'the file in storage on the internal machine');
    const id = await command('from the operators');
    await eventually(async () => ((await commandState(id)) === 'completed' ? true : undefined), 60_000, 'the command answered by the device');
  });

  it('the internal machine accepts no connection from the DMZ or the field: every port it listens on', async () => {
    const ports = await lab.listening('internal');
    for (const p of [PORTS.internalMqtt, PORTS.commandApi, PORTS.console, PORTS.brokerExporter]) assert.ok(ports.includes(p), `the internal machine listens on ${p} (${ports.join(', ')})`);
    const tried = await Promise.all(
      (['dmz1', 'dmz2', 'field'] as const).flatMap((from) => ports.map(async (port) => ({ from, port, result: await lab.probe(from, lab.addr.internal, port) }))),
    );
    const open = tried.filter((t) => t.result === 'open');
    assert.deepEqual(open, [], `reached the internal machine: ${JSON.stringify(open)}`);
    // The same firewall lets the operators' network in to the operator ports only, so it is not
    // refusing everything: the command API answers there, the broker does not.
    assert.equal((await fetch(`${commandApi()}/healthz`).catch(() => undefined))?.status ?? 0, 200);
    const op = await new Promise<number>((resolve) =>
      execFile('timeout', ['2', 'bash', '-c', 'exec 3<>"/dev/tcp/$0/$1"', lab.addr.internalOperatorSide, String(PORTS.internalMqtt)], (err) => resolve(err ? 1 : 0)),
    );
    assert.equal(op, 1, 'the internal broker is closed to the operators too');
  });

  it("the DMZ broker (8883) answers only the corporate egress address, and the field reaches only the DMZ's 443", async () => {
    for (const m of ['dmz1', 'dmz2'] as const) {
      const target = lab.addr[m];
      assert.equal(await lab.probe('router', target, PORTS.dmzMqtt), 'open', `${m}:8883 from the corporate egress`);
      assert.notEqual(await lab.probe('field', target, PORTS.dmzMqtt), 'open', `${m}:8883 from the field`);
      const other = m === 'dmz1' ? 'dmz2' : 'dmz1';
      assert.notEqual(await lab.probe(other, target, PORTS.dmzMqtt), 'open', `${m}:8883 from the other DMZ server`);
      const listening = await lab.listening(m);
      for (const p of [PORTS.https, PORTS.dmzMqtt, PORTS.gateway]) assert.ok(listening.includes(p), `${m} listens on ${p} (${listening.join(', ')})`);
      const fromField = await Promise.all(listening.map(async (port) => ({ port, result: await lab.probe('field', target, port) })));
      assert.deepEqual(
        fromField.filter((t) => t.result === 'open').map((t) => t.port),
        [PORTS.https],
        `the field machine reaches ${m} on: ${JSON.stringify(fromField)}`,
      );
    }
    // and nothing else beyond the DMZ: not the router, not the internal machine (above)
    assert.notEqual(await lab.probe('field', lab.addr.corpEgress, 22), 'open');
  });

  it('a DMZ server dies entirely: the device moves to the other, every reading is in InfluxDB exactly once, a command sent meanwhile arrives', async () => {
    const s1 = dmz.dmz1 as DmzServer;
    // The device is on the first server of its list.
    await eventually(async () => (await deviceGateway())?.startsWith('dmz1') ? true : undefined, 30_000, 'the device on dmz1');
    for (let i = 1; i <= 30; i++) await post('/v1/timeseries', JSON.stringify({ phase: 2, n: i, timestamp: 1_790_000_100_000 + i }));
    // dmz1 dies as a machine does when its power goes: its link is cut first, so no peer hears a
    // FIN or RST from it (the device notices only by its missed heartbeats, the internal broker by
    // its bridge's keepalive), then every process of it is killed (no clean shutdown, no will).
    lab.unplug('dmz1');
    await Promise.all(s1.all.map((p) => p.kill()));
    for (let i = 31; i <= 60; i++) await post('/v1/timeseries', JSON.stringify({ phase: 2, n: i, timestamp: 1_790_000_100_000 + i }));
    const during = await command('during the outage');
    const got = await eventually(async () => {
      const r = await rows(`SELECT "n" FROM "readings" WHERE "device" = '${DEVICE}' AND "phase" = 2`);
      return r.length >= 60 ? r : undefined;
    }, 240_000, 'every reading of phase 2 in InfluxDB');
    const ns = got.map((r) => Number(r.n)).sort((a, b) => a - b);
    assert.deepEqual(ns, Array.from({ length: 60 }, (_, i) => i + 1), 'each reading once, none missing');
    await eventually(async () => ((await commandState(during)) === 'completed' ? true : undefined), 120_000, 'the command sent during the outage answered');
    await eventually(async () => ((await deviceGateway())?.startsWith('dmz2') ? true : undefined), 30_000, 'the device shown online on dmz2');
    const device = await manageDevice();
    assert.equal(device.state, 'online');
  });

  async function manageDevice(): Promise<{ state: string; gateway?: string | null }> {
    const res = await fetch(`${consoleApi()}/devices/${DEVICE}`, { headers: bearer });
    return (await res.json()) as { state: string; gateway?: string | null };
  }
  async function deviceGateway(): Promise<string | undefined> {
    const d = await manageDevice().catch(() => undefined);
    return d?.state === 'online' ? (d.gateway ?? undefined) : undefined;
  }
});

function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)]));
}
