import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DeadLetters } from '../../internal-network/distributor/dead-letter.ts';
import { DistributorMetrics } from '../../internal-network/distributor/metrics.ts';
import { uplinkTopic } from '../../shared/contract/topics.ts';
import { FieldStreamError, isFieldStreamError } from '../../shared/errors.ts';
import { TIMINGS } from '../../shared/limits.ts';
import { parseExposition } from '../helpers/exposition.ts';
import { tempDir } from '../helpers/pki.ts';
import { promtoolTestRules, scrapedSeries } from '../helpers/promtool.ts';

/**
 * The alerts of alerts.yml on the distributor's bounded stores filling, run by `promtool test rules`
 * on the series a real distributor's metrics expose over a real folder.
 */
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The distributor as the internal Prometheus scrapes it. */
const INSTANCE = '172.18.0.7:9465';
/** Prometheus's humanizePercentage of a fraction (4 significant digits). */
const percent = (f: number) => `${(f * 100).toPrecision(4)}%`;
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
