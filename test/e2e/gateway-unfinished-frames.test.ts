import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { tlsGatewayOnMosquitto } from '../helpers/tls-gateway.ts';
import { parseExposition } from '../helpers/exposition.ts';
import { rawSocket } from '../helpers/raw-ws.ts';
import { eventually } from '../helpers/ws-device.ts';

const KiB = 1024;
const MAX = 1024 * KiB;

/** The header of a masked client text frame (RFC 6455 §5.2) of `length` bytes, its mask zero: the payload goes as it is. */
const header = (length: number) => {
  const h = Buffer.alloc(14);
  h[0] = 0x81;
  h[1] = 0x80 | 127;
  h.writeBigUInt64BE(BigInt(length), 2);
  return h; // the last four bytes, zero, are the mask
};
/** A masked client frame (mask zero) of `opcode`, its payload `payload`, FIN set unless `more`. */
const frame = (opcode: number, payload: Buffer, more = false) => {
  const h = payload.length < 126 ? Buffer.from([0, 0x80 | payload.length]) : payload.length < 65_536 ? Buffer.from([0, 0x80 | 126, payload.length >> 8, payload.length & 255]) : Buffer.alloc(10);
  if (h.length === 10) {
    h[1] = 0x80 | 127;
    h.writeBigUInt64BE(BigInt(payload.length), 2);
  }
  h[0] = (more ? 0 : 0x80) | opcode;
  return Buffer.concat([h, Buffer.alloc(4), payload]);
};
/** How many of the gateway's pongs (unmasked) carrying `payload` came back. */
const pongs = (received: string, payload: string) => received.split(Buffer.concat([Buffer.from([0x8a, payload.length]), Buffer.from(payload)]).toString('latin1')).length - 1;
/** A close frame with code 1013 as the gateway sends it (unmasked), as latin1 text. */
const closed1013 = Buffer.from([0x03, 0xf5]).toString('latin1');

/**
 * Messages begun and never finished are bounded in all, not only each by the frame limit: devices
 * starting 8 MiB messages and stopping halfway held memory the gateway could not bound
 * (GATEWAY_MAX_CONNECTIONS × 8 MiB). Past the bound the connection keeping the most is closed with
 * 1013 (Try Again Later), the others untouched. The real gateway terminating TLS, a real Mosquitto.
 */
