import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { z } from 'zod';
import { DeadLetters } from '../../internal-network/distributor/dead-letter.ts';
import { DistributorMetrics } from '../../internal-network/distributor/metrics.ts';
import { uplinkTopic } from '../../shared/contract/topics.ts';
import { FieldStreamError, isFieldStreamError } from '../../shared/errors.ts';
import { TIMINGS } from '../../shared/limits.ts';
import { parseExposition } from '../helpers/exposition.ts';
import { fullDiskSkip, moduleUrl, runOnSmallDisk } from '../helpers/full-disk.ts';
import { tempDir } from '../helpers/pki.ts';
import { alertDescription, promtoolTestRules, scrapedSeries } from '../helpers/promtool.ts';

/**
 * The alerts of alerts.yml on the durable stores filling (the distributor's bounded dead-letter
 * folder, the file systems the services write on), run by `promtool test rules` on the series real
 * metrics expose over a real folder and a real, small file system.
 */
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The distributor as the internal Prometheus scrapes it. */
const INSTANCE = '172.18.0.7:9465';
/** Prometheus's humanizePercentage of a fraction (Go's %.4g: 4 significant digits, no trailing zeros). */
const percent = (f: number) => `${Number((f * 100).toPrecision(4))}%`;
const ANSWER = 'Read the letters, replay or move them away, or raise the bound (docs/operations.md, Dead letters).';
const filling = (f: number) => `        alertname: FieldStreamDeadLetterFolderFilling
        exp_alerts:
          - exp_labels: {severity: warning, instance: "${INSTANCE}"}
            exp_annotations:
              summary: "The dead-letter folder of the distributor ${INSTANCE} is past half its bound"
              description: "It holds ${percent(f)} of DEAD_LETTER_MAX_BYTES: invalid payloads are no longer kept (FieldStreamDeadLettersNotKept), and at the bound a message with data finds no room and waits unacknowledged, its consumer connection with it. ${ANSWER}"
`;
const nearlyFull = (f: number) => `        alertname: FieldStreamDeadLetterFolderNearlyFull
        exp_alerts:
          - exp_labels: {severity: critical, instance: "${INSTANCE}"}
            exp_annotations:
              summary: "The dead-letter folder of the distributor ${INSTANCE} is nearly full"
              description: "It holds ${percent(f)} of DEAD_LETTER_MAX_BYTES: a message with data that does not fit stays unacknowledged on the broker (DISTRIBUTOR_DEAD_LETTERS_FULL in the log) and its consumer connection takes nothing else until room is made; the device keeps its copy. ${ANSWER}"
`;

