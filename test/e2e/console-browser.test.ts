import assert from 'node:assert/strict';
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Route } from 'playwright-core';
import { COOKIE_NAME } from '../../internal-network/console/web/server.ts';
import { CONSOLE } from '../../shared/limits.ts';
import { TestBrowser, type WatchedPage } from '../helpers/browser.ts';
import { ROLE_TOKENS, writeRoleTokens } from '../helpers/console-client.ts';
import { startEmbeddedFixture, type EmbeddedFixture } from '../helpers/embedded.ts';
import { startTestFieldClient } from '../helpers/field.ts';
import { tempDir } from '../helpers/pki.ts';
import { RawDevice } from '../helpers/ws-device.ts';

/**
 * The operator console's pages in headless Chromium on the embedded pipeline (issue 13, "Tested in
 * a real browser"): each role logs in through the form, with the token in no URL; a device appears
 * when its field client connects, a new reading, its chart and health and a security event arrive
 * without reloading; an operator's command completes and a viewer's is refused; a forged cookie, a
 * missing CSRF token and markup in a device's values are refused or shown as text; a tab whose
 * token another tab's login made stale still logs out and sends commands; 5,000 devices
 * draw a few dozen rows and search narrows them, and reach a tab on a slow link in parts, shown
 * only once whole. No page reports a CSP violation or an uncaught
 * error. Screenshots of each page go to test-artifacts/console/. docs/console.md.
 */

type Role = keyof typeof ROLE_TOKENS;
const ROLES: Role[] = ['viewer', 'operator', 'admin'];
const DEVICE = 'meter-1';
const ROGUE = 'rogue-1';
/** Markup a device sends as values: shown as text, never run. */
const IMG = '<img src=x onerror="window.__pwned=1">';
const SCRIPT = '<script>window.__pwned=2</script>';
/** The only console errors a page may show: the refusals this file provokes on purpose (fetch 403s). */
const ALLOWED = [/Failed to load resource: the server responded with a status of 403/];
const WAIT_MS = 30_000;

const sel = (testid: string, attrs: Record<string, string> = {}) =>
  `[data-testid="${testid}"]${Object.entries(attrs).map(([k, v]) => `[data-${k}="${v}"]`).join('')}`;

/**
 * Waits until a canvas of `chart` holds at least `min` pixels of the series' colour (#1f5fbf, give
 * or take anti-aliasing), and says how many.
 */
async function seriesPixels(w: WatchedPage, chart: string, min: number): Promise<number> {
  const drawn = await w.page.waitForFunction(({ chart, min }) => {
    for (const c of document.querySelectorAll<HTMLCanvasElement>(`${chart} canvas`)) {
      const ctx = c.getContext('2d');
      if (!ctx || c.width === 0 || c.height === 0) continue;
      const px = ctx.getImageData(0, 0, c.width, c.height).data;
      let n = 0;
      for (let i = 0; i < px.length; i += 4) if (px[i + 3]! > 128 && px[i + 2]! > 150 && px[i]! < 90 && px[i + 1]! > 60 && px[i + 1]! < 130) n++;
      if (n >= min) return n;
    }
    return false;
  }, { chart, min });
  return (await drawn.jsonValue()) as number;
}

