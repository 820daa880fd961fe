import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { healthPoints } from '../../internal-network/distributor/points.ts';
import { parseEnvelope, UplinkEnvelopeSchema, type EnvelopeOf } from '../../shared/contract/envelope.ts';
import type { HealthPayload } from '../../shared/contract/payloads.ts';

/**
 * Grafana's per-device alert rules (monitoring/grafana/provisioning/alerting/fieldstream.yml) as the
 * tests that run their queries on a real database read them: Grafana cannot run here, so the test
 * runs a rule's one query and applies the rule's own reduce and threshold to the answer.
 */
const repoRoot = join(import.meta.dirname, '..', '..');
export const alertingFile = join(repoRoot, 'monitoring', 'grafana', 'provisioning', 'alerting', 'fieldstream.yml');

export const RuleSchema = z.looseObject({
  uid: z.string(),
  title: z.string(),
  condition: z.string(),
  data: z.array(
    z.object({
      refId: z.string(),
      datasourceUid: z.string(),
      relativeTimeRange: z.object({ from: z.number(), to: z.number() }).optional(),
      model: z.looseObject({
        query: z.string().optional(),
        rawSql: z.string().optional(),
        format: z.string().optional(),
        type: z.string().optional(),
        expression: z.string().optional(),
        reducer: z.string().optional(),
        conditions: z.array(z.object({ evaluator: z.object({ type: z.string(), params: z.array(z.number()) }) })).optional(),
      }),
    }),
  ),
  noDataState: z.string(),
  execErrState: z.string(),
  labels: z.record(z.string(), z.string()),
  annotations: z.record(z.string(), z.string()),
  isPaused: z.union([z.boolean(), z.string()]).optional(),
});
export type Rule = z.infer<typeof RuleSchema>;
const AlertingSchema = z.object({ groups: z.array(z.object({ name: z.string(), folder: z.string(), rules: z.array(RuleSchema) })) });

/** The provisioning file's groups as Grafana reads it (YAML, through PyYAML: Node has no YAML parser of its own). */
export function ruleGroups(): z.infer<typeof AlertingSchema>['groups'] {
  const json = execFileSync('python3', ['-c', 'import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)'], { input: readFileSync(alertingFile), encoding: 'utf8' });
  return AlertingSchema.parse(JSON.parse(json)).groups;
}

/** The rule of this title whose one query goes to the data source `uid`, and that query's model. */
export function ruleOn(title: string, uid: string): { rule: Rule; model: Rule['data'][number]['model'] } {
  const found = ruleGroups()
    .flatMap((g) => g.rules)
    .filter((r) => r.title === title && r.data.some((q) => q.datasourceUid === uid));
  assert.equal(found.length, 1, `one Grafana alert rule ${title} on the data source ${uid}`);
  const rule = found[0] as Rule;
  const queries = rule.data.filter((q) => q.datasourceUid !== '__expr__');
  assert.equal(queries.length, 1, `${title} on ${uid}: one query`);
  const model = (queries[0] as Rule['data'][number]).model;
  assert.doesNotMatch(JSON.stringify(model), /\$/, 'Grafana would expand $NAME from its environment in a provisioned query');
  assert.match(rule.labels.severity ?? '', /^(warning|critical)$/);
  assert.match(rule.annotations.summary ?? '', /\{\{ \$labels\.device \}\}/);
  assert.equal(rule.noDataState, 'OK', `${title}: no device with anything to say is nothing to say`);
  assert.equal(rule.execErrState, 'Error', `${title}: a query that fails is an error, not a quiet fleet`);
  return { rule, model };
}

/** The rule's threshold: its condition, read from a reduce (last). Only the shapes these rules use are understood. */
export function thresholdOf(rule: Rule): { type: 'lt' | 'gt'; limit: number } {
  const threshold = rule.data.find((q) => q.refId === rule.condition)?.model;
  assert.equal(threshold?.type, 'threshold', `${rule.title}: its condition is a threshold`);
  const reduce = rule.data.find((q) => q.refId === threshold.expression)?.model;
  assert.ok(reduce?.type === 'reduce' && reduce.reducer === 'last', `${rule.title}: the threshold reads a reduce (last)`);
  const evaluator = threshold.conditions?.[0]?.evaluator;
  assert.ok(evaluator && (evaluator.type === 'lt' || evaluator.type === 'gt') && evaluator.params.length === 1, JSON.stringify(evaluator));
  return { type: evaluator.type, limit: evaluator.params[0] as number };
}

