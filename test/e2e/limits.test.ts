import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { eventually, RawDevice } from '../helpers/ws-device.ts';
import { startEmbeddedFixture, type EmbeddedFixture } from '../helpers/embedded.ts';
import { startTestFieldClient } from '../helpers/field.ts';
import { LIMITS } from '../../shared/limits.ts';
import { tempDir } from '../helpers/pki.ts';

describe('limits at the gateway', () => {
  let fx: EmbeddedFixture;
  before(async () => {
    fx = await startEmbeddedFixture(['flood-1', 'calm-1', 'conn-1', 'conn-2', 'conn-3', 'client-1', 'tiny-1'], {
      GATEWAY_RATE_MESSAGES_PER_S: '200',
      GATEWAY_RATE_BURST_S: '1',
      GATEWAY_MAX_BATCH: '100',
      GATEWAY_MAX_CONNECTIONS: '3',
    });
  });
  after(() => fx.stop());
  const device = (id: string) => RawDevice.connect(fx.pipeline.gatewayUrl, RawDevice.tlsFor(fx.pki.paths, id));

  it("answers a flood with GATEWAY_RATE_LIMITED, and a calm device sharing the gateway sees none of it", async () => {
    const flood = await device('flood-1');
    const calm = await device('calm-1');
    try {
      const frame = (k: number) =>
        JSON.stringify({ deviceId: 'flood-1', batch: Array.from({ length: 100 }, (_, i) => ({ dataType: 'timeseries', messageId: `f${k}-${i}`, payload: { x: i, timestamp: 1760000000000 + k * 100 + i } })) });
      for (let k = 0; k < 40; k++) flood.send(frame(k));
      for (let i = 0; i < 20; i++) {
        calm.send(JSON.stringify({ deviceId: 'calm-1', dataType: 'timeseries', messageId: `c${i}`, payload: { y: i, timestamp: 1760000000000 + i } }));
        const answer = await calm.next();
        assert.deepEqual(answer, { type: 'ack', messageIds: [`c${i}`] });
      }
      let limited = 0;
      let acked = 0;
      // Frames of 100 messages; frames that shared an envelope share one ack frame. Past its limit
      // the device is answered once, and what it sends in the pause after is dropped unanswered.
      for (;;) {
        const f = await flood.next(1_000).catch(() => undefined);
        if (!f) break;
        if (f.type === 'error' && f.code === 'GATEWAY_RATE_LIMITED') limited++;
        else if (f.type === 'ack') acked += f.messageIds.length / 100;
      }
      assert.ok(limited > 0 && acked > 0 && limited + acked <= 40, `${acked} frames accepted, ${limited} refused`);
      assert.ok(fx.logs.codes().includes('GATEWAY_RATE_LIMITED'));
      await eventually(() => (fx.points({ measurement: 'readings', device: 'calm-1' }).length === 20 ? true : undefined));
    } finally {
      flood.close();
      calm.close();
    }
  });

  it('counts every frame as a message at least, and stops reading a device past its limit rather than answering each frame', async () => {
    const tiny = await device('tiny-1');
    try {
      // Frames of one byte, not JSON: each cost a parse, an error frame and a log line, charged one
      // byte against a budget of megabytes, so a device sent hundreds of thousands a second.
      for (let i = 0; i < 3000; i++) tiny.send('x');
      await new Promise((r) => setTimeout(r, 1500));
      const answers: string[] = [];
      for (;;) {
        const f = await tiny.next(300).catch(() => undefined);
        if (!f) break;
        answers.push(f.type === 'error' ? f.code : f.type);
      }
      const malformed = answers.filter((c) => c === 'CONTRACT_MALFORMED_JSON').length;
      // 200 messages a second with a second's burst: about 200, and 100 more for each half-second
      // pause the gateway makes after a refusal; far from 3,000.
      assert.ok(malformed >= 100 && malformed <= 800, `${malformed} malformed frames answered`);
      assert.ok(answers.includes('GATEWAY_RATE_LIMITED'));
      assert.ok(answers.length < 1000, `${answers.length} answers to 3,000 frames`);
      const lines = fx.logs.lines.filter((l) => l.code === 'CONTRACT_MALFORMED_JSON' && l.deviceId === 'tiny-1').length;
      assert.ok(lines <= LIMITS.gatewayRefusalLogMaxPerWindow, `${lines} log lines`);
    } finally {
      tiny.close();
    }
  });

  it('the field client backs off when limited and still delivers everything', async () => {
    const field = await startTestFieldClient(fx.pki.paths, 'client-1', fx.pipeline.gatewayUrl, fx.logs.logger);
    try {
      await field.client.submitMany(Array.from({ length: 600 }, (_, i) => ({ dataType: 'timeseries' as const, payload: { z: i, timestamp: 1760000001000 + i } })));
      await eventually(() => (fx.points({ measurement: 'readings', device: 'client-1' }).length === 600 ? true : undefined), 30_000);
    } finally {
      await field.close();
    }
  });

  it('refuses connections past GATEWAY_MAX_CONNECTIONS with 503', async () => {
    await eventually(() => (fx.points({ measurement: 'device_status' }).filter((p) => p.fields.state === 'offline').length >= 3 ? true : undefined));
    const held = [await device('conn-1'), await device('conn-2'), await device('conn-3')];
    try {
      const err = await device('flood-1').then(
        () => assert.fail('connected'),
        (e: { status?: number; body?: string }) => e,
      );
      assert.equal(err.status, 503);
      assert.equal(JSON.parse(err.body ?? '{}').code, 'GATEWAY_TOO_MANY_CONNECTIONS');
    } finally {
      for (const d of held) d.close();
    }
  });
});

