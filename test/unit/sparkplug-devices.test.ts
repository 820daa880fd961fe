import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SparkplugHost, type HostOutcome } from '../../field-client/src/inputs/sparkplug/host.ts';
import { decodePayload, type SparkplugPayload } from '../../field-client/src/inputs/sparkplug/payload.ts';
import { DATA_TYPES as T, encodeWire } from '../../field-client/src/inputs/sparkplug/proto.ts';
import { SparkplugSession } from '../../field-client/src/inputs/sparkplug/session.ts';
import { parseTopic, type SparkplugTopic } from '../../field-client/src/inputs/sparkplug/topic.ts';
import type { Submission } from '../../field-client/src/client-options.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';

/**
 * Devices per edge node are bounded (LIMITS.sparkplugMaxDevicesPerNode): a DBIRTH of one more new
 * device id is refused with SPARKPLUG_TOO_MANY_DEVICES, without a gap or a rebirth request; a
 * device already born may be born again, and a DDEATH frees a place.
 */
const T0 = 1_700_000_000_000;
function topic(s: string): SparkplugTopic {
  const t = parseTopic(s);
  assert.ok(t && t !== 'state', s);
  return t;
}
const msg = (o: Record<string, unknown>) => decodePayload(encodeWire(o));
// One payload per seq, built once: the loop below reuses them for every device id.
const dbirths: SparkplugPayload[] = Array.from({ length: 256 }, (_, seq) => msg({ seq: String(seq), metrics: [{ name: 'Temp', datatype: T.Double, doubleValue: 1 }] }));
const ddeaths: SparkplugPayload[] = Array.from({ length: 256 }, (_, seq) => msg({ seq: String(seq) }));

describe('Sparkplug devices per edge node', () => {
  it('takes LIMITS.sparkplugMaxDevicesPerNode devices, refuses one more with SPARKPLUG_TOO_MANY_DEVICES, and goes on', () => {
    const host = new SparkplugHost({ rebirthMinIntervalMs: 5_000 });
    const nbirth = msg({ seq: '0', metrics: [{ name: 'bdSeq', datatype: T.UInt64, longValue: '0' }] });
    assert.equal(host.handle(topic('spBv1.0/G/NBIRTH/E'), nbirth, T0).refused, undefined);
    let seq = 0;
    const next = () => (seq = (seq + 1) % 256);
    for (let i = 0; i < LIMITS.sparkplugMaxDevicesPerNode; i++) {
      const out = host.handle(topic(`spBv1.0/G/DBIRTH/E/d${i}`), dbirths[next()] as SparkplugPayload, T0);
      assert.equal(out.refused, undefined, `device ${i}`);
    }
    const over = host.handle(topic('spBv1.0/G/DBIRTH/E/one-more'), dbirths[next()] as SparkplugPayload, T0);
    assert.equal(over.refused?.code, 'SPARKPLUG_TOO_MANY_DEVICES');
    assert.equal(over.readings.length, 0);
    assert.equal(over.rebirth, false);
    assert.equal(host.session('G', 'E')?.devices.size, LIMITS.sparkplugMaxDevicesPerNode);
    assert.equal(host.session('G', 'E')?.stale, false, 'the refused birth took its seq: no gap');
    // A device already born is born again; a death frees a place for a new one.
    assert.equal(host.handle(topic('spBv1.0/G/DBIRTH/E/d0'), dbirths[next()] as SparkplugPayload, T0).refused, undefined);
    assert.equal(host.handle(topic('spBv1.0/G/DDEATH/E/d1'), ddeaths[next()] as SparkplugPayload, T0).refused, undefined);
    assert.equal(host.handle(topic('spBv1.0/G/DBIRTH/E/one-more'), dbirths[next()] as SparkplugPayload, T0).refused, undefined);
  });
});

