import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { eventually } from '../helpers/ws-device.ts';
import { startEmbeddedFixture, type EmbeddedFixture } from '../helpers/embedded.ts';
import { startTestFieldClient } from '../helpers/field.ts';
import { tempDir } from '../helpers/pki.ts';
import { TcpRelay } from '../helpers/tcp-relay.ts';

/**
 * A field device behind a slow uplink, scaled down so that it runs in seconds: the link carries
 * 8 KB/s, the distributor takes a frame up to 6 s after its signing (DISTRIBUTOR_TRANSIT_MAX_S; 900 s
 * by default), and the client keeps what its link carries in 1 s handed out (TIMINGS.fieldSendAheadMs,
 * 5 s by default). A file chunk of 16 KiB is a frame of about 22 KB: 3 s of this link. A window of
 * four of them (FIELD_FILE_WINDOW) handed to the socket at once reached the gateway 8 and 11 s after
 * its signing: refused as stale, sent again after FIELD_COMMIT_TIMEOUT_MS, and again, for ever; a
 * reading queued behind them waited as long, and was refused too.
 */
const DEVICE = 'dev-slow';
const DEVICE2 = 'dev-slow-2';
const DEVICE3 = 'dev-slow-3';
const LINK_BYTES_PER_S = 8_000;

