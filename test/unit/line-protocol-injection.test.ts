import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { toLine, toLineProtocol } from '../../internal-network/distributor/sinks/line-protocol.ts';
import { eventPoints, type StoredPoint } from '../../internal-network/distributor/points.ts';
import { parseUplinkFrame } from '../../shared/contract/uplink.ts';
import { parseEnvelope, UplinkEnvelopeSchema, type EnvelopeOf } from '../../shared/contract/envelope.ts';
import { FieldStreamError } from '../../shared/errors.ts';

/** The review's forgery: a signed event whose extra key ends in a backslash, its value a line for another device. */
const FORGED_KEY = 'zz\\';
const FORGED_VALUE = '=1\nreadings,device=victim temperature=99 1700000000000\n#';

const codeOf = (f: () => unknown) => {
  try {
    f();
    return 'ok';
  } catch (err) {
    return err instanceof FieldStreamError ? err.code : `threw: ${String(err)}`;
  }
};

/**
 * InfluxDB's own line splitting and field scanning (models/points.go: scanLine, scanKey, scanFields),
 * ported as they are: the oracle for what the database will read in our text. Returns each line's
 * tag count and field count, or a reason the database would refuse the line.
 */
function influxRead(text: string): Array<{ tags: number; fields: number } | string> {
  const out: Array<{ tags: number; fields: number } | string> = [];
  let i = 0;
  while (i < text.length) {
    // scanLine: a newline ends the line unless inside a quoted field value
    const start = i;
    let quoted = false;
    let inFields = false;
    let equals = 0;
    let commas = 0;
    while (i < text.length) {
      if (text[i] === '\\' && i + 2 < text.length) {
        i += 2;
        continue;
      }
      if (text[i] === ' ') inFields = true;
      if (inFields) {
        if (!quoted && text[i] === '=') {
          i++;
          equals++;
          continue;
        } else if (!quoted && text[i] === ',') {
          i++;
          commas++;
          continue;
        } else if (text[i] === '"' && equals > commas) {
          i++;
          quoted = !quoted;
          continue;
        }
      }
      if (text[i] === '\n' && !quoted) break;
      i++;
    }
    out.push(readLine(text.slice(start, i)));
    i++;
  }
  return out;
}

function readLine(line: string): { tags: number; fields: number } | string {
  // scanKey: the measurement up to the first unescaped comma or space ("=" is no separator in it),
  // then the tags up to the first unescaped space
  let i = 0;
  for (; i < line.length && line[i] !== ' ' && line[i] !== ','; i++) if (line[i] === '\\') i++;
  if (i === 0) return 'no measurement';
  let tagCommas = 0;
  let tagEquals = 0;
  for (; i < line.length && line[i] !== ' '; i++) {
    if (line[i] === '\\') i++;
    else if (line[i] === ',') tagCommas++;
    else if (line[i] === '=') tagEquals++;
  }
  if (tagEquals !== tagCommas) return `series with ${tagCommas} tags and ${tagEquals} "="`;
  // scanFields: up to the next unescaped space outside a quoted value
  i++;
  let quoted = false;
  let equals = 0;
  let commas = 0;
  for (; i < line.length; i++) {
    if (line[i] === '\\' && i + 1 < line.length) {
      i++;
      continue;
    }
    if (line[i] === '"' && equals > commas) quoted = !quoted;
    else if (line[i] === '=' && !quoted) equals++;
    else if (line[i] === ',' && !quoted) commas++;
    else if (line[i] === ' ' && !quoted) break;
  }
  if (quoted || equals === 0 || commas !== equals - 1) return `fields with ${equals} "=" and ${commas} ","${quoted ? ', a quote left open' : ''}`;
  const time = line.slice(i + 1);
  if (!/^-?\d+$/.test(time)) return `time ${JSON.stringify(time)}`;
  return { tags: tagCommas, fields: equals };
}

const eventEnvelope = (payload: Record<string, unknown>) => ({
  v: 1,
  deviceId: 'mallory',
  dataType: 'event',
  gatewayId: 'gw',
  receivedAt: 1_700_000_000_000,
  messages: [{ messageId: 'm.1', payload }],
});

