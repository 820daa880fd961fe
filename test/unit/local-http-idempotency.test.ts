import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { FILE_TRANSFER } from '../../field-client/src/files/transfers.ts';
import { httpInput } from '../../field-client/src/inputs/http-input.ts';
import { KeyedRequests } from '../../field-client/src/inputs/http-resends.ts';
import { isFieldStreamError } from '../../shared/errors.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import { localDevice, slowQueue } from '../helpers/local-device.ts';
import { tempDir } from '../helpers/pki.ts';

/**
 * The local HTTP input's Idempotency-Key (draft-ietf-httpapi-idempotency-key-header): a producer
 * that did not see its 202 sends the request again with the same key, and is answered as the first
 * was, nothing queued again. A real queue, outbox and HTTP server; no gateway.
 */
describe('local HTTP input: requests sent again with their Idempotency-Key', () => {
  const tmp = tempDir('local-http-idempotency');
  after(() => tmp.cleanup());

  async function withInput(name: string) {
    const d = await localDevice(join(tmp.dir, name));
    const input = httpInput(d.client, '127.0.0.1', 0, d.dir, d.logs.logger);
    await input.start();
    const base = `http://127.0.0.1:${input.port as number}`;
    const post = async (path: string, body: string, headers: Record<string, string> = {}) => {
      const res = await fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });
      return { status: res.status, body: (await res.json()) as { code?: string; messageIds?: string[]; accepted?: number } };
    };
    const files = () => d.queue.find((m) => m.dataType === FILE_TRANSFER).length;
    const end = async () => {
      await input.close();
      await d.close();
    };
    return { d, post, files, end };
  }

  it('a reading sent again with its key is answered as it was and queued once; without a key, twice', async () => {
    const { d, post, end } = await withInput('readings');
    try {
      // No timestamp: each copy queued would be a point of its own, stamped as it was queued.
      const reading = '{"temperature": 21.5}';
      const first = await post('/v1/timeseries', reading, { 'idempotency-key': '"8e0f6c1a-reading-1"' });
      assert.equal(first.status, 202, JSON.stringify(first.body));
      const again = await post('/v1/timeseries', reading, { 'idempotency-key': '"8e0f6c1a-reading-1"' });
      assert.equal(again.status, 202, JSON.stringify(again.body));
      assert.deepEqual(again.body, first.body, 'the same answer: the same message ids');
      // The bare form many clients send is the same key.
      const bare = await post('/v1/timeseries', reading, { 'idempotency-key': '8e0f6c1a-reading-1' });
      assert.deepEqual(bare.body, first.body);
      assert.equal(d.queue.depth, 1, 'queued once');
      assert.ok(d.logs.lines.some((l) => /answered as it was/.test(String(l.msg))), 'the retry is logged');
      await post('/v1/timeseries', reading);
      await post('/v1/timeseries', reading);
      assert.equal(d.queue.depth, 3, 'without a key every request is a new one');
    } finally {
      await end();
    }
  });

  it('the key on another request (another body, another endpoint) is refused, 422 FIELD_INPUT_KEY_REUSED, nothing taken', async () => {
    const { d, post, end } = await withInput('reused');
    try {
      const key = { 'idempotency-key': '"k-reused"' };
      assert.equal((await post('/v1/events', '{"eventType": "door_open"}', key)).status, 202);
      for (const [path, body] of [['/v1/events', '{"eventType": "door_closed"}'], ['/v1/timeseries', '{"eventType": 1}']] as const) {
        const r = await post(path, body, key);
        assert.equal(r.status, 422, `${path} ${body}: ${JSON.stringify(r.body)}`);
        assert.equal(r.body.code, 'FIELD_INPUT_KEY_REUSED');
      }
      assert.equal(d.queue.depth, 1);
      // A malformed key is the producer's error, nothing taken.
      for (const bad of ['two words', '"unterminated', 'a,b']) {
        const r = await post('/v1/events', '{"eventType": "x"}', { 'idempotency-key': bad });
        assert.equal(r.status, 400, bad);
        assert.equal(r.body.code, 'FIELD_INPUT_INVALID', bad);
      }
      assert.equal(d.queue.depth, 1);
    } finally {
      await end();
    }
  });

  it('a retry while the first is being queued is refused (409, FIELD_INPUT_KEY_IN_PROGRESS) and answered as the first once it is in; a refused request frees its key', async () => {
    const { d, post, end } = await withInput('in-progress');
    slowQueue(d.client, 500); // an fsync on an SD card
    try {
      const key = { 'idempotency-key': '"k-slow"' };
      const first = post('/v1/timeseries', '{"rain_mm": 0.2}', key);
      await new Promise((r) => setTimeout(r, 150));
      const during = await post('/v1/timeseries', '{"rain_mm": 0.2}', key);
      assert.equal(during.status, 409, JSON.stringify(during.body));
      assert.equal(during.body.code, 'FIELD_INPUT_KEY_IN_PROGRESS');
      const answered = await first;
      assert.equal(answered.status, 202);
      assert.deepEqual(await post('/v1/timeseries', '{"rain_mm": 0.2}', key), answered);
      assert.equal(d.queue.depth, 1);

      // Refused (not a reading): nothing kept for the key, so the corrected request is taken under it.
      const refused = await post('/v1/timeseries', '[]', { 'idempotency-key': '"k-fixed"' });
      assert.equal(refused.status, 400);
      const fixed = await post('/v1/timeseries', '{"rain_mm": 0.4}', { 'idempotency-key': '"k-fixed"' });
      assert.equal(fixed.status, 202, JSON.stringify(fixed.body));
      assert.equal(d.queue.depth, 2);

      // Refused as busy (the bodies read at once are bounded): its key is not held either.
      const limits = LIMITS as unknown as Record<string, number>;
      const held = limits.localInputJsonHeldMaxBytes as number;
      limits.localInputJsonHeldMaxBytes = 8;
      try {
        const busy = await post('/v1/timeseries', '{"rain_mm": 0.6}', { 'idempotency-key': '"k-busy"' });
        assert.equal(busy.body.code, 'FIELD_INPUT_BUSY');
      } finally {
        limits.localInputJsonHeldMaxBytes = held;
      }
      assert.equal((await post('/v1/timeseries', '{"rain_mm": 0.6}', { 'idempotency-key': '"k-busy"' })).status, 202);
    } finally {
      await end();
    }
  });

  it('a file sent again with its key is queued once, compared by its bytes', async () => {
    const { post, files, end } = await withInput('files');
    try {
      const key = { 'idempotency-key': '"k-file"', 'content-type': 'text/plain' };
      const first = await post('/v1/files?filename=log.txt', 'line 1\nline 2\n', key);
      assert.equal(first.status, 202, JSON.stringify(first.body));
      const again = await post('/v1/files?filename=log.txt', 'line 1\nline 2\n', key);
      assert.deepEqual(again, first);
      assert.equal(files(), 1, 'one file queued');
      const other = await post('/v1/files?filename=log.txt', 'line 1\nline 2\nline 3\n', key);
      assert.equal(other.status, 422, JSON.stringify(other.body));
      const renamed = await post('/v1/files?filename=log2.txt', 'line 1\nline 2\n', key);
      assert.equal(renamed.status, 422, JSON.stringify(renamed.body));
      assert.equal(files(), 1);
    } finally {
      await end();
    }
  });

  it("a retry after the device's clock was stepped forward (NTP, a clock without a battery) is still answered as it was, queued once", async () => {
    // The wall clock as the process reads it, stepped by `offset` (set before the input reads it).
    const wallClock = Date.now;
    let offset = 0;
    Date.now = () => wallClock() + offset;
    const { d, post, end } = await withInput('clock-step');
    try {
      const reading = '{"temperature": 19.5}';
      const key = { 'idempotency-key': '"3b7d-clock-step"' };
      const first = await post('/v1/timeseries', reading, key);
      assert.equal(first.status, 202, JSON.stringify(first.body));
      // Booted at the date its clock was left at, then set right: two days on in an instant.
      offset = 2 * TIMINGS.localInputKeyKeptMs;
      const again = await post('/v1/timeseries', reading, key);
      assert.equal(again.status, 202, JSON.stringify(again.body));
      assert.deepEqual(again.body, first.body, 'answered as it was: the same message ids');
      assert.equal(d.queue.depth, 1, 'queued once');
    } finally {
      Date.now = wallClock;
      await end();
    }
  });

  it('answers are kept within their bounds: LIMITS.localInputKeysKeptMax, LIMITS.localInputKeptAnswersMaxBytes, TIMINGS.localInputKeyKeptMs', () => {
    const limits = LIMITS as unknown as Record<string, number>;
    const saved = { keys: limits.localInputKeysKeptMax as number, bytes: limits.localInputKeptAnswersMaxBytes as number };
    limits.localInputKeysKeptMax = 2;
    limits.localInputKeptAnswersMaxBytes = 1_000;
    try {
      let now = 0;
      const keyed = new KeyedRequests(() => now);
      const answer = (text: string) => ({ fingerprint: 'f', status: 202, text });
      for (const key of ['a', 'b', 'c']) {
        assert.equal(keyed.begin(key), undefined);
        keyed.accepted(key, answer(`{"${key}":1}`));
      }
      assert.equal(keyed.size, 2);
      assert.equal(keyed.begin('a'), undefined, 'the oldest forgotten: taken as new');
      keyed.released('a');
      assert.equal(keyed.begin('c')?.text, '{"c":1}');
      // An answer larger than the bound alone is not kept; a larger one makes room.
      assert.equal(keyed.begin('huge'), undefined);
      keyed.accepted('huge', answer('x'.repeat(2_000)));
      assert.equal(keyed.begin('huge'), undefined);
      keyed.released('huge');
      assert.equal(keyed.begin('big'), undefined);
      keyed.accepted('big', answer('x'.repeat(990)));
      assert.equal(keyed.size, 1, 'the others forgotten for it');
      // Forgotten once TIMINGS.localInputKeyKeptMs passed.
      now += TIMINGS.localInputKeyKeptMs + 1;
      assert.equal(keyed.begin('big'), undefined);
      assert.equal(keyed.size, 0);
      assert.throws(() => keyed.begin('big'), (err: unknown) => isFieldStreamError(err) && err.code === 'FIELD_INPUT_KEY_IN_PROGRESS');
    } finally {
      limits.localInputKeysKeptMax = saved.keys;
      limits.localInputKeptAnswersMaxBytes = saved.bytes;
    }
  });
});
