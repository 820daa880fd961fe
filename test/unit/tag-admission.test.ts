import assert from 'node:assert/strict';
import { appendFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { EventPayloadSchema } from '../../shared/contract/payloads.ts';
import { createLogger } from '../../shared/logger.ts';
import { admittedEventTags, boundEventTags, openEventTagAdmissions } from '../../internal-network/distributor/event-tags.ts';
import { MEASUREMENTS, POINT_KEY, type StoredPoint } from '../../internal-network/distributor/points.ts';
import { TABLES } from '../../internal-network/distributor/sinks/postgres/rows.ts';
import { OVERFLOW_TAG_VALUE, TagAdmission } from '../../internal-network/distributor/security/tag-admission.ts';
import { failing } from '../helpers/failing-fs.ts';
import { tempDir } from '../helpers/pki.ts';

const DAY = 86_400_000;

/** A logger that keeps its lines, to count what was logged. */
function keptLog(): { log: ReturnType<typeof createLogger>; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const log = createLogger('test', 'info', { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) } as never);
  return { log, lines };
}

/**
 * Event types and severities are the device's choice and InfluxDB tag values: unbounded, they
 * reach max-values-per-tag and every device's new types are refused by the database. The admission
 * bounds them per device and per fleet, across restarts, forgetting what is not used.
 */