describe('unfinished messages of all devices together: at most GATEWAY_UNFINISHED_FRAMES_MAX_MIB', () => {
  const fx = tlsGatewayOnMosquitto('gateway-unfinished', {}, { unfinishedFramesMaxBytes: MAX });
  const sample = async (name: string) => parseExposition(await fx.gateway.metrics.metrics.registry.metrics()).get(`${name}{service="gateway"}`) ?? -1;

  it('closes the connection keeping the most once all together pass the bound; the others go on', async () => {
    const [big, small] = [await rawSocket(fx.gateway.port, fx.tlsOf('pump-1')), await rawSocket(fx.gateway.port, fx.tlsOf('pump-2'))];
    const bigSession = fx.gateway.router.session('pump-1');
    assert.ok(bigSession, 'the big one has its session');
    try {
      big.socket.write(Buffer.concat([header(2048 * KiB), Buffer.alloc(400 * KiB, 0x61)]));
      small.socket.write(Buffer.concat([header(300 * KiB), Buffer.alloc(250 * KiB, 0x61)]));
      // Within the bound: both kept, their bytes counted (headers and the close of nothing yet).
      await eventually(async () => ((await sample('fieldstream_gateway_unfinished_frame_bytes')) >= 650 * KiB ? true : undefined), 5_000, 'both unfinished messages counted');
      assert.equal(await sample('fieldstream_gateway_unfinished_frames_shed_total'), 0);

      // The big one goes on: all together pass the bound, and the connection keeping the most is closed.
      big.socket.write(Buffer.alloc(400 * KiB, 0x61));
      await eventually(() => (big.received().includes(closed1013) ? true : undefined), 5_000, 'the big one closed with 1013');
      assert.match(big.received(), /GATEWAY_UNFINISHED_FRAMES_FULL/, 'its reason names the code');
      // Its bytes no longer counted, nothing more of its socket is read either: the rest of its
      // message (up to the frame limit) was buffered, uncounted, until its socket ended.
      assert.equal(bigSession.readingPaused, true, 'the shed connection is read no more');
      assert.equal(await sample('fieldstream_gateway_unfinished_frames_shed_total'), 1);
      assert.ok(fx.logs.lines.some((l) => l.code === 'GATEWAY_UNFINISHED_FRAMES_FULL' && typeof l.bytes === 'number' && l.bytes > 400 * KiB && l.maxBytes === MAX), 'logged with the bytes it kept (more than it had when within the bound)');
      const left = await sample('fieldstream_gateway_unfinished_frame_bytes');
      assert.ok(left >= 250 * KiB && left < 400 * KiB, `the big one's bytes no longer counted: ${left}`);

      // The small one is untouched: it finishes its message, which the gateway reads (and refuses: it is no frame of ours).
      assert.equal(small.socket.destroyed, false);
      small.socket.write(Buffer.alloc(50 * KiB, 0x61));
      await eventually(() => (small.received().includes('"type":"error"') ? true : undefined), 5_000, 'the small message read whole and answered');
      assert.ok(!small.received().includes(closed1013), 'the small one was not closed');
      await eventually(async () => ((await sample('fieldstream_gateway_unfinished_frame_bytes')) < 16 * KiB ? true : undefined), 5_000, 'nothing unfinished left counted');
    } finally {
      big.socket.destroy();
      small.socket.destroy();
    }
  });

  it('counts no control frame once read whole: pings of an idle device leave nothing counted', async () => {
    await eventually(async () => ((await sample('fieldstream_gateway_unfinished_frame_bytes')) === 0 ? true : undefined), 5_000, 'nothing counted to begin with');
    const idle = await rawSocket(fx.gateway.port, fx.tlsOf('pump-3'));
    try {
      // A device answering the heartbeat, or keeping its link alive, for days: control frames and no message.
      const ping = (i: number) => frame(0x9, Buffer.from(`idle-${String(i).padStart(3, '0')}`.padEnd(120, '.')));
      idle.socket.write(Buffer.concat(Array.from({ length: 40 }, (_, i) => ping(i))));
      // The last pong answered: every ping was read.
      await eventually(() => (pongs(idle.received(), ping(39).subarray(6).toString('latin1')) === 1 ? true : undefined), 5_000, 'the last ping answered');
      assert.equal(await sample('fieldstream_gateway_unfinished_frame_bytes'), 0, 'pings read whole hold nothing');
    } finally {
      idle.socket.destroy();
    }
  });

  it('counts the message a read begins after finishing another, exactly, control frames within it held by no one', async () => {
    await eventually(async () => ((await sample('fieldstream_gateway_unfinished_frame_bytes')) === 0 ? true : undefined), 5_000, 'nothing counted to begin with');
    const dev = await rawSocket(fx.gateway.port, fx.tlsOf('pump-4'));
    try {
      const first = frame(0x1, Buffer.alloc(64 * KiB, 0x61), true);
      // One write: a whole (small, refused) message, the first fragment of the next, and a ping amid its fragments.
      dev.socket.write(Buffer.concat([frame(0x1, Buffer.from('{}')), first, frame(0x9, Buffer.from('flush-1'))]));
      await eventually(() => (pongs(dev.received(), 'flush-1') === 1 ? true : undefined), 5_000, 'the ping after the fragment answered');
      assert.equal(await sample('fieldstream_gateway_unfinished_frame_bytes'), first.length, 'the fragment begun, its header too, and nothing else');

      const second = frame(0x0, Buffer.alloc(32 * KiB, 0x61), true);
      dev.socket.write(Buffer.concat([second, frame(0x9, Buffer.from('flush-2'))]));
      await eventually(() => (pongs(dev.received(), 'flush-2') === 1 ? true : undefined), 5_000, 'the ping after the second fragment answered');
      assert.equal(await sample('fieldstream_gateway_unfinished_frame_bytes'), first.length + second.length);

      // The last fragment: the message is whole, and nothing of it is held any more.
      dev.socket.write(Buffer.concat([frame(0x0, Buffer.alloc(1 * KiB, 0x61)), frame(0x9, Buffer.from('flush-3'))]));
      await eventually(() => (pongs(dev.received(), 'flush-3') === 1 ? true : undefined), 5_000, 'the ping after the message answered');
      assert.equal(await sample('fieldstream_gateway_unfinished_frame_bytes'), 0);
      assert.equal(dev.socket.destroyed, false);
    } finally {
      dev.socket.destroy();
    }
  });
});
