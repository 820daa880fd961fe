import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import mqtt from 'mqtt';
import pino from 'pino';
import { CommandDispatcher } from '../../internal-network/command-api/dispatcher.ts';
import { startCommandHttp } from '../../internal-network/command-api/http.ts';
import { CommandStore } from '../../internal-network/command-api/store.ts';
import type { CommandClient } from '../../internal-network/console/command-client.ts';
import { Fleet } from '../../internal-network/console/fleet/fleet.ts';
import { MANAGE_PREFIX, manageRoutes } from '../../internal-network/console/manage/routes.ts';
import type { PipelineView } from '../../internal-network/console/pipeline/pipeline-view.ts';
import { startWebServer } from '../../internal-network/console/web/server.ts';
import { BoundedSessionStore } from '../../internal-network/console/web/session-store.ts';
import { Credentials, sha256Hex } from '../../internal-network/shared/credentials.ts';
import { DeviceKeyRegistry } from '../../internal-network/shared/device-keys.ts';
import { createLogger } from '../../shared/logger.ts';
import { rawRequest } from '../helpers/http-from.ts';
import { tempDir } from '../helpers/pki.ts';

/**
 * A request body sent with a Content-Encoding the server does not decode (gzip, br, deflate) was
 * read as if plain: its compressed bytes refused as "not JSON" (a 400 that sends the client after
 * its JSON), or, a plain body merely labelled so, taken. RFC 9110 §8.4.1: 415 Unsupported Media Type.
 */
const BODY = JSON.stringify({ deviceId: 'pump-1', command: 'reboot' });
const request = (path: string, coding: string | undefined, extra = '') =>
  `POST ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n${extra}Content-Type: application/json\r\n${coding === undefined ? '' : `Content-Encoding: ${coding}\r\n`}Content-Length: ${Buffer.byteLength(BODY)}\r\n\r\n${BODY}`;
const REFUSED = ['gzip', 'br', 'deflate', 'GZIP', 'identity, gzip', 'x-anything'];
const TAKEN = [undefined, 'identity', 'Identity', ''];

describe('a request body with a Content-Encoding', () => {
  it('the command API answers 415 HTTP_CONTENT_ENCODING_UNSUPPORTED, with the headers of its other errors, and issues nothing', async () => {
    const tmp = tempDir('content-encoding-api');
    const log = createLogger('command-api', 'silent');
    const store = new CommandStore(join(tmp.dir, 'commands.jsonl'), log);
    const broker = mqtt.connect('mqtt://127.0.0.1:1', { reconnectPeriod: 0, connectTimeout: 100 });
    broker.on('error', () => undefined);
    const dispatcher = new CommandDispatcher(broker, store, log, { keys: new DeviceKeyRegistry(join(tmp.dir, 'keys')), allowUnsigned: true });
    const api = await startCommandHttp({
      host: '127.0.0.1',
      port: 0,
      setting: 'COMMAND_API_PORT',
      credentials: new Credentials([[sha256Hex('op'), { name: 'ops', role: 'operator' }]]),
      groups: {},
      defaultTtlSeconds: 60,
      dispatcher,
      store,
      brokerConnected: () => true,
      logger: log,
    });
    try {
      for (const coding of REFUSED) {
        const r = await rawRequest(api.port, request('/v1/commands', coding, 'Authorization: Bearer op\r\n'));
        assert.deepEqual([r.status, r.body?.code], [415, 'HTTP_CONTENT_ENCODING_UNSUPPORTED'], `${coding}: ${JSON.stringify(r.body)}`);
        assert.equal(typeof r.body.message, 'string');
        assert.deepEqual([r.headers['cache-control'], r.headers['x-content-type-options']], ['no-store', 'nosniff'], coding);
        assert.match(r.headers['content-type'] ?? '', /^application\/json/);
      }
      assert.equal([...store.all()].length, 0, 'nothing issued');
      for (const coding of TAKEN) {
        const r = await rawRequest(api.port, request('/v1/commands', coding, 'Authorization: Bearer op\r\n'));
        assert.equal(r.status, 202, `${coding}: ${JSON.stringify(r.body)}`);
      }
    } finally {
      await api.close();
      dispatcher.close();
      broker.end(true);
      tmp.cleanup();
    }
  });

  it("the console's JSON APIs and the management API answer 415 HTTP_CONTENT_ENCODING_UNSUPPORTED, with the console's headers", async () => {
    const view = (): PipelineView => ({ at: 0, services: [], brokers: [], bridgeConnected: null, readingsPerSecond: null, writeFailures: null, deadLetters: null, feedDropped: null, feedRefused: null, feedConnected: null, feedDownSince: null });
    const web = await startWebServer({
      host: '127.0.0.1',
      port: 0,
      setting: 'CONSOLE_PORT',
      secure: false,
      sessionTtlMs: 60_000,
      sessions: new BoundedSessionStore(60_000),
      trustedProxies: undefined,
      logger: pino({ level: 'silent' }),
      routes: (app) => {
        app.post('/api/echo', async (req) => ({ got: req.body }));
        manageRoutes({
          credentials: { verify: (t) => (t === 'viewer-token' ? { name: 'viewer-user', role: 'viewer' } : undefined) },
          fleet: new Fleet({ staleAfterMs: 180_000 }),
          pipeline: view,
          brokerConnected: () => true,
          commands: {} as CommandClient,
          log: pino({ level: 'silent' }),
        })(app);
      },
    });
    try {
      for (const [path, extra] of [['/api/echo', ''], [`${MANAGE_PREFIX}/topics/validate`, 'Authorization: Bearer viewer-token\r\n']] as const) {
        for (const coding of REFUSED) {
          const r = await rawRequest(web.port, request(path, coding, extra));
          assert.deepEqual([r.status, r.body?.error?.code], [415, 'HTTP_CONTENT_ENCODING_UNSUPPORTED'], `${path} ${coding}: ${JSON.stringify(r.body)}`);
          assert.equal(r.headers['cache-control'], 'no-store');
          assert.equal(r.headers['x-content-type-options'], 'nosniff');
          assert.ok(r.headers['content-security-policy'], 'the security headers');
        }
      }
      for (const coding of TAKEN) {
        const r = await rawRequest(web.port, request('/api/echo', coding));
        assert.equal(r.status, 200, `${coding}: ${JSON.stringify(r.body)}`);
        assert.deepEqual(r.body, { got: JSON.parse(BODY) });
      }
    } finally {
      await web.close();
    }
  });
});
