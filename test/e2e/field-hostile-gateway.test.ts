import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { WebSocket } from 'ws';
import { GatewayConnection } from '../../field-client/src/gateway-connection.ts';
import { RewindBackoff } from '../../field-client/src/rewind-backoff.ts';
import { WelcomeFrameSchema } from '../../shared/contract/downlink.ts';
import { LIMITS } from '../../shared/limits.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { ack, ca, DEVICE, device, hostileGateway, type Item, welcome } from '../helpers/hostile-gateway.ts';
import { tempDir } from '../helpers/pki.ts';
import { eventually } from '../helpers/ws-device.ts';

/**
 * A compromised DMZ plays the gateway (it holds the edge certificate; here a throwaway CA stands in
 * for it) and tries to drain the device's memory, battery and bandwidth, or to stall it silently:
 * it stops reading while sending welcomes, welcomes and closes in a loop, answers every frame with
 * a transient error, acks everything and closes every few seconds, announces limits of zero, and
 * sends error frames as long as a downlink frame allows. The device keeps its memory, its reconnects,
 * its resends and its log bounded, and never stops sending without saying why.
 */

describe('a field client against a hostile gateway', () => {
  const cleanups: Array<() => Promise<void>> = [];
  after(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  it('hands its socket no more than LIMITS.fieldSendBufferMaxBytes while the gateway does not read, and goes on as it drains', async () => {
    const logs = new LogCapture();
    // Reads nothing after its welcome (so acks nothing); welcomes again every 20 ms.
    const gw = await hostileGateway(
      (ws) => {
        ws.send(welcome());
        ((ws as unknown as { _socket: Socket })._socket).pause();
        const t = setInterval(() => (ws.readyState === ws.OPEN ? ws.send(welcome()) : clearInterval(t)), 20);
      },
      ack,
    );
    cleanups.push(() => gw.close());
    // 2000 messages of 20 KB: 40 MB, far more than the bound and the kernel's buffers together.
    const d = await device(gw.url, logs, { messages: 2000, payloadBytes: 20_000 });
    cleanups.push(() => d.close());
    d.connection.start();
    await eventually(() => (d.client.stats.sent > 0 ? true : undefined), 10_000, 'sending started');
    let most = 0;
    for (let i = 0; i < 100; i++) {
      most = Math.max(most, d.connection.bufferedAmount);
      await new Promise((r) => setTimeout(r, 10));
    }
    // Asked before each frame: at most one frame (4 MiB of messages, and its envelope) past the bound.
    const bound = LIMITS.fieldSendBufferMaxBytes + LIMITS.fieldFrameMaxBytes + 1024 * 1024;
    assert.ok(most <= bound, `${(most / 2 ** 20).toFixed(1)} MiB waited in the socket; at most ${(bound / 2 ** 20).toFixed(1)} MiB`);
    assert.ok(d.client.stats.sent < 2000, `${d.client.stats.sent} messages handed to the socket while the gateway read nothing`);
    // The gateway reads (and acks) again: everything goes. (Past what its link carries in a few
    // seconds, a device sends more only as the gateway answers: send-pacing.ts.)
    for (const ws of gw.sockets) ((ws as unknown as { _socket: Socket })._socket).resume();
    await eventually(() => (gw.distinct() === 2000 ? true : undefined), 15_000, 'every message sent once the gateway reads');
  });

  it('acts on the first welcome of a connection only: a repeated one sends nothing again', async () => {
    const logs = new LogCapture();
    // Reads, and never acks the first message: it stays unacknowledged, so a welcome that had the
    // device start again from its first unacknowledged message would have it all sent again. The
    // rest is acked, as the device sends more only as the gateway answers (send-pacing.ts).
    let first: string | undefined;
    const gw = await hostileGateway(
      (ws) => ws.send(welcome()),
      (ws, batch) => {
        first ??= batch[0]?.messageId;
        ack(ws, batch.filter((m) => m.messageId !== first));
      },
    );
    cleanups.push(() => gw.close());
    const d = await device(gw.url, logs, { messages: 100 });
    cleanups.push(() => d.close());
    d.connection.start();
    await eventually(() => (gw.items.length === 100 ? true : undefined), 10_000, 'the window sent');
    const socket = gw.sockets[0] as WebSocket;
    for (let i = 0; i < 5; i++) socket.send(welcome());
    // A message queued after the welcomes arrives after anything they would have had sent again.
    await d.client.submit('event', { eventType: 'last', message: 'after the welcomes', severity: 'info' });
    await eventually(() => (gw.distinct() === 101 ? true : undefined), 10_000, 'the last message');
    assert.equal(gw.items.length, 101, 'each message sent once: no welcome after the first sent the window again');
    assert.ok(logs.codes().includes('FIELD_GATEWAY_WELCOME_REPEATED'), 'the repeated welcome logged with its code');
  });

  it('drops a connection that answers nothing sent to it within the answer timeout, an idle one only at the idle timeout', async () => {
    const logs = new LogCapture();
    // Welcomes, then reads everything and answers nothing, not even a ping: a DMZ server whose
    // power went looks so from the device (no FIN, no RST), and so does a gateway that black-holes.
    const gw = await hostileGateway((ws) => ws.send(welcome()));
    cleanups.push(() => gw.close());
    const d = await device(gw.url, logs, { messages: 0, connection: { idleTimeoutMs: 60_000, answerTimeoutMs: 1_000 } });
    cleanups.push(() => d.close());
    d.connection.start();
    await eventually(() => (d.client.welcome ? true : undefined), 10_000, 'welcomed');
    await new Promise((r) => setTimeout(r, 2_500));
    assert.equal(gw.connections, 1, 'nothing sent, nothing due: the silent connection is kept until the idle timeout');
    const sentAt = Date.now();
    await d.client.submit('event', { eventType: 'e', message: 'unanswered', severity: 'info' });
    await eventually(() => (gw.connections === 2 ? true : undefined), 10_000, 'a new connection');
    const tookMs = Date.now() - sentAt;
    assert.ok(logs.lines.some((l) => l.code === 'FIELD_GATEWAY_SILENT' && typeof l.sentAgoMs === 'number'), 'said why, with its code');
    await eventually(() => (gw.items.length === 2 ? true : undefined), 10_000, 'the message sent again on the new connection');
    assert.ok(tookMs < 10_000, `dropped ${tookMs} ms after the frame, not at the idle timeout`);
  });

  it("drops a silent connection on time when the device's clock is set back meanwhile (NTP stepping it)", async () => {
    const logs = new LogCapture();
    // Welcomes, then reads everything and answers nothing, not even a ping (a path gone dead).
    const gw = await hostileGateway((ws) => ws.send(welcome()));
    cleanups.push(() => gw.close());
    const d = await device(gw.url, logs, { messages: 0, connection: { idleTimeoutMs: 3_000, answerTimeoutMs: 1_000 } });
    cleanups.push(() => d.close());
    d.connection.start();
    await eventually(() => (d.client.welcome ? true : undefined), 10_000, 'welcomed');
    const started = performance.now();
    await d.client.submit('event', { eventType: 'e', message: 'unanswered', severity: 'info' });
    await eventually(() => (gw.items.length === 1 ? true : undefined), 10_000, 'the frame read');
    // Then, while its answer is due, the wall clock steps back an hour (a device that booted with
    // its clock ahead, NTP correcting it): the timeouts run on a clock that setting it does not move.
    const wallClock = Date.now;
    Date.now = () => wallClock() - 3_600_000;
    try {
      await eventually(() => (gw.connections === 2 ? true : undefined), 10_000, 'a new connection, not one an hour later');
      const tookMs = performance.now() - started;
      assert.ok(tookMs < 5_000, `dropped ${Math.round(tookMs)} ms after the frame`);
      assert.ok(logs.codes().includes('FIELD_GATEWAY_SILENT'), 'said why, with its code');
    } finally {
      Date.now = wallClock;
    }
  });

  it("sends again what awaits its receipt on time when the device's clock is set back meanwhile", async () => {
    const logs = new LogCapture();
    // Acks every frame ("in the DMZ broker") and never hands over a receipt: the internal side lost it.
    const gw = await hostileGateway((ws) => ws.send(welcome()), ack);
    cleanups.push(() => gw.close());
    const d = await device(gw.url, logs, { messages: 0, commit: { timeoutMs: 1_000, windowMessages: 50_000, windowBytes: 64 * 1024 * 1024 } });
    cleanups.push(() => d.close());
    d.connection.start();
    await eventually(() => (d.client.welcome ? true : undefined), 10_000, 'welcomed');
    await d.client.submit('event', { eventType: 'e', message: 'no receipt', severity: 'info' });
    await eventually(() => (d.queue.awaiting.count === 1 ? true : undefined), 10_000, 'acked, awaiting its receipt');
    // The wall clock steps back an hour (NTP correcting a device that booted with its clock ahead):
    // the wait for the receipt runs on a clock that setting it does not move.
    const wallClock = Date.now;
    Date.now = () => wallClock() - 3_600_000;
    try {
      const started = performance.now();
      await eventually(() => (gw.items.length >= 2 ? true : undefined), 10_000, 'sent again after the commit timeout, not an hour later');
      assert.ok(performance.now() - started < 5_000);
      assert.ok(logs.codes().includes('FIELD_COMMIT_TIMEOUT'), 'said why, with its code');
    } finally {
      Date.now = wallClock;
    }
  });

  it('keeps backing off from a gateway that welcomes and closes at once, and starts over once a connection held', async () => {
    const logs = new LogCapture();
    // The first four connections are closed as soon as they are welcomed; the fifth is kept.
    const gw = await hostileGateway((ws, n) => {
      ws.send(welcome());
      if (n <= 4) ws.close(1001, 'going away');
    });
    cleanups.push(() => gw.close());
    const conn = new GatewayConnection({ url: gw.url, tls: { ca: ca.certPem, token: `fst1.${DEVICE}.x` }, reconnectInitialMs: 20, reconnectMaxMs: 100, idleTimeoutMs: 60_000, healthyAfterMs: 500 }, logs.logger);
    cleanups.push(() => conn.stop());
    conn.start();
    await eventually(() => (gw.connections === 5 && conn.isOpen ? true : undefined), 10_000, 'the fifth connection');
    // Reset at the open, every delay would stay at its first step (a handshake every 100–500 ms).
    assert.equal(conn.consecutiveFailures, 4, 'connections closed at once count as failed, opened or not');
    await eventually(() => (conn.consecutiveFailures === 0 ? true : undefined), 5_000, 'reset once the connection held for healthyAfterMs');
  });

  it('backs off further after each transient error without progress', async () => {
    const logs = new LogCapture();
    const firstRound: number[] = [];
    let first: string | undefined;
    // Answers every frame with GATEWAY_RATE_LIMITED for all it holds; notes when each resend round starts.
    const gw = await hostileGateway(
      (ws) => ws.send(welcome()),
      (ws, batch) => {
        first ??= batch[0]?.messageId;
        if (batch[0]?.messageId === first) firstRound.push(Date.now());
        ws.send(JSON.stringify({ type: 'error', code: 'GATEWAY_RATE_LIMITED', message: 'slow down', messageIds: batch.map((m) => m.messageId) }));
      },
    );
    cleanups.push(() => gw.close());
    const base = 20;
    const d = await device(gw.url, logs, { messages: 10, transientRewindMs: base });
    cleanups.push(() => d.close());
    d.connection.start();
    await eventually(() => (firstRound.length >= 7 ? true : undefined), 10_000, 'seven rounds');
    // The pause before round k+1 is at least half of base·2^(k-1) (equal jitter): a lower bound, so
    // a slow machine only makes it longer. A fixed pause would stay at `base` for ever.
    for (let k = 1; k < 7; k++) {
      const gap = (firstRound[k] as number) - (firstRound[k - 1] as number);
      assert.ok(gap >= (base * 2 ** (k - 1)) / 2 - 2, `pause ${k}: ${gap} ms`);
    }
  });

  it('leaves a gateway whose broker stays unavailable for the next URL; with a single URL, connects again after four times as long', async () => {
    const logs = new LogCapture();
    const brokerDown = (ws: WebSocket, batch: Item[]) =>
      ws.send(JSON.stringify({ type: 'error', code: 'GATEWAY_BROKER_UNAVAILABLE', message: 'broker down', messageIds: batch.map((m) => m.messageId) }));
    const down = await hostileGateway((ws) => ws.send(welcome()), brokerDown);
    const fine = await hostileGateway((ws) => ws.send(welcome()), ack);
    const alone = await hostileGateway((ws) => ws.send(welcome()), brokerDown);
    cleanups.push(() => down.close(), () => fine.close(), () => alone.close());
    const d = await device(`${down.url},${fine.url}`, logs, { messages: 50, transientRewindMs: 50, brokerUnavailableMoveMs: 1_000 });
    cleanups.push(() => d.close());
    d.connection.start();
    await eventually(() => (fine.distinct() === 50 ? true : undefined), 15_000, 'every message taken by the other DMZ server');
    assert.equal(down.connections, 1);
    assert.ok(logs.lines.some((l) => l.code === 'FIELD_GATEWAY_BROKER_DOWN'));
    // With one URL it waits four times as long, then connects again (behind a load balancer, to
    // another server perhaps).
    const single = await device(alone.url, new LogCapture(), { messages: 5, transientRewindMs: 50, brokerUnavailableMoveMs: 500 });
    cleanups.push(() => single.close());
    single.connection.start();
    await new Promise((r) => setTimeout(r, 1_200));
    assert.equal(alone.connections, 1, 'not dropped before four times the interval');
    await eventually(() => (alone.connections === 2 ? true : undefined), 10_000, 'connected again');
  });

  it('counts a file chunk the gateway took as progress: a broker unavailable now and then does not make it leave while chunks go through', async () => {
    const logs = new LogCapture();
    let frames = 0;
    // Every fourth chunk refused as the broker unavailable (a broker briefly busy), the others
    // taken. Only chunk acks count as what the gateway took: a device sending a file alone left
    // this gateway after FIELD_BROKER_UNAVAILABLE_MOVE_S, however many chunks went through meanwhile.
    const flaky = await hostileGateway(
      (ws) => ws.send(welcome()),
      (ws, batch) => {
        frames++;
        if (frames % 4 === 0) ws.send(JSON.stringify({ type: 'error', code: 'GATEWAY_BROKER_UNAVAILABLE', message: 'broker busy', messageIds: batch.map((m) => m.messageId) }));
        else setTimeout(() => ack(ws, batch), 100);
      },
    );
    const other = await hostileGateway((ws) => ws.send(welcome()), ack);
    cleanups.push(() => flaky.close(), () => other.close());
    const d = await device(`${flaky.url},${other.url}`, logs, { messages: 0, transientRewindMs: 50, brokerUnavailableMoveMs: 1_000 });
    cleanups.push(() => d.close());
    const source = tempDir('hostile-gateway-file');
    cleanups.push(async () => source.cleanup());
    const path = join(source.dir, 'big.bin');
    writeFileSync(path, randomBytes(2 * 1024 * 1024));
    await d.client.submitFile(path);
    d.connection.start();
    await eventually(() => (d.client.unacknowledged === 0 ? true : undefined), 30_000, 'the file sent whole');
    assert.ok(frames >= 12, `${frames} chunk frames, refusals among them`);
    assert.equal(other.connections, 0, 'the gateway taking chunks was never left');
    assert.ok(!logs.codes().includes('FIELD_GATEWAY_BROKER_DOWN'));
  });

  it("leaves a gateway whose broker stays unavailable on time when the device's clock is set back meanwhile", async () => {
    const logs = new LogCapture();
    const brokerDown = (ws: WebSocket, batch: Item[]) =>
      ws.send(JSON.stringify({ type: 'error', code: 'GATEWAY_BROKER_UNAVAILABLE', message: 'broker down', messageIds: batch.map((m) => m.messageId) }));
    const down = await hostileGateway((ws) => ws.send(welcome()), brokerDown);
    const fine = await hostileGateway((ws) => ws.send(welcome()), ack);
    cleanups.push(() => down.close(), () => fine.close());
    const d = await device(`${down.url},${fine.url}`, logs, { messages: 5, transientRewindMs: 50, brokerUnavailableMoveMs: 1_000 });
    cleanups.push(() => d.close());
    d.connection.start();
    await eventually(() => (down.items.length > 0 ? true : undefined), 10_000, 'the first refusal');
    // The wall clock steps back an hour: how long the broker has been down runs on a clock that
    // setting it does not move.
    const wallClock = Date.now;
    Date.now = () => wallClock() - 3_600_000;
    try {
      await eventually(() => (fine.distinct() === 5 ? true : undefined), 10_000, 'the next URL taken, not an hour later');
      assert.ok(logs.codes().includes('FIELD_GATEWAY_BROKER_DOWN'));
    } finally {
      Date.now = wallClock;
    }
  });

  it('starts the transient pause over once the gateway makes progress (unit)', () => {
    let r = 1;
    const b = new RewindBackoff(100, 1000, () => r);
    assert.deepEqual([b.next(), b.next(), b.next(), b.next(), b.next()], [100, 200, 400, 800, 1000], 'doubling, capped');
    b.progress();
    r = 0;
    assert.equal(b.next(), 50, 'from the start again, jitter down to half');
  });

  it('sends what awaited receipts again after a reconnect only as often as the doubling allows', async () => {
    const logs = new LogCapture();
    // Acks everything, never a receipt, and closes every connection after a little over a second.
    const gw = await hostileGateway(
      (ws) => {
        ws.send(welcome());
        setTimeout(() => ws.close(1001, 'bye'), 1_100);
      },
      ack,
    );
    cleanups.push(() => gw.close());
    const d = await device(gw.url, logs, { messages: 50, commit: { timeoutMs: 60_000, windowMessages: 50_000, windowBytes: 64 * 1024 * 1024, reconnectGraceMs: 0 } });
    cleanups.push(() => d.close());
    d.connection.start();
    await eventually(() => (gw.connections >= 3 && d.connection.isOpen && d.client.receiptStats.resentForReceipt > 0 ? true : undefined), 10_000, 'two reconnects');
    await eventually(() => (gw.connections >= 4 ? true : undefined), 10_000, 'a third reconnect');
    // The first reconnect sends them again (the grace); the next ones come before the doubled wait
    // (2 × 60 s) since that resend is over, so they send nothing again.
    assert.equal(d.client.receiptStats.resentForReceipt, 50, 'sent again once, not at every reconnect');
  });

  it('refuses a welcome whose limits would let nothing through, says so, and sends within its own', async () => {
    assert.equal(WelcomeFrameSchema.safeParse(JSON.parse(welcome({ frameMaxBytes: 0, batchMaxMessages: 1000 }))).success, false);
    assert.equal(WelcomeFrameSchema.safeParse(JSON.parse(welcome({ frameMaxBytes: LIMITS.frameMaxBytes, batchMaxMessages: -5 }))).success, false);
    assert.equal(WelcomeFrameSchema.safeParse(JSON.parse(welcome({ frameMaxBytes: 1024, batchMaxMessages: 1 }))).success, true, 'the least a gateway may announce');
    const runs = [{ frameMaxBytes: 0, batchMaxMessages: 1000 }, { frameMaxBytes: LIMITS.frameMaxBytes, batchMaxMessages: 0 }].map(async (limits) => {
      const logs = new LogCapture();
      const gw = await hostileGateway((ws) => ws.send(welcome(limits)), ack);
      cleanups.push(() => gw.close());
      const d = await device(gw.url, logs, { messages: 20 });
      cleanups.push(() => d.close());
      d.connection.start();
      // Sending starts TIMINGS.welcomeWaitMs (2 s) after the connection, as with no welcome at all.
      await eventually(() => (gw.distinct() === 20 ? true : undefined), 8_000, `every message sent despite ${JSON.stringify(limits)}`);
      assert.ok(logs.codes().includes('FIELD_GATEWAY_FRAME_INVALID'), 'the welcome refused, with its code');
    });
    await Promise.all(runs);
  });

  it("waits for a connection's own welcome: the wait of a connection closed before its welcome starts nothing on the next", async () => {
    // The first connection is closed after 0.6 s, with no welcome; the next gets its welcome 1.8 s
    // after it opened: past the first one's TIMINGS.welcomeWaitMs (2 s) but within its own.
    const logs = new LogCapture();
    let welcomedAt = 0;
    let firstBatchAt = 0;
    const gw = await hostileGateway(
      (ws, n) => {
        if (n === 1) {
          setTimeout(() => ws.close(1001, 'bye'), 600);
          return;
        }
        setTimeout(() => {
          welcomedAt = Date.now();
          ws.send(welcome());
        }, 1_800);
      },
      (ws, batch) => {
        firstBatchAt ||= Date.now();
        ack(ws, batch);
      },
    );
    cleanups.push(() => gw.close());
    const d = await device(gw.url, logs, { messages: 20 });
    cleanups.push(() => d.close());
    d.connection.start();
    await eventually(() => (gw.distinct() === 20 && welcomedAt > 0 ? true : undefined), 10_000, 'every message sent, and the welcome');
    assert.equal(gw.connections, 2);
    assert.ok(firstBatchAt >= welcomedAt, `sent ${welcomedAt - firstBatchAt} ms before the second connection's welcome`);
  });

  it('sends what is submitted between the connection and its welcome once, after the welcome', async () => {
    // A gateway slow to welcome (a loaded DMZ): messages submitted meanwhile went out at once, then
    // again at the welcome, which starts sending from the first unacknowledged message.
    const logs = new LogCapture();
    let welcomedAt = 0;
    let firstBatchAt = 0;
    const gw = await hostileGateway(
      (ws) => {
        setTimeout(() => {
          welcomedAt = Date.now();
          ws.send(welcome());
        }, 800);
      },
      (ws, batch) => {
        firstBatchAt ||= Date.now();
        // Acked a moment later, as a gateway publishing to its broker does: the welcome's rewind
        // found the first copies unanswered.
        setTimeout(() => ack(ws, batch), 1_000);
      },
    );
    cleanups.push(() => gw.close());
    const d = await device(gw.url, logs, { messages: 0 });
    cleanups.push(() => d.close());
    d.connection.start();
    await eventually(() => (d.connection.isOpen ? true : undefined), 5_000, 'the connection');
    await d.client.submitMany(Array.from({ length: 20 }, (_, i) => ({ dataType: 'event' as const, payload: { eventType: 'e', message: `m${i}`, severity: 'info' as const } })));
    await eventually(() => (gw.distinct() === 20 && welcomedAt > 0 ? true : undefined), 10_000, 'every message sent, and the welcome');
    await new Promise((r) => setTimeout(r, 500)); // the pump's turn after the welcome
    assert.ok(firstBatchAt >= welcomedAt, `sent ${welcomedAt - firstBatchAt} ms before the welcome`);
    assert.equal(gw.items.length, 20, 'each message sent once');
  });

  it('sends nothing again at a welcome that comes after sending started without it', async () => {
    // A gateway whose welcome comes 2.6 s after the connection: past TIMINGS.welcomeWaitMs (2 s), so
    // the device started sending without it; the frames sent meanwhile are acked a second after they
    // arrive. The welcome found them unanswered and had them sent again.
    const logs = new LogCapture();
    let welcomedAt = 0;
    const gw = await hostileGateway(
      (ws) => {
        setTimeout(() => {
          welcomedAt = Date.now();
          ws.send(welcome());
        }, 2_600);
      },
      (ws, batch) => setTimeout(() => ack(ws, batch), 1_000),
    );
    cleanups.push(() => gw.close());
    const d = await device(gw.url, logs, { messages: 20 });
    cleanups.push(() => d.close());
    d.connection.start();
    await eventually(() => (gw.distinct() === 20 && welcomedAt > 0 && d.client.unacknowledged === 0 ? true : undefined), 10_000, 'every message sent and acked, and the welcome');
    await new Promise((r) => setTimeout(r, 500)); // the pump's turn after the last ack
    assert.equal(gw.connections, 1);
    assert.equal(gw.items.length, 20, 'each message sent once');
  });

  it('sends again what a refusal of its frame left unanswered: only the messages it names are set aside', async () => {
    // The gateway refuses a whole frame (a parse that fails on one message, or on none) and names at
    // most the message it failed on: the others of the frame were neither acked nor refused, and
    // stayed in flight until a reconnect (with receipts, filling the window: all sending stopped).
    const logs = new LogCapture();
    let frames = 0;
    const gw = await hostileGateway(
      (ws) => ws.send(welcome()),
      (ws, batch) => {
        frames++;
        if (frames === 1) ws.send(JSON.stringify({ type: 'error', code: 'CONTRACT_INVALID_MESSAGE', message: 'the first message is invalid', messageIds: [(batch[0] as Item).messageId] }));
        else if (frames === 2) ws.send(JSON.stringify({ type: 'error', code: 'CONTRACT_MALFORMED_JSON', message: 'the frame is not JSON' }));
        else ack(ws, batch);
      },
    );
    cleanups.push(() => gw.close());
    const d = await device(gw.url, logs, { messages: 10, transientRewindMs: 100 });
    cleanups.push(() => d.close());
    d.connection.start();
    await eventually(() => (d.client.unacknowledged === 0 ? true : undefined), 10_000, 'every message acked or set aside').catch((e: Error) => assert.fail(`${e.message}: ${d.client.unacknowledged} left, ${frames} frames, ${gw.items.length} items, ${d.client.stats.refusedByGateway} set aside`));
    assert.equal(gw.connections, 1, 'on the same connection');
    assert.equal(d.client.stats.refusedByGateway, 1, 'only the message named was set aside');
    assert.equal(gw.distinct(), 10);
  });

  it('logs error frames cut to LIMITS.fieldGatewayLogMaxChars and at most LIMITS.fieldGatewayLogMaxPerWindow of them', async () => {
    const logs = new LogCapture();
    const gw = await hostileGateway((ws) => {
      ws.send(welcome());
      // 50 refusals naming nothing, each with 400 KB of text (a downlink frame may hold 512 KiB).
      for (let i = 0; i < 50; i++) ws.send(JSON.stringify({ type: 'error', code: 'CONTRACT_INVALID_MESSAGE', message: 'y'.repeat(400_000) }));
      // Then a receipt that does not verify: logged (FIELD_RECEIPT_INVALID) once the 50 were read.
      ws.send(JSON.stringify({ type: 'commit', epoch: 'aaaaaaaaaaaaaaaa', ranges: [[1, 1]], mac: randomBytes(32).toString('base64url') }));
    });
    cleanups.push(() => gw.close());
    const d = await device(gw.url, logs, { messages: 0, commit: { timeoutMs: 60_000, windowMessages: 50_000, windowBytes: 64 * 1024 * 1024 } });
    cleanups.push(() => d.close());
    d.connection.start();
    await eventually(() => (logs.codes().includes('FIELD_RECEIPT_INVALID') ? true : undefined), 10_000, 'every frame read');
    const lines = logs.lines.filter((l) => l.code === 'CONTRACT_INVALID_MESSAGE');
    assert.ok(lines.length > 0 && lines.length <= LIMITS.fieldGatewayLogMaxPerWindow, `${lines.length} lines logged`);
    for (const l of lines) assert.ok(String(l.msg).length <= LIMITS.fieldGatewayLogMaxChars + 1, `a line of ${String(l.msg).length} characters`);
  });
});
