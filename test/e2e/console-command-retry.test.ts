import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { OperatorConsole } from '../../internal-network/console/console.ts';
import { TIMINGS } from '../../shared/limits.ts';
import { TestBrowser, type WatchedPage } from '../helpers/browser.ts';
import { ConsoleSession, ROLE_TOKENS, writeRoleTokens } from '../helpers/console-client.ts';
import { extraConsole, startEmbeddedFixture, type EmbeddedFixture } from '../helpers/embedded.ts';
import { tempDir } from '../helpers/pki.ts';
import { TcpRelay } from '../helpers/tcp-relay.ts';

/**
 * A command whose answer from the command API never reached the console (the command API slow,
 * the link dropping the answer): the console answers 502 CONSOLE_COMMAND_API_FAILED, though the
 * command API may have taken the command. The same command sent again (the page's button pressed
 * again, a script's retry) must not be a second command: the page sends each command with an
 * Idempotency-Key it keeps until the command is confirmed, and the console, pages' API and
 * management API alike, hands that key to the command API. A relay between the console and the
 * command API holds the answers back (real HTTP, MQTT, disk; a real browser). docs/console.md,
 * docs/management-api.md.
 */

const DEVICE = 'meter-1';
const sel = (testid: string) => `[data-testid="${testid}"]`;

