import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isFieldStreamError, type ErrorCode } from '../../shared/errors.ts';
import { LIMITS } from '../../shared/limits.ts';
import { parseTopic, STORED_FEED_TOPIC as TOPICS_FEED_TOPIC, topicMatches, TOPIC_FILTERS } from '../../shared/contract/topics.ts';
import { mayPublish, maySubscribe, ROLE_POLICIES } from '../../shared/acl.ts';
import { parseStoredFeed, STORED_FEED_TOPIC, storedPointProblem } from '../../internal-network/shared/stored-feed.ts';
import { readingPoints } from '../../internal-network/distributor/points.ts';
import type { EnvelopeOf } from '../../shared/contract/envelope.ts';

const reading = { measurement: 'readings', tags: { device: 'pump-7' }, fields: { flow: 3.5, pump_on: true, mode: 'auto' }, time: 1_740_787_200_000 };
const status = { measurement: 'device_status', tags: { device: 'pump-7', gateway: 'gateway-1' }, fields: { state: 'online', cert_days_left: 300 }, time: 1_740_787_200_001 };
const message = (over: Record<string, unknown> = {}) => ({ v: 1, source: 'distributor-1', points: [reading, status], dropped: 0, ...over });
const text = (m: unknown) => Buffer.from(JSON.stringify(m));

/** The code parseStoredFeed threw, or undefined when it accepted the input. */
function refusal(input: Buffer | string): ErrorCode | undefined {
  try {
    parseStoredFeed(input);
    return undefined;
  } catch (err) {
    assert.ok(isFieldStreamError(err), `a coded error, not ${String(err)}`);
    return err.code;
  }
}