describe("the gateway's CPU budget per device", () => {
  let fx: EmbeddedFixture;
  before(async () => {
    // 100 ms of parsing a second, a second's burst: what the frame below costs is several times that.
    fx = await startEmbeddedFixture(['heavy-1', 'calm-2'], { GATEWAY_RATE_CPU_MS_PER_S: '100', GATEWAY_RATE_BURST_S: '1' });
  });
  after(() => fx.stop());
  const device = (id: string) => RawDevice.connect(fx.pipeline.gatewayUrl, RawDevice.tlsFor(fx.pki.paths, id));
  const reading = (id: string, messageId: string) => JSON.stringify({ deviceId: id, dataType: 'timeseries', messageId, payload: { v: 1, timestamp: 1760000000000 + Number(messageId.slice(1)) } });

  it("charges a frame's parse to its device: after 7 MiB of tiny JSON its frames are refused until it has paid, and a calm device sees none of it", async () => {
    const heavy = await device('heavy-1');
    const calm = await device('calm-2');
    try {
      // Within the byte budget (8 MiB a second), and a refused frame: still hundreds of ms to parse.
      heavy.send(`{"deviceId":"heavy-1","batch":[${Array(2_400_000).fill('[]').join(',')}]}`);
      const refused = await heavy.next(30_000);
      assert.ok(refused.type === 'error' && refused.code.startsWith('CONTRACT_'), JSON.stringify(refused));
      heavy.send(reading('heavy-1', 'h1'));
      const owing = await heavy.next(5_000);
      assert.deepEqual(owing.type === 'error' ? [owing.code, owing.messageIds] : owing, ['GATEWAY_RATE_LIMITED', undefined]);
      assert.ok(
        fx.logs.lines.some((l) => l.code === 'GATEWAY_RATE_LIMITED' && l.budget === 'cpu' && l.deviceId === 'heavy-1'),
        'logged with the budget it is past',
      );
      calm.send(reading('calm-2', 'c1'));
      assert.deepEqual(await calm.next(5_000), { type: 'ack', messageIds: ['c1'] });
      // Paid back at 100 ms a second: accepted again within seconds.
      let k = 2;
      await eventually(
        async () => {
          const id = `h${k++}`;
          heavy.send(reading('heavy-1', id));
          const f = await heavy.next(1_000).catch(() => undefined);
          return f?.type === 'ack' && f.messageIds.includes(id) ? true : undefined;
        },
        30_000,
        'a frame of the device accepted again',
      );
    } finally {
      heavy.close();
      calm.close();
    }
  });
});

