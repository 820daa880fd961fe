import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { after, describe, it } from 'node:test';
import { WebSocketServer, type WebSocket } from 'ws';
import { DeviceCredentials } from '../../field-client/src/device-credentials.ts';
import { GatewayConnection } from '../../field-client/src/gateway-connection.ts';
import { createCertificateAuthority, issueCertificate } from '../../pki/certificates.ts';
import { captureLogs } from '../helpers/gateway-fixture.ts';
import { tempDir } from '../helpers/pki.ts';
import { eventually } from '../helpers/ws-device.ts';
import { wssServer } from '../helpers/wss-server.ts';

/**
 * The device's certificate and key renewed on disk while the client runs (the new bundle's
 * client.crt and client.key copied over the old): presented from the next connection on, with no
 * restart. A replacement that cannot be used (damaged, a key that is not the certificate's, another
 * device's) is refused with FIELD_CREDENTIALS_RELOAD_REFUSED, once per version, and the old pair
 * keeps working. Real TLS: the server records the serial of each client certificate presented.
 */
describe("the field client's certificate and key, renewed while it runs", () => {
  const tmp = tempDir('field-credentials-reload');
  const ca = createCertificateAuthority('Credentials Reload Test CA', 1);
  const server = issueCertificate(ca, { commonName: 'gw', organizationalUnit: 'services', role: 'server', validityDays: 1, subjectAltNames: ['localhost'] });
  const device = (cn = 'd1') => issueCertificate(ca, { commonName: cn, organizationalUnit: 'devices', role: 'client', validityDays: 1 });
  const serial = (pem: string) => new X509Certificate(pem).serialNumber;
  const certFile = join(tmp.dir, 'client.crt');
  const keyFile = join(tmp.dir, 'client.key');
  const cleanups: Array<() => Promise<void> | void> = [];
  after(async () => {
    for (const c of cleanups.reverse()) await c();
    tmp.cleanup();
  });

  it('presents a renewed pair from the next connection on; a damaged or mismatched one is refused once and the old pair kept', async () => {
    /** the serial of each client certificate presented, in order */
    const presented: string[] = [];
    const sockets: WebSocket[] = [];
    const https: Server = createServer({ cert: server.certPem, key: server.keyPem, ca: ca.certPem, requestCert: true, rejectUnauthorized: true });
    const wss = new WebSocketServer({ server: https });
    wss.on('connection', (ws, req) => {
      presented.push((req.socket as TLSSocket).getPeerCertificate().serialNumber.toUpperCase());
      sockets.push(ws);
    });
    await new Promise<void>((r) => https.listen(0, '127.0.0.1', r));
    cleanups.push(async () => {
      for (const ws of wss.clients) ws.terminate();
      wss.close();
      await new Promise<void>((r) => https.close(() => r()));
    });
    const url = `wss://localhost:${(https.address() as AddressInfo).port}/ws`;
    const logs = captureLogs();
    const first = device();
    writeFileSync(certFile, first.certPem);
    writeFileSync(keyFile, first.keyPem);
    const auth = { cert: first.certPem, key: first.keyPem };
    const credentials = new DeviceCredentials({ certFile, keyFile }, 'd1', auth, logs.logger);
    const conn = new GatewayConnection({ url, tls: { ca: ca.certPem, credentials, ...auth }, reconnectInitialMs: 20, reconnectMaxMs: 100, idleTimeoutMs: 60_000 }, logs.logger);
    cleanups.push(() => conn.stop());
    conn.start();
    /** drops the server's side of the connection and waits for the client's next one */
    const reconnect = async () => {
      const n = presented.length;
      for (const ws of sockets.splice(0)) ws.terminate();
      await eventually(() => (presented.length > n && conn.isOpen ? true : undefined), 10_000, 'the next connection');
      return presented[presented.length - 1];
    };
    await eventually(() => (presented.length === 1 ? true : undefined), 10_000, 'connected');
    assert.equal(presented[0], serial(first.certPem).toUpperCase());

    // The renewal copied over the old pair: the next connection presents it.
    const renewed = device();
    writeFileSync(certFile, renewed.certPem);
    writeFileSync(keyFile, renewed.keyPem);
    assert.equal(await reconnect(), serial(renewed.certPem).toUpperCase(), 'the renewed certificate presented, no restart');
    assert.equal(logs.lines.filter((l) => l.code === 'FIELD_CREDENTIALS_RELOAD_REFUSED').length, 0);

    const refusals = () => logs.lines.filter((l) => l.code === 'FIELD_CREDENTIALS_RELOAD_REFUSED');
    // A truncated certificate: refused, the renewed pair still presented.
    writeFileSync(certFile, renewed.certPem.slice(0, 200));
    assert.equal(await reconnect(), serial(renewed.certPem).toUpperCase(), 'a damaged certificate: the pair in use kept');
    assert.equal(refusals().length, 1, 'refused with its code');
    // Only the certificate of the next renewal copied so far: its key is not the one on disk.
    const third = device();
    writeFileSync(certFile, third.certPem);
    assert.equal(await reconnect(), serial(renewed.certPem).toUpperCase(), 'a key that is not the certificate\'s: the pair in use kept');
    assert.equal(refusals().length, 2);
    assert.match(String(refusals()[1]?.err), /not the key of FIELD_CERT_FILE/);
    // Looked at again, that version is not refused again.
    assert.equal(await reconnect(), serial(renewed.certPem).toUpperCase());
    assert.equal(refusals().length, 2, 'once per version of the files');
    // Its key follows: the pair is whole, and taken.
    writeFileSync(keyFile, third.keyPem);
    assert.equal(await reconnect(), serial(third.certPem).toUpperCase(), 'taken once both files are there');
    // Another device's pair: refused.
    const other = device('d2');
    writeFileSync(certFile, other.certPem);
    writeFileSync(keyFile, other.keyPem);
    assert.equal(await reconnect(), serial(third.certPem).toUpperCase(), "another device's pair: the pair in use kept");
    assert.match(String(refusals()[2]?.err), /device "d2"/);
  });

  it("a token device presents a new token from the next connection on, and refuses another device's", async () => {
    const gw = await wssServer(ca);
    cleanups.push(() => gw.close());
    const tokenFile = join(tmp.dir, 'device.token');
    const token = (secret: string, id = 'd1') => `fst1.${id}.${secret.repeat(43)}`;
    writeFileSync(tokenFile, `${token('a')}\n`);
    const logs = captureLogs();
    const auth = { token: token('a') };
    const credentials = new DeviceCredentials({ tokenFile }, 'd1', auth, logs.logger);
    const conn = new GatewayConnection({ url: gw.url, tls: { ca: ca.certPem, credentials, ...auth }, reconnectInitialMs: 20, reconnectMaxMs: 100, idleTimeoutMs: 60_000 }, logs.logger);
    cleanups.push(() => conn.stop());
    conn.start();
    const reconnect = async () => {
      const n = gw.accepted;
      for (const ws of gw.sockets.splice(0)) ws.terminate();
      await eventually(() => (gw.accepted > n && conn.isOpen ? true : undefined), 10_000, 'the next connection');
      return gw.headers.authorization;
    };
    await eventually(() => (gw.accepted === 1 ? true : undefined), 10_000, 'connected');
    assert.equal(gw.headers.authorization, `Bearer ${token('a')}`);
    writeFileSync(tokenFile, `${token('b')}\n`);
    assert.equal(await reconnect(), `Bearer ${token('b')}`, 'the new token presented, no restart');
    writeFileSync(tokenFile, `${token('c', 'd2')}\n`);
    assert.equal(await reconnect(), `Bearer ${token('b')}`, "another device's token: the one in use kept");
    assert.equal(logs.lines.filter((l) => l.code === 'FIELD_CREDENTIALS_RELOAD_REFUSED').length, 1);
  });
});
