import { constants as cryptoConstants } from 'node:crypto';
import { createServer } from 'node:https';
import { WebSocketServer } from 'ws';
import { LIMITS } from '../../shared/limits.ts';

/**
 * A reference for the connections scenario (bench/scenarios/connections.ts): the least a Node process
 * holding device connections over TLS holds per connection. An HTTPS server with the gateway's TLS
 * settings (client certificates from the run's CA required, no session tickets: dmz/gateway/listener.ts)
 * and `ws` with the gateway's options, which sends each connection a welcome frame and does nothing
 * else: no identity, session, heartbeat, rate limit or broker. Its own process, as the gateway is.
 *
 * Its certificate, key and CA come in the environment (BARE_WSS_CERT, BARE_WSS_KEY, BARE_WSS_CA);
 * it prints `{"port":N}` once listening and runs until killed.
 */
const pem = (name: string): string => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const server = createServer({
  cert: pem('BARE_WSS_CERT'),
  key: pem('BARE_WSS_KEY'),
  ca: pem('BARE_WSS_CA'),
  requestCert: true,
  rejectUnauthorized: true,
  minVersion: 'TLSv1.2',
  secureOptions: cryptoConstants.SSL_OP_NO_TICKET,
});
const wss = new WebSocketServer({ server, maxPayload: LIMITS.frameMaxBytes, perMessageDeflate: false, autoPong: false });
wss.on('connection', (ws) => {
  ws.on('error', () => undefined);
  ws.send(JSON.stringify({ type: 'welcome', deviceId: 'reference', gatewayId: 'bare-wss', serverTime: Date.now(), limits: { frameMaxBytes: LIMITS.frameMaxBytes, batchMaxMessages: LIMITS.batchMaxMessages } }));
});
server.listen(0, '127.0.0.1', () => {
  const address = server.address();
  process.stdout.write(`${JSON.stringify({ port: typeof address === 'object' && address ? address.port : 0 })}\n`);
});
