import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { TestBrowser, type WatchedPage } from '../helpers/browser.ts';
import { ROLE_TOKENS, writeRoleTokens } from '../helpers/console-client.ts';
import { startEmbeddedFixture, type EmbeddedFixture } from '../helpers/embedded.ts';
import { startTestFieldClient } from '../helpers/field.ts';
import { tempDir } from '../helpers/pki.ts';

/**
 * Text a device chose, on the console's pages, with characters that show nothing themselves but
 * change what the text around them looks like: a bidi override (U+202E) turns a command's result
 * "report<U+202E>fdp.exe" into "reportexe.pdf" on screen, an isolate or a direction mark reorders a
 * value, a zero-width space makes "pump-1" of another text. Each is shown as the six characters
 * `\u202e` (as the management API writes them for a terminal), in the values, the events, the
 * command results and the fleet's hover text. A real browser, the embedded pipeline, a real field
 * client. docs/console.md.
 */

const DEVICE = 'meter-1';
const WAIT_MS = 30_000;
const sel = (testid: string, attrs: Record<string, string> = {}) =>
  `[data-testid="${testid}"]${Object.entries(attrs).map(([k, v]) => `[data-${k}="${v}"]`).join('')}`;
const RESULT = 'report\u202efdp.exe';
const NOTE = 'pump\u20671-ffo\u2069 ok\u200b';
const MESSAGE = 'valve \u202bstuck\u202c\u200f';

describe('invisible characters a device sends are shown, not obeyed', () => {
  const tmp = tempDir('console-invisible-text');
  let fx: EmbeddedFixture;
  let browser: TestBrowser;
  let w: WatchedPage | undefined;
  let field: Awaited<ReturnType<typeof startTestFieldClient>> | undefined;

  before(async () => {
    fx = await startEmbeddedFixture([DEVICE], { COMMAND_API_TOKENS_FILE: writeRoleTokens(tmp.dir) }, { console: true });
    assert.ok(fx.pipeline.console, 'the fixture runs the console');
    browser = await TestBrowser.launch({ artifacts: 'test-artifacts/console' });
    field = await startTestFieldClient(fx.pki.paths, DEVICE, fx.pipeline.gatewayUrl, fx.logs.logger);
    field.commands.register('ping', () => ({ status: 'completed', result: RESULT }));
  });
  after(async () => {
    await w?.close().catch(() => {});
    await browser?.close();
    await field?.close();
    await fx?.stop();
    tmp.cleanup();
  });

  /** Unicode's format characters (bidi controls, marks, zero-width space...) but the joiners, in `text`. */
  const invisible = (text: string) => [...text.matchAll(/(?![\u200c\u200d])\p{Cf}/gu)].map((m) => `U+${m[0].codePointAt(0)!.toString(16)}`);

  it('in the values, events, command results and hover texts, each as \\uXXXX', async () => {
    assert.ok(field);
    w = await browser.open('about:blank');
    w.page.setDefaultTimeout(WAIT_MS);
    await w.page.goto(fx.pipeline.console!.url);
    await w.page.fill(sel('login-token'), ROLE_TOKENS.operator);
    await w.page.click(sel('login-submit'));
    await w.page.waitForSelector(sel('fleet-row', { 'device-id': DEVICE, state: 'online' }));
    await field.client.submit('timeseries', { level: 3, note: NOTE, timestamp: Date.now() });
    await field.client.submit('event', { eventType: 'valve.stuck', severity: 'critical', message: MESSAGE, timestamp: Date.now() });

    // The fleet's hover text of the last reading.
    const readingCell = `${sel('fleet-row', { 'device-id': DEVICE })} .vcell-lastReading`;
    await w.page.waitForFunction((s) => (document.querySelector(s)?.getAttribute('title') ?? '').includes('pump'), readingCell);
    const hover = (await w.page.getAttribute(readingCell, 'title')) ?? '';
    assert.deepEqual(invisible(hover), [], `the fleet's hover text: ${JSON.stringify(hover)}`);
    assert.match(hover, /pump\\u20671-ffo\\u2069 ok\\u200b/);

    await w.page.evaluate((id) => void (location.hash = `#/device/${id}`), DEVICE);
    await w.page.waitForSelector(sel('latest-value', { field: 'note' }));
    assert.equal(await w.page.textContent(sel('latest-value', { field: 'note' })), 'pump\\u20671-ffo\\u2069 ok\\u200b');
    await w.page.waitForSelector(sel('device-event-row'));
    assert.match((await w.page.textContent(sel('device-event-row'))) ?? '', /valve \\u202bstuck\\u202c\\u200f/);

    await w.page.fill(sel('command-name'), 'ping');
    await w.page.click(sel('command-submit'));
    await w.page.waitForSelector(`${sel('command-row', { state: 'completed' })}`);
    const row = (await w.page.textContent(sel('command-row', { state: 'completed' }))) ?? '';
    assert.match(row, /report\\u202efdp\.exe/, row);

    const shown = await w.page.evaluate(() => document.body.innerText + [...document.querySelectorAll('[title]')].map((e) => e.getAttribute('title')).join(' '));
    assert.deepEqual(invisible(shown), [], 'no format character on the page');
    await w.screenshot('invisible-text-device', { fullPage: true });
    w.assertClean();
  });
});
