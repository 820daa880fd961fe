import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { z } from 'zod';
import { InfluxV1 } from '../../scripts/local-stack/databases.ts';
import { healthPoints } from '../../internal-network/distributor/points.ts';
import { InfluxV1Sink } from '../../internal-network/distributor/sinks/influx-v1.ts';
import { parseEnvelope, UplinkEnvelopeSchema, type EnvelopeOf } from '../../shared/contract/envelope.ts';
import type { HealthPayload } from '../../shared/contract/payloads.ts';
import { DAY_MS, LIMITS } from '../../shared/limits.ts';
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
  execErrState: z.string(),
  labels: z.record(z.string(), z.string()),
  annotations: z.record(z.string(), z.string()),
});
const AlertingSchema = z.object({ groups: z.array(z.object({ rules: z.array(RuleSchema) })) });

/** The provisioning file as Grafana reads it (YAML, through PyYAML: Node has no YAML parser of its own). */
function rules(): Array<z.infer<typeof RuleSchema>> {
  const json = execFileSync('python3', ['-c', 'import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)'], { input: readFileSync(alertingFile), encoding: 'utf8' });
  return AlertingSchema.parse(JSON.parse(json)).groups.flatMap((g) => g.rules);
}

type Series = { tags?: Record<string, string> | undefined; values: unknown[][] };

/**
 * The devices a rule fires for, given its InfluxQL query's answer: Grafana's reduce (last) of each
 * series, then its threshold. Only the shapes these rules use are understood; any other fails.
 */
function firing(rule: z.infer<typeof RuleSchema>, series: readonly Series[]): string[] {
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

/**
 * device_health points as the distributor stores health messages (its own point builder, on the
 * envelope as the contract parses it), one message per entry: [device, taken this long ago (ms),
 * the figures beyond those every device sends].
 */
function storedHealth(messages: ReadonlyArray<[string, number, Partial<HealthPayload>]>) {
  const now = Date.now();
  return messages.flatMap(([deviceId, ago, figures], i) => {
    const payload = { uptimeSeconds: 86_400 * 3, queueMessages: 5, queueBytes: 40_960, awaitingReceipt: 2, version: '0.1.0', intervalSeconds: 60, ...figures, timestamp: new Date(now - ago).toISOString() };
    const raw = { v: 1, deviceId, dataType: 'health', gatewayId: 'gw-1', receivedAt: now, messages: [{ messageId: `h.${i}`, payload }] };
    return healthPoints(parseEnvelope(UplinkEnvelopeSchema, Buffer.from(JSON.stringify(raw))) as EnvelopeOf<'health'>);
  });
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

  /** The rule, and what its one InfluxQL query answers now: one series per device, as Grafana's alerting needs. */
  async function ruleAnswer(title: string): Promise<{ rule: z.infer<typeof RuleSchema>; series: Series[] }> {
    const rule = rules().find((r) => r.title === title);
    assert.ok(rule, `a Grafana alert rule ${title} is provisioned`);
    const queries = rule.data.filter((q) => q.datasourceUid === 'influxdb');
    assert.equal(queries.length, 1);
    const query = queries[0]?.model.query as string;
    assert.doesNotMatch(query, /\$/, 'Grafana would expand $NAME from its environment in a provisioned query');
    const answer = await influx.query(query, DB);
    assert.equal(answer.results?.[0]?.error, undefined, JSON.stringify(answer));
    const series = answer.results?.[0]?.series ?? [];
    const devices = series.map((s) => s.tags?.device);
    assert.equal(new Set(devices).size, devices.length, JSON.stringify(devices));
    assert.match(rule.labels.severity ?? '', /^(warning|critical)$/);
    assert.match(rule.annotations.summary ?? '', /\{\{ \$labels\.device \}\}/);
    assert.equal(rule.noDataState, 'OK', `${title}: no device with anything to say is nothing to say`);
    assert.equal(rule.execErrState, 'Error', `${title}: a query that fails is an error, not a quiet fleet`);
    return { rule, series };
  }

  it("FieldStreamDeviceCertificateExpiring fires for each device whose certificate has under 30 days left by its gateway's last word, connected or gone, and for no other", async () => {
    // Only the field rules of alerts.yml watched certificates, and they fire where a device is
    // scraped: the corporate Prometheus scrapes none, so a fleet's certificates ran out unannounced.
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
    const { rule, series } = await ruleAnswer('FieldStreamDeviceCertificateExpiring');
    assert.deepEqual(firing(rule, series), ['meter-1', 'meter-3']);
  });

  describe("on each device's last health message of the last 24 hours", () => {
    const HOUR_MS = 3_600_000;
    const MIB = 1024 * 1024;
    before(async () => {
      const points = storedHealth([
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
      ]);
      await new InfluxV1Sink({ url: influx.url, database: DB, username: influx.user, password: influx.password, timeoutMs: 5000 }).write(points);
    });

    it('FieldStreamDeviceBacklog fires for each device whose last health message says its oldest message not committed is over an hour old, and for no other', async () => {
      // Every health message carries the backlog's age, and nothing inside watched it: an operator
      // learnt of a stuck device only when its queue filled and data was dropped or refused.
      const { rule, series } = await ruleAnswer('FieldStreamDeviceBacklog');
      // meter-3's last message says nothing waits: no series, though an earlier one said 2.5 hours.
      assert.deepEqual(series.map((s) => s.tags?.device).sort(), ['meter-1', 'meter-2', 'meter-4', 'meter-5', 'meter-7', 'meter-8']);
      assert.deepEqual(firing(rule, series), ['meter-1', 'meter-5', 'meter-7']);
      // An hour is past several of a field client's longest waits for a receipt before it resends.
      const limit = rule.data.find((q) => q.refId === rule.condition)?.model.conditions?.[0]?.evaluator.params[0] as number;
      assert.ok(limit * 1000 >= 4 * LIMITS.commitTimeoutMaxMs, `${limit} s`);
    });

    it('FieldStreamDeviceDiskLow fires for each device whose last health message says under 64 MiB are free on its data folder, and for no other', async () => {
      // Every health message carries the free space, and nothing inside watched it: an operator
      // learnt of a full disk only when the device refused data it could not write.
      const { rule, series } = await ruleAnswer('FieldStreamDeviceDiskLow');
      assert.deepEqual(series.map((s) => s.tags?.device).sort(), ['meter-1', 'meter-2', 'meter-4', 'meter-5', 'meter-7', 'meter-8']);
      assert.deepEqual(firing(rule, series), ['meter-2', 'meter-5']);
    });
  });
});
