import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';
import { after, describe, it } from 'node:test';
import { FieldStreamError } from '../../shared/errors.ts';
import { LIMITS } from '../../shared/limits.ts';
import { InfluxV1Sink } from '../../internal-network/distributor/sinks/influx-v1.ts';
import { InfluxV2Sink } from '../../internal-network/distributor/sinks/influx-v2.ts';
import type { StoredPoint } from '../../internal-network/distributor/points.ts';

/**
 * A sink's write resolves only when InfluxDB holds every point of it (a 204): what the distributor
 * acknowledges, and its device deletes, after. A stand-in InfluxDB (an HTTP server of the test's,
 * as no InfluxDB here answers 201) answers each request with the status `answer` picks.
 */
async function fakeInflux(answer: (n: number, body: Buffer) => number): Promise<{ url: string; server: Server; bodies: Buffer[] }> {
  const bodies: Buffer[] = [];
  const server = createServer((req: IncomingMessage, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      let body = Buffer.concat(chunks);
      if (req.headers['content-encoding'] === 'gzip') body = gunzipSync(body);
      bodies.push(body);
      const status = answer(bodies.length, body);
      if (status === 204) res.writeHead(204).end();
      else res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ code: 'invalid', message: 'partial write: field type conflict dropped=1' }));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server, bodies };
}

const outcome = (p: Promise<void>) => p.then(() => 'ok', (e: unknown) => (e instanceof FieldStreamError ? e.code : `uncoded: ${String(e)}`));
const point = (i: number, fields: StoredPoint['fields'] = { v: i }): StoredPoint => ({ measurement: 'readings', tags: { device: `d${i}` }, fields, time: 1_700_000_000_000 + i });

const servers: Server[] = [];
after(() => {
  for (const s of servers) s.close();
});

