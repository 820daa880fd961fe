import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { LIMITS } from '../../shared/limits.ts';
import { tlsGatewayOnMosquitto } from '../helpers/tls-gateway.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { startTestStack } from '../helpers/stack.ts';
import type { LocalStack } from '../../scripts/local-stack/stack.ts';
import { join } from 'node:path';
import { RawDevice } from '../helpers/ws-device.ts';
import { rawSocket } from '../helpers/raw-ws.ts';

/** A masked client frame with no payload (RFC 6455 §5.2): 6 bytes on the wire. */
const empty = (firstByte: number) => Buffer.from([firstByte, 0x80, 0, 0, 0, 0]);
/** A masked client frame whose mask is zero, so the payload goes as it is. */
const frame = (firstByte: number, payload: string) => Buffer.concat([Buffer.from([firstByte, 0x80 | Buffer.byteLength(payload), 0, 0, 0, 0]), Buffer.from(payload)]);


/**
 * Frames that no budget counted: the gateway's rate limits (rate-limit.ts) are checked for each data
 * message, but a WebSocket also carries control frames (unasked pongs, pings) and the fragments of
 * one message (ws takes up to 16,384 a message). Each costs the gateway a frame's handling at 6
 * bytes on the wire; one device sending them held most of a core, unrefused. Real TLS, a real
 * Mosquitto, the gateway as `npm start` runs it (GATEWAY_IDENTITY_SOURCE=tls).
 */
describe("floods of frames that are no message: charged to the device's CPU budget", () => {
  // Message and byte budgets no flood here comes near; a CPU budget of 100 ms a second, which a
  // flood passes within a second (it holds most of a core), and a garbage collection pause during
  // the calm device's one read does not (20 ms did, in a loaded CI run: the calm device was limited).
  const fx = tlsGatewayOnMosquitto('gateway-frame-floods', {}, { rateLimits: { messagesPerS: 100_000, bytesPerS: 64 * 1024 * 1024, cpuMsPerS: 100, burstS: 1, frameMaxMessages: LIMITS.batchMaxMessages, frameMaxBytes: LIMITS.frameMaxBytes } });
  const { logs, tlsOf } = fx;

  const limitedWithin = async (device: { received: () => string; flood: (c: Buffer, ms: number) => Promise<void> }, chunk: Buffer) => {
    const t0 = Date.now();
    while (Date.now() - t0 < 8000 && !device.received().includes('"code":"GATEWAY_RATE_LIMITED"')) await device.flood(chunk, 200);
    return device.received().includes('"code":"GATEWAY_RATE_LIMITED"');
  };

  it('refuses a flood of unasked pongs with GATEWAY_RATE_LIMITED and stops reading it; a calm device is acked meanwhile', async () => {
    const mallory = await rawSocket(fx.gateway.port, tlsOf('pong-flood'));
    const calm = await RawDevice.connect(`wss://127.0.0.1:${fx.gateway.port}/ws`, tlsOf('calm-1'));
    try {
      const pongs = Buffer.concat(Array.from({ length: 10_000 }, () => empty(0x8a)));
      const flooding = limitedWithin(mallory, pongs);
      calm.send(JSON.stringify({ deviceId: 'calm-1', dataType: 'timeseries', messageId: 'c-1', payload: { v: 1 } }));
      assert.deepEqual(await calm.next(), { type: 'ack', messageIds: ['c-1'] });
      assert.ok(await flooding, 'the pong flood was answered GATEWAY_RATE_LIMITED');
      assert.ok(logs.lines.some((l) => l.code === 'GATEWAY_RATE_LIMITED' && l.deviceId === 'pong-flood' && l.budget === 'cpu'), 'logged against its CPU budget');
    } finally {
      mallory.socket.destroy();
      calm.close();
    }
  });

  it('refuses messages made of thousands of empty fragments each with GATEWAY_RATE_LIMITED', async () => {
    const mallory = await rawSocket(fx.gateway.port, tlsOf('fragment-flood'));
    try {
      // One reading in 16,001 frames: 16,000 of them empty, the last the reading itself, with FIN. The
      // reading is cheap to parse: its parse alone is far within the budget.
      const reading = JSON.stringify({ deviceId: 'fragment-flood', dataType: 'timeseries', payload: { v: 1 } });
      const message = Buffer.concat([empty(0x01), ...Array.from({ length: 15_999 }, () => empty(0x00)), frame(0x80, reading)]);
      assert.ok(await limitedWithin(mallory, message), 'the fragment flood was answered GATEWAY_RATE_LIMITED');
    } finally {
      mallory.socket.destroy();
    }
  });

  it('still takes a device that keeps to its budget: its readings are acked', async () => {
    const calm = await RawDevice.connect(`wss://127.0.0.1:${fx.gateway.port}/ws`, tlsOf('calm-2'));
    try {
      for (let i = 0; i < 50; i++) {
        calm.send(JSON.stringify({ deviceId: 'calm-2', dataType: 'timeseries', messageId: `c-${i}`, payload: { v: i } }));
        assert.deepEqual(await calm.next(), { type: 'ack', messageIds: [`c-${i}`] });
      }
    } finally {
      calm.close();
    }
  });
});

