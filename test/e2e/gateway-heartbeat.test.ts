import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { connectAsync, type MqttClient } from 'mqtt';
import { ACKS_HEADER, type DownlinkFrame } from '../../shared/contract/downlink.ts';
import { StatusEnvelopeSchema, type StatusEnvelope } from '../../shared/contract/envelope.ts';
import { statusTopic } from '../../shared/contract/topics.ts';
import { LIMITS } from '../../shared/limits.ts';
import { identifyByTls } from '../../dmz/gateway/identity.ts';
import { startGatewayServer, type GatewayServer } from '../../dmz/gateway/server.ts';
import type { ManagedProcess } from '../../scripts/local-stack/process.ts';
import { connectBridgeSession } from '../helpers/bridge-session.ts';
import { captureLogs, edgeCertificates } from '../helpers/gateway-fixture.ts';
import { tempDir } from '../helpers/pki.ts';
import { startMosquitto } from '../helpers/sparkplug.ts';
import { TcpRelay } from '../helpers/tcp-relay.ts';
import { eventually, RawDevice } from '../helpers/ws-device.ts';

/** milliseconds between the gateway's pings: short, so several pass in a second or two */
const HEARTBEAT_MS = 300;
/** messages awaiting PUBACK before the gateway stops reading a device (GATEWAY_MAX_IN_FLIGHT) */
const MAX_IN_FLIGHT = 20;
/** messages per frame */
const PER_FRAME = 10;
const HALF_OPEN = 'no pong since the last ping; closing a half-open connection';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));


/**
 * The gateway's heartbeat (heartbeat.ts) and its backpressure (read-pause.ts track): while too
 * many of a device's messages wait for PUBACK, the gateway stops reading its socket, pongs
 * included. A broker stalled for longer than a heartbeat then made the gateway close every paused,
 * healthy connection as half-open. On a real Mosquitto frozen with SIGSTOP, real TLS and a real ws
 * device (whose ws answers pings by itself).
 */
