import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LIMITS } from '../../shared/limits.ts';
import { tlsGatewayOnMosquitto } from '../helpers/tls-gateway.ts';
import { RawDevice } from '../helpers/ws-device.ts';

/** A frame whose one reading is `mib` MiB of string fields, batched with 999 events of a few bytes. */
function lopsidedFrame(deviceId: string, k: number, mib: number): string {
  const fieldChars = 60 * 1024;
  const fields: Record<string, string> = {};
  for (let i = 0; i < Math.floor((mib * 1024 * 1024) / fieldChars); i++) fields[`f${i}`] = String(k % 10).repeat(fieldChars);
  const events = Array.from({ length: LIMITS.batchMaxMessages - 1 }, (_, i) => ({ dataType: 'event', messageId: `e${k}-${i}`, payload: { eventType: 'x' } }));
  return JSON.stringify({ deviceId, batch: [{ dataType: 'timeseries', messageId: `big-${k}`, payload: fields }, ...events] });
}

/**
 * The gateway joins the readings of every device into shared envelopes while they stay under
 * LIMITS.envelopeJoinMaxBytes, judged by the size of the frames they came in; an envelope past the
 * broker's packet limit is refused whole (CONTRACT_FRAME_TOO_LARGE, a final code: the field client
 * sets its messages aside). A frame holding several data types had its size shared among them by
 * message count, so a reading of megabytes beside 999 events of a few bytes counted as kilobytes:
 * three of them joined one envelope past the broker's limit, and a calm device's reading in it was
 * refused with them. Real TLS, a real Mosquitto.
 */
describe("the gateway's shared envelopes: one device's frames cannot get another's readings refused", () => {
  const fx = tlsGatewayOnMosquitto('gateway-shared-envelope', { maxInFlight: 5000 }, {
    // The default budgets: a device may send 16 MiB at once (8 MiB/s, a burst of 2 s).
    rateLimits: { messagesPerS: 5000, bytesPerS: 8 * 1024 * 1024, cpuMsPerS: 250, burstS: 2, frameMaxMessages: LIMITS.batchMaxMessages, frameMaxBytes: LIMITS.frameMaxBytes },
    // A linger GATEWAY_LINGER_MS allows (0-1000): every frame here reaches one envelope.
    lingerMs: 300,
  });
  const { tlsOf } = fx;

  it("acks a calm device's reading that shares an envelope with frames of one large reading and many tiny events", async () => {
    // Three devices, each well within its own budgets (one frame of 5.6 MiB).
    const mallories = await Promise.all([1, 2, 3].map((i) => RawDevice.connect(`wss://127.0.0.1:${fx.gateway.port}/ws`, tlsOf(`lopsided-${i}`))));
    const calm = await RawDevice.connect(`wss://127.0.0.1:${fx.gateway.port}/ws`, tlsOf('calm-1'));
    try {
      calm.send(JSON.stringify({ deviceId: 'calm-1', dataType: 'timeseries', messageId: 'c-1', payload: { v: 1 } }));
      mallories.forEach((m, i) => m.send(lopsidedFrame(`lopsided-${i + 1}`, i, 5.6)));
      assert.deepEqual(await calm.next(), { type: 'ack', messageIds: ['c-1'] });
      // The large readings are accepted too, each in an envelope the broker takes.
      for (const [i, m] of mallories.entries()) {
        const acked = new Set<string>();
        while (!acked.has(`big-${i}`)) {
          const f = await m.next();
          assert.equal(f.type, 'ack', JSON.stringify(f).slice(0, 300));
          if (f.type === 'ack') for (const id of f.messageIds) acked.add(id);
        }
      }
    } finally {
      for (const m of mallories) m.close();
      calm.close();
    }
  });
});
