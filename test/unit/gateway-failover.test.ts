import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadFieldClientConfig } from '../../field-client/src/config.ts';
import { runDoctor } from '../../field-client/src/doctor.ts';
import { GatewayConnection } from '../../field-client/src/gateway-connection.ts';
import { startFieldClient, type RunningFieldClient } from '../../field-client/src/start.ts';
import { freePort } from '../../scripts/local-stack/ports.ts';
import { createCertificateAuthority, createCrl, issueCertificate, newKeyPair, type KeyAndCert } from '../../pki/certificates.ts';
import { pkiPaths, SERVICE_CERTS } from '../../pki/layout.ts';
import { recordIssued, revokeServiceCertificatesLocked, underRevocationLock } from '../../pki/revocation.ts';
import { isFieldStreamError } from '../../shared/errors.ts';
import { createLogger } from '../../shared/logger.ts';
import { captureLogs } from '../helpers/gateway-fixture.ts';
import { tempDir } from '../helpers/pki.ts';
import { eventually } from '../helpers/ws-device.ts';
import { wssServer } from '../helpers/wss-server.ts';

const log = createLogger('test', 'silent');

/**
 * GATEWAY_URL with several URLs (one per DMZ server): a failed or lost connection moves on to the
 * next URL; the client comes back to an earlier one only by going round, never because it is up.
 */
describe('the gateway connection over several URLs', () => {
  const ca = createCertificateAuthority('Failover Test CA', 1);
  let b: Awaited<ReturnType<typeof wssServer>>;
  let c: Awaited<ReturnType<typeof wssServer>>;
  let deadUrl: string;
  let conn: GatewayConnection;
  before(async () => {
    b = await wssServer(ca);
    c = await wssServer(ca);
    deadUrl = `wss://localhost:${await freePort()}/ws`; // nothing listens there
  });
  after(async () => {
    await conn?.stop();
    await b.close();
    await c.close();
  });

  it('skips a URL that fails, moves on when the connection is lost, and goes round to the start', async () => {
    const opened: string[] = [];
    conn = new GatewayConnection({ url: `${deadUrl}, ${b.url}, ${c.url}`, tls: { ca: ca.certPem, token: 'unused' }, reconnectInitialMs: 50, reconnectMaxMs: 200, idleTimeoutMs: 60_000 }, log);
    conn.on('open', () => opened.push(conn.url));
    conn.start();
    await eventually(() => (opened.length === 1 ? true : undefined), 10_000, 'the first connection');
    assert.deepEqual(opened, [b.url], 'the first URL refused: the second one');
    // The server holding it goes away: the next URL, not back to the first.
    b.sockets[0]?.terminate();
    await eventually(() => (opened.length === 2 ? true : undefined), 10_000, 'the second connection');
    assert.equal(opened[1], c.url);
    // Server B is up again all along, but the client stays where it is while its connection holds.
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(b.accepted, 1, 'no move back to a server that is up');
    // Lost again: round past the dead first URL, to B.
    c.sockets[0]?.terminate();
    await eventually(() => (opened.length === 3 ? true : undefined), 10_000, 'the third connection');
    assert.deepEqual(opened, [b.url, c.url, b.url]);
    assert.equal(c.accepted, 1);
  });
});

/**
 * A server that answers the WebSocket upgrade with an HTTP error (Caddy's 502 when every gateway
 * behind it is down, a gateway's 503, a 401 for a token): the client must close that attempt and
 * go on to the next URL, not wait on it for ever.
 */
