import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import forge from 'node-forge';
import { after, before, describe, it } from 'node:test';
import { CrlDelivery } from '../../dmz/gateway/crl-delivery.ts';
import { GatewayConnection } from '../../field-client/src/gateway-connection.ts';
import { ServerCrlSource } from '../../field-client/src/server-crl-source.ts';
import { createCertificateAuthority, type KeyAndCert } from '../../pki/certificates.ts';
import { CRL_HEADER, DownlinkFrameSchema, type CrlFrame } from '../../shared/contract/downlink.ts';
import { isFieldStreamError } from '../../shared/errors.ts';
import { verifyCrl } from '../../shared/security/crl.ts';
import { nextThisUpdate, revokeDevice } from '../../pki/revocation.ts';
import { LIMITS } from '../../shared/limits.ts';
import type { Logger } from '../../shared/logger.ts';
import { captureLogs } from '../helpers/gateway-fixture.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { eventually } from '../helpers/ws-device.ts';
import { crlOf, edgeServers, type WssServer } from '../helpers/wss-server.ts';

const day = 86_400_000;

/**
 * The gateway hands the CA's CRL (GATEWAY_CRL_FILE) to a device whose upgrade request says it holds
 * an older one (X-FieldStream-Crl); the device takes it only when the CA signed it and it is newer,
 * keeps it in its data folder, and checks servers against it from then on. A compromised DMZ can
 * withhold it, never forge one nor hand back an older one.
 */
