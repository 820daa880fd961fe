import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { FleetResult } from '../../bench/scenarios/fleet.ts';
import { bench, failure, REPO } from '../helpers/bench.ts';

/** Every watched reading, in the windows of the whole load (the warm-up's included). */
const sumWatched = (f: FleetResult) => f.latencyByWindow.reduce((n, w) => n + w.watched, 0);

/**
 * The fleet sending several readings a frame (`--fleet-per-frame`): each device's frames signed as
 * one group, through Caddy, the real gateway and distributor (which checks every group's signature
 * and refuses what does not verify) into InfluxDB; every reading stored once, none refused, in as
 * many frames as the devices' phases give, each acked (the devices read acks here), and each watched
 * reading found although it was taken before its frame was due.
 */
describe('npm run bench -- --fleet --fleet-per-frame 3 --fleet-acks all', () => {
  it('stores every reading once, from frames of up to three readings signed as a group', async () => {
    const r = await bench(['--quick', '--fleet', '--fleet-per-frame', '3', '--fleet-acks', 'all']);
    assert.equal(r.code, 0, failure(r));
    const { fleet: f } = JSON.parse(readFileSync(join(REPO, 'bench', 'results', 'pipeline-fleet.json'), 'utf8')) as {
      fleet: FleetResult;
    };
    assert.equal(f.readingsPerFrame, 3);
    const runSeconds = f.warmUpSeconds + f.seconds;
    assert.equal(f.readings, f.devices * runSeconds);
    assert.equal(f.sent, f.readings);
    assert.equal(f.stored, f.readings);
    assert.equal(f.lost, 0);
    assert.equal(f.duplicated, 0);
    assert.deepEqual(f.refused, {}, 'every group signature verified');
    assert.equal(f.errors, 0);
    assert.equal(f.closed, 0);
    // Device i sends after its readings k with (k + i) mod 3 = 2, and after its last.
    let frames = 0;
    const sends = (i: number, k: number) => (k + i) % 3 === 2 || k === runSeconds - 1;
    for (let i = 0; i < f.devices; i++) for (let k = 0; k < runSeconds; k++) if (sends(i, k)) frames++;
    assert.equal(f.frames, frames);
    // Devices that read acks (--fleet-acks all) got one for each frame, through Caddy.
    assert.equal(f.acks, 'all');
    assert.equal(f.ackFrames, frames);
    // Every watched reading (device 0's) found, the ones taken before their frame was due too; timed
    // from their frame's due time, so those of a frame due after the warm-up are the run's.
    const frameOf = (k: number) => {
      while (!sends(0, k)) k++;
      return k;
    };
    const measured = Array.from({ length: runSeconds }, (_, k) => k).filter((k) => frameOf(k) >= f.warmUpSeconds).length;
    assert.deepEqual([f.latency.samples, f.latency.late], [measured, 0]);
    assert.equal(sumWatched(f), runSeconds);
  });
});