describe('the gateway heartbeat and a stalled broker (real Mosquitto, SIGSTOP)', () => {
  const work = tempDir('gateway-heartbeat');
  const logs = captureLogs();
  let broker: { url: string; process: ManagedProcess };
  let mqtt: MqttClient;
  let bridge: MqttClient;
  let gateway: GatewayServer;
  let tlsOf: (deviceId: string) => { ca: string; cert: string; key: string };
  let url: string;
  const devices: RawDevice[] = [];

  before(async () => {
    const { ca, server, tlsOf: issue } = edgeCertificates();
    tlsOf = issue;
    broker = await startMosquitto(work.dir);
    // What the broker keeps the gateway's messages for: the internal network's bridge.
    bridge = await connectBridgeSession(broker.url, 'gateway-heartbeat-bridge');
    mqtt = await connectAsync(broker.url, { protocolVersion: 5, clientId: 'gateway-heartbeat', reconnectPeriod: 200 });
    gateway = await startGatewayServer({
      host: '127.0.0.1',
      port: 0,
      setting: 'GATEWAY_PORT',
      path: '/ws',
      gatewayId: 'gw-heartbeat',
      tls: { cert: server.certPem, key: server.keyPem, ca: ca.certPem },
      limits: { frameMaxBytes: LIMITS.frameMaxBytes, batchMaxMessages: LIMITS.batchMaxMessages, maxInFlight: MAX_IN_FLIGHT, sendBufferMaxBytes: LIMITS.sendBufferMaxBytes, ackHoldMs: 0 },
      identify: identifyByTls(),
      mqtt,
      logger: logs.logger,
      heartbeatMs: HEARTBEAT_MS,
    });
    url = `wss://127.0.0.1:${gateway.port}/ws`;
  });
  after(async () => {
    for (const d of devices) d.ws.terminate();
    await broker?.process.resume().catch(() => undefined);
    await gateway?.close();
    await mqtt?.endAsync(true);
    await bridge?.endAsync(true);
    await broker?.process.stop();
    work.cleanup();
  });

  const connect = async (deviceId: string) => {
    const d = await RawDevice.connect(url, tlsOf(deviceId));
    devices.push(d);
    await eventually(() => d.welcome, 5_000, `${deviceId}'s welcome`);
    return d;
  };
  /** Sends `frames` frames of PER_FRAME readings; returns their message ids. */
  const send = (d: RawDevice, deviceId: string, frames: number): string[] => {
    const ids: string[] = [];
    for (let f = 0; f < frames; f++) {
      const batch = Array.from({ length: PER_FRAME }, (_, i) => ({ dataType: 'timeseries', messageId: `${deviceId}.${f}.${i}`, payload: { v: f * PER_FRAME + i } }));
      ids.push(...batch.map((m) => m.messageId));
      d.send(JSON.stringify({ deviceId, batch }));
    }
    return ids;
  };
  /** The device stops reading (and so answers no ping), its TCP connection still up: a hung peer. */
  const silence = (d: RawDevice) => (d.ws as unknown as { _socket: { pause(): void } })._socket.pause();
  const closedAsHalfOpen = (deviceId: string) => logs.lines.some((l) => l.deviceId === deviceId && l.msg === HALF_OPEN);

  it('keeps a paused, healthy connection through several heartbeats of a stalled broker, acks every message once it is back, and still closes a peer that went silent meanwhile', async () => {
    const steady = await connect('steady');
    const mute = await connect('mute');
    await broker.process.pause();
    let resumed = false;
    try {
      // Three times the in-flight limit: the gateway reads two frames, pauses, and leaves the rest
      // (and every pong behind them) unread in the socket.
      const ids = send(steady, 'steady', (3 * MAX_IN_FLIGHT) / PER_FRAME);
      send(mute, 'mute', (2 * MAX_IN_FLIGHT) / PER_FRAME);
      silence(mute);
      await eventually(() => (['steady', 'mute'].every((id) => gateway.router.session(id)?.readingPaused) ? true : undefined), 5_000, 'both sessions paused (in-flight limit)');
      // Five heartbeats with the broker frozen: each one a ping whose pong the gateway cannot read.
      await sleep(5 * HEARTBEAT_MS);
      assert.equal(steady.closeCode, undefined, 'the healthy device kept its connection while the broker was stalled');
      assert.ok(!closedAsHalfOpen('steady'));

      await broker.process.resume();
      resumed = true;
      const resumedAt = performance.now();
      // Every message acked, each once, and nothing refused.
      const acked = new Map<string, number>();
      while (acked.size < ids.length) {
        const frame: DownlinkFrame = await steady.next(10_000);
        assert.equal(frame.type, 'ack', `only acks: ${JSON.stringify(frame)}`);
        if (frame.type === 'ack') for (const id of frame.messageIds) acked.set(id, (acked.get(id) ?? 0) + 1);
      }
      assert.deepEqual([...acked.keys()].sort(), [...ids].sort());
      assert.ok([...acked.values()].every((n) => n === 1), 'each message acked once');

      // The silent peer is judged once the gateway reads its socket again: within a few heartbeats.
      await eventually(() => (closedAsHalfOpen('mute') ? true : undefined), 10 * HEARTBEAT_MS, 'the silent peer closed as half-open');
      const closedAfterMs = performance.now() - resumedAt;
      assert.ok(closedAfterMs < 10 * HEARTBEAT_MS, `silent peer closed ${Math.round(closedAfterMs)} ms after the broker came back`);

      // The healthy device answers its pings again: still open two more heartbeats later.
      await sleep(2 * HEARTBEAT_MS);
      assert.equal(steady.closeCode, undefined);
      assert.ok(!closedAsHalfOpen('steady'));
    } finally {
      if (!resumed) await broker.process.resume();
    }
  });

  it('closes a silent peer whose socket it is reading (broker healthy) within two heartbeats', async () => {
    // It sends nothing, so reading is never paused: a missed pong counts.
    const quiet = await connect('quiet');
    const since = performance.now();
    silence(quiet);
    await eventually(() => (closedAsHalfOpen('quiet') ? true : undefined), 5_000, 'the silent peer closed as half-open');
    const afterMs = performance.now() - since;
    // The next ping goes unanswered and is judged at the tick after it: two heartbeats at most (and a margin for a loaded machine).
    assert.ok(afterMs < 2 * HEARTBEAT_MS + 500, `closed after ${Math.round(afterMs)} ms`);
  });

  it('pings a device that reads no acks only in intervals it was not heard in, and still closes it once silent', async () => {
    const pingsOf = (d: RawDevice) => {
      const seen = { n: 0 };
      d.ws.on('ping', () => seen.n++);
      return seen;
    };
    const chatty = await RawDevice.connect(url, tlsOf('chatty'), { [ACKS_HEADER]: 'none' });
    const acked = await RawDevice.connect(url, tlsOf('acked'));
    devices.push(chatty, acked);
    await eventually(() => chatty.welcome && acked.welcome, 5_000, 'both welcomed');
    const chattyPings = pingsOf(chatty);
    const ackedPings = pingsOf(acked);
    // Both send a reading every third of a heartbeat for five heartbeats.
    for (let k = 0; k < 15; k++) {
      for (const [d, id] of [[chatty, 'chatty'], [acked, 'acked']] as const) d.send(JSON.stringify({ deviceId: id, dataType: 'timeseries', payload: { v: k } }));
      await sleep(HEARTBEAT_MS / 3);
    }
    assert.ok(ackedPings.n >= 3, `the acked device was pinged as ever (${ackedPings.n} pings)`);
    // A stall of the test's own timers may leave one interval unheard: at most one ping then.
    assert.ok(chattyPings.n <= 1, `the device heard in every interval was pinged ${chattyPings.n} times`);
    // Quiet but answering: pinged again, and kept. Its pong is a sign of life too, so the interval
    // after a ping goes without one: after the tick that still heard its last reading, pings come
    // every other tick. Four heartbeats (and a margin) hold two pings whatever the ticks' phase;
    // three held the second only when the first quiet tick came late enough to ping.
    await sleep(4 * HEARTBEAT_MS + HEARTBEAT_MS / 2);
    assert.ok(chattyPings.n >= 2, `pinged once it fell quiet (${chattyPings.n} pings)`);
    assert.equal(chatty.closeCode, undefined);
    // Silent (not reading, so no pong): closed as any device is, within a few heartbeats.
    const since = performance.now();
    silence(chatty);
    await eventually(() => (closedAsHalfOpen('chatty') ? true : undefined), 5_000, 'the silent device closed as half-open');
    assert.ok(performance.now() - since < 3 * HEARTBEAT_MS + 500, `closed after ${Math.round(performance.now() - since)} ms`);
  });

  it('dates the offline of a peer it found dead at when it last heard from it, before the online of the device through another gateway meanwhile', async () => {
    // The device moved: its connection here died unnoticed, it connected through gateway B, which
    // said "online"; this gateway noticed a heartbeat later. Its "offline" of that time, retained
    // over B's "online", was the newest by `at` for all that orders presence by it (the distributor's
    // store, the console), and the device was shown offline while connected. Dated when the device
    // was last heard, it is older than B's, as the connection's end was.
    const watcher = await connectAsync(broker.url, { protocolVersion: 5, clientId: 'gateway-heartbeat-watcher' });
    const seen: StatusEnvelope[] = [];
    watcher.on('message', (_t, payload) => seen.push(StatusEnvelopeSchema.parse(JSON.parse(payload.toString('utf8')))));
    try {
      await watcher.subscribeAsync(statusTopic('moved'), { qos: 1, rh: 2 });
      const d = await connect('moved');
      await eventually(() => seen.find((s) => s.gatewayId === 'gw-heartbeat' && s.state === 'online'), 5_000, 'its online');
      silence(d);
      await sleep(50);
      const online: StatusEnvelope = { v: 1, state: 'online', gatewayId: 'gw-other', at: Date.now() };
      await watcher.publishAsync(statusTopic('moved'), JSON.stringify(online), { qos: 1, retain: true });
      const offline = await eventually(() => seen.find((s) => s.gatewayId === 'gw-heartbeat' && s.state === 'offline'), 5_000, 'its offline here');
      assert.ok(closedAsHalfOpen('moved'));
      assert.ok(offline.at < online.at, `the offline (at ${offline.at}) is not older than the online through the other gateway (at ${online.at})`);
    } finally {
      await watcher.endAsync(true);
    }
  });

  it('keeps a device on a slow link whose pong waits behind a frame that takes several heartbeats to cross, and acks the frame', async () => {
    // 100 KB/s, and a frame of about 600 KB: 6 s on the way, twenty heartbeats (scaled down with the
    // heartbeat: a TLS record of 16 KiB takes 0.16 s of this link, as it takes 13 s of 10 kbit/s
    // against the real 30 s). The device's ws answers each ping as it comes, but its pong can only
    // follow the frame already in its socket: the gateway, reading the frame's bytes as they came,
    // closed the connection as half-open after a heartbeat, and the device sent the frame again on
    // its next connection, and again.
    const relay = new TcpRelay({ host: '127.0.0.1', port: gateway.port }, { upBytesPerSecond: 100_000 });
    await relay.start();
    try {
      const d = await RawDevice.connect(`wss://127.0.0.1:${relay.port}/ws`, tlsOf('slow'));
      devices.push(d);
      await eventually(() => d.welcome, 5_000, "slow's welcome");
      const batch = Array.from({ length: PER_FRAME }, (_, i) => ({ dataType: 'event', messageId: `slow.${i}`, payload: { eventType: 'photo_note', severity: 'info', message: 'x'.repeat(60_000) } }));
      d.send(JSON.stringify({ deviceId: 'slow', batch }));
      const frame: DownlinkFrame = await d.next(15_000);
      assert.equal(frame.type, 'ack', JSON.stringify(frame).slice(0, 300));
      assert.equal(d.closeCode, undefined, 'the connection stayed open');
      assert.ok(!closedAsHalfOpen('slow'), 'not taken for a half-open connection');
      // Idle again, it answers its pings at once: a peer that goes silent is still closed.
      silence(d);
      await eventually(() => (closedAsHalfOpen('slow') ? true : undefined), 5_000, 'the silent peer closed as half-open');
    } finally {
      await relay.close();
    }
  });
});
