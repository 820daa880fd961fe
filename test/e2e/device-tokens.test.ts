import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import WebSocket from 'ws';
import { eventually, RawDevice } from '../helpers/ws-device.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { startTestStack } from '../helpers/stack.ts';
import { startTestFieldClient } from '../helpers/field.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { parseExposition } from '../helpers/exposition.ts';
import { SEED_MESSAGES } from '../fixtures/seed-messages.ts';
import type { LocalStack } from '../../scripts/local-stack/stack.ts';
import { issueDeviceToken, tokenPaths } from '../../pki/device-tokens.ts';
import { revokeDevice } from '../../pki/revocation.ts';
import { generateToken, parseToken } from '../../shared/security/device-token.ts';
import { readLocalStore } from '../../internal-network/distributor/sinks/local-store.ts';
import { runDoctor } from '../../field-client/src/doctor.ts';

/** What an upgrade on the token route was answered with: open, or refused with a status and code. */
async function tryToken(url: string, ca: string, headers: Record<string, string>): Promise<{ ws?: WebSocket; status?: number; code?: string; message?: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { ca, headers, perMessageDeflate: false });
    ws.once('open', () => resolve({ ws }));
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => {
        const answer = JSON.parse(body || '{}') as { code?: string; message?: string };
        resolve({ status: res.statusCode ?? 0, code: answer.code ?? '', message: answer.message ?? '' });
      });
    });
  });
}

