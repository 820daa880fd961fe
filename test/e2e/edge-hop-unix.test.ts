import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { eventually, RawDevice } from '../helpers/ws-device.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { InfluxV1 } from '../../scripts/local-stack/databases.ts';
import { startTestStack, influxSettings } from '../helpers/stack.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { startTestFieldClient } from '../helpers/field.ts';
import type { LocalStack } from '../../scripts/local-stack/stack.ts';
import { signedBatchFrame } from '../../shared/contract/uplink-frame.ts';
import { parseSigningKey } from '../../shared/security/message-auth.ts';

const DB = 'sensor_data';
const DEVICES = ['hop-field', 'hop-raw'];

/** The TCP ports process `pid` listens on, from its socket inodes and /proc/net/tcp{,6} (state 0A: LISTEN). */
function tcpListeners(pid: number): number[] {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1] as string);
    } catch {
      /* closed meanwhile */
    }
  }
  const ports: number[] = [];
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const line of readFileSync(table, 'utf8').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f[3] === '0A' && inodes.has(f[9] as string)) ports.push(Number.parseInt((f[1] as string).split(':')[1] as string, 16));
    }
  }
  return ports;
}

describe('the hop from Caddy to the gateway over a Unix socket (EDGE_HOP=unix), on real Caddy, Mosquittos and InfluxDB', () => {
  const work = tempDir('edge-hop');
  const pki = makeTestPki(DEVICES);
  const logs = new LogCapture();
  let influx: InfluxV1;
  let stack: LocalStack;
  let socket: string;

  before(async () => {
    influx = await InfluxV1.start(join(work.dir, 'influxdb'), DB);
    ({ stack } = await startTestStack(pki.dir, join(work.dir, 'stack'), {
      ...influxSettings(influx, DB),
    }, { edgeHop: 'unix' }));
    socket = stack.dmzServers[0]!.sockets[0]!;
  });
  after(async () => {
    await stack?.close();
    await influx?.process.stop();
    pki.cleanup();
    work.cleanup();
  });

  const count = async (device: string) => {
    const r = await influx.rows(DB, `SELECT count(v) FROM readings WHERE device = '${device}'`);
    return Number(r[0]?.count ?? 0);
  };

  it('carries a field client’s readings into InfluxDB and their commit receipts back: the device lets go of each', async () => {
    const field = await startTestFieldClient(pki.paths, 'hop-field', stack.urls.wss, logs.logger);
    try {
      const base = Date.parse('2026-01-01T00:00:00Z');
      await Promise.all(Array.from({ length: 300 }, (_, i) => field.client.submit('timeseries', { v: i, timestamp: base + i * 1000 })));
      await eventually(async () => ((await count('hop-field')) === 300 ? true : undefined), 30_000, '300 readings in InfluxDB');
      await eventually(() => (field.client.unacknowledged === 0 ? true : undefined), 30_000, 'every reading committed on the device');
      assert.equal(field.client.receiptsOn, true);
      assert.equal(field.client.receiptStats.receiptsInvalid, 0);
    } finally {
      await field.close();
    }
  });

  it('listens on the socket only (mode 0600, in a folder closed to others), not on any TCP port but its metrics', () => {
    const gateway = stack.gateways[0]!;
    assert.ok(statSync(socket).isSocket());
    assert.equal(statSync(socket).mode & 0o777, 0o600);
    assert.equal(statSync(join(socket, '..')).mode & 0o077, 0, 'the folder is its user’s alone');
    const metricsPort = Number(new URL(stack.metrics.gateways[0] as string).port);
    assert.deepEqual(tcpListeners(gateway.pid as number), [metricsPort]);
    assert.match(readFileSync(gateway.spec.logFile, 'utf8'), /"msg":"gateway listening on a Unix socket for Caddy \(EDGE_HOP=unix\)"/);
  });

  it('cannot be opened by another user, nor by a member of its group: the socket’s mode is the hop’s authentication', () => {
    // The folder opened for the probe, so that what refuses is the socket's own mode (connect(2)
    // needs write permission on it), not the folder.
    const folder = join(socket, '..');
    chmodSync(folder, 0o755);
    try {
      const probe = `require('node:net').connect(${JSON.stringify(socket)}).on('connect', () => { console.log('connected'); process.exit(0); }).on('error', (e) => { console.log(e.code); process.exit(0); })`;
      const as = (...ids: string[]) => execFileSync('setpriv', [...ids, '--clear-groups', process.execPath, '-e', probe], { encoding: 'utf8' }).trim();
      const owner = statSync(socket);
      assert.equal(as('--reuid=nobody', '--regid=nogroup'), 'EACCES', 'another user');
      assert.equal(as('--reuid=nobody', `--regid=${owner.gid}`), 'EACCES', 'a member of the socket’s group');
    } finally {
      chmodSync(folder, 0o700);
    }
  });

  it('a device’s certificate still decides who it is: a second device is welcomed as itself, and a frame naming another is refused', async () => {
    const d = await RawDevice.connect(stack.urls.wss, RawDevice.tlsFor(pki.paths, 'hop-raw'));
    try {
      await eventually(() => d.welcome, 10_000, 'the welcome frame');
      assert.equal(d.welcome?.deviceId, 'hop-raw');
      d.send(JSON.stringify({ deviceId: 'hop-field', dataType: 'timeseries', payload: { v: 1 } }));
      const refused = await d.next();
      assert.equal(refused.type, 'error', JSON.stringify(refused));
      assert.equal((refused as { code: string }).code, 'GATEWAY_DEVICE_MISMATCH');
    } finally {
      d.close();
    }
  });

  it('sends a device its ack and its commit receipt in one write once receipts flow: one TLS read each at the device, through Caddy', async () => {
    // The gateway holds a small ack for the device's next receipt (GATEWAY_ACK_HOLD_MS) and writes
    // both at once. What reaches the device tells: Caddy passes on what the gateway wrote, so the
    // two frames arrive in one read of the device's socket where, written apart, they came in two.
    const key = parseSigningKey(readFileSync(pki.paths.device('hop-raw').signingKey, 'utf8')) as Buffer;
    const d = await RawDevice.connect(stack.urls.wss, RawDevice.tlsFor(pki.paths, 'hop-raw'));
    try {
      await eventually(() => d.welcome, 10_000, 'the welcome frame');
      const round = async (seq: number): Promise<string[]> => {
        const messageId = `hold.${seq}`;
        const payloadJson = JSON.stringify({ v: seq, timestamp: Date.parse('2026-03-01T00:00:00Z') + seq });
        d.send(signedBatchFrame(key, { deviceId: 'hop-raw', epoch: 'hold', ts: Date.now() }, [{ dataType: 'timeseries', messageId, seq, payloadJson }]));
        const got = [await d.next(), await d.next()];
        return got.map((f) => (f.type === 'ack' ? `ack ${f.messageIds.join(',')}` : f.type === 'commit' ? `commit ${f.epoch} ${JSON.stringify(f.ranges)}` : JSON.stringify(f)));
      };
      // The first receipt tells the gateway that this device's receipts flow: until then its ack goes alone.
      assert.deepEqual(await round(1), ['ack hold.1', 'commit hold [[1,1]]']);
      const ROUNDS = 10;
      const before = d.socketReads;
      for (let seq = 2; seq < 2 + ROUNDS; seq++) assert.deepEqual(await round(seq), [`ack hold.${seq}`, `commit hold [[${seq},${seq}]]`]);
      // One read per round (two apart: 20). A little slack for a read the kernel splits.
      assert.ok(d.socketReads - before < ROUNDS * 1.5, `${d.socketReads - before} reads of the device's socket for ${ROUNDS} acks with their receipts`);
    } finally {
      d.close();
    }
  });

  it('after the gateway is killed (SIGKILL leaves its socket file), its restart removes the file, listens again and Caddy reaches it', async () => {
    const gateway = stack.gateways[0]!;
    const logged = () => readFileSync(gateway.spec.logFile, 'utf8').split('"msg":"removed the socket file a stopped gateway left').length - 1;
    const removedBefore = logged();
    await gateway.signal('SIGKILL');
    await gateway.untilReady(60_000);
    assert.equal(logged(), removedBefore + 1, 'the restart found the stale socket and removed it');
    assert.equal(statSync(socket).mode & 0o777, 0o600);
    const field = await startTestFieldClient(pki.paths, 'hop-field', stack.urls.wss, logs.logger);
    try {
      const before = await count('hop-field');
      const base = Date.parse('2026-02-01T00:00:00Z');
      await Promise.all(Array.from({ length: 50 }, (_, i) => field.client.submit('timeseries', { v: i, timestamp: base + i * 1000 })));
      await eventually(async () => ((await count('hop-field')) === before + 50 ? true : undefined), 30_000, '50 more readings in InfluxDB');
      await eventually(() => (field.client.unacknowledged === 0 ? true : undefined), 30_000, 'committed on the device');
    } finally {
      await field.close();
    }
  });
});
