import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import type { CommandDispatcher } from '../../internal-network/command-api/dispatcher.ts';
import { startCommandHttp } from '../../internal-network/command-api/http.ts';
import type { CommandStore } from '../../internal-network/command-api/store.ts';
import { Credentials, sha256Hex } from '../../internal-network/shared/credentials.ts';
import { ERRORS } from '../../shared/errors.ts';
import { createLogger } from '../../shared/logger.ts';

const TOKEN = 'operator-token';

/** The real command API HTTP server, with a dispatcher that fails as nothing should. */
async function failingApi() {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  const dispatcher = {
    issue() {
      throw new Error('disk full while saving the command');
    },
  } as unknown as CommandDispatcher;
  const api = await startCommandHttp({
    host: '127.0.0.1',
    port: 0,
    credentials: new Credentials([[sha256Hex(TOKEN), { name: 'ops', role: 'operator' }]]),
    groups: {},
    defaultTtlSeconds: 60,
    dispatcher,
    store: { all: () => [], get: () => undefined } as unknown as CommandStore,
    brokerConnected: () => true,
    logger: createLogger('command-api', 'info', sink),
  });
  return { api, lines };
}

function post(port: number, body: unknown) {
  return fetch(`http://127.0.0.1:${port}/v1/commands`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

test('an unexpected failure is answered 500 API_INTERNAL, not as a bad request, and its cause is logged', async () => {
  const { api, lines } = await failingApi();
  try {
    const res = await post(api.port, { deviceId: 'pump-1', command: 'reboot' });
    assert.equal(res.status, 500);
    assert.equal(ERRORS.API_INTERNAL.http, 500);
    const body = (await res.json()) as { code: string; message: string };
    assert.equal(body.code, 'API_INTERNAL');
    // The cause stays in the log: the answer does not carry it.
    assert.doesNotMatch(body.message, /disk full/);
    const logged = lines.find((l) => l.code === 'API_INTERNAL');
    assert.ok(logged, 'the failure is logged with its code');
    assert.equal(logged.level, 50); // error
    assert.match(JSON.stringify(logged.err), /disk full while saving the command/);
    assert.equal(logged.path, '/v1/commands');
  } finally {
    await api.close();
  }
});

test("a caller's mistake is still API_INVALID_BODY (400), and is not logged as an internal error", async () => {
  const { api, lines } = await failingApi();
  try {
    const res = await post(api.port, '{"deviceId": ');
    assert.equal(res.status, 400);
    assert.equal(((await res.json()) as { code: string }).code, 'API_INVALID_BODY');
    // params nested deep enough (30,000 levels, 60 KB: the body limit is 64 KiB) to overflow a recursive check: a bad
    // request like any other, not an internal error
    const deep = await post(api.port, `{"deviceId":"pump-1","command":"reboot","params":${'['.repeat(30_000)}${']'.repeat(30_000)}}`);
    assert.equal(deep.status, 400);
    const answer = (await deep.json()) as { code: string; message: string };
    assert.equal(answer.code, 'API_INVALID_BODY');
    assert.match(answer.message, /deeper than 32 levels/);
    assert.equal(lines.filter((l) => l.code === 'API_INTERNAL').length, 0);
  } finally {
    await api.close();
  }
});
