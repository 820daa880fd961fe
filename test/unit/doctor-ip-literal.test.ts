import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { createServer, type Server } from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { runDoctor } from '../../field-client/src/doctor.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';

/**
 * `fieldstream doctor` against a gateway named by an IPv6 address (wss://[::1]:PORT/ws), which the
 * field client connects to (ws takes the address out of its brackets, and the edge certificate
 * names ::1). The URL's hostname keeps the brackets: looked up as a name, "[::1]" failed the DNS
 * check, and the TCP and TLS checks after it could not have passed.
 */
describe('fieldstream doctor: a gateway URL with an IPv6 address', () => {
  let pki: ReturnType<typeof makeTestPki>;
  let tmp: ReturnType<typeof tempDir>;
  let server: Server;
  let port: number;
  before(async () => {
    pki = makeTestPki(['dev-a']);
    tmp = tempDir('doctor-ipv6');
    const edge = pki.paths.service('dmz/edge');
    // the edge's TLS as Caddy presents it: its certificate, the device's asked for
    server = createServer({ cert: readFileSync(edge.cert), key: readFileSync(edge.key), ca: readFileSync(pki.paths.publicCa), requestCert: true }, (s) => s.end());
    await new Promise<void>((resolve) => server.listen(0, '::1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  after(() => {
    server.close();
    pki.cleanup();
    tmp.cleanup();
  });

  it('looks up no name, reaches the address and checks its certificate against it', async () => {
    const results = await runDoctor({
      DEVICE_ID: 'dev-a',
      GATEWAY_URL: `wss://[::1]:${port}/ws`,
      FIELD_CA_FILE: pki.paths.publicCa,
      FIELD_CERT_FILE: pki.paths.device('dev-a').cert,
      FIELD_KEY_FILE: pki.paths.device('dev-a').key,
      FIELD_DATA_DIR: join(tmp.dir, 'data'),
      FIELD_HTTP_PORT: 'off',
    });
    const all = JSON.stringify(results, null, 1);
    for (const name of ['dns', 'tcp', 'tls']) assert.equal(results.find((r) => r.name === name)?.level, 'ok', `${name}: ${all}`);
    assert.match(results.find((r) => r.name === 'tcp')?.detail ?? '', new RegExp(`^\\[::1\\]:${port} reachable`), all);
  });
});
