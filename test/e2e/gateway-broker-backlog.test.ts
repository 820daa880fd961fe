import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { DownlinkFrame } from '../../shared/contract/downlink.ts';
import { parseExposition } from '../helpers/exposition.ts';
import { tlsGatewayOnMosquitto } from '../helpers/tls-gateway.ts';
import { eventually, RawDevice } from '../helpers/ws-device.ts';

const KiB = 1024;
/** GATEWAY_BROKER_BACKLOG_MAX_MIB, scaled down: about two and a half of the frames below */
const MAX = 256 * KiB;
/** messages per frame, each an event of MESSAGE_CHARS characters: a frame's envelope is about 100 KiB */
const PER_FRAME = 5;
const MESSAGE_CHARS = 20_000;

/**
 * What the gateway's MQTT client holds for a broker that does not answer is bounded for all devices
 * together: a publish past its timeout is answered to its devices, who send again, but the client
 * keeps it until the broker answers, so a stalled broker had every device's resends pile up in the
 * gateway for as long as it lasted (each device's in-flight bound freed at each timeout). Past
 * GATEWAY_BROKER_BACKLOG_MAX_MIB new messages are refused at once, with the code field clients
 * back off on; once the broker answers, what it took is acked and what was refused goes through.
 * The real gateway terminating TLS, a real Mosquitto frozen with SIGSTOP.
 */
