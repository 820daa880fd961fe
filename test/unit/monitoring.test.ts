import assert from 'node:assert/strict';
import { execFileSync, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { z } from 'zod';
import { InfluxV1 } from '../../scripts/local-stack/databases.ts';
import { InfluxV1Sink } from '../../internal-network/distributor/sinks/influx-v1.ts';
import type { StoredPoint } from '../../internal-network/distributor/points.ts';
import { DeadLetters } from '../../internal-network/distributor/dead-letter.ts';
import { FileStore } from '../../internal-network/distributor/file-store.ts';
import { MessageHandler } from '../../internal-network/distributor/message-handler.ts';
import { DistributorMetrics } from '../../internal-network/distributor/metrics.ts';
import { consoleMetrics, noFeedRefusals, noManageAuthFailures, type ConsoleStats } from '../../internal-network/console/metrics.ts';
import { Fleet } from '../../internal-network/console/fleet/fleet.ts';
import type { OwnPointsWriter } from '../../internal-network/console/own-points.ts';
import { ReplayWindows } from '../../internal-network/distributor/security/replay-window.ts';
import { MessageVerifier } from '../../internal-network/distributor/security/verifier.ts';
import { DeviceKeyRegistry } from '../../internal-network/shared/device-keys.ts';
import { SECURITY_REFUSAL_CODES } from '../../internal-network/distributor/security/refusal-events.ts';
import { CONNECTION_REFUSAL_CODES, GatewayMetrics } from '../../dmz/gateway/metrics.ts';
import { ServiceMetrics } from '../../shared/metrics/registry.ts';
import { certificateExpiry } from '../../shared/metrics/certificates.ts';
import { createCertificateAuthority } from '../../pki/certificates.ts';
import { fieldClientMetrics } from '../../field-client/src/metrics.ts';
import { DurableQueue } from '../../field-client/src/queue/durable-queue.ts';
import type { FieldClient } from '../../field-client/src/field-client.ts';
import type { GatewayConnection } from '../../field-client/src/gateway-connection.ts';
import type { CommandHandlers } from '../../field-client/src/commands.ts';
import type { FileOutbox } from '../../field-client/src/files/file-outbox.ts';
import { GATEWAY_SECURITY_CODES } from '../../shared/contract/envelope.ts';
import { gatewaySecurityTopic, gatewayUplinkTopic, uplinkTopic } from '../../shared/contract/topics.ts';
import { CONSOLE, DAY_MS, TIMINGS } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';
import { parseExposition as parseSamples } from '../helpers/exposition.ts';
import { withFileSizeLimit } from '../helpers/file-size-limit.ts';
import { storedPresences } from '../helpers/stored-presences.ts';
import { alertDescription, promtoolTestRules, scrapedSeries } from '../helpers/promtool.ts';
import { tempDir } from '../helpers/pki.ts';
import { TestPrometheus } from '../helpers/prometheus.ts';
import { eventually } from '../helpers/ws-device.ts';

/**
 * The monitoring files of monitoring/ (docs/monitoring.md), proved as far as can be without Grafana:
 * Prometheus's configurations and alert rules pass promtool; every dashboard parses, names only
 * provisioned data sources, and each of its queries runs without error on the real engine: PromQL
 * on a real Prometheus (its HTTP API; promtool has no offline query check), InfluxQL on a real
 * InfluxDB 1.x holding points in the shapes the distributor writes.
 */
const repoRoot = join(import.meta.dirname, '..', '..');
const mon = join(repoRoot, 'monitoring');

const VectorSchema = z.array(z.object({ metric: z.record(z.string(), z.string()), value: z.tuple([z.number(), z.string()]) }));

const TargetSchema = z.looseObject({
  refId: z.string(),
  datasource: z.object({ type: z.string(), uid: z.string() }).optional(),
  expr: z.string().optional(),
  query: z.string().optional(),
  rawSql: z.string().optional(),
});
interface Panel {
  id: number;
  title: string;
  type: string;
  datasource?: { type: string; uid: string } | undefined;
  /** the panel's minimum interval (Grafana's "Min interval"), e.g. "30s" */
  interval?: string | undefined;
  targets?: Array<z.infer<typeof TargetSchema>> | undefined;
  panels?: Panel[] | undefined;
}
const PanelSchema: z.ZodType<Panel> = z.looseObject({
  id: z.number(),
  title: z.string(),
  type: z.string(),
  datasource: z.object({ type: z.string(), uid: z.string() }).optional(),
  interval: z.string().optional(),
  targets: z.array(TargetSchema).optional(),
  get panels() {
    return z.array(PanelSchema).optional();
  },
});
const DashboardSchema = z.looseObject({
  uid: z.string(),
  title: z.string(),
  panels: z.array(PanelSchema),
  templating: z.object({ list: z.array(z.looseObject({ name: z.string(), type: z.string(), datasource: z.object({ type: z.string(), uid: z.string() }).optional(), query: z.unknown().optional() })) }),
});

/** A duration of Prometheus's and Grafana's in seconds ("15s", "1m", "2h"); NaN for any other text. */
function durationS(text: string): number {
  const m = /^(\d+)(s|m|h)$/.exec(text);
  return m ? Number(m[1]) * { s: 1, m: 60, h: 3600 }[m[2] as 's' | 'm' | 'h'] : NaN;
}

interface Query {
  where: string;
  uid: string;
  text: string;
}

const dashboardFiles = readdirSync(join(mon, 'grafana', 'dashboards')).filter((f) => f.endsWith('.json'));
const dashboards = dashboardFiles.map((f) => ({ file: f, d: DashboardSchema.parse(JSON.parse(readFileSync(join(mon, 'grafana', 'dashboards', f), 'utf8'))) }));

/** Every query of every panel (rows' panels too) and template variable, with the data source it goes to. */
function queriesOf(file: string, d: z.infer<typeof DashboardSchema>): Query[] {
  const out: Query[] = [];
  const walk = (panels: readonly Panel[]) => {
    for (const p of panels) {
      for (const t of p.targets ?? []) {
        const uid = t.datasource?.uid ?? p.datasource?.uid;
        assert.ok(uid, `${file} "${p.title}" ${t.refId} names its data source`);
        const text = t.expr ?? t.query ?? t.rawSql;
        assert.ok(text, `${file} "${p.title}" ${t.refId} has a query`);
        out.push({ where: `${file} "${p.title}" ${t.refId}`, uid, text });
      }
      walk(p.panels ?? []);
    }
  };
  walk(d.panels);
  for (const v of d.templating.list) {
    if (v.type !== 'query') continue;
    assert.ok(v.datasource?.uid && typeof v.query === 'string', `${file} variable ${v.name}`);
    out.push({ where: `${file} variable $${v.name}`, uid: v.datasource.uid, text: v.query });
  }
  return out;
}
const allQueries = dashboards.flatMap(({ file, d }) => queriesOf(file, d));

/**
 * Grafana's alert rules (provisioning/alerting), parsed as YAML by PyYAML (python3-yaml, which
 * Debian's docker-compose, a test dependency, depends on): Node has no YAML parser of its own.
 */
const RuleQuerySchema = z.object({
  refId: z.string(),
  datasourceUid: z.string(),
  relativeTimeRange: z.object({ from: z.number().positive(), to: z.number().min(0) }).optional(),
  model: z.looseObject({ refId: z.string(), query: z.string().optional(), rawSql: z.string().optional(), type: z.string().optional(), expression: z.string().optional() }),
});
const AlertingSchema = z.object({
  apiVersion: z.literal(1),
  groups: z.array(
    z.object({
      orgId: z.number(),
      name: z.string(),
      folder: z.string(),
      interval: z.string(),
      rules: z.array(
        z.looseObject({
          uid: z.string(),
          title: z.string(),
          condition: z.string(),
          data: z.array(RuleQuerySchema).min(1),
          noDataState: z.enum(['NoData', 'Alerting', 'OK']),
          execErrState: z.enum(['Error', 'Alerting', 'OK']),
          for: z.string(),
          labels: z.record(z.string(), z.string()),
          annotations: z.record(z.string(), z.string()),
        }),
      ),
    }),
  ),
});
const alertingDir = join(mon, 'grafana', 'provisioning', 'alerting');
const alertingFiles = readdirSync(alertingDir).filter((f) => f.endsWith('.yml'));
const alerting = alertingFiles.map((f) => {
  const json = execFileSync('python3', ['-c', 'import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)'], { input: readFileSync(join(alertingDir, f)), encoding: 'utf8' });
  return { file: f, a: AlertingSchema.parse(JSON.parse(json)) };
});
const alertRules = alerting.flatMap(({ file, a }) => a.groups.flatMap((g) => g.rules.map((r) => ({ file, r }))));

/**
 * Grafana's macros and our template variables, replaced by the plain values Grafana would put in
 * their place, so that the engines themselves can judge the text:
 *   PromQL:   $__rate_interval → 1m, $__interval → 15s, $__range → 1h
 *   InfluxQL: $timeFilter → time > now() - 1h, $__interval → 10s, $__to → now (epoch ms, as Grafana gives it),
 *             $device → (pump-7|pump-8) (a multi-value selection, as Grafana renders it in a regex),
 *             $field → temperature
 * Anything left that starts with `$` (another macro, a variable nobody defined) fails the test.
 */
function substituteMacros(text: string, kind: 'promql' | 'influxql'): string {
  const values: Record<string, string> =
    kind === 'promql'
      ? { __rate_interval: '1m', __interval: '15s', __range: '1h' }
      : { timeFilter: 'time > now() - 1h', __interval: '10s', __to: String(Date.now()), device: '(pump-7|pump-8)', field: 'temperature' };
  const out = text.replace(/\$(\w+)/g, (whole, name: string) => values[name] ?? whole);
  assert.doesNotMatch(out, /\$\w/, `a macro or variable left unsubstituted in: ${out}`);
  return out;
}

/**
 * Renders the internal Prometheus's configuration as its container does (render-prometheus.sh with
 * the renderer on the PATH), with only the settings given; `onBrokers`: compose's
 * --dmz-prometheus-on-broker-hosts.
 */
function renderPrometheus(env: Record<string, string>, output: string, onBrokers = false): SpawnSyncReturns<string> {
  const p = join(mon, 'prometheus');
  const args = [...(onBrokers ? ['--dmz-prometheus-on-broker-hosts'] : []), join(p, 'prometheus.yml'), join(p, 'dmz-federate.yml'), output];
  return spawnSync(join(p, 'render-prometheus.sh'), args, { env: { PATH: `${join(repoRoot, 'scripts')}:${process.env.PATH}`, ...env }, encoding: 'utf8' });
}

const FederationJob = z.object({
  job_name: z.string(),
  honor_labels: z.boolean().optional(),
  metrics_path: z.string().optional(),
  sample_limit: z.number().optional(),
  label_limit: z.number().optional(),
  label_name_length_limit: z.number().optional(),
  label_value_length_limit: z.number().optional(),
  static_configs: z.array(z.object({ targets: z.array(z.string()) })).optional(),
  relabel_configs: z.array(z.record(z.string(), z.unknown())).optional(),
  metric_relabel_configs: z.array(z.looseObject({ action: z.string().optional() })),
});
/** The federation jobs of a rendered configuration (those with metrics_path /federate), parsed by PyYAML. */
function federationJobs(yamlText: string): Array<z.infer<typeof FederationJob>> {
  const json = execFileSync('python3', ['-c', 'import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)'], { input: yamlText, encoding: 'utf8' });
  const { scrape_configs } = z.object({ scrape_configs: z.array(z.looseObject({ metrics_path: z.string().optional() })) }).parse(JSON.parse(json));
  return scrape_configs.filter((j) => j.metrics_path === '/federate').map((j) => FederationJob.parse(j));
}

describe('monitoring: Prometheus configuration and alert rules', () => {
  it('promtool check config passes on the internal (rendered as in its container, for one DMZ server and for two) and the DMZ Prometheus configurations', () => {
    const tmp = tempDir('promcfg');
    try {
      const rendered = join(tmp.dir, 'prometheus.yml');
      copyFileSync(join(mon, 'prometheus', 'alerts.yml'), join(tmp.dir, 'alerts.yml'));
      // The federation's host is a setting of its own (compose passes DMZ_BROKER_HOST when it is
      // empty; Kubernetes sets the DMZ Prometheus's own Service address): never the broker's as such.
      const refused = renderPrometheus({ DMZ_BROKER_HOST: 'fs.example.org' }, rendered);
      assert.equal(refused.status, 78);
      assert.match(refused.stderr, /set DMZ_PROMETHEUS_HOSTS \(host:port,\.\.\.\) or DMZ_PROMETHEUS_HOST/);
      for (const [env, targets] of [
        [{ DMZ_PROMETHEUS_HOST: '203.0.113.21' }, ['203.0.113.21:9091']],
        [{ DMZ_PROMETHEUS_HOSTS: '203.0.113.21,dmz2.example.org:19091' }, ['203.0.113.21:9091', 'dmz2.example.org:19091']],
      ] as const) {
        const r = renderPrometheus(env, rendered);
        assert.equal(r.status, 0, r.stderr);
        const jobs = federationJobs(readFileSync(rendered, 'utf8'));
        assert.deepEqual(jobs.map((j) => j.static_configs?.flatMap((c) => c.targets)), targets.map((t) => [t]));
        // Every DMZ server's job has every protection of the one before: the filters, the limits,
        // and last its own server's name over whatever a series claims.
        for (const [i, j] of jobs.entries()) {
          const server = targets[i] as string;
          assert.equal(j.job_name, i === 0 ? 'dmz-federate' : `dmz-federate-${i + 1}`);
          assert.deepEqual(
            { honor: j.honor_labels, path: j.metrics_path, sample: j.sample_limit, labels: j.label_limit, name: j.label_name_length_limit, value: j.label_value_length_limit },
            { honor: true, path: '/federate', sample: 10_000, labels: 16, name: 64, value: 256 },
            j.job_name,
          );
          assert.deepEqual(j.relabel_configs, [{ target_label: 'job', replacement: 'dmz-federate' }, { target_label: 'dmz_server', replacement: server }]);
          assert.deepEqual(j.metric_relabel_configs.map((r) => r.action ?? 'replace'), ['keep', 'keep', 'replace']);
          assert.deepEqual(j.metric_relabel_configs.at(-1), { target_label: 'dmz_server', replacement: server }, `${j.job_name}: dmz_server set last, to ${server}`);
          assert.deepEqual(j.metric_relabel_configs.slice(0, 2), jobs[0]?.metric_relabel_configs.slice(0, 2));
        }
        const out = execFileSync('promtool', ['check', 'config', rendered], { encoding: 'utf8' });
        assert.match(out, /SUCCESS: 1 rule files found/);
      }
      execFileSync('promtool', ['check', 'config', join(mon, 'prometheus', 'dmz-prometheus.yml')], { encoding: 'utf8' });
    } finally {
      tmp.cleanup();
    }
  });

  it('render-prometheus.sh: one job per DMZ server from DMZ_PROMETHEUS_HOSTS, DMZ_PROMETHEUS_HOST, or (compose) each DMZ_BROKER_HOSTS host; refuses one DMZ Prometheus for several DMZ brokers, and a malformed or repeated entry', () => {
    const tmp = tempDir('promcfg');
    try {
      const rendered = join(tmp.dir, 'prometheus.yml');
      const targets = (env: Record<string, string>, onBrokers = false): string[] => {
        const r = renderPrometheus(env, rendered, onBrokers);
        assert.equal(r.status, 0, r.stderr);
        return federationJobs(readFileSync(rendered, 'utf8')).flatMap((j) => j.static_configs?.flatMap((c) => c.targets) ?? []);
      };
      const brokers = { DMZ_BROKER_HOST: 'dmz1.example.org', DMZ_BROKER_HOSTS: 'dmz1.example.org:8883, dmz2.example.org' };
      assert.deepEqual(targets({ DMZ_PROMETHEUS_HOSTS: ' a.example.org, b.example.org:19091 ,', DMZ_PROMETHEUS_PORT: '9191' }), ['a.example.org:9191', 'b.example.org:19091']);
      assert.deepEqual(targets({ ...brokers, DMZ_PROMETHEUS_HOSTS: 'm1:9091,m2:9091', DMZ_PROMETHEUS_HOST: 'ignored' }), ['m1:9091', 'm2:9091']);
      assert.deepEqual(targets({ DMZ_BROKER_HOST: 'dmz1.example.org', DMZ_PROMETHEUS_HOST: 'm.example.org', DMZ_PROMETHEUS_PORT: '19091' }), ['m.example.org:19091']);
      assert.deepEqual(targets({ DMZ_BROKER_HOST: 'dmz1.example.org', DMZ_BROKER_HOSTS: 'dmz1.example.org:8883', DMZ_PROMETHEUS_HOST: 'm.example.org' }), ['m.example.org:9091']);
      // Compose: each DMZ server runs its own DMZ Prometheus, on DMZ_PROMETHEUS_PORT.
      assert.deepEqual(targets(brokers, true), ['dmz1.example.org:9091', 'dmz2.example.org:9091']);
      assert.deepEqual(targets({ ...brokers, DMZ_PROMETHEUS_PORT: '19091' }, true), ['dmz1.example.org:19091', 'dmz2.example.org:19091']);
      assert.deepEqual(targets({ DMZ_BROKER_HOST: 'fs.example.org' }, true), ['fs.example.org:9091']);
      const refusals: Array<[Record<string, string>, boolean, RegExp]> = [
        [brokers, false, /set DMZ_PROMETHEUS_HOSTS/],
        [{ ...brokers, DMZ_PROMETHEUS_HOST: 'm.example.org' }, true, /DMZ_BROKER_HOSTS lists 2 DMZ brokers but DMZ_PROMETHEUS_HOST names one DMZ Prometheus/],
        [{ DMZ_PROMETHEUS_HOSTS: 'a:9091,b,a' }, false, /"a:9091" is listed twice/],
        [{ DMZ_PROMETHEUS_HOSTS: ' , ' }, false, /DMZ_PROMETHEUS_HOSTS lists no DMZ Prometheus/],
        [{ DMZ_PROMETHEUS_HOST: 'm:9091' }, false, /bad host in "m:9091:9091" \(DMZ_PROMETHEUS_HOST\)/],
      ];
      for (const bad of ['a:', ':9091', 'a:0', 'a:09091', 'a:65536', 'a:9x', 'a"b:9091', 'a b]:9091', '*', 'a/b']) refusals.push([{ DMZ_PROMETHEUS_HOSTS: bad }, false, /^render-prometheus: bad (host|port) in /]);
      for (const [env, onBrokers, message] of refusals) {
        const r = renderPrometheus(env, rendered, onBrokers);
        assert.equal(r.status, 78, `${JSON.stringify(env)}: ${r.stderr}`);
        assert.match(r.stderr, message, JSON.stringify(env));
      }
    } finally {
      tmp.cleanup();
    }
  });

  it('promtool check rules passes on alerts.yml; every rule has a severity, a summary and a description', () => {
    const out = execFileSync('promtool', ['check', 'rules', join(mon, 'prometheus', 'alerts.yml')], { encoding: 'utf8' });
    assert.match(out, /SUCCESS: \d+ rules found/);
    const text = readFileSync(join(mon, 'prometheus', 'alerts.yml'), 'utf8');
    const rules = text.split(/^\s+- alert: /m).slice(1);
    assert.ok(rules.length >= 10);
    for (const r of rules) {
      const name = r.split('\n')[0];
      assert.match(r, /\n\s+severity: (critical|warning)\n/, `${name} severity`);
      assert.match(r, /\n\s+summary: /, `${name} summary`);
      assert.match(r, /\n\s+description: /, `${name} description`);
    }
    // The rules the issue asks for, by what they watch.
    for (const expr of [
      'fieldstream_mosquitto_up == 0',
      'fieldstream_bridge_connected == 0',
      'fieldstream_distributor_dead_letters_total',
      'fieldstream_distributor_write_failures_total',
      'fieldstream_distributor_points_total',
      'fieldstream_field_certificate_expiry_timestamp_seconds - time() < 30 * 86400',
      'fieldstream_distributor_security_events_total',
      'deriv(fieldstream_field_queue_messages[15m]) > 0',
    ])
      assert.ok(text.includes(expr), expr);
  });
});

/**
 * What the internal Prometheus takes from the DMZ servers' /federate. A DMZ server is assumed
 * compromised (SECURITY.md): whoever holds one answers /federate with what they like. The internal
 * Prometheus takes that answer with `honor_labels: true` (the gateways' own job and instance), so it
 * must keep only the gateways' own series, no more of them than a DMZ holds, and each under the name
 * of the server it pulled them from (dmz_server), which no answer can change.
 *
 * Two DMZ servers, as DMZ_PROMETHEUS_HOSTS lists them: the first a compromised one (an HTTP server
 * answering /federate what each test sets), the second an honest one, a real Prometheus running the
 * shipped dmz-prometheus.yml that scrapes a gateway's real /metrics (its target, found by Docker's
 * DNS in a deployment, given here as an address). Both answer from the same gateway address, as two
 * servers' gateways do on their own networks.
 */
describe("monitoring: the internal Prometheus pulls every DMZ server's /federate, keeps each one's gateways apart, and takes only the gateways' series", () => {
  let tmp: { dir: string; cleanup(): void };
  let prom: TestPrometheus;
  let dmzProm: TestPrometheus;
  let rogueServer: Server;
  let gatewayServer: Server;
  /** what the compromised DMZ server answers at /federate, and with which status */
  let answer = '';
  let status = 200;
  /** the dmz_server of each: the host:port DMZ_PROMETHEUS_HOSTS lists */
  let rogue = '';
  let honest = '';
  /** the honest server's gateway, as its DMZ Prometheus names it (instance) */
  let gatewayInstance = '';
  /** a certificate file the gateways' series read, as they read MQTT_CERT_FILE */
  let certFile = '';
  before(async () => {
    tmp = tempDir('federate');
    certFile = join(tmp.dir, 'gateway.crt');
    writeFileSync(certFile, createCertificateAuthority('gateway', 30).certPem);
    const gateway = new GatewayMetrics();
    gateway.bind({ brokerConnected: () => true, connections: () => 5 });
    gatewayServer = createServer((_req, res) => {
      void gateway.metrics.registry.metrics().then((text) => {
        res.writeHead(200, { 'content-type': gateway.metrics.registry.contentType });
        res.end(text);
      });
    });
    rogueServer = createServer((req, res) => {
      res.writeHead(req.url?.startsWith('/federate') ? status : 404, { 'content-type': 'text/plain; version=0.0.4' });
      res.end(answer);
    });
    for (const server of [gatewayServer, rogueServer]) await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    gatewayInstance = `127.0.0.1:${(gatewayServer.address() as AddressInfo).port}`;
    // The shipped DMZ configuration, its gateways at the test's address, scraped every second.
    const dmzText = readFileSync(join(mon, 'prometheus', 'dmz-prometheus.yml'), 'utf8');
    const dmzConfig = dmzText
      .replace(/dns_sd_configs:\n\s+- names: \["gateway-metrics"\]\n\s+type: A\n\s+port: 9464/, `static_configs:\n      - targets: ["${gatewayInstance}"]`)
      .replace('scrape_interval: 15s', 'scrape_interval: 1s');
    assert.equal(dmzConfig.split('\n').length, dmzText.split('\n').length - 2, 'only the gateways\' address and the interval differ');
    dmzProm = await TestPrometheus.start(join(tmp.dir, 'dmz'), dmzConfig);
    rogue = `127.0.0.1:${(rogueServer.address() as AddressInfo).port}`;
    honest = new URL(dmzProm.url).host;
    const dir = join(tmp.dir, 'internal');
    mkdirSync(dir);
    const rendered = join(dir, 'rendered.yml');
    const r = renderPrometheus({ DMZ_PROMETHEUS_HOSTS: `${rogue},${honest}` }, rendered);
    assert.equal(r.status, 0, r.stderr);
    copyFileSync(join(mon, 'prometheus', 'alerts.yml'), join(dir, 'alerts.yml'));
    // The shipped configuration, each DMZ server's federation pulled every second instead of every 30 s.
    const text = readFileSync(rendered, 'utf8');
    const fast = text.replaceAll(/scrape_interval: 30s\n(\s+)scrape_timeout: 20s/g, 'scrape_interval: 1s\n$1scrape_timeout: 1s');
    assert.equal(fast.split('scrape_interval: 1s').length, 3, 'both federation jobs sped up');
    prom = await TestPrometheus.start(dir, fast);
  });
  after(async () => {
    await prom?.stop();
    await dmzProm?.stop();
    rogueServer?.close();
    gatewayServer?.close();
    tmp?.cleanup();
  });

  /** Waits for the next federation scrape's outcome of one DMZ server: its up{job="dmz-federate"} once it is `up`. */
  async function scraped(server: string, up: 0 | 1): Promise<void> {
    const t0 = Date.now();
    const sel = `up{job="dmz-federate",dmz_server="${server}"}`;
    for (;;) {
      const v = await prom.scalar(sel);
      const last = await prom.scalar(`timestamp(${sel})`);
      if (v === up && last !== undefined && last * 1000 > t0 + 1000) return;
      assert.ok(Date.now() - t0 < 20_000, `${sel} is not ${up}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  /** A gateway's whole exposition (process metrics too), as a DMZ Prometheus federates it, with the labels given. */
  async function gatewaySeries(labels: string, connections: number): Promise<string[]> {
    const gateway = new GatewayMetrics(new ServiceMetrics('gateway', { processMetrics: true }));
    certificateExpiry(gateway.metrics, [{ setting: 'MQTT_CERT_FILE', path: certFile }]); // as gateway.ts adds them
    gateway.bind({ brokerConnected: () => true, connections: () => connections });
    gateway.refusal('GATEWAY_FRAME_INVALID');
    return (await gateway.metrics.registry.metrics())
      .split('\n')
      .filter((l) => l && !l.startsWith('#'))
      .map((l) => (l.includes('{') ? l.replace('{', `{${labels},`) : l.replace(' ', `{${labels}} `)));
  }

  it("pulls each DMZ server's gateways under its own dmz_server, the same gateway address on both two gateways", async () => {
    const own = await gatewaySeries(`job="gateway",instance="${gatewayInstance}",fieldstream="dmz"`, 3);
    answer = [...own, `up{job="gateway",instance="${gatewayInstance}",fieldstream="dmz"} 1`, ''].join('\n');
    await scraped(rogue, 1);
    await scraped(honest, 1);
    await eventually(async () => ((await prom.scalar(`fieldstream_gateway_connections{dmz_server="${honest}"}`)) === 5 ? true : undefined), 20_000, "the honest server's gateway federated");
    const connections = await prom.query('fieldstream_gateway_connections');
    const byServer = Object.fromEntries(VectorSchema.parse(connections.data?.result).map((v) => [v.metric.dmz_server, { instance: v.metric.instance, value: v.value[1] }]));
    assert.deepEqual(byServer, { [rogue]: { instance: gatewayInstance, value: '3' }, [honest]: { instance: gatewayInstance, value: '5' } });
    assert.equal(await prom.scalar('sum(fieldstream_gateway_connections)'), 8, "FieldStreamNoDataWritten's sum: every DMZ server's gateways");
    assert.equal(await prom.scalar(`count({job="gateway",__name__=~"fieldstream_.*",dmz_server="${rogue}"})`), own.length, 'every series of the gateway is kept');
    for (const server of [rogue, honest]) {
      assert.equal(await prom.scalar(`up{job="gateway",dmz_server="${server}"}`), 1, `${server}: its DMZ Prometheus's own up of the gateway`);
      assert.equal(await prom.scalar(`up{job="dmz-federate",dmz_server="${server}",instance="${server}"}`), 1, `${server}: the federation's up`);
    }
    assert.equal(await prom.scalar('count({job=~"gateway|dmz-federate",dmz_server=""})'), undefined, 'no series of the DMZ without its server');
  });

  it("keeps the gateways' series and drops what a compromised DMZ server forges of the internal services' (distributor, console, up)", async () => {
    const gw = `job="gateway",instance="10.0.0.5:9464",fieldstream="dmz"`;
    const own = await gatewaySeries(gw, 3);
    answer = [
      ...own,
      `up{${gw}} 1`,
      // Forged: the internal services' series, under their own jobs or under the gateway's.
      'fieldstream_distributor_points_total{job="distributor",instance="distributor-metrics:9465",service="distributor"} 123456',
      `fieldstream_distributor_points_total{${gw},service="gateway"} 654321`,
      'fieldstream_console_feed_refused_total{job="console",instance="console-metrics:9469",service="console",reason="STORED_FEED_UNAUTHENTICATED"} 0',
      'fieldstream_broker_connected{job="distributor",instance="forged:9465",service="distributor"} 1',
      `fieldstream_broker_connected{${gw},service="distributor"} 0`,
      'up{job="distributor",instance="forged:9465"} 1',
      '',
    ].join('\n');
    await scraped(rogue, 1);
    assert.equal(await prom.scalar('fieldstream_gateway_connections{job="gateway",instance="10.0.0.5:9464"}'), 3);
    assert.equal(await prom.scalar('count({job="gateway",instance="10.0.0.5:9464",__name__=~"fieldstream_.*"})'), own.length, 'every series of the gateway is kept');
    assert.ok(((await prom.scalar('fieldstream_certificate_expiry_timestamp_seconds{job="gateway",instance="10.0.0.5:9464",setting="MQTT_CERT_FILE"}')) ?? 0) > 0, "the gateway's certificate's end, for FieldStreamServiceCertificateExpiringSoon");
    assert.equal(await prom.scalar('up{job="gateway",instance="10.0.0.5:9464"}'), 1);
    const forged = await prom.query('{__name__=~"fieldstream_distributor_.*|fieldstream_console_.*"} or up{instance="forged:9465"} or fieldstream_broker_connected{service!="gateway"}');
    assert.deepEqual(forged.data?.result, [], JSON.stringify(forged.data?.result));
  });

  it("a compromised DMZ server cannot write, overwrite or hide another DMZ server's series: whatever dmz_server it claims, its series are its own", async () => {
    const claimed = `job="gateway",instance="${gatewayInstance}",fieldstream="dmz",dmz_server="${honest}"`;
    answer = [
      // The honest server's gateway, claimed: another value, a broker lost, its scrape failed.
      `fieldstream_gateway_connections{${claimed},service="gateway"} 999`,
      `fieldstream_broker_connected{${claimed},service="gateway"} 0`,
      `up{${claimed}} 0`,
      // The honest server's federation said down, and a DMZ server nobody listed.
      `up{job="dmz-federate",instance="${honest}",dmz_server="${honest}"} 0`,
      `fieldstream_gateway_connections{job="gateway",instance="10.9.9.9:9464",fieldstream="dmz",dmz_server="dmz9.example.org:9091",service="gateway"} 7`,
      '',
    ].join('\n');
    await scraped(rogue, 1);
    await scraped(honest, 1);
    const honestOnes = VectorSchema.parse((await prom.query(`{dmz_server="${honest}",__name__=~"fieldstream_gateway_connections|fieldstream_broker_connected|up"}`)).data?.result);
    assert.deepEqual(
      honestOnes.map((v) => `${v.metric.__name__}{${v.metric.job}} ${v.value[1]}`).sort(),
      ['fieldstream_broker_connected{gateway} 1', 'fieldstream_gateway_connections{gateway} 5', 'up{dmz-federate} 1', 'up{gateway} 1'],
      "the honest server's series are its own only",
    );
    assert.equal(await prom.scalar(`fieldstream_gateway_connections{dmz_server="${rogue}",instance="${gatewayInstance}"}`), 999, "the claim is stored as the compromised server's word");
    assert.equal(await prom.scalar(`up{job="gateway",dmz_server="${rogue}",instance="${gatewayInstance}"}`), 0);
    assert.equal(await prom.scalar(`fieldstream_gateway_connections{dmz_server="${rogue}",instance="10.9.9.9:9464"}`), 7);
    assert.equal(await prom.scalar(`count({dmz_server!~"${rogue}|${honest}|"})`), undefined, 'no other dmz_server');
  });

  it("refuses a /federate answer with more series than a DMZ server holds: that server's scrape fails (FieldStreamTargetDown names it), none of them is stored, the other server's goes on", async () => {
    const gw = 'job="gateway",instance="10.0.0.5:9464",fieldstream="dmz",service="gateway"';
    answer = Array.from({ length: 50_000 }, (_, i) => `fieldstream_gateway_refused_total{${gw},code="INVENTED_${i}"} 1`).join('\n') + '\n';
    await scraped(rogue, 0);
    await scraped(honest, 1);
    assert.equal(await prom.scalar('count(fieldstream_gateway_refused_total{code=~"INVENTED_.*"})'), undefined);
    // FieldStreamTargetDown's expression (the internal services' targets, absent here, aside).
    const down = VectorSchema.parse((await prom.query('up == 0')).data?.result).filter((v) => v.metric.job === 'dmz-federate' || v.metric.dmz_server !== undefined);
    assert.deepEqual(down.map((v) => v.metric), [{ __name__: 'up', job: 'dmz-federate', instance: rogue, dmz_server: rogue }], "that server's federation, named");
    // The same for a DMZ Prometheus that cannot be reached, or errs.
    answer = '';
    status = 503;
    await scraped(rogue, 0);
    await scraped(honest, 1);
    assert.equal(await prom.scalar(`fieldstream_gateway_connections{dmz_server="${honest}"}`), 5);
  });
});

const REVOKED_ALERT = `        alertname: FieldStreamRevokedDeviceAttempts
        exp_alerts:
          - exp_labels: {severity: warning}
            exp_annotations:
              summary: "A revoked device tried to connect or send"
              description: "A revoked certificate or device was refused in the last 10 minutes. The Security dashboard names the device."
`;

/**
 * A field client's metrics as fieldClientMetrics exposes them, over stand-ins for what they read: set
 * `queue.depth`, `queue.stats`, `queue.oldestUnacked` between scrapes.
 */
function fieldClient(connected = true) {
  const queue: { depth: number; bytesOnDisk: number; stats: { dropped: number; refused: number; writeFailed: number }; awaiting: { count: number; bytes: number }; oldestUnacked: () => number | undefined } = {
    depth: 0,
    bytesOnDisk: 0,
    stats: { dropped: 0, refused: 0, writeFailed: 0 },
    awaiting: { count: 0, bytes: 0 },
    oldestUnacked: () => undefined,
  };
  const client = { queue, rejectedBytes: 0, heldRefusals: 0, stats: { refusedByGateway: 0, sent: 0 }, receiptStats: { receipts: 0, receiptsInvalid: 0, receiptsReplayed: 0, resentForReceipt: 0 } };
  const m = fieldClientMetrics(
    {
      client: client as unknown as FieldClient,
      connection: { isOpen: connected } as unknown as GatewayConnection,
      commands: { stats: { run: 0, refusedByCode: {}, unanswered: 0 }, runningNow: 0, waitingNow: 0 } as unknown as CommandHandlers,
      outbox: { bytes: () => 0 } as unknown as FileOutbox,
      certFile: join(repoRoot, 'no-such-certificate.pem'),
    },
    { processMetrics: false },
  );
  return { queue, m };
}

/** scrapedSeries of a field client, with the instance its site's Prometheus scrapes it at. */
function fieldSeries(scrapes: ReadonlyArray<{ text: string; times: number }>, instance: string, names: readonly string[]): string {
  return scrapedSeries(scrapes, names).replaceAll('service="field-client"', `instance="${instance}",service="field-client"`);
}

const FIELD_QUEUE_FULL =
  "600 messages were refused in the last 10 minutes (FIELD_QUEUE_FULL): the queue holds FIELD_QUEUE_MAX_BYTES and FIELD_QUEUE_FULL_POLICY=reject (the default) refuses what comes next. Its producers are told so (HTTP 507, a local MQTT connection closed) and must send it again; what none keeps (the client's own health readings among it) is lost. The link is down or too slow for what the device samples (FieldStreamFieldBacklogGrowing fired while the queue grew, and cleared when it stopped at its limit). Restore the link, or raise FIELD_QUEUE_MAX_BYTES.";

const TARGET_DOWN =
  "The target's /metrics has not answered for 2 minutes: the service is down; for job dmz-federate, that DMZ server's Prometheus cannot be reached from the internal server, or its /federate answer was refused (more series than sample_limit), and none of that server's gateways is watched meanwhile; for job gateway, that DMZ server's Prometheus cannot scrape the gateway replica.";

/** A DMZ server's Prometheus as the internal one names it (dmz_server), and a gateway's labels as pulled from it. */
const dmzServer = (n: number) => `dmz${n}.example.org:9091`;
const gatewayOf = (server: string) => `job="gateway",instance="172.18.0.5:9464",fieldstream="dmz",dmz_server="${server}"`;

describe('monitoring: alert rules on the series as the services expose them (promtool test rules)', () => {
  // A counter whose series appears only at its first increment, already at 1, shows increase() and
  // rate() nothing: the alerts counting refusals by code would miss the first (or only) one.
  it('FieldStreamRevokedDeviceAttempts fires on the first refused upgrade of a revoked certificate after the gateway started', async () => {
    const gateway = new GatewayMetrics();
    const started = await gateway.metrics.registry.metrics();
    gateway.connectionsRefused.inc({ code: 'GATEWAY_CERTIFICATE_REVOKED' }); // what server.ts counts at the refusal
    const refused = await gateway.metrics.registry.metrics();
    const series = scrapedSeries([{ text: started, times: 20 }, { text: refused, times: 40 }], ['fieldstream_gateway_connections_refused_total']);
    promtoolTestRules(`  - interval: 15s\n    input_series:\n${series}    alert_rule_test:\n      - eval_time: 4m\n        alertname: FieldStreamRevokedDeviceAttempts\n        exp_alerts: []\n      - eval_time: 6m\n${REVOKED_ALERT}`);
  });

  it('FieldStreamRevokedDeviceAttempts fires on the first refused upgrade of a revoked device token after the gateway started', async () => {
    const gateway = new GatewayMetrics();
    const started = await gateway.metrics.registry.metrics();
    gateway.connectionsRefused.inc({ code: 'GATEWAY_TOKEN_REVOKED' }); // what server.ts counts at the refusal
    const refused = await gateway.metrics.registry.metrics();
    const series = scrapedSeries([{ text: started, times: 20 }, { text: refused, times: 40 }], ['fieldstream_gateway_connections_refused_total']);
    promtoolTestRules(`  - interval: 15s\n    input_series:\n${series}    alert_rule_test:\n      - eval_time: 4m\n        alertname: FieldStreamRevokedDeviceAttempts\n        exp_alerts: []\n      - eval_time: 6m\n${REVOKED_ALERT}`);
  });

  it('FieldStreamRevokedDeviceAttempts fires on the first message of a revoked device the distributor refuses after it started', async () => {
    const tmp = tempDir('revoked-alert');
    try {
      const distributor = new DistributorMetrics();
      const started = await distributor.metrics.registry.metrics();
      await securityEvents(tmp.dir, distributor); // pump-9's one message refused SECURITY_REVOKED, among others
      const refused = await distributor.metrics.registry.metrics();
      assert.equal(parseSamples(refused).get('fieldstream_distributor_security_events_total{reason="SECURITY_REVOKED",service="distributor"}'), 1);
      const series = scrapedSeries([{ text: started, times: 20 }, { text: refused, times: 40 }], ['fieldstream_distributor_security_events_total']);
      promtoolTestRules(`  - interval: 15s\n    input_series:\n${series}    alert_rule_test:\n      - eval_time: 4m\n        alertname: FieldStreamRevokedDeviceAttempts\n        exp_alerts: []\n      - eval_time: 6m\n${REVOKED_ALERT}`);
    } finally {
      tmp.cleanup();
    }
  });

  it('FieldStreamStoredFeedForged fires on the first stored-feed message the console refuses as unauthenticated after it started', async () => {
    const stats: ConsoleStats = { feedMessages: 0, feedRefused: noFeedRefusals(), feedDropped: 0, manageAuthFailures: noManageAuthFailures() };
    const own = { written: 0, dropped: 0, refused: 0 } as unknown as OwnPointsWriter;
    const m = consoleMetrics({ fleet: new Fleet({ staleAfterMs: 180_000 }), stats, runner: undefined, own, streams: () => 0, brokerConnected: () => true }, { processMetrics: false });
    const started = await m.registry.metrics();
    stats.feedRefused.STORED_FEED_INVALID++; // not what the alert is about
    const invalid = await m.registry.metrics();
    stats.feedRefused.STORED_FEED_UNAUTHENTICATED++; // what console.ts counts at the refusal
    const forged = await m.registry.metrics();
    assert.equal(parseSamples(forged).get('fieldstream_console_feed_refused_total{reason="STORED_FEED_UNAUTHENTICATED",service="console"}'), 1);
    const series = scrapedSeries([{ text: started, times: 10 }, { text: invalid, times: 10 }, { text: forged, times: 40 }], ['fieldstream_console_feed_refused_total']);
    promtoolTestRules(`  - interval: 15s
    input_series:
${series}    alert_rule_test:
      - eval_time: 4m
        alertname: FieldStreamStoredFeedForged
        exp_alerts: []
      - eval_time: 6m
        alertname: FieldStreamStoredFeedForged
        exp_alerts:
          - exp_labels: {severity: warning, reason: STORED_FEED_UNAUTHENTICATED}
            exp_annotations:
              summary: "The console refused stored-feed messages (STORED_FEED_UNAUTHENTICATED)"
              description: "The operator console refused messages on the internal stored feed with STORED_FEED_UNAUTHENTICATED (1 in 10 minutes): not sealed under the stored-feed key, or sent again. Distributors holding the key publish neither: a compromised DMZ server publishing through the bridge, or a distributor with another key or of an earlier version. The console's log names each (docs/security-mechanisms.md)."
`);
  });

  it('FieldStreamBridgeStateForged fires on the first bridge states of names no bridge has, while FieldStreamBridgeDown stays silent', () => {
    // As the broker exporter exposes them (test/e2e/broker-exporter.test.ts): the count at 0 from
    // its start, then a forging DMZ's 300 invented states ignored, every expected bridge still up.
    const at = (ignored: number) => `fieldstream_bridge_connected{service="broker-exporter"} 1
fieldstream_bridge_up{bridge="fieldstream-bridge",service="broker-exporter"} 1
fieldstream_bridge_states_ignored_total{broker="internal",service="broker-exporter"} ${ignored}
fieldstream_bridge_states_ignored_total{broker="dmz",service="broker-exporter"} 0
`;
    const series = scrapedSeries([{ text: at(0), times: 20 }, { text: at(300), times: 40 }], ['fieldstream_bridge_connected', 'fieldstream_bridge_states_ignored_total']);
    promtoolTestRules(`  - interval: 15s
    input_series:
${series}    alert_rule_test:
      - eval_time: 4m
        alertname: FieldStreamBridgeStateForged
        exp_alerts: []
      - eval_time: 6m
        alertname: FieldStreamBridgeDown
        exp_alerts: []
      - eval_time: 6m
        alertname: FieldStreamBridgeStateForged
        exp_alerts:
          - exp_labels: {severity: warning, broker: internal}
            exp_annotations:
              summary: "Bridge states of bridges we do not run (internal broker)"
              description: "The broker-exporter ignored 300 bridge states in 10 minutes on the internal broker under names none of the internal broker's bridges has. Mosquitto publishes none such: a compromised DMZ server publishing them through the bridge (docs/monitoring.md), or the broker-exporter given another DMZ_BROKER_HOSTS than the internal broker (a bridge it then does not watch)."
`);
  });

  it('FieldStreamBrokerDropping fires on messages a broker dropped, naming the broker, and not on the other', () => {
    // As the broker exporter exposes them (its $SYS counter read per broker), the DMZ broker's queue
    // for a bridge away too long overflowing.
    const at = (dropped: number) => `fieldstream_mosquitto_dropped_total{broker="dmz",service="broker-exporter"} ${dropped}
fieldstream_mosquitto_dropped_total{broker="internal",service="broker-exporter"} 0
`;
    const series = scrapedSeries([{ text: at(0), times: 20 }, { text: at(120), times: 20 }], ['fieldstream_mosquitto_dropped_total']);
    promtoolTestRules(`  - interval: 15s
    input_series:
${series}    alert_rule_test:
      - eval_time: 4m
        alertname: FieldStreamBrokerDropping
        exp_alerts: []
      - eval_time: 6m
        alertname: FieldStreamBrokerDropping
        exp_alerts:
          - exp_labels: {severity: warning, broker: dmz}
            exp_annotations:
              summary: "The dmz Mosquitto dropped messages"
              description: "The dmz Mosquitto dropped 120 PUBLISH messages in 10 minutes: a client's queue at its limit (a distributor, the bridge or a gateway too slow, or away past max_queued_messages). A device's messages so dropped are sent again by the device when their commit receipt does not come (FIELD_COMMIT_TIMEOUT_MS): late, and at a cost to its link; a command so dropped ends expired. Find the subscriber that falls behind (fieldstream_mosquitto_clients_connected, fieldstream_distributor_oldest_in_progress_seconds) before raising the broker's queue limits."
`);
  });

  it('FieldStreamBridgeDown fires once the bridge to a DMZ broker that hangs has read down for 2 minutes', () => {
    // As the broker exporter exposes a hang (test/e2e/broker-exporter.test.ts): the bridge up,
    // then down once its heartbeat (the DMZ broker's uptime) has stopped for BROKER_EXPORTER_STALE_S.
    const at = (up: 0 | 1) => `fieldstream_bridge_connected{service="broker-exporter"} ${up}
fieldstream_bridge_up{bridge="fieldstream-bridge",service="broker-exporter"} ${up}
`;
    const series = scrapedSeries([{ text: at(1), times: 20 }, { text: at(0), times: 20 }], ['fieldstream_bridge_connected']);
    const description = alertDescription('FieldStreamBridgeDown');
    promtoolTestRules(`  - interval: 15s
    input_series:
${series}    alert_rule_test:
      - eval_time: 6m
        alertname: FieldStreamBridgeDown
        exp_alerts: []
      - eval_time: 7m30s
        alertname: FieldStreamBridgeDown
        exp_alerts:
          - exp_labels: {severity: critical, service: broker-exporter}
            exp_annotations:
              summary: "The MQTT bridge from the internal broker to the DMZ broker is down"
              description: ${JSON.stringify(description)}
`);
  });

  // DISTRIBUTOR_WRITE_REJECTED is final: its messages go to the dead-letter folder and are not
  // retried. The alert said of every reason that the messages were retried, the backlog growing.
  it('FieldStreamDatabaseWritesFailing says what becomes of the messages of each reason: retried (DISTRIBUTOR_WRITE_FAILED), dead-lettered (DISTRIBUTOR_WRITE_REJECTED)', async () => {
    const distributor = new DistributorMetrics();
    const scrapes: Array<{ text: string; times: number }> = [{ text: await distributor.metrics.registry.metrics(), times: 4 }];
    for (let i = 0; i < 40; i++) {
      distributor.writeFailures.inc({ reason: 'DISTRIBUTOR_WRITE_FAILED' });
      distributor.writeFailures.inc({ reason: 'DISTRIBUTOR_WRITE_REJECTED' });
      scrapes.push({ text: await distributor.metrics.registry.metrics(), times: 1 });
    }
    const series = scrapedSeries(scrapes, ['fieldstream_distributor_write_failures_total']);
    promtoolTestRules(`  - interval: 15s
    input_series:
${series}    alert_rule_test:
      - eval_time: 10m
        alertname: FieldStreamDatabaseWritesFailing
        exp_alerts:
          - exp_labels: {severity: critical, reason: DISTRIBUTOR_WRITE_FAILED}
            exp_annotations:
              summary: "Database writes are failing (DISTRIBUTOR_WRITE_FAILED)"
              description: "The distributor  has been failing to write to the time-series database for 5 minutes (DISTRIBUTOR_WRITE_FAILED: the database cannot be reached or answers with an error). Those messages stay unacknowledged on the broker and are retried; the backlog grows."
          - exp_labels: {severity: critical, reason: DISTRIBUTOR_WRITE_REJECTED}
            exp_annotations:
              summary: "Database writes are failing (DISTRIBUTOR_WRITE_REJECTED)"
              description: "The time-series database has been refusing data of the distributor  as bad for 5 minutes (DISTRIBUTOR_WRITE_REJECTED). Those messages are not retried: they are kept in the dead-letter folder (the other messages of a refused batch are written). Look at the dead letters and the logged reason, fix the cause, then put them back with fieldstream-admin dead-letters replay (docs/errors.md)."
`);
  });

  it('FieldStreamDeadLettersNotKept fires on the first invalid payload acknowledged without being kept after the distributor started', async () => {
    // Those payloads leave no trace but the count: the only alert on them is this one.
    const distributor = new DistributorMetrics();
    const scrapes: Array<{ text: string; times: number }> = [{ text: await distributor.metrics.registry.metrics(), times: 4 }];
    distributor.deadLettersNotKept.inc(); // what the dead letters count when a payload is dropped
    scrapes.push({ text: await distributor.metrics.registry.metrics(), times: 4 });
    const series = scrapedSeries(scrapes, ['fieldstream_distributor_dead_letters_not_kept_total']);
    promtoolTestRules(`  - interval: 15s
    input_series:
${series}    alert_rule_test:
      - eval_time: 1m30s
        alertname: FieldStreamDeadLettersNotKept
        exp_alerts:
          - exp_labels: {severity: critical}
            exp_annotations:
              summary: "Invalid payloads were acknowledged without being kept by the distributor "
              description: "1 payloads that were no valid envelope (or a presence or gateway security report the database refused) were acknowledged and dropped in the last 10 minutes, not even their first 4 KiB kept: the dead-letter folder holds half of DEAD_LETTER_MAX_BYTES or cannot be written. No signed device message is dropped this way, but a stream of invalid payloads is a sign of a compromised DMZ. Look at the letters kept (DEAD_LETTER_PATH), move them away or raise the bound (docs/operations.md, Dead letters)."
      - eval_time: 50s
        alertname: FieldStreamDeadLettersNotKept
`);
  });

  it('FieldStreamTargetDown and FieldStreamBrokerConnectionLost fire per DMZ server and name it: its federation down, one of its gateways unscraped or without its broker', () => {
    // As the internal Prometheus stores them (render-prometheus.sh's jobs): the federation's own up
    // per DMZ server, and each server's gateway series, the same gateway address on both.
    const [d1, d2] = [dmzServer(1), dmzServer(2)];
    promtoolTestRules(`  - interval: 15s
    input_series:
      - series: 'up{job="dmz-federate",instance="${d1}",dmz_server="${d1}"}'
        values: '1x20'
      - series: 'up{job="dmz-federate",instance="${d2}",dmz_server="${d2}"}'
        values: '0x20'
      - series: 'up{${gatewayOf(d1)}}'
        values: '0x20'
      - series: 'fieldstream_broker_connected{${gatewayOf(d1)},service="gateway"}'
        values: '1x20'
      - series: 'fieldstream_broker_connected{${gatewayOf(d2)},service="gateway"}'
        values: '0x20'
      - series: 'up{job="command-api",instance="command-api-metrics:9466"}'
        values: '0x20'
    alert_rule_test:
      - eval_time: 3m
        alertname: FieldStreamTargetDown
        exp_alerts:
          - exp_labels: {severity: warning, job: dmz-federate, instance: "${d2}", dmz_server: "${d2}"}
            exp_annotations:
              summary: "Prometheus cannot scrape dmz-federate (${d2}) of DMZ server ${d2}"
              description: "${TARGET_DOWN}"
          - exp_labels: {severity: warning, job: gateway, instance: "172.18.0.5:9464", fieldstream: dmz, dmz_server: "${d1}"}
            exp_annotations:
              summary: "Prometheus cannot scrape gateway (172.18.0.5:9464) of DMZ server ${d1}"
              description: "${TARGET_DOWN}"
          - exp_labels: {severity: warning, job: command-api, instance: "command-api-metrics:9466"}
            exp_annotations:
              summary: "Prometheus cannot scrape command-api (command-api-metrics:9466)"
              description: "${TARGET_DOWN}"
      - eval_time: 3m
        alertname: FieldStreamBrokerConnectionLost
        exp_alerts:
          - exp_labels: {severity: warning, job: gateway, instance: "172.18.0.5:9464", fieldstream: dmz, dmz_server: "${d2}", service: gateway}
            exp_annotations:
              summary: "gateway (172.18.0.5:9464 on DMZ server ${d2}) is not connected to its broker"
              description: "gateway has had no MQTT connection for 2 minutes; it keeps retrying. A gateway of DMZ server ${d2} (dmz_server: the DMZ Prometheus its series were pulled from): that server's DMZ Mosquitto is down or unreachable from its gateways."
`);
  });

  it('FieldStreamNoDistributor and FieldStreamNoGateway fire when DNS finds no replica to scrape, where FieldStreamTargetDown has no up == 0 to fire on', () => {
    // Distributors found (and scraped) for 5 minutes, then none: their DNS name answers no address,
    // and Prometheus keeps no `up` of a target it no longer has. DMZ server 1's gateways likewise;
    // DMZ server 2 keeps its gateway; DMZ server 3's federation is down (FieldStreamTargetDown's).
    const [d1, d2, d3] = [dmzServer(1), dmzServer(2), dmzServer(3)];
    promtoolTestRules(`  - interval: 15s
    input_series:
      - series: 'up{job="distributor",instance="10.0.0.7:9465"}'
        values: '1x20'
      - series: 'up{job="dmz-federate",instance="${d1}",dmz_server="${d1}"}'
        values: '1x60'
      - series: 'up{job="dmz-federate",instance="${d2}",dmz_server="${d2}"}'
        values: '1x60'
      - series: 'up{job="dmz-federate",instance="${d3}",dmz_server="${d3}"}'
        values: '0x60'
      - series: 'up{${gatewayOf(d1)}}'
        values: '1x20'
      - series: 'up{${gatewayOf(d2)}}'
        values: '1x60'
    alert_rule_test:
      - eval_time: 4m
        alertname: FieldStreamNoDistributor
        exp_alerts: []
      - eval_time: 4m
        alertname: FieldStreamNoGateway
        exp_alerts: []
      - eval_time: 14m
        alertname: FieldStreamNoDistributor
        exp_alerts:
          - exp_labels: {severity: critical, job: distributor}
            exp_annotations:
              summary: "No distributor is running"
              description: "The internal Prometheus has found no distributor to scrape for 2 minutes (distributor-metrics answers with no address: every replica stopped, or scaled to 0). Nothing reaches the database or file storage; the devices' data waits in the internal broker's sessions and the field clients' queues, unacknowledged, and nothing is lost while they hold."
      - eval_time: 14m
        alertname: FieldStreamNoGateway
        exp_alerts:
          - exp_labels: {severity: critical, dmz_server: "${d1}"}
            exp_annotations:
              summary: "No gateway is running on DMZ server ${d1}"
              description: "The Prometheus of DMZ server ${d1} answers, but has found no gateway to scrape for 2 minutes (gateway-metrics answers with no address there: every replica stopped, or scaled to 0). Caddy on that server has no gateway to hand devices to: they are refused, keep their data in their queues and, where GATEWAY_URL lists several DMZ servers, move to another."
`);
  });

  it('FieldStreamNoDataWritten says how many device connections the gateways hold while nothing is written', async () => {
    const gateway = new GatewayMetrics();
    gateway.bind({ brokerConnected: () => true, connections: () => 40 });
    // The distributor writes for 5 minutes (25 points a scrape), then nothing more.
    const distributor = new DistributorMetrics();
    const writing: Array<{ text: string; times: number }> = [];
    for (let i = 0; i < 20; i++) {
      distributor.points.inc(25);
      writing.push({ text: await distributor.metrics.registry.metrics(), times: 1 });
    }
    writing.push({ text: await distributor.metrics.registry.metrics(), times: 81 });
    const series = scrapedSeries([{ text: await gateway.metrics.registry.metrics(), times: 101 }], ['fieldstream_gateway_connections']) + scrapedSeries(writing, ['fieldstream_distributor_points_total']);
    // Quiet until 10 minutes without a point have passed (at 15m), then `for: 1m`.
    promtoolTestRules(`  - interval: 15s
    input_series:
${series}    alert_rule_test:
      - eval_time: 14m
        alertname: FieldStreamNoDataWritten
        exp_alerts: []
      - eval_time: 17m
        alertname: FieldStreamNoDataWritten
        exp_alerts:
          - exp_labels: {severity: critical}
            exp_annotations:
              summary: "Devices are connected but no data has been written for 10 minutes"
              description: "The gateways hold 40 device connections, yet no distributor has written a point for 10 minutes."
`);
  });

  // With FIELD_QUEUE_FULL_POLICY=reject (the default) a full queue refuses new data: the backlog
  // stops growing at its limit, so FieldStreamFieldBacklogGrowing clears just as data starts being
  // refused, and FieldStreamFieldDropped counts drop-oldest only. Nothing fired while a device lost data.
  it('a field client whose full queue refuses new data fires FieldStreamFieldQueueFull, once FieldStreamFieldBacklogGrowing has cleared', async () => {
    const { queue, m } = fieldClient();
    // Connected over a link too slow for what it samples: the queue grows 100 messages a scrape for
    // 20 minutes up to FIELD_QUEUE_MAX_BYTES, then stays there while what comes next is refused.
    const scrapes: Array<{ text: string; times: number }> = [];
    const start = Date.now();
    for (let i = 0; i < 80; i++) {
      queue.depth += 100;
      queue.oldestUnacked = () => start - 15_000 * i;
      scrapes.push({ text: await m.registry.metrics(), times: 1 });
    }
    for (let i = 0; i < 80; i++) {
      queue.stats.refused += 15;
      scrapes.push({ text: await m.registry.metrics(), times: 1 });
    }
    const series = fieldSeries(scrapes, '10.9.0.7:9467', ['fieldstream_field_queue_messages', 'fieldstream_field_oldest_unsent_age_seconds', 'fieldstream_field_refused_total', 'fieldstream_field_dropped_total', 'fieldstream_field_connected']);
    promtoolTestRules(`  - interval: 15s
    input_series:
${series}    alert_rule_test:
      - eval_time: 18m
        alertname: FieldStreamFieldQueueFull
        exp_alerts: []
      - eval_time: 38m
        alertname: FieldStreamFieldBacklogGrowing
        exp_alerts: []
      - eval_time: 38m
        alertname: FieldStreamFieldDropped
        exp_alerts: []
      - eval_time: 38m
        alertname: FieldStreamFieldQueueFull
        exp_alerts:
          - exp_labels: {severity: critical, instance: "10.9.0.7:9467", service: field-client}
            exp_annotations:
              summary: "The field client 10.9.0.7:9467's queue is full: it refuses new data"
              description: "${FIELD_QUEUE_FULL}"
`);
  });

  // A disk that fails the queue's writes refuses new data with FIELD_QUEUE_WRITE_FAILED, not
  // FIELD_QUEUE_FULL: nothing counted it, the queue did not grow, and no rule fired.
  it("a field client whose disk refuses the queue's writes fires FieldStreamFieldQueueWriteFailed, where FieldStreamFieldQueueFull stays silent", async () => {
    const tmp = tempDir('queue-write-failed');
    try {
      const q = await DurableQueue.open({ dir: tmp.dir, maxBytes: 1 << 30, segmentBytes: 1 << 20, fullPolicy: 'reject', sync: { mode: 'always' }, log: createLogger('test', 'silent') });
      const reading = (v: number) => ({ dataType: 'timeseries' as const, payload: { v, timestamp: 1700000000000 + v } });
      await q.append([reading(0)]);
      const client = { queue: q, rejectedBytes: 0, heldRefusals: 0, stats: { refusedByGateway: 0, sent: 0 }, receiptStats: { receipts: 0, receiptsInvalid: 0, receiptsReplayed: 0, resentForReceipt: 0 } };
      const m = fieldClientMetrics(
        {
          client: client as unknown as FieldClient,
          connection: { isOpen: true } as unknown as GatewayConnection,
          commands: { stats: { run: 0, refusedByCode: {}, unanswered: 0 }, runningNow: 0, waitingNow: 0 } as unknown as CommandHandlers,
          outbox: { bytes: () => 0 } as unknown as FileOutbox,
          certFile: join(repoRoot, 'no-such-certificate.pem'),
        },
        { processMetrics: false },
      );
      const started = await m.registry.metrics();
      // The disk takes no more than the segment holds (RLIMIT_FSIZE: the kernel answers EFBIG, as a full disk ENOSPC).
      const segment = readdirSync(tmp.dir).find((f) => f.startsWith('seg-'));
      assert.ok(segment);
      const refused = await withFileSizeLimit(statSync(join(tmp.dir, segment)).size, () => Promise.allSettled([q.append([reading(1), reading(2)]), q.append([reading(3)])]));
      assert.deepEqual(refused.map((r) => r.status), ['rejected', 'rejected']);
      const failed = await m.registry.metrics();
      await q.close();
      assert.equal(parseSamples(failed).get('fieldstream_field_write_failed_total{service="field-client"}'), 3);
      const series = fieldSeries([{ text: started, times: 20 }, { text: failed, times: 40 }], '10.9.0.7:9467', ['fieldstream_field_write_failed_total', 'fieldstream_field_refused_total']);
      const description = alertDescription('FieldStreamFieldQueueWriteFailed');
      promtoolTestRules(`  - interval: 15s
    input_series:
${series}    alert_rule_test:
      - eval_time: 4m
        alertname: FieldStreamFieldQueueWriteFailed
        exp_alerts: []
      - eval_time: 6m
        alertname: FieldStreamFieldQueueFull
        exp_alerts: []
      - eval_time: 6m
        alertname: FieldStreamFieldQueueWriteFailed
        exp_alerts:
          - exp_labels: {severity: critical, instance: "10.9.0.7:9467", service: field-client}
            exp_annotations:
              summary: "The field client 10.9.0.7:9467 cannot write its queue to disk: it refuses new data"
              description: ${JSON.stringify(description.replace('{{ $value | humanize }}', '3'))}
`);
    } finally {
      tmp.cleanup();
    }
  });

  // deriv() of a queue that only holds what awaits its receipt is positive whenever that number
  // creeps up (more readings a second, a slower database), and stays so for 15 minutes on a device
  // that keeps up: the rule warned of a backlog that was not there. A backlog is old data.
  it('FieldStreamFieldBacklogGrowing fires for a device falling behind, not for one keeping up whose few messages in flight creep up', async () => {
    const scrape = async (f: ReturnType<typeof fieldClient>, times: number) => ({ text: await f.m.registry.metrics(), times });
    // Keeping up: connected, every message committed within seconds, 3 messages awaiting their
    // receipt at first and one more every 5 minutes, for 40 minutes.
    const keepingUp = fieldClient();
    const upScrapes: Array<{ text: string; times: number }> = [];
    keepingUp.queue.oldestUnacked = () => Date.now() - 2_000;
    for (let i = 0; i < 8; i++) {
      keepingUp.queue.depth = 3 + i;
      upScrapes.push(await scrape(keepingUp, 20));
    }
    // Falling behind: its link gone at the start, 15 messages more every scrape, the oldest as old as the outage.
    const behind = fieldClient(false);
    const behindScrapes: Array<{ text: string; times: number }> = [];
    const start = Date.now();
    for (let i = 0; i < 160; i++) {
      behind.queue.depth = 15 * i;
      behind.queue.oldestUnacked = () => (i === 0 ? undefined : start - 15_000 * i);
      behindScrapes.push(await scrape(behind, 1));
    }
    const series = fieldSeries(upScrapes, '10.9.0.7:9467', ['fieldstream_field_queue_messages', 'fieldstream_field_oldest_unsent_age_seconds']) + fieldSeries(behindScrapes, '10.9.0.8:9467', ['fieldstream_field_queue_messages', 'fieldstream_field_oldest_unsent_age_seconds']);
    promtoolTestRules(`  - interval: 15s
    input_series:
${series}    alert_rule_test:
      - eval_time: 39m
        alertname: FieldStreamFieldBacklogGrowing
        exp_alerts:
          - exp_labels: {severity: warning, instance: "10.9.0.8:9467", service: field-client}
            exp_annotations:
              summary: "The field client 10.9.0.8:9467's queue has been growing for 15 minutes"
              description: "It queues more than it can send (+1 messages/s): the link is down or too slow. Its disk budget (FIELD_QUEUE_MAX_BYTES) is finite: at the limit new data is refused (FIELD_QUEUE_FULL_POLICY=reject, the default), or the oldest records are dropped (drop-oldest)."
`);
  });

  it('every code an upgrade is refused with, and every reason of a security event, is exposed at 0 from the start', async () => {
    const gateway = parseSamples(await new GatewayMetrics().metrics.registry.metrics());
    // The codes the upgrade's checks throw (server.ts, identity.ts, device-tokens.ts), as written there
    // (device-tokens.ts through its `refused`, which counts what it refuses against the address).
    const thrown = new Set<string>();
    for (const f of ['server.ts', 'identity.ts', 'device-tokens.ts']) {
      for (const m of readFileSync(join(repoRoot, 'dmz', 'gateway', f), 'utf8').matchAll(/(?:new FieldStreamError|throw refused)\(([^,)]+)/g)) for (const c of (m[1] as string).matchAll(/'(GATEWAY_\w+)'/g)) thrown.add(c[1] as string);
    }
    assert.ok(thrown.has('GATEWAY_CERTIFICATE_REVOKED') && thrown.has('GATEWAY_TOKEN_EXPIRED'), [...thrown].join(' '));
    assert.deepEqual([...thrown].filter((c) => !(CONNECTION_REFUSAL_CODES as readonly string[]).includes(c)), [], 'codes missing from CONNECTION_REFUSAL_CODES');
    for (const code of CONNECTION_REFUSAL_CODES) assert.equal(gateway.get(`fieldstream_gateway_connections_refused_total{code="${code}",service="gateway"}`), 0, code);
    const distributor = parseSamples(await new DistributorMetrics().metrics.registry.metrics());
    for (const reason of [...SECURITY_REFUSAL_CODES.filter((c) => c !== 'SECURITY_DUPLICATE'), ...GATEWAY_SECURITY_CODES]) {
      assert.equal(distributor.get(`fieldstream_distributor_security_events_total{reason="${reason}",service="distributor"}`), 0, reason);
    }
  });
});

describe("monitoring: the services' metrics say what their names say", () => {
  it('distributor_dead_letter_bytes reads what the dead-letter folder holds from the start: letters of an earlier run count', async () => {
    const tmp = tempDir('dead-letter-bytes');
    try {
      // What a distributor that ran before left in DEAD_LETTER_PATH (one letter line, a day's file).
      const kept = `${JSON.stringify({ at: '2026-01-15T12:00:00.000Z', code: 'DISTRIBUTOR_WRITE_REJECTED', message: 'refused', topic: 't', payloadBase64: 'QUJD'.repeat(1000) })}\n`;
      writeFileSync(join(tmp.dir, '2026-01-15.jsonl'), kept);
      const metrics = new DistributorMetrics();
      const dead = new DeadLetters(tmp.dir);
      metrics.bindDeadLetters(() => dead.measuredBytes(), dead.maxBytes); // as distributor.ts binds it
      assert.equal(parseSamples(await metrics.metrics.registry.metrics()).get('fieldstream_distributor_dead_letter_bytes{service="distributor"}'), Buffer.byteLength(kept));
    } finally {
      tmp.cleanup();
    }
  });


  it('console_anomalies_total counts every anomaly found, those past the fleet list\'s quota of a device a minute too', async () => {
    const fleet = new Fleet({ staleAfterMs: 180_000 });
    const stats: ConsoleStats = { feedMessages: 0, feedRefused: noFeedRefusals(), feedDropped: 0, manageAuthFailures: noManageAuthFailures() };
    const own = { written: 0, dropped: 0, refused: 0 } as unknown as OwnPointsWriter;
    const m = consoleMetrics({ fleet, stats, runner: undefined, own, streams: () => 0, brokerConnected: () => true }, { processMetrics: false });
    // One device flagged on every reading for a while (what console.ts hands the fleet as the scorer finds them).
    const found = 3 * CONSOLE.fleetAnomaliesPerDevicePerMinute;
    for (let i = 0; i < found; i++) fleet.addAnomaly({ time: 1_000 + i, device: 'pump-1', field: 'flow', detector: 'mad', score: 9, kind: 'spike' });
    assert.equal(parseSamples(await m.registry.metrics()).get('fieldstream_console_anomalies_total{service="console"}'), found);
  });
});

/** Every .ts file of the services, as one text: where the metrics are registered. */
function serviceSources(): string {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(dir, e.name));
      else if (e.name.endsWith('.ts')) out.push(readFileSync(join(dir, e.name), 'utf8'));
    }
  };
  for (const d of ['dmz', 'internal-network', 'field-client', 'shared']) walk(join(repoRoot, d));
  return out.join('\n');
}