describe('monitoring: the dead-letter folder filling up (promtool test rules)', () => {
  it('FieldStreamDeadLetterFolderFilling fires past half of DEAD_LETTER_MAX_BYTES, FieldStreamDeadLetterFolderNearlyFull once a letter with data finds no room', async () => {
    // The folder is bounded: past half, invalid payloads are dropped; at the bound a message with
    // data is left unacknowledged and its consumer connection waits for an operator. Nothing said
    // the folder was filling: the first word was FieldStreamOldestMessageInProgress, ten minutes
    // after the pipeline had stopped, blaming the database.
    const tmp = tempDir('dead-letter-alerts');
    try {
      const metrics = new DistributorMetrics();
      const dead = new DeadLetters(tmp.dir, 1, { maxBytes: 100_000 });
      metrics.bindDeadLetters(() => dead.measuredBytes(), dead.maxBytes); // as distributor.ts binds it
      const scrape = async () => {
        await sleep(TIMINGS.deadLetterRescanMs); // the gauge measures the folder at most once a rescan
        return metrics.metrics.registry.metrics();
      };
      const rejected = new FieldStreamError('DISTRIBUTOR_WRITE_REJECTED', 'the database refused it');
      const letter = Buffer.alloc(7_000, 'x'); // some 9.4 KB on disk, in base64
      const empty = await scrape();
      for (let i = 0; i < 4; i++) await dead.put(uplinkTopic('pump-7', 'timeseries'), letter, rejected);
      const under = await scrape();
      for (let i = 0; i < 2; i++) await dead.put(uplinkTopic('pump-7', 'timeseries'), letter, rejected);
      const half = await scrape();
      let refused = 0;
      for (let i = 0; i < 6; i++) {
        try {
          await dead.put(uplinkTopic('pump-7', 'timeseries'), letter, rejected);
        } catch (err) {
          assert.ok(isFieldStreamError(err, 'DISTRIBUTOR_DEAD_LETTERS_FULL'), String(err));
          refused++;
        }
      }
      assert.ok(refused > 0, 'a letter with data found the folder full');
      const full = await scrape();
      const fraction = (text: string) => {
        const s = parseExposition(text);
        return (s.get('fieldstream_distributor_dead_letter_bytes{service="distributor"}') ?? NaN) / (s.get('fieldstream_distributor_dead_letter_limit_bytes{service="distributor"}') ?? NaN);
      };
      assert.deepEqual([empty, under, half, full].map((t) => fraction(t) > 0.5), [false, false, true, true], [empty, under, half, full].map(fraction).join(' '));
      assert.ok(fraction(under) > 0.3 && fraction(full) > 0.9, [under, full].map(fraction).join(' '));
      const series = scrapedSeries(
        [
          { text: empty, times: 20 },
          { text: under, times: 20 },
          { text: half, times: 20 },
          { text: full, times: 20 },
        ],
        ['fieldstream_distributor_dead_letter_bytes', 'fieldstream_distributor_dead_letter_limit_bytes'],
      ).replaceAll('service="distributor"', `instance="${INSTANCE}",service="distributor"`);
      promtoolTestRules(`  - interval: 15s
    input_series:
${series}    alert_rule_test:
      - eval_time: 9m
        alertname: FieldStreamDeadLetterFolderFilling
        exp_alerts: []
      - eval_time: 12m
${filling(fraction(half))}      - eval_time: 12m
        alertname: FieldStreamDeadLetterFolderNearlyFull
        exp_alerts: []
      - eval_time: 19m
${nearlyFull(fraction(full))}`);
    } finally {
      tmp.cleanup();
    }
  });
});