describe('envelopes the broker has not acknowledged: at most GATEWAY_BROKER_BACKLOG_MAX_MIB', () => {
  // An in-flight bound per device far above what is sent here: only the gateway-wide bound acts.
  const fx = tlsGatewayOnMosquitto('gateway-backlog', { maxInFlight: 10_000 }, { brokerBacklogMaxBytes: MAX });
  const sample = async (name: string) => parseExposition(await fx.gateway.metrics.metrics.registry.metrics()).get(`${name}{service="gateway"}`) ?? -1;
  const frameOf = (deviceId: string, f: number, fill = 'x') => {
    const batch = Array.from({ length: PER_FRAME }, (_, i) => ({ dataType: 'event', messageId: `${deviceId}.${f}.${i}`, payload: { eventType: 'photo_note', severity: 'info', message: `${f}.${i}`.padEnd(MESSAGE_CHARS, fill) } }));
    return { ids: batch.map((m) => m.messageId), text: JSON.stringify({ deviceId, batch }) };
  };

  it('refuses new messages at once while the broker holds the bound unacknowledged, and takes them again once it answers', async () => {
    const devices = await Promise.all(['pump-1', 'pump-2'].map((id) => RawDevice.connect(`wss://127.0.0.1:${fx.gateway.port}/ws`, fx.tlsOf(id))));
    const [first, second] = devices as [RawDevice, RawDevice];
    try {
      await eventually(() => (first.welcome && second.welcome ? true : undefined), 5_000, 'both welcomed');
      await fx.broker.pause();
      // Three frames of the first device: about 300 KiB handed to the client, past the bound.
      const held = [0, 1, 2].map((f) => frameOf('pump-1', f));
      for (const f of held) first.send(f.text);
      await eventually(async () => ((await sample('fieldstream_gateway_broker_backlog_bytes')) >= MAX ? true : undefined), 5_000, 'the backlog past the bound');

      // Another device's frame now: refused at once (not after the 30 s publish timeout), every
      // one of its messages named, with the code the device backs off on.
      const refused = frameOf('pump-2', 0);
      second.send(refused.text);
      const answer: DownlinkFrame = await second.next(5_000);
      assert.equal(answer.type, 'error', JSON.stringify(answer).slice(0, 300));
      if (answer.type !== 'error') return;
      assert.equal(answer.code, 'GATEWAY_BROKER_UNAVAILABLE');
      assert.match(answer.message, /not yet acknowledged/);
      assert.deepEqual([...(answer.messageIds ?? [])].sort(), [...refused.ids].sort());
      assert.equal(first.unread, 0, 'the first device got no answer yet: its frames wait for the broker');
      assert.equal(await sample('fieldstream_gateway_broker_backlog_refusals_total'), 1);
      // Refused again: counted, logged once in the window.
      second.send(refused.text);
      assert.equal((await second.next(5_000)).type, 'error');
      assert.equal(await sample('fieldstream_gateway_broker_backlog_refusals_total'), 2);
      const logged = fx.logs.lines.filter((l) => l.code === 'GATEWAY_BROKER_UNAVAILABLE' && l.maxBytes === MAX);
      assert.equal(logged.length, 1, 'logged once a window');
      assert.ok(typeof logged[0]?.backlogBytes === 'number' && logged[0].backlogBytes >= MAX);

      // The broker answers: what it held is acked, the backlog empties, and the refused frame goes through.
      await fx.broker.resume();
      const acked = new Set<string>();
      while (acked.size < 3 * PER_FRAME) {
        const frame = await first.next(10_000);
        assert.equal(frame.type, 'ack', JSON.stringify(frame).slice(0, 300));
        if (frame.type === 'ack') for (const id of frame.messageIds) acked.add(id);
      }
      assert.deepEqual([...acked].sort(), held.flatMap((f) => f.ids).sort());
      await eventually(async () => ((await sample('fieldstream_gateway_broker_backlog_bytes')) === 0 ? true : undefined), 5_000, 'the backlog empty');
      second.send(refused.text);
      const again = await second.next(10_000);
      assert.equal(again.type, 'ack', JSON.stringify(again).slice(0, 300));
      if (again.type === 'ack') assert.deepEqual([...again.messageIds].sort(), [...refused.ids].sort());
    } finally {
      await fx.broker.resume();
      for (const d of devices) d.ws.terminate();
    }
  });

  // Text the device wrote outside ASCII stays so in the envelope (JSON.stringify escapes none of
  // it): counted by characters, two frames of "ü" (two bytes each in UTF-8) held twice the bound's
  // bytes while counted below it, and a third frame was taken; text of three-byte characters, three
  // times.
  it('counts the bytes of envelope text, not its characters', async () => {
    const devices = await Promise.all(['pump-4', 'pump-5'].map((id) => RawDevice.connect(`wss://127.0.0.1:${fx.gateway.port}/ws`, fx.tlsOf(id))));
    const [first, second] = devices as [RawDevice, RawDevice];
    try {
      await eventually(() => (first.welcome && second.welcome ? true : undefined), 5_000, 'both welcomed');
      await fx.broker.pause();
      // About 100,000 characters and 200,000 bytes each: both together past the bound in bytes only.
      const held = [0, 1].map((f) => frameOf('pump-4', f, 'ü'));
      for (const f of held) first.send(f.text);
      await eventually(async () => ((await sample('fieldstream_gateway_broker_backlog_bytes')) > 2 * PER_FRAME * MESSAGE_CHARS * 1.5 ? true : undefined), 5_000, 'both frames handed to the client, counted in bytes');
      const refused = frameOf('pump-5', 0);
      second.send(refused.text);
      const answer = await second.next(5_000);
      assert.equal(answer.type, 'error', JSON.stringify(answer).slice(0, 300));
      if (answer.type === 'error') assert.equal(answer.code, 'GATEWAY_BROKER_UNAVAILABLE');
      await fx.broker.resume();
      const acked = new Set<string>();
      while (acked.size < 2 * PER_FRAME) {
        const frame = await first.next(10_000);
        assert.equal(frame.type, 'ack', JSON.stringify(frame).slice(0, 300));
        if (frame.type === 'ack') for (const id of frame.messageIds) acked.add(id);
      }
      await eventually(async () => ((await sample('fieldstream_gateway_broker_backlog_bytes')) === 0 ? true : undefined), 5_000, 'the backlog empty');
    } finally {
      await fx.broker.resume();
      for (const d of devices) d.ws.terminate();
    }
  });

  // mqtt.js keeps each unacknowledged QoS 1 publish (clean session or not) and sends it again on its
  // next connection, calling its callback at that PUBACK: the count follows, and nothing is left
  // counted for a broker that went away with it.
  it('counts what the broker took with it down again once the client sent it to the broker it reconnected to', async () => {
    const device = await RawDevice.connect(`wss://127.0.0.1:${fx.gateway.port}/ws`, fx.tlsOf('pump-3'));
    try {
      await eventually(() => (device.welcome ? true : undefined), 5_000, 'welcomed');
      await fx.broker.pause();
      const held = frameOf('pump-3', 0);
      device.send(held.text);
      await eventually(async () => ((await sample('fieldstream_gateway_broker_backlog_bytes')) > 0 ? true : undefined), 5_000, 'the frame handed to the client');
      // The broker dies with it unacknowledged, and another starts on its port (no persistence).
      await fx.broker.kill();
      await fx.broker.start();
      const frame = await device.next(15_000);
      assert.equal(frame.type, 'ack', JSON.stringify(frame).slice(0, 300));
      if (frame.type === 'ack') assert.deepEqual([...frame.messageIds].sort(), [...held.ids].sort());
      assert.equal(await sample('fieldstream_gateway_broker_backlog_bytes'), 0);
    } finally {
      device.ws.terminate();
    }
  });
});

/**
 * GATEWAY_MAX_IN_FLIGHT counts messages, and a frame may hold megabytes: while the broker stalled,
 * one device sending large frames filled the backlog all devices share, and every other device's
 * messages were refused. Each device also has a bound on the bytes it has with the broker
 * unacknowledged (a share of the backlog, at least one largest frame): past it, its socket is not
 * read until the broker answers, as for the message count.
 */
