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
import type { LocalStack } from '../../scripts/local-stack/stack.ts';
import { revokeDevice } from '../../pki/revocation.ts';
import { readLocalStore } from '../../internal-network/distributor/sinks/local-store.ts';
import { uplinkTopic } from '../../shared/contract/topics.ts';
import { parseSigningKey, signMessage } from '../../shared/security/message-auth.ts';

describe('revoking a device on the real stack', () => {
  const work = tempDir('revoke');
  const pki = makeTestPki(['rev-1', 'ok-1']);
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
});
