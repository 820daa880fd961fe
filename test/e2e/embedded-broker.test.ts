import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { connect, connectAsync, type MqttClient } from 'mqtt';
import { startEmbeddedBroker, type EmbeddedBroker } from '../../embedded/broker.ts';
import { uplinkTopic } from '../../shared/contract/topics.ts';
import { LIMITS } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';
import { quietStartEnv } from '../helpers/embedded.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { setupPki } from '../../pki/onboarding.ts';
import { eventually } from '../helpers/ws-device.ts';
import { isFieldStreamError } from '../../shared/errors.ts';

const log = createLogger('test', 'silent');

/**
 * The embedded broker of `npm start` (aedes, mTLS) against clients that hold a certificate of the
 * CA and misbehave: what Mosquitto refuses by its configuration, it refuses too.
 */
describe('the embedded broker against hostile clients', () => {
  const pki = makeTestPki(['dev-hostile']);
  let broker: EmbeddedBroker;
  const tls = (cert: string, key: string) => ({ ca: readFileSync(pki.paths.publicCa, 'utf8'), cert: readFileSync(cert, 'utf8'), key: readFileSync(key, 'utf8') });

  before(async () => {
    const server = pki.paths.service('internal/mosquitto');
    broker = await startEmbeddedBroker({ host: '127.0.0.1', port: 0, setting: 'EMBEDDED_MQTT_PORT', tls: tls(server.cert, server.key), logger: log });
  });
  after(async () => {
    await broker?.close();
    pki.cleanup();
  });

  const clients: MqttClient[] = [];
  after(async () => {
    await Promise.all(clients.map((c) => c.endAsync(true)));
  });
  /** an MQTT client with a service's certificate (pki/layout.ts: 'internal/distributor', 'dmz/gateway-client' ...) */
  const as = async (service: string, clientId: string, clean = true) => {
    const files = pki.paths.service(service);
    const c = await connectAsync(`mqtts://127.0.0.1:${broker.port}`, { ...tls(files.cert, files.key), servername: 'localhost', clientId, clean, protocolVersion: 4, reconnectPeriod: 0 });
    clients.push(c);
    return c;
  };

  const open = (cert: string, key: string) =>
    new Promise<TLSSocket>((resolve, reject) => {
      const s = tlsConnect({ host: '127.0.0.1', port: broker.port, servername: 'localhost', ...tls(cert, key) }, () => resolve(s));
      s.once('error', reject);
    });

  it('closes a connection whose packet is announced larger than LIMITS.brokerPacketMaxBytes (max_packet_size), before buffering it: a device certificate, before any CONNECT was taken', async () => {
    const device = pki.paths.device('dev-hostile');
    const s = await open(device.cert, device.key);
    const closed = new Promise<void>((resolve) => s.once('close', () => resolve()));
    s.on('error', () => undefined);
    // A CONNECT (0x10) of 200 MB: remaining length in MQTT's variable-length encoding (§2.2.3).
    const length = 200 * 1024 * 1024;
    const header = [0x10];
    for (let n = length; ; ) {
      let byte = n % 128;
      n = Math.floor(n / 128);
      if (n > 0) byte |= 0x80;
      header.push(byte);
      if (n === 0) break;
    }
    s.write(Buffer.from(header));
    const chunk = Buffer.alloc(1024 * 1024);
    let sent = 0;
    let open_ = true;
    void closed.then(() => (open_ = false));
    while (open_ && sent < LIMITS.brokerPacketMaxBytes + 8 * 1024 * 1024) {
      if (!s.write(chunk)) await Promise.race([new Promise((r) => s.once('drain', r)), closed]);
      sent += chunk.length;
    }
    const outcome = await Promise.race([closed.then(() => 'closed'), new Promise((r) => setTimeout(() => r('still open'), 5_000))]);
    s.destroy();
    assert.equal(outcome, 'closed', `still open after ${sent} bytes of a packet announced at ${length}`);
    assert.ok(sent <= LIMITS.brokerPacketMaxBytes, `closed only after ${sent} bytes`);
  });

  it('carries packets under the bound as before, a payload of several MiB included', async () => {
    const distributor = await as('internal/distributor', 'eb-distributor');
    const gateway = await as('dmz/gateway-client', 'eb-gateway');
    const got: Buffer[] = [];
    distributor.on('message', (_t, payload) => got.push(payload));
    await distributor.subscribeAsync(uplinkTopic('dev-hostile', 'timeseries'), { qos: 1 });
    const big = Buffer.alloc(LIMITS.brokerPacketMaxBytes - 64 * 1024, 0x61);
    await gateway.publishAsync(uplinkTopic('dev-hostile', 'timeseries'), Buffer.from('small'), { qos: 1 });
    await gateway.publishAsync(uplinkTopic('dev-hostile', 'timeseries'), big, { qos: 1 });
    await eventually(() => (got.length === 2 ? true : undefined), 15_000, 'both messages delivered');
    assert.equal(got[0]?.toString(), 'small');
    assert.equal(got[1]?.length, big.length);
  });

  it("forwards nothing a client's role may not read: a certificate that may read $SYS only, connecting under the distributor's client id, is handed none of the data queued for its session", async () => {
    const topic = uplinkTopic('dev-hostile', 'timeseries');
    const distributor = await as('internal/distributor', 'eb-queued', false);
    await distributor.subscribeAsync(topic, { qos: 1 });
    await distributor.endAsync();
    const gateway = await as('dmz/gateway-client', 'eb-gateway-2');
    await gateway.publishAsync(topic, Buffer.from('queued for the distributor'), { qos: 1 });
    // The monitor's certificate (shared/acl.ts: $SYS/# only) takes the distributor's session over.
    const thief = await as('internal/monitor', 'eb-queued', false);
    const stolen: string[] = [];
    thief.on('message', (t) => stolen.push(t));
    await thief.subscribeAsync('$SYS/#', { qos: 0 });
    await new Promise((r) => setTimeout(r, 500));
    assert.deepEqual(stolen.filter((t) => !t.startsWith('$SYS/')), []);
  });
});