/** The same flood through real Caddy (GATEWAY_IDENTITY_SOURCE=proxy): Caddy passes a WebSocket's frames on as they came. */
describe("floods of frames that are no message, through Caddy: charged to the device's CPU budget", () => {
  const work = tempDir('gateway-frame-floods-caddy');
  const pki = makeTestPki(['pong-flood', 'calm-1']);
  let stack: LocalStack;
  before(async () => {
    // As above: 100 ms a second, past which the flood goes and a pause during the calm device's read does not.
    ({ stack } = await startTestStack(pki.dir, join(work.dir, 'stack'), { GATEWAY_RATE_CPU_MS_PER_S: '100', GATEWAY_RATE_BURST_S: '1' }));
  });
  after(async () => {
    await stack?.close();
    pki.cleanup();
    work.cleanup();
  });

  it('refuses a flood of unasked pongs with GATEWAY_RATE_LIMITED; a calm device is acked meanwhile, and the gateway stays up', async () => {
    const mallory = await rawSocket(stack.ports.https, RawDevice.tlsFor(pki.paths, 'pong-flood'));
    const calm = await RawDevice.connect(stack.urls.wss, RawDevice.tlsFor(pki.paths, 'calm-1'));
    try {
      const pongs = Buffer.concat(Array.from({ length: 10_000 }, () => empty(0x8a)));
      const t0 = Date.now();
      const flooding = (async () => {
        while (Date.now() - t0 < 10_000 && !mallory.received().includes('"code":"GATEWAY_RATE_LIMITED"')) await mallory.flood(pongs, 200);
        return mallory.received().includes('"code":"GATEWAY_RATE_LIMITED"');
      })();
      calm.send(JSON.stringify({ deviceId: 'calm-1', dataType: 'timeseries', messageId: 'c-1', payload: { v: 1 } }));
      assert.deepEqual(await calm.next(), { type: 'ack', messageIds: ['c-1'] });
      assert.ok(await flooding, 'the pong flood was answered GATEWAY_RATE_LIMITED');
      for (const proc of stack.gateways) assert.ok(proc.running && proc.restarts === 0, `${proc.name} running, restarted ${proc.restarts} times`);
    } finally {
      mallory.socket.destroy();
      calm.close();
    }
  });
});

/**
 * A device that pings without reading the answers: its pongs wait in the gateway's send buffer like
 * any other frame to it, and past the send-buffer limit (LIMITS.sendBufferMaxBytes) it is cut with GATEWAY_SLOW_CONSUMER
 * in the log, as a device not reading its acks is. (ws's own answer cut it after 60 pongs unwritten,
 * with no code.) Real TLS, the gateway terminating it.
 */
