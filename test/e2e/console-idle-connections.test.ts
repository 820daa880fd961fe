import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { CONSOLE } from '../../shared/limits.ts';
import { ConsoleSession, ROLE_TOKENS, writeRoleTokens } from '../helpers/console-client.ts';
import { startEmbeddedFixture, type EmbeddedFixture } from '../helpers/embedded.ts';
import { tempDir } from '../helpers/pki.ts';

/** Resolves with the milliseconds until the console closed the socket, or undefined if it had not within `waitMs`. */
function closedWithin(socket: Socket, waitMs: number): Promise<number | undefined> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(undefined), waitMs);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(Date.now() - t0);
    });
  });
}

/**
 * Connections to the console that never send a request, or never finish its headers: Node's headersTimeout only watches a
 * request that has begun, so a silent connection was held for ever, each a file descriptor, until
 * the console could accept no one (docs/console.md, "Security of the console itself").
 */
describe('the operator console and connections that send nothing', () => {
  const tmp = tempDir('console-idle');
  let fx: EmbeddedFixture;
  let port: number;
  let base: string;

  before(async () => {
    fx = await startEmbeddedFixture(['meter-1'], { COMMAND_API_TOKENS_FILE: writeRoleTokens(tmp.dir) }, { console: true });
    assert.ok(fx.pipeline.console, 'the fixture runs the console');
    port = fx.pipeline.console.port;
    base = fx.pipeline.console.url;
  });
  after(async () => {
    await fx?.stop();
    tmp.cleanup();
  });

  it('closes a connection silent before its first request, and leaves requests and live streams alone', async () => {
    const s = new ConsoleSession(base);
    await s.login(ROLE_TOKENS.viewer);
    const live = await s.live();
    await live.until((e) => (e.event === 'snapshot' ? true : undefined));

    const silent = connect(port, '127.0.0.1');
    silent.on('error', () => undefined);
    await new Promise<void>((resolve) => silent.once('connect', () => resolve()));
    const closedAfter = await closedWithin(silent, CONSOLE.connectionIdleBeforeRequestMs + 5_000);
    assert.ok(closedAfter !== undefined, `a connection that sent nothing was still open ${CONSOLE.connectionIdleBeforeRequestMs + 5_000} ms later`);
    assert.ok(closedAfter >= CONSOLE.connectionIdleBeforeRequestMs - 500, `closed after ${closedAfter} ms, before its time`);

    // The live stream, quiet on the browser's side all that while, goes on.
    const seen = live.events.length;
    await live.until((e) => (live.events.indexOf(e) >= seen ? true : undefined), 10_000);
    let ended = false;
    void live.ended.then(() => (ended = true));
    assert.equal(ended, false, 'the live stream was not ended');
    live.close();
    // And the console answers new connections as ever.
    const r = await s.request('/api/session');
    assert.equal(r.body.authenticated, true);
  });

  it('answers a request whose headers do not come in time 408 and closes it, within seconds rather than a minute and more', async () => {
    const slow = connect(port, '127.0.0.1');
    slow.on('error', () => undefined);
    let answer = '';
    slow.on('data', (d: Buffer) => (answer += d.toString('latin1')));
    await new Promise<void>((resolve) => slow.once('connect', () => resolve()));
    // The start of a request, then a byte every 2 s (never silent long enough to be closed as idle).
    slow.write('GET /index.html HTTP/1.1\r\nHost: x\r\nX-Slow: ');
    const trickle = setInterval(() => slow.writable && slow.write('a'), 2_000);
    const bound = CONSOLE.headersTimeoutMs + CONSOLE.connectionsCheckMs + 2_000;
    const closedAfter = await closedWithin(slow, bound);
    clearInterval(trickle);
    assert.ok(closedAfter !== undefined, `a request with unfinished headers was still open ${bound} ms later`);
    assert.match(answer, /^HTTP\/1\.1 408 /, 'answered 408');
  });
});

/** The number of connections at once is bounded too (CONSOLE.maxConnections), scaled down here. */
describe('the operator console and many connections at once', () => {
  const CAP = 4;
  const tmp = tempDir('console-cap');
  const limits = CONSOLE as unknown as Record<string, number>;
  const saved = limits.maxConnections;
  let fx: EmbeddedFixture;

  before(async () => {
    limits.maxConnections = CAP;
    fx = await startEmbeddedFixture(['meter-1'], { COMMAND_API_TOKENS_FILE: writeRoleTokens(tmp.dir) }, { console: true });
    assert.ok(fx.pipeline.console, 'the fixture runs the console');
  });
  after(async () => {
    limits.maxConnections = saved as number;
    await fx?.stop();
    tmp.cleanup();
  });

  it('closes a connection past CONSOLE.maxConnections as it is accepted, and takes one again once another closed', async () => {
    const port = (fx.pipeline.console as { port: number }).port;
    const open = async () => {
      const s = connect(port, '127.0.0.1');
      s.on('error', () => undefined);
      await new Promise<void>((resolve) => s.once('connect', () => resolve()));
      return s;
    };
    const held: Socket[] = [];
    try {
      for (let i = 0; i < CAP; i++) held.push(await open());
      const extra = await open();
      assert.ok((await closedWithin(extra, 3_000)) !== undefined, 'a connection past the bound was closed at once');
      held.shift()?.destroy();
      await new Promise((r) => setTimeout(r, 200));
      const res = await fetch(new URL('/api/session', (fx.pipeline.console as { url: string }).url), { headers: { connection: 'close' } });
      assert.equal(res.status, 200, 'a place again once one closed');
      await res.arrayBuffer();
    } finally {
      for (const s of held) s.destroy();
    }
  });
});
