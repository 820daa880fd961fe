import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { appendFileSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { recoverOutbox } from '../../field-client/src/files/outbox-recovery.ts';
import { httpInput } from '../../field-client/src/inputs/http-input.ts';
import { KEYS_FILE } from '../../field-client/src/inputs/http-keys-file.ts';
import { isolatedFieldClient } from '../helpers/field.ts';
import { localDevice } from '../helpers/local-device.ts';
import { tempDir } from '../helpers/pki.ts';
import { until } from '../helpers/processes.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';

const DEVICE = 'dev-keys-restart';

/**
 * The local HTTP input's Idempotency-Key across a SIGKILL of the field client: the producer's retry
 * after the restart (the very moment producers retry) is answered as the request was, the same
 * message ids, and queued once. The field client runs as its container runs it, its own process,
 * started again on the same data folder; nothing listens at its gateway's address, so what it
 * queued stays in its queue (its depth in /status). Kept in memory only, the answers went with the
 * process and the retry was a second row.
 */
describe('local HTTP input: Idempotency-Key answers outlive a SIGKILL of the field client', () => {
  const f = isolatedFieldClient('local-http-idempotency-restart', DEVICE);

  const post = async (path: string, body: string, key?: string) => {
    const res = await fetch(`http://127.0.0.1:${f.httpPort}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(key ? { 'idempotency-key': `"${key}"` } : {}) },
      body,
    });
    return { status: res.status, body: (await res.json()) as { code?: string; messageIds?: string[]; accepted?: number } };
  };
  const depth = async () => ((await (await fetch(`http://127.0.0.1:${f.httpPort}/status`)).json()) as { queue: { depth: number } }).queue.depth;

  it('a request sent again after a SIGKILL and a restart is answered as it was (the same message ids), and queued once', async () => {
    // No timestamp: queued again, the copy would be a point of its own, stamped as it was queued.
    const readings = '[{"temperature": 21.5}, {"humidity": 40}]';
    const first = await post('/v1/timeseries', readings, 'c1f4e3a0-restart-1');
    assert.equal(first.status, 202, JSON.stringify(first.body));
    assert.equal(first.body.messageIds?.length, 2);
    const event = await post('/v1/events', '{"eventType": "door_open"}', 'c1f4e3a0-restart-2');
    assert.equal(event.status, 202, JSON.stringify(event.body));
    assert.equal(await depth(), 3);

    await f.client.kill();
    await f.client.start();

    const again = await post('/v1/timeseries', readings, 'c1f4e3a0-restart-1');
    assert.equal(again.status, 202, JSON.stringify(again.body));
    assert.deepEqual(again.body, first.body, 'answered as it was: the same message ids');
    assert.deepEqual(await post('/v1/events', '{"eventType": "door_open"}', 'c1f4e3a0-restart-2'), event);
    // The key on another request is still refused after the restart.
    const reused = await post('/v1/events', '{"eventType": "door_closed"}', 'c1f4e3a0-restart-2');
    assert.equal(reused.status, 422, JSON.stringify(reused.body));
    assert.equal(reused.body.code, 'FIELD_INPUT_KEY_REUSED');
    assert.equal(await depth(), 3, 'queued once');
  });

  it('a damaged record file at the start: its damaged lines skipped and counted, the others kept, the client up', async () => {
    const before = await post('/v1/events', '{"eventType": "valve_open"}', 'c1f4e3a0-restart-3');
    assert.equal(before.status, 202, JSON.stringify(before.body));
    const queued = await depth();
    await f.client.kill();
    const file = join(f.dataDir, KEYS_FILE);
    // A torn line (a power cut in the middle of an append), a line of the wrong shape, bytes that are no text.
    appendFileSync(file, '{"key":"torn","fingerprint":"x","status":202,"te');
    appendFileSync(file, '\n{"key":"c1f4e3a0-restart-3","fingerprint":7}\n');
    appendFileSync(file, Buffer.from([0xff, 0xfe, 0x00, 0x0a]));
    await f.client.start();

    assert.deepEqual(await post('/v1/events', '{"eventType": "valve_open"}', 'c1f4e3a0-restart-3'), before, 'the line before the damage is read');
    assert.deepEqual((await post('/v1/timeseries', '[{"temperature": 21.5}, {"humidity": 40}]', 'c1f4e3a0-restart-1')).status, 202);
    assert.equal(await depth(), queued, 'nothing queued again');
    const log = readFileSync(join(f.work.dir, 'field-client.log'), 'utf8');
    const said = log.split('\n').filter((l) => l.includes('FIELD_INPUT_KEYS_DAMAGED'));
    assert.equal(said.length, 1, 'said once, at the start');
    assert.equal((JSON.parse(said[0] as string) as { lines: number }).lines, 3);
    // Taken anew after the damage, and remembered.
    const fresh = await post('/v1/events', '{"eventType": "valve_closed"}', 'c1f4e3a0-restart-4');
    assert.equal(fresh.status, 202);
    await f.client.kill();
    await f.client.start();
    assert.deepEqual(await post('/v1/events', '{"eventType": "valve_closed"}', 'c1f4e3a0-restart-4'), fresh);
    assert.equal(await depth(), queued + 1);
  });
});

/**
 * The instant between the queue's write and the answer's line: readings numbered and written, the
 * kill before their answer is kept. In this process, so that the kill lands there every time: the
 * first field client's queue is never told synced (its answer waits for it), and is left as a kill
 * leaves it, unclosed; a second opens the same folder. Kept only with the answer, the retry was
 * queued a second time.
 */
describe('local HTTP input: a request whose answer a kill cut off after the queue wrote it', () => {
  const tmp = tempDir('local-http-idempotency-window');
  after(() => tmp.cleanup());

  async function start(dir: string) {
    const d = await localDevice(dir);
    const input = httpInput(d.client, '127.0.0.1', 0, d.dir, d.logs.logger);
    await input.start();
    const post = (body: string, key: string, signal?: AbortSignal) =>
      fetch(`http://127.0.0.1:${input.port as number}/v1/timeseries`, { method: 'POST', headers: { 'content-type': 'application/json', 'idempotency-key': `"${key}"` }, body, ...(signal ? { signal } : {}) });
    return { d, input, post };
  }

  it('is answered at the next start with the ids the queue gave it, and queued once', async () => {
    const dir = join(tmp.dir, 'written');
    const a = await start(dir);
    const stuck = new Promise<void>(() => undefined);
    a.d.queue.durable = () => stuck;
    const cut = new AbortController();
    const reading = '[{"temperature": 18.5}, {"temperature": 18.6}, {"temperature": 18.7}]';
    const first = a.post(reading, 'window-1', cut.signal).catch(() => undefined);
    await until('the readings written', () => a.d.queue.find(() => true).length === 3);
    const ids = a.d.queue.find(() => true).map((m) => m.messageId);
    cut.abort();
    await first;
    // Killed here: the queue unclosed, the request never answered (its input left as it is).
    a.d.client.stop();

    const b = await start(dir);
    try {
      const again = await b.post(reading, 'window-1');
      assert.equal(again.status, 202);
      assert.deepEqual(await again.json(), { accepted: 3, messageIds: ids }, 'answered with the ids the queue gave it');
      assert.equal(b.d.queue.depth, 3, 'queued once');
      assert.equal((await b.post('[{"temperature": 1}]', 'window-1')).status, 422, 'the key names that request');
    } finally {
      await b.input.close();
      await b.d.close();
    }
  });

  it('a request whose numbers never reached the disk is taken anew at the next start; one released stays released', async () => {
    const dir = join(tmp.dir, 'unwritten');
    const a = await start(dir);
    const taken = await a.post('{"temperature": 3}', 'window-2');
    assert.equal(taken.status, 202);
    const epoch = a.d.queue.epoch;
    const next = a.d.queue.nextNumber;
    await a.input.close();
    await a.d.close();
    // What a kill leaves when it comes after the line and before the queue wrote a byte: numbers
    // the queue never had. And one the queue refused, released.
    const when = { wall: Date.now(), mono: 0 };
    appendFileSync(join(dir, KEYS_FILE), `${JSON.stringify({ key: 'window-3', fingerprint: 'f', taking: { epoch, first: next, count: 1 }, ...when })}\n`);
    appendFileSync(join(dir, KEYS_FILE), `${JSON.stringify({ key: 'window-4', fingerprint: 'f', taking: { epoch, first: next - 1, count: 1 }, ...when })}\n`);
    appendFileSync(join(dir, KEYS_FILE), `${JSON.stringify({ key: 'window-4', released: true })}\n`);

    const b = await start(dir);
    try {
      for (const key of ['window-3', 'window-4']) {
        const r = await b.post('{"temperature": 4}', key);
        assert.equal(r.status, 202, `${key}: ${await r.clone().text()}`);
        assert.notDeepEqual((await r.json()) as unknown, { accepted: 1, messageIds: [`${epoch}.${next - 1}`] });
      }
      assert.equal(b.d.queue.depth, 3, 'each taken anew, once');
      assert.ok(!b.d.logs.lines.some((l) => l.code === 'FIELD_INPUT_KEYS_DAMAGED'));
    } finally {
      await b.input.close();
      await b.d.close();
    }
  });

  it('the file is rewritten within its bounds; across a reboot an answer is aged by the wall clock, never below 0', async () => {
    const dir = join(tmp.dir, 'bounds');
    const limits = LIMITS as unknown as Record<string, number>;
    const saved = { keys: limits.localInputKeysKeptMax as number, slack: limits.localInputKeysFileSlackBytes as number };
    limits.localInputKeysKeptMax = 3;
    limits.localInputKeysFileSlackBytes = 0;
    const lines = () => readFileSync(join(dir, KEYS_FILE), 'utf8').split('\n').filter((l) => l.length > 0).length;
    try {
      const a = await start(dir);
      for (let i = 0; i < 40; i++) assert.equal((await a.post(`{"temperature": ${i}}`, `bounds-${i}`)).status, 202);
      // Each request a `taking` line and its answer's: without rewrites, 80.
      assert.ok(lines() <= 2 * 3 + 2, `${lines()} lines`);
      await a.input.close();
      await a.d.close();
    } finally {
      limits.localInputKeysKeptMax = saved.keys;
      limits.localInputKeysFileSlackBytes = saved.slack;
    }
    // Lines of another boot: one written two days ago by the wall clock, forgotten; one written
    // "tomorrow" (the clock now reads behind: no battery, NTP not yet answered), kept.
    const line = (key: string, wall: number) => `${JSON.stringify({ key, fingerprint: 'f', status: 202, text: '{"accepted":0,"messageIds":[]}', wall, boot: 'another-boot', mono: 5 })}\n`;
    appendFileSync(join(dir, KEYS_FILE), line('boot-old', Date.now() - 2 * TIMINGS.localInputKeyKeptMs) + line('boot-ahead', Date.now() + TIMINGS.localInputKeyKeptMs));
    const b = await start(dir);
    try {
      assert.equal((await b.post('{"temperature": 1}', 'boot-old')).status, 202, 'forgotten: taken as new');
      assert.equal((await b.post('{"temperature": 1}', 'boot-ahead')).status, 422, 'kept: another request under its key');
      assert.equal((await b.post('{"temperature": 39}', 'bounds-39')).status, 202);
      assert.equal(b.d.queue.depth, 41, 'the last answer kept: nothing queued again for it');
    } finally {
      await b.input.close();
      await b.d.close();
    }
  });
});

/**
 * A file's upload with an Idempotency-Key, the field client killed (SIGKILL, its own process) once
 * the file is moved into the outbox and before its answer is kept: the retry after the restart is
 * answered with the file the next start queued, not queued a second time. The file is large enough
 * (256 MiB) that hashing and syncing it in the outbox takes a while, and the kill lands once it is
 * seen there. The queue numbered a file only once it was in the outbox: nothing noted the upload
 * before, and the retry queued it again.
 */
describe('local HTTP input: a file upload whose answer a SIGKILL cut off after it was moved into the outbox', () => {
  const f = isolatedFieldClient('local-http-idempotency-file', DEVICE);

  const file = randomBytes(256 * 1024 * 1024);
  const upload = (key: string, signal?: AbortSignal) =>
    fetch(`http://127.0.0.1:${f.httpPort}/v1/files?filename=shot-0001.jpg&contentType=image/jpeg`, { method: 'POST', headers: { 'idempotency-key': `"${key}"` }, body: file, ...(signal ? { signal } : {}) });
  const depth = async () => ((await (await fetch(`http://127.0.0.1:${f.httpPort}/status`)).json()) as { queue: { depth: number } }).queue.depth;

  it('is answered after the restart with the file queued, and queued once', async () => {
    const cut = new AbortController();
    let answered = false;
    const first = upload('c1f4e3a0-file-1', cut.signal).then(() => (answered = true), () => undefined);
    // The file being placed in the outbox (ID.tmp, moved in, being hashed and synced).
    const outgoing = join(f.dataDir, 'outgoing');
    const movedIn = () => readdirSync(outgoing).some((f) => f.endsWith('.tmp') && !f.includes('.accepting'));
    for (const end = Date.now() + 60_000; !movedIn(); await new Promise((r) => setTimeout(r, 2))) assert.ok(Date.now() < end && !answered, 'the file moved into the outbox');
    await f.client.kill();
    cut.abort();
    await first;
    assert.equal(answered, false, 'killed before it was answered');
    await f.client.start();
    assert.equal(await depth(), 1, 'the start queued the file');

    const again = await upload('c1f4e3a0-file-1');
    const body = (await again.json()) as { accepted?: number; messageIds?: string[]; bytes?: number };
    assert.equal(again.status, 202, JSON.stringify(body));
    assert.equal(body.accepted, 1);
    assert.equal(body.bytes, file.length);
    assert.equal(await depth(), 1, 'queued once');
    // Kept from then on: answered the same again, and the key names that file.
    assert.deepEqual(await (await upload('c1f4e3a0-file-1')).json(), body);
    const other = await fetch(`http://127.0.0.1:${f.httpPort}/v1/files?filename=shot-0002.jpg`, { method: 'POST', headers: { 'idempotency-key': '"c1f4e3a0-file-1"' }, body: 'x' });
    assert.equal(other.status, 422);
    assert.equal(await depth(), 1);
  });
});

/**
 * The same window later: the file's record written (and synced), its answer waiting for the queue's
 * sync, which never answers here, then the kill. The next start finds the record (the outbox only
 * drops the file's note); the retry is answered with it.
 */
describe('local HTTP input: a file upload cut off after its record was written', () => {
  const tmp = tempDir('local-http-idempotency-file-window');
  after(() => tmp.cleanup());

  it('is answered at the next start with the record the queue holds, and queued once', async () => {
    const dir = join(tmp.dir, 'recorded');
    const bytes = randomBytes(10_000);
    const send = (port: number, key: string, signal?: AbortSignal) =>
      fetch(`http://127.0.0.1:${port}/v1/files?filename=log.txt`, { method: 'POST', headers: { 'idempotency-key': `"${key}"` }, body: bytes, ...(signal ? { signal } : {}) });
    const a = await localDevice(dir);
    const ia = httpInput(a.client, '127.0.0.1', 0, a.dir, a.logs.logger);
    await ia.start();
    a.queue.durable = () => new Promise(() => undefined);
    const cut = new AbortController();
    const first = send(ia.port as number, 'file-window-1', cut.signal).catch(() => undefined);
    await until('the file queued', () => a.queue.find(() => true).length === 1);
    const [queued] = a.queue.find(() => true);
    cut.abort();
    await first;
    // Killed here: the queue unclosed, the request never answered.
    a.client.stop();

    const b = await localDevice(dir);
    await recoverOutbox(b.outbox, b.queue, b.logs.logger);
    const ib = httpInput(b.client, '127.0.0.1', 0, b.dir, b.logs.logger);
    await ib.start();
    try {
      const again = await send(ib.port as number, 'file-window-1');
      assert.equal(again.status, 202);
      assert.deepEqual(await again.json(), { accepted: 1, messageIds: [queued?.messageId], bytes: bytes.length });
      assert.equal(b.queue.depth, 1, 'queued once');
    } finally {
      await ib.close();
      await b.close();
    }
  });
});
