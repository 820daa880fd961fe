import assert from 'node:assert/strict';
import { renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { GatewayConnection } from '../../field-client/src/gateway-connection.ts';
import { ServerCrlSource } from '../../field-client/src/server-crl-source.ts';
import { createCertificateAuthority, createCrl, type KeyAndCert } from '../../pki/certificates.ts';
import { isFieldStreamError } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';
import { captureLogs } from '../helpers/gateway-fixture.ts';
import { tempDir } from '../helpers/pki.ts';
import { eventually } from '../helpers/ws-device.ts';
import { crlOf, edgeServers } from '../helpers/wss-server.ts';

/**
 * The device's CRL changes while the client runs (the CA's current certs/ca.crl copied over it after
 * a --renew-dmz): read again before each connection attempt and every crlCheckMs, with no restart.
 * A connection open to a server the new CRL revokes is dropped; a new file that cannot be used
 * (damaged, of another CA, older than the one held, gone) leaves the held list in use. Real TLS.
 */
describe("the field client's CRL, changed while it runs", () => {
  const tmp = tempDir('field-crl-reload');
  const caFile = join(tmp.dir, 'ca.crt');
  /** the device's CRL, beside its ca.crt (no setting), as in a device bundle */
  const crlFile = join(tmp.dir, 'ca.crl');
  let ca: KeyAndCert;
  const day = 86_400_000;
  /** A CRL of the CA listing `serials`, dated `ageMs` before now. */
  const crl = (serials: string[], ageMs: number, number: number) => crlOf(ca, serials, ageMs, number);
  const connect = (source: ServerCrlSource, urls: string, logger: Logger) => {
    servers.conn = new GatewayConnection({ url: urls, tls: { ca: ca.certPem, token: 'unused', crl: source }, reconnectInitialMs: 50, reconnectMaxMs: 100, idleTimeoutMs: 60_000, crlCheckMs: 100 }, logger);
    servers.conn.start();
    return servers.conn;
  };
  const codes = (lines: Record<string, unknown>[], code: string) => lines.filter((l) => l.code === code);

  before(() => {
    ca = createCertificateAuthority('FieldStream CA (localhost)', 1);
    writeFileSync(caFile, ca.certPem);
  });
  // After the CA is made: its hooks run in the order they were declared.
  const servers = edgeServers(() => ca);
  after(() => tmp.cleanup());

  it('a CRL copied over the device\'s while it is connected to the revoked server drops that connection (FIELD_GATEWAY_CERT_REVOKED), and the next URL is taken', async () => {
    writeFileSync(crlFile, crl([], 2 * 60_000, 1));
    const { lines, logger } = captureLogs();
    const source = ServerCrlSource.open(undefined, caFile, ca.certPem, logger, join(tmp.dir, 'data'));
    const c = connect(source, `${servers.old.url},${servers.renewed.url}`, logger);
    await eventually(() => (c.isOpen && c.url === servers.old.url ? true : undefined), 5_000, 'connected to the server with the old certificate: the CRL lists nothing yet');
    const accepted = servers.old.accepted;
    // The renewal's CRL, copied as a file is copied: written aside, renamed into place.
    writeFileSync(`${crlFile}.new`, crl([servers.oldSerial], 60_000, 2));
    renameSync(`${crlFile}.new`, crlFile);
    await eventually(() => (c.isOpen && c.url === servers.renewed.url ? true : undefined), 5_000, 'moved to the server with the renewed certificate');
    const dropped = codes(lines, 'FIELD_GATEWAY_CERT_REVOKED');
    assert.equal(dropped[0]?.serial, servers.oldSerial, JSON.stringify(lines));
    assert.ok(lines.some((l) => l.crl === crlFile && l.revoked === 1 && l.before === 0), 'the change is said, with what it lists');
    // Not back to the revoked server when the renewed one goes: it is refused in the handshake.
    for (const ws of servers.renewed.sockets) ws.terminate();
    await eventually(() => (codes(lines, 'FIELD_GATEWAY_CERT_REVOKED').length >= 2 ? true : undefined), 5_000, 'the revoked server refused at the next attempt');
    assert.equal(servers.old.accepted, accepted, 'no WebSocket reached the revoked server again');
  });

  it('a new file that cannot be used is FIELD_CRL_RELOAD_REFUSED, once per version, and the held list stays: damaged, of another CA, older, gone', async () => {
    writeFileSync(crlFile, crl([servers.oldSerial], 60_000, 5));
    const { lines, logger } = captureLogs();
    const source = ServerCrlSource.open(undefined, caFile, ca.certPem, logger, join(tmp.dir, 'data'));
    assert.equal(source.current()?.revoked, 1);
    const other = createCertificateAuthority('Another CA', 1);
    const versions: Array<[string, () => void, RegExp]> = [
      ['damaged', () => writeFileSync(crlFile, 'not a CRL\n'), /not a CRL/],
      ['of another CA', () => writeFileSync(crlFile, createCrl(other, { entries: [], crlNumber: 9, thisUpdate: new Date(), nextUpdate: new Date(Date.now() + day) })), /not signed by the CA/],
      ['older than the one held (an empty list: it would take the revocation back)', () => writeFileSync(crlFile, crl([], day / 2, 3)), /older than the one held/],
      ['gone', () => rmSync(crlFile), /the file is gone/],
    ];
    for (const [what, change, said] of versions) {
      const before = codes(lines, 'FIELD_CRL_RELOAD_REFUSED').length;
      change();
      assert.equal(source.current()?.revoked, 1, `${what}: the held list stays`);
      assert.equal(source.current()?.revoked, 1, `${what}: and again`);
      const refused = codes(lines, 'FIELD_CRL_RELOAD_REFUSED');
      assert.equal(refused.length, before + 1, `${what}: said once`);
      assert.match(String(refused.at(-1)?.msg), said, what);
    }
    // The held list still refuses the revoked server; the client stays up and takes the other.
    const c = connect(source, `${servers.old.url},${servers.renewed.url}`, logger);
    await eventually(() => (c.isOpen && c.url === servers.renewed.url ? true : undefined), 5_000, 'the renewed server taken');
    // A newer CRL than the one held is taken again.
    writeFileSync(crlFile, crl([], 0, 6));
    assert.equal(source.current()?.revoked, 0);
  });

  it('a CRL that appears beside FIELD_CA_FILE after the start is read at the next connection attempt', async () => {
    rmSync(crlFile, { force: true });
    const { lines, logger } = captureLogs();
    const source = ServerCrlSource.open(undefined, caFile, ca.certPem, logger, join(tmp.dir, 'data'));
    assert.equal(source.current(), undefined, 'no CRL at start: none checked');
    const c = connect(source, servers.old.url, logger);
    await eventually(() => (c.isOpen ? true : undefined), 5_000, 'connected: no CRL yet');
    writeFileSync(crlFile, crl([servers.oldSerial], 60_000, 7));
    await eventually(() => (codes(lines, 'FIELD_GATEWAY_CERT_REVOKED').length > 0 ? true : undefined), 5_000, 'the CRL read, the connection dropped');
    assert.equal(codes(lines, 'FIELD_CRL_RELOAD_REFUSED').length, 0);
  });

  it('at start, a file that cannot be used still stops the client (as readServerCrl: exit 78)', () => {
    writeFileSync(crlFile, 'not a CRL\n');
    assert.throws(() => ServerCrlSource.open(undefined, caFile, ca.certPem, captureLogs().logger, join(tmp.dir, 'data')), (e: unknown) => isFieldStreamError(e) && e.code === 'CONFIG_INVALID');
  });
});
