import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { z } from 'zod';
import { InfluxV1 } from '../../scripts/local-stack/databases.ts';
import { InfluxV1Sink } from '../../internal-network/distributor/sinks/influx-v1.ts';
import { DAY_MS, LIMITS } from '../../shared/limits.ts';
import { alertingFile, firing, HEALTH_MESSAGES, HEALTH_TELLING, ruleGroups, ruleOn, storedHealth, thresholdOf, type Rule } from '../helpers/grafana-rules.ts';
import { tempDir } from '../helpers/pki.ts';
import { storedPresences } from '../helpers/stored-presences.ts';

/**
 * Grafana's per-device alert rules on what the internal side holds of each device (InfluxDB), beyond
 * FieldStreamDeviceSilent (test/unit/monitoring.test.ts). The corporate Prometheus scrapes no device,
 * so the field rules of alerts.yml never fire there: what the operators are told of a device comes
 * from these rules. Grafana cannot run here; each rule's query runs on a real InfluxDB 1.x holding
 * what the distributor stores, and the rule's own reduce and threshold are applied to its answer.
 */
type Series = { tags?: Record<string, string> | undefined; values: unknown[][] };
/** Each series' device and last value: what Grafana's reduce (last) takes of it. */
const lastValues = (series: readonly Series[]) => series.map((s) => [s.tags?.device ?? '?', Number(s.values.at(-1)?.[1])] as const);

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

  /** The rule on InfluxDB, and what its one InfluxQL query answers now: one series per device, as Grafana's alerting needs. */
  async function ruleAnswer(title: string): Promise<{ rule: Rule; series: Series[] }> {
    const { rule, model } = ruleOn(title, 'influxdb');
    const answer = await influx.query(model.query as string, DB);
    assert.equal(answer.results?.[0]?.error, undefined, JSON.stringify(answer));
    const series = answer.results?.[0]?.series ?? [];
    const devices = series.map((s) => s.tags?.device);
    assert.equal(new Set(devices).size, devices.length, JSON.stringify(devices));
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
    assert.deepEqual(firing(rule, lastValues(series)), ['meter-1', 'meter-3']);
  });

  describe("on each device's last health message of the last 24 hours", () => {
    before(async () => {
      const points = storedHealth(HEALTH_MESSAGES);
      await new InfluxV1Sink({ url: influx.url, database: DB, username: influx.user, password: influx.password, timeoutMs: 5000 }).write(points);
    });

    it('FieldStreamDeviceBacklog fires for each device whose last health message says its oldest message not committed is over an hour old, and for no other', async () => {
      // Every health message carries the backlog's age, and nothing inside watched it: an operator
      // learnt of a stuck device only when its queue filled and data was dropped or refused.
      const { rule, series } = await ruleAnswer('FieldStreamDeviceBacklog');
      // meter-3's last message says nothing waits: no series, though an earlier one said 2.5 hours.
      assert.deepEqual(series.map((s) => s.tags?.device).sort(), HEALTH_TELLING);
      assert.deepEqual(firing(rule, lastValues(series)), ['meter-1', 'meter-5', 'meter-7']);
      // An hour is past several of a field client's longest waits for a receipt before it resends.
      const { limit } = thresholdOf(rule);
      assert.ok(limit * 1000 >= 4 * LIMITS.commitTimeoutMaxMs, `${limit} s`);
    });

    it('FieldStreamDeviceDiskLow fires for each device whose last health message says under 64 MiB are free on its data folder, and for no other', async () => {
      // Every health message carries the free space, and nothing inside watched it: an operator
      // learnt of a full disk only when the device refused data it could not write.
      const { rule, series } = await ruleAnswer('FieldStreamDeviceDiskLow');
      assert.deepEqual(series.map((s) => s.tags?.device).sort(), HEALTH_TELLING);
      assert.deepEqual(firing(rule, lastValues(series)), ['meter-2', 'meter-5']);
    });
  });
});