describe('the field client on a slow link', () => {
  let fx: EmbeddedFixture;
  let relay: TcpRelay;
  const tmp = tempDir('slow-link');
  before(async () => {
    fx = await startEmbeddedFixture([DEVICE, DEVICE2, DEVICE3], { DISTRIBUTOR_TRANSIT_MAX_S: '6' });
    relay = new TcpRelay({ host: '127.0.0.1', port: Number(new URL(fx.pipeline.gatewayUrl).port) }, { upBytesPerSecond: LINK_BYTES_PER_S });
    await relay.start();
  });
  after(async () => {
    await relay.close();
    await fx.stop();
    tmp.cleanup();
  });

  it('paces itself by the link: no frame refused as stale, a reading not stuck behind a file', async () => {
    const field = await startTestFieldClient(fx.pki.paths, DEVICE, `wss://localhost:${relay.port}/ws`, fx.logs.logger, { FIELD_FILE_CHUNK_BYTES: String(16 * 1024) }, { sendAheadMs: 1_000 });
    try {
      await eventually(() => field.client.welcome, 15_000, 'welcomed');
      const src = join(tmp.dir, 'survey.bin');
      const content = randomBytes(5 * 16 * 1024 - 1000); // 5 chunks, about 110 KB on the wire: 14 s of this link
      writeFileSync(src, content);
      await field.client.submitFile(src);
      // The first chunks are on their way; then a reading.
      await new Promise((r) => setTimeout(r, 1_000));
      const submitted = Date.now();
      await field.client.submit('timeseries', { level: 42, timestamp: 1760000000000 });
      const reading = () => fx.points({ measurement: 'readings', device: DEVICE }).some((p) => p.fields.level === 42);
      await eventually(() => (reading() ? true : undefined), 20_000, 'the reading stored');
      const waited = Date.now() - submitted;
      // Behind one chunk at most (3 s of this link), and the pipeline's own time: not behind the file's window.
      assert.ok(waited < 6_000, `the reading waited ${waited} ms behind the file`);
      const stored = join(fx.data.files, DEVICE, 'survey.bin');
      await eventually(() => (existsSync(stored) ? true : undefined), 40_000, 'the file stored');
      assert.equal(createHash('sha256').update(readFileSync(stored)).digest('hex'), createHash('sha256').update(content).digest('hex'));
      const stale = fx.points({ measurement: 'security_events', device: DEVICE }).filter((p) => p.tags.reason === 'SECURITY_STALE');
      assert.deepEqual(stale, [], 'no frame reached the gateway past DISTRIBUTOR_TRANSIT_MAX_S');
      assert.ok(field.client.stats.sent <= 6 + 1, `each chunk and the reading sent once: ${field.client.stats.sent} sent`);
      // The rate it paced itself by is the link's, as measured from the gateway's answers.
      const measured = field.client.status().connection.linkBytesPerSecond as number;
      assert.ok(measured > LINK_BYTES_PER_S / 2 && measured < LINK_BYTES_PER_S * 3, `measured ${measured} B/s on a link of ${LINK_BYTES_PER_S}`);
    } finally {
      await field.close();
    }
  });

  it('cuts a file taken once the link is measured in chunks that cross it in seconds, from FIELD_FILE_CHUNK_BYTES as by default', async () => {
    const field = await startTestFieldClient(fx.pki.paths, DEVICE2, `wss://localhost:${relay.port}/ws`, fx.logs.logger, { FIELD_BATCH_MAX: '20' }, { sendAheadMs: 1_000 });
    try {
      await eventually(() => field.client.welcome, 15_000, 'welcomed');
      // More readings than the link carries in a few seconds, in frames of 20: it is measured on them.
      await field.client.submitMany(Array.from({ length: 250 }, (_, i) => ({ dataType: 'timeseries' as const, payload: { n: i, note: 'x'.repeat(60), timestamp: 1760000000000 + i } })));
      await eventually(() => (field.client.unacknowledged === 0 ? true : undefined), 20_000, 'the readings delivered');
      // One 1 MiB chunk (as configured) would be one frame of 66 KB: 8 s of this link, past the
      // transit bound, refused for ever; and a reading queued behind it waited as long.
      const src = join(tmp.dir, 'photo.jpg');
      const content = randomBytes(48 * 1024);
      writeFileSync(src, content);
      await field.client.submitFile(src, { contentType: 'image/jpeg' });
      await new Promise((r) => setTimeout(r, 500));
      const submitted = Date.now();
      await field.client.submit('timeseries', { level: 43, timestamp: 1760000000500 });
      await eventually(() => (fx.points({ measurement: 'readings', device: DEVICE2 }).some((p) => p.fields.level === 43) ? true : undefined), 20_000, 'the reading stored');
      const waited = Date.now() - submitted;
      assert.ok(waited < 5_000, `the reading waited ${waited} ms behind the file`);
      const stored = join(fx.data.files, DEVICE2, 'photo.jpg');
      await eventually(() => (existsSync(stored) ? true : undefined), 30_000, 'the file stored');
      assert.ok(readFileSync(stored).equals(content));
      const stale = fx.points({ measurement: 'security_events', device: DEVICE2 }).filter((p) => p.tags.reason === 'SECURITY_STALE');
      assert.deepEqual(stale, [], 'no frame reached the gateway past DISTRIBUTOR_TRANSIT_MAX_S');
      // The rate it cut the file by is kept for its next start (link-rate.ts), where a file taken
      // before any answer would otherwise be cut at FIELD_FILE_CHUNK_BYTES.
      const kept = JSON.parse(readFileSync(join(field.dataDir, 'link-rate.json'), 'utf8')) as { bytesPerSecond: number };
      assert.ok(kept.bytesPerSecond > LINK_BYTES_PER_S / 2 && kept.bytesPerSecond < LINK_BYTES_PER_S * 3, `kept ${kept.bytesPerSecond} B/s on a link of ${LINK_BYTES_PER_S}`);
    } finally {
      await field.close();
    }
  });

  it('fits a frame of queued messages to what the link carries: a backlog of large events is not one frame refused for ever', async () => {
    const field = await startTestFieldClient(fx.pki.paths, DEVICE3, `wss://localhost:${relay.port}/ws`, fx.logs.logger, {}, { sendAheadMs: 1_000 });
    try {
      // Queued while offline: ten events of 6 KB. In one frame (FIELD_BATCH_MAX, 4 MiB of messages
      // a frame) that is 60 KB, 7.5 s of this link: past the transit bound, the same frame sent
      // again after every commit timeout, for ever.
      await field.client.submitMany(Array.from({ length: 10 }, (_, i) => ({ dataType: 'event' as const, payload: { eventType: 'log_dump', severity: 'info' as const, message: `${i}:${'x'.repeat(6_000)}` } })));
      const started = Date.now();
      await eventually(() => (fx.points({ measurement: 'events', device: DEVICE3 }).length === 10 ? true : undefined), 25_000, 'the ten events stored');
      const stale = fx.points({ measurement: 'security_events', device: DEVICE3 }).filter((p) => p.tags.reason === 'SECURITY_STALE');
      assert.deepEqual(stale, [], 'no frame reached the gateway past DISTRIBUTOR_TRANSIT_MAX_S');
      assert.ok(Date.now() - started < 20_000);
    } finally {
      await field.close();
    }
  });
});