describe('Sparkplug births refused for what they hold', () => {
  const nb = (seq: number, metrics: unknown[] = []) => msg({ timestamp: String(T0), seq: String(seq), metrics: [{ name: 'bdSeq', datatype: T.UInt64, longValue: '0' }, ...metrics] });
  const dbirth = (seq: number, metrics: unknown[]) => msg({ timestamp: String(T0), seq: String(seq), metrics });

  it('a refused DBIRTH drops the old one: its DDATA is not stored under the old names, and a rebirth is asked for', () => {
    const host = new SparkplugHost({ rebirthMinIntervalMs: 5_000 });
    host.handle(topic('spBv1.0/G/NBIRTH/E'), nb(0), T0);
    const first = dbirth(1, [{ name: 'Temp', alias: '1', datatype: T.Double, doubleValue: 20 }, { name: 'Pressure', alias: '2', datatype: T.Double, doubleValue: 1 }]);
    assert.equal(host.handle(topic('spBv1.0/G/DBIRTH/E/D'), first, T0).refused, undefined);
    // Born again with its aliases swapped, one metric without its data type: refused.
    const bad = host.handle(topic('spBv1.0/G/DBIRTH/E/D'), dbirth(2, [{ name: 'Pressure', alias: '1', datatype: T.Double, doubleValue: 2 }, { name: 'Temp', alias: '2', doubleValue: 21 }]), T0 + 1);
    assert.equal(bad.refused?.code, 'SPARKPLUG_PAYLOAD_INVALID');
    assert.equal(bad.rebirth, true, 'the edge node is asked to rebirth (NCMD Node Control/Rebirth)');
    // Alias 1 is Pressure now: refused, not stored as Temp.
    const ddata = host.handle(topic('spBv1.0/G/DDATA/E/D'), msg({ timestamp: String(T0 + 2), seq: '3', metrics: [{ alias: '1', doubleValue: 5 }] }), T0 + 2);
    assert.equal(ddata.refused?.code, 'SPARKPLUG_NOT_BORN');
    assert.deepEqual(ddata.readings, []);
    // The edge node's own data and its other devices go on; a valid DBIRTH brings the device back.
    assert.equal(host.session('G', 'E')?.stale, false);
    assert.equal(host.handle(topic('spBv1.0/G/DBIRTH/E/D'), dbirth(4, [{ name: 'Pressure', alias: '1', datatype: T.Double, doubleValue: 2 }]), T0 + 3).refused, undefined);
    assert.deepEqual(host.handle(topic('spBv1.0/G/DDATA/E/D'), msg({ timestamp: String(T0 + 4), seq: '5', metrics: [{ alias: '1', doubleValue: 5 }] }), T0 + 4).readings, [{ 'G.E.D.Pressure': 5, timestamp: T0 + 4 }]);
  });

  it('a refused NBIRTH ends the old session: its data is refused until a valid NBIRTH, and a rebirth is asked for', () => {
    const host = new SparkplugHost({ rebirthMinIntervalMs: 5_000 });
    host.handle(topic('spBv1.0/G/NBIRTH/E'), nb(0, [{ name: 'Temp', alias: '1', datatype: T.Double, doubleValue: 20 }]), T0);
    const bad = host.handle(topic('spBv1.0/G/NBIRTH/E'), nb(0, [{ name: 'Pressure', alias: '1', doubleValue: 2 }]), T0 + 1);
    assert.equal(bad.refused?.code, 'SPARKPLUG_PAYLOAD_INVALID');
    assert.equal(bad.rebirth, true);
    const ndata = host.handle(topic('spBv1.0/G/NDATA/E'), msg({ timestamp: String(T0 + 2), seq: '1', metrics: [{ alias: '1', doubleValue: 5 }] }), T0 + 2);
    assert.equal(ndata.refused?.code, 'SPARKPLUG_NOT_BORN');
    assert.deepEqual(ndata.readings, []);
    assert.equal(host.handle(topic('spBv1.0/G/NBIRTH/E'), nb(0, [{ name: 'Pressure', alias: '1', datatype: T.Double, doubleValue: 2 }]), T0 + 3).refused, undefined);
  });
});