describe('bytes one device has with the broker unacknowledged: at most its share of the backlog', () => {
  const SHARED = 512 * KiB;
  // Frames of at most 128 KiB: a device's share is one such frame (more than SHARED / 16).
  const fx = tlsGatewayOnMosquitto('gateway-device-backlog', { maxInFlight: 10_000, frameMaxBytes: 128 * KiB }, { brokerBacklogMaxBytes: SHARED });
  const sample = async (name: string) => parseExposition(await fx.gateway.metrics.metrics.registry.metrics()).get(`${name}{service="gateway"}`) ?? -1;
  const frameOf = (deviceId: string, f: number) => {
    const batch = Array.from({ length: PER_FRAME }, (_, i) => ({ dataType: 'event', messageId: `${deviceId}.${f}.${i}`, payload: { eventType: 'photo_note', severity: 'info', message: `${f}.${i}`.padEnd(MESSAGE_CHARS, 'x') } }));
    return { ids: batch.map((m) => m.messageId), text: JSON.stringify({ deviceId, batch }) };
  };

  it('one device flooding large frames leaves room for another device, and loses nothing', async () => {
    const devices = await Promise.all(['flood-1', 'small-1'].map((id) => RawDevice.connect(`wss://127.0.0.1:${fx.gateway.port}/ws`, fx.tlsOf(id))));
    const [flood, small] = devices as [RawDevice, RawDevice];
    try {
      await eventually(() => (flood.welcome && small.welcome ? true : undefined), 5_000, 'both welcomed');
      await fx.broker.pause();
      // Eight frames of about 100 KiB: past the shared bound, were they all taken.
      const sent = Array.from({ length: 8 }, (_, f) => frameOf('flood-1', f));
      for (const f of sent) flood.send(f.text);
      await eventually(async () => ((await sample('fieldstream_gateway_broker_backlog_bytes')) >= 128 * KiB ? true : undefined), 5_000, 'the flooding device past its share');
      await new Promise((r) => setTimeout(r, 1_000));
      assert.ok((await sample('fieldstream_gateway_broker_backlog_bytes')) < SHARED, 'one device does not fill the shared backlog');

      const one = JSON.stringify({ deviceId: 'small-1', batch: [{ dataType: 'event', messageId: 'small-1.0', payload: { eventType: 'photo_note', severity: 'info', message: 'hello' } }] });
      small.send(one);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(small.unread, 0, 'not refused: it waits for the broker');
      await fx.broker.resume();
      const answer = await small.next(10_000);
      assert.equal(answer.type, 'ack', JSON.stringify(answer).slice(0, 300));
      if (answer.type === 'ack') assert.deepEqual(answer.messageIds, ['small-1.0']);

      // Every frame of the flooding device is acked once the broker answers: held back, not refused.
      const acked = new Set<string>();
      while (acked.size < sent.length * PER_FRAME) {
        const frame = await flood.next(15_000);
        assert.equal(frame.type, 'ack', JSON.stringify(frame).slice(0, 300));
        if (frame.type === 'ack') for (const id of frame.messageIds) acked.add(id);
      }
      assert.deepEqual([...acked].sort(), sent.flatMap((f) => f.ids).sort());
      assert.equal(await sample('fieldstream_gateway_broker_backlog_refusals_total'), 0);
    } finally {
      await fx.broker.resume();
      for (const d of devices) d.ws.terminate();
    }
  });

  // The share is the device's, not its connection's: a device that connected again (or took over
  // with a second connection) while the frames of the one before still waited for the broker
  // started from nothing, and four connections held four shares, the shared backlog filled by
  // one device as before the share existed.
  it('a device connecting again does not take another share while its earlier connections\' frames wait for the broker', async () => {
    const refusalsBefore = await sample('fieldstream_gateway_broker_backlog_refusals_total');
    const connections: RawDevice[] = [];
    const sent: Array<ReturnType<typeof frameOf>> = [];
    try {
      await fx.broker.pause();
      for (let c = 0; c < 4; c++) {
        // Each connection supersedes the one before (closed 4009, ended after its grace).
        const device = await RawDevice.connect(`wss://127.0.0.1:${fx.gateway.port}/ws`, fx.tlsOf('flood-2'));
        connections.push(device);
        await eventually(() => (device.welcome ? true : undefined), 5_000, `connection ${c} welcomed`);
        const frames = [0, 1, 2].map((f) => frameOf('flood-2', c * 3 + f));
        sent.push(...frames);
        for (const f of frames) device.send(f.text);
        await new Promise((r) => setTimeout(r, 500));
      }
      const held = await sample('fieldstream_gateway_broker_backlog_bytes');
      // One share (128 KiB) and the frame that crossed it, about 100 KiB each: what one connection takes.
      assert.ok(held < 2.5 * PER_FRAME * MESSAGE_CHARS, `one device holds ${held} bytes with the broker, its share is ${128 * KiB}`);
      assert.equal(await sample('fieldstream_gateway_broker_backlog_refusals_total'), refusalsBefore, 'no device refused: the backlog was not full');

      // The broker answers: the last connection, paused for what the earlier ones held, reads on.
      await fx.broker.resume();
      const last = connections.at(-1) as RawDevice;
      const expected = sent.slice(-3).flatMap((f) => f.ids);
      const acked = new Set<string>();
      while (acked.size < expected.length) {
        const frame = await last.next(15_000);
        assert.equal(frame.type, 'ack', JSON.stringify(frame).slice(0, 300));
        if (frame.type === 'ack') for (const id of frame.messageIds) acked.add(id);
      }
      assert.deepEqual([...acked].sort(), expected.sort());
    } finally {
      await fx.broker.resume();
      for (const d of connections) d.ws.terminate();
    }
  });
});