describe('a device that pings and never reads', () => {
  const fx = tlsGatewayOnMosquitto('gateway-ping-no-read', { sendBufferMaxBytes: 256 * 1024 });
  const { logs, tlsOf } = fx;

  it('is cut with GATEWAY_SLOW_CONSUMER once its unread pongs pass the send-buffer limit, with close code 4008', async () => {
    const mallory = await rawSocket(fx.gateway.port, tlsOf('ping-no-read'));
    try {
      mallory.socket.pause(); // reads nothing more
      // Pings of 125 bytes (the most a control frame holds), each answered by a pong as long.
      const pings = Buffer.concat(Array.from({ length: 1000 }, () => frame(0x89, 'p'.repeat(125))));
      const t0 = Date.now();
      while (!mallory.socket.destroyed && Date.now() - t0 < 30_000 && !logs.lines.some((l) => l.code === 'GATEWAY_SLOW_CONSUMER')) await mallory.flood(pings, 100);
      assert.ok(
        logs.lines.some((l) => l.code === 'GATEWAY_SLOW_CONSUMER' && l.deviceId === 'ping-no-read'),
        `cut with its code in the log (${mallory.socket.destroyed ? 'closed' : 'still open'} after ${Date.now() - t0} ms)`,
      );
      // Closed with 4008 and the code as its reason, behind what it had not read: a device that
      // reads again within TIMINGS.gatewayClosingGraceMs learns why (after it, the socket ends).
      mallory.socket.resume();
      const reason = 'GATEWAY_SLOW_CONSUMER';
      const closeFrame = String.fromCharCode(0x88, 2 + reason.length, 4008 >> 8, 4008 & 0xff) + reason;
      const t1 = Date.now();
      while (!mallory.received().includes(closeFrame) && !mallory.socket.readableEnded && Date.now() - t1 < 5_000) await new Promise((r) => setTimeout(r, 20));
      await new Promise((r) => setTimeout(r, 100));
      assert.ok(mallory.received().includes(closeFrame), 'a close frame of code 4008 (CLOSE.tooSlow)');
    } finally {
      mallory.socket.destroy();
    }
  });
});

/**
 * gateway_refused_total counts the error frames sent to devices (docs/monitoring.md). A device past
 * its rate limit is answered once and its socket paused; the frames of it already read meanwhile are
 * dropped unanswered (device-session.ts). Real TLS, a real Mosquitto, the gateway terminating TLS.
 */
describe('a device past its rate limit: the refusals counted are the error frames it was sent', () => {
  const fx = tlsGatewayOnMosquitto('gateway-rate-refusals', {}, { rateLimits: { messagesPerS: 5, bytesPerS: 64 * 1024 * 1024, cpuMsPerS: 1000, burstS: 1, frameMaxMessages: 1, frameMaxBytes: LIMITS.frameMaxBytes } });
  const { tlsOf } = fx;

  it('counts one GATEWAY_RATE_LIMITED refusal per error frame, not one per frame dropped unanswered while paused', async () => {
    const mallory = await rawSocket(fx.gateway.port, tlsOf('rate-burst'));
    try {
      // 100 readings in one write: the gateway reads them together, past the budget of 5 at the 6th.
      const readings = Buffer.concat(Array.from({ length: 100 }, (_, i) => frame(0x81, JSON.stringify({ deviceId: 'rate-burst', dataType: 'timeseries', messageId: `m-${i}`, payload: { v: i } }))));
      mallory.socket.write(readings);
      const answered = () => mallory.received().split('"code":"GATEWAY_RATE_LIMITED"').length - 1;
      const t0 = Date.now();
      while (Date.now() - t0 < 5000 && answered() === 0) await new Promise((r) => setTimeout(r, 20));
      // Whatever else the gateway answers (after its pause) comes within a few seconds.
      await new Promise((r) => setTimeout(r, 3000));
      const text = await fx.gateway.metrics.metrics.registry.metrics();
      const counted = Number(/^fieldstream_gateway_refused_total\{code="GATEWAY_RATE_LIMITED",service="gateway"\} (\d+)$/m.exec(text)?.[1] ?? 0);
      const limited = Number(/^fieldstream_gateway_rate_limited_total\{service="gateway"\} (\d+)$/m.exec(text)?.[1] ?? 0);
      assert.ok(answered() >= 1, `answered GATEWAY_RATE_LIMITED: ${mallory.received().slice(-600)}`);
      assert.equal(counted, answered(), `${counted} refusals counted, ${answered()} error frames sent`);
      assert.ok(limited > answered(), `${limited} frames refused for the rate limit, the dropped ones among them`);
    } finally {
      mallory.socket.destroy();
    }
  });
});
