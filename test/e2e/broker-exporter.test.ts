import { randomBytes, X509Certificate } from 'node:crypto';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createServer as createTlsServer, type Server } from 'node:tls';
import { connectAsync } from 'mqtt';
import mqttPacket from 'mqtt-packet';
import type { LocalStack } from '../../scripts/local-stack/stack.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { startTestStack } from '../helpers/stack.ts';
import { eventually } from '../helpers/ws-device.ts';
import { parseExposition } from '../helpers/exposition.ts';
import { RogueDmzBroker, startBridgedInternalMosquitto } from '../helpers/rogue-dmz-broker.ts';
import { freezableBroker } from '../helpers/freezable-broker.ts';
import { loadBrokerExporterConfig } from '../../internal-network/broker-exporter/config.ts';
import { startBrokerExporter, type BrokerExporter } from '../../internal-network/broker-exporter/exporter.ts';
import { createLogger } from '../../shared/logger.ts';
import { LogCapture } from '../helpers/embedded.ts';

/**
 * The broker exporter on the real stack: the real Mosquittos (2.0) publish $SYS, the exporter reads
 * both as `monitor` (the DMZ one dialling out from the internal side) and reports them; stopping the
 * DMZ broker shows, and so does the bridge dropping, and both come back.
 */
describe('the broker exporter reports both Mosquittos and the bridge from $SYS', () => {
  const work = tempDir('broker-exporter');
  const pki = makeTestPki([]);
  let stack: LocalStack;

  before(async () => {
    ({ stack } = await startTestStack(pki.dir, join(work.dir, 'stack'), {}));
  });
  after(async () => {
    await stack?.close();
    work.cleanup();
    pki.cleanup();
  });

  const scrape = async () => {
    const res = await fetch(`${stack.metrics.brokerExporter}/metrics`);
    assert.equal(res.status, 200);
    return parseExposition(await res.text());
  };
  const get = (m: Map<string, number>, name: string, broker?: 'dmz' | 'internal') =>
    m.get(`fieldstream_${name}{${broker ? `broker="${broker}",` : ''}service="broker-exporter"}`);
  /** Waits until the exporter reports what `want` says (name → value, or a predicate). */
  const until = (want: Record<string, number | ((v: number | undefined) => boolean)>, timeoutMs: number, what: string) =>
    eventually(async () => {
      const m = await scrape();
      for (const [key, expected] of Object.entries(want)) {
        const [name, broker] = key.split('@') as [string, 'dmz' | 'internal' | undefined];
        const v = get(m, name, broker);
        if (typeof expected === 'number' ? v !== expected : !expected(v)) return undefined;
      }
      return m;
    }, timeoutMs, what);

  it('both brokers up, the bridge connected, their counts read', async () => {
    // $SYS values are published every sys_interval (5 s), so the counts follow the connections by up to that.
    // DMZ: the gateway, the bridge, the exporter; internal: the distributor, the command API, the exporter.
    const m = await until(
      {
        'mosquitto_up@dmz': 1,
        'mosquitto_up@internal': 1,
        bridge_connected: 1,
        'mosquitto_clients_connected@dmz': (v) => (v ?? 0) >= 3,
        'mosquitto_clients_connected@internal': (v) => (v ?? 0) >= 3,
      },
      30_000,
      'both brokers up, the bridge connected, the clients counted',
    );
    for (const broker of ['dmz', 'internal'] as const) {
      assert.ok((get(m, 'mosquitto_messages_received_total', broker) ?? 0) > 0, broker);
      assert.ok((get(m, 'mosquitto_messages_sent_total', broker) ?? 0) > 0, broker);
      assert.ok(get(m, 'mosquitto_messages_stored', broker) !== undefined, broker);
      assert.equal(get(m, 'mosquitto_dropped_total', broker), 0, broker);
    }
    // When the certificate each broker presents ends, and the exporter's own: FieldStreamServiceCertificateExpiringSoon.
    const notAfter = (file: string) => Math.floor(Date.parse(new X509Certificate(readFileSync(file)).validTo) / 1000);
    assert.equal(get(m, 'mosquitto_certificate_expiry_timestamp_seconds', 'dmz'), notAfter(pki.paths.service('dmz/mosquitto').cert));
    assert.equal(get(m, 'mosquitto_certificate_expiry_timestamp_seconds', 'internal'), notAfter(pki.paths.service('internal/mosquitto').cert));
    assert.equal(m.get('fieldstream_certificate_expiry_timestamp_seconds{setting="MQTT_CERT_FILE",service="broker-exporter"}'), notAfter(pki.paths.service('internal/monitor').cert));
    const text = await (await fetch(`${stack.metrics.brokerExporter}/metrics`)).text();
    assert.match(text, /^# TYPE fieldstream_mosquitto_messages_received_total counter$/m);
    assert.match(text, /^# TYPE fieldstream_mosquitto_dropped_total counter$/m);
    assert.equal((await fetch(`${stack.metrics.brokerExporter}/readyz`)).status, 200);
  });

  it("the bridge brings the DMZ broker's uptime in, its heartbeat, live: the shipped DMZ ACL lets it read that", async () => {
    const p = pki.paths;
    const m = p.service('internal/monitor');
    const monitor = await connectAsync(stack.urls.internalMqtt, { ca: readFileSync(p.publicCa), cert: readFileSync(m.cert), key: readFileSync(m.key), protocolVersion: 5, reconnectPeriod: 0, clientId: 'exporter-test-heartbeat' });
    try {
      const beat = new Promise<string>((resolve) => monitor.on('message', (topic, _payload, packet) => packet.retain || resolve(topic)));
      await monitor.subscribeAsync('$SYS/broker/connection/+/remote/uptime', { qos: 0 });
      // The DMZ broker publishes it every sys_interval (5 s).
      const topic = await Promise.race([beat, new Promise<undefined>((r) => setTimeout(r, 15_000, undefined))]);
      assert.match(topic ?? 'none within 15 s', /^\$SYS\/broker\/connection\/fieldstream-bridge[^/]*\/remote\/uptime$/);
    } finally {
      await monitor.endAsync();
    }
  });

  it('the DMZ broker stopped: mosquitto_up{broker="dmz"} 0 and bridge_connected 0; back to 1 when it restarts', async () => {
    await stack.dmzMosquitto.stop();
    const down = await until({ 'mosquitto_up@dmz': 0, bridge_connected: 0, 'mosquitto_up@internal': 1 }, 30_000, 'the DMZ broker reported down');
    // Nothing stale is reported for a broker the exporter cannot read.
    assert.equal(get(down, 'mosquitto_clients_connected', 'dmz'), undefined);
    // The exporter stays ready: the DMZ broker being down is what it reports.
    assert.equal((await fetch(`${stack.metrics.brokerExporter}/readyz`)).status, 200);

    await stack.dmzMosquitto.start();
    // The bridge retries with a growing delay (restart_timeout 2 30).
    await until({ 'mosquitto_up@dmz': 1, bridge_connected: 1, 'mosquitto_clients_connected@dmz': (v) => (v ?? 0) >= 2 }, 60_000, 'the DMZ broker and the bridge back');
  });

  it('the internal broker stopped: it and the bridge read as down, and not ready', async () => {
    await stack.internalMosquitto.stop();
    await until({ 'mosquitto_up@internal': 0, bridge_connected: 0, 'mosquitto_up@dmz': 1 }, 30_000, 'the internal broker reported down');
    assert.equal((await fetch(`${stack.metrics.brokerExporter}/readyz`)).status, 503);
    await stack.internalMosquitto.start();
    await until({ 'mosquitto_up@internal': 1, bridge_connected: 1 }, 60_000, 'the internal broker and the bridge back');
  });
});

/**
 * The bridge states the exporter reads come through the bridge too: a compromised DMZ server can
 * publish `$SYS/broker/connection/<name>/state` on the internal broker, retained, under any name
 * (SECURITY.md). The real internal Mosquitto, bridged to two brokers standing in for DMZ servers
 * (DMZ_BROKER_HOSTS), one of which does that; the real exporter, told the same DMZ_BROKER_HOSTS,
 * reports the two real bridges and counts the rest, before and after its own restart. Both are given
 * the same BRIDGE_STATE_TOKEN, so the real states are published under names the DMZ cannot know, and
 * a state under a real bridge's client id alone is a forgery.
 */
describe('the broker exporter reads only the bridges render-bridges.sh renders', () => {
  const work = tempDir('exporter-bridges');
  const pki = makeTestPki([]);
  const repo = join(import.meta.dirname, '..', '..');
  const rogue = new RogueDmzBroker(pki.paths.service('dmz/mosquitto'));
  const other = new RogueDmzBroker(pki.paths.service('dmz/mosquitto'));
  let internal: Awaited<ReturnType<typeof startBridgedInternalMosquitto>>;
  let exporter: BrokerExporter | undefined;
  let hosts = '';
  const token = randomBytes(16).toString('hex');

  const start = async () => {
    const m = pki.paths.service('internal/monitor');
    exporter = await startBrokerExporter(
      loadBrokerExporterConfig({
        MQTT_URL: internal.url,
        MQTT_CA_FILE: pki.paths.publicCa,
        MQTT_CERT_FILE: m.cert,
        MQTT_KEY_FILE: m.key,
        DMZ_MQTT_URL: 'off',
        DMZ_BROKER_HOSTS: hosts,
        BRIDGE_STATE_TOKEN: token,
        BROKER_EXPORTER_CLIENT_ID: 'exporter-bridges-test',
        BROKER_EXPORTER_METRICS_PORT: '0',
      }),
      createLogger('broker-exporter', 'silent'),
    );
  };
  const scrape = async () => {
    const res = await fetch(`${exporter?.metricsUrl}/metrics`);
    assert.equal(res.status, 200);
    return parseExposition(await res.text());
  };
  const S = 'service="broker-exporter"';
  /** Waits for these samples (exposition key without the service label → value). */
  const until = (want: Record<string, number | ((v: number | undefined) => boolean)>, what: string) =>
    eventually(async () => {
      const m = await scrape();
      for (const [key, expected] of Object.entries(want)) {
        const v = m.get(key.endsWith('}') ? key.replace(/\}$/, `,${S}}`) : `${key}{${S}}`);
        if (typeof expected === 'number' ? v !== expected : !expected(v)) return undefined;
      }
      return m;
    }, 30_000, what);
  const connected = { fieldstream_bridge_connected: 1, 'fieldstream_bridge_up{bridge="fieldstream-bridge"}': 1, 'fieldstream_bridge_up{bridge="fieldstream-bridge-2"}': 1 };

  before(async () => {
    await rogue.listen();
    await other.listen();
    hosts = `localhost:${rogue.port},localhost:${other.port}`;
    internal = await startBridgedInternalMosquitto(repo, pki, work.dir, hosts, token);
    await Promise.all([rogue.subscribed, other.subscribed]);
    await eventually(() => start().then(() => true, () => undefined), 10_000, 'the exporter started');
  });
  after(async () => {
    await exporter?.close();
    await internal?.stop();
    await rogue.close();
    await other.close();
    work.cleanup();
    pki.cleanup();
  });

  it('both bridges expected and reported; no state ignored', async () => {
    await until({ ...connected, 'fieldstream_bridge_states_ignored_total{broker="internal"}': 0 }, 'both bridges connected');
  });

  it('invented bridges, down, published through one bridge, retained: counted, and neither a false alarm nor crowding out the real ones after a restart', async () => {
    for (let i = 0; i < 300; i++) rogue.inject(`$SYS/broker/connection/invented-${i}/state`, '0', true);
    const m = await until({ 'fieldstream_bridge_states_ignored_total{broker="internal"}': (v) => (v ?? 0) >= 300 }, 'the invented states counted');
    assert.equal(m.get(`fieldstream_bridge_connected{${S}}`), 1, 'no false FieldStreamBridgeDown');
    assert.equal([...m.keys()].filter((k) => k.includes('invented')).length, 0, 'no series of an invented name');
    // Restarted, the exporter is handed every retained state at once, the invented ones included.
    await exporter?.close();
    exporter = undefined;
    await start();
    await until({ ...connected, 'fieldstream_bridge_states_ignored_total{broker="internal"}': (v) => (v ?? 0) >= 300 }, 'both real bridges read after the restart');
  });

  it("states forged under the real bridges' client ids, retained: counted as forged, neither a false alarm nor believed", async () => {
    const before = (await scrape()).get(`fieldstream_bridge_states_ignored_total{broker="internal",${S}}`) ?? 0;
    rogue.inject('$SYS/broker/connection/fieldstream-bridge/state', '0', true);
    rogue.inject('$SYS/broker/connection/fieldstream-bridge-2/state', '0', true);
    // And a heartbeat for the other DMZ server's bridge, under its client id: also not believed.
    rogue.inject('$SYS/broker/connection/fieldstream-bridge-2/remote/uptime', '1 seconds');
    const m = await until({ 'fieldstream_bridge_states_ignored_total{broker="internal"}': (v) => (v ?? 0) >= before + 3 }, 'the forged states counted');
    assert.equal(m.get(`fieldstream_bridge_connected{${S}}`), 1, 'no false FieldStreamBridgeDown');
    assert.equal([...m.keys()].filter((k) => k.includes(token)).length, 0, 'the token is in no series');
    // Restarted, the exporter is handed the forged states again, retained: still not believed.
    await exporter?.close();
    exporter = undefined;
    await start();
    await until(connected, 'both real bridges read after the restart');
  });

  it('a real bridge down reads down, named, whatever the invented ones say, and whatever is forged under its name', async () => {
    rogue.inject('$SYS/broker/connection/invented-0/state', '1', true);
    await other.close();
    await until(
      { fieldstream_bridge_connected: 0, 'fieldstream_bridge_up{bridge="fieldstream-bridge"}': 1, 'fieldstream_bridge_up{bridge="fieldstream-bridge-2"}': 0 },
      'the second bridge down',
    );
    // The DMZ server still connected says the other one is up: not believed.
    rogue.inject('$SYS/broker/connection/fieldstream-bridge-2/state', '1', true);
    await new Promise((r) => setTimeout(r, 1000));
    const m = await scrape();
    assert.equal(m.get(`fieldstream_bridge_up{bridge="fieldstream-bridge-2",${S}}`), 0);
    assert.equal(m.get(`fieldstream_bridge_connected{${S}}`), 0);
  });
});

/**
 * A DMZ broker that hangs (SIGSTOP: its connections stand, nothing answers), or a network that drops
 * everything between the servers: Mosquitto 2.0 drops the bridge at its keepalive and dials again,
 * but with `notifications_local_only` it publishes no "0" then, so the bridge's state stays "1"
 * for as long as the hang lasts. The real internal Mosquitto, with the bridges render-bridges.sh
 * renders, bridged to two real Mosquittos standing in for two DMZ servers (DMZ_BROKER_HOSTS, the
 * shipped `sys_interval`), the exporter dialling the first (DMZ_MQTT_URL): either one frozen, the
 * bridge to it reads down within what the exporter's staleness and $SYS's interval allow while the
 * other stays up; resumed, it reads up again.
 */
describe('the broker exporter reports the bridge to a DMZ broker that hangs as down, whichever DMZ broker it is', () => {
  const repo = join(import.meta.dirname, '..', '..');
  const sysIntervalS = Number(/^sys_interval (\d+)$/m.exec(readFileSync(join(repo, 'dmz', 'mosquitto', 'mosquitto.conf'), 'utf8'))?.[1]);
  const watched = freezableBroker('exporter-frozen-dmz', [], 'dmz/mosquitto', `sys_interval ${sysIntervalS}\n`);
  const other = freezableBroker('exporter-frozen-dmz-2', [], 'dmz/mosquitto', `sys_interval ${sysIntervalS}\n`, watched.pki);
  // Three $SYS intervals: Mosquitto 2.0, idle, now and then publishes $SYS one interval late.
  const staleS = 3 * sysIntervalS;
  const token = randomBytes(16).toString('hex');
  let internal: Awaited<ReturnType<typeof startBridgedInternalMosquitto>> | undefined;
  let exporter: BrokerExporter | undefined;
  let startedAt = 0;

  const S = 'service="broker-exporter"';
  const scrape = async () => parseExposition(await (await fetch(`${exporter?.metricsUrl}/metrics`)).text());
  const bridgeUp = (m: Map<string, number>, id: string) => m.get(`fieldstream_bridge_up{bridge="${id}",${S}}`);
  /** Waits until `down` (if any) reads down and the other bridge up, failing if that other one ever reads down meanwhile. */
  const until = (down: string | undefined, timeoutMs: number, what: string) => {
    const ids = ['fieldstream-bridge', 'fieldstream-bridge-2'];
    return eventually(async () => {
      const m = await scrape();
      if (down !== undefined) for (const id of ids) if (id !== down && bridgeUp(m, id) === 0) throw new Error(`${id} read down while only ${down} hung`);
      const ok = ids.every((id) => bridgeUp(m, id) === (id === down ? 0 : 1)) && m.get(`fieldstream_bridge_connected{${S}}`) === (down === undefined ? 1 : 0);
      return ok ? m : undefined;
    }, timeoutMs, what);
  };
  // The last heartbeat may be up to two $SYS intervals old when the broker freezes (see staleS), and
  // the staleness is judged at each scrape: down within the staleness and two intervals. Twice that
  // covers a busy machine.
  const downWithinMs = 2 * (staleS + 2 * sysIntervalS) * 1000;

  before(async () => {
    const p = watched.pki.paths;
    // The names the bridges verify the DMZ brokers' certificates with; the exporter dials the first.
    const hostPorts = [watched, other].map((b) => `localhost:${new URL(b.broker.tlsUrl).port}`);
    const dir = join(watched.work.dir, 'internal');
    mkdirSync(dir);
    internal = await startBridgedInternalMosquitto(repo, watched.pki, dir, hostPorts.join(','), token);
    const m = p.service('internal/monitor');
    exporter = await startBrokerExporter(
      loadBrokerExporterConfig({
        MQTT_URL: internal.url,
        MQTT_CA_FILE: p.publicCa,
        MQTT_CERT_FILE: m.cert,
        MQTT_KEY_FILE: m.key,
        DMZ_MQTT_URL: `mqtts://${hostPorts[0]}`,
        DMZ_MQTT_CA_FILE: p.dmzBrokerCa.internal,
        DMZ_BROKER_HOSTS: hostPorts.join(','),
        BRIDGE_STATE_TOKEN: token,
        BROKER_EXPORTER_STALE_S: String(staleS),
        BROKER_EXPORTER_CLIENT_ID: 'exporter-frozen-dmz-test',
        BROKER_EXPORTER_METRICS_PORT: '0',
      }),
      createLogger('broker-exporter', 'silent'),
    );
    startedAt = Date.now();
  });
  after(async () => {
    await exporter?.close();
    await internal?.stop();
  });

  it('the DMZ broker it does not dial frozen: that bridge reads down within the staleness and two $SYS intervals, the other stays up; resumed: up again', async () => {
    await until(undefined, 30_000, 'both bridges connected');
    // Past the staleness since the exporter connected: both read up for their heartbeats, not for want of time to hear one.
    await new Promise((r) => setTimeout(r, startedAt + (staleS + 1) * 1000 - Date.now()));
    await until(undefined, 5_000, 'both bridges still connected, their heartbeats arriving');
    await other.broker.process.pause();
    const m = await until('fieldstream-bridge-2', downWithinMs, 'the bridge to the frozen DMZ broker reported down');
    // The exporter reads the DMZ broker it dials (the watched one), which answers throughout.
    assert.equal(m.get(`fieldstream_mosquitto_up{broker="dmz",${S}}`), 1);
    await other.broker.process.resume();
    // Mosquitto dials again with a growing delay (bridge.conf: restart_timeout 2 30).
    await until(undefined, 90_000, 'the bridge reported up again once the DMZ broker answers');
  });

  it('the DMZ broker it dials frozen: that bridge reads down, the other stays up; resumed: up again', async () => {
    await until(undefined, 30_000, 'both bridges connected');
    await watched.broker.process.pause();
    await until('fieldstream-bridge', downWithinMs, 'the bridge to the frozen DMZ broker reported down');
    await watched.broker.process.resume();
    await until(undefined, 90_000, 'the bridge reported up again once the DMZ broker answers');
  });
});

/**
 * The exporter dials the DMZ broker itself, and the DMZ is not trusted (SECURITY.md): whoever holds
 * the DMZ server can answer that connection with a broker of their own. mqtt.js buffers a packet
 * whole, up to MQTT's 256 MB, before anything looks at it; one PUBLISH that large took more than the
 * exporter's container has (mem_limit 256m), and it was killed, again at each reconnect. The
 * connection is closed as soon as such a packet's length is read.
 */
describe('the broker exporter facing a DMZ broker that sends a packet larger than any $SYS message', () => {
  const fx = freezableBroker('exporter-big-packet', [], 'internal/mosquitto');
  const logs = new LogCapture();
  const PACKET_BYTES = 64 * 1024 * 1024;
  let exporter: BrokerExporter | undefined;
  let rogue: Server | undefined;
  /** per connection: the bytes of the large packet written before it closed, and whether all were */
  const sent: Array<Promise<{ written: number; whole: boolean }>> = [];

  before(async () => {
    const p = fx.pki.paths;
    const dmz = p.service('dmz/mosquitto');
    rogue = createTlsServer({ key: readFileSync(dmz.key), cert: readFileSync(dmz.cert) }, (sock) => {
      const parser = mqttPacket.parser({ protocolVersion: 5 });
      sock.on('error', () => undefined);
      parser.on('packet', (packet) => {
        const v5 = { protocolVersion: 5 } as const;
        if (packet.cmd === 'connect') sock.write(mqttPacket.generate({ cmd: 'connack', reasonCode: 0, sessionPresent: false }, v5));
        if (packet.cmd !== 'subscribe') return;
        sock.write(mqttPacket.generate({ cmd: 'suback', messageId: packet.messageId, granted: packet.subscriptions.map(() => 0) }, v5));
        // A PUBLISH on a topic the exporter reads, its payload sent a piece at a time for as long as the connection stands.
        const topic = Buffer.from('$SYS/broker/uptime');
        const body = PACKET_BYTES - 2 - topic.length - 1;
        const lengthBytes: number[] = [];
        for (let n = PACKET_BYTES; ; ) {
          const b = n % 128;
          n = Math.floor(n / 128);
          lengthBytes.push(n > 0 ? b | 0x80 : b);
          if (n === 0) break;
        }
        sent.push(
          (async () => {
            let closed = false;
            sock.once('close', () => (closed = true));
            // MQTT 5: the topic, then the properties' length (none), then the payload.
            sock.write(Buffer.concat([Buffer.from([0x30, ...lengthBytes]), Buffer.from([topic.length >> 8, topic.length & 0xff]), topic, Buffer.from([0])]));
            const piece = Buffer.alloc(64 * 1024, 0x31);
            let written = 0;
            while (written < body && !closed) {
              const n = Math.min(piece.length, body - written);
              written += n;
              if (!sock.write(piece.subarray(0, n))) await new Promise((r) => (sock.once('drain', r), sock.once('close', r)));
            }
            return { written, whole: written >= body && !closed };
          })(),
        );
      });
      sock.on('data', (d: Buffer) => parser.parse(d));
    });
    await new Promise<void>((resolve) => (rogue as Server).listen(0, '127.0.0.1', resolve));
    const m = p.service('internal/monitor');
    exporter = await startBrokerExporter(
      loadBrokerExporterConfig({
        MQTT_URL: fx.broker.tlsUrl,
        MQTT_CA_FILE: p.publicCa,
        MQTT_CERT_FILE: m.cert,
        MQTT_KEY_FILE: m.key,
        DMZ_MQTT_URL: `mqtts://localhost:${((rogue as Server).address() as AddressInfo).port}`,
        DMZ_MQTT_CA_FILE: p.dmzBrokerCa.internal,
        BROKER_EXPORTER_CLIENT_ID: 'exporter-big-packet-test',
        BROKER_EXPORTER_METRICS_PORT: '0',
      }),
      logs.logger,
    );
  });
  after(async () => {
    await exporter?.close();
    rogue?.close();
  });

  it('closes the connection as soon as the packet\'s length is read (MQTT_PACKET_TOO_LARGE), never reading it whole, and reports that broker down', async () => {
    await eventually(() => (sent.length > 0 ? true : undefined), 20_000, 'the exporter subscribed on the rogue DMZ broker');
    const first = await (sent[0] as Promise<{ written: number; whole: boolean }>);
    assert.equal(first.whole, false, `the exporter read all ${first.written} bytes of the packet`);
    assert.ok(first.written < PACKET_BYTES / 4, `closed after ${first.written} bytes`);
    assert.ok(logs.codes().includes('MQTT_PACKET_TOO_LARGE'), `logged: ${JSON.stringify(logs.codes())}`);
    const text = await (await fetch(`${(exporter as BrokerExporter).metricsUrl}/metrics`)).text();
    assert.equal(parseExposition(text).get('fieldstream_mosquitto_up{broker="dmz",service="broker-exporter"}'), 0);
  });
});
