// First: modules evaluated after it have their named closures counted (among them those the
// helpers below load, e.g. shared/contract/primitives.ts, called per reading).
import { watched } from '../helpers/name-watch.ts';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

/**
 * The services run their TypeScript through tsx, which compiles with esbuild's keepNames: a named
 * closure (`const f = () => …`) made while a message is handled costs a call that redefines its
 * `name`, and one made per reading was a tenth of the gateway's CPU under load
 * (docs/performance-history.md). The `name`s defined while a frame, then a gateway's envelope, is
 * handled are counted (test/helpers/name-watch.ts): none may come per reading.
 */
const READINGS = 100;

describe('no named closure made per reading on the hot path (tsx keepNames)', () => {
  const work = { dir: mkdtempSync(join(tmpdir(), 'fieldstream-hot-path-closures-')) };
  after(() => rmSync(work.dir, { recursive: true, force: true }));
  let modules: {
    parseUplinkFrame: typeof import('../../shared/contract/uplink.ts').parseUplinkFrame;
    signedBatchFrame: typeof import('../../shared/contract/uplink-frame.ts').signedBatchFrame;
  };
  before(async () => {
    modules = {
      parseUplinkFrame: (await import('../../shared/contract/uplink.ts')).parseUplinkFrame,
      signedBatchFrame: (await import('../../shared/contract/uplink-frame.ts')).signedBatchFrame,
    };
  });
  const key = randomBytes(32);
  const items = () =>
    Array.from({ length: READINGS }, (_, i) => ({ messageId: `m${i}`, seq: i + 1, dataType: 'timeseries', payloadJson: JSON.stringify({ temperature: 20 + i / 100, humidity: 50, timestamp: 1_700_000_000_000 + i }) }));
  /** `name`s defined by the second call of `fn` (the first warms whatever is made once). */
  async function namesOf(fn: () => unknown): Promise<number> {
    await fn();
    watched.names = 0;
    await fn();
    return watched.names;
  }

  it('counts what it is meant to: a named closure made per call (the control)', async () => {
    const { withNamedClosure } = await import('../fixtures/named-closure.ts');
    assert.equal(await namesOf(() => withNamedClosure(2)), 1);
  });

  it('the gateway: a frame of readings parsed and checked', async () => {
    const frame = modules.signedBatchFrame(key, { deviceId: 'dev-1', epoch: 'e1', ts: Date.now() }, items());
    assert.equal(await namesOf(() => modules.parseUplinkFrame(frame)), 0);
  });

  it("the distributor: a gateway's envelope of devices' sections checked, verified and turned into line protocol", async () => {
    const { MessageHandler } = await import('../../internal-network/distributor/message-handler.ts');
    const { MessageVerifier } = await import('../../internal-network/distributor/security/verifier.ts');
    const { ReplayWindows } = await import('../../internal-network/distributor/security/replay-window.ts');
    const { DeviceKeyRegistry } = await import('../../internal-network/shared/device-keys.ts');
    const { FileStore } = await import('../../internal-network/distributor/file-store.ts');
    const { toLineProtocol } = await import('../../internal-network/distributor/sinks/line-protocol.ts');
    const { gatewayUplinkTopic } = await import('../../shared/contract/topics.ts');
    const { createLogger } = await import('../../shared/logger.ts');
    const keys = join(work.dir, 'keys');
    mkdirSync(keys, { recursive: true });
    const devices = Array.from({ length: READINGS }, (_, i) => `dev-${i}`);
    for (const d of devices) writeFileSync(join(keys, `${d}.key`), key.toString('hex'));
    const verifier = new MessageVerifier(new DeviceKeyRegistry(keys), new ReplayWindows(join(work.dir, 'replay')), { requireSignatures: true, freshnessMs: 30_000, maxDelayMs: 86_400_000 }, createLogger('test', 'silent'));
    let lines = 0;
    const sink = { description: 'line protocol', write: async (points: readonly never[]) => void (lines += toLineProtocol(points).length), close: async () => {} };
    const handler = new MessageHandler(sink, new FileStore(join(work.dir, 'files')), verifier);
    let seq = 0;
    /** One reading per device, each signed alone by its device (the fleet's shape), fresh sequence numbers each time. */
    const envelope = () => {
      seq++;
      const sections = devices.map((deviceId) => {
        const frame = JSON.parse(modules.signedBatchFrame(key, { deviceId, epoch: 'e1', ts: Date.now() }, [{ messageId: `m${seq}`, seq, dataType: 'timeseries', payloadJson: JSON.stringify({ temperature: 21, timestamp: 1_700_000_000_000 + seq }) }])) as {
          batch: Array<{ messageId: string; seq: number; payload: unknown; auth: unknown }>;
        };
        return { deviceId, messages: frame.batch.map((m) => ({ messageId: m.messageId, seq: m.seq, payload: m.payload, auth: m.auth, receivedAt: Date.now() })) };
      });
      return Buffer.from(JSON.stringify({ v: 1, gatewayId: 'gw-1', receivedAt: Date.now(), dataType: 'timeseries', devices: sections }));
    };
    const first = envelope();
    const second = envelope();
    let round = 0;
    const handled = await namesOf(async () => {
      const done = await handler.handle(gatewayUplinkTopic('gw-1'), round++ === 0 ? first : second);
      assert.equal(done.points, READINGS, 'every reading verified and written');
    });
    assert.ok(lines > 0);
    assert.ok(handled < READINGS / 10, `${handled} names defined for ${READINGS} readings`);
  });
});
