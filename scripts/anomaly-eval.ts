/**
 * npm run anomaly:eval: generates the labelled data set (internal-network/console/anomaly/dataset.ts),
 * scores it with the default parameters and prints precision and recall per detector and per
 * injected kind as markdown (docs/anomaly-detection.md quotes the output).
 *   --seed N  --devices N  --days N   change the data set (defaults: 1, 24, 7)
 *   --params JSON                     scorer parameters other than the defaults, e.g. '{"forestRangeAware":false}'
 */
import { parseArgs } from 'node:util';
import { isFieldStreamError } from '../shared/errors.ts';
import type { AnomalyParams } from '../internal-network/console/anomaly/params.ts';
import { AnomalyScorer } from '../internal-network/console/anomaly/scorer.ts';
import { generateDataset } from '../internal-network/console/anomaly/dataset.ts';
import { evaluate, evaluationMarkdown } from '../internal-network/console/anomaly/evaluate.ts';

/** A mistake in the arguments: said in one line, with its code, and exit 64 (EX_USAGE), not a stack trace. */
function usage(code: string, message: string): never {
  process.stderr.write(`error ${code}: ${message}\n`);
  process.exit(64);
}

let values: { seed?: string; devices?: string; days?: string; params?: string };
try {
  ({ values } = parseArgs({ options: { seed: { type: 'string' }, devices: { type: 'string' }, days: { type: 'string' }, params: { type: 'string' } } }));
} catch (err) {
  usage('CONFIG_INVALID', (err as Error).message);
}
const num = (v: string | undefined, name: string): number | undefined => {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) usage('CONFIG_INVALID', `--${name} must be a positive integer`);
  return n;
};
const options = { seed: num(values.seed, 'seed'), devices: num(values.devices, 'devices'), days: num(values.days, 'days') };
// The parameters before the data set is made (it takes a while): checked as the console checks them.
let scorer: AnomalyScorer;
try {
  scorer = new AnomalyScorer(values.params === undefined ? {} : (JSON.parse(values.params) as Partial<AnomalyParams>));
} catch (err) {
  usage(isFieldStreamError(err) ? err.code : 'CONFIG_INVALID', `--params: ${(err as Error).message}`);
}
const set = generateDataset(Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)));
const started = performance.now();
const ev = evaluate(scorer, set.readings, set.events);
const seconds = (performance.now() - started) / 1000;
process.stdout.write(`Data set: seed ${set.options.seed}, ${set.options.devices} devices, ${set.options.days} days, one reading every ${set.options.intervalMs / 1000} s; parameters: ${values.params ?? 'the defaults'}.\n\n`);
process.stdout.write(`${evaluationMarkdown(ev)}\n\n`);
process.stdout.write(`Scored in ${seconds.toFixed(1)} s (forests trained: ${ev.stats.forestsTrained}).\n`);
