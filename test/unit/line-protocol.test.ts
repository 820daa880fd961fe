import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Point } from '@influxdata/influxdb-client';
import fc from 'fast-check';
import { nanosecondTime, precisionOf, requestsOf, toLine, toLineProtocol, toLines } from '../../internal-network/distributor/sinks/line-protocol.ts';
import { MEASUREMENTS, ONE_POINT_PER_MESSAGE, POINT_KEY, subMillisecondNs, type StoredPoint } from '../../internal-network/distributor/points.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { LIMITS } from '../../shared/limits.ts';

/** The client library's own Point, built as the sinks once did (at the request's precision, precisionOf): the oracle for our encoder. */
function libraryLine(p: StoredPoint): string | undefined {
  const point = new Point(p.measurement);
  for (const [key, value] of Object.entries(p.tags)) point.tag(key, value);
  for (const [key, value] of Object.entries(p.fields)) {
    if (typeof value === 'number') point.floatField(key, value);
    else if (typeof value === 'boolean') point.booleanField(key, value);
    else point.stringField(key, value);
  }
  return point.timestamp(precisionOf([p]) === 'ms' ? p.time : (BigInt(p.time) * 1_000_000n + BigInt(subMillisecondNs(p))).toString()).toLineProtocol();
}

// Text with every character line protocol escapes (space, comma, equals, quote, backslash, newline).
const text = fc.string({ unit: fc.constantFrom('a', 'Z', '0', ' ', ',', '=', '"', '\\', '\n', 'é', '_', '.'), maxLength: 12 });
const scalar = fc.oneof(fc.double({ noNaN: true, noDefaultInfinity: true }), fc.integer(), fc.boolean(), text);
const point = fc.record({
  measurement: text.filter((m) => m.length > 0),
  tags: fc.dictionary(text, text, { maxKeys: 4 }),
  fields: fc.dictionary(text, scalar, { maxKeys: 5 }),
  time: fc.integer({ min: 0, max: 8.64e15 }),
});

/**
 * A name the encoder refuses, said independently of it: a backslash before a comma, an equals sign, a
 * space or the end (it would escape the escaper's backslash or the separator after the name), or a
 * line break or tab (the library rewrites them).
 */
const hostile = (name: string) => /[\n\r\t]/.test(name) || /\\([ ,=]|$)/.test(name);
/** A field named as a tag the point is written with: InfluxQL would read the field for the tag. */
const tagAsField = (p: StoredPoint) => Object.entries(p.tags).some(([k, v]) => k !== '' && v !== '' && Object.hasOwn(p.fields, k));
const hostilePoint = (p: StoredPoint) =>
  hostile(p.measurement) || Object.entries(p.tags).some(([k, v]) => k !== '' && v !== '' && (hostile(k) || hostile(v))) || Object.keys(p.fields).some(hostile) || tagAsField(p);
const refusal = (p: StoredPoint) => {
  try {
    return toLine(p);
  } catch (err) {
    return err instanceof FieldStreamError ? `refused: ${err.code}` : `threw: ${String(err)}`;
  }
};

