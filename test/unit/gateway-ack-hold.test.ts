import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { request, createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { after, before, beforeEach, describe, it } from 'node:test';
import { WebSocketServer } from 'ws';
import type { CommitFrame } from '../../shared/contract/downlink.ts';
import { LIMITS } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';
import { DeviceSession } from '../../dmz/gateway/device-session.ts';
import type { AcceptedMessage, PublishGroup, UplinkPublisher } from '../../dmz/gateway/uplink-publisher.ts';
import { eventually } from '../helpers/ws-device.ts';

/**
 * The gateway holds a small ack back to leave with the device's next commit receipt, in one write
 * (device-session.ts flushAcks). A real ws server and a device speaking WebSocket over a raw TCP
 * socket, so that what arrives in one read is seen: the broker is a stand-in that answers PUBACK at
 * once (the session only needs its promise).
 */

const log = createLogger('test', 'silent');
/** milliseconds: GATEWAY_ACK_HOLD_MS's default */
const HOLD_MS = 1000;
/**
 * milliseconds: the hold of the tests that do not wait for it to run out, far from what they take
 * to see an ack go at once, or held: with the default's, a loaded machine's stall of some 800 ms
 * was taken for a held ack, or let one go alone.
 */
const LONG_HOLD_MS = 10_000;
const limitsOfSession = (ackHoldMs: number) => ({ frameMaxBytes: 1024 * 1024, batchMaxMessages: 1000, maxInFlight: 5000, sendBufferMaxBytes: 4 * 1024 * 1024, ackHoldMs });

let published = 0;
const pubackAtOnce = {
  publish(_deviceId: string, messages: readonly AcceptedMessage[]): PublishGroup[] {
    published++;
    return [{ dataType: 'timeseries', messageIds: messages.map((m) => m.messageId), done: Promise.resolve(), released: Promise.resolve() }];
  },
} as unknown as UplinkPublisher;

type Downlink = { frame: { type: string; messageIds?: string[] }; read: number; at: number };

/** A device over a raw socket: frames sent masked (RFC 6455 §5.3, a zero key), each frame received noted with the read it came in. */
class WireDevice {
  readonly frames: Downlink[] = [];
  private reads = 0;
  private pending = Buffer.alloc(0);
  constructor(private readonly socket: Duplex) {
    socket.on('data', (chunk: Buffer) => {
      this.reads++;
      this.pending = Buffer.concat([this.pending, chunk]);
      for (;;) {
        // Server frames are unmasked text frames (RFC 6455 §5.2); these are all under 64 KiB.
        if (this.pending.length < 2) return;
        const short = (this.pending[1] as number) & 0x7f;
        const [len, head] = short === 126 ? [this.pending.readUInt16BE(2), 4] : [short, 2];
        if (this.pending.length < head + len) return;
        const text = this.pending.subarray(head, head + len).toString('utf8');
        this.pending = this.pending.subarray(head + len);
        this.frames.push({ frame: JSON.parse(text) as Downlink['frame'], read: this.reads, at: performance.now() });
      }
    });
  }

  send(value: unknown): void {
    const payload = Buffer.from(JSON.stringify(value));
    const head = payload.length < 126 ? Buffer.from([0x81, 0x80 | payload.length]) : Buffer.from([0x81, 0x80 | 126, payload.length >> 8, payload.length & 0xff]);
    this.socket.write(Buffer.concat([head, Buffer.alloc(4), payload]));
  }

  of(type: string): Downlink[] {
    return this.frames.filter((f) => f.frame.type === type);
  }
}

function readings(from: number, count: number) {
  return { deviceId: 'dev-1', batch: Array.from({ length: count }, (_, i) => ({ dataType: 'timeseries', messageId: `e1.${from + i}`, seq: from + i, payload: { v: i } })) };
}

/** This process's write system calls so far (write, writev: proc(5), /proc/pid/io `syscw`). */
function writeCalls(): number {
  return Number(/^syscw: (\d+)$/m.exec(readFileSync('/proc/self/io', 'utf8'))?.[1]);
}

const commit = (seq: number): CommitFrame => ({ type: 'commit', epoch: 'e1', ranges: [[seq, seq]], mac: 'm'.repeat(43) });

describe('the gateway holds a small ack for the device’s next commit receipt', () => {
  const server = createServer();
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
  let session: DeviceSession;
  let device: WireDevice;
  let url: { port: number };
  /** GATEWAY_ACK_HOLD_MS of the next test's session */
  let holdMs = HOLD_MS;

  before(async () => {
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = { port: (server.address() as AddressInfo).port };
  });
  const sockets: Duplex[] = [];
  after(async () => {
    for (const socket of sockets) socket.destroy();
    wss.close();
    await new Promise<void>((r) => server.close(() => r()));
  });

  /** A new device connection, its session with GATEWAY_ACK_HOLD_MS = holdMs. */
  async function connect(): Promise<void> {
    server.removeAllListeners('upgrade');
    const opened = new Promise<void>((resolve) => {
      server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
        sockets.push(socket);
        wss.handleUpgrade(req, socket, head, (ws) => {
          session = new DeviceSession('dev-1', ws, pubackAtOnce, limitsOfSession(holdMs), log, undefined, undefined, undefined, socket);
          resolve();
        });
      });
    });
    const socket = await new Promise<Duplex>((resolve, reject) => {
      const req = request({ port: url.port, host: '127.0.0.1', path: '/', headers: { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==' } });
      req.on('upgrade', (_res, s) => {
        sockets.push(s);
        resolve(s);
      });
      req.on('error', reject);
      req.end();
    });
    device = new WireDevice(socket);
    await opened;
  }

  /** A receipt reaches the device: from now on, its small acks are held. */
  async function firstReceipt(): Promise<void> {
    session.sendCommit(commit(0));
    await eventually(() => device.of('commit').length === 1 || undefined, 2000, 'the first receipt');
  }

  beforeEach(async () => {
    holdMs = LONG_HOLD_MS;
    await connect();
  });

  it('acks at once while no receipt has reached the device (a device without receipts waits for nothing)', async () => {
    device.send(readings(1, 1));
    const [ack] = await eventually(() => (device.of('ack').length === 1 ? device.of('ack') : undefined), 5_000, 'the ack, before any hold could run out');
    assert.deepEqual(ack?.frame.messageIds, ['e1.1']);
  });

  it('once receipts come, sends each ack with the next receipt, ack first, in one write system call', async () => {
    await firstReceipt();
    const rounds = 20;
    let writes = 0;
    for (let k = 1; k <= rounds; k++) {
      const before = published;
      device.send(readings(k, 1));
      await eventually(() => published > before || undefined, 2000, `frame ${k} at the broker`);
      await new Promise((r) => setImmediate(r)); // its PUBACK settled, its ack held (microtasks)
      const calls = writeCalls();
      session.sendCommit(commit(k)); // the socket is written during the call (libuv tries the write at once)
      writes += writeCalls() - calls;
    }
    // One write a round (two without the cork). The count is the whole process's, so a stray call
    // of another thread may join it: well under two a round is what is held to.
    assert.ok(writes >= rounds && writes < rounds * 1.5, `${writes} write system calls for ${rounds} acks with their receipts`);
    await eventually(() => device.of('commit').length === rounds + 1 || undefined, 2000, 'every receipt');
    const acks = device.of('ack');
    assert.deepEqual(acks.map((a) => a.frame.messageIds), Array.from({ length: rounds }, (_, k) => [`e1.${k + 1}`]));
    for (const [k, ack] of acks.entries()) {
      const receipt = device.of('commit')[k + 1];
      assert.equal(device.frames.indexOf(ack) + 1, device.frames.indexOf(receipt as Downlink), 'the ack comes just before its receipt');
      assert.equal(ack.read, receipt?.read, 'both arrive in one read');
    }
  });

  it('lets a held ack go alone when no receipt comes in time, then acks at once until a receipt comes again', async () => {
    holdMs = HOLD_MS;
    await connect();
    await firstReceipt();
    const sent = performance.now();
    device.send(readings(1, 1));
    const [late] = await eventually(() => (device.of('ack').length === 1 ? device.of('ack') : undefined), HOLD_MS + 3000, 'the held ack');
    assert.ok((late as Downlink).at - sent >= HOLD_MS - 50, `held for the hold (${Math.round((late as Downlink).at - sent)} ms)`);
    device.send(readings(2, 1));
    await eventually(() => device.of('ack').length === 2 || undefined, HOLD_MS - 200, 'the next ack, not held');
  });

  it('never holds an ack of more than LIMITS.ackHoldMaxMessages messages, and lets held acks go with a later one', async () => {
    await firstReceipt();
    device.send(readings(1, LIMITS.ackHoldMaxMessages + 1));
    const [big] = await eventually(() => (device.of('ack').length === 1 ? device.of('ack') : undefined), 5_000, 'the large ack, at once');
    assert.equal(big?.frame.messageIds?.length, LIMITS.ackHoldMaxMessages + 1);

    const first = 100;
    device.send(readings(first, 1)); // held
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(device.of('ack').length, 1, 'the small ack is held');
    device.send(readings(first + 1, 1)); // its PUBACK lets both go
    const acks = await eventually(() => (device.of('ack').length === 2 ? device.of('ack') : undefined), 5_000, 'both acks, at the second PUBACK');
    assert.deepEqual(acks[1]?.frame.messageIds, [`e1.${first}`, `e1.${first + 1}`]);
  });

  it('lets a held ack go before an error frame (a transient error makes the device send again from its first unacked message)', async () => {
    await firstReceipt();
    device.send(readings(1, 1));
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(device.of('ack').length, 0, 'the ack is held');
    device.send({ deviceId: 'dev-1', dataType: 'sideways', payload: {} });
    await eventually(() => device.of('error').length === 1 || undefined, 5_000, 'the error');
    assert.deepEqual(
      device.frames.map((f) => f.frame.type),
      ['commit', 'ack', 'error'],
    );
  });

  it('holds nothing with GATEWAY_ACK_HOLD_MS=0', async () => {
    holdMs = 0;
    await connect();
    await firstReceipt();
    device.send(readings(1, 1));
    await eventually(() => device.of('ack').length === 1 || undefined, 800, 'the ack, at once');
  });
});
