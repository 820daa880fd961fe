import assert from 'node:assert/strict';
import { createSecretKey, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { isFieldStreamError, type ErrorCode } from '../../shared/errors.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import { parseTopic, STORED_FEED_TOPIC as TOPICS_FEED_TOPIC, topicMatches, TOPIC_FILTERS } from '../../shared/contract/topics.ts';
import { mayPublish, maySubscribe, ROLE_POLICIES } from '../../shared/acl.ts';
import { parseStoredFeed, STORED_FEED_TOPIC, StoredFeedReader, storedPointProblem } from '../../internal-network/shared/stored-feed.ts';
import { openStoredFeed, readStoredFeedKey, sealStoredFeed, SeqWindow, STORED_FEED_ENVELOPE_BYTES } from '../../internal-network/shared/stored-feed-auth.ts';
import { readingPoints } from '../../internal-network/distributor/points.ts';
import type { EnvelopeOf } from '../../shared/contract/envelope.ts';
import { pkiPaths } from '../../pki/layout.ts';
import { setupPki } from '../../pki/onboarding.ts';
import { newBoot, sealedFeed } from '../helpers/stored-feed.ts';
import { tempDir } from '../helpers/pki.ts';
import { createLogger } from '../../shared/logger.ts';
import { loadConsoleConfig } from '../../internal-network/console/config.ts';
import { startConsole } from '../../internal-network/console/console.ts';
import { loadDistributorConfig } from '../../internal-network/distributor/config.ts';
import { startDistributor } from '../../internal-network/distributor/distributor.ts';

const key = createSecretKey(randomBytes(32));
const otherKey = createSecretKey(randomBytes(32));
const BOOT = newBoot();
const NOW = 1_740_787_300_000;
const reading = { measurement: 'readings', tags: { device: 'pump-7' }, fields: { flow: 3.5, pump_on: true, mode: 'auto' }, time: 1_740_787_200_000 };
const status = { measurement: 'device_status', tags: { device: 'pump-7', gateway: 'gateway-1' }, fields: { state: 'online', cert_days_left: 300 }, time: 1_740_787_200_001 };
const message = (over: Record<string, unknown> = {}) => ({ source: 'distributor-1', boot: BOOT, seq: 1, sent: NOW, dropped: 0, points: [reading, status], ...over });
/** A message as the distributor publishes it: the body's JSON, sealed under `key`. */
const text = (m: unknown) => sealedFeed(key, JSON.stringify(m));

/** The code `fn` threw, or undefined when it returned. */
function codeOf(fn: () => unknown): ErrorCode | undefined {
  try {
    fn();
    return undefined;
  } catch (err) {
    assert.ok(isFieldStreamError(err), `a coded error, not ${String(err)}`);
    return err.code;
  }
}
/** The code parseStoredFeed threw, or undefined when it accepted the input. */
const refusal = (input: Buffer | string, k = key) => codeOf(() => parseStoredFeed(input, k));

describe('the stored feed message', () => {
  it('parses a message of the distributor, points unchanged', () => {
    const got = parseStoredFeed(text(message({ dropped: 12 })), key);
    assert.deepEqual(got, message({ dropped: 12 }));
    assert.deepEqual(parseStoredFeed(text(message({ points: [] })).toString('utf8'), key).points, [], 'an empty message only says how many were dropped');
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
    assert.deepEqual(parseStoredFeed(text(message({ points })), key).points, points);
  });

  it('refuses an authenticated body that is not JSON, or no feed message, with STORED_FEED_INVALID', () => {
    const { source: _s, ...noSource } = message();
    const { dropped: _d, ...noDropped } = message();
    const { boot: _b, ...noBoot } = message();
    const bad: Record<string, Buffer | string> = {
      'not JSON': sealedFeed(key, 'not json {'),
      'a JSON array': sealedFeed(key, '[]'),
      'JSON null': sealedFeed(key, 'null'),
      'no source': text(noSource),
      'an empty source': text(message({ source: '' })),
      'no run': text(noBoot),
      'a run not of 16 bytes in base64url': text(message({ boot: 'short' })),
      'a sequence number of 0': text(message({ seq: 0 })),
      'a fractional sequence number': text(message({ seq: 1.5 })),
      'a sending time as a string': text(message({ sent: new Date(NOW).toISOString() })),
      'no dropped count': text(noDropped),
      'a negative dropped count': text(message({ dropped: -1 })),
      'a fractional dropped count': text(message({ dropped: 1.5 })),
      'points not an array': text(message({ points: { 0: reading } })),
      [`more than ${LIMITS.feedPointsPerMessage} points`]: text(message({ points: Array.from({ length: LIMITS.feedPointsPerMessage + 1 }, () => reading) })),
      'a point without measurement': text(message({ points: [{ ...reading, measurement: undefined }] })),
      'a point without time': text(message({ points: [{ ...reading, time: undefined }] })),
      'a time as a string': text(message({ points: [{ ...reading, time: '2025-03-01T00:00:00Z' }] })),
      'a negative time': text(message({ points: [{ ...reading, time: -1 }] })),
      'an infinite field (1e999)': sealedFeed(key, `{"source":"d","boot":"${BOOT}","seq":1,"sent":${NOW},"dropped":0,"points":[{"measurement":"readings","tags":{},"fields":{"x":1e999},"time":1}]}`),
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
      parseStoredFeed(text(message({ points: [reading, { ...status, fields: { state: null } }] })), key);
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
    const body = JSON.stringify(message());
    const padded = (n: number) => sealedFeed(key, body + ' '.repeat(n - STORED_FEED_ENVELOPE_BYTES - body.length));
    assert.equal(padded(LIMITS.feedMessageMaxBytes).length, LIMITS.feedMessageMaxBytes);
    assert.equal(refusal(padded(LIMITS.feedMessageMaxBytes)), undefined, 'exactly the limit is accepted');
    assert.equal(refusal(padded(LIMITS.feedMessageMaxBytes + 1)), 'STORED_FEED_TOO_LARGE', 'the seal counts');
  });

  it('checks a point the same way in the distributor (storedPointProblem) as in the schema', () => {
    assert.equal(storedPointProblem(reading), undefined);
    assert.equal(storedPointProblem(status), undefined);
    assert.match(storedPointProblem({ ...reading, fields: { x: Number.NaN } }) ?? '', /finite/);
    assert.match(storedPointProblem({ ...reading, measurement: '' }) ?? '', /measurement/);
    assert.match(storedPointProblem(null) ?? '', /object/);
  });
});

describe('the stored feed is authenticated (HMAC-SHA256 under the stored-feed key)', () => {
  const sealed = text(message());

  it('a sealed message is the body with its MAC in front, in one exact layout, and valid JSON whole', () => {
    const s = sealed.toString('utf8');
    assert.match(s, /^\{"v":2,"mac":"[A-Za-z0-9_-]{43}","body":\{"source":"distributor-1",/);
    assert.deepEqual(JSON.parse(s).body, message());
    assert.equal(sealed.length, STORED_FEED_ENVELOPE_BYTES + Buffer.byteLength(JSON.stringify(message())));
    assert.deepEqual(openStoredFeed(key, sealed).toString('utf8'), JSON.stringify(message()), 'the body is the bytes that were sealed');
  });

  it('refuses an altered body, whatever was changed: STORED_FEED_UNAUTHENTICATED', () => {
    const s = sealed.toString('utf8');
    const altered: Record<string, string> = {
      'a reading': s.replace('"flow":3.5', '"flow":9.5'),
      'the source': s.replace('"distributor-1"', '"distributor-2"'),
      'the sequence number': s.replace('"seq":1,', '"seq":2,'),
      'the sending time': s.replace(`"sent":${NOW}`, `"sent":${NOW + 1}`),
      'the dropped count': s.replace('"dropped":0', '"dropped":7'),
      'a point removed': s.replace(/,\{"measurement":"device_status".*\}\]\}\}$/, ']}}'),
      'whitespace added to the body': s.replace('"source":', '"source": '),
    };
    for (const [what, input] of Object.entries(altered)) {
      assert.notEqual(input, s, what);
      assert.equal(refusal(input), 'STORED_FEED_UNAUTHENTICATED', what);
    }
    assert.equal(refusal(sealed), undefined, 'the original is taken');
  });

  it('refuses a message sealed under another key: STORED_FEED_UNAUTHENTICATED', () => {
    assert.equal(refusal(sealedFeed(otherKey, JSON.stringify(message()))), 'STORED_FEED_UNAUTHENTICATED');
    assert.equal(refusal(sealed, otherKey), 'STORED_FEED_UNAUTHENTICATED');
  });

  it('refuses a message without a MAC, or with one not where or as it must be: STORED_FEED_UNAUTHENTICATED, its body unread', () => {
    const s = sealed.toString('utf8');
    const mac = (JSON.parse(s) as { mac: string }).mac;
    const v1 = JSON.stringify({ v: 1, source: 'distributor-1', dropped: 0, points: [reading] });
    const cases: Record<string, string> = {
      'a message of version 1 (what the DMZ forged in the review)': v1,
      'the body alone': JSON.stringify(message()),
      'an empty MAC': s.replace(mac, ''),
      'a MAC cut short': s.replace(mac, mac.slice(0, 42)),
      'a MAC in hex': s.replace(mac, Buffer.from(mac, 'base64url').toString('hex')),
      // The last character's low bits are padding: another spelling of the same 32 bytes (RFC 4648 §3.5).
      'the same MAC spelt otherwise': s.replace(mac, mac.slice(0, 42) + String.fromCharCode(mac.charCodeAt(42) ^ 1)),
      'whitespace in the envelope': s.replace('{"v":2,"mac"', '{"v":2, "mac"'),
      'the fields of the envelope in another order': JSON.stringify({ mac, v: 2, body: message() }),
      'another version': s.replace('{"v":2,', '{"v":3,'),
      'nothing after the body': s.slice(0, -1),
      'something after the body': `${s} `,
      'not JSON at all, no MAC': 'not json {',
      'empty': '',
    };
    for (const [what, input] of Object.entries(cases)) assert.equal(refusal(input), 'STORED_FEED_UNAUTHENTICATED', what);
    try {
      parseStoredFeed(v1, key);
    } catch (err) {
      assert.ok(isFieldStreamError(err, 'STORED_FEED_UNAUTHENTICATED'));
      assert.match(err.message, /version 1, without a MAC/, 'says what it probably is: a distributor not upgraded');
    }
  });

  it('checks the MAC before the body: a forged body that is not even JSON is refused as unauthenticated, a sealed one as invalid', () => {
    const forged = Buffer.concat([sealed.subarray(0, STORED_FEED_ENVELOPE_BYTES - 1), Buffer.from('not json {}')]);
    assert.equal(refusal(forged), 'STORED_FEED_UNAUTHENTICATED');
    assert.equal(refusal(sealedFeed(key, 'not json {')), 'STORED_FEED_INVALID');
  });
});

describe('the console takes a stored-feed message once, and only while it is fresh (StoredFeedReader)', () => {
  const at = (seq: number, over: Record<string, unknown> = {}) => text(message({ seq, ...over }));
  const read = (reader: StoredFeedReader, input: Buffer | string, now = NOW) => codeOf(() => reader.read(input, now));

  it('takes a genuine message once; the same again is STORED_FEED_REPLAYED', () => {
    const reader = new StoredFeedReader(key);
    assert.equal(read(reader, at(1)), undefined);
    assert.equal(read(reader, at(1)), 'STORED_FEED_REPLAYED');
    assert.equal(read(reader, at(2)), undefined);
    assert.equal(read(reader, at(1), NOW + 1000), 'STORED_FEED_REPLAYED', 'still, later');
  });

  it(`refuses a genuine message sent more than ${TIMINGS.feedMaxAgeMs} ms before its clock, or ${TIMINGS.feedMaxLeadMs} ms after: STORED_FEED_STALE`, () => {
    const reader = new StoredFeedReader(key);
    assert.equal(read(reader, at(1, { sent: NOW - TIMINGS.feedMaxAgeMs - 1 })), 'STORED_FEED_STALE', 'an old message replayed');
    assert.equal(read(reader, at(2, { sent: NOW + TIMINGS.feedMaxLeadMs + 1 })), 'STORED_FEED_STALE', 'a clock far ahead');
    assert.equal(read(reader, at(3, { sent: NOW - TIMINGS.feedMaxAgeMs })), undefined, 'the edge of the window is in it');
    assert.equal(read(reader, at(4, { sent: NOW + TIMINGS.feedMaxLeadMs })), undefined);
    // A console started after a message was sent (nothing remembered of its run) still refuses it once old.
    assert.equal(read(new StoredFeedReader(key), at(1), NOW + TIMINGS.feedMaxAgeMs + 1), 'STORED_FEED_STALE');
  });

  it(`takes messages of a run out of order within ${LIMITS.feedReplayWindowMessages}, each once; older ones are STORED_FEED_REPLAYED`, () => {
    const reader = new StoredFeedReader(key);
    assert.equal(read(reader, at(5)), undefined);
    assert.equal(read(reader, at(3)), undefined, 'one that arrived after a later one (the feed changed connection)');
    assert.equal(read(reader, at(3)), 'STORED_FEED_REPLAYED');
    assert.equal(read(reader, at(4)), undefined);
    assert.equal(read(reader, at(100)), undefined);
    assert.equal(read(reader, at(100 - LIMITS.feedReplayWindowMessages + 1)), undefined, 'the oldest the window holds');
    assert.equal(read(reader, at(100 - LIMITS.feedReplayWindowMessages)), 'STORED_FEED_REPLAYED', 'below the window');
    assert.equal(read(reader, at(5)), 'STORED_FEED_REPLAYED', 'far below');
  });

  it('a restart of the distributor is a new run, from 1 again; the old run\'s messages are still taken once', () => {
    const reader = new StoredFeedReader(key);
    const restarted = newBoot();
    assert.equal(read(reader, at(40)), undefined);
    assert.equal(read(reader, at(1, { boot: restarted })), undefined);
    assert.equal(read(reader, at(41)), undefined, 'one of the old run still in flight');
    assert.equal(read(reader, at(41)), 'STORED_FEED_REPLAYED');
    assert.equal(read(reader, at(1, { boot: restarted })), 'STORED_FEED_REPLAYED');
    assert.equal(read(reader, at(1, { source: 'distributor-2' })), undefined, 'each source its own');
  });

  it('a refused message changes nothing: a forged or stale one does not take the sequence number of the genuine one', () => {
    const reader = new StoredFeedReader(key);
    assert.equal(read(reader, sealedFeed(otherKey, JSON.stringify(message({ seq: 7 })))), 'STORED_FEED_UNAUTHENTICATED');
    assert.equal(read(reader, at(7), NOW + TIMINGS.feedMaxAgeMs + 1), 'STORED_FEED_STALE');
    assert.equal(read(reader, at(7)), undefined);
  });

  it('remembers a bounded number of runs and sources, those heard from longest ago forgotten first', () => {
    const reader = new StoredFeedReader(key, { runsPerSource: 2, maxSources: 2 });
    const [a, b, c] = [newBoot(), newBoot(), newBoot()];
    assert.equal(read(reader, at(1, { boot: a })), undefined);
    assert.equal(read(reader, at(1, { boot: b })), undefined);
    assert.equal(read(reader, at(1, { boot: c })), undefined);
    assert.equal(read(reader, at(1, { boot: c })), 'STORED_FEED_REPLAYED');
    assert.equal(read(reader, at(1, { boot: b })), 'STORED_FEED_REPLAYED');
    // Forgotten: within the time window it is taken again (the window is the bound past the memory).
    assert.equal(read(reader, at(1, { boot: a })), undefined);
    for (const source of ['s1', 's2', 's3']) assert.equal(read(reader, at(1, { source, boot: a })), undefined);
    assert.equal(read(reader, at(1, { source: 's3', boot: a })), 'STORED_FEED_REPLAYED');
  });

  it('the sliding window (RFC 4303 §3.4.3)', () => {
    const w = new SeqWindow(4);
    assert.deepEqual([1, 2, 2, 6, 3, 4, 5, 3, 9, 6, 7, 5].map((n) => w.take(n)), ['new', 'new', 'taken', 'new', 'new', 'new', 'new', 'taken', 'new', 'taken', 'new', 'below-window']);
    assert.equal(w.take(1000), 'new');
    assert.equal(w.take(997), 'new', 'a jump clears the slots it slides over');
    assert.equal(w.take(996), 'below-window');
  });
});

describe('the stored-feed key', () => {
  it('is made at onboarding: 32 random bytes in hex, 0600, kept on the next run, made anew with --renew and where missing', () => {
    const tmp = tempDir('feed-key');
    try {
      const root = join(tmp.dir, 'certs');
      const path = pkiPaths(root).storedFeedKey;
      assert.equal(path, join(root, 'internal', 'stored-feed.key'));
      assert.ok(setupPki(root, { domain: 'localhost' }).created.includes('internal/stored-feed.key'));
      const first = readFileSync(path, 'utf8');
      assert.match(first, /^[0-9a-f]{64}\n$/);
      assert.equal(statSync(path).mode & 0o777, 0o600);
      assert.ok(setupPki(root, { domain: 'localhost' }).kept.includes('internal/stored-feed.key'));
      assert.equal(readFileSync(path, 'utf8'), first, 'kept: the distributors and the console go on sharing it');
      assert.ok(setupPki(root, { domain: 'localhost', renew: true }).created.includes('internal/stored-feed.key'));
      assert.notEqual(readFileSync(path, 'utf8'), first, 'made anew with the service keys');
      rmSync(path);
      setupPki(root, { domain: 'localhost' });
      assert.match(readFileSync(path, 'utf8'), /^[0-9a-f]{64}\n$/, 'a set made before the key existed gets one');
      // What Docker leaves where a file it is to mount is missing: an empty folder.
      rmSync(path);
      mkdirSync(path);
      setupPki(root, { domain: 'localhost' });
      assert.ok(statSync(path).isFile());
      const k = readStoredFeedKey('X', path);
      assert.equal(k.symmetricKeySize, 32);
    } finally {
      tmp.cleanup();
    }
  });

  it('is read at start: unreadable, CONFIG_FILE_UNREADABLE; anything but 64 hex digits, CONFIG_INVALID; its bytes in no message', () => {
    const tmp = tempDir('feed-key-read');
    try {
      const file = join(tmp.dir, 'k');
      assert.equal(codeOf(() => readStoredFeedKey('CONSOLE_STORED_FEED_KEY_FILE', file)), 'CONFIG_FILE_UNREADABLE');
      for (const bad of ['', 'ab'.repeat(31), 'AB'.repeat(32), 'zz'.repeat(32), 'ab'.repeat(33)]) {
        writeFileSync(file, bad);
        assert.equal(codeOf(() => readStoredFeedKey('CONSOLE_STORED_FEED_KEY_FILE', file)), 'CONFIG_INVALID', JSON.stringify(bad));
      }
      const hex = randomBytes(32).toString('hex');
      writeFileSync(file, `${hex}\n`);
      const k = readStoredFeedKey('CONSOLE_STORED_FEED_KEY_FILE', file);
      assert.ok(!JSON.stringify(k).includes(hex) && !String(k).includes(hex));
      const m = sealStoredFeed(k, Buffer.from(JSON.stringify(message())));
      assert.equal(codeOf(() => parseStoredFeed(m, createSecretKey(Buffer.from(hex, 'hex')))), undefined, 'the key is the 32 bytes the hex digits spell');
    } finally {
      tmp.cleanup();
    }
  });
});

describe('without the stored-feed key, neither the distributor nor the console starts', () => {
  const log = createLogger('test', 'silent');
  it('the console: CONFIG_FILE_UNREADABLE, before it opens anything', async () => {
    await assert.rejects(
      startConsole(loadConsoleConfig({ COMMAND_API_TOKEN: 'a'.repeat(32), CONSOLE_STORED_FEED_KEY_FILE: '/nonexistent/stored-feed.key' }), log),
      (e: unknown) => isFieldStreamError(e, 'CONFIG_FILE_UNREADABLE') && /CONSOLE_STORED_FEED_KEY_FILE/.test(e.message),
    );
  });
  it('the distributor with its feed on: CONFIG_FILE_UNREADABLE, before it claims its state folder', () => {
    const tmp = tempDir('feed-key-distributor');
    try {
      const state = join(tmp.dir, 'state');
      assert.throws(
        () => startDistributor(loadDistributorConfig({ DISTRIBUTOR_STORED_FEED_KEY_FILE: '/nonexistent/stored-feed.key', DISTRIBUTOR_STATE_DIR: state, DISTRIBUTOR_METRICS_PORT: 'off' }), log),
        (e: unknown) => isFieldStreamError(e, 'CONFIG_FILE_UNREADABLE') && /DISTRIBUTOR_STORED_FEED_KEY_FILE/.test(e.message),
      );
      assert.equal(existsSync(state), false, 'nothing claimed');
    } finally {
      tmp.cleanup();
    }
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
