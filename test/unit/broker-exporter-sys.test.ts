import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EventEmitter } from 'node:events';
import { describe, it } from 'node:test';
import type { MqttClient } from 'mqtt';
import { BrokerWatch, SYS } from '../../internal-network/broker-exporter/exporter.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { packetLengths } from '../../shared/mqtt/packet-limit.ts';
import { bridgeStateNames, expectedBridges, loadBrokerExporterConfig } from '../../internal-network/broker-exporter/config.ts';

/**
 * The broker exporter's reading of $SYS: a bridge the internal broker runs brings in any topic the
 * DMZ broker sends, $SYS ones included, and no ACL applies to it (SECURITY.md). What it keeps must
 * not grow with what such a broker invents.
 */
describe('the broker exporter keeps only the $SYS it reads', () => {
  const watch = () => {
    const client = Object.assign(new EventEmitter(), { connected: true });
    return { client, w: new BrokerWatch('internal', client as unknown as MqttClient, 60_000) };
  };

  it('keeps the values it reports, and no other $SYS topic however many arrive', () => {
    const { client, w } = watch();
    client.emit('message', SYS.clientsConnected, Buffer.from('3'));
    for (let i = 0; i < 10_000; i++) client.emit('message', `$SYS/invented/${i}`, Buffer.from('1'));
    assert.deepEqual([...w.values], [[SYS.clientsConnected, 3]]);
  });

  it('takes a value only as Mosquitto writes it, a count in decimal digits', () => {
    const { client, w } = watch();
    client.emit('message', SYS.clientsConnected, Buffer.from('3'));
    for (const odd of ['', ' ', '0x10', ' 7 ', '1e3', '-1', '2.5', 'Infinity', '12345678901234567']) {
      client.emit('message', SYS.clientsConnected, Buffer.from(odd));
      assert.equal(w.values.get(SYS.clientsConnected), 3, `"${odd}" is not a count`);
    }
    client.emit('message', SYS.clientsConnected, Buffer.from('40'));
    assert.equal(w.values.get(SYS.clientsConnected), 40);
  });

  it('keeps the states of the expected bridges only: invented names are counted, crowd none out, and raise no alarm', () => {
    const client = Object.assign(new EventEmitter(), { connected: true });
    const w = new BrokerWatch('internal', client as unknown as MqttClient, 60_000, ['fieldstream-bridge', 'fieldstream-bridge-2']);
    // What a compromised DMZ sends first (or what a restarted exporter is handed first, retained):
    // a thousand invented bridges, all down, and a "-3" no DMZ_BROKER_HOSTS entry makes.
    for (let i = 0; i < 1000; i++) client.emit('message', `$SYS/broker/connection/invented-${i}/state`, Buffer.from('0'));
    client.emit('message', '$SYS/broker/connection/fieldstream-bridge-3/state', Buffer.from('0'));
    assert.equal(w.ignoredBridgeStates, 1001);
    assert.equal(w.bridges.size, 0);
    // An expected bridge that has said nothing is down.
    assert.equal(w.bridgeUp('fieldstream-bridge'), 0);
    client.emit('message', '$SYS/broker/connection/fieldstream-bridge/state', Buffer.from('1'));
    client.emit('message', '$SYS/broker/connection/fieldstream-bridge-2/state', Buffer.from('1'));
    assert.deepEqual([...w.bridges], [['fieldstream-bridge', 1], ['fieldstream-bridge-2', 1]]);
    assert.equal(w.bridgeUp('fieldstream-bridge'), 1);
    client.emit('message', '$SYS/broker/connection/fieldstream-bridge-2/state', Buffer.from('0'));
    assert.equal(w.bridgeUp('fieldstream-bridge-2'), 0);
    assert.equal(w.ignoredBridgeStates, 1001);
  });

  it("a bridge whose state says 1 is up only while its heartbeat (the DMZ broker's uptime it carries in) arrives within the staleness limit; a retained one is not a beat", async () => {
    const client = Object.assign(new EventEmitter(), { connected: true });
    const staleMs = 100;
    const w = new BrokerWatch('internal', client as unknown as MqttClient, staleMs, ['fieldstream-bridge', 'fieldstream-bridge-2']);
    const sys = () => client.emit('message', SYS.clientsConnected, Buffer.from('2'), { retain: false });
    const beat = (name: string, retain = false) => client.emit('message', `$SYS/broker/connection/${name}/remote/uptime`, Buffer.from('5 seconds'), { retain });
    sys();
    client.emit('message', '$SYS/broker/connection/fieldstream-bridge/state', Buffer.from('1'), { retain: true });
    client.emit('message', '$SYS/broker/connection/fieldstream-bridge-2/state', Buffer.from('1'), { retain: true });
    // Just connected: none awaited yet.
    assert.equal(w.bridgeUp('fieldstream-bridge'), 1);
    assert.equal(w.bridgeUp('fieldstream-bridge-2'), 1);
    const tick = () => new Promise((r) => setTimeout(r, staleMs * 0.6));
    for (let i = 0; i < 3; i++) {
      await tick();
      sys();
      beat('fieldstream-bridge');
      // Retained: the last beat before whatever happened since, handed over again on subscribing.
      beat('fieldstream-bridge-2', true);
    }
    assert.equal(w.bridgeUp('fieldstream-bridge'), 1, 'beating');
    assert.equal(w.bridgeUp('fieldstream-bridge-2'), 0, 'its state still says 1, but no live beat within the limit');
    beat('fieldstream-bridge-2');
    assert.equal(w.bridgeUp('fieldstream-bridge-2'), 1, 'beating again');
    // A beat under a name no bridge of ours has is counted with the invented states.
    beat('invented');
    assert.equal(w.ignoredBridgeStates, 1);
    // Reconnected: the beats are awaited afresh from then on.
    client.emit('close');
    client.emit('connect');
    sys();
    client.emit('message', '$SYS/broker/connection/fieldstream-bridge/state', Buffer.from('1'), { retain: true });
    assert.equal(w.bridgeUp('fieldstream-bridge'), 1);
    await tick();
    await tick();
    sys();
    assert.equal(w.bridgeUp('fieldstream-bridge'), 0);
  });

  it('the DMZ broker runs no bridge: every bridge state read there is ignored and counted', () => {
    const client = Object.assign(new EventEmitter(), { connected: true });
    const w = new BrokerWatch('dmz', client as unknown as MqttClient, 60_000);
    client.emit('message', '$SYS/broker/connection/fieldstream-bridge/state', Buffer.from('1'));
    assert.equal(w.bridges.size, 0);
    assert.equal(w.ignoredBridgeStates, 1);
  });
});

