import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Point } from '@influxdata/influxdb-client';
import fc from 'fast-check';
import { toLine, toLineProtocol } from '../../internal-network/distributor/sinks/line-protocol.ts';
import type { StoredPoint } from '../../internal-network/distributor/points.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { LIMITS } from '../../shared/limits.ts';

/** The client library's own Point, built as the sinks once did: the oracle for our encoder. */
function libraryLine(p: StoredPoint): string | undefined {
  const point = new Point(p.measurement);
  for (const [key, value] of Object.entries(p.tags)) point.tag(key, value);
  for (const [key, value] of Object.entries(p.fields)) {
    if (typeof value === 'number') point.floatField(key, value);
    else if (typeof value === 'boolean') point.booleanField(key, value);
    else point.stringField(key, value);
  }
  return point.timestamp(p.time).toLineProtocol();
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
});
