import assert from 'node:assert/strict';
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { describe, it } from 'node:test';
import { tlsGatewayOnMosquitto } from '../helpers/tls-gateway.ts';
import { parseExposition } from '../helpers/exposition.ts';
import { eventually, RawDevice } from '../helpers/ws-device.ts';
import { TIMINGS } from '../../shared/limits.ts';
import { rawSocket } from '../helpers/raw-ws.ts';

const MAX_PENDING = 5;

/** A TCP connection to the gateway from `from` that sends nothing (a handshake never started); resolves once connected, and tells when the gateway closed it. */
async function silentTo(port: number, from = '127.0.0.1'): Promise<{ socket: Socket; closed: Promise<void> }> {
  const socket = netConnect({ port, host: '127.0.0.1', localAddress: from });
  socket.on('error', () => undefined);
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  return { socket, closed };
}

/**
 * Connections that never finish their TLS handshake (or their upgrade) are bounded in number: the
 * timeouts bound how long each lasts, and before this bound anyone reaching the port could open as
 * many as the machine's files allow, each a TLS connection's memory and a handshake's CPU. Past
 * the bound a new connection is closed as it is accepted; an open WebSocket no longer counts. The
 * real gateway terminating TLS, a real Mosquitto behind it.
 */
describe('connections before their WebSocket is open: at most GATEWAY_MAX_PENDING_CONNECTIONS', () => {
  const fx = tlsGatewayOnMosquitto('gateway-pending', {}, { maxPendingConnections: MAX_PENDING });
  const url = () => `wss://localhost:${fx.gateway.port}/ws`;
  const sample = async (name: string) => parseExposition(await fx.gateway.metrics.metrics.registry.metrics()).get(name);

  const silent = () => silentTo(fx.gateway.port);

  it('closes the connection past the bound as it is accepted, counts and logs it; a device gets in once a place is free, and its open WebSocket holds none', async () => {
    const held = [];
    for (let i = 0; i < MAX_PENDING; i++) held.push(await silent());
    await eventually(async () => ((await sample('fieldstream_gateway_pending_connections{service="gateway"}')) === MAX_PENDING ? true : undefined), 5_000, 'every silent connection pending');

    // One more: closed at once (not after the handshake timeout), and a device's too.
    const extra = await silent();
    await Promise.race([extra.closed, new Promise((_, reject) => setTimeout(() => reject(new Error('the connection past the bound was kept')), 2_000))]);
    await assert.rejects(RawDevice.connect(url(), fx.tlsOf('pump-1')), 'a device finds no place while the silent ones hold them all');
    assert.equal(await sample('fieldstream_gateway_connections_refused_total{code="GATEWAY_TOO_MANY_PENDING",service="gateway"}'), 2);
    assert.ok(fx.logs.lines.some((l) => l.code === 'GATEWAY_TOO_MANY_PENDING' && l.maxPending === MAX_PENDING), 'the refusal is logged');
    for (const h of held) assert.equal(h.socket.destroyed, false, 'the connections within the bound stay open');

    // Two places freed: a device gets in, and once its WebSocket is open it no longer holds one.
    for (const h of held.splice(0, 2)) h.socket.destroy();
    await eventually(async () => ((await sample('fieldstream_gateway_pending_connections{service="gateway"}')) === MAX_PENDING - 2 ? true : undefined), 5_000, 'two places freed');
    const device = await RawDevice.connect(url(), fx.tlsOf('pump-1'));
    try {
      await eventually(() => device.welcome, 5_000, 'the welcome');
      await eventually(async () => ((await sample('fieldstream_gateway_pending_connections{service="gateway"}')) === MAX_PENDING - 2 ? true : undefined), 5_000, 'the open WebSocket is not pending');
      for (let i = 0; i < 2; i++) held.push(await silent());
      const over = await silent();
      await over.closed;
      assert.equal(await sample('fieldstream_gateway_connections_refused_total{code="GATEWAY_TOO_MANY_PENDING",service="gateway"}'), 3);
      assert.equal(device.ws.readyState, device.ws.OPEN, 'the open WebSocket is untouched');
    } finally {
      device.ws.close();
      for (const h of held) h.socket.destroy();
    }
  });

  it('closes a connection after answering a request that is no upgrade: requests sent one after another cannot keep it pending', async () => {
    // A holder of a certificate (a revoked one too: revocation is checked at the upgrade) sending a
    // plain request every few seconds kept its connection, and its pending place, for ever: the idle
    // timeouts never fired. At GATEWAY_MAX_PENDING_CONNECTIONS such connections no device got in.
    // The places the test above held are given back as the gateway sees their connections close.
    await eventually(async () => ((await sample('fieldstream_gateway_pending_connections{service="gateway"}')) === 0 ? true : undefined), 5_000, 'no connection pending');
    const socket = tlsConnect({ port: fx.gateway.port, host: '127.0.0.1', servername: 'localhost', ...fx.tlsOf('pump-2') });
    socket.on('error', () => undefined);
    let received = '';
    socket.on('data', (d: Buffer) => (received += d.toString('latin1')));
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    await new Promise<void>((resolve) => socket.once('secureConnect', () => resolve()));
    // Two requests at once (pipelined): the second is one the connection must not live on for.
    const request = 'GET / HTTP/1.1\r\nHost: gateway\r\n\r\n';
    socket.write(request + request);
    await closed;
    assert.equal(received.match(/^HTTP\/1\.1 /gm)?.length, 1, `one answer, then the connection closed:\n${received}`);
    assert.match(received, /^connection: close\r$/im);
    assert.match(received, /GATEWAY_WRONG_PATH/);
  });
});