describe("the CA's CRL handed to devices by the gateway", () => {
  const tmp = tempDir('crl-delivery');
  let ca: KeyAndCert;
  before(() => {
    ca = createCertificateAuthority('FieldStream CA (localhost)', 1);
  });
  after(() => tmp.cleanup());

  describe('the gateway side (CrlDelivery)', () => {
    it("hands a frame only to a device that says it holds an older CRL, or none (0); not to one that says nothing, or what is no time", () => {
      const file = join(tmp.dir, 'gateway-ca.crl');
      writeFileSync(file, crlOf(ca, ['0A'], 60_000, 3));
      const delivery = new CrlDelivery(file, ca.certPem, captureLogs().logger);
      const frame = delivery.frameFor('0');
      assert.ok(frame, 'none held: handed over');
      assert.deepEqual(DownlinkFrameSchema.parse(JSON.parse(JSON.stringify(frame))), frame, 'a frame of the contract');
      // The CRL's own time (computed again from the clock, it was a second off when a second ended
      // between the signing and here).
      const thisUpdate = verifyCrl(readFileSync(file), ca.certPem).thisUpdate.getTime();
      assert.ok(delivery.frameFor(String(thisUpdate - 1000)), 'an older one held');
      for (const held of [undefined, String(thisUpdate), String(Date.now()), '', '-1', '1e12', 'abc', '9'.repeat(16), ['0', '0']]) {
        assert.equal(delivery.frameFor(held), undefined, JSON.stringify(held));
      }
    });

    it('reads the file again when it changes; missing, hands nothing over; at start, a file that is no CRL of its CA stops the gateway (CONFIG_INVALID)', async () => {
      const file = join(tmp.dir, 'later.crl');
      const { lines, logger } = captureLogs();
      const delivery = new CrlDelivery(file, ca.certPem, logger, 0);
      assert.equal(delivery.frameFor('0'), undefined, 'no file: nothing');
      writeFileSync(file, crlOf(ca, [], 60_000, 4));
      assert.ok(delivery.frameFor('0'), 'the file that appeared');
      // A version that is not the CA's: said once, the CRL read before handed over still.
      const other = createCertificateAuthority('Another CA', 1);
      writeFileSync(file, crlOf(other, [], 0, 5));
      assert.ok(delivery.frameFor('0'));
      assert.ok(delivery.frameFor('0'));
      assert.equal(lines.filter((l) => l.code === 'CONFIG_INVALID').length, 1, JSON.stringify(lines));
      for (const bytes of ['not a CRL\n', crlOf(other, [], 0, 6)]) {
        writeFileSync(join(tmp.dir, 'bad.crl'), bytes);
        assert.throws(() => new CrlDelivery(join(tmp.dir, 'bad.crl'), ca.certPem, logger), (e: unknown) => isFieldStreamError(e) && e.code === 'CONFIG_INVALID' && /GATEWAY_CRL_FILE/.test(e.message));
      }
      // There but not readable (a folder where the file should be): the file's fault, not its content's.
      mkdirSync(join(tmp.dir, 'folder.crl'));
      assert.throws(
        () => new CrlDelivery(join(tmp.dir, 'folder.crl'), ca.certPem, logger),
        (e: unknown) => isFieldStreamError(e) && e.code === 'CONFIG_FILE_UNREADABLE' && /GATEWAY_CRL_FILE=.*folder\.crl.*EISDIR/.test(e.message),
      );
    });
  });

  describe('the device side (GatewayConnection, ServerCrlSource)', () => {
    const caFile = join(tmp.dir, 'device', 'ca.crt');
    const dataDir = join(tmp.dir, 'device', 'data');
    const servers = edgeServers(() => ca);
    const open = (logger: Logger) => ServerCrlSource.open(undefined, caFile, ca.certPem, logger, dataDir);
    const connect = (source: ServerCrlSource, urls: string, logger: Logger) => {
      servers.conn = new GatewayConnection({ url: urls, tls: { ca: ca.certPem, token: 'unused', crl: source }, reconnectInitialMs: 50, reconnectMaxMs: 100, idleTimeoutMs: 60_000 }, logger);
      servers.conn.start();
      return servers.conn;
    };
    /** `server` hands each device that connects the frame `crl` (a gateway with that CRL) */
    const handing = (server: WssServer, crl: string | Buffer) => {
      const frame: CrlFrame = { type: 'crl', crl: Buffer.isBuffer(crl) ? crl.toString('base64') : Buffer.from(crl.replace(/-----[^-]+-----|\s/g, ''), 'base64').toString('base64') };
      const timer = setInterval(() => {
        for (const ws of server.sockets) if (ws.readyState === ws.OPEN && !(ws as { handed?: boolean }).handed) {
          (ws as { handed?: boolean }).handed = true;
          ws.send(JSON.stringify(frame));
        }
      }, 20);
      return () => clearInterval(timer);
    };

    before(() => {
      mkdirSync(join(tmp.dir, 'device'));
      writeFileSync(caFile, ca.certPem);
    });

    it('removes at the next start what a rewrite of the kept CRL killed before its rename left aside', () => {
      // Written aside (ca.crl.tmp-PID), synced, then renamed: a kill before the rename left it on the
      // device's disk for good, another at each such kill (another process id each start).
      const dir = join(tmp.dir, 'device', 'data-aside');
      mkdirSync(dir, { recursive: true });
      const aside = join(dir, 'ca.crl.tmp-4194301');
      writeFileSync(aside, '-----BEGIN X509 CRL-----\nMIIB'); // cut off by the kill
      writeFileSync(join(dir, 'ca.crl.bak'), "an operator's copy\n");
      ServerCrlSource.open(undefined, caFile, ca.certPem, captureLogs().logger, dir);
      assert.equal(existsSync(aside), false, 'the file aside is gone');
      assert.equal(existsSync(join(dir, 'ca.crl.bak')), true, 'nothing else is touched');
    });

    it('says which CRL it holds; takes a newer one of the CA, keeps it, and refuses the server it revokes from then on, also after a restart', async () => {
      writeFileSync(join(tmp.dir, 'device', 'ca.crl'), crlOf(ca, [], 2 * 60_000, 1));
      const { lines, logger } = captureLogs();
      const source = open(logger);
      const held = source.current()?.thisUpdate.getTime();
      const stop = handing(servers.renewed, crlOf(ca, [servers.oldSerial], 60_000, 2));
      try {
        const c = connect(source, servers.renewed.url, logger);
        await eventually(() => (source.current()?.revoked === 1 ? true : undefined), 5_000, JSON.stringify(lines));
        assert.equal(servers.renewed.headers[CRL_HEADER], String(held), 'the upgrade said which CRL the device held');
        assert.ok(c.isOpen, 'the server that handed it over is not the revoked one: still connected');
        assert.ok(existsSync(join(dataDir, 'ca.crl')), 'kept in the data folder');
      } finally {
        stop();
      }
      await servers.conn?.stop();
      // The next connection says the new one; the revoked server is refused in the handshake.
      const c = connect(source, `${servers.old.url},${servers.renewed.url}`, logger);
      await eventually(() => (c.isOpen && c.url === servers.renewed.url ? true : undefined), 5_000, 'the renewed server taken');
      assert.ok(lines.some((l) => l.code === 'FIELD_GATEWAY_CERT_REVOKED' && l.url === servers.old.url));
      assert.equal(servers.renewed.headers[CRL_HEADER], String(source.current()?.thisUpdate.getTime()));
      await servers.conn?.stop();
      // A restart: the copy in the data folder, newer than the file beside ca.crt, is the one used.
      const again = open(captureLogs().logger);
      assert.equal(again.current()?.revoked, 1);
      assert.equal(again.current()?.path, join(dataDir, 'ca.crl'));
    });

    it("refuses a CRL that is not the CA's (FIELD_GATEWAY_CRL_REFUSED), and changes nothing for an older one or the same", async () => {
      const { lines, logger } = captureLogs();
      const source = open(logger);
      const before = readFileSync(join(dataDir, 'ca.crl'));
      const other = createCertificateAuthority('Another CA', 1);
      for (const [what, crl, code] of [
        ["another CA's, newer", crlOf(other, [], 0, 9), 'FIELD_GATEWAY_CRL_REFUSED'],
        ['no CRL at all', Buffer.from('not a CRL'), 'FIELD_GATEWAY_CRL_REFUSED'],
        ['older, empty (it would take the revocation back)', crlOf(ca, [], day / 2, 1), undefined],
      ] as const) {
        const said = lines.length;
        const stop = handing(servers.renewed, crl);
        try {
          const c = connect(source, servers.renewed.url, logger);
          await eventually(() => (c.isOpen && servers.renewed.sockets.some((ws) => (ws as { handed?: boolean }).handed) ? true : undefined), 5_000, what);
          if (code) await eventually(() => (lines.slice(said).some((l) => l.code === code) ? true : undefined), 5_000, `${what}: ${code}`);
          await new Promise((r) => setTimeout(r, 200));
        } finally {
          stop();
          await servers.conn?.stop();
          for (const ws of servers.renewed.sockets) (ws as { handed?: boolean }).handed = true;
        }
        const news = lines.slice(said);
        if (code) assert.equal(news.filter((l) => l.code === code).length, 1, `${what}: ${JSON.stringify(news)}`);
        else assert.equal(news.filter((l) => typeof l.code === 'string').length, 0, `${what}: ${JSON.stringify(news)}`);
        assert.equal(source.current()?.revoked, 1, `${what}: the CRL in use stays`);
        assert.deepEqual(readFileSync(join(dataDir, 'ca.crl')), before, `${what}: the kept copy too`);
      }
    });

    it("says a flood of CRLs that are not the CA's as the gateway's other refused frames: rate-limited, and cut", async () => {
      const { lines, logger } = captureLogs();
      const source = ServerCrlSource.open(undefined, caFile, ca.certPem, logger, join(tmp.dir, 'device', 'data-flood'));
      const other = createCertificateAuthority('Another CA', 1);
      // A signed list's shape whose algorithm is an OID of 20 000 bytes: its refusal quotes it.
      const { asn1 } = forge;
      const seq = (...v: forge.asn1.Asn1[]) => asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, v);
      const hugeOid = asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OID, false, `\x2a${'\x01'.repeat(20_000)}`);
      const time = asn1.create(asn1.Class.UNIVERSAL, asn1.Type.UTCTIME, false, asn1.dateToUtcTime(new Date()));
      const tbs = seq(seq(hugeOid), seq(), time);
      const odd = Buffer.from(asn1.toDer(seq(tbs, seq(hugeOid), asn1.create(asn1.Class.UNIVERSAL, asn1.Type.BITSTRING, false, '\x00\x01'))).getBytes(), 'binary');
      const frames = [odd, ...Array.from({ length: 40 }, () => Buffer.from(crlOf(other, [], 0, 9).replace(/-----[^-]+-----|\s/g, ''), 'base64'))];
      const held = source.current()?.thisUpdate.getTime();
      const c = connect(source, servers.renewed.url, logger);
      await eventually(() => (c.isOpen ? true : undefined), 5_000, 'connected');
      const ws = servers.renewed.sockets.at(-1);
      for (const der of frames) ws?.send(JSON.stringify({ type: 'crl', crl: der.toString('base64') } satisfies CrlFrame));
      await eventually(() => (lines.filter((l) => l.code === 'FIELD_GATEWAY_CRL_REFUSED').length >= 1 ? true : undefined), 5_000, JSON.stringify(lines));
      await new Promise((r) => setTimeout(r, 500));
      const refused = lines.filter((l) => l.code === 'FIELD_GATEWAY_CRL_REFUSED');
      assert.ok(refused.length <= LIMITS.fieldGatewayLogMaxPerWindow, `${refused.length} lines for ${frames.length} frames`);
      for (const l of lines) assert.ok(JSON.stringify(l).length < 4 * LIMITS.fieldGatewayLogMaxChars, `a line of ${JSON.stringify(l).length} characters`);
      assert.ok(c.isOpen, 'ignored, not closed on');
      assert.equal(source.current()?.thisUpdate.getTime(), held, 'nothing taken');
    });

    it('looks at one CRL per connection: a second one is ignored unread (FIELD_GATEWAY_CRL_REPEATED), a newer one of the CA included', async () => {
      const { lines, logger } = captureLogs();
      writeFileSync(join(tmp.dir, 'device', 'ca.crl'), crlOf(ca, [], 2 * 60_000, 1));
      const source = ServerCrlSource.open(undefined, caFile, ca.certPem, logger, join(tmp.dir, 'device', 'data-repeat'));
      const held = source.current()?.thisUpdate.getTime();
      const c = connect(source, servers.renewed.url, logger);
      await eventually(() => (c.isOpen ? true : undefined), 5_000, 'connected');
      const der = (pem: string) => Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ''), 'base64').toString('base64');
      const ws = servers.renewed.sockets.at(-1);
      // The first: the CA's, older than the one held (nothing to take); the second: newer, never read.
      ws?.send(JSON.stringify({ type: 'crl', crl: der(crlOf(ca, [], day / 2, 2)) } satisfies CrlFrame));
      ws?.send(JSON.stringify({ type: 'crl', crl: der(crlOf(ca, ['0B'], 60_000, 3)) } satisfies CrlFrame));
      await eventually(() => (lines.some((l) => l.code === 'FIELD_GATEWAY_CRL_REPEATED') ? true : undefined), 5_000, JSON.stringify(lines));
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(source.current()?.thisUpdate.getTime(), held, 'the CRL in use stays');
      assert.equal(lines.filter((l) => l.code === 'FIELD_GATEWAY_CRL_REPEATED').length, 1, JSON.stringify(lines));
      assert.ok(c.isOpen);
    });

    it("refuses a newer CRL of another CA that FIELD_CA_FILE holds (a public root beside ours): it would take the place of the CA's, and its revocations", async () => {
      const { lines, logger } = captureLogs();
      // FIELD_CA_FILE with a second CA, whose CRL anyone may fetch (as a public root's).
      const other = createCertificateAuthority('A public root', 1);
      const bundle = ca.certPem + other.certPem;
      writeFileSync(join(tmp.dir, 'device', 'ca.crl'), crlOf(ca, [servers.oldSerial], 2 * 60_000, 20));
      const dir = join(tmp.dir, 'device', 'data-other-ca');
      const source = ServerCrlSource.open(undefined, caFile, bundle, logger, dir);
      const stop = handing(servers.renewed, crlOf(other, [], 0, 1));
      try {
        const c = connect(source, servers.renewed.url, logger);
        await eventually(() => (c.isOpen && servers.renewed.sockets.some((ws) => (ws as { handed?: boolean }).handed) ? true : undefined), 5_000, 'handed');
        await eventually(() => (lines.some((l) => l.code === 'FIELD_GATEWAY_CRL_REFUSED') ? true : undefined), 5_000, JSON.stringify(lines));
        await new Promise((r) => setTimeout(r, 300));
      } finally {
        stop();
        await servers.conn?.stop();
        for (const ws of servers.renewed.sockets) (ws as { handed?: boolean }).handed = true;
      }
      assert.equal(lines.filter((l) => l.code === 'FIELD_GATEWAY_CRL_REFUSED').length, 1, JSON.stringify(lines));
      assert.equal(source.current()?.revoked, 1, "the CA's CRL stays in use");
      assert.equal(existsSync(join(dir, 'ca.crl')), false, 'nothing kept');
      // The stolen edge certificate is still refused.
      const c = connect(source, `${servers.old.url},${servers.renewed.url}`, logger);
      await eventually(() => (c.isOpen && c.url === servers.renewed.url ? true : undefined), 5_000, 'the renewed server taken');
      assert.ok(lines.some((l) => l.code === 'FIELD_GATEWAY_CERT_REVOKED' && l.url === servers.old.url));
      await servers.conn?.stop();
      // A copy of another CA's CRL in the data folder (kept before) is no later version of the file's.
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'ca.crl'), crlOf(other, [], 0, 2));
      assert.equal(ServerCrlSource.open(undefined, caFile, bundle, captureLogs().logger, dir).current()?.revoked, 1);
    });

    it('a CRL it cannot keep on disk (FIELD_CRL_STORE_FAILED, once) is used all the same, and written once the disk takes it', () => {
      const { lines, logger } = captureLogs();
      writeFileSync(join(tmp.dir, 'device', 'ca.crl'), crlOf(ca, [], 2 * 60_000, 1));
      // Its data folder's place taken by a file: nothing can be written under it.
      const blocked = join(tmp.dir, 'device', 'data-blocked');
      writeFileSync(blocked, '');
      const source = ServerCrlSource.open(undefined, caFile, ca.certPem, logger, blocked);
      const handed = Buffer.from(crlOf(ca, [servers.oldSerial], 60_000, 11).replace(/-----[^-]+-----|\s/g, ''), 'base64');
      assert.equal(source.offer(handed, 'wss://gateway')?.revoked, 1, 'taken');
      assert.equal(source.current()?.revoked, 1, 'in use');
      assert.equal(source.current()?.revoked, 1);
      assert.equal(lines.filter((l) => l.code === 'FIELD_CRL_STORE_FAILED').length, 1, 'said once');
      rmSync(blocked);
      assert.equal(source.current()?.revoked, 1);
      assert.ok(existsSync(join(blocked, 'ca.crl')), 'written at the next look');
      assert.equal(ServerCrlSource.open(undefined, caFile, ca.certPem, logger, blocked).current()?.revoked, 1, 'and read after a restart');
    });

    it('drops the connection at once when the CRL handed over revokes the very server that handed it', async () => {
      const { lines, logger } = captureLogs();
      writeFileSync(join(tmp.dir, 'device', 'ca.crl'), crlOf(ca, [], 2 * 60_000, 1));
      const fresh = join(tmp.dir, 'device', 'data-2');
      const source = ServerCrlSource.open(undefined, caFile, ca.certPem, logger, fresh);
      const stop = handing(servers.old, crlOf(ca, [servers.oldSerial], 30_000, 10));
      try {
        const c = connect(source, `${servers.old.url},${servers.renewed.url}`, logger);
        await eventually(() => (c.isOpen && c.url === servers.renewed.url ? true : undefined), 5_000, JSON.stringify(lines));
        assert.equal(lines.find((l) => l.code === 'FIELD_GATEWAY_CERT_REVOKED')?.serial, servers.oldSerial);
      } finally {
        stop();
      }
    });
  });
});

