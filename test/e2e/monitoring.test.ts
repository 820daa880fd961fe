import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { LocalStack } from '../../scripts/local-stack/stack.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { startTestFieldClient } from '../helpers/field.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { TestPrometheus } from '../helpers/prometheus.ts';
import { readiness, untilReadiness } from '../helpers/readiness.ts';
import { REPO_ROOT, startTestStack } from '../helpers/stack.ts';
import { eventually } from '../helpers/ws-device.ts';

const DEVICE = 'meter-1';
const READINGS = 300;

/**
 * The shipped alert rules (monitoring/prometheus/alerts.yml) with only their `for:` durations
 * shortened to 1s, so that an alert shows in seconds; every other line is the shipped file's.
 */
function rulesWithShortFor(shipped: string): string {
  return shipped.replace(/^(\s+for: )\S+$/gm, '$11s');
}

/**
 * A real Prometheus (Debian's) scraping every service of the real stack every second, with the
 * shipped alert rules: what it reads back matches what a field client sent, and the broker-down alert
 * fires when the DMZ Mosquitto stops and clears when it is back. docs/monitoring.md.
 */
describe('monitoring on the real stack: a real Prometheus scrapes every service', () => {
  const work = tempDir('monitoring');
  const pki = makeTestPki([DEVICE]);
  const logs = new LogCapture();
  let stack: LocalStack;
  let prom: TestPrometheus;
  let field: Awaited<ReturnType<typeof startTestFieldClient>>;

  before(async () => {
    ({ stack } = await startTestStack(pki.dir, join(work.dir, 'stack'), {}));
    field = await startTestFieldClient(pki.paths, DEVICE, stack.urls.wss, logs.logger, { FIELD_METRICS_PORT: '0' });
    assert.ok(field.metricsUrl, 'the field client serves /metrics');
    // One job per /metrics the stack reports (each service's), and the field client's.
    // Each URL once (stack.metrics names the first gateway twice: `gateway` and `gateways[0]`), or
    // its counters would be summed twice.
    const byUrl = new Map<string, string>();
    for (const [name, v] of Object.entries(stack.metrics) as Array<[string, string | readonly string[]]>) {
      for (const [i, url] of (typeof v === 'string' ? [v] : v).entries()) if (!byUrl.has(url)) byUrl.set(url, `${name}-${i}`);
    }
    byUrl.set(field.metricsUrl, 'field-client');
    const targets = [...byUrl].map(([url, job]) => ({ job, url }));
    const shipped = readFileSync(join(REPO_ROOT, 'monitoring', 'prometheus', 'alerts.yml'), 'utf8');
    const rules = rulesWithShortFor(shipped);
    const withoutFor = (t: string) => t.replace(/^\s+for: \S+$/gm, '');
    assert.equal(withoutFor(rules), withoutFor(shipped), 'only the for: durations differ');
    assert.match(rules, /alert: FieldStreamBrokerDown\n\s+expr: fieldstream_mosquitto_up == 0\n\s+for: 1s\n/);
    const dir = join(work.dir, 'prometheus');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'alerts.yml'), rules);
    const config = [
      'global:',
      '  scrape_interval: 1s',
      '  scrape_timeout: 1s',
      '  evaluation_interval: 1s',
      'rule_files: [alerts.yml]',
      'scrape_configs:',
      ...targets.map((t) => `  - job_name: ${JSON.stringify(t.job)}\n    static_configs: [{ targets: [${JSON.stringify(new URL(t.url).host)}] }]`),
      '',
    ].join('\n');
    prom = await TestPrometheus.start(dir, config);
  });
  after(async () => {
    await prom?.stop();
    await field?.close();
    await stack?.close();
    work.cleanup();
    pki.cleanup();
  });

  it('scrapes the gateway, the distributor, the command API, the broker exporter and the field client', async () => {
    const services = await eventually(async () => {
      const answer = await prom.query('count by (service) ({__name__=~"fieldstream_.+"})');
      const found = JSON.stringify(answer.data?.result ?? []);
      return ['gateway', 'distributor', 'command-api', 'broker-exporter', 'field-client'].every((s) => found.includes(`"service":"${s}"`)) ? found : undefined;
    }, 30_000, 'every service scraped');
    assert.ok(services);
    assert.equal(await prom.scalar('count(up == 0)'), undefined, 'every target up');
  });

  it(`counts what a field client sent: ${READINGS} readings accepted by the gateway and written by the distributor`, async () => {
    const base = Date.now() - READINGS * 1000;
    for (let i = 0; i < READINGS; i += 50) {
      await field.client.submitMany(Array.from({ length: 50 }, (_, k) => ({ dataType: 'timeseries' as const, payload: { level: i + k, timestamp: base + (i + k) * 1000 } })));
    }
    // Each target is scraped on its own schedule: wait until both counters have reached the count.
    const [written, accepted] = await eventually(async () => {
      const w = await prom.scalar('sum(fieldstream_distributor_messages_total{data_type="timeseries"})');
      const a = await prom.scalar('sum(fieldstream_gateway_messages_total{data_type="timeseries"})');
      return w !== undefined && a !== undefined && w >= READINGS && a >= READINGS ? [w, a] : undefined;
    }, 30_000, 'the gateway accepted and the distributor wrote every reading (as Prometheus sees it)');
    assert.equal(written, READINGS, 'each reading written once');
    assert.equal(accepted, READINGS, 'each reading accepted once');
    const points = await prom.scalar('sum(fieldstream_distributor_points_total)');
    assert.ok(points !== undefined && points >= READINGS, `points written ${points} ≥ ${READINGS} (presence points besides)`);
    assert.ok(((await prom.scalar('sum(fieldstream_distributor_end_to_end_seconds_count)')) ?? 0) >= READINGS, 'every reading has its end-to-end latency');
    // The field client's queue drains to nothing once every reading has its receipt.
    await eventually(async () => ((await prom.scalar('sum(fieldstream_field_queue_messages)')) === 0 ? true : undefined), 30_000, 'the field queue empty');
  });

  it('the broker-down alert fires when the DMZ Mosquitto is stopped, and clears when it is back; the gateway is not ready meanwhile', async () => {
    const brokerDown = async () => (await prom.alerts()).find((a) => a.labels.alertname === 'FieldStreamBrokerDown' && a.labels.broker === 'dmz');
    assert.equal(await brokerDown(), undefined, 'no broker-down alert while both brokers run');
    assert.deepEqual(await readiness(stack.metrics.gateway), { status: 200, failing: [] });
    await stack.dmzMosquitto.stop();
    try {
      const firing = await eventually(async () => {
        const a = await brokerDown();
        return a?.state === 'firing' ? a : undefined;
      }, 30_000, 'FieldStreamBrokerDown{broker="dmz"} firing');
      assert.equal(firing.labels.severity, 'critical');
      assert.equal(await prom.scalar('fieldstream_mosquitto_up{broker="internal"}'), 1, 'the internal broker is still up');
      await untilReadiness(stack.metrics.gateway, 503, ['broker'], 'the gateway /readyz 503, its broker failing');
      assert.equal((await fetch(`${stack.metrics.gateway}/healthz`)).status, 200, 'alive all the same: an orchestrator must not restart it');
      assert.equal(await prom.scalar('fieldstream_broker_connected{service="gateway"}'), 0);
    } finally {
      await stack.dmzMosquitto.start();
    }
    await eventually(async () => ((await brokerDown()) === undefined ? true : undefined), 30_000, 'FieldStreamBrokerDown cleared');
    assert.equal(await prom.scalar('fieldstream_mosquitto_up{broker="dmz"}'), 1);
    await untilReadiness(stack.metrics.gateway, 200, [], 'the gateway ready again');
  });

  it('the distributor and the command API are not ready while the internal Mosquitto is down, and ready again after', async () => {
    const internal = { distributor: stack.metrics.distributor, 'command API': stack.metrics.commandApi };
    for (const [name, base] of Object.entries(internal)) assert.deepEqual(await readiness(base), { status: 200, failing: [] }, name);
    await stack.internalMosquitto.stop();
    try {
      for (const [name, base] of Object.entries(internal)) {
        await untilReadiness(base, 503, ['broker'], `the ${name} /readyz 503, its broker failing`);
        assert.equal((await fetch(`${base}/healthz`)).status, 200, `the ${name} alive all the same`);
      }
    } finally {
      await stack.internalMosquitto.start();
    }
    for (const [name, base] of Object.entries(internal)) await untilReadiness(base, 200, [], `the ${name} ready again`);
  });
});
