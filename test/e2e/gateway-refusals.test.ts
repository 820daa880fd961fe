import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import { connect } from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { TIMINGS } from '../../shared/limits.ts';
import { startEmbeddedFixture, type EmbeddedFixture } from '../helpers/embedded.ts';
import { eventually, RawDevice } from '../helpers/ws-device.ts';

describe('refused upgrades and closed connections at the gateway', () => {
  let fx: EmbeddedFixture;
  const MAX_CONNECTIONS = 3;
  before(async () => {
    fx = await startEmbeddedFixture(['half-1', 'mallory', 'honest'], { GATEWAY_MAX_CONNECTIONS: String(MAX_CONNECTIONS) });
  });
  after(() => fx.stop());

  /**
   * A device (a valid certificate: any holder of one from the CA can do this) asks for an upgrade
   * the gateway refuses, reads the answer and never ends its own side. Resolves with the answer and
   * the milliseconds from the answer's end to the gateway closing the socket; rejects when that is
   * longer than deadlineMs.
   */
  function refusedHalfOpen(port: number, deadlineMs: number): Promise<{ answer: string; closedAfterMs: number }> {
    const d = fx.pki.paths.device('half-1');
    return new Promise((resolve, reject) => {
      const s = connect({
        // The client keeps its write side open after the gateway's end: only the gateway can close it.
        socket: tcpConnect({ host: '127.0.0.1', port, allowHalfOpen: true }),
        servername: 'localhost',
        ca: readFileSync(fx.pki.paths.publicCa),
        cert: readFileSync(d.cert),
        key: readFileSync(d.key),
      });
      let answer = '';
      let endedAt: number | undefined;
      s.setEncoding('utf8');
      s.on('secureConnect', () =>
        s.write('GET /not-the-websocket HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n'),
      );
      s.on('data', (c: string) => (answer += c));
      // After the gateway's end the client cannot see the gateway drop the socket unless it sends:
      // a byte now and then, which a socket the gateway still holds takes, and one it destroyed
      // answers with a reset.
      let probe: NodeJS.Timeout | undefined;
      s.on('end', () => {
        endedAt = Date.now();
        // Still half-open from this side: had it ended too, the close would prove nothing.
        if (s.writableEnded) reject(new Error('the client ended its side'));
        probe = setInterval(() => s.write('\n'), 100);
        setTimeout(() => {
          s.destroy();
          reject(new Error(`the gateway still held the refused socket ${deadlineMs} ms after its answer (${JSON.stringify(answer.split('\r\n')[0])})`));
        }, deadlineMs).unref();
      });
      s.on('error', () => undefined);
      s.on('close', () => {
        clearInterval(probe);
        resolve({ answer, closedAfterMs: Date.now() - (endedAt ?? Date.now()) });
      });
      // The answer itself must come: a refusal is answered, not just dropped.
      setTimeout(() => {
        s.destroy();
        reject(new Error('no answer to the refused upgrade'));
      }, 15_000).unref();
    });
  }

  it('closes a refused upgrade whose client keeps its side open within TIMINGS.gatewayRefusalLingerMs', async () => {
    const port = Number(new URL(fx.pipeline.gatewayUrl).port);
    // Margin for a loaded two-core machine, far below the pre-upgrade idle timeout (which would otherwise close it too).
    const deadlineMs = TIMINGS.gatewayRefusalLingerMs + 2_000;
    assert.ok(deadlineMs < TIMINGS.gatewayPreUpgradeIdleMs);
    const results = await Promise.all(Array.from({ length: 20 }, () => refusedHalfOpen(port, deadlineMs)));
    for (const { answer, closedAfterMs } of results) {
      assert.match(answer, /^HTTP\/1\.1 404 GATEWAY_WRONG_PATH\r\n/, 'the refusal is answered before the close');
      assert.match(answer, /"code":"GATEWAY_WRONG_PATH"/);
      assert.ok(closedAfterMs <= deadlineMs, `closed ${closedAfterMs} ms after the answer`);
    }
    assert.ok(fx.logs.codes().includes('GATEWAY_WRONG_PATH'));
  });

  it('ends a superseded connection that never answers its close: a device reconnecting again and again cannot fill GATEWAY_MAX_CONNECTIONS', async () => {
    const url = fx.pipeline.gatewayUrl;
    const held: RawDevice[] = [];
    try {
      // Each connection stops reading once open: the close frame of its successor's arrival is never
      // read, so it is never answered (ws on the gateway would wait 30 s for it).
      for (let i = 0; i < MAX_CONNECTIONS; i++) {
        const d = await RawDevice.connect(url, RawDevice.tlsFor(fx.pki.paths, 'mallory'));
        (d.ws as unknown as { _socket: { pause(): void } })._socket.pause();
        held.push(d);
      }
      // Within the grace and a margin for a loaded machine, another device gets in.
      const honest = await eventually(
        () => RawDevice.connect(url, RawDevice.tlsFor(fx.pki.paths, 'honest')).catch(() => undefined),
        TIMINGS.gatewayClosingGraceMs + 3_000,
        'a connection for another device',
      );
      assert.ok(honest.welcome || (await eventually(() => honest.welcome, 5_000, 'its welcome')));
      honest.ws.close();
    } finally {
      for (const d of held) d.ws.terminate();
    }
  });
});
