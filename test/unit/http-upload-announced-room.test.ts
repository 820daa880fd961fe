import assert from 'node:assert/strict';
import { request } from 'node:http';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { httpInput } from '../../field-client/src/inputs/http-input.ts';
import { FILE_TRANSFER } from '../../field-client/src/files/transfers.ts';
import { localDevice } from '../helpers/local-device.ts';
import { tempDir } from '../helpers/pki.ts';
import { eventually } from '../helpers/ws-device.ts';

const MiB = 1024 * 1024;

/**
 * Under FIELD_QUEUE_FULL_POLICY=drop-oldest the HTTP input held room for an upload's announced
 * length (Content-Length) before a byte of it came, dropping the oldest readings for it: a local
 * program announcing a large file and sending nothing (cut off, or hostile) had the device throw
 * away data for bytes that never arrived. Room is now made as the bytes arrive.
 */
describe('an HTTP upload under drop-oldest', () => {
  const tmp = tempDir('http-upload-announced');
  after(() => tmp.cleanup());

  it('drops nothing for a length it announces and never sends, nor for one that can never fit; a whole one still takes the room of the oldest readings', async () => {
    const d = await localDevice(join(tmp.dir, 'device'), 2 * MiB, { mode: 'always' }, 'drop-oldest');
    const http = httpInput(d.client, '127.0.0.1', 0, d.dir, d.logs.logger);
    await http.start();
    try {
      // Readings until less than 300 KiB is left within FIELD_QUEUE_MAX_BYTES (2 MiB), none dropped yet.
      const reading = { note: 'x'.repeat(8 * 1024) };
      for (let i = 0; d.queue.bytesOnDisk < 2 * MiB - 300 * 1024; i++) await d.client.submitMany([{ dataType: 'timeseries', payload: { ...reading, i } }]);
      assert.equal(d.queue.stats.dropped, 0);
      const depth = d.client.unacknowledged;

      // 1 MiB announced, 10 KiB sent, then the connection cut.
      await new Promise<void>((resolve) => {
        const req = request({ host: '127.0.0.1', port: http.port, method: 'POST', path: '/v1/files?filename=cut.bin', headers: { 'content-length': String(MiB) } });
        req.on('error', () => resolve());
        req.on('response', () => resolve());
        req.write(Buffer.alloc(10 * 1024, 1), () => setTimeout(() => req.destroy(), 300));
      });
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(d.queue.stats.dropped, 0, 'nothing dropped for bytes that never came');
      assert.equal(d.client.unacknowledged, depth, 'every reading still held');

      // More than FIELD_QUEUE_MAX_BYTES announced: it can never fit, refused at once, nothing dropped
      // (the queue dropped every segment it could, then refused it all the same).
      const tooLong = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = request({ host: '127.0.0.1', port: http.port, method: 'POST', path: '/v1/files?filename=huge.bin', headers: { 'content-length': String(2 * MiB + 1) } });
        req.on('error', reject);
        req.on('response', (res) => {
          let body = '';
          res.on('data', (c: Buffer) => (body += c.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        });
        req.write(Buffer.alloc(1024, 2));
      });
      assert.equal(tooLong.status, 507, tooLong.body);
      assert.match(tooLong.body, /FIELD_QUEUE_FULL/);
      assert.equal(d.queue.stats.dropped, 0, 'nothing dropped for a file that can never fit');
      assert.equal(d.client.unacknowledged, depth);

      // A whole 1 MiB upload: room is made as it arrives, from the oldest readings.
      const res = await fetch(`http://127.0.0.1:${http.port}/v1/files?filename=whole.bin`, { method: 'POST', body: Buffer.alloc(MiB, 7) });
      assert.equal(res.status, 202, await res.text());
      await eventually(() => (d.queue.find((m) => m.dataType === FILE_TRANSFER).length === 1 ? true : undefined), 10_000, 'the file queued');
      assert.ok(d.queue.stats.dropped > 0, 'the oldest readings dropped for it');
      assert.ok(d.queue.bytesOnDisk + d.outbox.bytes() <= 2 * MiB, 'within the bound');
    } finally {
      await http.close();
      await d.close();
    }
  });
});