/**
 * The bridges the exporter expects are those render-bridges.sh renders from the same settings: run
 * the script on the real template and compare the remote_clientid lines.
 */
describe('the broker exporter expects the bridges render-bridges.sh renders', () => {
  const repo = join(import.meta.dirname, '..', '..');
  const rendered = (env: Record<string, string>) => {
    const dir = mkdtempSync(join(tmpdir(), 'bridges-'));
    try {
      execFileSync(join(repo, 'internal-network', 'mosquitto', 'render-bridges.sh'), [join(repo, 'internal-network', 'mosquitto', 'bridge.conf'), dir], {
        env: { PATH: process.env.PATH ?? '', RENDER_CONFIG: join(repo, 'scripts', 'render-config.sh'), ...env },
      });
      return readdirSync(dir)
        .sort((a, b) => Number(/\d+/.exec(a)?.[0]) - Number(/\d+/.exec(b)?.[0]))
        .map((f) => {
          const text = readFileSync(join(dir, f), 'utf8');
          return {
            id: /^remote_clientid (.+)$/m.exec(text)?.[1],
            state: /^notification_topic \$SYS\/broker\/connection\/(.+)\/state$/m.exec(text)?.[1],
            // The DMZ broker's uptime, brought in under the same name (BRIDGE_HEARTBEAT).
            heartbeat: /^topic uptime in 0 \$SYS\/broker\/connection\/(.+)\/remote\/ \$SYS\/broker\/$/m.exec(text)?.[1],
          };
        });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
  const base = { MQTT_CERT_FILE: 'x', DMZ_BROKER_HOST: 'dmz.example.org' };
  for (const env of [
    {},
    { DMZ_BROKER_HOSTS: 'dmz1.example.org:8883' },
    { DMZ_BROKER_HOSTS: 'dmz1.example.org:8883,dmz2.example.org,dmz3.example.org:8884' },
    { DMZ_BROKER_HOSTS: ' dmz1.example.org:8883, ,dmz2.example.org ', BRIDGE_CLIENT_ID: 'site-7-bridge' },
    { DMZ_BROKER_HOSTS: 'dmz1.example.org:8883,dmz2.example.org', BRIDGE_STATE_TOKEN: '0123456789abcdef_-XY' },
  ] as Array<Record<string, string>>) {
    it(JSON.stringify(env), () => {
      const config = loadBrokerExporterConfig({ ...base, ...env });
      const bridges = rendered({ ...base, ...env });
      assert.deepEqual(expectedBridges(config), bridges.map((b) => b.id));
      // Each state read under the name the broker publishes it with (notification_topic), reported under the client id.
      assert.deepEqual([...bridgeStateNames(config)], bridges.map((b) => [b.state, b.id]));
      assert.deepEqual(bridges.map((b) => b.heartbeat), bridges.map((b) => b.state));
      if (env.BRIDGE_STATE_TOKEN) for (const b of bridges) assert.equal(b.state, `${b.id}-${env.BRIDGE_STATE_TOKEN}`);
    });
  }

  it('refuses a BRIDGE_STATE_TOKEN that is no topic level, or too short to be unguessable, as render-bridges.sh does', () => {
    for (const bad of ['short', 'has/a/slash-0123456789', 'plus+0123456789abcdef', 'x'.repeat(129)]) {
      assert.throws(() => rendered({ ...base, BRIDGE_STATE_TOKEN: bad }), /Command failed/, bad);
      assert.throws(() => loadBrokerExporterConfig({ ...base, BRIDGE_STATE_TOKEN: bad }), (err: unknown) => err instanceof FieldStreamError && err.code === 'CONFIG_INVALID' && /BRIDGE_STATE_TOKEN/.test(err.message), bad);
    }
  });

  it('refuses a DMZ_BROKER_HOSTS entry render-bridges.sh refuses, naming the setting (CONFIG_INVALID)', () => {
    for (const bad of ['dmz1.example.org:88a3', ':8883', 'dmz1.example.org:']) {
      assert.throws(() => rendered({ DMZ_BROKER_HOSTS: bad }), /Command failed/, bad);
      assert.throws(() => loadBrokerExporterConfig({ ...base, DMZ_BROKER_HOSTS: bad }), (err: unknown) => err instanceof FieldStreamError && err.code === 'CONFIG_INVALID' && /DMZ_BROKER_HOSTS/.test(err.message), bad);
    }
  });
});

/**
 * The framing read beside mqtt.js to refuse a packet too large before it is buffered
 * (shared/mqtt/packet-limit.ts): remaining lengths of one to four bytes, packets split anywhere
 * across reads, and the bound exact.
 */
describe('packetLengths: the MQTT framing read to bound what a broker sends the exporter', () => {
  /** A packet: its type byte, its remaining length as MQTT writes it, then that many bytes. */
  const packet = (length: number) => {
    const len: number[] = [];
    for (let n = length; ; ) {
      const b = n % 128;
      n = Math.floor(n / 128);
      len.push(n > 0 ? b | 0x80 : b);
      if (n === 0) break;
    }
    return Buffer.concat([Buffer.from([0x30, ...len]), Buffer.alloc(length, 0xff)]);
  };
  const refusals = (bytes: Buffer, max: number, pieceBytes: number) => {
    const refused: number[] = [];
    const read = packetLengths(max, (n) => refused.push(n));
    for (let i = 0; i < bytes.length; i += pieceBytes) read(bytes.subarray(i, i + pieceBytes));
    return refused;
  };

  it('lets through packets up to the bound, whatever their length bytes and however they are split', () => {
    const max = 20_000;
    // 0, 127 (one length byte), 128, 16383 (two), 16384 (three), max itself; their bodies of 0xff look like length bytes to a reader that lost its place.
    const stream = Buffer.concat([0, 127, 128, 16_383, 16_384, max, 2].map(packet));
    for (const piece of [1, 2, 3, 7, 4096, stream.length]) assert.deepEqual(refusals(stream, max, piece), [], `pieces of ${piece}`);
  });

  it('refuses the first packet past the bound, once, as its length arrives', () => {
    for (const piece of [1, 5, 1 << 20]) assert.deepEqual(refusals(Buffer.concat([packet(10), packet(64 * 1024 + 1), packet(10)]), 64 * 1024, piece), [64 * 1024 + 1]);
    // MQTT's largest, told by its length alone: no byte of its body needs to come.
    assert.deepEqual(refusals(Buffer.from([0x30, 0xff, 0xff, 0xff, 0x7f]), 64 * 1024, 1).length, 1);
  });

  it('refuses a remaining length of more than four bytes (malformed)', () => {
    assert.equal(refusals(Buffer.from([0x30, 0x80, 0x80, 0x80, 0x80, 0x01]), Number.MAX_SAFE_INTEGER, 1).length, 1);
  });
});
