import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { SEED_MESSAGES } from '../fixtures/seed-messages.ts';
import { RawDevice } from '../helpers/ws-device.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { startTestStack } from '../helpers/stack.ts';
import { TcpRelay } from '../helpers/tcp-relay.ts';
import type { LocalStack } from '../../scripts/local-stack/stack.ts';

/**
 * The local stack says it is up only once the bridge has its subscriptions on the DMZ broker
 * (scripts/local-stack/bridge-ready.ts): until then the DMZ broker drops what it takes (PUBACK 0x10)
 * and the gateway refuses a device's messages. Here the bridge's packets to the DMZ broker are held
 * in a relay: the stack waits, and once they pass, a device's first message is acked.
 */
describe('the local stack is up once the bridge is subscribed', () => {
  const work = tempDir('bridge-ready');
  const pki = makeTestPki(['sensor-001']);
  let stack: LocalStack | undefined;
  let relay: TcpRelay | undefined;
  after(async () => {
    await stack?.close();
    await relay?.close();
    pki.cleanup();
    work.cleanup();
  });

  it('waits while the bridge cannot subscribe, then a device connecting at once is acked', async () => {
    let up = false;
    const starting = startTestStack(pki.dir, join(work.dir, 'stack'), {}, {
      bridgeTarget: async (dmzPort) => {
        relay = new TcpRelay({ host: '127.0.0.1', port: dmzPort });
        // What the bridge sends (CONNECT, SUBSCRIBE) waits in the relay.
        relay.hold('up');
        return { host: 'localhost', port: await relay.start() };
      },
    }).then((s) => {
      up = true;
      stack = s.stack;
      return s.stack;
    });
    // Long enough for every service to listen (a few seconds here).
    await new Promise((r) => setTimeout(r, 8_000));
    assert.equal(up, false, 'not up while the bridge has no subscription on the DMZ broker');
    relay?.release('up');
    const s = await starting;
    const d = await RawDevice.connect(s.urls.wss, RawDevice.tlsFor(pki.paths, 'sensor-001'));
    try {
      d.send(SEED_MESSAGES.timeseries);
      const answer = await d.next();
      assert.equal(answer.type, 'ack', JSON.stringify(answer));
    } finally {
      d.close();
    }
  });
});