describe('line protocol', () => {
  it('writes what the client library writes, for any measurement, tags and fields it can carry unchanged, and refuses the others (coded)', () => {
    fc.assert(
      fc.property(point, (p) => assert.equal(refusal(p), hostilePoint(p) ? 'refused: DISTRIBUTOR_WRITE_REJECTED' : libraryLine(p))),
      { numRuns: 5000 },
    );
  });

  it('writes what the library writes when points repeat the shapes of others (remembered shapes), even shapes whose joined keys collide', () => {
    // Keys from a small pool, so that shapes repeat and are remembered; some hold the character the
    // remembered shapes are keyed by, so that two different shapes can share a key.
    const key = fc.constantFrom('a', 'b', 'c', 'a\u0000b', 'b\u0000c', 'x y', 'temperature');
    const repeating = fc.record({ measurement: fc.constant('readings'), tags: fc.constant({ device: 'd' }), fields: fc.dictionary(key, scalar, { maxKeys: 4 }), time: fc.integer({ min: 0, max: 1e13 }) });
    fc.assert(fc.property(fc.array(repeating, { maxLength: 20 }), (points) => points.forEach((p) => assert.equal(toLine(p), libraryLine(p)))), { numRuns: 2000 });
    const collide: StoredPoint[] = [
      { measurement: 'm', tags: {}, fields: { 'a\u0000b': 1, c: 2 }, time: 1 },
      { measurement: 'm', tags: {}, fields: { a: 3, 'b\u0000c': 4 }, time: 2 },
    ];
    for (const p of [...collide, ...collide]) assert.equal(toLine(p), libraryLine(p));
    // A shape too long to remember (LIMITS.lineProtocolShapeMaxChars) is encoded all the same.
    const long: StoredPoint = { measurement: 'm', tags: {}, fields: Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`field ${String(i).padStart(2, '0')}${'x'.repeat(60)}`, i])), time: 3 };
    assert.ok(Object.keys(long.fields).join('').length > LIMITS.lineProtocolShapeMaxChars);
    for (const p of [long, long]) assert.equal(toLine(p), libraryLine(p));
  });

  it('writes numbers as floats, booleans as T/F, strings quoted, and skips points without fields', () => {
    const reading: StoredPoint = { measurement: 'readings', tags: { device: 'sensor 1' }, fields: { t: 23, ok: true, note: 'say "hi"' }, time: 1704110400000 };
    const empty: StoredPoint = { measurement: 'readings', tags: { device: 'x' }, fields: {}, time: 1 };
    assert.equal(toLineProtocol([reading, empty, reading]), ['readings,device=sensor\\ 1 note="say \\"hi\\"",ok=T,t=23 1704110400000', 'readings,device=sensor\\ 1 note="say \\"hi\\"",ok=T,t=23 1704110400000'].join('\n'));
  });

  it('writes a request off the millisecond in nanoseconds: a point of a measurement kept per message at an offset its key fixes; readings alone in milliseconds', () => {
    // Any millisecond a Date holds, before the epoch too, with any offset: the integer it names.
    fc.assert(
      fc.property(fc.integer({ min: -8.64e15, max: 8.64e15 }), fc.integer({ min: 0, max: 999_999 }), (ms, ns) => {
        assert.equal(nanosecondTime(ms, ns), (BigInt(ms) * 1_000_000n + BigInt(ns)).toString());
      }),
      { numRuns: 5000 },
    );
    for (const [ms, ns] of [[0, 0], [0, 7], [-1, 0], [-1, 1], [-1, 999_999], [1, 0], [1, 1]] as const) assert.equal(nanosecondTime(ms, ns), (BigInt(ms) * 1_000_000n + BigInt(ns)).toString(), `${ms} ${ns}`);
    const at = Date.parse('2024-01-01T12:00:00Z');
    const keyed = (measurement: string, key: string): StoredPoint => ({ measurement, tags: { device: 'd' }, fields: { message: 'm' }, time: at, [POINT_KEY]: key });
    const timeOf = (p: StoredPoint, precision = precisionOf([p])) => BigInt((toLine(p, undefined, precision) as string).split(' ').at(-1) as string);
    for (const m of ONE_POINT_PER_MESSAGE) {
      assert.equal(precisionOf([keyed(m, 'k')]), 'ns', m);
      // The same message (a redelivery, a replay) is the same point; 2,000 others each a point of their own, all in the millisecond.
      assert.equal(toLine(keyed(m, 's:e1:1')), toLine(keyed(m, 's:e1:1')));
      const times = new Set(Array.from({ length: 2000 }, (_, i) => timeOf(keyed(m, `s:e1:${i}`))));
      assert.equal(times.size, 2000, m);
      for (const t of times) assert.ok(t >= BigInt(at) * 1_000_000n && t < BigInt(at + 1) * 1_000_000n, m);
    }
    // Readings merge by device and time, whatever their message: on the millisecond, and a request
    // of them alone (the hot path) is written in milliseconds as it always was. So are points without a key.
    const reading = keyed(MEASUREMENTS.readings, 's:e1:1');
    const unkeyed: StoredPoint = { measurement: MEASUREMENTS.events, tags: { device: 'd' }, fields: { message: 'm' }, time: at };
    assert.equal(precisionOf([reading, reading, unkeyed]), 'ms');
    assert.equal(timeOf(reading), BigInt(at));
    assert.equal(timeOf(unkeyed), BigInt(at));
    assert.equal(timeOf(reading, 'ns'), BigInt(at) * 1_000_000n);
    // In a request with an event, every line is in nanoseconds, the reading's on its millisecond.
    const run = [reading, keyed(MEASUREMENTS.events, 'm:a'), keyed(MEASUREMENTS.events, 'm:b'), reading];
    assert.equal(precisionOf(run), 'ns');
    assert.equal(toLineProtocol(run), run.map((p) => toLine(p, undefined, 'ns')).join('\n'));
    assert.ok(toLineProtocol(run).startsWith(`readings,device=d message="m" ${at}000000\n`));
  });

  it('refuses a number that is not finite (coded), in any field, never writing Infinity or NaN', () => {
    // Line protocol has no form for them: InfluxDB answers a batch holding `score=Infinity` 400.
    for (const bad of [Infinity, -Infinity, NaN]) {
      const p: StoredPoint = { measurement: 'anomalies', tags: { device: 'd', field_name: 'temp', detector: 'mad' }, fields: { score: bad, value: 1 }, time: 1 };
      assert.equal(refusal(p), 'refused: DISTRIBUTOR_WRITE_REJECTED', String(bad));
      assert.throws(() => toLineProtocol([{ ...p, fields: { score: 1 } }, p]), (err) => err instanceof FieldStreamError && err.code === 'DISTRIBUTOR_WRITE_REJECTED' && err.message.includes('"score"'));
    }
    // Whatever else the point holds, and wherever the field sorts among the others.
    fc.assert(
      fc.property(point, text.filter((k) => k !== '' && !hostile(k)), fc.constantFrom(Infinity, -Infinity, NaN), (p, key, bad) => {
        assert.equal(refusal({ ...p, fields: { ...p.fields, [key]: bad } }), 'refused: DISTRIBUTOR_WRITE_REJECTED');
      }),
      { numRuns: 1000 },
    );
  });

  it('refuses a string holding a lone UTF-16 surrogate (coded), which UTF-8 would carry as U+FFFD: stored changed, yet acknowledged', () => {
    // JSON's "\ud800" escape gives one, and the contract lets any string of its length through; the
    // request body is UTF-8, and InfluxDB 1.x stored the value as "a\ufffdb" (checked against it).
    for (const lone of ['a\ud800b', '\udfff', 'x\ud83d']) {
      const p: StoredPoint = { measurement: 'readings', tags: { device: 'd' }, fields: { note: lone, value: 1 }, time: 1 };
      assert.equal(refusal(p), 'refused: DISTRIBUTOR_WRITE_REJECTED', JSON.stringify(lone));
    }
    // A pair is a character: written as it is.
    assert.equal(toLine({ measurement: 'readings', tags: { device: 'd' }, fields: { note: 'a\ud83d\ude00b' }, time: 1 }), 'readings,device=d note="a\ud83d\ude00b" 1');
  });

  it('requestsOf: lines in order, each body (joined by newlines) within the bound in UTF-8 bytes and lines; a line over it alone, never cut', () => {
    fc.assert(
      fc.property(fc.array(fc.string({ unit: fc.constantFrom('a', 'é', '€', '𝄞', ' '), maxLength: 40 }), { maxLength: 60 }), fc.integer({ min: 1, max: 100 }), fc.integer({ min: 1, max: 10 }), (lines, maxBytes, maxLines) => {
        const requests = requestsOf(lines, maxBytes, maxLines);
        assert.deepEqual(requests.flat(), lines);
        for (const r of requests) {
          assert.ok(r.length >= 1 && r.length <= maxLines);
          if (r.length > 1) assert.ok(Buffer.byteLength(r.join('\n')) <= maxBytes, JSON.stringify(r));
        }
        // Greedy: the next request's first line did not fit in the one before.
        for (let i = 1; i < requests.length; i++) {
          const before = requests[i - 1] as string[];
          assert.ok(before.length === maxLines || Buffer.byteLength([...before, (requests[i] as string[])[0]].join('\n')) > maxBytes);
        }
      }),
      { numRuns: 500 },
    );
    assert.deepEqual(requestsOf([]), []);
    // 3 + 1 + 3 bytes: "ééé" is 6 bytes, alone in its request.
    assert.deepEqual(requestsOf(['abc', 'def', 'ééé', 'g'], 7), [['abc', 'def'], ['ééé'], ['g']]);
  });

  it('a string value of many escaped characters takes about its own size in memory, not a piece per character', () => {
    // Readings of the largest a device can send, 120 fields of 32 Ki backslashes (7.9 MB of JSON),
    // each escaped to 64 Ki characters. Escaped a character at a time, a line held 16 times its text
    // in memory (a piece of string per character, until it is read): a batch of 32 such messages, one
    // per consumer, needed over 4 GB and the distributor ran out of memory.
    const backslashes = '\\'.repeat(32 * 1024);
    const fields = Object.fromEntries(Array.from({ length: 120 }, (_, f) => [`s${f}`, backslashes]));
    const before = process.memoryUsage().heapUsed;
    const lines = toLines(Array.from({ length: 4 }, (_, i) => ({ measurement: 'readings', tags: { device: `d${i}` }, fields, time: 1_700_000_000_000 + i })));
    const grown = process.memoryUsage().heapUsed - before;
    const chars = lines.reduce((n, l) => n + l.length, 0);
    // Each backslash escaped: 2 × 32 Ki of them in each of the 120 values.
    assert.equal(lines[0]?.split('\\').length, 120 * 2 * 32 * 1024 + 1);
    assert.ok(grown < 5 * chars, `${Math.round(grown / 1e6)} MB held for ${Math.round(chars / 1e6)} MB of line protocol`);
  });
});
