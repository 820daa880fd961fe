import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { runDoctor } from '../../field-client/src/doctor.ts';
import { freePort } from '../../scripts/local-stack/ports.ts';
import { createLogger } from '../../shared/logger.ts';
import { startTestFieldClient } from '../helpers/field.ts';
import { makeTestPki } from '../helpers/pki.ts';

/**
 * `fieldstream doctor` asks the running client for its status on FIELD_HTTP_HOST:FIELD_HTTP_PORT.
 * With an IPv6 address there (FIELD_HTTP_HOST=::1), the URL it made (http://::1:PORT) was no URL:
 * the doctor said the client's status endpoint was not answering ("is it running?") of a client
 * that ran and answered, and left its queue's state out.
 */
describe('fieldstream doctor: the running client\'s status', () => {
  let pki: ReturnType<typeof makeTestPki>;
  let client: Awaited<ReturnType<typeof startTestFieldClient>>;
  let env: Record<string, string>;
  before(async () => {
    pki = makeTestPki(['dev-a', 'dev-b']);
    const port = String(await freePort());
    const gateway = `wss://localhost:${await freePort()}/ws`; // nothing listens: the client keeps trying
    env = { FIELD_HTTP_HOST: '::1', FIELD_HTTP_PORT: port };
    client = await startTestFieldClient(pki.paths, 'dev-a', gateway, createLogger('test', 'silent'), env);
    const d = pki.paths.device('dev-a');
    env = { ...env, DEVICE_ID: 'dev-a', GATEWAY_URL: gateway, FIELD_CA_FILE: pki.paths.publicCa, FIELD_CERT_FILE: d.cert, FIELD_KEY_FILE: d.key, FIELD_SIGNING_KEY_FILE: d.signingKey, FIELD_DATA_DIR: client.dataDir };
  });
  after(async () => {
    await client.close();
    pki.cleanup();
  });

  it("does not report another device's client as this one (npm start's simulated device answers on 8081)", async () => {
    // It took whatever answered for this device's client: "client connected, N messages queued" of
    // another device's queue.
    const d = pki.paths.device('dev-b');
    const results = await runDoctor({ ...env, DEVICE_ID: 'dev-b', FIELD_CERT_FILE: d.cert, FIELD_KEY_FILE: d.key, FIELD_SIGNING_KEY_FILE: d.signingKey });
    const queue = results.find((r) => r.name === 'queue');
    const all = JSON.stringify(results, null, 1);
    assert.equal(queue?.level, 'warn', all);
    assert.match(queue?.detail ?? '', /the client answering at \[::1\]:\d+ is device dev-a, not dev-b/, all);
    assert.doesNotMatch(queue?.detail ?? '', /^client /, all);
  });

  it('reads the status of the client that runs there', async () => {
    const results = await runDoctor(env);
    const queue = results.find((r) => r.name === 'queue');
    assert.match(queue?.detail ?? '', /^client \w+, \d+ messages queued/, JSON.stringify(results, null, 1));
  });
});