describe('InfluxDB answers that are not "every point written"', () => {
  // InfluxDB 3 (Cloud Serverless, Dedicated/Clustered with partial writes on) answers 201 when it
  // wrote some lines and rejected others (influxdata/docs-v2#5169, influxdb-client-js#1044).
  it('v2: a 201 (a partial write) is refused, not taken as durable', async () => {
    const f = await fakeInflux(() => 201);
    servers.push(f.server);
    const sink = new InfluxV2Sink({ url: f.url, token: 't', org: 'o', bucket: 'b', timeoutMs: 5000 });
    try {
      assert.equal(await outcome(sink.write([point(1)])), 'DISTRIBUTOR_WRITE_REJECTED');
    } finally {
      await sink.close();
    }
  });

  // InfluxDB 3's max-http-request-size or a proxy's limit (v1's is shown on a real InfluxDB 1.x:
  // test/e2e/influx-sinks.test.ts): the v2 client library's HttpError 413 is halved as well.
  it('v2: a request answered 413 (too large) is halved until each part fits; a point alone too large is refused', async () => {
    const f = await fakeInflux((_n, body) => (body.toString().split('\n').length > 2 || body.length > 4096 ? 413 : 204));
    servers.push(f.server);
    const sink = new InfluxV2Sink({ url: f.url, token: 't', org: 'o', bucket: 'b', timeoutMs: 5000 });
    try {
      assert.equal(await outcome(sink.write([1, 2, 3, 4, 5].map((i) => point(i)))), 'ok');
      const written = f.bodies.filter((b) => b.toString().split('\n').length <= 2).flatMap((b) => b.toString().split('\n'));
      assert.deepEqual(written.map((l) => l.split(',')[1]?.split(' ')[0]).sort(), ['device=d1', 'device=d2', 'device=d3', 'device=d4', 'device=d5']);
      assert.equal(await outcome(sink.write([point(6, { note: 'x'.repeat(5000) })])), 'DISTRIBUTOR_WRITE_REJECTED');
    } finally {
      await sink.close();
    }
  });

  it('v1: a 201 (a partial write) is refused, not taken as durable', async () => {
    const f = await fakeInflux(() => 201);
    servers.push(f.server);
    const sink = new InfluxV1Sink({ url: f.url, database: 'db', timeoutMs: 5000 });
    try {
      assert.equal(await outcome(sink.write([point(1)])), 'DISTRIBUTOR_WRITE_REJECTED');
    } finally {
      await sink.close();
    }
  });

  // The client library's WriteApi flushed on its own, its error swallowed, once its buffer reached
  // maxBatchBytes (50 MB). The sink posts every request itself: a chunk past
  // LIMITS.influxRequestMaxBytes goes in several, one after another, each answered before the next.
  it("v2: a chunk of large points goes in requests of at most LIMITS.influxRequestMaxBytes, and the refusal of one is the write's", async () => {
    // The second request is refused (a type conflict in it, a body limit on the way).
    const f = await fakeInflux((n) => (n === 2 ? 422 : 204));
    servers.push(f.server);
    const sink = new InfluxV2Sink({ url: f.url, token: 't', org: 'o', bucket: 'b', timeoutMs: 30_000 });
    const long = 'x'.repeat(64 * 1024); // LIMITS.stringMaxChars
    // 4 string fields of 64 KiB each: ~256 KiB a line; 40 points ~ 10 MiB, far below 5,000 points.
    const points = Array.from({ length: 40 }, (_, i) => point(i, { a: long, b: long, c: long, d: long }));
    try {
      assert.equal(await outcome(sink.write(points)), 'DISTRIBUTOR_WRITE_REJECTED');
      assert.equal(f.bodies.length, 2, 'the requests after the refused one are not sent');
      for (const b of f.bodies) assert.ok(b.length <= LIMITS.influxRequestMaxBytes && b.length > LIMITS.influxRequestMaxBytes / 2, `${b.length} bytes`);
    } finally {
      await sink.close();
    }
  });

  it('v1 and v2: a 204 is every point written', async () => {
    const f = await fakeInflux(() => 204);
    servers.push(f.server);
    const v1 = new InfluxV1Sink({ url: f.url, database: 'db', timeoutMs: 5000 });
    const v2 = new InfluxV2Sink({ url: f.url, token: 't', org: 'o', bucket: 'b', timeoutMs: 5000 });
    assert.equal(await outcome(v1.write([point(1)])), 'ok');
    assert.equal(await outcome(v2.write([point(2)])), 'ok');
    assert.equal(f.bodies.length, 2);
    await v1.close();
    await v2.close();
  });

  it('v1 and v2: credentials in INFLUXDB_URL are used but never put in the description (logged, and in the messages of dead letters a fan-out refuses)', async () => {
    const auths: Array<string | undefined> = [];
    const f = await fakeInflux(() => 204);
    servers.push(f.server);
    f.server.prependListener('request', (req: IncomingMessage) => auths.push(req.headers.authorization));
    const withCredentials = f.url.replace('http://', 'http://fieldstream:s3cret-pw@');
    const v1 = new InfluxV1Sink({ url: withCredentials, database: 'db', timeoutMs: 5000 });
    const v2 = new InfluxV2Sink({ url: withCredentials, token: 't', org: 'o', bucket: 'b', timeoutMs: 5000 });
    for (const sink of [v1, v2]) {
      assert.ok(!sink.description.includes('s3cret-pw'), sink.description);
      assert.ok(sink.description.includes(f.url), sink.description);
    }
    assert.equal(await outcome(v1.write([point(1)])), 'ok');
    assert.equal(auths[0], `Basic ${Buffer.from('fieldstream:s3cret-pw').toString('base64')}`, 'v1 still authenticates with them');
    await v1.close();
    await v2.close();
  });

  it('v1 and v2: a point line protocol cannot carry (a number not finite, a hostile name, a lone surrogate) is refused for good, unsent', async () => {
    const f = await fakeInflux(() => 204);
    servers.push(f.server);
    const v1 = new InfluxV1Sink({ url: f.url, database: 'db', timeoutMs: 5000 });
    const v2 = new InfluxV2Sink({ url: f.url, token: 't', org: 'o', bucket: 'b', timeoutMs: 5000 });
    // Refused (final), not failed (retried): a writer retrying it would retry it for ever, and hold
    // what is queued behind it (the console's own points).
    for (const bad of [point(1, { score: Infinity }), point(2, { score: NaN }), point(3, { 'zz\\': 1 }), point(4, { note: 'a\ud800b' })]) {
      assert.equal(await outcome(v1.write([point(0), bad])), 'DISTRIBUTOR_WRITE_REJECTED', `v1 ${JSON.stringify(bad.fields)}`);
      assert.equal(await outcome(v2.write([point(0), bad])), 'DISTRIBUTOR_WRITE_REJECTED', `v2 ${JSON.stringify(bad.fields)}`);
    }
    assert.equal(f.bodies.length, 0);
    await v1.close();
    await v2.close();
  });

  it("v1 and v2: a 429 or 503 carries its Retry-After (seconds or an HTTP-date) for the consumer's next attempt", async () => {
    const answers: Array<[number, string | undefined]> = [];
    const server = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        const [status, after] = answers.shift() ?? [204, undefined];
        res.writeHead(status, { 'content-type': 'application/json', ...(after !== undefined ? { 'retry-after': after } : {}) }).end(status === 204 ? undefined : '{"code":"too many requests","message":"slow down"}');
      });
    });
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const v1 = new InfluxV1Sink({ url, database: 'db', timeoutMs: 5000 });
    const v2 = new InfluxV2Sink({ url, token: 't', org: 'o', bucket: 'b', timeoutMs: 5000 });
    const details = (p: Promise<void>) => p.then((): Record<string, unknown> | undefined => undefined, (e: unknown): Record<string, unknown> => (e instanceof FieldStreamError ? { code: e.code, ...e.details } : { code: String(e) }));
    for (const sink of [v1, v2]) {
      answers.push([429, '7'], [503, new Date(Date.now() + 30_000).toUTCString()], [503, undefined], [429, 'soon']);
      assert.deepEqual(await details(sink.write([point(1)])), { code: 'DISTRIBUTOR_WRITE_FAILED', status: 429, retryAfterMs: 7000 }, sink.description);
      const date = await details(sink.write([point(1)]));
      assert.equal(date?.code, 'DISTRIBUTOR_WRITE_FAILED');
      assert.ok(typeof date?.retryAfterMs === 'number' && date.retryAfterMs > 25_000 && date.retryAfterMs <= 30_000, `${sink.description}: ${JSON.stringify(date)}`);
      assert.deepEqual(await details(sink.write([point(1)])), { code: 'DISTRIBUTOR_WRITE_FAILED', status: 503 }, 'none without the header');
      assert.deepEqual(await details(sink.write([point(1)])), { code: 'DISTRIBUTOR_WRITE_FAILED', status: 429 }, 'none for a header that is neither form');
      await sink.close();
    }
  });

  it('v1 and v2: an answer that trickles in (a byte now and then) is DISTRIBUTOR_WRITE_FAILED at the deadline, not waited for', async () => {
    // A stalled proxy or server: never idle for the socket's timeout, never done either.
    const server = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        res.writeHead(400, { 'content-type': 'application/json', 'content-length': '1000' });
        const drip = setInterval(() => (res.destroyed ? clearInterval(drip) : res.write(' ')), 100);
        res.on('close', () => clearInterval(drip));
      });
    });
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    for (const sink of [new InfluxV1Sink({ url, database: 'db', timeoutMs: 500 }), new InfluxV2Sink({ url, token: 't', org: 'o', bucket: 'b', timeoutMs: 500 })]) {
      const started = Date.now();
      const result = await Promise.race([outcome(sink.write([point(1)])), new Promise<string>((r) => setTimeout(() => r('still waiting after 3 s'), 3000).unref())]);
      assert.equal(result, 'DISTRIBUTOR_WRITE_FAILED', sink.description);
      assert.ok(Date.now() - started < 1500, `${sink.description}: ${Date.now() - started} ms`);
      await sink.close();
    }
  });
});