describe('Sparkplug birth definitions bounded in bytes', () => {
  // 10 metrics of 200-character names: a few KiB of definitions per device.
  const names = (tag: string) => Array.from({ length: 10 }, (_, i) => ({ name: `${tag}-${i}-`.padEnd(200, 'x'), alias: String(i), datatype: T.Double, doubleValue: 1 }));
  const nb = (seq: number) => msg({ timestamp: String(T0), seq: String(seq), metrics: [{ name: 'bdSeq', datatype: T.UInt64, longValue: '0' }] });
  const db = (seq: number, tag: string) => msg({ timestamp: String(T0), seq: String(seq), metrics: names(tag) });

  it('refuses a birth that would hold more than the bound (SPARKPLUG_DEFINITIONS_FULL, no rebirth asked), and frees what deaths and new births replace', () => {
    const max = 20_000;
    const host = new SparkplugHost({ rebirthMinIntervalMs: 5_000, maxDefinitionsBytes: max });
    assert.equal(host.handle(topic('spBv1.0/G/NBIRTH/E'), nb(0), T0).refused, undefined);
    let seq = 0;
    let born = 0;
    let over;
    for (;;) {
      over = host.handle(topic(`spBv1.0/G/DBIRTH/E/d${born}`), db(++seq, `d${born}`), T0);
      if (over.refused) break;
      born++;
      assert.ok(born < 100, 'the bound never refused a birth');
    }
    assert.ok(born >= 2, `only ${born} devices born under ${max} bytes`);
    assert.equal(over.refused.code, 'SPARKPLUG_DEFINITIONS_FULL');
    assert.equal(over.rebirth, false, 'a birth past a bound would come back the same');
    assert.deepEqual(over.readings, []);
    assert.ok(host.definitionsBytes <= max, `${host.definitionsBytes} bytes held`);
    const full = host.definitionsBytes;
    // A device already born is born again in its own place; a death frees one for a new device.
    assert.equal(host.handle(topic('spBv1.0/G/DBIRTH/E/d0'), db(++seq, 'd0'), T0).refused, undefined);
    assert.equal(host.definitionsBytes, full);
    assert.equal(host.handle(topic('spBv1.0/G/DDEATH/E/d1'), ddeaths[++seq] as SparkplugPayload, T0).refused, undefined);
    assert.ok(host.definitionsBytes < full);
    // (an id as long as d1's: a device's id is counted with it)
    assert.equal(host.handle(topic('spBv1.0/G/DBIRTH/E/dN'), db(++seq, 'dX'), T0).refused, undefined);
    assert.equal(host.definitionsBytes, full);
    // The edge node's next NBIRTH ends its devices' births: everything they held is freed.
    assert.equal(host.handle(topic('spBv1.0/G/NBIRTH/E'), nb(0), T0).refused, undefined);
    assert.ok(host.definitionsBytes < 1_000, `${host.definitionsBytes} bytes held after the NBIRTH`);
  });

  it('counts what each device born takes, its id too: DBIRTHs that declare no metric are bounded as well', () => {
    const max = 200_000;
    const host = new SparkplugHost({ rebirthMinIntervalMs: 5_000, maxDefinitionsBytes: max });
    assert.equal(host.handle(topic('spBv1.0/G/NBIRTH/E'), nb(0), T0).refused, undefined);
    const node = host.definitionsBytes;
    // Device ids of 255 characters (topic.ts allows 256), births of no metric: each held in memory
    // (about 800 bytes on Node 20) whatever they declare.
    const id = (i: number) => `${i}-`.padEnd(255, 'd');
    const empty = (seq: number) => msg({ timestamp: String(T0), seq: String(seq % 256), metrics: [] });
    let seq = 0;
    let born = 0;
    let over;
    for (; born <= LIMITS.sparkplugMaxDevicesPerNode; born++) {
      over = host.handle(topic(`spBv1.0/G/DBIRTH/E/${id(born)}`), empty(++seq), T0);
      if (over.refused) break;
      if (born === 0) assert.ok(host.definitionsBytes - node >= 2 * id(0).length, `a device born counted ${host.definitionsBytes - node} bytes`);
    }
    assert.equal(over?.refused?.code, 'SPARKPLUG_DEFINITIONS_FULL', `${born} devices born, ${host.definitionsBytes} bytes counted`);
    assert.ok(born < LIMITS.sparkplugMaxDevicesPerNode, `${born} devices born under ${max} bytes`);
    assert.ok(host.definitionsBytes <= max, `${host.definitionsBytes} bytes held`);
    assert.equal(host.session('G', 'E')?.stale, false, 'the refused birth took its seq: no gap');
    // A death frees the room of one.
    assert.equal(host.handle(topic(`spBv1.0/G/DDEATH/E/${id(0)}`), ddeaths[++seq % 256] as SparkplugPayload, T0).refused, undefined);
    assert.equal(host.handle(topic(`spBv1.0/G/DBIRTH/E/${id(born)}`), empty(++seq), T0).refused, undefined);
  });

  it('bounds births over every edge node, and a birth undone gives its bytes back', () => {
    const host = new SparkplugHost({ rebirthMinIntervalMs: 5_000, maxDefinitionsBytes: 20_000 });
    let refused;
    for (let e = 0; e < 100 && !refused; e++) {
      host.handle(topic(`spBv1.0/G/NBIRTH/E${e}`), nb(0), T0);
      refused = host.handle(topic(`spBv1.0/G/DBIRTH/E${e}/d`), db(1, `e${e}`), T0).refused;
    }
    assert.equal(refused?.code, 'SPARKPLUG_DEFINITIONS_FULL');
    host.handle(topic('spBv1.0/G/NDEATH/E0'), msg({ metrics: [{ name: 'bdSeq', datatype: T.UInt64, longValue: '0' }] }), T0);
    const before = host.definitionsBytes;
    const birth = host.handle(topic('spBv1.0/G/NBIRTH/E0'), nb(0), T0);
    const d = host.handle(topic('spBv1.0/G/DBIRTH/E0/d'), db(1, 'again'), T0);
    assert.equal(d.refused, undefined);
    assert.ok(host.definitionsBytes > before);
    // The queue refused what they carried: both undone, latest first, and their bytes with them.
    d.undo?.();
    birth.undo?.();
    assert.equal(host.definitionsBytes, before);
  });

  it("bounds each edge node's definitions to its share (SPARKPLUG_EDGE_NODE_DEFINITIONS_FULL), leaving the rest to the others", () => {
    const share = 20_000;
    const host = new SparkplugHost({ rebirthMinIntervalMs: 5_000, maxDefinitionsBytes: 200_000, maxDefinitionsBytesPerNode: share });
    assert.equal(host.handle(topic('spBv1.0/G/NBIRTH/E'), nb(0), T0).refused, undefined);
    let seq = 0;
    let over;
    for (let i = 0; i < 100 && !over?.refused; i++) over = host.handle(topic(`spBv1.0/G/DBIRTH/E/d${i}`), db(++seq, `d${i}`), T0);
    assert.equal(over?.refused?.code, 'SPARKPLUG_EDGE_NODE_DEFINITIONS_FULL', `${host.definitionsBytes} bytes held`);
    assert.equal(over?.rebirth, false, 'a birth past a bound would come back the same');
    assert.ok(host.definitionsBytes <= share, `${host.definitionsBytes} bytes held by one edge node`);
    // Another edge node's births are taken: the overall budget is far from full.
    assert.equal(host.handle(topic('spBv1.0/G/NBIRTH/F'), nb(0), T0).refused, undefined);
    assert.equal(host.handle(topic('spBv1.0/G/DBIRTH/F/d'), db(1, 'f'), T0).refused, undefined);
    // An NBIRTH larger than the share alone is refused too.
    const big = msg({ timestamp: String(T0), seq: '0', metrics: [{ name: 'bdSeq', datatype: T.UInt64, longValue: '0' }, ...Array.from({ length: 5 }, (_, i) => names(`n${i}`)).flat().map((m, i) => ({ ...m, alias: String(i) }))] });
    assert.equal(host.handle(topic('spBv1.0/G/NBIRTH/H'), big, T0).refused?.code, 'SPARKPLUG_EDGE_NODE_DEFINITIONS_FULL');
  });
});