describe('the operator console in a real browser', () => {
  const tmp = tempDir('console-browser');
  let fx: EmbeddedFixture;
  let base: string;
  let browser: TestBrowser;
  let field: Awaited<ReturnType<typeof startTestFieldClient>> | undefined;
  /** every page opened, with every URL it visited or requested */
  const opened: Array<{ w: WatchedPage; urls: string[]; posts: Array<{ url: string; body: string }> }> = [];
  const pages = {} as Record<Role, WatchedPage>;

  before(async () => {
    fx = await startEmbeddedFixture(
      [DEVICE, ROGUE],
      { COMMAND_API_TOKENS_FILE: writeRoleTokens(tmp.dir), DISTRIBUTOR_REQUIRE_SIGNATURES: 'true', CONSOLE_LOGIN_ATTEMPTS_PER_MINUTE: '50' },
      { console: true },
    );
    assert.ok(fx.pipeline.console, 'the fixture runs the console');
    base = fx.pipeline.console.url;
    browser = await TestBrowser.launch({ artifacts: 'test-artifacts/console' });
  });
  after(async () => {
    for (const { w } of opened) await w.close().catch(() => {});
    await browser?.close();
    await field?.close();
    await fx?.stop();
    tmp.cleanup();
  });

  /** Records every URL the page visits or requests from now on. */
  function record(w: WatchedPage): void {
    const rec = { w, urls: [] as string[], posts: [] as Array<{ url: string; body: string }> };
    opened.push(rec);
    w.page.setDefaultTimeout(WAIT_MS);
    w.page.on('request', (r) => {
      rec.urls.push(r.url());
      if (r.method() === 'POST') rec.posts.push({ url: r.url(), body: r.postData() ?? '' });
    });
    w.page.on('framenavigated', (f) => rec.urls.push(f.url()));
  }

  /** A new browser context (its own cookies) on the console, recording every URL from the first request on. */
  async function openConsole(cookies: Array<{ name: string; value: string }> = []): Promise<WatchedPage> {
    const w = await browser.open('about:blank');
    record(w);
    if (cookies.length > 0) await w.context.addCookies(cookies.map((c) => ({ ...c, url: base })));
    await w.page.goto(base);
    return w;
  }

  /** Another tab of the same browser as `w` (the same cookies) on the console. */
  async function openTab(w: WatchedPage): Promise<WatchedPage> {
    const tab = await browser.openTab(w, 'about:blank');
    record(tab);
    await tab.page.goto(base);
    return tab;
  }

  /** Marks the document, so a later check can tell it was never reloaded. */
  const mark = (w: WatchedPage) => w.page.evaluate(() => void ((window as unknown as { __sameDocument: boolean }).__sameDocument = true));
  const stillSameDocument = async (w: WatchedPage) =>
    assert.equal(await w.page.evaluate(() => (window as unknown as { __sameDocument?: boolean }).__sameDocument), true, 'the page was not reloaded');

  const go = async (w: WatchedPage, hash: string, root: string) => {
    await w.page.evaluate((h) => void (location.hash = h), hash);
    await w.page.waitForSelector(sel(root));
  };

  /** A fetch from inside the page, as a script of the console's origin would send it. */
  const pageFetch = (w: WatchedPage, path: string, init: { body: unknown; csrf: 'none' | 'session' }) =>
    w.page.evaluate(async ({ path, body, csrf }) => {
      const headers: Record<string, string> = { 'content-type': 'application/json' };
      if (csrf === 'session') {
        const s = (await (await fetch('/api/session', { credentials: 'same-origin' })).json()) as { csrfToken: string };
        headers['x-csrf-token'] = s.csrfToken;
      }
      const res = await fetch(path, { method: 'POST', credentials: 'same-origin', headers, body: JSON.stringify(body) });
      return { status: res.status, body: (await res.json()) as { error?: { code: string }; commandId?: string } };
    }, { path, ...init });

  const allClean = () => {
    for (const { w } of opened) w.assertClean(ALLOWED);
  };

  it('logs in as each role through the form; the role is shown; the token is in no URL', async () => {
    for (const role of ROLES) {
      const w = await openConsole();
      await w.page.waitForSelector(sel('page-login'));
      assert.equal(await w.page.locator(sel('page-fleet')).count(), 0, 'nothing but the login view before logging in');
      if (role === 'viewer') await w.screenshot('login');
      await w.page.fill(sel('login-token'), ROLE_TOKENS[role]);
      await w.page.click(sel('login-submit'));
      await w.page.waitForSelector(sel('user-role', { role }));
      await w.page.waitForSelector(sel('page-fleet'));
      await w.page.waitForSelector(sel('live-status', { state: 'live' }));
      assert.equal(await w.page.textContent(sel('user-role')), role);
      assert.equal(await w.page.textContent(sel('user-name')), `${role}-user`);
      assert.equal(await w.page.locator(sel('page-login')).count(), 0, 'the login view is gone');
      pages[role] = w;
    }
    await pages.admin.screenshot('fleet-3-devices');

    const tokens = Object.values(ROLE_TOKENS);
    for (const { w, urls, posts } of opened) {
      // The recorder saw the login: the token went in the body of a POST, which is where it belongs.
      const loginPost = posts.find((p) => new URL(p.url).pathname === '/api/login');
      assert.ok(loginPost, 'the login request was recorded');
      assert.ok(tokens.some((t) => loginPost.body.includes(t)), 'the token travelled in the login body');
      assert.ok(urls.some((u) => u.includes('/api/live')), 'the live stream was recorded too');
      for (const u of [...urls, w.page.url()]) for (const t of tokens) assert.ok(!u.includes(t), `a token in the URL ${u}`);
      const stored = await w.page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }) + document.cookie);
      for (const t of tokens) assert.ok(!stored.includes(t), 'no token in storage');
      assert.ok(!stored.includes(COOKIE_NAME), 'the session cookie is out of the scripts\' reach (HttpOnly)');
    }
    allClean();
  });

  it('shows a device online in the fleet when its field client connects, without reloading', async () => {
    const w = pages.admin;
    const row = sel('fleet-row', { 'device-id': DEVICE });
    await w.page.waitForSelector(row);
    assert.notEqual(await w.page.getAttribute(row, 'data-state'), 'online', 'not online before its client connects');
    await mark(w);
    field = await startTestFieldClient(fx.pki.paths, DEVICE, fx.pipeline.gatewayUrl, fx.logs.logger, { FIELD_HEALTH_INTERVAL_S: '1' });
    field.commands.register('ping', () => ({ status: 'completed', result: 'pong' }));
    await w.page.waitForSelector(sel('fleet-row', { 'device-id': DEVICE, state: 'online' }));
    assert.equal(await w.page.textContent(`${row} ${sel('fleet-state')}`), 'online');
    await stillSameDocument(w);
    allClean();
  });

  it('shows a new reading on the device page without reloading, with its chart and health', async () => {
    assert.ok(field);
    const w = pages.operator;
    await w.page.click(`${sel('fleet-row', { 'device-id': DEVICE })} a`);
    await w.page.waitForSelector(sel('page-device'));
    assert.equal(await w.page.textContent(sel('device-id')), DEVICE);
    // A steady signal with a little noise (history for the chart, a baseline for the detectors)...
    const t0 = Date.now() - 10 * 60_000;
    const level = (i: number) => 60 + Math.sin(i / 5) * 0.5 + (i % 3) * 0.05;
    await field.client.submitMany(Array.from({ length: 120 }, (_, i) => ({ dataType: 'timeseries' as const, payload: { level: level(i), timestamp: t0 + i * 1000 } })));
    const cell = sel('latest-value', { field: 'level' });
    await w.page.waitForFunction(({ cell, v }) => document.querySelector(cell)?.textContent === v, { cell, v: String(Number(level(119).toFixed(3))) });
    await w.page.waitForSelector(`${sel('chart', { field: 'level' })} canvas`);
    await mark(w);
    // ...then a new reading far outside it.
    await field.client.submit('timeseries', { level: 250, timestamp: t0 + 121_000 });
    await w.page.waitForFunction((cell) => document.querySelector(cell)?.textContent === '250', cell);
    await stillSameDocument(w);

    // The chart holds the history (its "no values" status hidden) and its line is drawn on the canvas.
    const chart = sel('chart', { field: 'level' });
    await w.page.waitForSelector(`${chart} ${sel('chart-status')}`, { state: 'hidden' });
    assert.ok((await seriesPixels(w, chart, 51)) > 50, 'the line is drawn');

    // Its health, from the heartbeats of the field client.
    await w.page.waitForSelector(sel('health-value', { field: 'uptime_s' }));
    await w.page.waitForSelector(sel('health-value', { field: 'queue_messages' }));
    assert.match((await w.page.textContent(sel('health-time'))) ?? '', /^Heartbeat of /);
    await w.page.waitForSelector(sel('device-state', { state: 'online' }));
    await w.screenshot('device', { fullPage: true });

    // A long value comes cut in its `device` event (bounded as every event of the stream); the page
    // reads the whole reading (GET /api/devices/:id) when asked, and shows it whole: a value past
    // the 200 characters a value is cut to elsewhere too (it ended in "…", nothing said cut).
    const note = `${'n'.repeat(150)} ${'w'.repeat(300)}.`;
    await field.client.submit('timeseries', { level: 61, note, timestamp: t0 + 122_000 });
    const noteCell = sel('latest-value', { field: 'note' });
    await w.page.waitForFunction((s) => document.querySelector(s)?.textContent === `${'n'.repeat(40)}…`, noteCell);
    await w.page.click(sel('latest-whole-button'));
    await w.page.waitForFunction(({ s, note }) => document.querySelector(s)?.textContent === note, { s: noteCell, note });
    assert.ok(await w.page.locator(sel('latest-cut')).isHidden(), 'nothing cut shown');
    // Another reading of the same time (it replaces the latest: console/fleet) is shown, not the
    // whole of the one read before it.
    const other = `${'m'.repeat(150)}.`;
    await field.client.submit('timeseries', { level: 62, note: other, timestamp: t0 + 122_000 });
    await w.page.waitForFunction((s) => document.querySelector(s)?.textContent === '62', cell);
    assert.equal(await w.page.textContent(noteCell), `${'m'.repeat(40)}…`);
    assert.ok(await w.page.locator(sel('latest-cut')).isVisible(), 'what is cut is said again');
    allClean();
  });

  it('says on the device page how many of its events it does not show, left out of what the console sends or no longer kept ("N more events not shown")', async () => {
    // Events of 100 fields of 200 characters: more than the device's answer (GET /api/devices/:id,
    // CONSOLE.deviceAnswerListMaxBytes) and its live `device` event (40 KiB) carry.
    const c = fx.pipeline.console;
    assert.ok(c);
    const fields = Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`f${i}`, `${i}`.padEnd(200, 'x')]));
    const t0 = Date.now();
    // A registered device's (a row of its own would change the fleet's count the tests below expect).
    // Ten more than the console keeps of a device (CONSOLE.perDeviceRing): those are not shown either.
    const sent = CONSOLE.perDeviceRing + 10;
    for (let i = 0; i < sent; i++) c.fleet.apply({ measurement: 'events', tags: { device: ROGUE }, fields, time: t0 + i });
    const w = pages.viewer;
    await go(w, `#/device/${ROGUE}`, 'page-device');
    const note = sel('events-omitted');
    await w.page.waitForSelector(note, { state: 'visible' });
    const shown = await w.page.locator(sel('device-event-row')).count();
    assert.ok(shown > 0 && shown < CONSOLE.perDeviceRing, `some events shown: ${shown}`);
    assert.equal(await w.page.getAttribute(note, 'data-omitted'), String(sent - shown), 'the note counts those not shown, the ones the console no longer keeps too');
    assert.equal(await w.page.textContent(note), `${sent - shown} more events not shown.`);
    assert.ok(await w.page.locator(sel('security-omitted')).isHidden(), 'no note for a list with nothing left out');
    allClean();
  });

  it('says on the device page that a health reading came cut, and how many of its fields were left out', async () => {
    // A heartbeat whose values are longer than the live `device` event carries (40 characters, and
    // the fields past 2,000 characters of text left out): shown cut, and said so.
    const c = fx.pipeline.console;
    assert.ok(c);
    const fields = Object.fromEntries(Array.from({ length: 60 }, (_, i) => [`local_note_${i}`, `${i}`.padEnd(100, 'h')]));
    c.fleet.apply({ measurement: 'device_health', tags: { device: ROGUE }, fields: { uptime_s: 5, ...fields }, time: Date.now() });
    const w = pages.viewer;
    await go(w, `#/device/${ROGUE}`, 'page-device');
    const note = sel('health-cut');
    await w.page.waitForSelector(note, { state: 'visible' });
    const shown = await w.page.locator(sel('health-value')).count();
    const omitted = 61 - shown;
    assert.ok(omitted > 0, `fields left out: ${omitted}`);
    assert.equal(await w.page.textContent(note), `Long values cut, ${omitted} fields left out.`);
    assert.equal(await w.page.textContent(sel('health-value', { field: 'local_note_0' })), `0${'h'.repeat(39)}…`);
    allClean();
  });

  it('loads the history of a device of many fields two charts at a time, and fills every chart', async () => {
    assert.ok(field);
    const w = pages.operator;
    await w.page.waitForSelector(sel('page-device'));
    // Every history read the page makes, counted while it runs (the browser itself would run six
    // at once over HTTP/1.1, every one at once over HTTP/2).
    let running = 0;
    let most = 0;
    let asked = 0;
    const isHistory = (r: { url(): string }) => r.url().includes('/history?');
    const started = (r: { url(): string }) => {
      if (!isHistory(r)) return;
      asked++;
      most = Math.max(most, ++running);
    };
    const ended = (r: { url(): string }) => {
      if (isHistory(r)) running--;
    };
    w.page.on('request', started);
    w.page.on('requestfinished', ended);
    w.page.on('requestfailed', ended);
    try {
      const fields = Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`m${i}`, i + 0.5]));
      await field.client.submit('timeseries', { ...fields, timestamp: Date.now() });
      await w.page.waitForSelector(sel('latest-value', { field: 'm9' }));
      // The page opened afresh: a chart for each numeric field, each with its history to load.
      await w.page.reload();
      for (const f of Object.keys(fields)) {
        await w.page.waitForSelector(sel('chart', { field: f }));
        await w.page.waitForSelector(`${sel('chart', { field: f })} ${sel('chart-status')}`, { state: 'hidden' });
      }
      await w.page.waitForFunction(() => !document.querySelector('[data-testid="chart-status"]:not([hidden])')?.textContent?.startsWith('Loading'));
      assert.ok(asked >= 10, `${asked} history reads`);
      assert.ok(most <= 2, `${most} history reads at once`);
      for (const status of await w.page.locator(sel('chart-status')).allTextContents()) assert.doesNotMatch(status, /not available/);
    } finally {
      w.page.off('request', started);
      w.page.off('requestfinished', ended);
      w.page.off('requestfailed', ended);
    }
    allClean();
  });

  it('a chart whose window holds a single reading draws it as a point', async () => {
    const w = pages.operator;
    // The fields m0..m9 of the test above: one reading each (held twice by the page, as its history
    // bucket's mean and live, a fraction of a pixel apart): no line one could see.
    const chart = sel('chart', { field: 'm0' });
    await w.page.waitForSelector(`${chart} ${sel('chart-status')}`, { state: 'hidden' });
    // The point's mark (the legend's marker is an element, not on the canvas).
    assert.ok((await seriesPixels(w, chart, 10)) >= 10, 'the lone reading is drawn');
    allClean();
  });

  it('a reading dated 6 days ahead (a device clock that jumped; the distributor stores up to LIMITS.pointMaxAheadMs ahead) is the latest until the next, correct one replaces it, and the chart goes on drawing', async () => {
    assert.ok(field);
    const w = pages.operator;
    await w.page.waitForSelector(sel('page-device'));
    const cell = sel('latest-value', { field: 'level' });
    await field.client.submit('timeseries', { level: 999, timestamp: Date.now() + 6 * 86_400_000 });
    await w.page.waitForFunction((cell) => document.querySelector(cell)?.textContent === '999', cell);
    await field.client.submit('timeseries', { level: 61.5, timestamp: Date.now() });
    await w.page.waitForFunction((cell) => document.querySelector(cell)?.textContent === '61.5', cell);
    // The chart's newest point, at the right edge of its window (the legend shows the point under
    // the cursor), is the correct reading: the one 6 days ahead did not move the window there.
    const chart = sel('chart', { field: 'level' });
    const box = await w.page.locator(`${chart} .u-over`).boundingBox();
    assert.ok(box, 'the chart is drawn');
    await w.page.mouse.move(box.x + box.width - 1, box.y + box.height / 2);
    try {
      await w.page.waitForFunction((chart) => document.querySelector(`${chart} .u-legend .u-series:nth-child(2) .u-value`)?.textContent === '61.5', chart, { timeout: 5_000 });
    } finally {
      await w.page.mouse.move(0, 0);
    }
    allClean();
  });

  it('shows a security event on the security page as it happens', async () => {
    const w = pages.admin;
    await w.page.click(sel('nav-security'));
    await w.page.waitForSelector(sel('page-security'));
    // The distributor's own finding, in its own list (the gateways' reports are listed apart).
    const row = `${sel('security-events')} ${sel('security-row', { device: ROGUE, reason: 'SECURITY_UNSIGNED', source: 'distributor' })}`;
    assert.equal(await w.page.locator(row).count(), 0, 'no event before it happens');
    await mark(w);
    const raw = await RawDevice.connect(fx.pipeline.gatewayUrl, RawDevice.tlsFor(fx.pki.paths, ROGUE));
    try {
      raw.send(JSON.stringify({ deviceId: ROGUE, dataType: 'timeseries', messageId: 'unsigned-1', payload: { v: 1 } }));
      await w.page.waitForSelector(row);
    } finally {
      raw.close();
    }
    await w.page.waitForSelector(sel('security-reason-row', { reason: 'SECURITY_UNSIGNED' }));
    await w.page.waitForSelector(sel('security-device-row', { device: ROGUE }));
    // How many devices have events, as the console counts them: none past those listed.
    assert.match((await w.page.locator(sel('security-total')).textContent()) ?? '', /, 1 device$/);
    assert.equal(await w.page.locator(sel('security-devices-more')).isVisible(), false, 'no "and K more" when every device is listed');
    await stillSameDocument(w);
    await w.screenshot('security', { fullPage: true });

    // 60 devices more with events: the 50 with most are listed live, then "and K more"; "Show more"
    // reads the next ones after the last listed (GET /api/security/devices?after=COUNT:DEVICE).
    // Registered (a key each) as well as heard of, so the fleet's count stays the key files' (below).
    const c = fx.pipeline.console;
    assert.ok(c);
    const keys = join(fx.pki.dir, 'internal', 'device-keys');
    const many = Array.from({ length: 60 }, (_, i) => `paged-${String(i).padStart(2, '0')}`);
    for (const [i, id] of many.entries()) {
      writeFileSync(join(keys, `${id}.key`), '');
      c.fleet.apply({ measurement: 'events', tags: { device: id }, fields: { n: 1 }, time: Date.now() });
      c.fleet.apply({ measurement: 'security_events', tags: { device: id, reason: 'SECURITY_UNSIGNED' }, fields: { count: 100 + i }, time: Date.now() });
    }
    const devices = sel('security-device-row');
    await w.page.waitForFunction(({ s, t }) => document.querySelector(s)?.textContent === t, { s: sel('security-devices-more'), t: 'and 11 more' });
    assert.equal(await w.page.locator(devices).count(), 50);
    await w.page.click(sel('security-devices-more-button'));
    await w.page.waitForFunction(({ s, n }) => document.querySelectorAll(s).length === n, { s: devices, n: 61 });
    const listed = await w.page.locator(devices).evaluateAll((els) => els.map((e) => e.getAttribute('data-device')));
    assert.deepEqual(listed, [...[...many].reverse(), ROGUE], 'every device once, in the console\'s order');
    assert.ok(await w.page.locator(sel('security-devices-more')).isHidden(), 'none more');

    // More of the distributor's findings than the page holds (its newest 200): how many it does not show is said.
    assert.ok(await w.page.locator(sel('security-recent-omitted')).isHidden(), 'nothing left out yet');
    for (let i = 0; i < 250; i++) c.fleet.apply({ measurement: 'security_events', tags: { device: many[0]!, reason: 'SECURITY_REPLAY' }, fields: {}, time: Date.now() });
    const found = 1 + many.length + 250;
    await w.page.waitForFunction(({ s, t }) => document.querySelector(s)?.textContent === t, { s: sel('security-recent-omitted'), t: `${found - 200} older events not shown.` });
    assert.equal(await w.page.locator(`${sel('security-events')} ${sel('security-row')}`).count(), 200);
    assert.ok(await w.page.locator(sel('security-reported-omitted')).isHidden(), 'no gateway report left out');
    allClean();
  });

  it('an operator sends a command from the device page and sees it complete; a viewer has no form and is refused', async () => {
    const op = pages.operator;
    await op.page.waitForSelector(sel('command-form'));
    assert.equal(await op.page.locator(sel('command-row')).count(), 0, 'no command yet');
    await op.page.fill(sel('command-name'), 'ping');
    await op.page.click(sel('command-submit'));
    await op.page.waitForFunction((s) => /^Sent: ping/.test(document.querySelector(s)?.textContent ?? ''), sel('command-status'));
    const id = await op.page.getAttribute(sel('command-row'), 'data-command-id');
    assert.ok(id);
    await op.page.waitForSelector(sel('command-row', { 'command-id': id, state: 'completed' }));
    assert.equal(await op.page.textContent(`${sel('command-row', { 'command-id': id })} ${sel('command-state')}`), 'completed');
    await op.screenshot('device-command-completed', { fullPage: true });

    const viewer = pages.viewer;
    await go(viewer, `#/device/${DEVICE}`, 'page-device');
    await viewer.page.waitForSelector(sel('command-readonly'));
    assert.equal(await viewer.page.locator(sel('command-form')).count(), 0, 'no command form for a viewer');
    assert.equal(await viewer.page.locator(sel('command-submit')).count(), 0);
    // A viewer sees the commands, though: the operator's, completed.
    await viewer.page.waitForSelector(sel('command-row', { 'command-id': id, state: 'completed' }));
    // Forcing it: a request with the session's valid CSRF token, refused for the role.
    const forced = await pageFetch(viewer, `/api/devices/${DEVICE}/commands`, { body: { command: 'ping' }, csrf: 'session' });
    assert.equal(forced.status, 403);
    assert.equal(forced.body.error?.code, 'CONSOLE_FORBIDDEN');
    allClean();
  });

  it('after a second login in another tab of the same browser, the first tab still logs out and sends commands; a login as another user sends it to the login view', async () => {
    // Each login replaces the browser's session cookie, so the CSRF token a tab already holds (made
    // for the session before) is refused. Each step acts at once, before the tab's live feed, whose
    // stream ends with the replaced session, asks for the session again.
    const a = await openConsole();
    const b = await openTab(a);
    const loginThrough = async (w: WatchedPage, role: Role) => {
      await w.page.waitForSelector(sel('page-login'));
      await w.page.fill(sel('login-token'), ROLE_TOKENS[role]);
      await w.page.click(sel('login-submit'));
      await w.page.waitForSelector(sel('user-role', { role }));
    };
    const sessionOf = (w: WatchedPage) =>
      w.page.evaluate(async () => (await (await fetch('/api/session', { credentials: 'same-origin' })).json()) as { authenticated: boolean; user?: string });

    // Tab B shows the login view from before tab A's login; then both log in as the operator.
    await b.page.waitForSelector(sel('page-login'));
    await loginThrough(a, 'operator');
    await a.page.waitForSelector(sel('live-status', { state: 'live' }));
    await loginThrough(b, 'operator');
    // Tab A's logout ends the browser's session (the same user's), tab B's view with it.
    await a.page.click(sel('logout'));
    await a.page.waitForSelector(sel('page-login'));
    assert.equal((await sessionOf(a)).authenticated, false, 'logged out');
    await b.page.waitForSelector(sel('page-login'));

    // Again; this time tab A, on a device's page, sends a command after tab B's login.
    await loginThrough(a, 'operator');
    await go(a, `#/device/${DEVICE}`, 'page-device');
    await a.page.waitForSelector(sel('live-status', { state: 'live' }));
    await a.page.fill(sel('command-name'), 'ping');
    await loginThrough(b, 'operator');
    await a.page.click(sel('command-submit'));
    await a.page.waitForFunction((s) => /^Sent: ping/.test(document.querySelector(s)?.textContent ?? ''), sel('command-status'));
    assert.equal(await a.page.locator(sel('command-error')).isVisible(), false);

    // Another user logs in in tab B: tab A's command is not sent as them, nor as anyone; tab A
    // shows the login view and says why, and leaves the viewer's session alone. Tab B's page, still
    // showing the operator, goes to the login view too.
    await a.page.waitForSelector(sel('live-status', { state: 'live' }));
    await b.page.evaluate(async (token) => {
      const s = (await (await fetch('/api/session', { credentials: 'same-origin' })).json()) as { csrfToken: string };
      await fetch('/api/login', { method: 'POST', credentials: 'same-origin', headers: { 'content-type': 'application/json', 'x-csrf-token': s.csrfToken }, body: JSON.stringify({ token }) });
    }, ROLE_TOKENS.viewer);
    // Not click(), which would wait for the button: tab A's live feed may have found the new login first.
    await a.page.evaluate((s) => document.querySelector<HTMLButtonElement>(s)?.click(), sel('command-submit'));
    await a.page.waitForSelector(sel('page-login'));
    assert.match((await a.page.textContent(sel('login-error'))) ?? '', /another tab/);
    assert.equal((await sessionOf(a)).user, 'viewer-user', "the viewer's login is untouched");
    await b.page.waitForSelector(sel('page-login'));
    assert.match((await b.page.textContent(sel('login-error'))) ?? '', /another tab/);
    await a.close();
    allClean();
  });

  it('a logout the server never answered (no connection, a server error) is not shown as done: the page stays, says so, and the next click logs out', async () => {
    // Shown the login view, the browser would still hold a live session's cookie: the next person
    // at it, reloading, would be logged in as this user.
    const w = await browser.open('about:blank');
    w.page.setDefaultTimeout(WAIT_MS);
    await w.page.goto(base);
    await w.page.waitForSelector(sel('page-login'));
    await w.page.fill(sel('login-token'), ROLE_TOKENS.viewer);
    await w.page.click(sel('login-submit'));
    await w.page.waitForSelector(sel('user-role', { role: 'viewer' }));
    const sessionOf = () => w.page.evaluate(async () => (await (await fetch('/api/session', { credentials: 'same-origin' })).json()) as { authenticated: boolean });
    for (const fail of [(r: Route) => r.abort('connectionreset'), (r: Route) => r.fulfill({ status: 503, contentType: 'application/json', body: '{"error":{"code":"CONSOLE_INTERNAL","message":"Unavailable."}}' })]) {
      await w.page.route('**/api/logout', fail);
      await w.page.click(sel('logout'));
      await w.page.waitForSelector(sel('logout-error'));
      assert.match((await w.page.textContent(sel('logout-error'))) ?? '', /Not logged out/);
      assert.equal(await w.page.locator(sel('page-login')).count(), 0, 'no login view over a session that lives on');
      assert.equal((await sessionOf()).authenticated, true, 'the session did live on');
      await w.page.unroute('**/api/logout');
    }
    await w.page.click(sel('logout'));
    await w.page.waitForSelector(sel('page-login'));
    assert.equal((await sessionOf()).authenticated, false, 'logged out');
    w.assertClean([...ALLOWED, /Failed to load resource: (net::ERR_CONNECTION_RESET|the server responded with a status of 503)/]);
    await w.close();
  });

  describe('bad input', () => {
    it('a forged or tampered session cookie gets the login view, not the fleet', async () => {
      const [real] = (await pages.admin.context.cookies(base)).filter((c) => c.name === COOKIE_NAME);
      assert.ok(real, 'the admin page has a session cookie');
      const tampered = `${real.value[0] === 'a' ? 'b' : 'a'}${real.value.slice(1)}`;
      for (const value of ['forged-session-id.c2lnbmF0dXJl', tampered]) {
        const w = await openConsole([{ name: COOKIE_NAME, value }]);
        await w.page.waitForSelector(sel('page-login'));
        assert.equal(await w.page.locator(sel('page-fleet')).count(), 0);
        assert.equal(await w.page.locator(sel('user-role')).count(), 0);
        await w.close();
      }
      // The real cookie in another browser is the admin's session: the control for the two above.
      const copy = await openConsole([{ name: COOKIE_NAME, value: real.value }]);
      await copy.page.waitForSelector(sel('user-role', { role: 'admin' }));
      await copy.close();
      allClean();
    });

    it('a POST without the CSRF token is refused (CONSOLE_CSRF_INVALID)', async () => {
      const noCsrf = await pageFetch(pages.operator, `/api/devices/${DEVICE}/commands`, { body: { command: 'ping' }, csrf: 'none' });
      assert.equal(noCsrf.status, 403);
      assert.equal(noCsrf.body.error?.code, 'CONSOLE_CSRF_INVALID');
      // The same request with the token is accepted: the token is what was missing.
      const withCsrf = await pageFetch(pages.operator, `/api/devices/${DEVICE}/commands`, { body: { command: 'ping' }, csrf: 'session' });
      assert.equal(withCsrf.status, 202, JSON.stringify(withCsrf.body));
      // A login without it, from a visitor's login view.
      const visitor = await openConsole();
      await visitor.page.waitForSelector(sel('page-login'));
      const login = await pageFetch(visitor, '/api/login', { body: { token: ROLE_TOKENS.operator }, csrf: 'none' });
      assert.equal(login.status, 403);
      assert.equal(login.body.error?.code, 'CONSOLE_CSRF_INVALID');
      await visitor.page.reload();
      await visitor.page.waitForSelector(sel('page-login'));
      await visitor.close();
      allClean();
    });

    it('markup in a device\'s values is shown as text and never runs', async () => {
      assert.ok(field);
      await field.client.submit('timeseries', { level: 60, label: IMG, note: SCRIPT, timestamp: Date.now() });
      const op = pages.operator;
      await op.page.waitForFunction((s) => document.querySelector(s)?.textContent === '<img src=x onerror="window.__pwned=1">', sel('latest-value', { field: 'label' }));
      assert.equal(await op.page.textContent(sel('latest-value', { field: 'label' })), IMG);
      assert.equal(await op.page.textContent(sel('latest-value', { field: 'note' })), SCRIPT);
      assert.ok(await op.page.locator(sel('latest-value', { field: 'label' })).isVisible(), 'visible, verbatim');

      const admin = pages.admin;
      await go(admin, '#/fleet', 'page-fleet');
      const reading = `${sel('fleet-row', { 'device-id': DEVICE })} .vcell-lastReading`;
      await admin.page.waitForFunction((s) => (document.querySelector(s)?.textContent ?? '').includes('window.__pwned=2'), reading);
      const text = (await admin.page.textContent(reading)) ?? '';
      assert.ok(text.includes(IMG) && text.includes(SCRIPT), text);

      for (const w of [op, admin]) {
        assert.equal(await w.page.evaluate(() => (window as unknown as { __pwned?: unknown }).__pwned), undefined, 'no script ran');
        // No element was made of the data: the page's only images and scripts are its own.
        assert.equal(await w.page.locator('img[src="x"], img[onerror]').count(), 0);
        assert.equal(await w.page.evaluate(() => [...document.scripts].filter((s) => s.textContent?.includes('__pwned')).length), 0);
      }
      await op.screenshot('device-markup-as-text', { fullPage: true });
      allClean();
    });

    it("a device's events show their type and severity (what the device called the event), markup in them as text", async () => {
      assert.ok(field);
      const op = pages.operator;
      await go(op, `#/device/${DEVICE}`, 'page-device');
      // The type and severity are the event's tags in the store (event_type, severity), its message a field.
      await field.client.submit('event', { eventType: 'valve.stuck', severity: 'critical', message: IMG, timestamp: Date.now() });
      await field.client.submit('event', { eventType: 'door.opened', timestamp: Date.now() + 1 });
      const row = (type: string) => `${sel('device-event-row')}:has(${sel('device-event-type')}:text-is("${type}"))`;
      await op.page.waitForSelector(row('valve.stuck'));
      await op.page.waitForSelector(row('door.opened'));
      assert.equal(await op.page.textContent(`${row('valve.stuck')} ${sel('device-event-severity')}`), 'critical');
      assert.ok(((await op.page.textContent(row('valve.stuck'))) ?? '').includes(IMG), 'the message, as text');
      assert.equal(await op.page.locator(`${row('door.opened')} ${sel('device-event-severity')}`).count(), 0, 'no severity where the device gave none');
      assert.equal(await op.page.evaluate(() => (window as unknown as { __pwned?: unknown }).__pwned), undefined, 'no script ran');
      assert.equal(await op.page.locator('img[src="x"], img[onerror]').count(), 0);
      allClean();
    });
  });

  it('with 5,000 more devices the fleet shows the count, draws only the rows in view, and search narrows them', async () => {
    const keys = join(fx.pki.dir, 'internal', 'device-keys');
    const bulk = Array.from({ length: 5000 }, (_, i) => `bulk-${String(i).padStart(5, '0')}`);
    for (const id of bulk) writeFileSync(join(keys, `${id}.key`), '');
    const total = readdirSync(keys).filter((f) => f.endsWith('.key')).length;
    assert.ok(total >= 5002);

    const w = pages.admin;
    await go(w, '#/fleet', 'page-fleet');
    await mark(w);
    await w.page.waitForFunction(({ s, t }) => document.querySelector(s)?.textContent === t, { s: sel('fleet-count'), t: `${total} devices` });
    await stillSameDocument(w);
    const rows = sel('fleet-row');
    // The count is written at once, the rows on the next frame.
    await w.page.waitForFunction((s) => document.querySelectorAll(s).length >= 10, rows);
    const drawn = await w.page.locator(rows).count();
    assert.ok(drawn >= 10 && drawn <= 80, `a few dozen row elements for ${total} devices, not thousands: ${drawn}`);
    // The table knows every row; its body is as tall as all of them, for the scroll bar.
    assert.equal(await w.page.getAttribute(sel('fleet-table'), 'aria-rowcount'), String(total + 1));
    await w.screenshot('fleet-5000');

    // Scrolled to the end: the last device is drawn, still with a few dozen elements.
    const ids = [...bulk, DEVICE, ROGUE].sort((a, b) => a.localeCompare(b));
    await w.page.evaluate((s) => {
      const t = document.querySelector(s)!;
      t.scrollTop = t.scrollHeight;
    }, sel('fleet-table'));
    await w.page.waitForSelector(sel('fleet-row', { 'device-id': ids.at(-1)! }));
    assert.equal(await w.page.locator(sel('fleet-row', { 'device-id': ids[0]! })).count(), 0, 'the first rows are no longer drawn');
    assert.ok((await w.page.locator(rows).count()) <= 80);

    // Search: exactly the ten matching devices, whatever was scrolled before.
    await w.page.fill(sel('fleet-search'), 'bulk-0421');
    await w.page.waitForFunction(({ s, t }) => document.querySelector(s)?.textContent === t, { s: sel('fleet-count'), t: `10 of ${total} devices` });
    await w.page.waitForFunction((s) => document.querySelectorAll(s).length === 10, rows);
    const shown = await w.page.locator(rows).evaluateAll((els) => els.map((e) => e.getAttribute('data-device-id')).sort());
    assert.deepEqual(shown, Array.from({ length: 10 }, (_, i) => `bulk-0421${i}`));
    await w.page.fill(sel('fleet-search'), 'no-such-device');
    await w.page.waitForSelector(sel('fleet-empty'), { state: 'visible' });
    await w.page.waitForFunction((s) => document.querySelectorAll(s).length === 0, rows);
    await w.page.fill(sel('fleet-search'), DEVICE);
    await w.page.waitForSelector(sel('fleet-row', { 'device-id': DEVICE, state: 'online' }));
    assert.equal(await w.page.locator(rows).count(), 1);
    await w.page.fill(sel('fleet-search'), '');
    allClean();
  });

  it('on a link too slow to bring its snapshot within the page\'s liveness timeout (15 s), a fleet larger than one snapshot event comes in parts, and is shown only whole', async () => {
    const total = readdirSync(join(fx.pki.dir, 'internal', 'device-keys')).filter((f) => f.endsWith('.key')).length;
    assert.ok(total > 5 * CONSOLE.liveSnapshotRowsPerEvent, `${total} devices: several snapshot events' worth`);
    // The snapshot's size, read as a page of an earlier version would (its stream, which asks for
    // no parts, up to the end of the snapshot): the one `snapshot` event that page knows.
    const { bytes, events } = await pages.admin.page.evaluate(async () => {
      const ctl = new AbortController();
      const res = await fetch('/api/live', { credentials: 'same-origin', signal: ctl.signal });
      const reader = res.body!.getReader();
      let text = '';
      const decoder = new TextDecoder();
      while (!/(^|\n\n)event: snapshot(-end)?\n[^]*?\n\n/.test(text)) {
        const { done, value } = await reader.read();
        if (done) break;
        text += decoder.decode(value, { stream: true });
      }
      ctl.abort();
      return { bytes: text.length, events: [...text.matchAll(/^event: (.+)$/gm)].map((m) => m[1] ?? '') };
    });
    assert.ok(bytes > 500_000, `a snapshot of ${bytes} bytes`);
    assert.deepEqual(events.filter((e) => e.startsWith('snapshot')), ['snapshot'], 'a stream that asked for no parts gets one snapshot event');

    // A tab of the admin's browser whose link brings the snapshot in 25 s: too slow for one event
    // (the page would take its stream for dead and reconnect, over and over), each part in a few.
    const w = await browser.openTab(pages.admin, 'about:blank');
    record(w);
    const cdp = await w.context.newCDPSession(w.page);
    await cdp.send('Network.enable');
    await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: Math.floor(bytes / 25), uploadThroughput: -1 });
    // Every count of devices and every state of the live feed the page shows, from its first frame.
    await w.page.addInitScript(() => {
      const seen: string[] = [];
      (window as unknown as { __shown: string[] }).__shown = seen;
      new MutationObserver(() => {
        const count = document.querySelector('[data-testid="fleet-count"]')?.textContent ?? '';
        const state = document.querySelector('[data-testid="live-status"]')?.getAttribute('data-state') ?? '';
        const now = `${state} ${count}`;
        if (seen.at(-1) !== now) seen.push(now);
      }).observe(document, { subtree: true, childList: true, characterData: true, attributes: true });
    });
    const started = Date.now();
    await w.page.goto(base);
    await w.page.waitForFunction(({ s, t }) => document.querySelector(s)?.textContent === t, { s: sel('fleet-count'), t: `${total} devices` }, { timeout: 90_000 });
    const took = Date.now() - started;
    await w.page.waitForSelector(sel('live-status', { state: 'live' }));
    const shown = await w.page.evaluate(() => (window as unknown as { __shown: string[] }).__shown);
    assert.ok(opened.find((o) => o.w === w)!.urls.some((u) => new URL(u).pathname === '/api/live' && new URL(u).searchParams.get('parts') === '1'), 'the page asks for its snapshot in parts');
    assert.ok(took > 15_000, `the snapshot took ${took} ms, longer than the page waits for a word from its stream`);
    assert.deepEqual(shown.filter((s) => s.startsWith('reconnecting')), [], 'never taken for dead and reconnected');
    // Before the snapshot is whole the page shows no fleet, not part of one as the fleet.
    const counts = new Set(shown.map((s) => s.slice(s.indexOf(' ') + 1)).filter((c) => c !== ''));
    assert.deepEqual([...counts].filter((c) => c !== '0 devices' && c !== `${total} devices`), [], `counts shown: ${[...counts].join(', ')}`);
    await w.page.waitForSelector(sel('fleet-row', { 'device-id': 'bulk-00000' }));
    await w.screenshot('fleet-slow-link');
    await cdp.detach();
    allClean();
  });

  it('shows the pipeline and the anomalies pages (screenshots), and no page reported a problem', async () => {
    const w = pages.admin;
    await w.page.click(sel('nav-pipeline'));
    await w.page.waitForSelector(sel('page-pipeline'));
    await w.page.waitForSelector(sel('pipeline-metric', { metric: 'readingsPerSecond' }));
    await w.page.waitForSelector(sel('pipeline-service-row'));
    // The console's own count of refused stored-feed messages: none here, known (not "unknown").
    const refused = w.page.locator(sel('pipeline-metric', { metric: 'feedRefused' }));
    assert.equal(await refused.locator('.metric-value').textContent(), '0');
    await w.screenshot('pipeline', { fullPage: true });

    await w.page.click(sel('nav-anomalies'));
    await w.page.waitForSelector(sel('page-anomalies'));
    // The spike sent in the device test, flagged by the console's detectors.
    await w.page.waitForSelector(sel('anomaly-row', { device: DEVICE, field: 'level' }));
    // Each row says what the anomaly looks like: the spike is one, found by the median detector.
    const spike = w.page.locator(sel('anomaly-row', { device: DEVICE, field: 'level', detector: 'mad', kind: 'spike' })).first();
    assert.equal(await spike.locator(sel('anomaly-kind')).textContent(), 'spike');
    assert.ok((await w.page.locator(`${sel('anomalies-table')} th`).allTextContents()).includes('Kind'), 'a Kind column');
    await w.screenshot('anomalies');
    // More anomalies than the page holds (its newest 500): how many it does not show is said.
    const c = fx.pipeline.console;
    assert.ok(c);
    for (let i = 0; i < 600; i++) c.fleet.anomalies.push({ time: Date.now(), device: DEVICE, field: 'level', detector: 'mad', score: 9, kind: 'spike' });
    await w.page.waitForFunction(({ s, t }) => document.querySelector(s)?.textContent === t, { s: sel('anomalies-count'), t: `500 shown (the latest), ${c.fleet.anomalies.seq - 500} older not shown` });

    for (const { urls } of opened) for (const u of urls) for (const t of Object.values(ROLE_TOKENS)) assert.ok(!u.includes(t), `a token in the URL ${u}`);
    allClean();
    assert.ok(opened.every(({ w: p }) => p.problems.cspViolations.length === 0 && p.problems.pageErrors.length === 0));
  });
});