describe('a message no frame of the gateway holds (GATEWAY_MAX_FRAME_BYTES)', () => {
  let fx: EmbeddedFixture;
  before(async () => {
    fx = await startEmbeddedFixture(['big-1', 'camera-1'], { GATEWAY_MAX_FRAME_BYTES: '65536' });
  });
  after(() => fx.stop());

  it('is set aside by the field client with CONTRACT_FRAME_TOO_LARGE, and what was queued behind it arrives', async () => {
    // The gateway closes a connection on a frame past its limit (1009), unanswered: the field client
    // sent the same frame again after every reconnect, and nothing queued behind it ever arrived.
    const field = await startTestFieldClient(fx.pki.paths, 'big-1', fx.pipeline.gatewayUrl, fx.logs.logger);
    try {
      // Two events a 64 KiB frame holds one at a time, not together (the client gathers messages up
      // to half the gateway's limit, and the last one may pass it).
      await field.client.submitMany([
        { dataType: 'event', payload: { eventType: 'half', message: 'h'.repeat(31_000), timestamp: 1760000099998 } },
        { dataType: 'event', payload: { eventType: 'most', message: 'm'.repeat(45_000), timestamp: 1760000099999 } },
      ]);
      // Within the contract (two strings of 40,000 characters), but no frame of 64 KiB holds it.
      const big = await field.client.submit('event', { eventType: 'dump', message: 'x'.repeat(40_000), detail: 'y'.repeat(40_000), timestamp: 1760000100000 });
      await field.client.submitMany(Array.from({ length: 20 }, (_, i) => ({ dataType: 'timeseries' as const, payload: { w: i, timestamp: 1760000100001 + i } })));
      await eventually(() => (fx.points({ measurement: 'readings', device: 'big-1' }).length === 20 ? true : undefined), 20_000, 'the readings behind the large event');
      await eventually(() => (field.client.unacknowledged === 0 ? true : undefined), 10_000, 'nothing left in the queue');
      const events = fx.points({ measurement: 'events', device: 'big-1' });
      assert.deepEqual(events.map((p) => p.tags.event_type).sort(), ['half', 'most'], 'the two events, each in a frame of its own');
      const lines = readFileSync(join(field.dataDir, 'rejected.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { code: string; message: { messageId: string; payload: { message: string } } });
      assert.deepEqual(lines.map((l) => [l.code, l.message.messageId, l.message.payload.message.length]), [['CONTRACT_FRAME_TOO_LARGE', big.messageId, 40_000]], 'set aside whole, with its code');
      assert.ok(fx.logs.lines.some((l) => l.code === 'CONTRACT_FRAME_TOO_LARGE' && l.messageId === big.messageId), 'logged with its code');
    } finally {
      await field.close();
    }
  });

  it("a file taken once the gateway's welcome said its limit is cut in chunks its frames hold: stored whole, nothing set aside", async () => {
    // A chunk of FIELD_FILE_CHUNK_BYTES (1 MiB by default, here 256 KiB) is a frame far past 64 KiB:
    // each file was set aside whole in rejected/ (CONTRACT_FRAME_TOO_LARGE), none delivered.
    const tmp = tempDir('frame-limit-file');
    const field = await startTestFieldClient(fx.pki.paths, 'camera-1', fx.pipeline.gatewayUrl, fx.logs.logger, { FIELD_FILE_CHUNK_BYTES: String(256 * 1024) });
    try {
      await eventually(() => field.client.welcome, 15_000, "the gateway's welcome");
      assert.equal(field.client.welcome?.limits.frameMaxBytes, 65_536);
      const content = randomBytes(600 * 1024 + 123);
      writeFileSync(join(tmp.dir, 'frame.jpg'), content);
      await field.client.submitFile(join(tmp.dir, 'frame.jpg'));
      const stored = join(fx.data.files, 'camera-1', 'frame.jpg');
      const rejected = join(field.dataDir, 'rejected');
      const setAside = () => (existsSync(rejected) ? readdirSync(rejected) : []);
      await eventually(() => (existsSync(stored) || setAside().length > 0 ? true : undefined), 30_000, 'stored or set aside');
      assert.deepEqual(setAside(), [], 'nothing set aside');
      const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
      assert.equal(sha(readFileSync(stored)), sha(content));
      assert.ok(!fx.logs.lines.some((l) => l.code === 'CONTRACT_FRAME_TOO_LARGE' && String(l.messageId).startsWith('f')), 'no chunk found too large for a frame');
    } finally {
      await field.close();
      tmp.cleanup();
    }
  });
});
