import { randomBytes } from 'node:crypto';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';

/**
 * A device's WebSocket as raw bytes over real TLS: it writes frames no WebSocket library would send
 * on its own (floods of control frames, of empty fragments), and looks for the gateway's answers in
 * what comes back.
 */
export async function rawSocket(port: number, tls: { ca: string; cert?: string; key?: string }): Promise<{ socket: TLSSocket; received: () => string; flood: (chunk: Buffer, ms: number) => Promise<void> }> {
  const socket = tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', ...tls });
  await new Promise((resolve, reject) => socket.once('secureConnect', resolve).once('error', reject));
  let received = '';
  socket.on('data', (b: Buffer) => (received += b.toString('latin1')));
  socket.on('error', () => undefined);
  socket.write(`GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
  const t0 = Date.now();
  while (!received.includes('"type":"welcome"')) {
    if (Date.now() - t0 > 5000) throw new Error(`no welcome: ${received.slice(0, 200)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  /** Writes `chunk` again and again for `ms`, as fast as the gateway takes it. */
  const flood = async (chunk: Buffer, ms: number) => {
    const until = Date.now() + ms;
    while (Date.now() < until && !socket.destroyed) {
      if (socket.write(chunk)) await new Promise((r) => setImmediate(r));
      else {
        // The gateway stopped reading (or is slower than this): wait for room, briefly.
        await new Promise<void>((resolve) => {
          const done = () => {
            clearTimeout(timer);
            socket.off('drain', done);
            resolve();
          };
          const timer = setTimeout(done, 50);
          socket.once('drain', done);
        });
      }
    }
  };
  return { socket, received: () => received, flood };
}