describe('monitoring: the metric names the dashboards and rules use exist', () => {
  it('each fieldstream_ name is registered by a service (or is a prom-client default)', () => {
    const sources = serviceSources();
    const used = new Set<string>();
    const texts = [readFileSync(join(mon, 'prometheus', 'alerts.yml'), 'utf8'), ...allQueries.filter((q) => q.uid === 'prometheus').map((q) => q.text)];
    for (const t of texts) for (const m of t.matchAll(/fieldstream_([a-z_]+)/g)) used.add((m[1] as string).replace(/_(bucket|sum|count)$/, ''));
    assert.ok(used.size >= 30, `${used.size} names`);
    for (const name of used) {
      if (/^(process|nodejs)_/.test(name)) continue; // collectDefaultMetrics, with the prefix
      // 'name' as ServiceMetrics takes it, or `${METRIC_PREFIX}name` for a Counter built directly.
      assert.match(sources, new RegExp(`['"\`}]${name}['"\`]`), `fieldstream_${name} is registered somewhere`);
    }
  });

  it("and each name a service registers is in docs/monitoring.md's list of metrics", () => {
    const doc = readFileSync(join(repoRoot, 'docs', 'monitoring.md'), 'utf8');
    const registered = new Set<string>();
    // ServiceMetrics' gauge/counter/histogram, collectedCounter, the broker exporter's gaugeOf; or a
    // Counter built directly with `${METRIC_PREFIX}name`.
    for (const m of serviceSources().matchAll(/\b(?:gauge|counter|histogram|gaugeOf|collectedCounter)\((?:m, )?'([a-z][a-z0-9_]*)'|\$\{METRIC_PREFIX\}([a-z][a-z0-9_]*)/g)) {
      registered.add((m[1] ?? m[2]) as string);
    }
    assert.ok(registered.size >= 80, `${registered.size} names`);
    const missing = [...registered].filter((name) => !new RegExp(`\`(?:fieldstream_)?${name}(?:\\{[^\`]*\\})?\``).test(doc));
    assert.deepEqual(missing, []);
  });
});

describe('monitoring: Grafana provisioning and dashboards', () => {
  const provisioned = [...readFileSync(join(mon, 'grafana', 'provisioning', 'datasources', 'fieldstream.yml'), 'utf8').matchAll(/^\s+uid: (\S+)$/gm)].map((m) => m[1]);

  // The PostgreSQL dashboard's SQL runs on a real PostgreSQL in test/e2e/postgres-queries.test.ts.
  it('the four dashboards parse, with unique uids, and every data source a panel or variable names is provisioned', () => {
    assert.deepEqual(provisioned.sort(), ['influxdb', 'influxdb-flux', 'postgres', 'prometheus']);
    assert.deepEqual(dashboards.map(({ d }) => d.title).sort(), ['FieldStream: Devices', 'FieldStream: Devices (PostgreSQL)', 'FieldStream: Pipeline', 'FieldStream: Security']);
    assert.equal(new Set(dashboards.map(({ d }) => d.uid)).size, dashboards.length);
    const named = (p: Panel): string[] => [p.datasource?.uid ?? '', ...(p.targets ?? []).map((t) => t.datasource?.uid ?? ''), ...(p.panels ?? []).flatMap(named)].filter(Boolean);
    for (const { file, d } of dashboards) {
      for (const uid of [...d.panels.flatMap(named), ...d.templating.list.map((v) => v.datasource?.uid ?? '').filter(Boolean)]) assert.ok(provisioned.includes(uid), `${file}: ${uid} is provisioned`);
      assert.equal(new Set(d.panels.map((p) => p.id)).size, d.panels.length, `${file}: panel ids unique`);
    }
    assert.ok(allQueries.some((q) => q.uid === 'prometheus') && allQueries.some((q) => q.uid === 'influxdb'));
  });

  it('the Grafana alert rules parse, reach their condition, and name only provisioned data sources', () => {
    // Each rule twice: on InfluxDB, and on PostgreSQL (test/e2e/postgres-device-alerts.test.ts runs its SQL).
    const titles = ['FieldStreamDeviceSilent', 'FieldStreamDeviceCertificateExpiring', 'FieldStreamDeviceBacklog', 'FieldStreamDeviceDiskLow'];
    assert.deepEqual(alertRules.map(({ r }) => r.title), [...titles, ...titles]);
    assert.equal(new Set(alertRules.map(({ r }) => r.uid)).size, alertRules.length, 'rule uids unique');
    for (const { file, r } of alertRules) {
      const refIds = r.data.map((q) => q.refId);
      assert.ok(refIds.includes(r.condition), `${file} ${r.title}: the condition ${r.condition} is one of its queries`);
      for (const q of r.data) {
        // __expr__: Grafana's server-side expressions (reduce, threshold, math), not a data source.
        if (q.datasourceUid === '__expr__') assert.ok(q.model.expression && refIds.includes(q.model.expression), `${file} ${r.title} ${q.refId} reads a query of the rule`);
        else {
          assert.ok(provisioned.includes(q.datasourceUid), `${file} ${r.title} ${q.refId}: ${q.datasourceUid} is provisioned`);
          // InfluxQL in `query`, SQL in `rawSql` (the PostgreSQL data source's field).
          assert.ok(q.relativeTimeRange && (q.model.query ?? q.model.rawSql), `${file} ${r.title} ${q.refId}: a time range and a query`);
        }
        // Grafana expands $NAME from its environment in a provisioned rule's queries (not in annotations).
        assert.doesNotMatch(JSON.stringify(q.model), /\$/, `${file} ${r.title} ${q.refId}: no $ in the query`);
      }
      assert.match(r.labels.severity ?? '', /^(critical|warning)$/);
      assert.ok(r.annotations.summary && r.annotations.description, `${file} ${r.title}: summary and description`);
    }
    // The compose file mounts the provisioning folder whole, so Grafana reads provisioning/alerting.
    const compose = readFileSync(join(repoRoot, 'docker-compose.internal.yml'), 'utf8');
    assert.ok(compose.includes('./monitoring/grafana/provisioning:/etc/grafana/provisioning:ro'));
  });

  it("the Devices dashboards count online over a window the gateways' daily presence reminder always falls in", () => {
    // A gateway publishes each held device's presence again once it is TIMINGS.presenceRefreshMs
    // old, looking every presenceRefreshCheckMs (dmz/gateway/command-router.ts).
    const longest = TIMINGS.presenceRefreshMs + TIMINGS.presenceRefreshCheckMs;
    const influxql = allQueries.find((q) => q.where.startsWith('devices.json') && q.where.includes('"Devices online"'));
    const sql = allQueries.find((q) => q.where.startsWith('devices-postgres.json') && q.where.includes('"Devices online"'));
    const days = (m: RegExpExecArray | null) => Number(m?.[1]) * DAY_MS;
    for (const window of [days(/time > now\(\) - (\d+)d /.exec(influxql?.text ?? '')), days(/time > now\(\) - interval '(\d+) days'/.exec(sql?.text ?? ''))]) {
      assert.ok(window > longest && window <= 7 * DAY_MS, `a window of ${window / DAY_MS} days: past the longest wait for a reminder (${longest} ms), short enough to let a device whose gateway went silent drop out`);
    }
  });

  it("a panel of the gateways' series asks Grafana for rate windows of four of their federated scrapes", () => {
    // The gateways' series reach the internal Prometheus only through each DMZ server's federation,
    // once per its scrape_interval, not the data source's timeInterval: Grafana's $__rate_interval is
    // four times a panel's minimum interval (its `interval`, else the data source's timeInterval), and
    // a rate() needs two samples in its window. A panel left on the data source's 15 s asked for
    // windows of 1 minute, two federated samples at best, one wherever a scrape came late: a gap.
    const federatedS = durationS(/^\s+scrape_interval: (\S+)$/m.exec(readFileSync(join(mon, 'prometheus', 'dmz-federate.yml'), 'utf8'))?.[1] ?? '');
    const sources = readFileSync(join(mon, 'grafana', 'provisioning', 'datasources', 'fieldstream.yml'), 'utf8');
    const sourceS = durationS(/uid: prometheus\n(?:\s+.*\n)*?\s+timeInterval: (\S+)/.exec(sources)?.[1] ?? '');
    assert.ok(sourceS > 0, "the Prometheus data source's timeInterval");
    let checked = 0;
    for (const { file, d } of dashboards) {
      const walk = (panels: readonly Panel[]) => {
        for (const p of panels) {
          if ((p.targets ?? []).some((t) => /fieldstream_gateway_|job="gateway"/.test(t.expr ?? ''))) {
            checked++;
            const minS = p.interval !== undefined ? durationS(p.interval) : sourceS;
            // Grafana's own rule for $__rate_interval: four scrape intervals, so that a late or
            // missed scrape still leaves two samples.
            assert.ok(minS >= federatedS, `${file} "${p.title}": a minimum interval of ${p.interval ?? `none (the data source's ${sourceS} s)`} gives rate windows of ${4 * minS} s, not four federated scrapes (every ${federatedS} s)`);
          }
          walk(p.panels ?? []);
        }
      };
      walk(d.panels);
    }
    assert.ok(checked >= 8, `${checked} panels read the gateways' series`);
  });

  it('the dashboards provider points at the folder the compose file mounts the dashboards on', () => {
    const provider = readFileSync(join(mon, 'grafana', 'provisioning', 'dashboards', 'fieldstream.yml'), 'utf8');
    const path = /^\s+path: (\S+)$/m.exec(provider)?.[1];
    assert.ok(path);
    const compose = readFileSync(join(repoRoot, 'docker-compose.internal.yml'), 'utf8');
    assert.ok(compose.includes(`./monitoring/grafana/dashboards:${path}:ro`), `compose mounts the dashboards on ${path}`);
  });

  describe('every PromQL query runs on a real Prometheus', () => {
    let tmp: { dir: string; cleanup(): void };
    let prom: TestPrometheus;
    before(async () => {
      tmp = tempDir('promql');
      prom = await TestPrometheus.start(tmp.dir, 'global:\n  scrape_interval: 15s\nscrape_configs: []\n');
    });
    after(async () => {
      await prom?.stop();
      tmp?.cleanup();
    });

    it('dashboard panels (macros substituted) and alert expressions', async () => {
      const exprs = allQueries.filter((q) => q.uid === 'prometheus').map((q) => ({ where: q.where, text: substituteMacros(q.text, 'promql') }));
      const rules = readFileSync(join(mon, 'prometheus', 'alerts.yml'), 'utf8');
      for (const m of rules.matchAll(/^\s+- alert: (\S+)\n\s+expr: (.+)$/gm)) exprs.push({ where: `alerts.yml ${m[1]}`, text: m[2] as string });
      assert.ok(exprs.length >= 40, `${exprs.length} PromQL expressions`);
      for (const e of exprs) {
        const answer = await prom.query(e.text);
        assert.equal(answer.status, 'success', `${e.where}: ${e.text}: ${answer.error ?? ''}`);
      }
      // The substitution itself is checked: a macro left in the text is refused by Prometheus.
      assert.equal((await prom.query('rate(x[$__rate_interval])')).status, 'error');
    });
  });

  describe('every InfluxQL query runs on a real InfluxDB 1.x holding what the distributor writes', () => {
    const DB = 'fieldstream';
    let tmp: { dir: string; cleanup(): void };
    let influx: InfluxV1;
    before(async () => {
      tmp = tempDir('influxql');
      influx = await InfluxV1.start(join(tmp.dir, 'influx'), DB);
      const now = Date.now();
      const day = 86_400_000;
      // The shapes of internal-network/distributor: points.ts (readings, events), message-handler.ts
      // (device_status), security/verifier.ts (security_events).
      const points: StoredPoint[] = [
        { measurement: 'readings', tags: { device: 'pump-7' }, fields: { temperature: 21.5, pressure: 1.2 }, time: now - 120_000 },
        { measurement: 'readings', tags: { device: 'pump-7' }, fields: { temperature: 21.7, pressure: 1.3 }, time: now - 60_000 },
        { measurement: 'readings', tags: { device: 'pump-8' }, fields: { temperature: 19.0, note: 'ok' }, time: now - 90_000 },
        { measurement: 'events', tags: { device: 'pump-7', event_type: 'alarm', severity: 'high' }, fields: { message: 'overpressure' }, time: now - 80_000 },
        { measurement: 'device_status', tags: { device: 'pump-7', gateway: 'gw-1' }, fields: { state: 'online', cert_not_after: now + 400 * day, cert_days_left: 400 }, time: now - 200_000 },
        { measurement: 'device_status', tags: { device: 'pump-8', gateway: 'gw-1' }, fields: { state: 'online', cert_not_after: now + 12 * day, cert_days_left: 12 }, time: now - 300_000 },
        { measurement: 'device_status', tags: { device: 'pump-8', gateway: 'gw-1' }, fields: { state: 'offline' }, time: now - 30_000 },
        // For the device-silent alert: pump-10 sent until 20 minutes ago (a field of its own),
        // pump-11 sent 3 hours ago and 30 s ago, pump-12 last sent 2 days ago (past the look-back).
        { measurement: 'readings', tags: { device: 'pump-10' }, fields: { flow: 3.5 }, time: now - 50 * 60_000 },
        { measurement: 'readings', tags: { device: 'pump-10' }, fields: { flow: 3.4 }, time: now - 20 * 60_000 },
        { measurement: 'readings', tags: { device: 'pump-11' }, fields: { temperature: 18.0 }, time: now - 3 * 3_600_000 },
        { measurement: 'readings', tags: { device: 'pump-11' }, fields: { note: 'fine' }, time: now - 30_000 },
        { measurement: 'readings', tags: { device: 'pump-12' }, fields: { temperature: 17.0 }, time: now - 2 * day },
      ];
      await new InfluxV1Sink({ url: influx.url, database: DB, username: influx.user, password: influx.password, timeoutMs: 5000 }).write([...points, ...(await securityEvents(tmp.dir))]);
    });
    after(async () => {
      await influx?.process.stop();
      tmp?.cleanup();
    });

    it('panel and variable queries (macros substituted) run without error', async () => {
      const influxql = allQueries.filter((q) => q.uid === 'influxdb');
      assert.ok(influxql.length >= 12, `${influxql.length} InfluxQL queries`);
      for (const q of influxql) {
        const text = substituteMacros(q.text, 'influxql');
        await assert.doesNotReject(influx.query(text, DB), `${q.where}: ${text}`);
      }
    });

    it('and answer what the points say: one device online, one offline, one certificate within 30 days, one revoked device', async () => {
      const byTitle = (title: string) => {
        const q = allQueries.find((x) => x.uid === 'influxdb' && x.where.includes(`"${title}"`));
        assert.ok(q, title);
        return substituteMacros(q.text, 'influxql');
      };
      const first = async (title: string) => (await influx.rows(DB, byTitle(title)))[0];
      assert.equal((await first('Devices online'))?.count, 1);
      assert.equal((await first('Devices offline'))?.count, 1);
      assert.equal((await first('Certificates expiring within 30 days'))?.count, 1);
      // One number, the readings of the selected devices (pump-7's two, pump-8's one), whatever
      // fields each carries: a stat of count(*) showed a count per field name instead.
      const stored = await influx.rows(DB, byTitle('Readings stored (range)'));
      assert.deepEqual(stored.map((r) => Object.keys(r).filter((k) => k !== 'time')), [['count']], JSON.stringify(stored));
      assert.equal(stored[0]?.count, 3);
      const revoked = await influx.query(byTitle('Revoked devices still trying (security_events: SECURITY_REVOKED, GATEWAY_CERTIFICATE_REVOKED, GATEWAY_TOKEN_REVOKED)'), DB);
      assert.deepEqual(revoked.results?.[0]?.series?.map((s) => s.values[0]?.[1]), [1]);
      const lastSeen = await influx.query(byTitle('Last seen: the last reading of each device (last 30 days)'), DB);
      assert.equal(lastSeen.results?.[0]?.series?.length, 2, 'one row per device');
    });

    it('the revoked-devices panel lists the revoked devices the gateways refuse (certificate or token), beside those the distributor refuses', async () => {
      const db = 'revoked';
      await influx.query(`CREATE DATABASE "${db}"`);
      // pump-9's message refused by the distributor (SECURITY_REVOKED); meter-3's certificate and
      // token-4's token refused at the gateways' door, as their reports carry them.
      const points = await securityEvents(join(tmp.dir, 'revoked'), new DistributorMetrics(), [
        { deviceId: 'meter-3', code: 'GATEWAY_CERTIFICATE_REVOKED', count: 4 },
        { deviceId: 'token-4', code: 'GATEWAY_TOKEN_REVOKED', count: 2 },
      ]);
      await new InfluxV1Sink({ url: influx.url, database: db, username: influx.user, password: influx.password, timeoutMs: 5000 }).write(points);
      const q = allQueries.find((x) => x.uid === 'influxdb' && x.where.includes('"Revoked devices still trying'));
      assert.ok(q);
      const answer = await influx.query(substituteMacros(q.text, 'influxql'), db);
      const attempts = Object.fromEntries((answer.results?.[0]?.series ?? []).map((x) => [x.tags?.device, x.values[0]?.[1]]));
      assert.deepEqual(attempts, { 'pump-9': 1, 'meter-3': 4, 'token-4': 2 });
    });

    it('the security panels add up refusals: one point each, counted per second, and the gateways\' reports', async () => {
      const q = allQueries.find((x) => x.uid === 'influxdb' && x.where.includes('"Security events by device and reason (range)"'));
      assert.ok(q);
      const answer = await influx.query(substituteMacros(q.text, 'influxql'), DB);
      const sums = Object.fromEntries((answer.results?.[0]?.series ?? []).map((s) => [`${s.tags?.device} ${s.tags?.reason}`, s.values[0]?.[1]]));
      assert.deepEqual(sums, {
        'pump-9 SECURITY_REVOKED': 1,
        'pump-7 SECURITY_UNSIGNED': 1,
        '_unregistered SECURITY_UNSIGNED': 5,
        'pump-7 GATEWAY_RATE_LIMITED': 3,
      });
      const byReason = allQueries.find((x) => x.uid === 'influxdb' && x.where.includes('"Security events by reason"'));
      assert.ok(byReason);
      const series = (await influx.query(substituteMacros(byReason.text, 'influxql'), DB)).results?.[0]?.series ?? [];
      const total = (reason: string) => series.find((s) => s.tags?.reason === reason)?.values.reduce((n, v) => n + (Number(v[1]) || 0), 0);
      assert.deepEqual([total('SECURITY_REVOKED'), total('SECURITY_UNSIGNED'), total('GATEWAY_RATE_LIMITED')], [1, 6, 3]);
    });

    // Presences as the distributor stores what the gateways publish over long connections: each
    // held device's presence again every day (tag republished=true, the connection's `since`).
    it('on long connections: online by the daily reminders, certificates by their not-after as of the range\'s end, reminders not listed as connects', async () => {
      const db = 'longlived';
      await influx.query(`CREATE DATABASE "${db}"`);
      const now = Date.now();
      const day = 86_400_000;
      const ago = (days: number) => now - days * day;
      const points = await storedPresences(join(tmp.dir, 'longlived'), [
        // connected 45 days ago, its certificate expiring in 20.5 days: reminded 20 hours ago
        ['meter-1', { state: 'online', at: ago(45), certNotAfter: now + 20.5 * day }],
        ['meter-1', { state: 'online', at: now - 20 * 3_600_000, certNotAfter: now + 20.5 * day, since: ago(45) }],
        // gone 20 days ago; its last presence before (a reminder) said 36 days left, 15 from now
        ['meter-2', { state: 'online', at: ago(40), certNotAfter: now + 15.5 * day }],
        ['meter-2', { state: 'online', at: ago(21), certNotAfter: now + 15.5 * day, since: ago(40) }],
        ['meter-2', { state: 'offline', at: ago(20) }],
        // its gateway went without a word 3 days ago: no reminder since
        ['meter-3', { state: 'online', at: ago(10), certNotAfter: now + 300.5 * day }],
        ['meter-3', { state: 'online', at: ago(3), certNotAfter: now + 300.5 * day, since: ago(10) }],
        // connected 31 days ago, reminded 20 hours ago
        ['meter-4', { state: 'online', at: ago(31), certNotAfter: now + 300.5 * day }],
        ['meter-4', { state: 'online', at: now - 20 * 3_600_000, certNotAfter: now + 300.5 * day, since: ago(31) }],
      ]);
      await new InfluxV1Sink({ url: influx.url, database: db, username: influx.user, password: influx.password, timeoutMs: 5000 }).write(points);
      const run = async (title: string) => {
        const q = allQueries.find((x) => x.uid === 'influxdb' && x.where.startsWith('devices.json') && x.where.includes(`"${title}"`));
        assert.ok(q, title);
        const text = substituteMacros(q.text.replaceAll('$device', '(meter-1|meter-2|meter-3|meter-4)').replaceAll('$timeFilter', 'time > now() - 60d'), 'influxql');
        return influx.query(text, db);
      };
      const count = async (title: string) => (await run(title)).results?.[0]?.series?.[0]?.values[0]?.[1];
      assert.equal(await count('Devices online'), 2, 'meter-1 and meter-4; not meter-3, silent for 3 days');
      assert.equal(await count('Devices offline'), 1);
      assert.equal(await count('Certificates expiring within 30 days'), 2, 'meter-1 and meter-2');
      const table = (await run('State and certificate per device (last status, last 30 days)')).results?.[0]?.series ?? [];
      assert.deepEqual(
        table.map((x) => [x.tags?.device, x.values[0]?.[x.columns.indexOf('state')], x.values[0]?.[x.columns.indexOf('certificate days left')]]),
        [
          ['meter-1', 'online', 20],
          ['meter-2', 'offline', 15],
          ['meter-3', 'online', 300],
          ['meter-4', 'online', 300],
        ],
      );
      const changes = (await run('Connects and disconnects')).results?.[0]?.series?.[0];
      assert.ok(changes);
      const [state, device] = [changes.columns.indexOf('state'), changes.columns.indexOf('device')];
      assert.deepEqual(
        changes.values.map((v) => `${v[device]} ${v[state]}`),
        ['meter-3 online', 'meter-2 offline', 'meter-4 online', 'meter-2 online', 'meter-1 online'],
      );
    });

    it('the device-silent alert query runs and answers one series per device that sent within its look-back: 0 for the silent one', async () => {
      const rule = alertRules.find(({ r }) => r.title === 'FieldStreamDeviceSilent' && r.data.some((q) => q.datasourceUid === 'influxdb'))?.r;
      const queries = (rule?.data ?? []).filter((q) => q.datasourceUid === 'influxdb').map((q) => q.model.query as string);
      assert.equal(queries.length, 1);
      const answer = await influx.query(queries[0] as string, DB);
      const series = answer.results?.[0]?.series ?? [];
      // One series, one value, per device: what Grafana's reduce (last) and threshold (< 1) take.
      for (const s of series) assert.deepEqual([s.columns.length, s.values.length], [2, 1], JSON.stringify(s));
      const byDevice = Object.fromEntries(series.map((s) => [s.tags?.device, s.values[0]?.[1]]));
      assert.deepEqual(byDevice, { 'pump-7': 1, 'pump-8': 1, 'pump-10': 0, 'pump-11': 1 });
      // The rule's own threshold, applied to those values, fires for the silent device only.
      const threshold = rule?.data.find((q) => q.refId === rule.condition)?.model as { type?: string; conditions?: Array<{ evaluator: { type: string; params: number[] } }> } | undefined;
      assert.equal(threshold?.type, 'threshold');
      const evaluator = threshold?.conditions?.[0]?.evaluator;
      assert.ok(evaluator?.type === 'lt' && typeof evaluator.params[0] === 'number', JSON.stringify(evaluator));
      const limit = evaluator.params[0] as number;
      assert.deepEqual(Object.entries(byDevice).filter(([, n]) => (n as number) < limit).map(([d]) => d), ['pump-10']);
    });
  });
});

/**
 * security_events as the distributor writes them (its handler and verifier, into memory): a revoked
 * device's refusal and a registered device's (one point each), five refusals of invented ids in one
 * gateway envelope (one point counting them), and a gateway's report of three refusals of a device.
 */
async function securityEvents(dir: string, metrics = new DistributorMetrics(), revokedAtGateway: ReadonlyArray<{ deviceId: string; code: string; count: number }> = []): Promise<StoredPoint[]> {
  const keys = join(dir, 'keys');
  mkdirSync(keys, { recursive: true });
  writeFileSync(join(keys, 'pump-7.key'), `${randomBytes(32).toString('hex')}\n`);
  writeFileSync(join(keys, 'pump-9.key'), `${randomBytes(32).toString('hex')}\n`);
  writeFileSync(join(dir, 'revoked.txt'), ['pump-9', ...revokedAtGateway.map((e) => e.deviceId)].map((d) => `${d}\n`).join(''));
  const written: StoredPoint[] = [];
  const sink = { description: 'memory', write: async (p: readonly StoredPoint[]) => void written.push(...p), close: async () => {} };
  const log = createLogger('test', 'silent');
  const verifier = new MessageVerifier(new DeviceKeyRegistry(keys, join(dir, 'revoked.txt')), new ReplayWindows(join(dir, 'replay')), { requireSignatures: true, freshnessMs: 30_000, maxDelayMs: 3_600_000 }, log);
  const handler = new MessageHandler(sink, new FileStore(join(dir, 'files')), verifier, metrics);
  const now = Date.now();
  const one = (deviceId: string) => ({ v: 1, deviceId, gatewayId: 'gw-1', receivedAt: now, dataType: 'timeseries', messages: [{ messageId: `m-${deviceId}`, payload: { t: 1 } }] });
  await handler.handle(uplinkTopic('pump-9', 'timeseries'), Buffer.from(JSON.stringify(one('pump-9'))));
  await handler.handle(uplinkTopic('pump-7', 'timeseries'), Buffer.from(JSON.stringify(one('pump-7'))));
  const invented = { v: 1, gatewayId: 'gw-1', receivedAt: now, dataType: 'timeseries', devices: Array.from({ length: 5 }, (_, i) => ({ deviceId: `x-${i}`, messages: [{ messageId: 'm', payload: { t: 1 } }] })) };
  await handler.handle(gatewayUplinkTopic('gw-1'), Buffer.from(JSON.stringify(invented)));
  const report = { v: 1, gatewayId: 'gw-1', from: now - 10_000, to: now, events: [{ deviceId: 'pump-7', code: 'GATEWAY_RATE_LIMITED', count: 3 }, ...revokedAtGateway], dropped: 0 };
  await handler.handle(gatewaySecurityTopic('gw-1'), Buffer.from(JSON.stringify(report)));
  await handler.flushSecurityTally(true);
  assert.equal(written.filter((p) => p.measurement === 'security_events').length, 4 + revokedAtGateway.length, JSON.stringify(written));
  return written;
}
