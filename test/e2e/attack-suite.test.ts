import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { connectAsync, type MqttClient } from 'mqtt';
import { eventually, RawDevice } from '../helpers/ws-device.ts';
import { foreignDeviceCert, makeTestPki, tempDir } from '../helpers/pki.ts';
import { startTestStack } from '../helpers/stack.ts';
import { startTestFieldClient } from '../helpers/field.ts';
import { LogCapture } from '../helpers/embedded.ts';
import type { LocalStack } from '../../scripts/local-stack/stack.ts';
import { readLocalStore } from '../../internal-network/distributor/sinks/local-store.ts';
import { revokeDevice } from '../../pki/revocation.ts';
import { uplinkTopic } from '../../shared/contract/topics.ts';
import { capturedReadings, READING_FILTERS } from '../helpers/captured-envelopes.ts';
import { parseSigningKey, signMessage } from '../../shared/security/message-auth.ts';

const LEGIT = 3000;

/**
 * The attacks of the threat model, against the real stack with signatures required, while a
 * legitimate device streams. Each is refused with its documented code, every service stays up, and
 * every legitimate reading is stored exactly once.
 */
describe('attack suite on the real stack', () => {
  const work = tempDir('attacks');
  const pki = makeTestPki(['legit-1', 'mallory', 'revoked-1', 'flood-1']);
  const logs = new LogCapture();
  let stack: LocalStack;
  let dmz: MqttClient;
  let spy: MqttClient;
  const captured: Buffer[] = [];
  before(async () => {
    ({ stack } = await startTestStack(pki.dir, join(work.dir, 'stack'), {
      DISTRIBUTOR_REQUIRE_SIGNATURES: 'true',
      DISTRIBUTOR_FRESHNESS_S: '3',
      // A frame's way from its signing to the gateway: 15 minutes by default (a slow link); 3 s here,
      // so that a captured message replayed 4 s later is refused as stale by its signing time.
      DISTRIBUTOR_TRANSIT_MAX_S: '3',
      GATEWAY_RATE_MESSAGES_PER_S: '2000',
      GATEWAY_RATE_BURST_S: '1',
    }));
    const ca = readFileSync(pki.paths.publicCa);
    const gw = pki.paths.service('dmz/gateway');
    dmz = await connectAsync(stack.urls.dmzMqtt, { ca, cert: readFileSync(gw.cert), key: readFileSync(gw.key), protocolVersion: 5 }); // a compromised DMZ
    const c = pki.paths.service('internal/consumer');
    spy = await connectAsync(stack.urls.internalMqtt, { ca, cert: readFileSync(c.cert), key: readFileSync(c.key), protocolVersion: 5 }); // to capture real traffic
    spy.on('message', (t, m) => {
      for (const e of capturedReadings('legit-1', t, m)) if (captured.length < 20) captured.push(e);
    });
    await spy.subscribeAsync(READING_FILTERS, { qos: 0 });
  });
  after(async () => {
    await dmz?.endAsync();
    await spy?.endAsync();
    await stack?.close();
    pki.cleanup();
    work.cleanup();
  });
  const points = () => readLocalStore(stack.dataDir.timeseries);
  const events = (reason: string) => points().filter((p) => p.measurement === 'security_events' && p.tags.reason === reason);

  it('refuses every attack, keeps every service up, and loses no legitimate reading', async () => {
    const legit = await startTestFieldClient(pki.paths, 'legit-1', stack.urls.wss, logs.logger);
    try {
      const base = Date.parse('2026-01-01T00:00:00Z');
      const stream = (async () => {
        for (let i = 0; i < LEGIT; i += 100) {
          await legit.client.submitMany(Array.from({ length: 100 }, (_, k) => ({ dataType: 'timeseries' as const, payload: { v: i + k, timestamp: base + i + k } })));
          await new Promise((r) => setTimeout(r, 30));
        }
      })();
      await eventually(() => (captured.length >= 3 ? true : undefined), 20_000, 'traffic to capture');

      // impersonation: a device claiming another's id
      const mallory = await RawDevice.connect(stack.urls.wss, RawDevice.tlsFor(pki.paths, 'mallory'));
      mallory.send(JSON.stringify({ deviceId: 'legit-1', dataType: 'timeseries', payload: { v: -1 } }));
      assert.equal((await mallory.next()).type === 'error' && 'GATEWAY_DEVICE_MISMATCH', 'GATEWAY_DEVICE_MISMATCH');
      // malformed and oversized frames
      mallory.send('{"deviceId": ');
      const malformed = await mallory.next();
      assert.equal(malformed.type === 'error' && malformed.code, 'CONTRACT_MALFORMED_JSON');
      // nested deep enough (200 KB of brackets) to overflow any recursive walk of it
      mallory.send(`{"deviceId":"mallory","dataType":"response","payload":{"commandId":"c-1","status":"completed","result":${'['.repeat(100_000)}${']'.repeat(100_000)}}}`);
      const deep = await mallory.next();
      assert.equal(deep.type === 'error' && deep.code, 'CONTRACT_INVALID_MESSAGE');
      // the same nesting where the gateway names what it refuses (the data type): a text of it
      // overflowed JSON.stringify's recursion, an error nothing caught, and the gateway exited
      mallory.send(`{"deviceId":"mallory","dataType":${'['.repeat(10_000)}${']'.repeat(10_000)},"payload":{}}`);
      const deepType = await mallory.next();
      assert.equal(deepType.type === 'error' && deepType.code, 'CONTRACT_UNKNOWN_DATA_TYPE');
      mallory.send(`{"deviceId":"mallory","batch":[{"dataType":${'{"a":'.repeat(10_000)}1${'}'.repeat(10_000)},"payload":{}}]}`);
      const deepItem = await mallory.next();
      assert.equal(deepItem.type === 'error' && deepItem.code, 'CONTRACT_UNKNOWN_DATA_TYPE');
      mallory.send('x'.repeat(9 * 1024 * 1024));
      // The gateway closes with 1009 (message too big) and cuts the socket; through Caddy the close
      // frame sometimes loses the race with the TCP teardown (1006). Either way the gateway says why.
      assert.ok([1009, 1006].includes(await mallory.closed()), 'closed for the oversized frame');
      await eventually(() => (stack.gateways.some((g) => g.tail(200).includes('"code":"CONTRACT_FRAME_TOO_LARGE"')) ? true : undefined), 10_000, 'the gateway logged the oversized frame');
      // no certificate, another CA's certificate
      await assert.rejects(RawDevice.connect(stack.urls.wss, { ca: readFileSync(pki.paths.publicCa, 'utf8') }));
      const foreign = foreignDeviceCert('legit-1');
      await assert.rejects(RawDevice.connect(stack.urls.wss, { ca: readFileSync(pki.paths.publicCa, 'utf8'), cert: foreign.cert, key: foreign.key }));
      // a revoked certificate
      revokeDevice(pki.dir, 'revoked-1');
      await new Promise((r) => setTimeout(r, 2500));
      const revoked = await RawDevice.connect(stack.urls.wss, RawDevice.tlsFor(pki.paths, 'revoked-1')).then(
        () => assert.fail('connected'),
        (e: { status?: number; body?: string }) => e,
      );
      assert.equal(JSON.parse(revoked.body ?? '{}').code, 'GATEWAY_CERTIFICATE_REVOKED');
      // a flood
      const flood = await RawDevice.connect(stack.urls.wss, RawDevice.tlsFor(pki.paths, 'flood-1'));
      const floodFrame = JSON.stringify({ deviceId: 'flood-1', batch: Array.from({ length: 1000 }, (_, i) => ({ dataType: 'timeseries', payload: { f: i } })) });
      for (let k = 0; k < 10; k++) flood.send(floodFrame);
      let limited = 0;
      for (let k = 0; k < 10; k++) {
        const f = await flood.next();
        if (f.type === 'error' && f.code === 'GATEWAY_RATE_LIMITED') limited++;
      }
      assert.ok(limited > 0);
      flood.close();
      // a slowloris client at Caddy: it is dropped after its header timeout
      const slow = await new Promise<number>((resolve) => {
        const t0 = Date.now();
        const s = tlsConnect({ host: '127.0.0.1', port: stack.ports.https, servername: 'localhost', ...RawDevice.tlsFor(pki.paths, 'mallory') }, () => s.write('GET /ws HTTP/1.1\r\nHost: localhost\r\n'));
        s.on('error', () => undefined);
        s.on('close', () => resolve(Date.now() - t0));
      });
      assert.ok(slow < 30_000);

      // A compromised DMZ: replay a captured message at once (a duplicate) and after the freshness
      // window (stale), tamper with one, sign with another device's key, replay several reversed.
      const replay = (m: Buffer) => dmz.publishAsync(uplinkTopic('legit-1', 'timeseries'), m, { qos: 1 });
      await replay(captured[0] as Buffer);
      const tampered = JSON.parse((captured[1] as Buffer).toString());
      tampered.messages[0].payload.v = 999_999;
      await replay(Buffer.from(JSON.stringify(tampered)));
      const malloryKey = parseSigningKey(readFileSync(pki.paths.device('mallory').signingKey, 'utf8')) as Buffer;
      const payload = { v: 888_888, timestamp: base - 1 };
      const auth = signMessage(malloryKey, { deviceId: 'legit-1', dataType: 'timeseries', epoch: 'evil', seq: 1, ts: Date.now(), payload });
      await replay(Buffer.from(JSON.stringify({ v: 1, deviceId: 'legit-1', dataType: 'timeseries', gatewayId: 'gw', receivedAt: Date.now(), messages: [{ messageId: 'evil.1', auth, payload }] })));
      await new Promise((r) => setTimeout(r, 4000)); // past the 3 s transit window of this stack
      for (const m of [...captured.slice(0, 3)].reverse()) {
        // stamped "received now", as a gateway stamps a frame replayed to it
        const stale = JSON.parse(m.toString());
        stale.receivedAt = Date.now();
        for (const item of stale.messages) item.receivedAt = stale.receivedAt;
        await replay(Buffer.from(JSON.stringify(stale)));
      }
      // and replayed as captured, with the original times: refused as already accepted
      for (const m of captured.slice(3, 6)) await replay(m);

      await stream;
      await eventually(
        () => (events('SECURITY_BAD_SIGNATURE').length >= 2 && events('SECURITY_STALE').length >= 3 && events('SECURITY_DUPLICATE').length >= 1 ? true : undefined),
        20_000,
        'the security events',
      );
      const rows = await eventually(
        () => {
          const r = points().filter((p) => p.measurement === 'readings' && p.tags.device === 'legit-1');
          return r.length >= LEGIT ? r : undefined;
        },
        60_000,
        'every legitimate reading',
      );
      assert.equal(rows.length, LEGIT, 'each exactly once');
      assert.deepEqual(
        rows.map((r) => r.fields.v),
        Array.from({ length: LEGIT }, (_, i) => i),
      );
      assert.ok(!points().some((p) => p.fields.v === 999_999 || p.fields.v === 888_888 || p.fields.v === -1));
      // Running, and never restarted by the stack's supervisor (a crash would be restarted unseen).
      for (const proc of stack.all) assert.ok(proc.running && proc.restarts === 0, `${proc.name} running, restarted ${proc.restarts} times`);
    } finally {
      await legit.close();
    }
  });
});
