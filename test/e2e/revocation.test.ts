import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connectAsync } from 'mqtt';
import { eventually, RawDevice } from '../helpers/ws-device.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { startTestStack } from '../helpers/stack.ts';
import { startTestFieldClient } from '../helpers/field.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { adminWith } from '../helpers/admin.ts';
import { EXIT } from '../../scripts/admin/run.ts';
import type { LocalStack } from '../../scripts/local-stack/stack.ts';
import { revokeDevice } from '../../pki/revocation.ts';
import { readLocalStore } from '../../internal-network/distributor/sinks/local-store.ts';
import { uplinkTopic } from '../../shared/contract/topics.ts';
import { parseSigningKey, signMessage } from '../../shared/security/message-auth.ts';

describe('revoking a device on the real stack', () => {
  const work = tempDir('revoke');
  const pki = makeTestPki(['rev-1', 'ok-1', 'rot-1']);
  const logs = new LogCapture();
  let stack: LocalStack;
  before(async () => {
    ({ stack } = await startTestStack(pki.dir, join(work.dir, 'stack'), {}));
  });
  after(async () => {
    await stack?.close();
    pki.cleanup();
    work.cleanup();
  });
  const ca = () => readFileSync(pki.paths.publicCa);
  const asDevice = (id: string, url: string) =>
    connectAsync(url, { ca: ca(), cert: readFileSync(pki.paths.device(id).cert), key: readFileSync(pki.paths.device(id).key), protocolVersion: 5, reconnectPeriod: 0, connectTimeout: 5000 });
  const points = () => readLocalStore(stack.dataDir.timeseries);

  it('closes its connection, refuses it at the gateway and on the internal side, and at the brokers after their restart', async () => {
    const revokedKey = parseSigningKey(readFileSync(pki.paths.device('rev-1').signingKey, 'utf8')) as Buffer;
    const victim = await startTestFieldClient(pki.paths, 'rev-1', stack.urls.wss, logs.logger, { FIELD_RECONNECT_MAX_MS: '500' });
    const other = await startTestFieldClient(pki.paths, 'ok-1', stack.urls.wss, logs.logger);
    try {
      await victim.client.submit('timeseries', { before: 1, timestamp: 1760000000000 });
      await eventually(() => (points().some((p) => p.fields.before === 1) ? true : undefined));
      (await asDevice('rev-1', stack.urls.dmzMqtt)).end(true); // TLS to the broker works before

      revokeDevice(pki.dir, 'rev-1');

      // The gateway applies the list within seconds, to the open connection too.
      await eventually(() => (victim.connection.isOpen ? undefined : true), 10_000, 'the connection closed');
      const refused = await RawDevice.connect(stack.urls.wss, RawDevice.tlsFor(pki.paths, 'rev-1')).then(
        () => assert.fail('connected'),
        (e: { status?: number; body?: string }) => e,
      );
      assert.equal(refused.status, 403);
      assert.equal(JSON.parse(refused.body ?? '{}').code, 'GATEWAY_CERTIFICATE_REVOKED');

      // A compromised DMZ forwarding its (validly signed) messages gets them refused inside
      // (the distributor looks at the revoked list at most a second late).
      await new Promise((r) => setTimeout(r, 1100));
      const gw = pki.paths.service('dmz/gateway');
      const dmz = await connectAsync(stack.urls.dmzMqtt, { ca: ca(), cert: readFileSync(gw.cert), key: readFileSync(gw.key), protocolVersion: 5 });
      const payload = { forged: 1, timestamp: 1760000000001 };
      const auth = signMessage(revokedKey, { deviceId: 'rev-1', dataType: 'timeseries', epoch: 'x', seq: 1, ts: Date.now(), payload });
      await dmz.publishAsync(uplinkTopic('rev-1', 'timeseries'), JSON.stringify({ v: 1, deviceId: 'rev-1', dataType: 'timeseries', gatewayId: 'gw', receivedAt: Date.now(), messages: [{ messageId: 'x.1', auth, payload }] }), { qos: 1 });
      await dmz.endAsync();
      await eventually(() => (points().some((p) => p.measurement === 'security_events' && p.tags.reason === 'SECURITY_REVOKED') ? true : undefined));
      assert.ok(!points().some((p) => p.fields.forged === 1));

      // Others are not affected.
      await other.client.submit('timeseries', { others: 1, timestamp: 1760000000002 });
      await eventually(() => (points().some((p) => p.fields.others === 1) ? true : undefined));

      // The brokers read the CRL at start: after a restart the revoked certificate cannot even finish TLS.
      await stack.internalMosquitto.restart();
      await stack.dmzMosquitto.restart();
      await assert.rejects(asDevice('rev-1', stack.urls.dmzMqtt));
      await assert.rejects(asDevice('rev-1', stack.urls.internalMqtt));
      (await asDevice('ok-1', stack.urls.dmzMqtt)).end(true);
    } finally {
      await victim.close();
      await other.close();
    }
  });
  it('after a renewal, revoking the superseded certificates refuses the old one at the gateway and the brokers; the renewed one connects and its data arrives', async () => {
    const admin = adminWith(pki.dir);
    const refusedWith = (tls: ReturnType<typeof RawDevice.tlsFor>) =>
      RawDevice.connect(stack.urls.wss, tls).then(
        (d) => {
          d.ws.close();
          return undefined;
        },
        (e: { status?: number; body?: string }) => (e.status === 403 ? (JSON.parse(e.body ?? '{}') as { code?: string }).code : `HTTP ${e.status}`),
      );
    // Each connection that goes through takes one of the device's budget at the gateway (20 in a row,
    // then one every 3 s: GATEWAY_RECONNECTING_TOO_FAST), so the waits for a revocation to reach the
    // gateway (it reads its list every TIMINGS.revokedSerialsReloadMs) try once a second, not at
    // eventually's pace, and leave the renewed certificate its connections.
    const refusedSoon = (tls: ReturnType<typeof RawDevice.tlsFor>, what: string) =>
      eventually(
        async () => {
          if ((await refusedWith(tls)) === 'GATEWAY_CERTIFICATE_REVOKED') return true;
          await new Promise((r) => setTimeout(r, 1_000));
          return undefined;
        },
        20_000,
        what,
      );
    const first = RawDevice.tlsFor(pki.paths, 'rot-1');
    const open = await RawDevice.connect(stack.urls.wss, first);
    assert.equal((await admin('devices', 'renew', 'rot-1')).code, EXIT.ok);
    const second = RawDevice.tlsFor(pki.paths, 'rot-1');
    // The renewal alone cuts nobody off: the device that has not got its new certificate yet connects.
    assert.equal(await refusedWith(first), undefined);

    const r = await admin('devices', 'revoke', 'rot-1', '--superseded');
    assert.equal(r.code, EXIT.ok, r.err);
    await eventually(() => (open.closeCode !== undefined ? true : undefined), 10_000, 'the superseded certificate\'s open connection closed');
    await refusedSoon(first, 'the superseded certificate refused');
    assert.equal(await refusedWith(second), undefined, 'the renewed certificate connects');
    // The device is not revoked: with its renewed certificate, its signed data is taken inside.
    const field = await startTestFieldClient(pki.paths, 'rot-1', stack.urls.wss, logs.logger, { FIELD_RECONNECT_MAX_MS: '500' });
    let third = second;
    try {
      await field.client.submit('timeseries', { rotated: 1, timestamp: 1760000000100 });
      await eventually(() => (points().some((p) => p.fields.rotated === 1) ? true : undefined));

      // A key that may have been copied: renewed and the old one revoked at once. The running client
      // is closed on its second certificate and comes back with the third, which it reads from its files.
      assert.equal((await admin('devices', 'renew', 'rot-1', '--revoke-old')).code, EXIT.ok);
      third = RawDevice.tlsFor(pki.paths, 'rot-1');
      await refusedSoon(second, 'the second certificate refused');
      assert.equal(await refusedWith(third), undefined);
      await field.client.submit('timeseries', { rotated: 2, timestamp: 1760000000101 });
      await eventually(() => (points().some((p) => p.fields.rotated === 2) ? true : undefined), 20_000, 'data sent with the third certificate');
    } finally {
      await field.close();
    }

    // The brokers read the CRL at start: after a restart the superseded certificates cannot finish TLS, the newest can.
    await stack.dmzMosquitto.restart();
    const mqttAs = (tls: typeof first) => connectAsync(stack.urls.dmzMqtt, { ...tls, protocolVersion: 5, reconnectPeriod: 0, connectTimeout: 5000 });
    await assert.rejects(mqttAs(first));
    await assert.rejects(mqttAs(second));
    (await mqttAs(third)).end(true);
  });
});