describe('a command sent again after its answer was lost is one command', () => {
  const tmp = tempDir('console-command-retry');
  let fx: EmbeddedFixture;
  let relay: TcpRelay;
  let console_: OperatorConsole;
  let browser: TestBrowser | undefined;
  const pages: WatchedPage[] = [];

  before(async () => {
    fx = await startEmbeddedFixture([DEVICE], { COMMAND_API_TOKENS_FILE: writeRoleTokens(tmp.dir) });
    relay = new TcpRelay({ host: '127.0.0.1', port: fx.pipeline.commandApi.port });
    const port = await relay.start();
    console_ = await extraConsole(fx, 'console-command-retry', { CONSOLE_COMMAND_API_URL: `http://127.0.0.1:${port}` });
  });
  after(async () => {
    for (const p of pages) await p.close().catch(() => {});
    await browser?.close();
    await console_?.close();
    await relay?.close();
    await fx?.stop();
    tmp.cleanup();
  });

  /** The device's commands named `command`, as the command API itself lists them. */
  async function commandsNamed(command: string): Promise<string[]> {
    const res = await fetch(`http://127.0.0.1:${fx.pipeline.commandApi.port}/v1/commands?deviceId=${DEVICE}&limit=100`, { headers: { authorization: `Bearer ${ROLE_TOKENS.admin}` } });
    assert.equal(res.status, 200);
    const body = (await res.json()) as { commands: Array<{ commandId: string; command: string }> };
    return body.commands.filter((c) => c.command === command).map((c) => c.commandId);
  }

  /** Runs `send` with the command API's answers held back (past the console's wait for them), then lets them through again. */
  async function answerLost<T>(send: () => Promise<T>): Promise<T> {
    relay.hold('down');
    try {
      return await send();
    } finally {
      relay.release('down');
    }
  }

  it("the pages' API: a request sent again with its Idempotency-Key is answered with the command the first made", async () => {
    const s = new ConsoleSession(console_.url);
    await s.login(ROLE_TOKENS.operator);
    const body = { command: 'retry-api', params: { seconds: 3 } };
    const headers = { 'idempotency-key': '"console-retry-1"' };
    const lost = await answerLost(() => s.request(`/api/devices/${DEVICE}/commands`, { method: 'POST', body, headers }));
    assert.deepEqual([lost.status, lost.body.error?.code], [502, 'CONSOLE_COMMAND_API_FAILED'], JSON.stringify(lost.body));
    // The command API took it all the same: its answer is what was lost.
    const made = await commandsNamed('retry-api');
    assert.equal(made.length, 1, 'the first request made the command');
    const again = await s.request(`/api/devices/${DEVICE}/commands`, { method: 'POST', body, headers });
    assert.equal(again.status, 202, JSON.stringify(again.body));
    assert.equal(again.body.commandId, made[0], 'answered with the command the first request made');
    assert.deepEqual(await commandsNamed('retry-api'), made, 'no second command');
    // Another body under that key was not what the key named: refused with the command API's own code, nothing sent.
    const other = await s.request(`/api/devices/${DEVICE}/commands`, { method: 'POST', body: { command: 'retry-api' }, headers });
    assert.deepEqual([other.status, other.body.error?.code], [422, 'API_IDEMPOTENCY_KEY_REUSED'], JSON.stringify(other.body));
    const bad = await s.request(`/api/devices/${DEVICE}/commands`, { method: 'POST', body, headers: { 'idempotency-key': '"a\u00e9"' } });
    assert.deepEqual([bad.status, bad.body.error?.code], [400, 'CONSOLE_INVALID_REQUEST'], JSON.stringify(bad.body));
    assert.deepEqual(await commandsNamed('retry-api'), made, 'nothing more sent');
  });

  it('the management API: a test event sent again with its Idempotency-Key is the same test event', async () => {
    const url = `${console_.url}api/v1/manage/devices/${DEVICE}/test-event`;
    const send = () =>
      fetch(url, {
        method: 'POST',
        headers: { authorization: `Bearer ${ROLE_TOKENS.admin}`, 'content-type': 'application/json', 'idempotency-key': 'manage-retry-1' },
        body: JSON.stringify({ note: 'retry' }),
      }).then(async (r) => ({ status: r.status, body: (await r.json()) as { commandId?: string; error?: { code: string } } }));
    const before = await commandsNamed('fieldstream.test');
    const lost = await answerLost(send);
    assert.deepEqual([lost.status, lost.body.error?.code], [502, 'MANAGE_COMMAND_API_FAILED'], JSON.stringify(lost.body));
    const made = (await commandsNamed('fieldstream.test')).filter((id) => !before.includes(id));
    assert.equal(made.length, 1, 'the first request made the test event');
    const again = await send();
    assert.equal(again.status, 202, JSON.stringify(again.body));
    assert.equal(again.body.commandId, made[0]);
    assert.equal((await commandsNamed('fieldstream.test')).filter((id) => !before.includes(id)).length, 1, 'no second test event');
  });

  it('the device page: a command whose answer was lost says it may have been taken, and pressing Send again sends it once', async () => {
    browser = await TestBrowser.launch({ artifacts: 'test-artifacts/console' });
    const w = await browser.open('about:blank');
    pages.push(w);
    w.page.setDefaultTimeout(TIMINGS.commandApiRequestTimeoutMs * 3);
    await w.page.goto(console_.url);
    await w.page.fill(sel('login-token'), ROLE_TOKENS.operator);
    await w.page.click(sel('login-submit'));
    await w.page.waitForSelector(sel('page-fleet'));
    await w.page.evaluate((d) => void (location.hash = `#/device/${d}`), DEVICE);
    await w.page.waitForSelector(sel('command-form'));
    await w.page.fill(sel('command-name'), 'retry-page');
    await w.page.fill(sel('command-params'), '{"seconds": 5}');

    await answerLost(async () => {
      await w.page.click(sel('command-submit'));
      await w.page.waitForSelector(`${sel('command-error')}:not([hidden])`);
    });
    const said = (await w.page.textContent(sel('command-error'))) ?? '';
    assert.match(said, /CONSOLE_COMMAND_API_FAILED/);
    assert.doesNotMatch(said, /^Not sent/, `a command the command API may have taken is not said to be unsent: ${said}`);
    const made = await commandsNamed('retry-page');
    assert.equal(made.length, 1, 'the command API took the first');

    await w.page.click(sel('command-submit'));
    await w.page.waitForFunction((s) => /^Sent: retry-page/.test(document.querySelector(s)?.textContent ?? ''), sel('command-status'));
    assert.deepEqual(await commandsNamed('retry-page'), made, 'pressed again, the same command: none more');

    // Confirmed, the next press is a new command, as the operator means it.
    await w.page.fill(sel('command-params'), '{"seconds": 5}');
    await w.page.click(sel('command-submit'));
    const deadline = Date.now() + 10_000;
    while ((await commandsNamed('retry-page')).length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    assert.equal((await commandsNamed('retry-page')).length, 2, 'a new command after the first was confirmed');
    w.assertClean([/Failed to load resource: the server responded with a status of 502/]);
  });

  it('the device page, with the command API out of reach, says its commands could not be read and keeps those it showed, not "No commands"', async () => {
    const w = pages[0];
    assert.ok(w, 'the page of the test before');
    await w.page.waitForFunction((s) => document.querySelectorAll(s).length >= 2, sel('command-row'));
    const before = await w.page.locator(sel('command-row')).count();
    await relay.cut();
    try {
      // The live `device` event reads the commands again each second: now it cannot.
      await w.page.waitForSelector(`${sel('commands-unread')}:not([hidden])`);
      assert.match((await w.page.textContent(sel('commands-unread'))) ?? '', /could not be read/);
      assert.equal(await w.page.locator(sel('command-row')).count(), before, 'the commands shown before are still shown');
      assert.doesNotMatch((await w.page.textContent(sel('command-list'))) ?? '', /No commands/);
      // A page opened now has none to keep: it says they could not be read, not that there are none.
      const tab = await browser!.openTab(w, 'about:blank');
      pages.push(tab);
      tab.page.setDefaultTimeout(TIMINGS.commandApiRequestTimeoutMs * 3);
      await tab.page.goto(`${console_.url}#/device/${DEVICE}`);
      await tab.page.waitForSelector(`${sel('commands-unread')}:not([hidden])`);
      assert.doesNotMatch((await tab.page.textContent(sel('command-list'))) ?? '', /No commands/);
    } finally {
      await relay.restore();
    }
    await w.page.waitForSelector(`${sel('commands-unread')}[hidden]`, { state: 'attached' });
    assert.equal(await w.page.locator(sel('command-row')).count(), before);
  });

  it('the device page reloaded after a command whose answer was lost: the command is offered again with its key, and sent again it is one command', async () => {
    // The key lived in the page's memory only: a reload (what an operator does after a network
    // error) forgot it, and the same command sent again from the reloaded page was a second one.
    const first = pages[0];
    assert.ok(first, 'the browser of the tests before');
    const w = await browser!.openTab(first, 'about:blank');
    pages.push(w);
    w.page.setDefaultTimeout(TIMINGS.commandApiRequestTimeoutMs * 3);
    await w.page.goto(`${console_.url}#/device/${DEVICE}`);
    await w.page.waitForSelector(sel('command-form'));
    await w.page.fill(sel('command-name'), 'retry-reload');
    await w.page.fill(sel('command-params'), '{"seconds": 7}');
    await w.page.fill(sel('command-ttl'), '600');
    await answerLost(async () => {
      await w.page.click(sel('command-submit'));
      await w.page.waitForSelector(`${sel('command-error')}:not([hidden])`);
    });
    const made = await commandsNamed('retry-reload');
    assert.equal(made.length, 1, 'the command API took the first');

    await w.page.reload();
    await w.page.waitForSelector(sel('command-form'));
    // The reloaded page offers the command not confirmed, as it was typed, and says why.
    const offered = await Promise.all(['command-name', 'command-params', 'command-ttl'].map((t) => w.page.inputValue(sel(t))));
    const notice = (await w.page.textContent(sel('command-error'))) ?? '';
    await w.screenshot('device-command-not-confirmed', { fullPage: true });
    // The operator sends the same command again (typed again, or as offered).
    await w.page.fill(sel('command-name'), 'retry-reload');
    await w.page.fill(sel('command-params'), '{"seconds": 7}');
    await w.page.fill(sel('command-ttl'), '600');
    await w.page.click(sel('command-submit'));
    await w.page.waitForFunction((s) => /^Sent: retry-reload/.test(document.querySelector(s)?.textContent ?? ''), sel('command-status'));
    assert.deepEqual(await commandsNamed('retry-reload'), made, 'sent again after a reload, the same command: none more');
    assert.deepEqual(offered, ['retry-reload', '{"seconds": 7}', '600'], 'the reloaded page offered the command not confirmed');
    assert.match(notice, /not confirmed/i);

    // Confirmed, it is forgotten: a reload offers nothing, and the same command sent now is a new one.
    await w.page.reload();
    await w.page.waitForSelector(sel('command-form'));
    assert.equal(await w.page.inputValue(sel('command-name')), '');
    assert.equal(await w.page.isHidden(sel('command-error')), true);
    await w.page.fill(sel('command-name'), 'retry-reload');
    await w.page.fill(sel('command-params'), '{"seconds": 7}');
    await w.page.fill(sel('command-ttl'), '600');
    await w.page.click(sel('command-submit'));
    await w.page.waitForFunction((s) => /^Sent: retry-reload/.test(document.querySelector(s)?.textContent ?? ''), sel('command-status'));
    assert.equal((await commandsNamed('retry-reload')).length, 2, 'a new command after the first was confirmed');
    w.assertClean([/Failed to load resource: the server responded with a status of 502/]);
  });
  it("a command not confirmed in a tab is offered again to its sender only: another user logging in at that tab after a logout is not told it would not be sent twice", async () => {
    // The command API keeps a key per caller: the same key from another user is another command.
    // The tab offered the command it kept to whoever logged in next, saying that sending it again
    // "does not send it twice": sent by them it was a second command.
    browser ??= await TestBrowser.launch({ artifacts: 'test-artifacts/console' });
    const w = await browser.open('about:blank');
    pages.push(w);
    w.page.setDefaultTimeout(TIMINGS.commandApiRequestTimeoutMs * 3);
    const loginAt = async (role: keyof typeof ROLE_TOKENS) => {
      await w.page.goto(`${console_.url}#/device/${DEVICE}`);
      await w.page.fill(sel('login-token'), ROLE_TOKENS[role]);
      await w.page.click(sel('login-submit'));
      await w.page.waitForSelector(`[data-testid="user-role"][data-role="${role}"]`);
      await w.page.evaluate((d) => void (location.hash = `#/device/${d}`), DEVICE);
      await w.page.waitForSelector(sel('command-form'));
    };
    const logOut = async () => {
      await w.page.click(sel('logout'));
      await w.page.waitForSelector(sel('page-login'));
    };
    await loginAt('operator');
    await w.page.fill(sel('command-name'), 'retry-user');
    await w.page.fill(sel('command-params'), '{"seconds": 9}');
    await answerLost(async () => {
      await w.page.click(sel('command-submit'));
      await w.page.waitForSelector(`${sel('command-error')}:not([hidden])`);
    });
    const made = await commandsNamed('retry-user');
    assert.equal(made.length, 1, 'the command API took the first');
    await logOut();

    // Another user at this tab: nothing offered, no word of a command they never sent.
    await loginAt('admin');
    assert.equal(await w.page.inputValue(sel('command-name')), '', "the other user's command is not offered");
    assert.equal(await w.page.inputValue(sel('command-params')), '');
    assert.equal(await w.page.isHidden(sel('command-error')), true, 'no "not confirmed" notice for a command this user never sent');
    await logOut();

    // Its sender back at the tab: offered again, and sent again it is still one command.
    await loginAt('operator');
    assert.deepEqual(await Promise.all(['command-name', 'command-params'].map((t) => w.page.inputValue(sel(t)))), ['retry-user', '{"seconds": 9}']);
    assert.match((await w.page.textContent(sel('command-error'))) ?? '', /not confirmed/i);
    await w.page.click(sel('command-submit'));
    await w.page.waitForFunction((s) => /^Sent: retry-user/.test(document.querySelector(s)?.textContent ?? ''), sel('command-status'));
    assert.deepEqual(await commandsNamed('retry-user'), made, 'sent again by its sender after logging in again: none more');
    w.assertClean([/Failed to load resource: the server responded with a status of 502/]);
  });
});