describe('Sparkplug rebirth requests after a birth refused for a bound', () => {
  const INTERVAL = 5_000;
  const nb = (seq: number, bd = 0) => msg({ timestamp: String(T0), seq: String(seq), metrics: [{ name: 'bdSeq', datatype: T.UInt64, longValue: String(bd) }] });
  const data = (seq: number) => msg({ timestamp: String(T0), seq: String(seq), metrics: [{ name: 'Temp', doubleValue: 2 }] });

  it("a device refused for the device bound: its data asks for no rebirth, which would bring the same births, until the bound's hold-off is over", () => {
    const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL, maxDevicesPerNode: 1 });
    assert.equal(host.handle(topic('spBv1.0/G/NBIRTH/E'), nb(0), T0).refused, undefined);
    assert.equal(host.handle(topic('spBv1.0/G/DBIRTH/E/d0'), dbirths[1] as SparkplugPayload, T0).refused, undefined);
    const over = host.handle(topic('spBv1.0/G/DBIRTH/E/d1'), dbirths[2] as SparkplugPayload, T0);
    assert.equal(over.refused?.code, 'SPARKPLUG_TOO_MANY_DEVICES');
    assert.equal(over.rebirth, false);
    // Its data is refused (not born), but a rebirth would only bring the refused DBIRTH again, and
    // with it every birth of the edge node and their values: one every rebirth interval, for ever.
    let seq = 2;
    for (const at of [T0 + 1, T0 + INTERVAL + 1, T0 + 10 * INTERVAL]) {
      const ddata = host.handle(topic('spBv1.0/G/DDATA/E/d1'), data(++seq), at);
      assert.equal(ddata.refused?.code, 'SPARKPLUG_NOT_BORN');
      assert.equal(ddata.rebirth, false, `a rebirth asked ${at - T0} ms after the refused birth`);
    }
    // The device born goes on.
    assert.deepEqual(host.handle(topic('spBv1.0/G/DDATA/E/d0'), data(++seq), T0 + 10 * INTERVAL).readings, [{ 'G.E.d0.Temp': 2, timestamp: T0 }]);
    // Once the hold-off is over, asked again: a death may have made room since.
    const later = host.handle(topic('spBv1.0/G/DDATA/E/d1'), data(++seq), T0 + TIMINGS.sparkplugRebirthAfterBoundMs);
    assert.equal(later.refused?.code, 'SPARKPLUG_NOT_BORN');
    assert.equal(later.rebirth, true);
  });

  it('an edge node refused for the edge node bound: its data asks for no rebirth until the hold-off is over; a gap after its next birth asks at once', () => {
    const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL, maxEdgeNodes: 1 });
    assert.equal(host.handle(topic('spBv1.0/G/NBIRTH/A'), nb(0), T0).refused, undefined);
    const over = host.handle(topic('spBv1.0/G/NBIRTH/B'), nb(0), T0);
    assert.equal(over.refused?.code, 'SPARKPLUG_TOO_MANY_EDGE_NODES');
    assert.equal(over.rebirth, false);
    for (const [seq, at] of [[1, T0 + 1], [2, T0 + INTERVAL + 1], [3, T0 + 10 * INTERVAL]] as const) {
      const ndata = host.handle(topic('spBv1.0/G/NDATA/B'), data(seq), at);
      assert.equal(ndata.refused?.code, 'SPARKPLUG_NOT_BORN');
      assert.equal(ndata.rebirth, false, `a rebirth asked ${at - T0} ms after the refused birth`);
    }
    // A has died meanwhile; once the hold-off is over B is asked, and born.
    host.handle(topic('spBv1.0/G/NDEATH/A'), msg({ metrics: [{ name: 'bdSeq', datatype: T.UInt64, longValue: '0' }] }), T0 + 20 * INTERVAL);
    const t1 = T0 + TIMINGS.sparkplugRebirthAfterBoundMs;
    assert.equal(host.handle(topic('spBv1.0/G/NDATA/B'), data(4), t1).rebirth, true);
    assert.equal(host.handle(topic('spBv1.0/G/NBIRTH/B'), nb(0, 1), t1 + 1).refused, undefined);
    // Born, it is any edge node again: a gap, and the data after it, ask at the usual pace.
    const gap = host.handle(topic('spBv1.0/G/NDATA/B'), data(5), t1 + INTERVAL);
    assert.equal(gap.refused?.code, 'SPARKPLUG_SEQ_GAP');
    assert.equal(gap.rebirth, true);
    assert.equal(host.handle(topic('spBv1.0/G/NDATA/B'), data(6), t1 + 2 * INTERVAL).rebirth, true);
  });
});