describe('the gateway connection after a refused upgrade', () => {
  const ca = createCertificateAuthority('Refused Upgrade Test CA', 1);
  let good: Awaited<ReturnType<typeof wssServer>>;
  let refusing: Server;
  let refusingUrl: string;
  let refusals = 0;
  let conn: GatewayConnection | undefined;
  before(async () => {
    good = await wssServer(ca);
    const cert = issueCertificate(ca, { commonName: 'caddy', organizationalUnit: 'services', role: 'server', validityDays: 1, subjectAltNames: ['localhost'] });
    refusing = createServer({ cert: cert.certPem, key: cert.keyPem }, (_req, res) => {
      refusals++;
      res.writeHead(502, { 'content-type': 'text/plain' }).end('bad gateway');
    });
    // Node's HTTPS server passes an upgrade request to the handler above only without an 'upgrade' listener.
    refusing.on('upgrade', (_req, socket) => {
      refusals++;
      socket.end('HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain\r\ncontent-length: 11\r\n\r\nbad gateway');
    });
    const port = await freePort();
    await new Promise<void>((r) => refusing.listen(port, '127.0.0.1', r));
    refusingUrl = `wss://localhost:${port}/ws`;
  });
  after(async () => {
    await conn?.stop();
    await good.close();
    refusing.closeAllConnections();
    await new Promise<void>((r) => refusing.close(() => r()));
  });

  it('moves on to the next URL at once, and keeps retrying a single URL that refuses', async () => {
    conn = new GatewayConnection({ url: `${refusingUrl},${good.url}`, tls: { ca: ca.certPem, token: 'unused' }, reconnectInitialMs: 50, reconnectMaxMs: 200, idleTimeoutMs: 60_000 }, log);
    const opened: string[] = [];
    conn.on('open', () => opened.push(conn!.url));
    conn.start();
    // Well under TIMINGS.handshakeTimeoutMs: the refusal itself ends the attempt.
    await eventually(() => (opened.length === 1 ? true : undefined), 3_000, 'the second URL after the first refused the upgrade');
    assert.deepEqual(opened, [good.url]);
    assert.equal(refusals, 1);
    await conn.stop();
    // Only the refusing URL: it is tried again and again, not once and then never.
    refusals = 0;
    conn = new GatewayConnection({ url: refusingUrl, tls: { ca: ca.certPem, token: 'unused' }, reconnectInitialMs: 50, reconnectMaxMs: 100, idleTimeoutMs: 60_000 }, log);
    conn.start();
    await eventually(() => (refusals >= 3 ? true : undefined), 3_000, 'three attempts on the refusing URL');
  });
});

/**
 * After `generate-certificates.sh DOMAIN --renew-dmz` the old edge certificate (its key was on the
 * compromised DMZ server) is in the CA's CRL; the field client checks the server's certificate
 * against that CRL: the ca.crl beside FIELD_CA_FILE (a device bundle's certs/ca.crl), so copying the
 * CA's current one to a device is enough. Real TLS; the CRL is the one the renewal writes
 * (revokeServiceCertificatesLocked, as setupPki calls it), made from a CA and certificates issued
 * now, the leaves sharing one key pair (RSA keys are what a whole setupPki spends seconds on;
 * the revocation is by serial).
 */