describe("the embedded broker refuses a service certificate the CA's CRL revokes", () => {
  const pki = makeTestPki([]);
  const aside = tempDir('old-consumer');
  let broker: EmbeddedBroker;
  const read = (f: string) => readFileSync(f, 'utf8');

  before(async () => {
    const consumer = pki.paths.service('internal/consumer');
    copyFileSync(consumer.cert, join(aside.dir, 'consumer.crt'));
    copyFileSync(consumer.key, join(aside.dir, 'consumer.key'));
    // generate-certificates.sh --renew-service consumer: issued again, the old one put into certs/ca.crl.
    setupPki(pki.dir, { domain: 'localhost', renewServices: ['consumer'] });
    const server = pki.paths.service('internal/mosquitto');
    broker = await startEmbeddedBroker({ host: '127.0.0.1', port: 0, setting: 'EMBEDDED_MQTT_PORT', tls: { ca: read(pki.paths.publicCa), cert: read(server.cert), key: read(server.key) }, crlFile: pki.paths.crl, logger: log });
  });
  after(async () => {
    await broker?.close();
    pki.cleanup();
    aside.cleanup();
  });

  /** Whether a client with this certificate gets its CONNACK (it is refused in the handshake, else). */
  const connects = (cert: string, key: string) =>
    new Promise<boolean>((resolve) => {
      const c = connect(`mqtts://127.0.0.1:${broker.port}`, { ca: read(pki.paths.publicCa), cert: read(cert), key: read(key), servername: 'localhost', clientId: `crl-${Math.random()}`, protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 5_000 });
      const settle = (ok: boolean) => {
        c.end(true);
        resolve(ok);
      };
      c.once('connect', () => settle(true));
      c.once('error', () => settle(false));
      c.once('close', () => settle(false));
    });

  it('the old consumer certificate is refused, the renewed one and the other services taken', async () => {
    assert.equal(await connects(join(aside.dir, 'consumer.crt'), join(aside.dir, 'consumer.key')), false, 'the revoked certificate was taken');
    const renewed = pki.paths.service('internal/consumer');
    assert.equal(await connects(renewed.cert, renewed.key), true, 'the renewed certificate');
    const distributor = pki.paths.service('internal/distributor');
    assert.equal(await connects(distributor.cert, distributor.key), true, "the distributor's certificate");
  });
});

describe("the embedded broker's CRL file", () => {
  const pki = makeTestPki([]);
  after(() => pki.cleanup());
  const read = (f: string) => readFileSync(f, 'utf8');
  const server = pki.paths.service('internal/mosquitto');
  const start = () =>
    startEmbeddedBroker({ host: '127.0.0.1', port: 0, setting: 'EMBEDDED_MQTT_PORT', tls: { ca: read(pki.paths.publicCa), cert: read(server.cert), key: read(server.key) }, crlFile: pki.paths.crl, logger: log });
  const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

  // A certs/ca.crl that is there and cannot be read was CONFIG_INVALID, as though its content were
  // wrong; every other file a setting names that cannot be read is CONFIG_FILE_UNREADABLE.
  it('there but unreadable (a folder): npm start stops with CONFIG_FILE_UNREADABLE naming the path, exit 78', () => {
    rmSync(pki.paths.crl, { force: true });
    mkdirSync(pki.paths.crl);
    try {
      const r = spawnSync(join(repoRoot, 'node_modules', '.bin', 'tsx'), [join(repoRoot, 'scripts', 'start-embedded.ts')], {
        cwd: pki.dir,
        env: quietStartEnv(pki.dir),
        encoding: 'utf8',
        timeout: 30_000,
      });
      assert.equal(r.status, 78, r.stderr);
      assert.match(r.stderr, /error CONFIG_FILE_UNREADABLE: /);
      assert.ok(r.stderr.includes(pki.paths.crl), r.stderr);
    } finally {
      rmSync(pki.paths.crl, { recursive: true, force: true });
    }
  });

  it('readable but no CRL: CONFIG_INVALID naming the path, as before', async () => {
    writeFileSync(pki.paths.crl, 'not a CRL\n');
    await assert.rejects(start(), (err: unknown) => isFieldStreamError(err, 'CONFIG_INVALID') && err.message.includes(pki.paths.crl));
  });
});
