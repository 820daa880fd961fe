import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LIMITS } from '../../shared/limits.ts';
import { plantInput, T0, tahu } from '../helpers/sparkplug.ts';
import { eventually } from '../helpers/ws-device.ts';

const DEVICE = 'plc-gw-012';
const NOTES = 60;

/**
 * A reading is one queue item, and the queue takes no item over LIMITS.queuedPayloadMaxBytes as JSON
 * (what fits a frame the gateway takes). A Sparkplug payload is bounded at 4 MiB on the wire, but
 * its String values grow as JSON: a control character (valid UTF-8, a GS1 barcode's separator say)
 * becomes six bytes (`\u001d`). One NDATA of 60 String metrics of 64 Ki such characters, under 4
 * MiB, made one reading of 22 MiB: the queue refused the whole batch, every value of the message
 * (and of any edge node's message taken in the same batch) lost, its session undone, so that its
 * next message was a gap asking for a rebirth. Published here with sparkplug-payload's encoder on a
 * real Mosquitto.
 */
describe('the Sparkplug input and readings larger as JSON than the queue takes', () => {
  const rig = plantInput('sparkplug-reading-bytes', DEVICE);

  it('splits the metrics of one timestamp over readings the queue takes, storing every value, the session going on', async () => {
    const sp = rig.field?.sparkplug;
    const queue = rig.field?.client.queue;
    assert.ok(sp && queue && rig.raw);
    const stats = sp.session.stats;
    const note = (i: number) => ({ name: `Notes/${i}`, alias: i + 1, type: 'String' as const });
    const nbirth = tahu.encodePayload({
      timestamp: T0,
      seq: 0,
      metrics: [{ name: 'bdSeq', type: 'UInt64', value: 0 }, { name: 'Temp', alias: 100, type: 'Double', value: 20.5 }, ...Array.from({ length: NOTES }, (_, i) => ({ ...note(i), value: '' }))],
    });
    await eventually(
      async () => {
        await rig.raw?.publishAsync('spBv1.0/Plant1/NBIRTH/Edge9', Buffer.from(nbirth));
        return sp.session.host.session('Plant1', 'Edge9') ? true : undefined;
      },
      20_000,
      'the NBIRTH taken',
    );
    const text = '\u001d'.repeat(LIMITS.stringMaxChars);
    const big = Buffer.from(
      tahu.encodePayload({
        timestamp: T0 + 1000,
        seq: 1,
        metrics: [{ alias: 100, type: 'Double', value: 30.5 }, ...Array.from({ length: NOTES }, (_, i) => ({ alias: i + 1, type: 'String' as const, value: text }))],
      }),
    );
    assert.ok(big.length < LIMITS.sparkplugPayloadMaxBytes, `${big.length} bytes: within what the input decodes`);
    await rig.raw.publishAsync('spBv1.0/Plant1/NDATA/Edge9', big);
    await rig.raw.publishAsync('spBv1.0/Plant1/NDATA/Edge9', Buffer.from(tahu.encodePayload({ timestamp: T0 + 2000, seq: 2, metrics: [{ alias: 100, type: 'Double', value: 31.5 }] })));
    // Read: taken (seq 2), or refused by the queue, or refused as a gap after that.
    const read = () => sp.session.host.session('Plant1', 'Edge9')?.seq === 2 || stats.submitFailed > 0 || stats.refusedByCode.SPARKPLUG_SEQ_GAP !== undefined;
    await eventually(() => (read() ? true : undefined), 20_000, 'both NDATA read');
    await new Promise((r) => setTimeout(r, 500));
    await sp.session.drained();

    // (The NBIRTH published again until taken is a duplicate: expected.)
    assert.deepEqual(rig.logs.codes().filter((c) => (c.startsWith('FIELD_') || c.startsWith('SPARKPLUG_')) && c !== 'SPARKPLUG_DUPLICATE'), []);
    assert.equal(stats.submitFailed, 0, 'the queue took every reading');
    assert.equal(stats.refusedByCode.SPARKPLUG_SEQ_GAP, undefined);
    assert.equal(stats.rebirthsRequested, 0);
    const readings = queue.find((m) => m.dataType === 'timeseries').map((m) => m.payload as Record<string, unknown>);
    const at = (t: number) => readings.filter((r) => r.timestamp === t);
    assert.deepEqual(
      readings.filter((r) => 'Plant1.Edge9.Temp' in r).map((r) => [r.timestamp, r['Plant1.Edge9.Temp']]),
      [
        [T0, 20.5],
        [T0 + 1000, 30.5],
        [T0 + 2000, 31.5],
      ],
    );
    const notes = at(T0 + 1000).flatMap((r) => Object.entries(r).filter(([k]) => k.startsWith('Plant1.Edge9.Notes.')));
    assert.equal(notes.length, NOTES);
    assert.ok(notes.every(([, v]) => v === text));
    for (const r of at(T0 + 1000)) assert.ok(Buffer.byteLength(JSON.stringify(r)) <= LIMITS.queuedPayloadMaxBytes);
  });
});
