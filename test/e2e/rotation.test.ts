import assert from 'node:assert/strict';
import { connect } from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { eventually } from '../helpers/ws-device.ts';
import { startEmbeddedFixture, type EmbeddedFixture } from '../helpers/embedded.ts';
import { startTestFieldClient } from '../helpers/field.ts';
import { tempDir } from '../helpers/pki.ts';
import { issueDeviceCertificate } from '../../pki/device-bundle.ts';
import { readFileSync } from 'node:fs';

describe('certificate rotation and slow clients', () => {
  let fx: EmbeddedFixture;
  const data = tempDir('rotate');
  before(async () => {
    fx = await startEmbeddedFixture(['rot-1'], { DISTRIBUTOR_REQUIRE_SIGNATURES: 'true' });
  });
  after(async () => {
    await fx.stop();
    data.cleanup();
  });

  it('a device switches to a renewed certificate without losing what it had queued', async () => {
    const before = readFileSync(fx.pki.paths.device('rot-1').cert, 'utf8');
    // Offline: readings wait in the queue.
    let field = await startTestFieldClient(fx.pki.paths, 'rot-1', 'wss://localhost:1/ws', fx.logs.logger, { FIELD_DATA_DIR: data.dir });
    await field.client.submitMany(Array.from({ length: 100 }, (_, i) => ({ dataType: 'timeseries' as const, payload: { q: i, timestamp: 1760000000000 + i } })));
    await field.close();
    issueDeviceCertificate(fx.pki.dir, 'rot-1', { renew: true });
    assert.notEqual(readFileSync(fx.pki.paths.device('rot-1').cert, 'utf8'), before);
    // Back online with the new certificate, the same queue and the same signing key.
    field = await startTestFieldClient(fx.pki.paths, 'rot-1', fx.pipeline.gatewayUrl, fx.logs.logger, { FIELD_DATA_DIR: data.dir });
    try {
      await eventually(() => (fx.points({ measurement: 'readings', device: 'rot-1' }).length === 100 ? true : undefined));
      assert.equal(fx.points({ measurement: 'security_events' }).length, 0);
    } finally {
      await field.close();
    }
  });

  it('watches certificate expiry: a warning in the log ahead of time, and days left as a metric', async () => {
    issueDeviceCertificate(fx.pki.dir, 'rot-1', { renew: true, validityDays: 10 });
    const field = await startTestFieldClient(fx.pki.paths, 'rot-1', fx.pipeline.gatewayUrl, fx.logs.logger);
    try {
      await eventually(() => (fx.logs.lines.some((l) => l.code === 'CERT_EXPIRING_SOON' && l.deviceId === 'rot-1') ? true : undefined));
      // the newest presence point of the device carries the new certificate's days left
      await eventually(() => fx.points({ measurement: 'device_status', device: 'rot-1' }).some((p) => p.fields.cert_days_left === 9 || p.fields.cert_days_left === 10) ? true : undefined);
    } finally {
      await field.close();
    }
  });

  it('drops a client that stalls in its request headers (slowloris)', async () => {
    const port = Number(new URL(fx.pipeline.gatewayUrl).port);
    const d = fx.pki.paths.device('rot-1');
    const started = Date.now();
    const closedAfter = await new Promise<number>((resolve, reject) => {
      const s = connect({ host: '127.0.0.1', port, servername: 'localhost', ca: readFileSync(fx.pki.paths.publicCa), cert: readFileSync(d.cert), key: readFileSync(d.key) }, () => {
        s.write('GET /ws HTTP/1.1\r\nHost: localhost\r\n'); // ... and never the rest
      });
      s.on('error', () => undefined);
      s.on('close', () => resolve(Date.now() - started));
      setTimeout(() => reject(new Error('still open after 30 s')), 30_000).unref();
    });
    assert.ok(closedAfter < 30_000, `closed after ${closedAfter} ms`);
  });
});