/**
 * Devices connecting to the gateway directly (GATEWAY_IDENTITY_SOURCE=tls) each have an address of
 * their own: one host holds at most its share of the places, so its silent connections cannot keep
 * every device out. 127.0.0.2 is another source on the loopback.
 */
describe('connections before their WebSocket is open: at most a share of them from one source address', () => {
  const PER_SOURCE = 3;
  const fx = tlsGatewayOnMosquitto('gateway-pending-source', {}, { maxPendingConnections: 10, maxPendingPerSource: PER_SOURCE });
  const sample = async (name: string) => parseExposition(await fx.gateway.metrics.metrics.registry.metrics()).get(name);

  const silent = (from: string) => silentTo(fx.gateway.port, from);

  it("closes a source's connection past its share as it is accepted; a device from another address gets in meanwhile", async () => {
    const held = [];
    try {
      for (let i = 0; i < PER_SOURCE; i++) held.push(await silent('127.0.0.1'));
      await eventually(async () => ((await sample('fieldstream_gateway_pending_connections{service="gateway"}')) === PER_SOURCE ? true : undefined), 5_000, "the source's silent connections pending");
      const extra = await silent('127.0.0.1');
      await Promise.race([extra.closed, new Promise((_, reject) => setTimeout(() => reject(new Error("the connection past the source's share was kept")), 2_000))]);
      assert.equal(await sample('fieldstream_gateway_connections_refused_total{code="GATEWAY_TOO_MANY_PENDING",service="gateway"}'), 1);
      assert.ok(fx.logs.lines.some((l) => l.code === 'GATEWAY_TOO_MANY_PENDING' && l.maxPendingPerSource === PER_SOURCE), 'the refusal is logged');
      for (const h of held) assert.equal(h.socket.destroyed, false, "the connections within the source's share stay open");

      const device = await RawDevice.connect(`wss://localhost:${fx.gateway.port}/ws`, Object.assign(fx.tlsOf('pump-3'), { localAddress: '127.0.0.2' }));
      try {
        await eventually(() => device.welcome, 5_000, 'the welcome');
      } finally {
        device.ws.close();
      }
    } finally {
      for (const h of held) h.socket.destroy();
    }
  });
});

describe("the gateway's shutdown with connections still in their handshake", () => {
  const fx = tlsGatewayOnMosquitto('gateway-pending-shutdown', {});

  it('ends them after a device’s grace: the listener is closed well before the handshake timeout', async () => {
    const { closed: ended } = await silentTo(fx.gateway.port);
    const started = Date.now();
    // Closed here (the fixture closes it again after, which does nothing more).
    await fx.gateway.close();
    const tookMs = Date.now() - started;
    await ended;
    // Ended by the grace (TIMINGS.gatewayClosingGraceMs, 1 s), not the handshake timeout: before, the
    // close waited for the silent connection until that timeout (about 10 s) ended it.
    assert.ok(tookMs < TIMINGS.handshakeTimeoutMs / 2, `the shutdown took ${tookMs} ms`);
  });
});

describe("the gateway's shutdown with a device that never answers its close", () => {
  const fx = tlsGatewayOnMosquitto('gateway-shutdown-silent', {});

  it('ends its connection after a device’s grace, not after ws’s 30 s', async () => {
    // Raw frames: it reads the gateway's close (1001) and never answers it, as a hung device would not.
    const device = await rawSocket(fx.gateway.port, fx.tlsOf('pump-1'));
    const ended = new Promise<void>((resolve) => device.socket.once('close', () => resolve()));
    const started = Date.now();
    await fx.gateway.close();
    const tookMs = Date.now() - started;
    await ended;
    assert.ok(device.received().includes(Buffer.from([0x03, 0xe9]).toString('latin1')), 'the device was sent a close with 1001 first');
    // The grace is TIMINGS.gatewayClosingGraceMs (1 s); before, the close waited for ws's closeTimeout (30 s).
    assert.ok(tookMs < 15_000, `the shutdown took ${tookMs} ms`);
  });
});
