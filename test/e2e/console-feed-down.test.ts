import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { OperatorConsole } from '../../internal-network/console/console.ts';
import { TestBrowser, type WatchedPage } from '../helpers/browser.ts';
import { ROLE_TOKENS, writeRoleTokens } from '../helpers/console-client.ts';
import { extraConsole, startEmbeddedFixture, type EmbeddedFixture } from '../helpers/embedded.ts';
import { startTestFieldClient } from '../helpers/field.ts';
import { tempDir } from '../helpers/pki.ts';
import { TcpRelay } from '../helpers/tcp-relay.ts';

/**
 * The console's own connection to the internal broker lost (a relay between them cut), while the
 * broker, the bridge and the distributor are fine: the console hears nothing of the fleet, so the
 * devices it shows are as of the cut (one that went offline meanwhile still online). The pages
 * say so over every page, with since when, and the pipeline page names the console's own feed, until
 * it is connected again; then the presences it missed are read from the store, and the device is
 * shown offline. A real browser, the embedded pipeline, a real field client.
 * docs/console.md.
 */

const DEVICE = 'meter-1';
const WAIT_MS = 30_000;
const sel = (testid: string, attrs: Record<string, string> = {}) =>
  `[data-testid="${testid}"]${Object.entries(attrs).map(([k, v]) => `[data-${k}="${v}"]`).join('')}`;

describe("the console pages while the console's own feed is down", () => {
  const tmp = tempDir('console-feed-down');
  let fx: EmbeddedFixture;
  let relay: TcpRelay;
  let console_: OperatorConsole;
  let browser: TestBrowser;
  let w: WatchedPage | undefined;
  let field: Awaited<ReturnType<typeof startTestFieldClient>> | undefined;

  before(async () => {
    fx = await startEmbeddedFixture([DEVICE], { COMMAND_API_TOKENS_FILE: writeRoleTokens(tmp.dir) });
    relay = new TcpRelay({ host: '127.0.0.1', port: fx.pipeline.broker.port });
    await relay.start();
    console_ = await extraConsole(fx, 'console-feed-down', { MQTT_URL: `mqtts://127.0.0.1:${relay.port}` });
    browser = await TestBrowser.launch({ artifacts: 'test-artifacts/console' });
  });
  after(async () => {
    await w?.close().catch(() => {});
    await browser?.close();
    await field?.close();
    await console_?.close();
    await relay?.close();
    await fx?.stop();
    tmp.cleanup();
  });

  it('says the console hears nothing of the fleet since the cut, on every page and in the pipeline, until its feed is back', async () => {
    w = await browser.open('about:blank');
    w.page.setDefaultTimeout(WAIT_MS);
    await w.page.goto(console_.url);
    await w.page.fill(sel('login-token'), ROLE_TOKENS.viewer);
    await w.page.click(sel('login-submit'));
    await w.page.waitForSelector(sel('live-status', { state: 'live' }));
    field = await startTestFieldClient(fx.pki.paths, DEVICE, fx.pipeline.gatewayUrl, fx.logs.logger);
    const row = sel('fleet-row', { 'device-id': DEVICE });
    await w.page.waitForSelector(`${row}[data-state="online"]`);
    await w.page.waitForSelector('main[data-feed="ok"]');
    assert.equal(await w.page.textContent(sel('fleet-count')), '1 device', 'one device, counted in the singular');
    assert.equal(await w.page.isVisible(sel('feed-down')), false, 'no notice while the console hears the fleet');

    const beforeCut = Date.now();
    await relay.cut();
    await field.close();
    field = undefined;
    await w.page.waitForSelector(sel('feed-down'), { state: 'visible' });
    const notice = (await w.page.textContent(sel('feed-down'))) ?? '';
    assert.match(notice, /not receiving/i, notice);
    const since = Number(await w.page.getAttribute(sel('feed-down'), 'data-since'));
    assert.ok(since <= beforeCut + 1000 && since > beforeCut - 10_000, `since the console last heard the feed (${since}, cut at ${beforeCut})`);
    // The page's own stream is fine: it is the console that hears nothing.
    assert.equal(await w.page.getAttribute(sel('live-status'), 'data-state'), 'live');
    assert.equal(await w.page.getAttribute(row, 'data-state'), 'online', 'the row is what the console last heard');
    assert.equal(await w.page.getAttribute('main', 'data-feed'), 'down');
    await w.screenshot('feed-down-fleet');
    // The management API's state of the pipeline says so too: its devices are as of the cut.
    const status = async () => (await (await fetch(new URL('/api/v1/manage/status', console_.url), { headers: { authorization: `Bearer ${ROLE_TOKENS.viewer}` } })).json()) as { feed: { connected: boolean; downSince: string | null } };
    const cut = await status();
    assert.equal(cut.feed.connected, false);
    assert.ok(cut.feed.downSince !== null && Math.abs(Date.parse(cut.feed.downSince) - since) < 5_000, `down since ${cut.feed.downSince}, the page says ${new Date(since).toISOString()}`);

    await w.page.evaluate(() => void (location.hash = '#/pipeline'));
    await w.page.waitForSelector(sel('pipeline-feed-state', { state: 'bad' }));
    assert.equal(await w.page.isVisible(sel('feed-down')), true, 'said on every page');

    await relay.restore();
    await w.page.waitForSelector(sel('pipeline-feed-state', { state: 'ok' }));
    await w.page.waitForSelector(sel('feed-down'), { state: 'hidden' });
    assert.equal(await w.page.getAttribute('main', 'data-feed'), 'ok');
    assert.deepEqual((await status()).feed, { connected: true, downSince: null });
    // What the console missed while cut (its subscription is not durable) is read from the store
    // once it is back: the device that went offline meanwhile is shown offline, not online for ever.
    await w.page.evaluate(() => void (location.hash = '#/fleet'));
    await w.page.waitForSelector(`${row}[data-state="offline"]`);
    w.assertClean();
  });
});
