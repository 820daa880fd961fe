import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseUplinkFrame } from '../../shared/contract/uplink.ts';
import { DownlinkFrameSchema, errorFrame } from '../../shared/contract/downlink.ts';
import type { z } from 'zod';
import { CommandEnvelopeSchema, GatewayEnvelopeSchema, GatewayPresenceSchema, GatewaySecurityReportSchema, parseEnvelope, StatusEnvelopeSchema, UplinkEnvelopeSchema, uplinkEnvelopeMaxValues } from '../../shared/contract/envelope.ts';
import type { DataType } from '../../shared/contract/payloads.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { LIMITS } from '../../shared/limits.ts';
import { SEED_MESSAGES } from '../fixtures/seed-messages.ts';

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof FieldStreamError, `expected a FieldStreamError, got ${String(err)}`);
    return err.code;
  }
  assert.fail('expected an error');
}

const fieldsOf = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`f${i}`, i]));

/** A payload of each kind with the most values and containers it may hold. */
function mostValues(): Record<string, unknown> {
  // `[[],[],…]`: as many values and containers as a result may hold (each `[` and `,` counted)
  const result = Array.from({ length: LIMITS.commandResultMaxValues / 2 }, () => []);
  return {
    timeseries: fieldsOf(LIMITS.readingMaxFields),
    event: { eventType: 'door', ...fieldsOf(LIMITS.readingMaxFields - 1) },
    file: {
      filename: 'a.bin',
      contentType: 'application/octet-stream',
      data: 'AAAA',
      transfer: { id: 't1', index: 0, count: 2, size: 6, sha256: '0'.repeat(64) },
      metadata: fieldsOf(LIMITS.readingMaxFields),
    },
    response: { commandId: 'c-1', status: 'completed', result, timestamp: 1 },
    health: {
      uptimeSeconds: 1, queueMessages: 0, queueBytes: 0, awaitingReceipt: 0, oldestUnsentAgeSeconds: 1, freeDiskBytes: 1, certDaysLeft: 1, clockOffsetMs: 0,
      version: '1.0.0', intervalSeconds: 60, local: Object.fromEntries(Array.from({ length: LIMITS.healthLocalMaxValues }, (_, i) => [`v${i}`, i])), timestamp: 1,
    },
  };
}

const reading = (payload: unknown, extra: Record<string, unknown> = {}) =>
  JSON.stringify({ deviceId: 'sensor-001', dataType: 'timeseries', payload, ...extra });