describe('Sparkplug rebirth requests after births refused again and again', () => {
  const INTERVAL = 5_000;
  const HOUR = 3_600_000;
  const bd = { name: 'bdSeq', datatype: T.UInt64, longValue: '0' };
  const temp = { name: 'Temp', alias: '1', datatype: T.Double, doubleValue: 1 };
  const goodNBirth = () => msg({ timestamp: String(T0), seq: '0', metrics: [bd, temp] });
  const goodDBirth = () => msg({ timestamp: String(T0), seq: '1', metrics: [temp] });
  const data = (seq: number) => msg({ timestamp: String(T0), seq: String(seq % 256), metrics: [{ alias: '1', doubleValue: 2 }] });
  const undecodable = (): FieldStreamError => {
    try {
      decodePayload(Uint8Array.from([0x0a, 0xff, 0xff, 0xff]));
    } catch (err) {
      if (err instanceof FieldStreamError) return err;
    }
    throw new Error('decoded');
  };

  /** How an edge node sends its births, one of them refused each time, and what its data is. */
  interface Node {
    /** its NBIRTH (and DBIRTH) at `now`, `good` or as it keeps sending them: whether a rebirth was asked, and the last seq */
    birth(host: SparkplugHost, now: number, good: boolean): { out: HostOutcome; seq: number };
    data: SparkplugTopic;
  }
  const kinds: Array<[string, Node]> = [
    [
      'an NBIRTH that cannot be decoded',
      {
        birth: (host, now, good) => ({ out: good ? host.handle(topic('spBv1.0/G/NBIRTH/E'), goodNBirth(), now) : host.unreadableBirth(topic('spBv1.0/G/NBIRTH/E'), undecodable(), now), seq: 0 }),
        data: topic('spBv1.0/G/NDATA/E'),
      },
    ],
    [
      'an NBIRTH without its bdSeq',
      {
        birth: (host, now, good) => ({ out: host.handle(topic('spBv1.0/G/NBIRTH/E'), good ? goodNBirth() : msg({ timestamp: String(T0), seq: '0', metrics: [temp] }), now), seq: 0 }),
        data: topic('spBv1.0/G/NDATA/E'),
      },
    ],
    [
      'a DBIRTH declaring a metric without its data type',
      {
        birth: (host, now, good) => {
          const n = host.handle(topic('spBv1.0/G/NBIRTH/E'), goodNBirth(), now);
          assert.equal(n.refused, undefined);
          const d = host.handle(topic('spBv1.0/G/DBIRTH/E/D'), good ? goodDBirth() : msg({ timestamp: String(T0), seq: '1', metrics: [{ name: 'Temp', alias: '1', doubleValue: 1 }] }), now);
          return { out: { ...d, rebirth: n.rebirth || d.rebirth }, seq: 1 };
        },
        data: topic('spBv1.0/G/DDATA/E/D'),
      },
    ],
  ];

  /**
   * The edge node sends data every second and answers each rebirth request at once with the same
   * refused birth, from `from` for `ms`: the times it was asked at.
   */
  function run(host: SparkplugHost, node: Node, from: number, ms: number): number[] {
    const asked: number[] = [];
    let b = node.birth(host, from, false);
    assert.ok(b.out.refused, 'the birth is refused');
    let seq = b.seq;
    let pending = b.out.rebirth;
    if (pending) asked.push(from);
    for (let now = from + 1_000; now < from + ms; now += 1_000) {
      if (pending) {
        b = node.birth(host, now, false);
        assert.ok(b.out.refused, 'the birth is refused');
        seq = b.seq;
        pending = b.out.rebirth;
      } else {
        const out = host.handle(node.data, data(++seq), now);
        assert.equal(out.refused?.code, 'SPARKPLUG_NOT_BORN');
        pending = out.rebirth;
      }
      if (pending) asked.push(now);
    }
    return asked;
  }

  for (const [name, node] of kinds) {
    it(`${name}, sent again at each rebirth: asked at once, then less and less often, and a good birth is taken at once; only a while without a refusal starts again`, () => {
      const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL });
      const asked = run(host, node, T0, HOUR);
      const gaps = asked.slice(1).map((at, i) => at - (asked[i] as number));
      // A birth lost or corrupted once is asked again at the usual pace.
      assert.ok(asked.length >= 3 && (asked[0] as number) - T0 <= 2_000 && (gaps[0] as number) <= INTERVAL + 2_000, `asked at ${asked.map((a) => a - T0).join(', ')}`);
      // Then the edge node, which sends the same refused birth each time, is asked less and less
      // often, up to the bounds' hold-off: at every interval it sent every birth again for ever.
      for (let i = 1; i < gaps.length; i++) assert.ok((gaps[i] as number) >= (gaps[i - 1] as number) - 1_000, `gaps ${gaps.slice(0, 20).join(', ')}${gaps.length > 20 ? ', ...' : ''}`);
      assert.ok((gaps.at(-1) as number) >= TIMINGS.sparkplugRebirthAfterBoundMs, `gaps ${gaps.slice(0, 20).join(', ')}${gaps.length > 20 ? ', ...' : ''}`);
      assert.ok(asked.length <= 25, `${asked.length} rebirths asked in an hour`);
      // Fixed (or restarted), it is born at once, and its data read.
      const now = T0 + HOUR + 1;
      const fixed = node.birth(host, now, true);
      assert.equal(fixed.out.refused, undefined);
      assert.deepEqual(host.handle(node.data, data(fixed.seq + 1), now).readings.length, 1);
      // A good exchange does not end the back-off: the same refused birth again soon after is held off.
      assert.deepEqual(run(host, node, now + 1_000, 2 * INTERVAL), []);
      // Nothing refused for the longest hold-off and as long again after it starts the count again:
      // the next refused one is asked again at once.
      const quiet = now + 1_000 + 2 * TIMINGS.sparkplugRebirthAfterBoundMs;
      const again = run(host, node, quiet, 2 * INTERVAL);
      assert.ok(again.length >= 1 && (again[0] as number) - quiet <= 2_000, `asked at ${again.map((a) => a - quiet).join(', ')}`);
    });
  }
});

