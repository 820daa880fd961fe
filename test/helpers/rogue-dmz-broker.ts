import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import tls from 'node:tls';
import mqttPacket from 'mqtt-packet';
import { freePort, waitForPort } from '../../scripts/local-stack/ports.ts';
import type { PkiPaths } from '../../pki/layout.ts';
import { DMZ_UPTIME_TOPIC } from '../../shared/acl.ts';

/**
 * A broker standing in for the DMZ broker, as whoever holds the DMZ server can run one with the DMZ
 * broker's certificate and key: it takes the internal bridge's connection and publishes what the
 * test says, on any topic. Enough of MQTT 3.1.1 (the bridge's version, bridge.conf) for that. Like
 * Mosquitto, it publishes its uptime every second while the bridge is subscribed to it (the bridge's
 * heartbeat, which the broker exporter reads), retained as Mosquitto sends $SYS to a bridge.
 */
export class RogueDmzBroker {
  private server: tls.Server;
  private socket: tls.TLSSocket | undefined;
  private messageId = 0;
  private heartbeat: NodeJS.Timeout | undefined;
  private readonly startedAt = Date.now();
  /** resolved once the bridge has subscribed (its `topic ... in` lines) */
  readonly subscribed: Promise<string[]>;
  /** the topics the bridge published here (its `topic ... out` lines) */
  readonly received: string[] = [];
  port = 0;

  constructor(cert: { key: string; cert: string }) {
    let subscribed!: (filters: string[]) => void;
    this.subscribed = new Promise((r) => (subscribed = r));
    this.server = tls.createServer({ key: readFileSync(cert.key), cert: readFileSync(cert.cert) }, (sock) => {
      this.socket = sock;
      const parser = mqttPacket.parser({ protocolVersion: 4 });
      parser.on('packet', (p) => {
        if (p.cmd === 'connect') this.send({ cmd: 'connack', returnCode: 0, sessionPresent: false });
        else if (p.cmd === 'pingreq') this.send({ cmd: 'pingresp' });
        else if (p.cmd === 'publish') {
          this.received.push(p.topic);
          if (p.qos === 1) this.send({ cmd: 'puback', messageId: p.messageId });
        }
        else if (p.cmd === 'subscribe') {
          this.send({ cmd: 'suback', messageId: p.messageId, granted: p.subscriptions.map(() => 1) });
          subscribed(p.subscriptions.map((s) => s.topic));
          if (p.subscriptions.some((s) => s.topic === DMZ_UPTIME_TOPIC)) {
            clearInterval(this.heartbeat);
            this.heartbeat = setInterval(() => this.send({ cmd: 'publish', topic: DMZ_UPTIME_TOPIC, payload: `${Math.floor((Date.now() - this.startedAt) / 1000)} seconds`, qos: 0, retain: true }), 1000);
            this.heartbeat.unref();
          }
        }
      });
      sock.on('data', (d) => parser.parse(d));
      sock.on('error', () => undefined);
      // The bridge gone (its broker stopped), there is no one to beat for until it connects again.
      sock.on('close', () => {
        if (this.socket === sock) clearInterval(this.heartbeat);
      });
    });
  }

  async listen(): Promise<void> {
    this.port = await freePort();
    await new Promise<void>((r) => this.server.listen(this.port, '127.0.0.1', () => r()));
  }

  private send(p: object): void {
    this.socket?.write(mqttPacket.generate(p as mqttPacket.Packet, { protocolVersion: 4 }));
  }

  /** Publishes to the bridge, as the DMZ broker would forward a message (QoS 1). */
  inject(topic: string, payload: Buffer | string, retain = false): void {
    this.send({ cmd: 'publish', topic, payload, qos: 1, messageId: ++this.messageId, retain });
  }

  close(): Promise<void> {
    clearInterval(this.heartbeat);
    this.socket?.destroy();
    return new Promise((r) => this.server.close(() => r()));
  }
}

/**
 * The real internal Mosquitto with its own configuration (mosquitto.conf, acl, and bridge.conf
 * rendered by render-bridges.sh, as the compose file's entrypoint does), bridged to `dmzBrokerHosts`
 * (DMZ_BROKER_HOSTS). `url` is where the internal services connect; `stop()` waits for its exit.
 */
export async function startBridgedInternalMosquitto(
  repo: string,
  pki: { dir: string; paths: PkiPaths },
  dataDir: string,
  dmzBrokerHosts: string,
  /** render-bridges.sh's BRIDGE_STATE_TOKEN (none: the bridges' states under their client ids) */
  bridgeStateToken?: string,
): Promise<{ url: string; process: ChildProcess; stop(): Promise<void> }> {
  const internalPort = await freePort();
  const p = pki.paths;
  const env = {
    PATH: process.env.PATH ?? '',
    MOSQUITTO_PORT: String(internalPort),
    MOSQUITTO_BIND: '127.0.0.1',
    MOSQUITTO_CA_FILE: p.publicCa,
    MOSQUITTO_CERT_FILE: p.service('internal/mosquitto').cert,
    MOSQUITTO_KEY_FILE: p.service('internal/mosquitto').key,
    MOSQUITTO_CRL_FILE: join(pki.dir, 'ca.crl'),
    MOSQUITTO_CONFIG_DIR: join(repo, 'internal-network', 'mosquitto'),
    MOSQUITTO_DATA_DIR: dataDir,
    MOSQUITTO_USER: process.env.USER ?? 'root',
    MOSQUITTO_LOG_DEST: `file ${join(dataDir, 'mosquitto.log')}`,
    MOSQUITTO_BRIDGES_DIR: join(dataDir, 'bridges'),
    DMZ_BROKER_HOSTS: dmzBrokerHosts,
    BRIDGE_CA_FILE: p.dmzBrokerCa.internal,
    BRIDGE_CERT_FILE: p.service('internal/bridge').cert,
    BRIDGE_KEY_FILE: p.service('internal/bridge').key,
    RENDER_CONFIG: join(repo, 'scripts', 'render-config.sh'),
    ...(bridgeStateToken !== undefined ? { BRIDGE_STATE_TOKEN: bridgeStateToken } : {}),
  };
  mkdirSync(env.MOSQUITTO_BRIDGES_DIR, { recursive: true });
  const conf = join(dataDir, 'mosquitto.conf');
  execFileSync(join(repo, 'scripts', 'render-config.sh'), [join(repo, 'internal-network', 'mosquitto', 'mosquitto.conf'), conf], { env });
  execFileSync(join(repo, 'internal-network', 'mosquitto', 'render-bridges.sh'), [join(repo, 'internal-network', 'mosquitto', 'bridge.conf'), env.MOSQUITTO_BRIDGES_DIR], { env });
  const broker = spawn('mosquitto', ['-c', conf], { stdio: 'ignore' });
  // Listening before it is handed over: a client connecting at once (reconnectPeriod 0) was refused
  // while Mosquitto still loaded its bridges' certificates, on a busy machine.
  await waitForPort(internalPort, '127.0.0.1', 15_000, () => broker.exitCode === null);
  return {
    url: `mqtts://localhost:${internalPort}`,
    process: broker,
    // Mosquitto saves its persistence file as it stops: gone before its folder is removed.
    stop: async () => {
      if (broker.exitCode === null && broker.signalCode === null) await new Promise((r) => broker.once('exit', r).kill());
    },
  };
}
