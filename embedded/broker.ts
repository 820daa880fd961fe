import { readFileSync } from 'node:fs';
import { createServer, type Server, type TLSSocket } from 'node:tls';
import type { AddressInfo } from 'node:net';
import { Aedes, type Client } from 'aedes';
import { FieldStreamError } from '../shared/errors.ts';
import type { Logger } from '../shared/logger.ts';
import { verifyCrl } from '../shared/security/crl.ts';
import { mayPublish, maySubscribe } from '../shared/acl.ts';
import { listenFailed } from '../shared/listen-failed.ts';
import { LimitedLog } from '../shared/limited-log.ts';
import { LIMITS, TIMINGS } from '../shared/limits.ts';
import { packetLengths } from '../shared/mqtt/packet-limit.ts';

/**
 * The embedded MQTT broker of `npm start`: aedes on a TLS listener that requires a client
 * certificate from our CA, standing in for both Mosquittos. Identity is the certificate's CN (as
 * Mosquitto's `use_identity_as_username`) and access follows the same role table as the Mosquitto
 * ACL files; everything else is denied.
 *
 * Sessions and in-flight messages live in memory: a crash of the embedded process loses what the
 * broker held. The Mosquitto deployment runs with persistence on.
 */
export interface EmbeddedBrokerOptions {
  host: string;
  port: number;
  /** the setting that chooses `port` (EMBEDDED_MQTT_PORT), named when it cannot be listened on */
  setting: string;
  tls: { ca: string; cert: string; key: string };
  /**
   * The CA's CRL (certs/ca.crl), read once at start as Mosquitto reads its `crlfile`: a client
   * certificate it revokes (an internal service's, after `--renew-service`) is refused in the TLS
   * handshake. Absent, or no file there: none is checked.
   */
  crlFile?: string | undefined;
  logger: Logger;
}

export interface EmbeddedBroker {
  readonly port: number;
  close(): Promise<void>;
}