describe('Sparkplug rebirth requests that a rebirth does not answer', () => {
  const INTERVAL = TIMINGS.sparkplugRebirthMinIntervalMs;
  const HOUR = 3_600_000;
  const silent = createLogger('test', 'silent');
  const temp = { name: 'Temp', alias: '1', datatype: T.Double, doubleValue: 1 };
  const pressure = { name: 'Pressure', alias: '2', datatype: T.Double, doubleValue: 1 };
  /** A message of the edge node, its bytes for its seq and the time it is sent at. */
  type Msg = [topic: string, bytes: (seq: number, now: number) => Uint8Array];
  const nbirth = (bd: number): Msg => ['spBv1.0/G/NBIRTH/E', (_, now) => encodeWire({ timestamp: String(now), seq: '0', metrics: [{ name: 'bdSeq', datatype: T.UInt64, longValue: String(bd) }, temp] })];
  const dbirth = (good: boolean): Msg => [
    'spBv1.0/G/DBIRTH/E/D',
    // Not good: a String value longer than a payload may hold, refused while decoding (payload.ts).
    (seq, now) => encodeWire({ timestamp: String(now), seq: String(seq), metrics: good ? [temp, pressure] : [temp, pressure, { name: 'Notes', datatype: T.String, stringValue: 'x'.repeat(LIMITS.stringMaxChars + 1) }] }),
  ];
  const ndata = (metric: Record<string, unknown> = { alias: '1', doubleValue: 2 }): Msg => ['spBv1.0/G/NDATA/E', (seq, now) => encodeWire({ timestamp: String(now), seq: String(seq), metrics: [metric] })];
  const ddata = (metric: Record<string, unknown> = { alias: '2', doubleValue: 3 }): Msg => ['spBv1.0/G/DDATA/E/D', (seq, now) => encodeWire({ timestamp: String(now), seq: String(seq), metrics: [metric] })];

  /** An edge node with a device D: what it sends each second, the births it answers a rebirth request with. */
  interface Node {
    births: Msg[];
    every: Msg[];
    /** whether its first message of second `i` is lost on the way (QoS 0): its seq is taken all the same */
    lost?: (i: number) => boolean;
  }

  /** The field client's Sparkplug input with edge node G/E on it: the rebirth requests it sends, and what it queues. */
  function input() {
    const queued: Submission[] = [];
    const asked: number[] = [];
    const clock = { now: T0 };
    const session = new SparkplugSession({ submitMany: async (items: Submission[]) => (queued.push(...items), []) }, (topic) => topic === 'spBv1.0/G/NCMD/E' && asked.push(clock.now), silent);
    let seq = 0;
    /**
     * Edge node `node` from `from` for `ms`, data every second; with `born`, it starts with its
     * births, and it answers each rebirth request the second after with them (§5.12).
     */
    async function run(node: Node, from: number, ms: number, born = true): Promise<void> {
      let rebirth = born;
      for (let i = 0, now = from; now < from + ms; i++, now += 1_000) {
        clock.now = now;
        const before = asked.length;
        const send = async ([topic, bytes]: Msg, lost = false) => {
          if (!lost) await session.onMessage(topic, bytes(seq, now), now);
          seq = (seq + 1) % 256;
        };
        if (rebirth) {
          seq = 0;
          for (const m of node.births) await send(m);
        }
        for (const [j, m] of node.every.entries()) await send(m, j === 0 && node.lost?.(i));
        rebirth = asked.length > before;
      }
    }
    return { session, queued, asked, run };
  }

  /** Asked at once and again at the usual pace (a one-off), then less and less often, up to the bounds' hold-off. */
  function backsOff(asked: number[], from: number): void {
    const gaps = asked.slice(1).map((at, i) => at - (asked[i] as number));
    const shown = `asked at ${asked.slice(0, 20).map((a) => (a - from) / 1_000).join(', ')}${asked.length > 20 ? ', ...' : ''} s`;
    assert.ok(asked.length >= 3 && (asked[0] as number) - from <= 2_000 && (gaps[0] as number) <= INTERVAL + 2_000, shown);
    for (let i = 1; i < gaps.length; i++) assert.ok((gaps[i] as number) >= (gaps[i - 1] as number) - 1_000, shown);
    assert.ok((gaps.at(-1) as number) >= TIMINGS.sparkplugRebirthAfterBoundMs, shown);
    assert.ok(asked.length <= 25, `${asked.length} rebirths asked in an hour: ${shown}`);
  }

  /**
   * The edge node, fixed (restarted) at `at` after being refused again and again: born and its data
   * read, nothing asked. A good exchange does not end the back-off (a message taken between two
   * refused is the loop it is for): `bad` again soon after, from its births, is held off. Nothing
   * refused for the longest hold-off and as long again after it does: `bad` again is asked at once.
   */
  async function recovers(t: ReturnType<typeof input>, good: Node, bad: Node, at: number): Promise<void> {
    const { asked, queued, run } = t;
    asked.length = 0;
    await run(good, at, 10_000);
    assert.deepEqual(asked, []);
    assert.ok(queued.some((q) => (q.payload as Record<string, unknown>)['G.E.D.Pressure'] === 3));
    await run(bad, at + 10_000, 2_000);
    assert.deepEqual(asked, [], 'asked at once after one good exchange');
    const quiet = at + 12_000 + 2 * TIMINGS.sparkplugRebirthAfterBoundMs;
    await run(good, at + 12_000, quiet - (at + 12_000));
    assert.deepEqual(asked, []);
    await run(bad, quiet, 2_000);
    assert.deepEqual(asked, [quiet]);
  }

  const badData: Array<[string, Msg[]]> = [
    ['NDATA naming an alias its birth did not declare', [ndata({ alias: '9', doubleValue: 2 })]],
    ['DDATA naming a metric by its name and the alias of another', [ndata(), ddata({ name: 'Pressure', alias: '1', doubleValue: 3 })]],
    // One message taken between two refused, each time: taken for a good exchange, it started the
    // count again each time, and the edge node was asked every interval for as long as it ran.
    ['an NDATA taken, then NDATA naming an alias its birth did not declare', [ndata(), ndata({ alias: '9', doubleValue: 2 })]],
    ['a DDATA taken, then DDATA naming a metric by its name and the alias of another', [ndata(), ddata(), ddata({ name: 'Pressure', alias: '1', doubleValue: 3 })]],
  ];
  for (const [name, every] of badData) {
    it(`${name}, the same after each rebirth: asked at once, then less and less often; only a while without a refusal starts again`, async () => {
      const t = input();
      await t.run({ births: [nbirth(0), dbirth(true)], every }, T0, HOUR);
      backsOff(t.asked, T0);
      const births = [nbirth(1), dbirth(true)];
      await recovers(t, { births, every: [ndata(), ddata()] }, { births, every }, T0 + HOUR);
    });
  }

  it('a DBIRTH that cannot be decoded, the same after each rebirth: asked at once, then less and less often; the edge node\'s own data is read meanwhile; only a while without a refusal starts again', async () => {
    const t = input();
    const { asked, queued, run, session } = t;
    await run({ births: [nbirth(0), dbirth(false)], every: [ndata(), ddata()] }, T0, HOUR);
    backsOff(asked, T0);
    // Its seq taken as the DBIRTH's: no gap, and the edge node's own data (not its device's) is read.
    assert.equal(session.stats.refusedByCode.SPARKPLUG_SEQ_GAP, undefined);
    assert.equal(queued.filter((q) => (q.payload as Record<string, unknown>)['G.E.Temp'] === 2).length, HOUR / 1_000);
    await recovers(t, { births: [nbirth(1), dbirth(true)], every: [ndata(), ddata()] }, { births: [nbirth(2), dbirth(false)], every: [ndata(), ddata()] }, T0 + HOUR);
  });

  for (const [name, good] of [
    ['good births', true],
    ['a DBIRTH that cannot be decoded each time, held off', false],
  ] as const) {
    it(`an NDATA lost now and then on a lossy link (QoS 0) is answered at once, over an hour, with ${name}`, async () => {
      const { asked, run } = input();
      // Some every 7 minutes, one of them the first after the births the loss before brought (a gap
      // right after a rebirth, with an unreadable DBIRTH just before it in the second case).
      const lost = (i: number) => i % 420 === 200 || i % 420 === 202 || i % 1_200 === 601;
      await run({ births: [nbirth(0), dbirth(good)], every: [ndata(), ddata()], lost }, T0, HOUR);
      const losses = Array.from({ length: HOUR / 1_000 }, (_, i) => i).filter(lost);
      assert.ok(losses.length >= 10);
      for (const i of losses) {
        // The DDATA of the same second is the gap.
        const next = T0 + i * 1_000;
        assert.ok(asked.some((a) => a >= next && a <= next + INTERVAL), `the loss at ${i} s asked at ${asked.map((a) => (a - T0) / 1_000).join(', ')} s`);
      }
      // Each answered by one rebirth, not more (the births' own refusals aside).
      if (good) assert.equal(asked.length, losses.length);
    });
  }
});