describe("the server's certificate checked against the CA's CRL", () => {
  const tmp = tempDir('field-crl');
  const root = join(tmp.dir, 'certs');
  const p = pkiPaths(root);
  const d = p.device('crl-dev');
  let ca: KeyAndCert;
  let revoked: Awaited<ReturnType<typeof wssServer>>;
  let current: Awaited<ReturnType<typeof wssServer>>;
  let oldSerial: string;
  let running: RunningFieldClient | undefined;
  let dataDirs = 0;
  const config = (env: Record<string, string>) =>
    loadFieldClientConfig({
      DEVICE_ID: 'crl-dev',
      GATEWAY_URL: current.url,
      FIELD_CA_FILE: p.publicCa,
      FIELD_CERT_FILE: d.cert,
      FIELD_KEY_FILE: d.key,
      FIELD_DATA_DIR: join(tmp.dir, `data-${++dataDirs}`),
      FIELD_HTTP_PORT: 'off',
      FIELD_MQTT_PORT: 'off',
      FIELD_METRICS_PORT: 'off',
      FIELD_HEALTH_INTERVAL_S: 'off',
      ...env,
    });
  const codes = (lines: Record<string, unknown>[], code: string) => lines.filter((l) => l.code === code);

  before(async () => {
    ca = createCertificateAuthority('FieldStream CA (localhost)', 1);
    mkdirSync(p.caDir, { recursive: true });
    writeFileSync(p.caKey, ca.keyPem);
    writeFileSync(p.caCert, ca.certPem);
    writeFileSync(p.publicCa, ca.certPem);
    const keyPair = newKeyPair();
    const edge = SERVICE_CERTS.find((s) => s.file === 'dmz/edge');
    const issueEdge = () => {
      const kc = issueCertificate(ca, { commonName: 'edge', organizationalUnit: 'services', role: edge?.role ?? 'both', subjectAltNames: edge?.sans?.({ domain: 'localhost', edgeHosts: [], dmzBrokerHosts: [], internalBrokerHosts: [] }), validityDays: 1, keyPair });
      recordIssued(root, 'dmz/edge', kc.certPem);
      return kc;
    };
    const old = issueEdge();
    oldSerial = new X509Certificate(old.certPem).serialNumber;
    const renewed = issueEdge();
    const keep = new Set([new X509Certificate(renewed.certPem).serialNumber.toUpperCase()]);
    assert.equal(underRevocationLock(root, () => revokeServiceCertificatesLocked(root, new Set(['dmz/edge']), [], keep)).length, 1);
    const device = issueCertificate(ca, { commonName: 'crl-dev', organizationalUnit: 'devices', role: 'client', validityDays: 1, keyPair });
    mkdirSync(d.dir, { recursive: true });
    writeFileSync(d.cert, device.certPem);
    writeFileSync(d.key, device.keyPem);
    revoked = await wssServer(ca, old);
    current = await wssServer(ca, renewed);
  });
  after(async () => {
    await running?.close();
    await revoked?.close();
    await current?.close();
    tmp.cleanup();
  });

  it('without the CRL, the old edge certificate still passes (what --renew-dmz alone leaves open)', async () => {
    const conn = new GatewayConnection({ url: revoked.url, tls: { ca: ca.certPem, token: 'unused' }, reconnectInitialMs: 50, reconnectMaxMs: 200, idleTimeoutMs: 60_000 }, log);
    conn.start();
    try {
      await eventually(() => (conn.isOpen ? true : undefined), 5_000, 'a connection to the server with the old edge certificate');
      assert.ok(revoked.upgrades > 0, 'the upgrade requests a server receives are counted');
    } finally {
      await conn.stop();
    }
  });

  it('with the ca.crl beside FIELD_CA_FILE (no setting), the revoked edge certificate is refused (FIELD_GATEWAY_CERT_REVOKED) and the current one taken', async () => {
    const before = revoked.accepted;
    const upgrades = revoked.upgrades;
    const { lines, logger } = captureLogs();
    running = await startFieldClient(config({ GATEWAY_URL: `${revoked.url},${current.url}` }), logger);
    const conn = running.connection;
    await eventually(() => (conn.isOpen && conn.url === current.url ? true : undefined), 5_000, 'the connection to the server with the current edge certificate');
    const refused = codes(lines, 'FIELD_GATEWAY_CERT_REVOKED');
    assert.equal(refused.length, 1, JSON.stringify(lines));
    assert.equal(refused[0]?.url, revoked.url);
    assert.equal(revoked.accepted, before, 'no WebSocket reached the server with the revoked certificate');
    assert.equal(revoked.upgrades, upgrades, 'not even the upgrade request: nothing was sent to it');
    assert.ok(lines.some((l) => l.crl === p.crl && l.revoked === 1), 'the CRL named at start');
    await running.close();
    running = undefined;
    // `fieldstream doctor` checks as the client does, and says why.
    const env = { DEVICE_ID: 'crl-dev', GATEWAY_URL: revoked.url, FIELD_CA_FILE: p.publicCa, FIELD_CERT_FILE: d.cert, FIELD_KEY_FILE: d.key, FIELD_DATA_DIR: join(tmp.dir, 'data-doctor') };
    const results = await runDoctor(env);
    assert.equal(results.find((r) => r.name === 'crl')?.level, 'ok', JSON.stringify(results));
    assert.match(results.find((r) => r.name === 'tls')?.detail ?? '', /revoked \(FIELD_GATEWAY_CERT_REVOKED\)/, JSON.stringify(results));
  });

  // A field device without a battery-backed clock (no RTC: a Raspberry Pi) starts with a clock far
  // behind (its last shutdown, its image's date) until NTP answers, if it ever does: the client
  // stamps its messages on the gateway's clock for that reason (field-client.ts sendFrame). A CRL
  // made after that date (at any revocation, a device's too) is "not yet valid" by that clock. Such
  // a CRL, or one past its nextUpdate, still lists what it lists: the revoked certificate is refused
  // and the current one taken, with FIELD_CRL_NOT_CURRENT at start. (OpenSSL's own CRL check refused
  // every server then, a device with a clock behind never connected.)
  for (const [what, thisUpdate, nextUpdate] of [
    ["dated after the device's clock (the clock behind)", 86_400_000, 2 * 86_400_000],
    ['past its nextUpdate', -2 * 86_400_000, -86_400_000],
  ] as const) {
    it(`a CRL ${what}: its list is used all the same, FIELD_CRL_NOT_CURRENT at start`, async () => {
      const file = join(tmp.dir, `not-current-${thisUpdate}.crl`);
      const now = Date.now();
      writeFileSync(file, createCrl(ca, { entries: [{ serial: oldSerial, revokedAt: new Date(now) }], crlNumber: 99, thisUpdate: new Date(now + thisUpdate), nextUpdate: new Date(now + nextUpdate) }));
      const upgrades = revoked.upgrades;
      const { lines, logger } = captureLogs();
      running = await startFieldClient(config({ FIELD_CRL_FILE: file, GATEWAY_URL: `${revoked.url},${current.url}` }), logger);
      const conn = running.connection;
      await eventually(() => (conn.isOpen && conn.url === current.url ? true : undefined), 5_000, JSON.stringify(lines));
      assert.equal(codes(lines, 'FIELD_CRL_NOT_CURRENT').length, 1, 'said once, at start');
      assert.equal(codes(lines, 'FIELD_GATEWAY_CERT_REVOKED')[0]?.url, revoked.url);
      assert.equal(revoked.upgrades, upgrades, 'nothing sent to the server with the revoked certificate');
      await running.close();
      running = undefined;
      // The doctor: a warning about the CRL, and the revoked certificate named as such.
      const env = { DEVICE_ID: 'crl-dev', GATEWAY_URL: revoked.url, FIELD_CA_FILE: p.publicCa, FIELD_CERT_FILE: d.cert, FIELD_KEY_FILE: d.key, FIELD_CRL_FILE: file, FIELD_DATA_DIR: join(tmp.dir, 'data-doctor') };
      const results = await runDoctor(env);
      assert.equal(results.find((r) => r.name === 'crl')?.level, 'warn', JSON.stringify(results));
      assert.match(results.find((r) => r.name === 'tls')?.detail ?? '', /revoked \(FIELD_GATEWAY_CERT_REVOKED\)/, JSON.stringify(results));
    });
  }

  // FIELD_CA_FILE holding another CA as well (a Caddy with a public certificate, CADDY_TLS=acme, its
  // root added to the device's ca.crt): the CA's CRL says nothing of that CA's certificates. OpenSSL's
  // CRL check wants a CRL of every issuer in the chain and refused every such server
  // (UNABLE_TO_GET_CRL).
  it("a server certificate of another CA in FIELD_CA_FILE is taken with the CA's CRL beside it", async () => {
    const other = createCertificateAuthority('Another root', 1);
    const served = issueCertificate(other, { commonName: 'edge', organizationalUnit: 'services', role: 'server', subjectAltNames: ['localhost'], validityDays: 1 });
    const elsewhere = await wssServer(other, served);
    const device = join(tmp.dir, 'two-cas');
    mkdirSync(device);
    writeFileSync(join(device, 'ca.crt'), ca.certPem + other.certPem);
    copyFileSync(p.crl, join(device, 'ca.crl'));
    const { lines, logger } = captureLogs();
    try {
      running = await startFieldClient(config({ FIELD_CA_FILE: join(device, 'ca.crt'), GATEWAY_URL: elsewhere.url }), logger);
      const conn = running.connection;
      await eventually(() => (conn.isOpen ? true : undefined), 5_000, JSON.stringify(lines));
      assert.ok(lines.some((l) => l.crl === join(device, 'ca.crl') && l.revoked === 1), 'the CRL read');
    } finally {
      await running?.close();
      running = undefined;
      await elsewhere.close();
    }
  });

  it('a CRL file missing, unreadable, not a CRL, or of another CA stops the start with a coded error naming FIELD_CRL_FILE', async () => {
    const garbage = join(tmp.dir, 'garbage.crl');
    writeFileSync(garbage, 'not a CRL\n');
    const foreign = join(tmp.dir, 'foreign.crl');
    const other = createCertificateAuthority('Another CA', 1);
    writeFileSync(foreign, createCrl(other, { entries: [], crlNumber: 2, thisUpdate: new Date(), nextUpdate: new Date(Date.now() + 86_400_000) }));
    // A device's own folder: its ca.crt, and a damaged ca.crl beside it (no setting).
    const device = join(tmp.dir, 'device-certs');
    mkdirSync(device);
    copyFileSync(p.publicCa, join(device, 'ca.crt'));
    writeFileSync(join(device, 'ca.crl'), readFileSync(p.crl).subarray(0, 200));
    for (const [env, code] of [
      [{ FIELD_CRL_FILE: join(tmp.dir, 'none.crl') }, 'CONFIG_FILE_UNREADABLE'],
      [{ FIELD_CRL_FILE: tmp.dir }, 'CONFIG_FILE_UNREADABLE'],
      [{ FIELD_CRL_FILE: garbage }, 'CONFIG_INVALID'],
      [{ FIELD_CRL_FILE: foreign }, 'CONFIG_INVALID'],
      [{ FIELD_CA_FILE: join(device, 'ca.crt') }, 'CONFIG_INVALID'],
    ] as const) {
      await assert.rejects(startFieldClient(config(env), log), (e: unknown) => isFieldStreamError(e) && e.code === code && /FIELD_CRL_FILE/.test(e.message), `${JSON.stringify(env)}: ${code}`);
    }
  });
});
