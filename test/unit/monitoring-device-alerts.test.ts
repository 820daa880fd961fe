import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { z } from 'zod';
import { InfluxV1 } from '../../scripts/local-stack/databases.ts';
import { InfluxV1Sink } from '../../internal-network/distributor/sinks/influx-v1.ts';
import { DAY_MS } from '../../shared/limits.ts';
import { tempDir } from '../helpers/pki.ts';
import { storedPresences } from '../helpers/stored-presences.ts';

/**
 * Grafana's per-device alert rules on what the internal side holds of each device (InfluxDB), beyond
 * FieldStreamDeviceSilent (test/unit/monitoring.test.ts). The corporate Prometheus scrapes no device,
 * so the field rules of alerts.yml never fire there: what the operators are told of a device comes
 * from these rules. Grafana cannot run here; each rule's query runs on a real InfluxDB 1.x holding
 * what the distributor stores, and the rule's own reduce and threshold are applied to its answer.
 */
const repoRoot = join(import.meta.dirname, '..', '..');
const alertingFile = join(repoRoot, 'monitoring', 'grafana', 'provisioning', 'alerting', 'fieldstream.yml');

const RuleSchema = z.looseObject({
  title: z.string(),
  condition: z.string(),
  data: z.array(
    z.object({
      refId: z.string(),
      datasourceUid: z.string(),
      relativeTimeRange: z.object({ from: z.number(), to: z.number() }).optional(),
      model: z.looseObject({ query: z.string().optional(), type: z.string().optional(), expression: z.string().optional(), reducer: z.string().optional(), conditions: z.array(z.object({ evaluator: z.object({ type: z.string(), params: z.array(z.number()) }) })).optional() }),
    }),
  ),
  noDataState: z.string(),
  labels: z.record(z.string(), z.string()),
  annotations: z.record(z.string(), z.string()),
});
const AlertingSchema = z.object({ groups: z.array(z.object({ rules: z.array(RuleSchema) })) });

/** The provisioning file as Grafana reads it (YAML, through PyYAML: Node has no YAML parser of its own). */
function rules(): Array<z.infer<typeof RuleSchema>> {
  const json = execFileSync('python3', ['-c', 'import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)'], { input: readFileSync(alertingFile), encoding: 'utf8' });
  return AlertingSchema.parse(JSON.parse(json)).groups.flatMap((g) => g.rules);
}

/**
 * The devices a rule fires for, given its InfluxQL query's answer: Grafana's reduce (last) of each
 * series, then its threshold. Only the shapes these rules use are understood; any other fails.
 */
function firing(rule: z.infer<typeof RuleSchema>, series: ReadonlyArray<{ tags?: Record<string, string> | undefined; values: unknown[][] }>): string[] {
  const threshold = rule.data.find((q) => q.refId === rule.condition)?.model;
  assert.equal(threshold?.type, 'threshold', `${rule.title}: its condition is a threshold`);
  const reduce = rule.data.find((q) => q.refId === threshold.expression)?.model;
  assert.ok(reduce?.type === 'reduce' && reduce.reducer === 'last', `${rule.title}: the threshold reads a reduce (last)`);
  const evaluator = threshold.conditions?.[0]?.evaluator;
  assert.ok(evaluator && (evaluator.type === 'lt' || evaluator.type === 'gt') && evaluator.params.length === 1, JSON.stringify(evaluator));
  const limit = evaluator.params[0] as number;
  return series
    .filter((s) => {
      const last = Number(s.values.at(-1)?.[1]);
      return evaluator.type === 'lt' ? last < limit : last > limit;
    })
    .map((s) => s.tags?.device ?? '?')
    .sort();
}

describe("monitoring: Grafana's per-device alert rules on a real InfluxDB 1.x holding what the distributor stores", () => {
  const DB = 'fieldstream';
  let tmp: { dir: string; cleanup(): void };
  let influx: InfluxV1;
  before(async () => {
    tmp = tempDir('device-alerts');
    influx = await InfluxV1.start(join(tmp.dir, 'influx'), DB);
  });
  after(async () => {
    await influx?.process.stop();
    tmp?.cleanup();
  });

  it("FieldStreamDeviceCertificateExpiring fires for each device whose certificate has under 30 days left by its gateway's last word, connected or gone, and for no other", async () => {
    // Only the field rules of alerts.yml watched certificates, and they fire where a device is
    // scraped: the corporate Prometheus scrapes none, so a fleet's certificates ran out unannounced.
    const rule = rules().find((r) => r.title === 'FieldStreamDeviceCertificateExpiring');
    assert.ok(rule, 'a Grafana alert rule FieldStreamDeviceCertificateExpiring is provisioned');
    const queries = rule.data.filter((q) => q.datasourceUid === 'influxdb');
    assert.equal(queries.length, 1);
    const query = queries[0]?.model.query as string;
    assert.doesNotMatch(query, /\$/, 'Grafana would expand $NAME from its environment in a provisioned query');
    const now = Date.now();
    const ago = (days: number) => now - days * DAY_MS;
    const points = await storedPresences(join(tmp.dir, 'presences'), [
      // connected for long, its daily reminder 20 hours ago says 20 days left
      ['meter-1', { state: 'online', at: ago(40), certNotAfter: now + 20.5 * DAY_MS }],
      ['meter-1', { state: 'online', at: now - 20 * 3_600_000, certNotAfter: now + 20.5 * DAY_MS, since: ago(40) }],
      // connected, a year left
      ['meter-2', { state: 'online', at: ago(2), certNotAfter: now + 365.5 * DAY_MS }],
      // gone 10 days ago, 25 days left when it last connected: under 15 now
      ['meter-3', { state: 'online', at: ago(11), certNotAfter: now + 14.5 * DAY_MS }],
      ['meter-3', { state: 'offline', at: ago(10) }],
      // renewed: its last connection carries the new certificate
      ['meter-4', { state: 'online', at: ago(3), certNotAfter: now + 5.5 * DAY_MS }],
      ['meter-4', { state: 'offline', at: ago(2) }],
      ['meter-4', { state: 'online', at: ago(1), certNotAfter: now + 700.5 * DAY_MS }],
      // a device with a token: no certificate
      ['token-5', { state: 'online', at: ago(1) }],
    ]);
    await new InfluxV1Sink({ url: influx.url, database: DB, username: influx.user, password: influx.password, timeoutMs: 5000 }).write(points);
    const answer = await influx.query(query, DB);
    assert.equal(answer.results?.[0]?.error, undefined, JSON.stringify(answer));
    const series = answer.results?.[0]?.series ?? [];
    // One series per device, as Grafana's alerting needs (one alert instance each).
    const devices = series.map((s) => s.tags?.device);
    assert.equal(new Set(devices).size, devices.length, JSON.stringify(devices));
    assert.deepEqual(firing(rule, series), ['meter-1', 'meter-3']);
    assert.match(rule.labels.severity ?? '', /^(warning|critical)$/);
    assert.match(rule.annotations.summary ?? '', /\{\{ \$labels\.device \}\}/);
    assert.equal(rule.noDataState, 'OK', 'no certificate device at all is nothing to say');
  });
});