/**
 * Devices and gateways tell a newer CRL by a later thisUpdate, which has whole seconds: two
 * revocations within a second made two CRLs of one date, and the second never reached a device
 * holding the first.
 */
describe("the CA's CRLs, each dated after the one it replaces", () => {
  it('a second past the previous one, always backdated by a minute at least and never by more than 5', () => {
    const now = Date.UTC(2026, 11, 5, 12, 0, 0);
    const minute = 60_000;
    assert.equal(nextThisUpdate(now, undefined), now - 5 * minute, 'the first: 5 minutes back');
    assert.equal(nextThisUpdate(now, now - 5 * minute), now - 5 * minute + 1000, 'within the same second: the next one');
    assert.equal(nextThisUpdate(now, now - 10 * minute), now - 5 * minute, 'long after: 5 minutes back');
    assert.equal(nextThisUpdate(now, now - minute), now - minute, 'past the minute before the clock: held there');
  });

  it('two revocations one after the other give two CRLs, the second dated later', () => {
    const pki = makeTestPki(['rev-a', 'rev-b']);
    try {
      const caPem = readFileSync(pki.paths.publicCa, 'utf8');
      const dateOf = () => verifyCrl(readFileSync(pki.paths.crl), caPem).thisUpdate.getTime();
      revokeDevice(pki.dir, 'rev-a');
      const first = dateOf();
      revokeDevice(pki.dir, 'rev-b');
      const second = dateOf();
      assert.ok(second > first, `${new Date(second).toISOString()} after ${new Date(first).toISOString()}`);
      assert.equal(verifyCrl(readFileSync(pki.paths.crl), caPem).revoked, 2);
    } finally {
      pki.cleanup();
    }
  });
});

