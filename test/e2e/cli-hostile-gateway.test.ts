import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { WebSocketServer, type WebSocket } from 'ws';
import { LIMITS } from '../../shared/limits.ts';
import { terminalText } from '../../shared/terminal-text.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { startTestFieldClient } from '../helpers/field.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { eventually } from '../helpers/ws-device.ts';

const REPO = join(import.meta.dirname, '..', '..');
const DEVICE = 'dev-term';

/**
 * What a compromised DMZ server writes into a device operator's terminal through the device's
 * command line. It holds the edge certificate (all it needs to pass as the gateway) and chooses
 * every text the gateway sends: the welcome's ids, an error frame's message, a close reason, the
 * body of a refused upgrade. `fieldstream doctor` and `fieldstream status` print them; none may
 * reach the terminal as a control sequence: ESC (a CSI moving the cursor up over the lines above
 * and erasing them, an OSC setting the window title or the clipboard), C1's CSI U+009B, a bidi
 * override.
 */
const HOSTILE = '\u001b[1A\u001b[2K\u001b]52;c;ZWNobyBwd25lZA==\u0007\u009b2J\u202e\r\n✔ forged';
/** Any character that drives a terminal; a line feed is the output's own. */
// eslint-disable-next-line no-control-regex
const DRIVES_A_TERMINAL = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/;

function run(args: string[], env: Record<string, string | undefined>): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(join(REPO, 'bin', 'fieldstream'), args, { env, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ status: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

type Behaviour = 'error-frame' | 'close' | 'refuse-upgrade';

describe('the device command line prints what a hostile gateway says, never as terminal control', () => {
  const pki = makeTestPki([DEVICE]);
  const tmp = tempDir('cli-hostile');
  const logs = new LogCapture();
  let server: Server;
  let wss: WebSocketServer;
  let behaviour: Behaviour = 'error-frame';
  let url = '';
  before(async () => {
    const edge = pki.paths.service('dmz/edge');
    server = createServer({ cert: readFileSync(edge.cert), key: readFileSync(edge.key) });
    wss = new WebSocketServer({ noServer: true });
    server.on('upgrade', (req, socket, head) => {
      if (behaviour === 'refuse-upgrade') {
        const body = JSON.stringify({ code: `GATEWAY_TOKEN_INVALID${HOSTILE}` });
        socket.end(`HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
        return;
      }
      wss.handleUpgrade(req, socket, head, (ws) => welcome(ws));
    });
    const welcome = (ws: WebSocket) => {
      ws.on('error', () => {});
      const limits = { frameMaxBytes: LIMITS.frameMaxBytes, batchMaxMessages: LIMITS.batchMaxMessages };
      ws.send(JSON.stringify({ type: 'welcome', deviceId: DEVICE, gatewayId: `gw${HOSTILE}`, serverTime: Date.now(), limits }));
      ws.on('message', (data) => {
        const frame = JSON.parse(data.toString()) as { messageId?: string };
        if (behaviour === 'close') return ws.close(4000, HOSTILE);
        if (frame.messageId) ws.send(JSON.stringify({ type: 'error', code: 'GATEWAY_RATE_LIMITED', message: HOSTILE, messageIds: [frame.messageId] }));
      });
    };
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `wss://localhost:${(server.address() as AddressInfo).port}/ws`;
  });
  after(async () => {
    for (const c of wss.clients) c.terminate();
    wss.close();
    await new Promise((resolve) => server.close(resolve));
    tmp.cleanup();
    pki.cleanup();
  });

  const doctor = () =>
    run(['doctor'], {
      PATH: process.env.PATH,
      FIELDSTREAM_ENV_FILE: '/dev/null',
      DEVICE_ID: DEVICE,
      GATEWAY_URL: url,
      FIELD_CA_FILE: pki.paths.publicCa,
      FIELD_CERT_FILE: pki.paths.device(DEVICE).cert,
      FIELD_KEY_FILE: pki.paths.device(DEVICE).key,
      FIELD_SIGNING_KEY_FILE: pki.paths.device(DEVICE).signingKey,
      FIELD_DATA_DIR: join(tmp.dir, 'doctor'),
      FIELD_HTTP_PORT: 'off',
    });

  for (const [b, what, where] of [
    ['error-frame', 'the welcome\'s gateway id', /^✔ websocket +gateway gw\\u001b\[1A.*\\u009b2J\\u202e\\u000d\\u000a✔ forged accepted device dev-term$/m],
    ['error-frame', 'an error frame\'s message', /^✖ round trip +GATEWAY_RATE_LIMITED: \\u001b\[1A\\u001b\[2K\\u001b\]52;c;ZWNobyBwd25lZA==\\u0007\\u009b2J\\u202e\\u000d\\u000a✔ forged$/m],
    ['close', 'a close reason', /^✖ round trip +the gateway closed the connection before the test event was acknowledged: close code 4000 \\u001b\[1A.*✔ forged$/m],
    ['refuse-upgrade', 'a refused upgrade\'s code', /^✖ websocket +upgrade refused: HTTP 403 GATEWAY_TOKEN_INVALID\\u001b\[1A.*✔ forged$/m],
  ] as const) {
    it(`fieldstream doctor: ${what} is shown escaped, on its check's line`, async () => {
      behaviour = b;
      const r = await doctor();
      assert.equal(r.status, 1, r.stdout + r.stderr);
      assert.doesNotMatch(r.stdout, DRIVES_A_TERMINAL, JSON.stringify(r.stdout));
      assert.match(r.stdout, where, r.stdout);
      assert.doesNotMatch(r.stdout, /^✔ forged/m, 'no line of the gateway\'s own');
    });
  }

  it("fieldstream status: the gateway's id is shown escaped, and the JSON still reads as the client's status", async () => {
    behaviour = 'error-frame';
    const field = await startTestFieldClient(pki.paths, DEVICE, url, logs.logger, { FIELD_HTTP_PORT: '0' });
    try {
      await eventually(async () => {
        const s = (await (await fetch(`http://127.0.0.1:${field.httpPort}/status`)).json()) as { connection: { gatewayId: string | null } };
        return s.connection.gatewayId !== null ? true : undefined;
      });
      const r = await run(['status'], { PATH: process.env.PATH, FIELDSTREAM_ENV_FILE: '/dev/null', FIELD_HTTP_PORT: String(field.httpPort) });
      assert.equal(r.status, 0, r.stderr);
      assert.doesNotMatch(r.stdout, DRIVES_A_TERMINAL, JSON.stringify(r.stdout));
      assert.equal((JSON.parse(r.stdout) as { connection: { gatewayId: string } }).connection.gatewayId, `gw${HOSTILE}`, 'the same value, written in escapes');
    } finally {
      await field.close();
    }
  });

  it('terminalText keeps the text of lines, and escapes each control and bidi character', () => {
    assert.equal(terminalText('a\tb\nc\u001b[0m\u0085\u2067'), 'a\\u0009b\\u000ac\\u001b[0m\\u0085\\u2067');
    assert.equal(terminalText('a\tb\nc\u001b', true), 'a\tb\nc\\u001b');
    assert.equal(terminalText('ÿ é ✔ 日本'), 'ÿ é ✔ 日本');
  });
});