describe('device → gateway contract', () => {
  for (const [kind, text] of Object.entries(SEED_MESSAGES)) {
    it(`accepts the seed's ${kind} example exactly as written`, () => {
      const [msg] = parseUplinkFrame(text);
      assert.equal(msg?.dataType, kind);
      assert.deepEqual(msg, JSON.parse(text));
    });
  }

  it('keeps numbers, strings and booleans as they were sent', () => {
    const [msg] = parseUplinkFrame(reading({ t: 1, s: 'ok', b: false, timestamp: 1704110400000 }));
    assert.deepEqual(msg?.payload, { t: 1, s: 'ok', b: false, timestamp: 1704110400000 });
  });

  it('accepts our client additions: messageId, seq and a batch', () => {
    const frame = JSON.stringify({
      deviceId: 'sensor-001',
      batch: [
        { dataType: 'timeseries', messageId: 'a.1', seq: 1, payload: { t: 1 } },
        { dataType: 'event', messageId: 'a.2', seq: 2, payload: { eventType: 'door' } },
      ],
    });
    const msgs = parseUplinkFrame(frame);
    assert.equal(msgs.length, 2);
    assert.ok(msgs.every((m) => m.deviceId === 'sensor-001'));
    assert.deepEqual(msgs.map((m) => m.seq), [1, 2]);
  });

  it('rejects malformed JSON', () => {
    assert.equal(codeOf(() => parseUplinkFrame('{"deviceId": "sensor-001",')), 'CONTRACT_MALFORMED_JSON');
    assert.equal(codeOf(() => parseUplinkFrame('')), 'CONTRACT_MALFORMED_JSON');
  });

  it('rejects a JSON value that is not an object', () => {
    for (const text of ['[]', '42', 'null', '"x"']) assert.equal(codeOf(() => parseUplinkFrame(text)), 'CONTRACT_INVALID_MESSAGE');
  });

  it('rejects an unknown dataType, also inside a batch, naming the message', () => {
    assert.equal(codeOf(() => parseUplinkFrame(JSON.stringify({ deviceId: 'd', dataType: 'video', payload: {} }))), 'CONTRACT_UNKNOWN_DATA_TYPE');
    try {
      parseUplinkFrame(JSON.stringify({ deviceId: 'd', batch: [{ dataType: 'timeseries', payload: { a: 1 } }, { dataType: 7, messageId: 'm-2', payload: {} }] }));
      assert.fail('expected an error');
    } catch (err) {
      assert.ok(err instanceof FieldStreamError);
      assert.equal(err.code, 'CONTRACT_UNKNOWN_DATA_TYPE');
      assert.equal(err.details?.messageId, 'm-2');
    }
  });

  it('rejects missing and mistyped fields with CONTRACT_INVALID_MESSAGE', () => {
    const cases = [
      JSON.stringify({ dataType: 'timeseries', payload: { t: 1 } }), // no deviceId
      JSON.stringify({ deviceId: 'sensor-001', dataType: 'timeseries' }), // no payload
      reading({}), // no field
      reading({ timestamp: '2024-01-01T12:00:00Z' }), // only a timestamp
      reading({ t: { nested: 1 } }), // nested value
      reading({ t: [1, 2] }),
      reading({ t: 1, timestamp: 'yesterday' }),
      reading({ t: 1, timestamp: '2024-01-01T12:00:00' }), // no zone: ambiguous
      reading({ 'bad key': 1 }),
      reading({ t: 1 }, { seq: -1 }),
      reading({ t: 1 }, { seq: 1.5 }),
      reading({ t: 1 }, { messageId: 'has space' }),
      reading({ t: 1 }, { extra: true }), // unknown top-level key
      JSON.stringify({ deviceId: '../etc', dataType: 'timeseries', payload: { t: 1 } }),
      JSON.stringify({ deviceId: 'a/b', dataType: 'timeseries', payload: { t: 1 } }),
      JSON.stringify({ deviceId: 'a+#', dataType: 'timeseries', payload: { t: 1 } }),
      JSON.stringify({ deviceId: 'x'.repeat(65), dataType: 'timeseries', payload: { t: 1 } }),
      JSON.stringify({ deviceId: 'd', dataType: 'event', payload: { severity: 'high' } }), // no eventType
      // an event of more keys than a reading may have fields: each would be a field of its point
      JSON.stringify({ deviceId: 'd', dataType: 'event', payload: { eventType: 'door', ...fieldsOf(LIMITS.readingMaxFields) } }),
      JSON.stringify({ deviceId: 'd', dataType: 'response', payload: { commandId: 'c', status: 'maybe' } }),
      JSON.stringify({ deviceId: 'd', dataType: 'file', payload: { filename: 'a.txt' } }), // no data
      JSON.stringify({ deviceId: 'd', batch: [] }),
    ];
    for (const text of cases) assert.equal(codeOf(() => parseUplinkFrame(text)), 'CONTRACT_INVALID_MESSAGE', text);
  });

  it('refuses a field named "time", which InfluxDB 1.x drops from a point it answers 204 to', () => {
    assert.equal(codeOf(() => parseUplinkFrame(reading({ time: 5, v: 1 }))), 'CONTRACT_INVALID_MESSAGE');
    for (const name of ['Time', 'time_s', 'times', '_time']) assert.equal(parseUplinkFrame(reading({ [name]: 5 })).length, 1, name);
  });

  it('refuses a field named as a tag its point is stored with (device, event_type): InfluxQL would read the field for the tag', () => {
    // WHERE "device" = 'victim' compares the field once one exists in the measurement: a reading with
    // device="victim" showed as the victim's, and the victim's own readings no longer matched.
    for (const name of ['device', 'event_type']) {
      assert.equal(codeOf(() => parseUplinkFrame(reading({ [name]: 'victim', v: 1 }))), 'CONTRACT_INVALID_MESSAGE', name);
      assert.equal(codeOf(() => parseUplinkFrame(JSON.stringify({ deviceId: 'd', dataType: 'event', payload: { eventType: 'door', [name]: 'victim' } }))), 'CONTRACT_INVALID_MESSAGE', name);
    }
    for (const name of ['Device', 'device_id', 'devices', 'eventType_x', 'event_types']) assert.equal(parseUplinkFrame(reading({ [name]: 5 })).length, 1, name);
  });

  it('takes an event of as many keys as a reading may have fields', () => {
    const { eventType, ...rest } = { eventType: 'door', ...fieldsOf(LIMITS.readingMaxFields - 1) };
    const frame = parseUplinkFrame(JSON.stringify({ deviceId: 'd', dataType: 'event', payload: { eventType, ...rest } }));
    assert.equal(Object.keys(frame[0]!.payload).length, LIMITS.readingMaxFields);
  });

  it("counts an event's, a file's metadata's and the health values' keys before checking any: a frame of hundreds of thousands is refused without each being looked at", () => {
    // Values of the wrong type: each one looked at was an issue of its own (seconds at the gateway,
    // every device of it waiting). The refusal names the count, not a key.
    const many = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, {}]));
    const health = { uptimeSeconds: 1, queueMessages: 0, queueBytes: 0, awaitingReceipt: 0, version: '1.0.0', intervalSeconds: 60 };
    const cases: [string, (keys: Record<string, unknown>) => Record<string, unknown>, string][] = [
      ['event', (keys) => ({ deviceId: 'd', dataType: 'event', payload: { eventType: 'door', ...keys } }), `payload: holds more than ${LIMITS.readingMaxFields} fields`],
      ['file metadata', (keys) => ({ deviceId: 'd', dataType: 'file', payload: { filename: 'a.txt', data: 'AAAA', metadata: keys } }), `payload.metadata: holds more than ${LIMITS.readingMaxFields} fields`],
      ['health values', (keys) => ({ deviceId: 'd', dataType: 'health', payload: { ...health, local: keys } }), `payload.local: holds more than ${LIMITS.healthLocalMaxValues} values`],
      ['event in a batch', (keys) => ({ deviceId: 'd', batch: [{ dataType: 'event', payload: { eventType: 'door', ...keys } }] }), `batch.0.payload: holds more than ${LIMITS.readingMaxFields} fields`],
    ];
    const parse = JSON.parse;
    for (const [name, frameOf, refusal] of cases) {
      // How many of the keys' values are read: the frame's record-shaped object, as JSON.parse made
      // it, behind a proxy that counts reads of keys it holds (k0, k1, ...).
      let looked = 0;
      const counted = (v: unknown) => new Proxy(v as object, { get: (t, k, r) => (typeof k === 'string' && /^k\d+$/.test(k) && looked++, Reflect.get(t, k, r)) });
      JSON.parse = (text: string) => {
        const frame = parse(text) as { payload?: Record<string, unknown>; batch?: { payload: Record<string, unknown> }[] };
        const payload = frame.payload ?? frame.batch?.[0]?.payload;
        if (!payload) return frame;
        const at = 'metadata' in payload ? 'metadata' : 'local' in payload ? 'local' : undefined;
        if (at) payload[at] = counted(payload[at]);
        else if (frame.payload) frame.payload = counted(payload) as Record<string, unknown>;
        else frame.batch![0]!.payload = counted(payload) as Record<string, unknown>;
        return frame;
      };
      let err: unknown;
      try {
        parseUplinkFrame(JSON.stringify(frameOf(many(20_000))));
      } catch (e) {
        err = e;
      } finally {
        JSON.parse = parse;
      }
      assert.ok(err instanceof FieldStreamError && err.code === 'CONTRACT_INVALID_MESSAGE', `${name}: refused`);
      assert.equal(err.message, `Invalid message — ${refusal}`, name);
      assert.equal(looked, 0, `${name}: ${looked} of the 20,000 keys' values were looked at`);

      // And a frame of 4 MiB (300,000 keys) is refused the same way, as a whole. (How long it takes is
      // the benchmark's to measure, not a test's: the count above is what shows no key is checked.)
      const text = JSON.stringify(frameOf(many(Math.floor(LIMITS.frameMaxBytes / 28))));
      assert.ok(Buffer.byteLength(text) <= LIMITS.frameMaxBytes, `${name}: the frame fits`);
      assert.equal(codeOf(() => parseUplinkFrame(text)), 'CONTRACT_INVALID_MESSAGE', name);
    }
  });

  it("names a few of a frame's unknown keys in its refusal, not all of them: the error frame and the log line stay small", () => {
    const unknown = Object.fromEntries(Array.from({ length: 100_000 }, (_, i) => [`k${i}`, 1]));
    const health = { uptimeSeconds: 1, queueMessages: 0, queueBytes: 0, awaitingReceipt: 0, version: '1.0.0', intervalSeconds: 60 };
    for (const frame of [
      { deviceId: 'd', dataType: 'timeseries', payload: { t: 1 }, ...unknown },
      { deviceId: 'd', dataType: 'health', payload: { ...health, ...unknown } },
      { deviceId: 'd', batch: [{ dataType: 'timeseries', payload: { t: 1 } }], ...unknown },
    ]) {
      let err: unknown;
      try {
        parseUplinkFrame(JSON.stringify(frame));
      } catch (e) {
        err = e;
      }
      assert.ok(err instanceof FieldStreamError && err.code === 'CONTRACT_INVALID_MESSAGE');
      assert.match(err.message, /Unrecognized keys: "k0", "k1"/);
      const sent = JSON.stringify(errorFrame(err));
      assert.ok(sent.length < 4096, `the error frame is ${sent.length} characters`);
    }
    // And a broker envelope's, at the distributor.
    const envelope = Buffer.from(JSON.stringify({ dataType: 'timeseries', ...unknown }));
    assert.throws(() => parseEnvelope(UplinkEnvelopeSchema, envelope), (e: FieldStreamError) => e.code === 'CONTRACT_INVALID_ENVELOPE' && JSON.stringify({ m: e.message, d: e.details }).length < 4096);
  });

  it('reports where the message is wrong', () => {
    try {
      parseUplinkFrame(reading({ t: 1 }, { seq: 'one' }));
      assert.fail('expected an error');
    } catch (err) {
      assert.ok(err instanceof FieldStreamError);
      assert.match(err.message, /seq/);
    }
  });

  it('rejects oversized frames and batches', () => {
    const big = reading({ s: 'x'.repeat(2000) });
    assert.equal(codeOf(() => parseUplinkFrame(big, { frameMaxBytes: 1000, batchMaxMessages: 10 })), 'CONTRACT_FRAME_TOO_LARGE');
    const batch = JSON.stringify({ deviceId: 'd', batch: Array.from({ length: 11 }, () => ({ dataType: 'timeseries', payload: { t: 1 } })) });
    assert.equal(codeOf(() => parseUplinkFrame(batch, { frameMaxBytes: 1e6, batchMaxMessages: 10 })), 'CONTRACT_BATCH_TOO_LARGE');
    assert.equal(codeOf(() => parseUplinkFrame(reading({ s: 'x'.repeat(70_000) }))), 'CONTRACT_INVALID_MESSAGE');
  });

  it('refuses file names that are paths', () => {
    const file = (filename: string) =>
      JSON.stringify({ deviceId: 'camera-001', dataType: 'file', payload: { filename, data: 'aGVsbG8=' } });
    for (const name of ['../x.jpg', '../../etc/passwd', '/etc/passwd', 'a/b.jpg', 'a\\b.jpg', '..', '.', '.hidden', 'C:evil', 'nul\u0000.jpg', 'a\nb', 'del\u007f.jpg', 'csi\u009b2J.jpg', 'c1\u0085.jpg', 'trailing.', '', 'lone\ud800.jpg', '\udc00.jpg']) {
      assert.equal(codeOf(() => parseUplinkFrame(file(name))), 'CONTRACT_UNSAFE_FILENAME', JSON.stringify(name));
    }
    assert.equal(parseUplinkFrame(file('photo 1 (copy).jpg')).length, 1);
  });

  it('refuses file data that is not base64', () => {
    const file = (data: string) => JSON.stringify({ deviceId: 'camera-001', dataType: 'file', payload: { filename: 'a.bin', data } });
    assert.equal(codeOf(() => parseUplinkFrame(file('not base64!'))), 'CONTRACT_INVALID_FILE_DATA');
    assert.equal(codeOf(() => parseUplinkFrame(file('abcde'))), 'CONTRACT_INVALID_FILE_DATA');
  });
});