describe("monitoring: which database's per-device alert rules run (GRAFANA_DEVICE_ALERTS)", () => {
  const repoRoot = join(import.meta.dirname, '..', '..');
  const yamlDocs = (file: string): unknown[] =>
    JSON.parse(execFileSync('python3', ['-c', 'import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout)'], { input: readFileSync(join(repoRoot, file)), encoding: 'utf8' })) as unknown[];
  const Compose = z.object({ services: z.object({ grafana: z.object({ entrypoint: z.array(z.string()), environment: z.record(z.string(), z.string()) }) }) });
  const Workload = z.looseObject({ kind: z.string(), spec: z.looseObject({ template: z.looseObject({ spec: z.looseObject({ containers: z.array(z.looseObject({ name: z.string(), command: z.array(z.string()).optional() })) }) }) }) });
  const compose = Compose.parse(yamlDocs('docker-compose.internal.yml')[0]).services.grafana;
  // compose writes a `$` of the shell as `$$`.
  const composeCommand = compose.entrypoint.map((a) => a.replaceAll('$$', '$'));
  const k8sCommand = yamlDocs('k8s/base/internal/grafana.yaml')
    .flatMap((d) => {
      const w = Workload.safeParse(d);
      return w.success ? w.data.spec.template.spec.containers.filter((c) => c.name === 'grafana') : [];
    })
    .map((c) => c.command)[0];

  /** Runs the container's entrypoint with the image's /run.sh replaced by a stub that prints the environment it was given. */
  function start(setting: string | undefined): { status: number | null; stderr: string; env: Record<string, string> } {
    const dir = tempDir('grafana-entrypoint');
    try {
      const stub = join(dir.dir, 'run.sh');
      writeFileSync(stub, '#!/bin/sh\nenv\n', { mode: 0o755 });
      const [sh, flag, script, ...rest] = composeCommand;
      assert.deepEqual([sh, flag], ['/bin/sh', '-c']);
      assert.match(script ?? '', /exec \/run\.sh "\$@"\n$/, 'the image entrypoint is what runs last');
      const r = spawnSync('/bin/sh', ['-c', (script ?? '').replace('exec /run.sh', `exec ${stub}`), ...rest], { env: { PATH: process.env.PATH, ...(setting === undefined ? {} : { GRAFANA_DEVICE_ALERTS: setting }) }, encoding: 'utf8' });
      const env = Object.fromEntries(r.stdout.split('\n').filter((l) => l.startsWith('FIELDSTREAM_')).map((l) => l.split('=', 2) as [string, string]));
      return { status: r.status, stderr: r.stderr, env };
    } finally {
      dir.cleanup();
    }
  }

  it('pauses the rules of the database the site does not use, from one setting, and refuses any other value', () => {
    // A rule on a data source the site lacks fails at each evaluation, and execErrState Error
    // alerts on that: a PostgreSQL-only site had four alerts always firing, or none of its own.
    assert.equal(compose.environment.GRAFANA_DEVICE_ALERTS, '${GRAFANA_DEVICE_ALERTS:-influxdb}', 'influxdb by default, as before the setting');
    assert.deepEqual(start('influxdb'), { status: 0, stderr: '', env: { FIELDSTREAM_INFLUXDB_ALERTS_PAUSED: 'false', FIELDSTREAM_POSTGRES_ALERTS_PAUSED: 'true' } });
    assert.deepEqual(start('postgres'), { status: 0, stderr: '', env: { FIELDSTREAM_INFLUXDB_ALERTS_PAUSED: 'true', FIELDSTREAM_POSTGRES_ALERTS_PAUSED: 'false' } });
    // Grafana parses isPaused as a boolean once expanded: an empty one would stop it provisioning anything.
    // Unset (a Kubernetes overlay made before the setting: its key is optional) is influxdb, as before.
    assert.deepEqual(start(undefined), start('influxdb'));
    for (const wrong of ['both', '', 'InfluxDB']) {
      const r = start(wrong);
      assert.equal(r.status, 78, `GRAFANA_DEVICE_ALERTS=${String(wrong)}`);
      assert.match(r.stderr, /GRAFANA_DEVICE_ALERTS is influxdb or postgres/);
      assert.deepEqual(r.env, {});
    }
    // Kubernetes runs the same entrypoint, the setting from the overlay's internal-site.
    assert.deepEqual(k8sCommand, composeCommand);
    assert.match(readFileSync(join(repoRoot, 'k8s', 'overlays', 'internal', 'kustomization.yaml'), 'utf8'), /^ {2}- GRAFANA_DEVICE_ALERTS=influxdb$/m);
    assert.match(readFileSync(join(repoRoot, '.env.example'), 'utf8'), /^GRAFANA_DEVICE_ALERTS=influxdb$/m);
  });

  it("pauses each rule by its own database's variable, the only ones Grafana expands outside the queries", () => {
    const groups = ruleGroups();
    assert.equal(groups.length, 2);
    for (const g of groups) {
      for (const r of g.rules) {
        const uids = r.data.map((q) => q.datasourceUid).filter((u) => u !== '__expr__');
        assert.equal(uids.length, 1, r.uid);
        const expected = { influxdb: '${FIELDSTREAM_INFLUXDB_ALERTS_PAUSED}', postgres: '${FIELDSTREAM_POSTGRES_ALERTS_PAUSED}' }[uids[0] as string];
        assert.equal(r.isPaused, expected, `${g.name} ${r.uid} (${String(uids[0])})`);
      }
    }
    // Every other `${` of the file is in its comments: Grafana expands them in any value.
    const values = readFileSync(alertingFile, 'utf8')
      .split('\n')
      .filter((l) => !/^\s*#/.test(l) && l.includes('${'));
    assert.ok(values.every((l) => /isPaused: \$\{FIELDSTREAM_(INFLUXDB|POSTGRES)_ALERTS_PAUSED\}$/.test(l)), values.join('\n'));
  });
});
