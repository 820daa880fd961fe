import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connectAsync, type MqttClient } from 'mqtt';
import { DeviceTokens } from '../../dmz/gateway/device-tokens.ts';
import { startGatewayServer, type GatewayServer } from '../../dmz/gateway/server.ts';
import { createCertificateAuthority } from '../../pki/certificates.ts';
import type { ManagedProcess } from '../../scripts/local-stack/process.ts';
import { captureLogs, socketGatewayOptions } from '../helpers/gateway-fixture.ts';
import { tempDir } from '../helpers/pki.ts';
import { startMosquitto } from '../helpers/sparkplug.ts';

/**
 * Failed device tokens are budgeted per source (GATEWAY_TOKEN_MAX_FAILURES within the window), the
 * address Caddy writes in X-FieldStream-Client-Addr. An IPv6 host holds a whole /64: budgeted per
 * address, one attacker had 2^64 budgets, and every guess cost the gateway a slow hash (scrypt on
 * libuv's threads) with no credential at all. The gateway on its Unix socket (EDGE_HOP=unix), this
 * test sending what Caddy's token route sends, a real Mosquitto behind.
 */
describe('the failed-token budget of a source: an IPv6 network, not each of its addresses', () => {
  const work = tempDir('gateway-token-sources');
  const logs = captureLogs();
  let broker: { url: string; process: ManagedProcess };
  let mqtt: MqttClient;
  let gateway: GatewayServer;
  let tokens: DeviceTokens;
  const sockDir = join(work.dir, 'run');
  const socketPath = join(sockDir, 'gw.sock');

  before(async () => {
    mkdirSync(sockDir);
    chmodSync(sockDir, 0o700);
    const ca = createCertificateAuthority('FieldStream Test CA', 1);
    const tokensFile = join(work.dir, 'device-tokens.json');
    writeFileSync(tokensFile, JSON.stringify({ version: 1, devices: {} }));
    tokens = new DeviceTokens({ path: tokensFile, maxFailures: 3, failureWindowMs: 300_000, log: logs.logger });
    broker = await startMosquitto(work.dir);
    mqtt = await connectAsync(broker.url, { protocolVersion: 5, clientId: 'gateway-token-sources' });
    gateway = await startGatewayServer(socketGatewayOptions({ socketPath, gatewayId: 'gw-token-sources', caPem: ca.certPem, tokens, mqtt, logger: logs.logger }));
  });
  after(async () => {
    tokens?.close();
    await gateway?.close();
    await mqtt?.endAsync(true);
    await broker?.process.stop();
    work.cleanup();
  });

  /** A wrong token naming `deviceId`, from `addr`: the status line. */
  async function guess(addr: string, deviceId: string): Promise<string> {
    const c = netConnect(socketPath);
    c.on('error', () => undefined);
    c.write(
      'GET /ws HTTP/1.1\r\nHost: gateway\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n' +
        `X-FieldStream-Route: token\r\nX-FieldStream-Client-Addr: ${addr}\r\nAuthorization: Bearer fst1.${deviceId}.${'C'.repeat(43)}\r\n\r\n`,
    );
    const status = await new Promise<string>((resolve) => c.once('data', (d: Buffer) => resolve(d.toString().split('\r\n')[0] as string)));
    c.destroy();
    return status;
  }

  it('refuses, unchecked, guesses from further addresses of an IPv6 /64 whose budget is spent; another /64 is checked', async () => {
    for (let i = 1; i <= 3; i++) assert.equal(await guess(`2001:db8:1:2::${i}`, `ghost-${i}`), 'HTTP/1.1 401 GATEWAY_TOKEN_INVALID');
    assert.equal(await guess('2001:db8:1:2:8000:0:0:4', 'ghost-4'), 'HTTP/1.1 429 GATEWAY_TOKEN_THROTTLED');
    assert.equal(await guess('2001:db8:1:2:ffff:ffff:ffff:ffff', 'ghost-5'), 'HTTP/1.1 429 GATEWAY_TOKEN_THROTTLED');
    assert.equal(await guess('2001:db8:1:3::1', 'ghost-6'), 'HTTP/1.1 401 GATEWAY_TOKEN_INVALID');
  });

  // The refusal is logged with the device's address as Caddy forwards it: the connection's own
  // address is Caddy's (on the Unix socket, none at all), and said nothing of who was guessing or
  // which address GATEWAY_TOKEN_THROTTLED now refused.
  it("logs each refusal with the device's address, not the proxy's", async () => {
    for (let i = 1; i <= 4; i++) await guess('203.0.113.9', `wraith-${i}`);
    const refusals = logs.lines.filter((l) => typeof l.deviceId === 'string' && (l.deviceId as string).startsWith('wraith-'));
    assert.deepEqual(
      refusals.map((l) => [l.code, l.source]),
      [...Array.from({ length: 3 }, () => ['GATEWAY_TOKEN_UNKNOWN_DEVICE', '203.0.113.9']), ['GATEWAY_TOKEN_THROTTLED', '203.0.113.9']],
    );
  });

  it('counts an IPv4 address written IPv4-mapped as that address', async () => {
    for (let i = 1; i <= 3; i++) assert.equal(await guess('198.51.100.5', `spirit-${i}`), 'HTTP/1.1 401 GATEWAY_TOKEN_INVALID');
    assert.equal(await guess('::ffff:198.51.100.5', 'spirit-4'), 'HTTP/1.1 429 GATEWAY_TOKEN_THROTTLED');
    assert.equal(await guess('198.51.100.6', 'spirit-5'), 'HTTP/1.1 401 GATEWAY_TOKEN_INVALID');
  });
});
