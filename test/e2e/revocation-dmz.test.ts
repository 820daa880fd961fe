import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { copyFileSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { connect as tlsConnect } from 'node:tls';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { connectAsync, type MqttClient } from 'mqtt';
import { setupPki } from '../../pki/onboarding.ts';
import { freePort, waitForPort } from '../../scripts/local-stack/ports.ts';
import { eventually } from '../helpers/ws-device.ts';
import { createDmzServer, startDmzServer, type DmzServer } from '../../scripts/local-stack/dmz-server.ts';
import { createLogger } from '../../shared/logger.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { RogueDmzBroker, startBridgedInternalMosquitto } from '../helpers/rogue-dmz-broker.ts';
import { RogueGateway } from '../helpers/rogue-gateway.ts';
import { RawDevice } from '../helpers/ws-device.ts';
import { captureLogs } from '../helpers/gateway-fixture.ts';
import { loadFieldClientConfig } from '../../field-client/src/config.ts';
import { startFieldClient } from '../../field-client/src/start.ts';
import { verifyCrl } from '../../shared/security/crl.ts';

const repo = join(import.meta.dirname, '..', '..');

/** The real DMZ Mosquitto with its own configuration (dmz/mosquitto), as the compose file renders it. */
async function startDmzMosquitto(dataDir: string, files: { ca: string; cert: string; key: string; crl: string }): Promise<{ port: number; stop(): Promise<void> }> {
  const port = await freePort();
  mkdirSync(dataDir, { recursive: true });
  const env = {
    PATH: process.env.PATH ?? '',
    MOSQUITTO_PORT: String(port),
    MOSQUITTO_BIND: '127.0.0.1',
    MOSQUITTO_CA_FILE: files.ca,
    MOSQUITTO_CERT_FILE: files.cert,
    MOSQUITTO_KEY_FILE: files.key,
    MOSQUITTO_CRL_FILE: files.crl,
    MOSQUITTO_CONFIG_DIR: join(repo, 'dmz', 'mosquitto'),
    MOSQUITTO_DATA_DIR: dataDir,
    MOSQUITTO_USER: process.env.USER ?? 'root',
    MOSQUITTO_LOG_DEST: `file ${join(dataDir, 'mosquitto.log')}`,
  };
  const conf = join(dataDir, 'mosquitto.conf');
  execFileSync(join(repo, 'scripts', 'render-config.sh'), [join(repo, 'dmz', 'mosquitto', 'mosquitto.conf'), conf], { env });
  const broker: ChildProcess = spawn('mosquitto', ['-c', conf], { stdio: 'ignore' });
  await waitForPort(port, '127.0.0.1', 15_000, () => broker.exitCode === null);
  return {
    port,
    stop: async () => {
      if (broker.exitCode === null && broker.signalCode === null) await new Promise((r) => broker.once('exit', r).kill());
    },
  };
}

/**
 * A compromise of the DMZ server leaves its keys with the attacker. After
 * `generate-certificates.sh --renew-dmz`, the old gateway key is refused by the DMZ broker (CRL),
 * and the old DMZ broker key (and the edge key, which names the same host) by the internal
 * broker's bridge, which checks no CRL: it trusts the DMZ broker's new anchor alone; and the old
 * gateway key by Caddy on its hop to the gateways (EDGE_HOP=mtls), which checks no CRL either: it
 * trusts the gateway's new anchor alone. Devices keep their certificates.
 */
describe('recovering from a DMZ compromise with real Mosquittos', () => {
  const work = tempDir('dmz-renewal');
  const pki = makeTestPki(['dev-1']);
  const p = pki.paths;
  const stolen = join(work.dir, 'stolen');
  const steal = (file: string) => ({ cert: join(stolen, `${file.replace('/', '-')}.crt`), key: join(stolen, `${file.replace('/', '-')}.key`) });
  const stops: Array<() => Promise<void>> = [];
  const clients: MqttClient[] = [];
  const log = createLogger('test', 'silent');
  /** one DMZ server of the local stack (the compose file's files and settings; EDGE_HOP=mtls) */
  const dmzServer = (name: string) => ({ repoRoot: repo, certsDir: pki.dir, workDir: join(work.dir, name), env: { LOG_LEVEL: 'warn' }, logger: log, gateways: 1 });
  /** a device's WebSocket through `server`'s Caddy: the gateway's welcome, or the HTTP status Caddy answered */
  const through = (server: DmzServer) =>
    RawDevice.connect(server.urls.wss, RawDevice.tlsFor(p, 'dev-1')).then(
      async (d) => {
        const gatewayId = await eventually(() => d.welcome?.gatewayId, 5_000, 'the welcome');
        d.close();
        return gatewayId;
      },
      (e: Error & { status?: number }) => e.status ?? e.message,
    );
  /** the stolen gateway certificate, served where `server`'s Caddy dials its gateway (the hop an intruder in the DMZ can intercept) */
  const rogueAt = async (server: DmzServer, tls: { cert: string; key: string }) => {
    const rogue = await RogueGateway.start(p, 'dev-1', () => {}, { tls, port: server.ports.gateways[0] });
    stops.push(() => rogue.close());
    return rogue;
  };
  /** the device's own certs folder, made before the renewal: its ca.crl is the CRL of then */
  const deviceCerts = join(work.dir, 'device-certs');
  before(() => {
    mkdirSync(stolen);
    for (const file of ['dmz/gateway', 'dmz/mosquitto', 'dmz/edge']) {
      copyFileSync(p.service(file).cert, steal(file).cert);
      copyFileSync(p.service(file).key, steal(file).key);
    }
    mkdirSync(deviceCerts);
    for (const f of ['ca.crt', 'ca.crl']) copyFileSync(join(pki.dir, f), join(deviceCerts, f));
  });
  after(async () => {
    for (const c of clients) c.end(true);
    for (const stop of stops.reverse()) await stop();
    pki.cleanup();
    work.cleanup();
  });

  const connect = (url: string, ca: string, who: { cert: string; key: string }) =>
    connectAsync(url, { ca: readFileSync(ca), cert: readFileSync(who.cert), key: readFileSync(who.key), protocolVersion: 5, reconnectPeriod: 0, connectTimeout: 5000, clientId: `t-${Math.random().toString(16).slice(2)}` }).then((c) => {
      clients.push(c);
      return c;
    });

  it('before the renewal, the bridge takes a broker with the stolen DMZ broker key (the defect the renewal mends)', async () => {
    const rogue = new RogueDmzBroker(steal('dmz/mosquitto'));
    await rogue.listen();
    stops.push(() => rogue.close());
    const internal = await startBridgedInternalMosquitto(repo, pki, join(work.dir, 'internal-before'), `localhost:${rogue.port}`);
    stops.push(() => internal.stop());
    const filters = await Promise.race([rogue.subscribed, sleep(15_000).then(() => undefined)]);
    assert.ok(filters, 'the bridge connected to the broker of the stolen key');
    await internal.stop();
  });

  it("before the renewal, Caddy (EDGE_HOP=mtls) proxies a device to a server with the stolen gateway key (the defect the gateway's anchor mends)", async () => {
    // Caddy alone: where it dials its gateway, a server of the stolen key answers.
    const server = await createDmzServer(dmzServer('caddy-before'));
    stops.push(() => server.caddy.stop());
    const rogue = await rogueAt(server, steal('dmz/gateway'));
    await server.caddy.start();
    assert.equal(await through(server), 'rogue', 'Caddy took the stolen gateway certificate');
    await server.caddy.stop();
    await rogue.close();
  });

  it('after --renew-dmz: the stolen gateway key is refused by the DMZ broker, the new one is taken, devices keep theirs', async () => {
    const deviceCert = readFileSync(p.device('dev-1').cert, 'utf8');
    const report = setupPki(pki.dir, { domain: 'localhost', renewDmz: true });
    assert.equal(report.revoked?.length, 4, 'edge, gateway, gateway-client, dmz-mosquitto');
    assert.equal(readFileSync(p.device('dev-1').cert, 'utf8'), deviceCert);

    const dmz = await startDmzMosquitto(join(work.dir, 'dmz-broker'), { ca: p.publicCa, cert: p.service('dmz/mosquitto').cert, key: p.service('dmz/mosquitto').key, crl: join(pki.dir, 'ca.crl') });
    stops.push(() => dmz.stop());
    const url = `mqtts://localhost:${dmz.port}`;
    await assert.rejects(connect(url, p.dmzBrokerCa.dmz, steal('dmz/gateway')), 'the stolen gateway certificate is refused');
    const gateway = await connect(url, p.dmzBrokerCa.dmz, p.service('dmz/gateway-client'));
    assert.equal(gateway.connected, true);
    // The gateway's new server certificate is of its own anchor, which the broker does not trust: its client certificate is the one above.
    await assert.rejects(connect(url, p.dmzBrokerCa.dmz, p.service('dmz/gateway')));
    // The DMZ broker's new certificate is not one the CA alone verifies: its clients take its anchor.
    await assert.rejects(connect(url, p.publicCa, p.service('dmz/gateway-client')));
    // The gateway's new certificate is of the CA, and the devices' are untouched: the device is refused only by the broker's ACL, not its TLS.
    const device = await connect(url, p.dmzBrokerCa.dmz, p.device('dev-1')).catch((e: Error) => e);
    assert.ok(!(device instanceof Error) || !/revoked|certificate/i.test(device.message), String(device));
  });

  it("after --renew-dmz: a DMZ server as deployed carries a device through Caddy to its renewed gateway, connected to the DMZ Mosquitto; Caddy refuses a server with the stolen gateway key", async () => {
    const server = await startDmzServer(dmzServer('dmz-after'));
    stops.push(() => server.close());
    // The gateway opens its port once connected to the broker, with its client certificate (gateway-client, the CA's).
    assert.equal((await fetch(`${server.metrics.gateways[0]}/readyz`)).status, 200);
    assert.equal(await through(server), 'gateway-1', "Caddy takes the gateway's new certificate (its anchor's)");

    // The gateway gone, a server of the stolen key answers where Caddy dials it: refused in the TLS handshake.
    await (server.gateways[0] as DmzServer['caddy']).kill();
    const rogue = await rogueAt(server, steal('dmz/gateway'));
    assert.equal(await through(server), 502);
    assert.ok(rogue.connections > 0, 'Caddy dialled it');
    assert.equal(rogue.socket, undefined, 'no request of the device reached it');
    assert.match(server.caddy.logSinceStart(), /certificate signed by unknown authority/);
    await rogue.close();
    // The same server with the gateway's new certificate is taken: what Caddy refused was the certificate.
    await rogueAt(server, p.service('dmz/gateway'));
    assert.equal(await through(server), 'rogue');
  });

  it("after --renew-dmz: a device given no file learns the new CRL from the renewed DMZ server's gateway, keeps it, and then refuses a server with the stolen edge key", async () => {
    const server = await startDmzServer(dmzServer('dmz-crl'));
    stops.push(() => server.close());
    // The intruder poses as the DMZ endpoint with the stolen edge certificate (their DNS, a route).
    const rogue = await RogueGateway.start(p, 'dev-1', () => {}, { tls: steal('dmz/edge') });
    stops.push(() => rogue.close());
    const { lines, logger } = captureLogs();
    const settings = (dataDir: string, url: string) =>
      loadFieldClientConfig({
        DEVICE_ID: 'dev-1',
        GATEWAY_URL: url,
        FIELD_CA_FILE: join(deviceCerts, 'ca.crt'),
        FIELD_CERT_FILE: p.device('dev-1').cert,
        FIELD_KEY_FILE: p.device('dev-1').key,
        FIELD_DATA_DIR: join(work.dir, dataDir),
        FIELD_HTTP_PORT: 'off',
        FIELD_MQTT_PORT: 'off',
        FIELD_METRICS_PORT: 'off',
        FIELD_HEALTH_INTERVAL_S: 'off',
      });
    // What the renewal alone leaves open: the device's CRL is of before it, and the rogue is taken.
    const before = await startFieldClient(settings('field-before', rogue.url), logger);
    try {
      await eventually(() => (before.connection.isOpen ? true : undefined), 10_000, 'the rogue taken by a device with the CRL of before');
    } finally {
      await before.close();
    }
    // The same device reaches the genuine server first: its gateway hands it the CA's CRL of now.
    const device = await startFieldClient(settings('field', `${server.urls.wss},${rogue.url}`), logger);
    stops.push(() => device.close());
    await eventually(() => (lines.some((l) => /a newer CRL from the gateway/.test(String(l.msg))) ? true : undefined), 15_000, 'the CRL handed over');
    // Kept in its data folder for its next start: the CA's CRL of now, as signed.
    const caPem = readFileSync(p.publicCa, 'utf8');
    assert.deepEqual(verifyCrl(readFileSync(join(work.dir, 'field', 'ca.crl')), caPem).der, verifyCrl(readFileSync(join(pki.dir, 'ca.crl')), caPem).der);
    // Counted, for an operator following how many devices have it.
    const metrics = await (await fetch(`${server.metrics.gateways[0]}/metrics`)).text();
    assert.match(metrics, /^fieldstream_gateway_crls_handed_total(\{[^}]*\})? 1$/m);
    const connections = rogue.connections;
    const accepted = rogue.socket;
    // The genuine server goes (its Caddy): the device tries the next URL, the rogue, and refuses it in the handshake.
    await server.caddy.kill();
    await eventually(() => (lines.some((l) => l.code === 'FIELD_GATEWAY_CERT_REVOKED' && l.url === rogue.url) ? true : undefined), 20_000, JSON.stringify(lines.slice(-5)));
    assert.ok(rogue.connections > connections, 'the device dialled the rogue');
    assert.equal(rogue.socket, accepted, 'no WebSocket of the device reached the rogue again');
    assert.equal(device.connection.isOpen, false);
  });

  it('after --renew-dmz: the bridge refuses brokers with the stolen DMZ broker or edge key, and bridges to the renewed broker', async () => {
    const dmz = await startDmzMosquitto(join(work.dir, 'dmz-broker-2'), { ca: p.publicCa, cert: p.service('dmz/mosquitto').cert, key: p.service('dmz/mosquitto').key, crl: join(pki.dir, 'ca.crl') });
    stops.push(() => dmz.stop());
    const rogueBroker = new RogueDmzBroker(steal('dmz/mosquitto'));
    const rogueEdge = new RogueDmzBroker(steal('dmz/edge'));
    await rogueBroker.listen();
    await rogueEdge.listen();
    stops.push(() => rogueBroker.close(), () => rogueEdge.close());
    // What openssl says of each, with the anchor the bridge is given. Run asynchronously: the rogue
    // brokers are servers of this process, and spawnSync held its event loop, so their handshakes
    // were never answered and each openssl was killed at the 10 s timeout (status null, which
    // passed for a refusal whatever openssl would have said).
    const verify = (port: number) =>
      new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
        const args = ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', 'localhost', '-verify_hostname', 'localhost', '-verify_return_error', '-CAfile', p.dmzBrokerCa.internal, '-cert', p.service('internal/bridge').cert, '-key', p.service('internal/bridge').key];
        const child = execFile('openssl', args, { encoding: 'utf8', timeout: 10_000 }, (_err, stdout, stderr) => resolve({ status: child.exitCode, stdout, stderr }));
        child.stdin?.end();
      });
    for (const [what, rogue] of [['broker', rogueBroker], ['edge', rogueEdge]] as const) {
      const refused = await verify(rogue.port);
      assert.ok(refused.status !== null && refused.status !== 0, `openssl refuses the stolen ${what} certificate (exit ${refused.status}): ${refused.stderr}`);
      assert.match(refused.stderr, /certificate verify failed/, `openssl refuses the stolen ${what} certificate for its issuer`);
    }
    const good = await verify(dmz.port);
    assert.equal(good.status, 0, good.stderr);
    assert.match(good.stdout, /Verify return code: 0 \(ok\)/);

    const internal = await startBridgedInternalMosquitto(repo, pki, join(work.dir, 'internal-after'), `localhost:${dmz.port},localhost:${rogueBroker.port},localhost:${rogueEdge.port}`);
    stops.push(() => internal.stop());
    const monitor = await connect(internal.url, p.publicCa, p.service('internal/monitor'));
    const states = new Map<string, string>();
    monitor.on('message', (topic, payload) => states.set(topic, payload.toString()));
    await monitor.subscribeAsync('$SYS/broker/connection/+/state', { qos: 0 });
    await eventually(() => (states.get('$SYS/broker/connection/fieldstream-bridge/state') === '1' ? true : undefined), 20_000, 'the bridge to the renewed DMZ broker up');
    // The bridges retry every few seconds (restart_timeout 2 30): long enough for several attempts.
    const reached = await Promise.race([Promise.any([rogueBroker.subscribed, rogueEdge.subscribed]).then(() => true), sleep(8_000).then(() => false)]);
    assert.equal(reached, false, 'a bridge connected to a broker of a stolen key');
    assert.notEqual(states.get('$SYS/broker/connection/fieldstream-bridge-2/state'), '1');
    assert.notEqual(states.get('$SYS/broker/connection/fieldstream-bridge-3/state'), '1');
  });
});

