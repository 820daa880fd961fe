import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { TEST_COMMAND } from '../../shared/contract/test-command.ts';
import { ConsoleSession, ROLE_TOKENS, writeRoleTokens } from '../helpers/console-client.ts';
import { startEmbeddedFixture, type EmbeddedFixture } from '../helpers/embedded.ts';
import { tempDir } from '../helpers/pki.ts';

/**
 * The test event (`fieldstream.test`) is an admin's, whichever way it is asked for: the management
 * API, the console's command form, or the command API itself; and the name it carries to the device
 * (`requestedBy`) is the caller's, set by the command API. On the embedded pipeline with its console
 * (real HTTP, MQTT, disk). docs/management-api.md, docs/commands.md.
 */
describe('the test event is reserved to admins', () => {
  const tmp = tempDir('test-event-roles');
  let fx: EmbeddedFixture;
  let base: string;
  let api: string;

  before(async () => {
    fx = await startEmbeddedFixture(['meter-1'], { COMMAND_API_TOKENS_FILE: writeRoleTokens(tmp.dir), CONSOLE_LOGIN_ATTEMPTS_PER_MINUTE: '200' }, { console: true });
    assert.ok(fx.pipeline.console, 'the fixture runs the console');
    base = fx.pipeline.console.url;
    api = `http://127.0.0.1:${fx.pipeline.commandApi.port}`;
  });
  after(async () => {
    await fx?.stop();
    tmp.cleanup();
  });

  const commandApi = async (token: string, body: unknown) => {
    const res = await fetch(`${api}/v1/commands`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    return { status: res.status, body: (await res.json()) as any };
  };
  const stored = async (commandId: string) => {
    const res = await fetch(`${api}/v1/commands/${commandId}`, { headers: { authorization: `Bearer ${ROLE_TOKENS.viewer}` } });
    return (await res.json()) as { command: string; params?: { requestedBy?: string; note?: string } };
  };
  const forged = { requestedBy: 'admin-user', note: 'not me' };

  it("an operator cannot send it from the console's command form, nor through the command API, with or without a name of their choosing", async () => {
    const s = new ConsoleSession(base);
    await s.login(ROLE_TOKENS.operator);
    for (const params of [forged, undefined]) {
      const r = await s.request('/api/devices/meter-1/commands', { method: 'POST', body: { command: TEST_COMMAND, ...(params ? { params } : {}) } });
      assert.deepEqual([r.status, r.body.error?.code], [403, 'CONSOLE_FORBIDDEN'], JSON.stringify(r.body));
    }
    for (const body of [
      { deviceId: 'meter-1', command: TEST_COMMAND, params: forged },
      { deviceIds: ['meter-1'], command: TEST_COMMAND },
    ]) {
      const r = await commandApi(ROLE_TOKENS.operator, body);
      assert.deepEqual([r.status, r.body.code], [403, 'API_FORBIDDEN'], JSON.stringify(r.body));
    }
    // Any other command is the operator's as before.
    const ping = await s.request('/api/devices/meter-1/commands', { method: 'POST', body: { command: 'ping' } });
    assert.equal(ping.status, 202, JSON.stringify(ping.body));
  });

  it("an admin may send it every way; the name it carries is the admin's, whatever the request says", async () => {
    const direct = await commandApi(ROLE_TOKENS.admin, { deviceId: 'meter-1', command: TEST_COMMAND, params: { requestedBy: 'someone-else', note: 'direct' } });
    assert.equal(direct.status, 202, JSON.stringify(direct.body));
    assert.deepEqual((await stored(direct.body.commands[0].commandId)).params, { requestedBy: 'admin-user', note: 'direct' });

    const s = new ConsoleSession(base);
    await s.login(ROLE_TOKENS.admin);
    const page = await s.request('/api/devices/meter-1/commands', { method: 'POST', body: { command: TEST_COMMAND, params: forged } });
    assert.equal(page.status, 202, JSON.stringify(page.body));
    assert.deepEqual((await stored(page.body.commandId)).params, { requestedBy: 'admin-user', note: 'not me' });

    const manage = await fetch(new URL('/api/v1/manage/devices/meter-1/test-event', base), {
      method: 'POST',
      headers: { authorization: `Bearer ${ROLE_TOKENS.admin}`, 'content-type': 'application/json' },
      body: JSON.stringify({ note: 'from the management API' }),
    });
    const sent = (await manage.json()) as { commandId: string };
    assert.equal(manage.status, 202, JSON.stringify(sent));
    assert.deepEqual((await stored(sent.commandId)).params, { requestedBy: 'admin-user', note: 'from the management API' });

    // Params that are not a test event's are refused, not sent for the device to reject.
    const odd = await commandApi(ROLE_TOKENS.admin, { deviceId: 'meter-1', command: TEST_COMMAND, params: { run: 'rm -rf /' } });
    assert.deepEqual([odd.status, odd.body.code], [400, 'API_INVALID_BODY'], JSON.stringify(odd.body));
  });
});