describe('gateway → device frames', () => {
  it('validates acks, errors and commands', () => {
    assert.ok(DownlinkFrameSchema.safeParse({ type: 'ack', messageIds: ['a.1'] }).success);
    assert.ok(DownlinkFrameSchema.safeParse({ type: 'command', commandId: 'cmd-1', command: 'open_valve', params: { pct: 50 }, issuedAt: 1 }).success);
    assert.ok(!DownlinkFrameSchema.safeParse({ type: 'ack', messageIds: [] }).success);
    assert.ok(!DownlinkFrameSchema.safeParse({ type: 'error', code: 'NOT_A_CODE', message: 'x' }).success);
  });

  it('builds an error frame from a coded error, carrying the message id', () => {
    const frame = errorFrame(new FieldStreamError('CONTRACT_INVALID_MESSAGE', 'bad', { messageId: 'm-1', issues: [] }));
    assert.deepEqual(frame, { type: 'error', code: 'CONTRACT_INVALID_MESSAGE', message: 'bad', messageIds: ['m-1'], details: { issues: [] } });
    assert.ok(DownlinkFrameSchema.safeParse(frame).success);
  });
});

describe('broker envelopes', () => {
  const envelope = {
    v: 1,
    deviceId: 'sensor-001',
    dataType: 'timeseries',
    gatewayId: 'gw-1',
    receivedAt: 1,
    messages: [{ messageId: 'm', payload: { t: 1 } }],
  };
  it('parses a valid envelope', () => {
    assert.equal(parseEnvelope(UplinkEnvelopeSchema, Buffer.from(JSON.stringify(envelope))).deviceId, 'sensor-001');
  });
  it('refuses a payload that is no JSON object before copying it into text or parsing it (16 MiB of junk, or of 5.6 million empty objects)', (t) => {
    const parse = t.mock.method(JSON, 'parse');
    let copies = 0;
    const counted = (text: string) => {
      const b = Buffer.from(text);
      const toString = b.toString.bind(b);
      b.toString = ((encoding?: BufferEncoding, start?: number, end?: number) => {
        copies++;
        return toString(encoding, start, end);
      }) as typeof b.toString;
      return b;
    };
    for (const bad of ['not json', '[{},{},{}]', ' \n[]', '"an envelope"', '42', 'null', '', '  ', '\uFEFF{}']) {
      assert.equal(codeOf(() => parseEnvelope(UplinkEnvelopeSchema, counted(bad))), 'CONTRACT_INVALID_ENVELOPE', JSON.stringify(bad));
    }
    assert.equal(copies, 0, 'no copy of the payload made');
    assert.equal(parse.mock.callCount(), 0, 'nothing parsed');
    // JSON's whitespace before the object is JSON still.
    assert.equal(parseEnvelope(UplinkEnvelopeSchema, counted(` \t\r\n${JSON.stringify(envelope)}`)).deviceId, 'sensor-001');
  });
  it('refuses an object of millions of small values before JSON.parse builds any of it, at once, and reads no more of it than the bound', (t) => {
    const parse = t.mock.method(JSON, 'parse');
    // 16 MiB, the broker's largest packet, of each of the smallest values: up to 8 million of them.
    const filled = (item: string) => {
      const n = Math.floor((16 * 1024 * 1024 - 16) / (item.length + 1));
      return Buffer.from(`{"a":[${`${item},`.repeat(n - 1)}${item}]}`);
    };
    for (const item of ['{}', '[]', '0', '""', '{"k":0}']) {
      const payload = filled(item);
      const started = performance.now();
      assert.throws(
        () => parseEnvelope(UplinkEnvelopeSchema, payload),
        (e: unknown) => e instanceof FieldStreamError && e.code === 'CONTRACT_INVALID_ENVELOPE' && e.message.includes(`holds more than ${LIMITS.envelopeMaxValues} JSON values and containers`),
        item,
      );
      const ms = performance.now() - started;
      assert.ok(ms < 250, `${item}: refused in ${ms.toFixed(0)} ms`);
    }
    // Commas and brackets inside strings are text, not values (escaped quotes and backslashes
    // included): counted, this would be refused.
    const text = (s: string) => JSON.stringify({ ...envelope, messages: [{ messageId: 'm', payload: Object.fromEntries(Array.from({ length: 6 }, (_, i) => [`s${i}`, s])) }] });
    for (const s of [`\\"${',[{'.repeat(20_000)}\\"${'x'.repeat(40)}\\\\`, `${'\\",'.repeat(10)}${',[{'.repeat(20_000)}`]) {
      const legal = Buffer.from(text(s));
      assert.ok(legal.length > LIMITS.envelopeMaxValues);
      assert.equal(parseEnvelope(UplinkEnvelopeSchema, legal).deviceId, 'sensor-001');
    }
    assert.equal(parse.mock.callCount(), 2, 'only the legal envelopes parsed');
  });
  it(`refuses a command result of more than ${LIMITS.commandResultMaxValues} JSON values and containers: at the gateway (CONTRACT_RESULT_TOO_MANY_VALUES), and on a response's topic before JSON.parse builds millions of them`, (t) => {
    // Bounded by its size alone (65,536 characters), one result was 32,000 values, and an envelope on
    // a response's topic as many values as the brokers' largest packet holds: 16 MiB of `{},` made
    // 5.6 million objects (360 MB of heap) in the command API and the distributor, for each message.
    const R = LIMITS.commandResultMaxValues;
    const frame = (result: unknown) => JSON.stringify({ deviceId: 'pump-1', dataType: 'response', messageId: 'r1', payload: { commandId: 'c-1', status: 'completed', result } });
    const zeros = (n: number) => Array.from({ length: n }, () => 0); // `[0,0,…]`: one `[`, n - 1 commas
    const pairs = (n: number) => Array.from({ length: n }, () => []); // `[[],[],…]`: 2n
    // `{"a":[0,…]}` of n zeros: n + 1
    const keys = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, 'v,[{'])); // commas in strings are text
    for (const result of [zeros(R), pairs(R / 2), keys(R), { a: zeros(R - 1) }]) assert.equal(parseUplinkFrame(frame(result)).length, 1);
    for (const result of [zeros(R + 1), pairs(R / 2 + 1), keys(R + 1), { a: zeros(R) }, zeros(20_000)]) {
      assert.equal(codeOf(() => parseUplinkFrame(frame(result))), 'CONTRACT_RESULT_TOO_MANY_VALUES');
    }
    // In a batch, the offending message is named.
    const batch = JSON.stringify({ deviceId: 'pump-1', batch: [{ dataType: 'response', messageId: 'r9', payload: { commandId: 'c-9', status: 'completed', result: zeros(R + 1) } }] });
    assert.throws(() => parseUplinkFrame(batch), (e: unknown) => e instanceof FieldStreamError && e.code === 'CONTRACT_RESULT_TOO_MANY_VALUES' && e.details?.messageId === 'r9');
    // The internal side: such a response in an envelope is no valid envelope.
    const response = (result: unknown) => Buffer.from(JSON.stringify({ ...envelope, dataType: 'response', messages: [{ messageId: 'm', payload: { commandId: 'c-1', status: 'completed', result } }] }));
    assert.equal(parseEnvelope(UplinkEnvelopeSchema, response(zeros(R)), uplinkEnvelopeMaxValues('response')).dataType, 'response');
    assert.equal(codeOf(() => parseEnvelope(UplinkEnvelopeSchema, response(zeros(R + 1)), uplinkEnvelopeMaxValues('response'))), 'CONTRACT_INVALID_ENVELOPE');
    // And 16 MiB of small values on a response's topic is refused before it is parsed, as on any other.
    const parse = t.mock.method(JSON, 'parse');
    for (const item of ['{}', '0']) {
      const n = Math.floor((16 * 1024 * 1024 - 16) / (item.length + 1));
      const hostile = Buffer.from(`{"a":[${`${item},`.repeat(n - 1)}${item}]}`);
      assert.equal(codeOf(() => parseEnvelope(UplinkEnvelopeSchema, hostile, uplinkEnvelopeMaxValues('response'))), 'CONTRACT_INVALID_ENVELOPE', item);
    }
    assert.equal(parse.mock.callCount(), 0, 'nothing parsed');
    assert.ok(uplinkEnvelopeMaxValues('response') < (16 * 1024 * 1024) / 16, 'a response envelope holds at most a small share of what a packet of small values does');
  });
  it('takes the legal envelopes of the most values: each kind of message at its most, a result at its deepest', () => {
    const full = mostValues();
    for (const [dataType, payload] of Object.entries(full)) {
      const messages = Array.from({ length: LIMITS.batchMaxMessages }, (_, i) => ({ messageId: `m.${i}`, seq: i, auth: { v: 2, epoch: 'e1', seq: i, ts: 1, mac: `${'A'.repeat(42)}A`, count: 1 }, receivedAt: 1, payload }));
      const env = parseEnvelope(UplinkEnvelopeSchema, Buffer.from(JSON.stringify({ ...envelope, dataType, messages })), uplinkEnvelopeMaxValues(dataType as DataType));
      assert.equal(env.messages.length, LIMITS.batchMaxMessages, dataType);
    }
    const sections = Array.from({ length: LIMITS.batchMaxMessages }, (_, i) => ({ deviceId: `d${i}`, messages: [{ messageId: 'm', seq: 1, auth: { v: 1, epoch: 'e1', seq: 1, ts: 1, mac: `${'A'.repeat(42)}A` }, receivedAt: 1, payload: full.timeseries }] }));
    const gw = parseEnvelope(GatewayEnvelopeSchema, Buffer.from(JSON.stringify({ v: 1, gatewayId: 'gw-1', dataType: 'timeseries', receivedAt: 1, devices: sections })));
    assert.equal(gw.devices.length, LIMITS.batchMaxMessages);
    let result: unknown = 0;
    for (let i = 0; i < LIMITS.jsonMaxDepth; i++) result = [result];
    const deepest = { ...envelope, dataType: 'response', messages: [{ messageId: 'm', payload: { commandId: 'c-1', status: 'completed', result } }] };
    assert.equal(parseEnvelope(UplinkEnvelopeSchema, Buffer.from(JSON.stringify(deepest))).dataType, 'response');
    const command = { v: 1, commandId: 'c-1', command: 'reboot', params: Array.from({ length: LIMITS.stringMaxChars / 2 - 1 }, () => 0), issuedAt: 1 };
    assert.ok(JSON.stringify(command.params).length <= LIMITS.stringMaxChars);
    assert.equal(parseEnvelope(CommandEnvelopeSchema, Buffer.from(JSON.stringify(command))).command, 'reboot');
  });
  it('refuses times past what a Date holds, and forged report counts: a store could not write them', () => {
    const huge = 2 ** 53 - 1;
    const cases: Array<[z.ZodType, unknown]> = [
      [UplinkEnvelopeSchema, { ...envelope, receivedAt: huge }],
      [StatusEnvelopeSchema, { v: 1, state: 'online', gatewayId: 'gw-1', at: huge }],
      [GatewayPresenceSchema, { v: 1, state: 'online', gatewayId: 'gw-1', since: huge }],
      [GatewaySecurityReportSchema, { v: 1, gatewayId: 'gw-1', from: 0, to: huge, events: [], dropped: 0 }],
      [GatewaySecurityReportSchema, { v: 1, gatewayId: 'gw-1', from: 0, to: 1, events: [{ deviceId: 'd', code: 'GATEWAY_RATE_LIMITED', count: LIMITS.gatewayReportMaxCount + 1 }], dropped: 0 }],
    ];
    for (const [schema, value] of cases) assert.equal(codeOf(() => parseEnvelope(schema, Buffer.from(JSON.stringify(value)))), 'CONTRACT_INVALID_ENVELOPE', JSON.stringify(value));
    assert.equal(parseEnvelope(StatusEnvelopeSchema, Buffer.from(JSON.stringify({ v: 1, state: 'online', gatewayId: 'gw-1', at: 8.64e15 }))).at, 8.64e15);
  });
  it("refuses a gateway id that is not the gateway's own rule (a topic level): line protocol and PostgreSQL could not store it", () => {
    for (const gatewayId of ['gw\n1', 'gw\\', 'gw\u00001', 'gw 1', 'gw/#', 'x'.repeat(101), '']) {
      const cases: Array<[z.ZodType, unknown]> = [
        [UplinkEnvelopeSchema, { ...envelope, gatewayId }],
        [StatusEnvelopeSchema, { v: 1, state: 'online', gatewayId, at: 1 }],
        [GatewayPresenceSchema, { v: 1, state: 'online', gatewayId, since: 1 }],
        [GatewaySecurityReportSchema, { v: 1, gatewayId, from: 0, to: 1, events: [], dropped: 0 }],
      ];
      for (const [schema, value] of cases) assert.equal(codeOf(() => parseEnvelope(schema, Buffer.from(JSON.stringify(value)))), 'CONTRACT_INVALID_ENVELOPE', JSON.stringify(value));
    }
  });
  it('re-validates payloads: what crossed the DMZ is not trusted', () => {
    const hostile = { ...envelope, dataType: 'file', messages: [{ messageId: 'm', payload: { filename: '../../x', data: '' } }] };
    for (const bad of [Buffer.from('not json'), Buffer.from(JSON.stringify(hostile)), Buffer.from(JSON.stringify({ ...envelope, v: 2 }))]) {
      assert.equal(codeOf(() => parseEnvelope(UplinkEnvelopeSchema, bad)), 'CONTRACT_INVALID_ENVELOPE');
    }
  });
});

