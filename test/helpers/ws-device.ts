import { readFileSync } from 'node:fs';
import WebSocket from 'ws';
import type { DownlinkFrame } from '../../shared/contract/downlink.ts';
import type { PkiPaths } from '../../pki/layout.ts';

/**
 * A raw WebSocket client as a person with wscat would be: it sends text frames and reads the
 * gateway's answers, with the certificate files of one device.
 */
export class RawDevice {
  private readonly frames: DownlinkFrame[] = [];
  private waiters: Array<() => void> = [];
  closeCode: number | undefined;
  /** the reason of the close frame received (the gateway's error code), when one came */
  closeReason: string | undefined;
  /** The gateway's first frame; kept here, not among the frames `next()` returns. */
  welcome: Extract<DownlinkFrame, { type: 'welcome' }> | undefined;
  /** reads of the connection's socket so far (chunks of TLS records decrypted): how its frames came in */
  socketReads = 0;

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data) => {
      const frame = JSON.parse(data.toString()) as DownlinkFrame;
      if (frame.type === 'welcome') {
        this.welcome = frame;
        return;
      }
      this.frames.push(frame);
      for (const w of this.waiters.splice(0)) w();
    });
    ws.on('close', (code, reason) => {
      this.closeCode = code;
      this.closeReason = reason.toString();
      for (const w of this.waiters.splice(0)) w();
    });
  }

  /** `headers`: of the upgrade request, as `wscat -H` sends them */
  static connect(url: string, tls: { ca: string; cert?: string; key?: string }, headers?: Record<string, string>): Promise<RawDevice> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { ...tls, perMessageDeflate: false, ...(headers ? { headers } : {}) });
      let reads = 0;
      ws.once('upgrade', (res) => res.socket.on('data', () => (device ? device.socketReads++ : reads++)));
      let device: RawDevice | undefined;
      ws.once('open', () => {
        device = new RawDevice(ws);
        device.socketReads = reads;
        resolve(device);
      });
      ws.once('error', reject);
      ws.once('unexpected-response', (_req, res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { status: res.statusCode, body })));
      });
    });
  }

  static tlsFor(paths: PkiPaths, deviceId: string): { ca: string; cert: string; key: string } {
    const d = paths.device(deviceId);
    return { ca: readFileSync(paths.publicCa, 'utf8'), cert: readFileSync(d.cert, 'utf8'), key: readFileSync(d.key, 'utf8') };
  }

  send(text: string): void {
    this.ws.send(text);
  }

  /** frames of the gateway received and not yet taken by next() */
  get unread(): number {
    return this.frames.length;
  }

  /** The next frame of the gateway (waits up to timeoutMs). */
  async next(timeoutMs = 10_000): Promise<DownlinkFrame> {
    const deadline = Date.now() + timeoutMs;
    while (this.frames.length === 0) {
      if (this.closeCode !== undefined) throw new Error(`connection closed (${this.closeCode})`);
      if (Date.now() > deadline) throw new Error('no frame from the gateway in time');
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 100);
      });
    }
    return this.frames.shift() as DownlinkFrame;
  }

  async closed(timeoutMs = 10_000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    while (this.closeCode === undefined) {
      if (Date.now() > deadline) throw new Error('connection still open');
      await new Promise((r) => setTimeout(r, 50));
    }
    return this.closeCode;
  }

  close(): void {
    this.ws.close();
  }
}

/**
 * Awaits `p`, failing with the step's name if it has not settled within `timeoutMs`: a step that
 * hangs then says which one it was, instead of the whole test running into the runner's timeout.
 */
export async function within<T>(p: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms: ${what}`)), timeoutMs);
  });
  try {
    return await Promise.race([p, timedOut]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls until `check` returns a value (not undefined) or the time is up. */
export async function eventually<T>(check: () => T | undefined | Promise<T | undefined>, timeoutMs = 15_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