describe('line protocol injection', () => {
  it('the contract refuses an event key that is not a field name, at the gateway and again at the distributor', () => {
    const frame = JSON.stringify({ deviceId: 'mallory', dataType: 'event', payload: { eventType: 'x', [FORGED_KEY]: FORGED_VALUE } });
    assert.equal(codeOf(() => parseUplinkFrame(frame)), 'CONTRACT_INVALID_MESSAGE');
    assert.equal(codeOf(() => parseEnvelope(UplinkEnvelopeSchema, Buffer.from(JSON.stringify(eventEnvelope({ eventType: 'x', [FORGED_KEY]: FORGED_VALUE }))))), 'CONTRACT_INVALID_ENVELOPE');
    for (const key of ['a b', 'a,b', 'a=b', 'a\nb', '1abc', 'x'.repeat(129), '']) {
      assert.equal(codeOf(() => parseUplinkFrame(JSON.stringify({ deviceId: 'mallory', dataType: 'event', payload: { eventType: 'x', [key]: 1 } }))), 'CONTRACT_INVALID_MESSAGE', JSON.stringify(key));
    }
    // readings were held to the rule already; an ordinary event with extra fields still passes
    assert.equal(codeOf(() => parseUplinkFrame(JSON.stringify({ deviceId: 'mallory', dataType: 'timeseries', payload: { [FORGED_KEY]: 1 } }))), 'CONTRACT_INVALID_MESSAGE');
    assert.equal(codeOf(() => parseUplinkFrame(JSON.stringify({ deviceId: 'mallory', dataType: 'event', payload: { eventType: 'x', zone: 'a-1', count: 3, ok: true } }))), 'ok');
  });

  it('the encoder refuses the forged event, coded, whatever let it through', () => {
    // As if a compromised DMZ or any other path delivered it past the contract.
    const env = eventEnvelope({ eventType: 'x', [FORGED_KEY]: FORGED_VALUE }) as unknown as EnvelopeOf<'event'>;
    const points = eventPoints(env);
    assert.equal(codeOf(() => toLineProtocol(points)), 'DISTRIBUTOR_WRITE_REJECTED');
    for (const bad of ['a\\', 'a\\,b', 'a\\ b', 'a\\=b', 'a\nb', 'a\rb', 'a\tb']) {
      assert.equal(codeOf(() => toLine({ measurement: 'm', tags: {}, fields: { [bad]: 1 }, time: 1 })), 'DISTRIBUTOR_WRITE_REJECTED', `field key ${JSON.stringify(bad)}`);
      assert.equal(codeOf(() => toLine({ measurement: 'm', tags: { [bad]: 'v' }, fields: { f: 1 }, time: 1 })), 'DISTRIBUTOR_WRITE_REJECTED', `tag key ${JSON.stringify(bad)}`);
      assert.equal(codeOf(() => toLine({ measurement: 'm', tags: { device: bad }, fields: { f: 1 }, time: 1 })), 'DISTRIBUTOR_WRITE_REJECTED', `tag value ${JSON.stringify(bad)}`);
      assert.equal(codeOf(() => toLine({ measurement: bad, tags: {}, fields: { f: 1 }, time: 1 })), 'DISTRIBUTOR_WRITE_REJECTED', `measurement ${JSON.stringify(bad)}`);
    }
    // A field named as a tag of its point: InfluxQL's WHERE "device" = '…' then reads the field, so
    // a point of mallory with the field device="victim" would be listed as the victim's.
    assert.equal(codeOf(() => toLine({ measurement: 'readings', tags: { device: 'mallory' }, fields: { device: 'victim', t: 1 }, time: 1 })), 'DISTRIBUTOR_WRITE_REJECTED');
    assert.equal(codeOf(() => toLineProtocol(eventPoints(eventEnvelope({ eventType: 'x', event_type: 'y' }) as unknown as EnvelopeOf<'event'>))), 'DISTRIBUTOR_WRITE_REJECTED');
    // The same value under an ordinary key is one line: a quoted string may hold a newline.
    const line = toLine({ measurement: 'events', tags: { device: 'mallory' }, fields: { zz: FORGED_VALUE }, time: 1 }) as string;
    assert.deepEqual(influxRead(line), [{ tags: 1, fields: 1 }]);
  });

  it('never writes a line whose structure a key, tag value or string value changes: one line per point, with its tags and fields, or a coded refusal', () => {
    const hostileText = fc.string({ unit: fc.constantFrom('a', '0', ' ', ',', '=', '"', '\\', '\n', '\r', '\t', '#', 'é'), maxLength: 10 });
    const name = hostileText.filter((s) => s.length > 0);
    const scalar = fc.oneof(fc.double({ noNaN: true, noDefaultInfinity: true }), fc.boolean(), hostileText);
    const points = fc.array(
      fc.record({
        measurement: name,
        tags: fc.dictionary(name, name, { maxKeys: 3 }),
        fields: fc.dictionary(name, scalar, { minKeys: 1, maxKeys: 4 }),
        time: fc.integer({ min: 0, max: 8.64e15 }),
      }),
      { minLength: 1, maxLength: 3 },
    );
    fc.assert(
      fc.property(points, (pts: StoredPoint[]) => {
        let text: string;
        try {
          text = toLineProtocol(pts);
        } catch (err) {
          assert.ok(err instanceof FieldStreamError && err.code === 'DISTRIBUTOR_WRITE_REJECTED', String(err));
          return;
        }
        assert.deepEqual(
          influxRead(text),
          pts.map((p) => ({ tags: Object.keys(p.tags).length, fields: Object.keys(p.fields).length })),
          text,
        );
      }),
      { numRuns: 5000 },
    );
  });
});