/** The devices the rule fires for, given each device's last value (Grafana's reduce), by its threshold. */
export function firing(rule: Rule, lastValues: ReadonlyArray<readonly [string, number]>): string[] {
  const { type, limit } = thresholdOf(rule);
  return lastValues
    .filter(([, v]) => (type === 'lt' ? v < limit : v > limit))
    .map(([d]) => d)
    .sort();
}

/**
 * device_health points as the distributor stores health messages (its own point builder, on the
 * envelope as the contract parses it), one message per entry: [device, taken this long ago (ms),
 * the figures beyond those every device sends].
 */
export function storedHealth(messages: ReadonlyArray<[string, number, Partial<HealthPayload>]>) {
  const now = Date.now();
  return messages.flatMap(([deviceId, ago, figures], i) => {
    const payload = { uptimeSeconds: 86_400 * 3, queueMessages: 5, queueBytes: 40_960, awaitingReceipt: 2, version: '0.1.0', intervalSeconds: 60, ...figures, timestamp: new Date(now - ago).toISOString() };
    const raw = { v: 1, deviceId, dataType: 'health', gatewayId: 'gw-1', receivedAt: now, messages: [{ messageId: `h.${i}`, payload }] };
    return healthPoints(parseEnvelope(UplinkEnvelopeSchema, Buffer.from(JSON.stringify(raw))) as EnvelopeOf<'health'>);
  });
}

/** The health messages both databases' tests store: devices over, at and under each threshold, caught up, silent, without the figures. */
export const HOUR_MS = 3_600_000;
const MIB = 1024 * 1024;
export const HEALTH_MESSAGES: ReadonlyArray<[string, number, Partial<HealthPayload>]> = [
  // its oldest message not committed two hours old, and 10 GB free
  ['meter-1', 2 * 60_000, { oldestUnsentAgeSeconds: 7200, freeDiskBytes: 10_000_000_000 }],
  // keeping up: a few messages awaiting their receipt; 1 byte under 64 MiB free
  ['meter-2', 60_000, { oldestUnsentAgeSeconds: 42, freeDiskBytes: 64 * MIB - 1 }],
  // caught up: a backlog of 2.5 hours, then nothing waiting (the field absent) and the disk
  // unreadable; an earlier message's figures are no longer true
  ['meter-3', 3 * 60_000, { oldestUnsentAgeSeconds: 9000, freeDiskBytes: MIB }],
  ['meter-3', 60_000, {}],
  // exactly at the thresholds: not over an hour, not under 64 MiB
  ['meter-4', 60_000, { oldestUnsentAgeSeconds: 3600, freeDiskBytes: 64 * MIB }],
  // silent for 20 hours, its last word a backlog and a nearly full disk: told as of then
  ['meter-5', 20 * HOUR_MS, { oldestUnsentAgeSeconds: 5000, freeDiskBytes: MIB }],
  // silent for 25 hours: out of the query
  ['meter-6', 25 * HOUR_MS, { oldestUnsentAgeSeconds: 99_999, freeDiskBytes: MIB }],
  // fell behind since its last minute
  ['meter-7', 10 * 60_000, { oldestUnsentAgeSeconds: 2, freeDiskBytes: 5 * 1024 * MIB }],
  ['meter-7', 60_000, { oldestUnsentAgeSeconds: 4000, freeDiskBytes: 5 * 1024 * MIB }],
  // drained its backlog, and room was made on its disk
  ['meter-8', 5 * 60_000, { oldestUnsentAgeSeconds: 8000, freeDiskBytes: MIB }],
  ['meter-8', 60_000, { oldestUnsentAgeSeconds: 30, freeDiskBytes: 1024 * MIB }],
  // a device that never tells either figure
  ['meter-9', 60_000, {}],
];
/** The devices of HEALTH_MESSAGES whose last message of the last 24 hours tells the figure (both figures: the same devices). */
export const HEALTH_TELLING = ['meter-1', 'meter-2', 'meter-4', 'meter-5', 'meter-7', 'meter-8'];
