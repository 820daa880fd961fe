import { connect, createServer, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';

/**
 * A TCP proxy in front of an MQTT broker that loses what a broken link loses, for a real MQTT client
 * to react to as it does: `loseReplies()` swallows what the broker sends (PUBACKs among it: the broker
 * took a publish, the client never hears of it), `loseRequests()` swallows what the client sends too
 * (a publish that never arrives), `cut()` closes every connection (the client reconnects through the
 * proxy, which passes everything again).
 */
export async function lossyProxy(brokerPort: number): Promise<{
  url: string;
  loseReplies(): void;
  loseRequests(): void;
  cut(): void;
  close(): Promise<void>;
}> {
  const sockets = new Set<Socket>();
  let replies = true;
  let requests = true;
  const server = createServer((client) => {
    const broker = connect(brokerPort, '127.0.0.1');
    sockets.add(client);
    sockets.add(broker);
    client.on('data', (d) => void (requests && broker.write(d)));
    broker.on('data', (d) => void (replies && client.write(d)));
    const end = () => {
      client.destroy();
      broker.destroy();
      sockets.delete(client);
      sockets.delete(broker);
    };
    for (const s of [client, broker]) {
      s.on('close', end);
      s.on('error', end);
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `mqtt://127.0.0.1:${port}`,
    loseReplies: () => void (replies = false),
    loseRequests: () => void (requests = false),
    cut() {
      for (const s of sockets) s.destroy();
      sockets.clear();
      replies = true;
      requests = true;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
