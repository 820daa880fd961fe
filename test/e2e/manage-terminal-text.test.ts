import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ROLE_TOKENS, writeRoleTokens } from '../helpers/console-client.ts';
import { startEmbeddedFixture, type EmbeddedFixture } from '../helpers/embedded.ts';
import { startTestFieldClient } from '../helpers/field.ts';
import { tempDir } from '../helpers/pki.ts';
import { eventually } from '../helpers/ws-device.ts';

/** Any character that drives a terminal. */
// eslint-disable-next-line no-control-regex
const DRIVES_A_TERMINAL = /[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/;

/**
 * The management API is read with curl in a terminal (docs/management-api.md), and a device's
 * answer there quotes the device: its last reading's strings, which may hold any character.
 * JSON.stringify escapes C0 but writes DEL, C1 (U+009B is CSI to xterm) and bidi overrides raw.
 */
describe("the management API: a device's strings never reach the terminal as control", () => {
  const tmp = tempDir('manage-terminal');
  let fx: EmbeddedFixture;
  let field: Awaited<ReturnType<typeof startTestFieldClient>>;
  before(async () => {
    fx = await startEmbeddedFixture(['meter-9'], { COMMAND_API_TOKENS_FILE: writeRoleTokens(tmp.dir) }, { console: true });
    field = await startTestFieldClient(fx.pki.paths, 'meter-9', fx.pipeline.gatewayUrl, fx.logs.logger, { FIELD_HTTP_PORT: '0' });
  });
  after(async () => {
    await field?.close();
    await fx?.stop();
    tmp.cleanup();
  });

  it('GET /devices/ID answers the last reading with its controls as JSON escapes, the same values', async () => {
    const note = 'ok\u009b2J\u001b]0;t\u0007\u202eb\u007f';
    const sent = await fetch(`http://127.0.0.1:${field.httpPort}/v1/timeseries`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ level: 1, note }) });
    assert.equal(sent.status, 202);
    const base = (fx.pipeline.console as { url: string }).url;
    const text = await eventually(async () => {
      const res = await fetch(new URL('/api/v1/manage/devices/meter-9', base), { headers: { authorization: `Bearer ${ROLE_TOKENS.viewer}` } });
      const t = await res.text();
      return res.status === 200 && (JSON.parse(t) as { lastReading?: { fields?: { note?: string } } }).lastReading?.fields?.note !== undefined ? t : undefined;
    }, 20_000, 'the reading in the console');
    assert.doesNotMatch(text, DRIVES_A_TERMINAL, text);
    assert.equal((JSON.parse(text) as { lastReading: { fields: { note: string } } }).lastReading.fields.note, note);
  });
});
