import WebSocket from 'ws';
import { ACKS_HEADER, type AckMode } from '../../shared/contract/downlink.ts';
import { signedBatchFrame } from '../../shared/contract/uplink-frame.ts';
import { signMessage } from '../../shared/security/message-auth.ts';
import type { FleetDevice } from './fleet-pki.ts';

// A simulated device of the fleet (bench/scenarios/fleet.ts): what it sends, and its connection through the edge.

/** One reading in the seed's form, `{"deviceId", "dataType", "payload"}`, with the device's signature (version 1). */
export function frame(d: FleetDevice, epoch: string, k: number, at: number, now: number): string {
  const payload = reading(k, at);
  const auth = signMessage(d.signingKey, { deviceId: d.id, dataType: 'timeseries', epoch, seq: k, ts: now, payload });
  return JSON.stringify({ deviceId: d.id, dataType: 'timeseries', payload, auth });
}

/**
 * Readings a device took, each at its own due time, in one batch frame (the field client's form:
 * shared/contract/uplink-frame.ts) signed as one group (version 2) when it is sent.
 */
export function groupFrame(d: FleetDevice, epoch: string, readings: ReadonlyArray<{ k: number; at: number }>, now: number): string {
  if (readings.length === 0) throw new RangeError('a frame holds at least one reading');
  const items = readings.map(({ k, at }) => ({ dataType: 'timeseries', messageId: `${epoch}.${k}`, seq: k, payloadJson: JSON.stringify(reading(k, at)) }));
  return signedBatchFrame(d.signingKey, { deviceId: d.id, epoch, ts: now }, items);
}

/** The k-th reading of a device, taken at `at`, in the seed's form. */
function reading(k: number, at: number): { temperature: number; humidity: number; pressure: number; timestamp: string } {
  return { temperature: 20 + (k % 100) / 10, humidity: 65.2, pressure: 1013.25, timestamp: new Date(at).toISOString() };
}

/**
 * Opens one device's WebSocket and resolves once the gateway's welcome arrived; then counts its
 * errors and closes. `acks`: what the device asks for (ACKS_HEADER); with `none` a welcome that does
 * not say so fails the connection, as the device would then be read acks it does not want.
 */
export function connect(url: string, ca: string, d: FleetDevice, stats: { errors: number; acks: number; closed: number; firstError: string }, acks: AckMode): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { ca, cert: d.certPem, key: d.keyPem, perMessageDeflate: false, ...(acks === 'none' ? { headers: { [ACKS_HEADER]: 'none' } } : {}) });
    let welcomed = false;
    const fail = (why: string) => {
      ws.terminate();
      reject(new Error(`${d.id}: ${why}`));
    };
    const timer = setTimeout(() => fail('no welcome within 30 s'), 30_000);
    ws.on('message', (data) => {
      // Acks (with acks: all) are counted and, as commit receipts, not read further: a simple device sends and forgets.
      const text = String(data);
      if (!welcomed) {
        clearTimeout(timer);
        if (!text.startsWith('{"type":"welcome"')) return fail(`first frame was not a welcome: ${text.slice(0, 200)}`);
        if (acks === 'none' && !text.includes('"acks":"none"')) return fail(`the welcome does not say acks: none: ${text.slice(0, 300)}`);
        welcomed = true;
        return resolve(ws);
      }
      if (text.startsWith('{"type":"ack"')) stats.acks++;
      if (text.startsWith('{"type":"error"')) {
        stats.errors++;
        stats.firstError ||= `${d.id}: ${text.slice(0, 300)}`;
      }
    });
    ws.on('close', () => {
      if (welcomed) stats.closed++;
    });
    ws.on('error', (err) => {
      clearTimeout(timer);
      if (!welcomed) fail(err.message);
    });
    ws.once('unexpected-response', (_req, res) => {
      clearTimeout(timer);
      fail(`HTTP ${res.statusCode}`);
    });
  });
}