describe("a gateway's envelope of many devices' readings", () => {
  const section = (deviceId: string, n: number) => ({ deviceId, messages: Array.from({ length: n }, (_, i) => ({ messageId: `${deviceId}.${i}`, payload: { t: i } })) });
  const env = (devices: unknown[]) => Buffer.from(JSON.stringify({ v: 1, gatewayId: 'gw-1', dataType: 'timeseries', receivedAt: 1, devices }));
  it('parses one section per device', () => {
    assert.deepEqual(parseEnvelope(GatewayEnvelopeSchema, env([section('a', 2), section('b', 1)])).devices.map((d) => d.deviceId), ['a', 'b']);
  });
  it('refuses a device named twice, more messages in all than a batch holds, another kind, a bad device id or an empty section', () => {
    const tooMany = Array.from({ length: 3 }, (_, i) => section(`d${i}`, Math.ceil(LIMITS.batchMaxMessages / 2)));
    for (const bad of [
      env([section('a', 1), section('a', 1)]),
      env(tooMany),
      env([]),
      env([section('../x', 1)]),
      env([{ deviceId: 'a', messages: [] }]),
      Buffer.from(JSON.stringify({ v: 1, gatewayId: 'gw-1', dataType: 'event', receivedAt: 1, devices: [section('a', 1)] })),
      Buffer.from(JSON.stringify({ v: 1, gatewayId: 'gw-1', dataType: 'timeseries', receivedAt: 1, devices: [section('a', 1)], extra: 1 })),
    ]) {
      assert.equal(codeOf(() => parseEnvelope(GatewayEnvelopeSchema, bad)), 'CONTRACT_INVALID_ENVELOPE', bad.toString().slice(0, 80));
    }
  });
  it('counts the messages before it parses a section: too many are refused as such, whatever they hold', () => {
    // Each message is invalid; a parse of the sections would report that first.
    const junk = (deviceId: string) => ({ deviceId, messages: Array.from({ length: LIMITS.batchMaxMessages }, () => ({ not: 'a message' })) });
    const err = (() => {
      try {
        parseEnvelope(GatewayEnvelopeSchema, env([junk('a'), junk('b')]));
      } catch (e) {
        return e as FieldStreamError;
      }
      assert.fail('accepted');
    })();
    assert.equal(err.code, 'CONTRACT_INVALID_ENVELOPE');
    assert.match(err.message, new RegExp(`devices: holds more than ${LIMITS.batchMaxMessages} messages`));
    assert.equal((err.details as { issues: unknown[] }).issues.length, 1);
    const sections = Array.from({ length: LIMITS.batchMaxMessages + 1 }, () => ({ deviceId: 'a', messages: [] }));
    assert.throws(() => parseEnvelope(GatewayEnvelopeSchema, env(sections)), (e: FieldStreamError) => /devices: holds more than \d+ sections/.test(e.message) && (e.details as { issues: unknown[] }).issues.length === 1);
  });
});

