import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { TestBrowser, type WatchedPage } from '../helpers/browser.ts';
import { ROLE_TOKENS, writeRoleTokens } from '../helpers/console-client.ts';
import { startEmbeddedFixture, type EmbeddedFixture } from '../helpers/embedded.ts';
import { startTestFieldClient } from '../helpers/field.ts';
import { tempDir } from '../helpers/pki.ts';
import { eventually } from '../helpers/ws-device.ts';

/**
 * A command the device runs past its TTL (it runs a command until its expiry plus its clock skew,
 * and a program may take a while): the command API says `expired` at its sweep, then the device's
 * answer comes. The command shows that answer and when the API had said `expired`, through the
 * command API and on the console's device page (real WSS, MQTT, disk, field client, Chromium).
 * docs/commands.md.
 */

const DEVICE = 'meter-late';
const sel = (testid: string) => `[data-testid="${testid}"]`;

interface View {
  state: string;
  expiresAt: string;
  expiredAt?: string;
  response?: { status: string; result?: unknown; at: string };
}

describe("a device's answer after the command API expired its command", () => {
  const tmp = tempDir('command-late-answer');
  let fx: EmbeddedFixture;
  let field: Awaited<ReturnType<typeof startTestFieldClient>> | undefined;
  let browser: TestBrowser | undefined;
  let w: WatchedPage | undefined;

  before(async () => {
    fx = await startEmbeddedFixture([DEVICE], { COMMAND_API_TOKENS_FILE: writeRoleTokens(tmp.dir) }, { console: true });
    const commands = join(tmp.dir, 'commands.json');
    // Runs past the TTL of 1 s and the command API's next sweep (TIMINGS.commandExpirySweepMs, 5 s).
    writeFileSync(commands, JSON.stringify({ slow_survey: { type: 'exec', program: 'sh', args: ['-c', 'sleep 9; echo surveyed'], timeoutMs: 30_000 } }));
    field = await startTestFieldClient(fx.pki.paths, DEVICE, fx.pipeline.gatewayUrl, fx.logs.logger, { FIELD_COMMANDS_FILE: commands });
    await eventually(() => (fx.points({ measurement: 'device_status', device: DEVICE }).some((p) => p.fields.state === 'online') ? true : undefined));
  });
  after(async () => {
    await w?.close().catch(() => {});
    await browser?.close();
    await field?.close();
    await fx?.stop();
    tmp.cleanup();
  });

  const api = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`http://127.0.0.1:${fx.pipeline.commandApi.port}${path}`, {
      method,
      headers: { authorization: `Bearer ${ROLE_TOKENS.operator}`, 'content-type': 'application/json' },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    return { status: res.status, body: (await res.json()) as any };
  };

  it('shows the answer, with when the command API had said expired, in GET /v1/commands/ID and on the device page', async () => {
    const sent = await api('POST', '/v1/commands', { deviceId: DEVICE, command: 'slow_survey', ttlSeconds: 1 });
    assert.equal(sent.status, 202, JSON.stringify(sent.body));
    const id = sent.body.commands[0].commandId as string;
    const get = async () => (await api('GET', `/v1/commands/${id}`)).body as View;
    const expired = await eventually(async () => {
      const v = await get();
      assert.notEqual(v.state, 'completed', 'answered before the API expired it: the test proves nothing');
      return v.state === 'expired' ? v : undefined;
    }, 15_000, 'the command expired by the command API');
    assert.ok(expired.expiredAt, 'an expired command says when');
    const done = await eventually(async () => {
      const v = await get();
      return v.state === 'completed' ? v : undefined;
    }, 30_000, "the device's late answer recorded");
    assert.equal(done.response?.status, 'completed');
    assert.match(String(done.response?.result), /surveyed/);
    assert.equal(done.expiredAt, expired.expiredAt, 'the command says the API had said expired before the answer came');
    assert.ok(Date.parse(done.response?.at ?? '') > Date.parse(done.expiredAt ?? ''));

    browser = await TestBrowser.launch({ artifacts: 'test-artifacts/console' });
    w = await browser.open(fx.pipeline.console!.url);
    await w.page.fill(sel('login-token'), ROLE_TOKENS.viewer);
    await w.page.click(sel('login-submit'));
    await w.page.waitForSelector(sel('page-fleet'));
    await w.page.evaluate((d) => void (location.hash = `#/device/${d}`), DEVICE);
    const row = `${sel('command-row')}[data-command-id="${id}"]`;
    await w.page.waitForSelector(row);
    assert.equal(await w.page.getAttribute(row, 'data-state'), 'completed');
    // The time it was said expired, shown as a date (a <time> element put in a text was "[object HTMLTimeElement]").
    assert.match((await w.page.textContent(`${row} ${sel('command-late')}`)) ?? '', /^ \(answered after it expired, \d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\)$/);
    await w.screenshot('device-command-late-answer', { fullPage: true });
    w.assertClean();
  });
});