export async function startEmbeddedBroker(options: EmbeddedBrokerOptions): Promise<EmbeddedBroker> {
  const log = options.logger;
  const roles = new WeakMap<Client, string>();
  const notForwarded = new LimitedLog(log, { maxPerWindow: LIMITS.embeddedBrokerForwardLogMaxPerWindow, windowMs: TIMINGS.floodLogIntervalMs, what: 'messages not handed to a client outside its role' });

  const aedes = await Aedes.createBroker({
    // Aedes' own protective defaults, made explicit: a subscriber that cannot keep up is cut off
    // after 60 s instead of stalling delivery to everyone else.
    drainTimeout: 60_000,
    authenticate(client, _username, _password, done) {
      const socket = client.conn as TLSSocket;
      const peer = socket.authorized ? socket.getPeerCertificate() : undefined;
      const cn = peer?.subject?.CN;
      const ou = peer?.subject?.OU;
      if (typeof cn !== 'string' || ou !== 'services') {
        log.warn({ code: 'BROKER_NOT_AUTHORIZED', clientId: client.id, cn }, 'refused an MQTT client without a service certificate');
        const err = Object.assign(new Error('not authorized'), { returnCode: 5 as const });
        return done(err, false);
      }
      roles.set(client, cn);
      done(null, true);
    },
    authorizePublish(client, packet, done) {
      if (client === null) return done(null); // the broker itself (will messages)
      const role = roles.get(client) ?? '';
      if (mayPublish(role, packet.topic, packet)) return done(null);
      log.warn({ code: 'BROKER_NOT_AUTHORIZED', role, topic: packet.topic }, 'refused a publish outside the role');
      done(new Error(`${role} may not publish to ${packet.topic}`));
    },
    authorizeSubscribe(client, sub, done) {
      const role = roles.get(client) ?? '';
      if (maySubscribe(role, sub.topic)) return done(null, sub);
      log.warn({ code: 'BROKER_NOT_AUTHORIZED', role, filter: sub.topic }, 'refused a subscription outside the role');
      done(null, null); // SUBACK 0x80 (MQTT 3.1.1 §3.9.3)
    },
    // Each message as it is handed to a client, read as its role may: a subscription is checked when
    // it is made, but what a persistent session holds is handed to whoever connects under its client
    // id (aedes's emptyQueue), and ids are bound to no identity (SECURITY.md). Without this, any
    // service certificate (the monitor's) took the distributor's queued device data that way.
    authorizeForward(client, packet) {
      const role = roles.get(client) ?? '';
      if (maySubscribe(role, packet.topic)) return packet;
      notForwarded.write({ code: 'BROKER_NOT_AUTHORIZED', role, clientId: client.id, topic: packet.topic }, 'a message outside the role not handed to the client');
      return null;
    },
  });
  aedes.on('clientError', (client, err) => log.debug({ clientId: client.id, err: err.message }, 'client error'));

  const crl = options.crlFile === undefined ? undefined : readCrl(options.crlFile, options.tls.ca, log);
  const server: Server = createServer(
    {
      ...(crl ? { crl } : {}),
      ca: options.tls.ca,
      cert: options.tls.cert,
      key: options.tls.key,
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: 'TLSv1.2',
    },
    (socket) => {
      aedes.handle(socket);
      limitPacketSize(socket, log);
    },
  );
  server.on('tlsClientError', (err) => log.debug({ err: err.message }, 'TLS handshake refused'));
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(listenFailed('MQTT broker', `${options.host}:${options.port}`, options.setting, err)));
    server.listen(options.port, options.host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  log.info({ host: options.host, port }, 'embedded MQTT broker listening (mTLS)');

  return {
    port,
    async close() {
      await new Promise<void>((resolve) => aedes.close(() => resolve()));
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * Closes `socket` as soon as its client begins an MQTT packet whose remaining length is above
 * LIMITS.brokerPacketMaxBytes, Mosquitto's `max_packet_size`: aedes has no such bound, and its
 * parser (mqtt-packet) buffers a packet whole, up to MQTT's 256 MB, before anything looks at it;
 * so before authentication too, and the TLS handshake takes any certificate of the CA, a device's.
 * Read beside aedes: with its 'readable' listener on the socket, 'data' is emitted for each chunk it
 * reads, before it parses it (Node's Readable: 'readable' sets the pace, 'data' follows read()).
 */
function limitPacketSize(socket: TLSSocket, log: Logger): void {
  const maxBytes = LIMITS.brokerPacketMaxBytes;
  const read = packetLengths(maxBytes, (length) => {
    socket.off('data', read);
    const cn = socket.authorized ? socket.getPeerCertificate()?.subject?.CN : undefined;
    log.warn({ code: 'MQTT_PACKET_TOO_LARGE', cn, remoteAddress: socket.remoteAddress, length, maxBytes }, `a client began an MQTT packet of ${length} bytes, more than ${maxBytes}: connection closed`);
    socket.destroy();
  });
  socket.on('data', read);
}

/**
 * The CRL in `path`, checked to be the CA's (verifyCrl): one of another CA would have OpenSSL refuse
 * every client ("unable to get certificate CRL"), and the pipeline's own services would only retry.
 * Undefined when there is no file (a certificates folder from before the CRL). One that is there
 * but cannot be read (a folder, no permission) is CONFIG_FILE_UNREADABLE, as every other file a
 * setting names; one that is read but is no CRL of the CA, CONFIG_INVALID.
 */
function readCrl(path: string, caPem: string, log: Logger): Buffer | undefined {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      log.info({ crl: path }, 'no CRL: the embedded broker checks no client certificate against one');
      return undefined;
    }
    throw new FieldStreamError('CONFIG_FILE_UNREADABLE', `CERTS_DIR: the CRL ${path} cannot be read (${code ?? (err as Error).message}); fix the path or its permissions`, { variable: 'CERTS_DIR', path });
  }
  try {
    verifyCrl(bytes, caPem);
  } catch (err) {
    throw new FieldStreamError('CONFIG_INVALID', `CERTS_DIR: the CRL ${path} cannot be used: ${(err as Error).message}`, { variable: 'CERTS_DIR', path });
  }
  return bytes;
}