describe('the admission of event tag values', () => {
  const tmp = tempDir('tag-admission');
  after(() => tmp.cleanup());
  let n = 0;
  const fileOf = () => join(tmp.dir, `values-${++n}.jsonl`);
  const silent = createLogger('test', 'silent');

  it('admits a device fewer values than its bound and the fleet fewer than the total; a value in use costs the fleet nothing', () => {
    const a = new TagAdmission({ tag: 'event_type', perDevice: 3, total: 5, file: fileOf() }, silent);
    for (const v of ['a', 'b', 'c']) assert.equal(a.admits('d1', v), true);
    assert.equal(a.admits('d1', 'd'), false, 'past the device bound');
    assert.equal(a.admits('d1', 'a'), true, 'a value admitted stays admitted');
    // d2 uses values d1 uses: nothing new for the fleet.
    for (const v of ['a', 'b']) assert.equal(a.admits('d2', v), true);
    assert.equal(a.admits('d2', 'x'), true);
    assert.equal(a.admits('d2', 'y'), false, 'past the device bound');
    assert.equal(a.admits('d3', 'y'), true, 'the fifth value of the fleet');
    assert.equal(a.admits('d3', 'z'), false, 'past the fleet bound, though d3 has room');
    assert.equal(a.admits('d3', 'c'), true, 'a value the fleet has, though the fleet is full');
    assert.equal(a.values, 5);
    assert.equal(a.stats.overflowed, 3);
  });

  it('is remembered across restarts: a restart does not open the bound again', () => {
    const file = fileOf();
    const first = new TagAdmission({ tag: 'event_type', perDevice: 2, total: 100, file }, silent);
    assert.equal(first.admits('d1', 'a'), true);
    assert.equal(first.admits('d1', 'b'), true);
    assert.equal(first.admits('d1', 'c'), false);
    const second = new TagAdmission({ tag: 'event_type', perDevice: 2, total: 100, file }, silent);
    assert.equal(second.size, 2);
    assert.equal(second.admits('d1', 'c'), false);
    assert.equal(second.admits('d1', 'a'), true);
    // Compacted at start: one line per pair.
    assert.equal(readFileSync(file, 'utf8').trim().split('\n').length, 2);
  });

  it('forgets a value a device has not used for the TTL, at run time and at the next start', () => {
    const file = fileOf();
    let now = 1_000 * DAY;
    const o = { tag: 'event_type', perDevice: 2, total: 100, file, ttlMs: 30 * DAY, now: () => now };
    const a = new TagAdmission(o, silent);
    assert.equal(a.admits('d1', 'a'), true);
    assert.equal(a.admits('d1', 'b'), true);
    now += 20 * DAY;
    assert.equal(a.admits('d1', 'a'), true, 'used again: kept');
    now += 11 * DAY;
    // b unused for 31 days: forgotten, making room for c; a used 11 days ago stays.
    assert.equal(a.admits('d1', 'c'), true);
    assert.equal(a.admits('d1', 'b'), false);
    assert.equal(a.stats.forgotten, 1);
    now += 25 * DAY;
    // a was used 36 days ago, c 25: after a restart a is gone, c stays.
    const b = new TagAdmission(o, silent);
    assert.equal(b.size, 1);
    const lines = readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { v: string });
    assert.deepEqual(lines.map((l) => l.v), ['c']);
  });

  it('skips and logs a damaged line of its file, never stopping; the line is gone after the start', () => {
    const file = fileOf();
    const now = Date.now();
    writeFileSync(
      file,
      [
        JSON.stringify({ d: 'd1', v: 'a', at: now }),
        '{"d":"d1","v":"b","at":',
        JSON.stringify({ d: 'd1', v: 'bad value!', at: now }),
        JSON.stringify({ d: '../x', v: 'c', at: now }),
        '\u0000\u0000\u0000',
        JSON.stringify({ d: 'd1', v: 'e', at: now }),
      ].join('\n') + '\n',
    );
    // A last line cut short by a crash (no newline): not counted, not logged.
    appendFileSync(file, '{"d":"d1","v":"f"');
    const { log, lines } = keptLog();
    const a = new TagAdmission({ tag: 'event_type', perDevice: 10, total: 100, file }, log);
    assert.equal(a.size, 2);
    assert.equal(a.stats.damagedLines, 4);
    assert.equal(lines.filter((l) => String(l.msg).includes('damaged line')).length, 4);
    assert.deepEqual(
      readFileSync(file, 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { v: string }).v).sort(),
      ['a', 'e'],
    );
  });

  it('a value whose line the disk refused is not taken as remembered: admitted again, it is written, and a restart counts it', () => {
    const file = fileOf();
    const a = new TagAdmission({ tag: 'event_type', perDevice: 2, total: 100, file }, silent);
    assert.equal(a.admits('d1', 'a'), true);
    // The write of b's line fails: the event is not stored (its message is retried), and b is not counted.
    assert.throws(() => failing('fsyncSync', (p) => p === file, () => a.admits('d1', 'b')), /EIO/);
    assert.equal(a.size, 1, 'not counted in memory when the file does not hold it');
    // The message again, the disk back: b is admitted, and its line written before its event is stored.
    assert.equal(a.admits('d1', 'b'), true);
    const again = new TagAdmission({ tag: 'event_type', perDevice: 2, total: 100, file }, silent);
    assert.equal(again.size, 2, 'a restart counts the value stored under');
    assert.equal(again.admits('d1', 'c'), false, 'the bound stays closed');
  });

  it('logs an overflow at most once per device per minute, counting each', () => {
    let now = 1_000 * DAY;
    const { log, lines } = keptLog();
    const a = new TagAdmission({ tag: 'severity', perDevice: 1, total: 100, file: fileOf(), now: () => now }, log);
    a.admits('d1', 'info');
    for (let i = 0; i < 500; i++) a.admits('d1', `s${i}`);
    a.admits('d2', 'info');
    a.admits('d2', 'x');
    const overflowLines = () => lines.filter((l) => l.tag === 'severity' && l.deviceId !== undefined);
    assert.equal(overflowLines().length, 2, 'one line per device');
    now += 61_000;
    a.admits('d1', 'y');
    assert.equal(overflowLines().length, 3);
    assert.equal(a.stats.overflowed, 502);
  });

  it('read-only (the dead-letter replay): admits what the file holds within the TTL and nothing new, and never writes the file', () => {
    const file = fileOf();
    let now = 1_000 * DAY;
    const o = { tag: 'event_type', perDevice: 3, total: 100, file, ttlMs: 30 * DAY, now: () => now };
    const distributor = new TagAdmission(o, silent);
    assert.equal(distributor.admits('d1', 'a'), true);
    now += 20 * DAY;
    assert.equal(distributor.admits('d1', 'b'), true);
    // Lines a compaction would remove: a copy, a damaged line, a last line cut short.
    appendFileSync(file, `${JSON.stringify({ d: 'd1', v: 'a', at: 1_000 * DAY })}\n{"d":\n{"d":"d1","v":"c"`);
    const before = readFileSync(file, 'utf8');
    const replay = new TagAdmission({ ...o, readOnly: true }, silent);
    assert.equal(replay.holds('d1', 'a'), true);
    assert.equal(replay.admits('d1', 'b'), true);
    assert.equal(replay.admits('d1', 'c'), false, 'new to the device, though it has room: admitted by no distributor');
    assert.equal(replay.admits('d2', 'a'), false, "another device's value is not this one's");
    assert.equal(replay.stats.overflowed, 2);
    now += 11 * DAY;
    assert.equal(replay.holds('d1', 'a'), false, 'unused for 31 days: forgotten, as the distributor forgets it');
    assert.equal(replay.holds('d1', 'b'), true);
    assert.equal(readFileSync(file, 'utf8'), before, 'not appended to, not compacted: the distributor owns the file');
    const missing = fileOf();
    assert.equal(new TagAdmission({ ...o, file: missing, readOnly: true }, silent).admits('d1', 'a'), false);
    assert.equal(existsSync(missing), false, 'no file made');
  });

  it("the replay's admissions: a value is admitted when a slot of the state folder holds it for the device", () => {
    const state = join(tmp.dir, `state-${++n}`);
    const slot2 = join(state, 'instances', '2');
    mkdirSync(slot2, { recursive: true });
    const first = openEventTagAdmissions(state, silent);
    assert.equal(first.event_type.admits('d1', 'door_open'), true);
    assert.equal(first.severity.admits('d1', 'warning'), true);
    assert.equal(openEventTagAdmissions(slot2, silent).event_type.admits('d2', 'valve_stuck'), true);
    const files = () => ['event-types.jsonl', 'event-severities.jsonl'].map((f) => [state, slot2].map((d) => (existsSync(join(d, f)) ? readFileSync(join(d, f), 'utf8') : ''))).flat();
    const before = files();
    const replay = admittedEventTags(state, silent);
    assert.equal(replay.event_type.admits('d1', 'door_open'), true);
    assert.equal(replay.event_type.admits('d2', 'valve_stuck'), true, "slot 2's");
    assert.equal(replay.event_type.admits('d1', 'valve_stuck'), false, "another device's value");
    assert.equal(replay.severity.admits('d1', 'warning'), true);
    assert.equal(replay.severity.admits('d2', 'warning'), false);
    assert.deepEqual(files(), before, 'read only');
    assert.equal(admittedEventTags(join(tmp.dir, 'no-state'), silent).event_type.admits('d1', 'door_open'), false);
  });

  it('the reserved value is one no device can send', () => {
    const ok = EventPayloadSchema.safeParse({ eventType: 'door_open' });
    assert.equal(ok.success, true);
    assert.equal(EventPayloadSchema.safeParse({ eventType: OVERFLOW_TAG_VALUE }).success, false);
    assert.equal(EventPayloadSchema.safeParse({ eventType: 'a', severity: OVERFLOW_TAG_VALUE }).success, false);
  });

  it('moves what is past the bound to ~other with the value in a field, and PostgreSQL keeps the real value', () => {
    const a = {
      event_type: new TagAdmission({ tag: 'event_type', perDevice: 1, total: 100, file: fileOf() }, silent),
      severity: new TagAdmission({ tag: 'severity', perDevice: 1, total: 100, file: fileOf() }, silent),
    };
    const point = (eventType: string, severity: string, extra: Record<string, string> = {}): StoredPoint => {
      const p: StoredPoint = { measurement: MEASUREMENTS.events, tags: { device: 'd1', event_type: eventType, severity }, fields: { message: 'm', ...extra }, time: 1 };
      p[POINT_KEY] = `m:${eventType}`;
      return p;
    };
    // The device's own field of that name does not stand in for its value.
    const points = [point('door', 'info'), point('fire', 'critical', { event_type_value: 'forged' })];
    const moved: string[] = [];
    boundEventTags(points, a, (tag) => moved.push(tag));
    assert.deepEqual(moved, ['event_type', 'severity']);
    assert.deepEqual(points[0]?.tags, { device: 'd1', event_type: 'door', severity: 'info' });
    assert.deepEqual(points[1]?.tags, { device: 'd1', event_type: OVERFLOW_TAG_VALUE, severity: OVERFLOW_TAG_VALUE });
    assert.deepEqual(points[1]?.fields, { message: 'm', event_type_value: 'fire', severity_value: 'critical' });
    const events = TABLES[MEASUREMENTS.events];
    assert.ok(events);
    assert.deepEqual(events.row(points[1] as StoredPoint, 'k'), ['d1', 1, 'k', 'fire', 'critical', 'm', {}]);
    // Admitted: a field of that name the device sent stays its own, in `extra`.
    const own = point('door', 'info', { event_type_value: 'mine' });
    boundEventTags([own], a, () => {});
    assert.deepEqual(events.row(own, 'k'), ['d1', 1, 'k', 'door', 'info', 'm', { event_type_value: 'mine' }]);
  });
});