describe('monitoring: the file systems of the durable folders filling up (promtool test rules)', () => {
  it('FieldStreamDiskFilling fires past 90% used, FieldStreamDiskNearlyFull once writes are refused, from what a service measures of a real file system', { skip: fullDiskSkip }, () => {
    // Nothing measured the file systems the services write their durable data on: a volume that
    // filled stopped stored files, dead letters, the command journal, with no word before.
    const tmp = tempDir('disk-alerts');
    try {
      const mnt = join(tmp.dir, 'mnt');
      mkdirSync(mnt);
      // A tmpfs of 1 MiB: the distributor's FILE_STORAGE_PATH on it (not made yet: its parent is
      // measured), scraped empty, at some 95% used, and once full.
      const script = `
        import { closeSync, openSync, writeSync } from 'node:fs';
        import { ServiceMetrics } from ${moduleUrl('shared/metrics/registry.ts')};
        import { durableFolderSpace } from ${moduleUrl('shared/metrics/disk.ts')};
        import { fillDisk } from ${moduleUrl('test/helpers/full-disk.ts')};
        const m = durableFolderSpace(new ServiceMetrics('distributor', { processMetrics: false }), [{ setting: 'FILE_STORAGE_PATH', path: process.env.MNT + '/files' }]);
        const out = [await m.registry.metrics()];
        const fd = openSync(process.env.MNT + '/stored', 'w');
        writeSync(fd, Buffer.alloc(Math.floor(0.95 * 1024 * 1024)));
        closeSync(fd);
        out.push(await m.registry.metrics());
        const full = fillDisk(process.env.MNT);
        out.push(await m.registry.metrics());
        full.free();
        console.log(JSON.stringify({ out, full: full.code }));`;
      const r = runOnSmallDisk(mnt, script, 1024, { timeoutMs: 60_000 });
      assert.equal(r.status, 0, r.stderr);
      const { out, full } = z.object({ out: z.array(z.string()).length(3), full: z.string().optional() }).parse(JSON.parse(r.stdout.trim().split('\n').at(-1) as string));
      assert.equal(full, 'ENOSPC');
      const key = (n: string) => `fieldstream_filesystem_${n}_bytes{setting="FILE_STORAGE_PATH",service="distributor"}`;
      const left = out.map((text) => {
        const samples = parseExposition(text);
        return (samples.get(key('available')) ?? NaN) / (samples.get(key('size')) ?? NaN);
      });
      assert.ok(left[0] as number > 0.9 && (left[1] as number) < 0.1 && (left[1] as number) > 0.02 && (left[2] as number) < 0.02, left.join(' '));
      const series = scrapedSeries(
        [
          { text: out[0] as string, times: 20 },
          { text: out[1] as string, times: 40 },
          { text: out[2] as string, times: 20 },
        ],
        ['fieldstream_filesystem_available_bytes', 'fieldstream_filesystem_size_bytes'],
      ).replaceAll('service="distributor"', `instance="${INSTANCE}",service="distributor"`);
      const labels = `{severity: SEVERITY, instance: "${INSTANCE}", service: distributor, setting: FILE_STORAGE_PATH}`;
      promtoolTestRules(`  - interval: 15s
    input_series:
${series}    alert_rule_test:
      - eval_time: 9m
        alertname: FieldStreamDiskFilling
        exp_alerts: []
      - eval_time: 11m
        alertname: FieldStreamDiskFilling
        exp_alerts:
          - exp_labels: ${labels.replace('SEVERITY', 'warning')}
            exp_annotations:
              summary: "The file system of FILE_STORAGE_PATH (distributor, ${INSTANCE}) is over 90% full"
              description: "${percent(left[1] as number)} of it is left for distributor to write (for 5 minutes). Once it is full, what distributor keeps there stops: stored files, dead letters, the distributor's state, the command journal, the console's state. Free space or grow the volume."
      - eval_time: 14m
        alertname: FieldStreamDiskNearlyFull
        exp_alerts: []
      - eval_time: 19m
        alertname: FieldStreamDiskNearlyFull
        exp_alerts:
          - exp_labels: ${labels.replace('SEVERITY', 'critical')}
            exp_annotations:
              summary: "The file system of FILE_STORAGE_PATH (distributor, ${INSTANCE}) is nearly full"
              description: "${percent(left[2] as number)} of it is left for distributor to write. Writes there are about to fail: the messages whose files or state it keeps wait unacknowledged, commands are refused. Free space or grow the volume now."
`);
    } finally {
      tmp.cleanup();
    }
  });
});

describe("monitoring: a device's file transfers refused for too many unfinished (promtool test rules)", () => {
  it('FieldStreamFileTransfersRefused fires once a chunk is refused (DISTRIBUTOR_FILE_TRANSFERS_OPEN), from the counter the distributor exposes', async () => {
    const metrics = new DistributorMetrics();
    const before = await metrics.metrics.registry.metrics();
    assert.equal(parseExposition(before).get('fieldstream_distributor_file_chunks_deferred_total{service="distributor"}'), 0, 'exposed at 0 from the start, so the first refusal shows');
    metrics.fileChunksDeferred.inc(3);
    const after = await metrics.metrics.registry.metrics();
    const series = scrapedSeries(
      [
        { text: before, times: 20 },
        { text: after, times: 20 },
      ],
      ['fieldstream_distributor_file_chunks_deferred_total'],
    ).replaceAll('service="distributor"', `instance="${INSTANCE}",service="distributor"`);
    const description = alertDescription('FieldStreamFileTransfersRefused');
    promtoolTestRules(`  - interval: 15s
    input_series:
${series}    alert_rule_test:
      - eval_time: 4m
        alertname: FieldStreamFileTransfersRefused
        exp_alerts: []
      - eval_time: 7m
        alertname: FieldStreamFileTransfersRefused
        exp_alerts:
          - exp_labels: {severity: warning, instance: "${INSTANCE}"}
            exp_annotations:
              summary: "The distributor ${INSTANCE} refuses file transfers of a device with too many unfinished"
              description: ${JSON.stringify(description.replace('{{ $value | humanize }}', '3'))}
`);
  });
});