describe('devices with a token instead of a certificate, on the real stack (Caddy token route)', () => {
  const work = tempDir('tokens');
  const pki = makeTestPki(['cert-1']);
  const logs = new LogCapture();
  let stack: LocalStack;
  const tokenOf = (id: string) => readFileSync(tokenPaths(pki.dir, id).token, 'utf8').trim();
  const ca = () => readFileSync(pki.paths.publicCa, 'utf8');
  const tokenUrl = () => stack.urls.tokenWss as string;
  const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
  /** fieldstream_gateway_connections_refused_total of one code, whatever other labels the sample carries */
  const refused = async (code: string) => {
    let n = 0;
    for (const [sample, value] of parseExposition(await (await fetch(`${stack.metrics.gateway}/metrics`)).text())) {
      if (sample.startsWith('fieldstream_gateway_connections_refused_total{') && sample.includes(`code="${code}"`)) n += value;
    }
    return n;
  };

  before(async () => {
    for (const id of ['tok-1', 'tok-2', 'tok-3']) await issueDeviceToken(pki.dir, id);
    ({ stack } = await startTestStack(pki.dir, join(work.dir, 'stack'), { GATEWAY_TOKEN_MAX_FAILURES: '12' }, { tokenRoute: true }));
  });
  after(async () => {
    await stack?.close();
    pki.cleanup();
    work.cleanup();
  });

  it('a token device streams signed readings that arrive', async () => {
    const client = await startTestFieldClient(pki.paths, 'tok-1', tokenUrl(), logs.logger, { FIELD_TOKEN_FILE: tokenPaths(pki.dir, 'tok-1').token });
    try {
      await client.client.submit('timeseries', { tokenReading: 42, timestamp: 1760000000000 });
      const point = await eventually(() => readLocalStore(stack.dataDir.timeseries).find((p) => p.fields.tokenReading === 42));
      assert.equal(point.tags.device, 'tok-1');
      assert.equal(point.measurement, 'readings');
    } finally {
      await client.close();
    }
    // The gateway's log names the device and how it proved itself, never the token.
    const gatewayLog = readFileSync(stack.gateways[0]!.spec.logFile, 'utf8');
    assert.match(gatewayLog, /"auth":"token"/);
    assert.ok(!gatewayLog.includes(parseToken(tokenOf('tok-1'))!.secret), 'the token is not in the log');
  });

  it('fieldstream doctor checks a token device through the token route, and names a wrong token without showing it', async () => {
    const env = {
      DEVICE_ID: 'tok-1',
      GATEWAY_URL: tokenUrl(),
      FIELD_CA_FILE: pki.paths.publicCa,
      FIELD_TOKEN_FILE: tokenPaths(pki.dir, 'tok-1').token,
      FIELD_SIGNING_KEY_FILE: pki.paths.device('tok-1').signingKey,
      FIELD_DATA_DIR: join(work.dir, 'doctor-tok-1'),
    };
    const ok = await runDoctor(env);
    const level = (name: string) => ok.find((r) => r.name === name)?.level;
    assert.equal(level('credentials'), 'ok', JSON.stringify(ok));
    assert.equal(level('websocket'), 'ok', JSON.stringify(ok));
    assert.equal(level('round trip'), 'ok', JSON.stringify(ok));
    const wrongFile = join(work.dir, 'wrong.token');
    writeFileSync(wrongFile, generateToken('tok-1') + '\n', { mode: 0o600 });
    const bad = await runDoctor({ ...env, FIELD_TOKEN_FILE: wrongFile });
    const ws = bad.find((r) => r.name === 'websocket');
    assert.equal(ws?.level, 'fail');
    assert.match(ws?.detail ?? '', /GATEWAY_TOKEN_INVALID/);
    assert.ok(!JSON.stringify(bad).includes(readFileSync(wrongFile, 'utf8').trim()), 'the token is not shown');
  });

  it('the certificate route still refuses a client without a certificate, token or not', async () => {
    await assert.rejects(RawDevice.connect(stack.urls.wss, { ca: ca() }));
    await assert.rejects(tryToken(stack.urls.wss, ca(), bearer(tokenOf('tok-1'))));
    // and a certificate device still gets in there
    const d = await RawDevice.connect(stack.urls.wss, RawDevice.tlsFor(pki.paths, 'cert-1'));
    d.close();
  });

  it('wrong, unknown and missing tokens are refused with their codes, and forged route headers change nothing', async () => {
    const id = parseToken(tokenOf('tok-1'))!.deviceId;
    const wrong = await tryToken(tokenUrl(), ca(), bearer(generateToken(id)));
    assert.deepEqual([wrong.status, wrong.code], [401, 'GATEWAY_TOKEN_INVALID']);
    // An id no token was issued to is answered as a wrong token, word for word: the answer told
    // anyone which device ids exist. The gateway's log and metrics keep the difference.
    const unknown = await tryToken(tokenUrl(), ca(), bearer(generateToken('ghost-1')));
    assert.deepEqual([unknown.status, unknown.code, unknown.message], [wrong.status, wrong.code, wrong.message]);
    // A device on the token route claiming the certificate route, with another device's certificate: Caddy
    // overwrites the route marker and drops the certificate header, so the gateway asks for a token.
    const der = new X509Certificate(readFileSync(pki.paths.device('cert-1').cert)).raw.toString('base64');
    const forged = await tryToken(tokenUrl(), ca(), { 'X-FieldStream-Route': 'certificate', 'X-FieldStream-Client-Cert': der });
    assert.deepEqual([forged.status, forged.code], [401, 'GATEWAY_TOKEN_MISSING']);
    for (const code of ['GATEWAY_TOKEN_INVALID', 'GATEWAY_TOKEN_UNKNOWN_DEVICE', 'GATEWAY_TOKEN_MISSING']) {
      assert.ok((await refused(code)) >= 1, `${code} counted`);
    }
    // The wrong token of a known device reaches the internal side as the gateway's security report;
    // an unknown id (anyone's claim) does not.
    await eventually(() =>
      readLocalStore(stack.dataDir.timeseries).find((p) => p.measurement === 'security_events' && p.tags.device === id && p.tags.reason === 'GATEWAY_TOKEN_INVALID' && p.tags.source === 'gateway'),
    );
    assert.ok(!readLocalStore(stack.dataDir.timeseries).some((p) => p.measurement === 'security_events' && p.tags.device === 'ghost-1'));
  });

  it("a token device's frame claiming another id is refused", async () => {
    const opened = await tryToken(tokenUrl(), ca(), bearer(tokenOf('tok-1')));
    assert.ok(opened.ws, `opened (${opened.code})`);
    const frames: { type: string; code?: string }[] = [];
    opened.ws.on('message', (m) => {
      const f = JSON.parse(m.toString()) as { type: string; code?: string };
      if (f.type !== 'welcome') frames.push(f);
    });
    opened.ws.send(SEED_MESSAGES.timeseries); // deviceId "sensor-001"
    const frame = await eventually(() => frames[0]);
    assert.deepEqual([frame.type, frame.code], ['error', 'GATEWAY_DEVICE_MISMATCH']);
    opened.ws.close();
  });

  it('a token revoked while running: its connection closes and it is refused, without a restart', async () => {
    const victim = await startTestFieldClient(pki.paths, 'tok-2', tokenUrl(), logs.logger, { FIELD_TOKEN_FILE: tokenPaths(pki.dir, 'tok-2').token, FIELD_RECONNECT_MAX_MS: '500' });
    try {
      await eventually(() => (victim.connection.isOpen ? true : undefined), 15_000, 'connected');
      const { token } = revokeDevice(pki.dir, 'tok-2');
      assert.equal(token, true);
      await eventually(() => (victim.connection.isOpen ? undefined : true), 10_000, 'the connection closed');
      const again = await tryToken(tokenUrl(), ca(), bearer(tokenOf('tok-2')));
      assert.deepEqual([again.status, again.code], [403, 'GATEWAY_TOKEN_REVOKED']);
      assert.ok((await refused('GATEWAY_TOKEN_REVOKED')) >= 1, 'counted');
    } finally {
      await victim.close();
    }
  });

  it('a token that expires while connected: its connection closes with GATEWAY_TOKEN_EXPIRED and it is refused, without a restart or a change of the file', async () => {
    const id = 'tok-4';
    // Tries before the gateway has the file would be failures charged to this address: wait for its reload.
    const loads = () => readFileSync(stack.gateways[0]!.spec.logFile, 'utf8').split('device tokens loaded').length;
    const before = loads();
    await issueDeviceToken(pki.dir, id, { validityDays: 1 });
    // Aged to expire in a few seconds, written whole (write, then rename) as the tooling writes it.
    const file = JSON.parse(readFileSync(tokenPaths(pki.dir).file, 'utf8')) as { devices: Record<string, { expiresAt?: string }> };
    file.devices[id]!.expiresAt = new Date(Date.now() + 6_000).toISOString();
    writeFileSync(`${tokenPaths(pki.dir).file}.tmp`, JSON.stringify(file), { mode: 0o600 });
    renameSync(`${tokenPaths(pki.dir).file}.tmp`, tokenPaths(pki.dir).file);
    await eventually(() => (loads() >= before + 1 ? true : undefined), 10_000, 'the gateway re-read the file');
    const first = await tryToken(tokenUrl(), ca(), bearer(tokenOf(id)));
    const opened = first.ws;
    assert.ok(opened, `opened (${first.status} ${first.code})`);
    const closed = await new Promise<{ code: number; reason: string }>((resolve) => opened.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
    assert.deepEqual(closed, { code: 1008, reason: 'GATEWAY_TOKEN_EXPIRED' });
    const again = await tryToken(tokenUrl(), ca(), bearer(tokenOf(id)));
    assert.deepEqual([again.status, again.code], [401, 'GATEWAY_TOKEN_EXPIRED']);
    assert.ok((await refused('GATEWAY_TOKEN_EXPIRED')) >= 1, 'counted');
    assert.match(readFileSync(stack.gateways[0]!.spec.logFile, 'utf8'), /"code":"GATEWAY_TOKEN_EXPIRED"/, 'logged');
    // and reported inward, as the other refusals of a known device's token
    await eventually(() =>
      readLocalStore(stack.dataDir.timeseries).find((p) => p.measurement === 'security_events' && p.tags.device === id && p.tags.reason === 'GATEWAY_TOKEN_EXPIRED' && p.tags.source === 'gateway'),
    );
  });

  it('a gateway that takes no tokens (GATEWAY_TOKEN_AUTH=off) refuses the token route with GATEWAY_TOKEN_AUTH_DISABLED; certificate devices still get in', async () => {
    const gateway = stack.gateways[0]!;
    await gateway.restartWith({ GATEWAY_TOKEN_AUTH: 'off' });
    try {
      const refusedNow = await eventually(async () => {
        const r = await tryToken(tokenUrl(), ca(), bearer(tokenOf('tok-1'))).catch(() => undefined);
        return r && r.status !== 502 ? r : undefined; // Caddy answers 502 until the gateway is back
      }, 20_000, 'the restarted gateway answering');
      assert.deepEqual([refusedNow.status, refusedNow.code], [403, 'GATEWAY_TOKEN_AUTH_DISABLED']);
      assert.ok((await refused('GATEWAY_TOKEN_AUTH_DISABLED')) >= 1, 'counted');
      const d = await RawDevice.connect(stack.urls.wss, RawDevice.tlsFor(pki.paths, 'cert-1'));
      d.close();
    } finally {
      await gateway.restartWith({ GATEWAY_TOKEN_AUTH: 'on' });
    }
    const back = await eventually(async () => {
      const r = await tryToken(tokenUrl(), ca(), bearer(tokenOf('tok-1'))).catch(() => undefined);
      return r && r.status !== 502 ? r : undefined;
    }, 20_000, 'tokens taken again');
    assert.ok(back.ws, `a token device gets in again (${back.status} ${back.code})`);
    back.ws.close();
  });

  it('the DMZ tokens file holds scrypt hashes, never a token', () => {
    const text = readFileSync(tokenPaths(pki.dir).file, 'utf8');
    for (const id of ['tok-1', 'tok-2', 'tok-3']) {
      assert.ok(!text.includes(tokenOf(id)) && !text.includes(parseToken(tokenOf(id))!.secret), `no token of ${id}`);
    }
    const file = JSON.parse(text) as { devices: Record<string, { state: string; scrypt?: { alg: string } }> };
    assert.equal(file.devices['tok-1']?.scrypt?.alg, 'scrypt');
    assert.equal(file.devices['tok-2']?.state, 'revoked');
    assert.equal(file.devices['tok-2']?.scrypt, undefined, 'a revoked token keeps no hash');
  });

  it('repeated failures are slowed: refused unchecked once the budget is spent, even with the right token', async () => {
    const id = 'tok-3';
    let last: { status?: number; code?: string } = {};
    for (let i = 0; i < 30 && last.code !== 'GATEWAY_TOKEN_THROTTLED'; i++) last = await tryToken(tokenUrl(), ca(), bearer(generateToken(id)));
    assert.deepEqual([last.status, last.code], [429, 'GATEWAY_TOKEN_THROTTLED']);
    const right = await tryToken(tokenUrl(), ca(), bearer(tokenOf(id)));
    assert.deepEqual([right.status, right.code], [429, 'GATEWAY_TOKEN_THROTTLED']);
    assert.ok((await refused('GATEWAY_TOKEN_THROTTLED')) >= 2, 'counted');
  });
});