/**
 * The TLS handshake of a client certificate with a broker: true when it completes, else its error.
 * TLS 1.2 (as both brokers' tls_version): the client's handshake completes only after the server
 * verified its certificate, where in TLS 1.3 it completes before, and a refusal comes after.
 */
function handshake(port: number, ca: string, who: { cert: string; key: string }): Promise<true | Error> {
  return new Promise((resolve) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', ca: readFileSync(ca), cert: readFileSync(who.cert), key: readFileSync(who.key), maxVersion: 'TLSv1.2' });
    socket.setTimeout(5000, () => socket.destroy(new Error('handshake timed out')));
    socket.once('secureConnect', () => {
      socket.end();
      resolve(true);
    });
    socket.once('error', (err) => resolve(err));
  });
}

/**
 * `generate-certificates.sh DOMAIN --renew-service consumer`: a leaked internal client certificate
 * (the read-only consumer's, given to another tool) is revoked alone, without a new CA: a new one
 * is issued as the set-up issues it, the old serial goes into the CRL both brokers read, and every
 * other certificate stays as it was. Mosquitto reads the CRL only at start: the old certificate
 * is refused once the broker is restarted.
 */
describe('revoking one internal service certificate (--renew-service) with real Mosquittos', () => {
  const work = tempDir('service-renewal');
  const pki = makeTestPki(['dev-1']);
  const p = pki.paths;
  const OTHERS = ['internal/bridge', 'internal/distributor', 'internal/command-api', 'internal/console', 'internal/monitor', 'internal/mosquitto', 'dmz/gateway', 'dmz/edge', 'dmz/mosquitto'];
  const old = { cert: join(work.dir, 'old-consumer.crt'), key: join(work.dir, 'old-consumer.key') };
  const untouched = new Map<string, Buffer>();
  const stops: Array<() => Promise<void>> = [];
  const clients: MqttClient[] = [];
  // No DMZ broker listens there: the bridges retry in the background, which these checks ignore.
  const noDmz = 'localhost:9';
  before(() => {
    copyFileSync(p.service('internal/consumer').cert, old.cert);
    copyFileSync(p.service('internal/consumer').key, old.key);
    for (const f of OTHERS) for (const path of Object.values(p.service(f))) untouched.set(path, readFileSync(path));
    for (const path of [p.device('dev-1').cert, p.device('dev-1').key, p.caCert, p.caKey, p.publicCa, p.storedFeedKey]) untouched.set(path, readFileSync(path));
  });
  after(async () => {
    for (const c of clients) c.end(true);
    for (const stop of stops.reverse()) await stop();
    pki.cleanup();
    work.cleanup();
  });

  const mqttConnect = (url: string, who: { cert: string; key: string }) =>
    connectAsync(url, { ca: readFileSync(p.publicCa), cert: readFileSync(who.cert), key: readFileSync(who.key), protocolVersion: 5, reconnectPeriod: 0, connectTimeout: 5000, clientId: `t-${Math.random().toString(16).slice(2)}` }).then((c) => {
      clients.push(c);
      return c;
    });
  const portOf = (url: string) => Number(new URL(url).port);

  let output = '';
  let running: Awaited<ReturnType<typeof startBridgedInternalMosquitto>>;
  it('renews the consumer certificate as the set-up issued it, revokes the old one only, and says what is left to do', async () => {
    running = await startBridgedInternalMosquitto(repo, pki, join(work.dir, 'internal'), noDmz);
    stops.push(() => running.stop());
    assert.equal(await handshake(portOf(running.url), p.publicCa, old), true, 'the consumer certificate is taken before');

    output = execFileSync(join(repo, 'scripts', 'generate-certificates.sh'), ['localhost', '--renew-service', 'consumer'], { env: { ...process.env, CERTS_DIR: pki.dir }, encoding: 'utf8' });
    const before = new X509Certificate(readFileSync(old.cert));
    const renewed = new X509Certificate(readFileSync(p.service('internal/consumer').cert));
    assert.notEqual(renewed.serialNumber, before.serialNumber);
    assert.equal(renewed.subject, before.subject, 'CN consumer, O FieldStream, OU services');
    assert.deepEqual(renewed.keyUsage, ['1.3.6.1.5.5.7.3.2'], 'clientAuth only');
    assert.equal(renewed.subjectAltName, undefined);
    assert.ok(renewed.verify(new X509Certificate(readFileSync(p.publicCa)).publicKey), 'issued by the CA kept');
    assert.ok(renewed.checkPrivateKey(createPrivateKey(readFileSync(p.service('internal/consumer').key))), 'a key of its own');
    assert.notDeepEqual(readFileSync(p.service('internal/consumer').key), readFileSync(old.key));
    assert.equal(statSync(p.service('internal/consumer').key).mode & 0o777, 0o600);

    const crl = spawnSync('openssl', ['crl', '-in', join(pki.dir, 'ca.crl'), '-noout', '-text'], { encoding: 'utf8' }).stdout;
    assert.match(crl, new RegExp(`Serial Number: ${before.serialNumber.toUpperCase()}`));
    assert.equal((crl.match(/Serial Number:/g) ?? []).length, 1, 'nothing else revoked');
    for (const [path, bytes] of untouched) assert.ok(readFileSync(path).equals(bytes), `${path} untouched`);

    assert.ok(output.includes(before.serialNumber.toUpperCase()), output);
    assert.match(output, /Mosquitto reads certs\/ca\.crl only when it starts/);
    assert.match(output, /docker-compose -f docker-compose\.internal\.yml up -d --force-recreate internal-mosquitto\n/);
    assert.match(output, /docker-compose -f docker-compose\.dmz\.yml up -d --force-recreate dmz-mosquitto/);
    assert.match(output, /certs\/internal\/consumer\.key/);
  });

  it('the internal broker takes the old certificate until it restarts (it reads the CRL at start), then refuses it in the TLS handshake and takes the new one', async () => {
    assert.equal(await handshake(portOf(running.url), p.publicCa, old), true, 'not restarted yet: the old CRL');
    await running.stop();
    running = await startBridgedInternalMosquitto(repo, pki, join(work.dir, 'internal'), noDmz);
    const refused = await handshake(portOf(running.url), p.publicCa, old);
    assert.ok(refused instanceof Error, 'the old consumer certificate is refused');
    assert.match(refused.message, /certificate revoked/);
    await assert.rejects(mqttConnect(running.url, old));
    const consumer = await mqttConnect(running.url, p.service('internal/consumer'));
    await consumer.subscribeAsync('fieldstream/v1/devices/+/up/+', { qos: 1 });
    for (const f of ['internal/distributor', 'internal/command-api', 'internal/console', 'internal/monitor']) {
      const c = await mqttConnect(running.url, p.service(f));
      assert.equal(c.connected, true, f);
    }
    // The bridge's certificate is the DMZ brokers' to check; the device's passes TLS here as before.
    for (const who of [p.service('internal/bridge'), p.device('dev-1')]) assert.equal(await handshake(portOf(running.url), p.publicCa, who), true, who.cert);
  });

  it('the DMZ broker, started with the CRL, refuses the old consumer certificate too; the gateway and the bridge are taken', async () => {
    const dmz = await startDmzMosquitto(join(work.dir, 'dmz-broker'), { ca: p.publicCa, cert: p.service('dmz/mosquitto').cert, key: p.service('dmz/mosquitto').key, crl: join(pki.dir, 'ca.crl') });
    stops.push(() => dmz.stop());
    const refused = await handshake(dmz.port, p.dmzBrokerCa.dmz, old);
    assert.ok(refused instanceof Error && /certificate revoked/.test(refused.message), String(refused));
    for (const f of ['dmz/gateway', 'internal/bridge', 'internal/monitor']) assert.equal(await handshake(dmz.port, p.dmzBrokerCa.dmz, p.service(f)), true, f);
  });
});
