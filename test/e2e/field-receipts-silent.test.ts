import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import type { WebSocket } from 'ws';
import { signReceipt } from '../../shared/security/receipt-auth.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { ack, DEVICE, device, hostileGateway, type Item, welcome } from '../helpers/hostile-gateway.ts';
import { eventually } from '../helpers/ws-device.ts';

/** FIELD_COMMIT_TIMEOUT_MS here: short, so that the resends that decide a move come within seconds */
const TIMEOUT_MS = 500;
const commit = { timeoutMs: TIMEOUT_MS, windowMessages: 50_000, windowBytes: 64 * 1024 * 1024, reconnectGraceMs: 0 };

/**
 * A DMZ server whose bridge to the internal network went down after the device connected: its
 * broker holds the messages for the bridge's session, so its gateway acks them, and no receipt
 * comes back. Without a way to tell, the device stayed there, every message held unreceipted, while
 * another server's path worked (docs/deployment.md, "More than one DMZ server").
 */
describe('a gateway that takes messages while no receipt comes back through it', () => {
  const cleanups: Array<() => Promise<void>> = [];
  after(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  it('is left for the next URL after two resends without a receipt, where every message is committed', async () => {
    const logs = new LogCapture();
    const silent = await hostileGateway((ws) => ws.send(welcome()), ack);
    // The other server's path works: it acks, and the internal side's receipt follows (signed here
    // with the device's key, as the distributor would).
    let key: Buffer | undefined;
    let epochOf: ((seq: number) => string) | undefined;
    const working = await hostileGateway(
      (ws) => ws.send(welcome()),
      (ws: WebSocket, batch: Item[]) => {
        ack(ws, batch);
        for (const m of batch) {
          const epoch = (epochOf as (seq: number) => string)(m.seq);
          const ranges: Array<[number, number]> = [[m.seq, m.seq]];
          ws.send(JSON.stringify({ type: 'commit', epoch, ranges, mac: signReceipt(key as Buffer, DEVICE, epoch, ranges) }));
        }
      },
    );
    cleanups.push(() => silent.close(), () => working.close());
    const d = await device(`${silent.url},${working.url}`, logs, { messages: 20, commit });
    cleanups.push(() => d.close());
    key = d.signingKey;
    epochOf = (seq) => d.queue.epochOf(seq);
    d.connection.start();
    await eventually(() => (silent.distinct() === 20 ? true : undefined), 10_000, 'every message taken by the silent gateway');
    await eventually(() => (d.client.unacknowledged === 0 ? true : undefined), 20_000, 'every message committed through the other server');
    assert.equal(silent.connections, 1);
    assert.equal(working.distinct(), 20);
    const moved = logs.lines.filter((l) => l.code === 'FIELD_RECEIPTS_SILENT');
    assert.equal(moved.length, 1, 'left once');
    assert.equal(moved[0]?.resends, 2);
    // Sent, and sent again once, on the silent connection; the second resend is the one that leaves
    // it (the connection is closed before the pump's next turn), and goes through the other server.
    assert.equal(silent.items.length, 2 * 20, 'each message sent twice to the silent gateway');
    // Receipts come on this connection: it is kept.
    await new Promise((r) => setTimeout(r, 3 * TIMEOUT_MS));
    assert.equal(working.connections, 1);
    assert.equal(logs.lines.filter((l) => l.code === 'FIELD_RECEIPTS_SILENT').length, 1);
  });

  it('with one URL, connects again only after four resends without a receipt (behind a load balancer: perhaps to another server)', async () => {
    const logs = new LogCapture();
    const silent = await hostileGateway((ws) => ws.send(welcome()), ack);
    cleanups.push(() => silent.close());
    const d = await device(silent.url, logs, { messages: 5, commit });
    cleanups.push(() => d.close());
    d.connection.start();
    // Resends at 0.5, 1.5, 3.5 and 7.5 s (the wait doubles from TIMEOUT_MS), each at the next look
    // (TIMINGS.commitCheckIntervalMs, 1 s): two resends have passed by 4 s, and it is still there.
    await eventually(() => (d.client.receiptStats.resentForReceipt >= 2 * 5 ? true : undefined), 10_000, 'two resends');
    assert.equal(silent.connections, 1, 'not left after two resends with one URL');
    await eventually(() => (silent.connections === 2 ? true : undefined), 20_000, 'connected again');
    const moved = logs.lines.filter((l) => l.code === 'FIELD_RECEIPTS_SILENT');
    assert.equal(moved.length, 1);
    assert.equal(moved[0]?.resends, 4);
  });
});
