import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { SEED_MESSAGES } from '../fixtures/seed-messages.ts';
import { chattr, chattrReason } from '../helpers/chattr.ts';
import { startEmbeddedFixture, type EmbeddedFixture } from '../helpers/embedded.ts';
import { readiness, untilReadiness } from '../helpers/readiness.ts';
import { eventually, RawDevice } from '../helpers/ws-device.ts';

const DEVICE = 'camera-001';
const FILE = 'image_20240101_120000.jpg';

/**
 * The distributor's /readyz covers file storage (check `files`), as it covers the broker and the
 * database: a folder it cannot write in, and a write the disk refused, each make it not ready. The
 * immutable attribute (chattr +i) refuses root too, as a read-only mount would.
 */
describe('the distributor /readyz: file storage', { skip: chattrReason('i') }, () => {
  let fx: EmbeddedFixture;
  let base: string;
  before(async () => {
    fx = await startEmbeddedFixture([DEVICE]);
    const served = await fx.pipeline.distributor.metricsServer;
    assert.ok(served);
    base = served.url;
  });
  after(async () => {
    for (const dir of [fx.data.files, join(fx.data.files, DEVICE)]) {
      try {
        chattr(dir, '-i');
      } catch {
        // not made, or not set
      }
    }
    await fx.stop();
  });

  it('is not ready while the storage folder cannot be written in, and ready again once it can', async () => {
    await untilReadiness(base, 200, [], 'ready at start');
    mkdirSync(fx.data.files, { recursive: true });
    chattr(fx.data.files, '+i');
    try {
      await untilReadiness(base, 503, ['files'], 'not ready: the storage folder is immutable');
    } finally {
      chattr(fx.data.files, '-i');
    }
    await untilReadiness(base, 200, [], 'ready again');
  });

  it('is not ready after a file write the disk refused, keeps the file unacknowledged, and stores it once when the disk takes it', async () => {
    const deviceDir = join(fx.data.files, DEVICE);
    mkdirSync(deviceDir, { recursive: true });
    chattr(deviceDir, '+i');
    let released = false;
    try {
      // The storage folder itself can be written in: only the write finds the fault.
      assert.deepEqual(await readiness(base), { status: 200, failing: [] });
      const d = await RawDevice.connect(fx.pipeline.gatewayUrl, RawDevice.tlsFor(fx.pki.paths, DEVICE));
      d.send(SEED_MESSAGES.file);
      assert.equal((await d.next()).type, 'ack');
      d.close();
      await untilReadiness(base, 503, ['files'], 'not ready: the write was refused');
      assert.ok(fx.logs.codes().includes('DISTRIBUTOR_WRITE_FAILED'), 'the refused write is logged with its code');
      assert.deepEqual(fx.points({ measurement: 'files', device: DEVICE }), [], 'no record of a file not stored');
      chattr(deviceDir, '-i');
      released = true;
      await untilReadiness(base, 200, [], 'ready once a write succeeded');
      await eventually(() => (fx.points({ measurement: 'files', device: DEVICE }).length === 1 ? true : undefined), 10_000, 'the file recorded');
      assert.deepEqual(readdirSync(deviceDir), [FILE], 'stored once, no temporary file left');
      assert.deepEqual(readFileSync(join(deviceDir, FILE)), Buffer.from('base64-encoded-content', 'base64'));
    } finally {
      if (!released) chattr(deviceDir, '-i');
    }
  });
});