describe('the stored feed message', () => {
  it('parses a message of the distributor, points unchanged', () => {
    const got = parseStoredFeed(text(message({ dropped: 12 })));
    assert.deepEqual(got, message({ dropped: 12 }));
    assert.deepEqual(parseStoredFeed(JSON.stringify(message({ points: [] }))).points, [], 'an empty message only says how many were dropped');
  });

  it('carries the very points the distributor writes (points.ts)', () => {
    const env = {
      v: 1,
      deviceId: 'pump-7',
      dataType: 'timeseries',
      gatewayId: 'gateway-1',
      receivedAt: 1_740_787_200_000,
      messages: [{ messageId: 'm1', seq: 1, payload: { flow: 1.5, ok: false, note: 'é', timestamp: '2025-03-01T00:00:00Z' } }],
    } as unknown as EnvelopeOf<'timeseries'>;
    const points = readingPoints(env);
    assert.deepEqual(parseStoredFeed(text(message({ points }))).points, points);
  });

  it('refuses what is not JSON, or is no feed message, with STORED_FEED_INVALID', () => {
    const bad: Record<string, Buffer | string> = {
      'not JSON': 'not json {',
      'a JSON array': '[]',
      'JSON null': 'null',
      'another version': text(message({ v: 2 })),
      'no source': text({ v: 1, points: [], dropped: 0 }),
      'an empty source': text(message({ source: '' })),
      'no dropped count': text({ v: 1, source: 'd', points: [] }),
      'a negative dropped count': text(message({ dropped: -1 })),
      'a fractional dropped count': text(message({ dropped: 1.5 })),
      'points not an array': text(message({ points: { 0: reading } })),
      [`more than ${LIMITS.feedPointsPerMessage} points`]: text(message({ points: Array.from({ length: LIMITS.feedPointsPerMessage + 1 }, () => reading) })),
      'a point without measurement': text(message({ points: [{ ...reading, measurement: undefined }] })),
      'a point without time': text(message({ points: [{ ...reading, time: undefined }] })),
      'a time as a string': text(message({ points: [{ ...reading, time: '2025-03-01T00:00:00Z' }] })),
      'a negative time': text(message({ points: [{ ...reading, time: -1 }] })),
      'an infinite field (1e999)': `{"v":1,"source":"d","dropped":0,"points":[{"measurement":"readings","tags":{},"fields":{"x":1e999},"time":1}]}`,
      'a nested field': text(message({ points: [{ ...reading, fields: { x: { y: 1 } } }] })),
      'a null field': text(message({ points: [{ ...reading, fields: { x: null } }] })),
      'a tag that is a number': text(message({ points: [{ ...reading, tags: { device: 7 } }] })),
      'tags as an array': text(message({ points: [{ ...reading, tags: ['device'] }] })),
      'a tag value too long': text(message({ points: [{ ...reading, tags: { device: 'd'.repeat(LIMITS.feedNameMaxChars + 1) } }] })),
      'a field name too long': text(message({ points: [{ ...reading, fields: { ['f'.repeat(LIMITS.feedNameMaxChars + 1)]: 1 } }] })),
      'a string field too long': text(message({ points: [{ ...reading, fields: { note: 'x'.repeat(LIMITS.stringMaxChars + 1) } }] })),
      'too many tags': text(message({ points: [{ ...reading, tags: Object.fromEntries(Array.from({ length: LIMITS.feedPointMaxTags + 1 }, (_, i) => [`t${i}`, 'v'])) }] })),
      'too many fields': text(message({ points: [{ ...reading, fields: Object.fromEntries(Array.from({ length: LIMITS.feedPointMaxFields + 1 }, (_, i) => [`f${i}`, i])) }] })),
    };
    for (const [what, input] of Object.entries(bad)) assert.equal(refusal(input), 'STORED_FEED_INVALID', what);
  });

  it('says where the problem is', () => {
    try {
      parseStoredFeed(text(message({ points: [reading, { ...status, fields: { state: null } }] })));
      assert.fail('accepted');
    } catch (err) {
      assert.ok(isFieldStreamError(err, 'STORED_FEED_INVALID'));
      assert.match(err.message, /points\.1/);
      assert.match(err.message, /field "state"/);
    }
  });

  it(`refuses a message over ${LIMITS.feedMessageMaxBytes} bytes with STORED_FEED_TOO_LARGE, unread`, () => {
    const big = Buffer.alloc(LIMITS.feedMessageMaxBytes + 1, 0x20); // spaces: valid JSON padding, were it read
    assert.equal(refusal(big), 'STORED_FEED_TOO_LARGE');
    assert.equal(refusal(' '.repeat(LIMITS.feedMessageMaxBytes + 1)), 'STORED_FEED_TOO_LARGE');
    const fits = JSON.stringify(message());
    assert.equal(refusal(fits + ' '.repeat(LIMITS.feedMessageMaxBytes - fits.length)), undefined, 'exactly the limit is accepted');
  });

  it('checks a point the same way in the distributor (storedPointProblem) as in the schema', () => {
    assert.equal(storedPointProblem(reading), undefined);
    assert.equal(storedPointProblem(status), undefined);
    assert.match(storedPointProblem({ ...reading, fields: { x: Number.NaN } }) ?? '', /finite/);
    assert.match(storedPointProblem({ ...reading, measurement: '' }) ?? '', /measurement/);
    assert.match(storedPointProblem(null) ?? '', /object/);
  });
});

describe('the stored feed topic and who may use it', () => {
  it('is one constant, outside every device and gateway topic, and not a device topic', () => {
    assert.equal(STORED_FEED_TOPIC, 'fieldstream/v1/internal/stored');
    assert.equal(STORED_FEED_TOPIC, TOPICS_FEED_TOPIC);
    for (const f of Object.values(TOPIC_FILTERS)) assert.ok(!topicMatches(f, STORED_FEED_TOPIC), f);
    assert.throws(() => parseTopic(STORED_FEED_TOPIC), (e: unknown) => isFieldStreamError(e, 'CONTRACT_INVALID_TOPIC'));
  });

  it('the distributor alone publishes it; the console reads it and nothing else, and writes nothing', () => {
    const publishers = Object.keys(ROLE_POLICIES).filter((role) => mayPublish(role, STORED_FEED_TOPIC));
    assert.deepEqual(publishers, ['distributor']);
    const readers = Object.keys(ROLE_POLICIES).filter((role) => maySubscribe(role, STORED_FEED_TOPIC));
    assert.deepEqual(readers, ['console']);
    assert.deepEqual(ROLE_POLICIES.console, { publish: [], subscribe: [STORED_FEED_TOPIC] });
    for (const f of [...Object.values(TOPIC_FILTERS), '#', 'fieldstream/#', 'fieldstream/v1/internal/+', '$SYS/#']) assert.ok(!maySubscribe('console', f), f);
    assert.ok(!mayPublish('console', STORED_FEED_TOPIC));
  });
});
