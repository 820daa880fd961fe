import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { TestBrowser, type WatchedPage } from '../helpers/browser.ts';
import { ROLE_TOKENS, writeRoleTokens } from '../helpers/console-client.ts';
import { startEmbeddedFixture, type EmbeddedFixture } from '../helpers/embedded.ts';
import { startTestFieldClient } from '../helpers/field.ts';
import { tempDir } from '../helpers/pki.ts';
import { TcpRelay } from '../helpers/tcp-relay.ts';

/**
 * The pages while their live feed is down (the console unreachable from the browser: a relay
 * between them cut): what they show is what the console said last, and may no longer be true (a
 * device shown online that went offline meanwhile). The page says so, with since when, and marks
 * what it shows as not live, until the feed is back and the states are the console's again. A real
 * browser, the embedded pipeline, a real field client. docs/console.md.
 */

const DEVICE = 'meter-1';
const WAIT_MS = 30_000;
const sel = (testid: string, attrs: Record<string, string> = {}) =>
  `[data-testid="${testid}"]${Object.entries(attrs).map(([k, v]) => `[data-${k}="${v}"]`).join('')}`;
/** What the page logs while the console cannot be reached: its own requests failing. */
const ALLOWED = [/Failed to load resource: net::ERR_/];

describe('the console pages while their live feed is down', () => {
  const tmp = tempDir('console-live-down');
  let fx: EmbeddedFixture;
  let relay: TcpRelay;
  let browser: TestBrowser;
  let w: WatchedPage | undefined;
  let field: Awaited<ReturnType<typeof startTestFieldClient>> | undefined;

  before(async () => {
    fx = await startEmbeddedFixture([DEVICE], { COMMAND_API_TOKENS_FILE: writeRoleTokens(tmp.dir) }, { console: true });
    assert.ok(fx.pipeline.console, 'the fixture runs the console');
    relay = new TcpRelay({ host: '127.0.0.1', port: fx.pipeline.console.port });
    await relay.start();
    browser = await TestBrowser.launch({ artifacts: 'test-artifacts/console' });
  });
  after(async () => {
    await w?.close().catch(() => {});
    await browser?.close();
    await field?.close();
    await relay?.close();
    await fx?.stop();
    tmp.cleanup();
  });

  it('says the states shown are as of the last word from the console, and marks them, until the feed is back', async () => {
    w = await browser.open('about:blank');
    w.page.setDefaultTimeout(WAIT_MS);
    await w.page.goto(`http://127.0.0.1:${relay.port}/`);
    await w.page.fill(sel('login-token'), ROLE_TOKENS.viewer);
    await w.page.click(sel('login-submit'));
    await w.page.waitForSelector(sel('live-status', { state: 'live' }));
    field = await startTestFieldClient(fx.pki.paths, DEVICE, fx.pipeline.gatewayUrl, fx.logs.logger);
    const row = sel('fleet-row', { 'device-id': DEVICE });
    await w.page.waitForSelector(`${row}[data-state="online"]`);
    assert.equal(await w.page.isVisible(sel('live-down')), false, 'no notice while the feed is live');
    assert.equal(await w.page.getAttribute('main', 'data-live'), 'live');

    // The browser loses the console; the device goes offline meanwhile.
    const beforeCut = Date.now();
    await relay.cut();
    await field.close();
    field = undefined;
    await w.page.waitForSelector(sel('live-status', { state: 'reconnecting' }));
    // The row still says what the console said last: online. The page must not let that pass for now.
    assert.equal(await w.page.getAttribute(row, 'data-state'), 'online');
    await w.page.waitForSelector(sel('live-down'), { state: 'visible' });
    const notice = (await w.page.textContent(sel('live-down'))) ?? '';
    assert.match(notice, /not live/i);
    assert.match(notice, /as (the console said|they were)/i, notice);
    const since = Number(await w.page.getAttribute(sel('live-down'), 'data-since'));
    assert.ok(since <= beforeCut + 1000 && since > beforeCut - 10_000, `the notice's time is the last word from the console (${since}, cut at ${beforeCut})`);
    assert.equal(await w.page.getAttribute('main', 'data-live'), 'down', 'what the pages show is marked as not live');
    await w.screenshot('live-down-fleet');

    // A page opened meanwhile says it too.
    await w.page.evaluate((id) => void (location.hash = `#/device/${id}`), DEVICE);
    await w.page.waitForSelector(sel('page-device'));
    assert.equal(await w.page.isVisible(sel('live-down')), true);

    // The console back: the feed is live, the notice gone, the state the console's own.
    await relay.restore();
    await w.page.waitForSelector(sel('live-status', { state: 'live' }), { timeout: 60_000 });
    await w.page.waitForSelector(sel('device-state', { state: 'offline' }));
    assert.equal(await w.page.isVisible(sel('live-down')), false, 'the notice goes once the feed is live');
    assert.equal(await w.page.getAttribute('main', 'data-live'), 'live');
    w.assertClean(ALLOWED);
  });
});
