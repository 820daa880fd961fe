import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startEmbeddedFixture, type EmbeddedFixture } from '../helpers/embedded.ts';
import { startTestFieldClient } from '../helpers/field.ts';
import { eventually, RawDevice } from '../helpers/ws-device.ts';

/**
 * The gateway's, the distributor's and the command API's /metrics, /healthz and /readyz, on the
 * embedded pipeline (real WSS, MQTT and disk) after real traffic: a signed field client's readings,
 * a refused frame, a command. The names are those docs/monitoring.md lists and the dashboards and
 * alert rules query.
 */

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The text exposition format's samples (comments skipped). */
function parseExposition(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `not an exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1] as string] = l[2] as string;
    samples.push({ name: m[1] as string, labels, value: Number(m[3]) });
  }
  return samples;
}

async function scrape(base: string): Promise<{ text: string; samples: Sample[] }> {
  const res = await fetch(`${base}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain/);
  const text = await res.text();
  return { text, samples: parseExposition(text) };
}

/** The value of one series (0 when absent), matching the labels given. */
function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  return samples
    .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((sum, s) => sum + s.value, 0);
}

const N = 300;

describe('service metrics and health (gateway, distributor, command API)', () => {
  let fx: EmbeddedFixture;
  let field: Awaited<ReturnType<typeof startTestFieldClient>>;
  const urls = { gateway: '', distributor: '', commandApi: '' };

  before(async () => {
    fx = await startEmbeddedFixture(['dev-metrics', 'dev-raw']);
    const d = await fx.pipeline.distributor.metricsServer;
    assert.ok(fx.pipeline.gateway.metricsServer && d && fx.pipeline.commandApi.metricsServer, 'the fixture serves every service’s metrics');
    urls.gateway = fx.pipeline.gateway.metricsServer.url;
    urls.distributor = d.url;
    urls.commandApi = fx.pipeline.commandApi.metricsServer.url;

    field = await startTestFieldClient(fx.pki.paths, 'dev-metrics', fx.pipeline.gatewayUrl, fx.logs.logger, { FIELD_HTTP_PORT: '0' });
    // Each its own time: a point is identified by (measurement, tags, time).
    const t0 = Date.now() - N;
    const readings = JSON.stringify(Array.from({ length: N }, (_, i) => ({ level: i, timestamp: t0 + i })));
    const r = await fetch(`http://127.0.0.1:${field.httpPort}/v1/timeseries`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: readings });
    assert.equal(r.status, 202);
    await eventually(() => (fx.points({ measurement: 'readings', device: 'dev-metrics' }).length >= N ? true : undefined), 30_000, `${N} readings written`);

    // A frame the gateway refuses, with its code.
    const raw = await RawDevice.connect(fx.pipeline.gatewayUrl, RawDevice.tlsFor(fx.pki.paths, 'dev-raw'));
    raw.send('{not json');
    const refusal = await raw.next();
    assert.equal(refusal.type, 'error');
    raw.close();

    // A command, so the command API has a request and a command to count.
    const c = await fetch(`http://127.0.0.1:${fx.pipeline.commandApi.port}/v1/commands`, {
      method: 'POST',
      headers: { authorization: `Bearer ${fx.pipeline.commandApiToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ deviceId: 'dev-metrics', command: 'ping' }),
    });
    assert.equal(c.status, 202);
  });
  after(async () => {
    await field?.close();
    await fx?.stop();
  });

  it('every service answers /healthz 200 and, connected to its broker, /readyz 200, naming each of its checks', async () => {
    const checks: Record<keyof typeof urls, string[]> = { gateway: ['broker'], distributor: ['broker', 'database', 'files'], commandApi: ['broker'] };
    for (const [service, base] of Object.entries(urls) as Array<[keyof typeof urls, string]>) {
      const h = await fetch(`${base}/healthz`);
      assert.equal(h.status, 200, `${service} /healthz`);
      const r = await fetch(`${base}/readyz`);
      assert.equal(r.status, 200, `${service} /readyz: ${await r.clone().text()}`);
      const body = (await r.json()) as { status: string; checks: string[]; failing: string[] };
      assert.deepEqual([body.status, body.checks, body.failing], ['ready', checks[service], []], service);
    }
  });

  it('the gateway counts what it accepted, refused and forwarded', async () => {
    const { samples: s } = await eventually(async () => {
      const got = await scrape(urls.gateway);
      return value(got.samples, 'fieldstream_gateway_receipts_total') >= 1 ? got : undefined;
    }, 15_000, 'a receipt forwarded');
    assert.equal(value(s, 'fieldstream_broker_connected', { service: 'gateway' }), 1);
    assert.ok(value(s, 'fieldstream_gateway_messages_total', { data_type: 'timeseries' }) >= N);
    assert.ok(value(s, 'fieldstream_gateway_frames_total') >= 1);
    assert.ok(value(s, 'fieldstream_gateway_connections') >= 1, 'the field client is connected');
    assert.ok(value(s, 'fieldstream_gateway_refused_total', { code: 'CONTRACT_MALFORMED_JSON' }) >= 1, JSON.stringify(s.filter((x) => x.name === 'fieldstream_gateway_refused_total')));
    assert.ok(value(s, 'fieldstream_gateway_publish_seconds_count') >= 1);
    assert.equal(value(s, 'fieldstream_gateway_rate_limited_total'), 0);
    assert.ok(s.some((x) => x.name.startsWith('fieldstream_process_')), 'the process metrics, once per process: with the gateway');
  });

  it('the distributor counts what it wrote, how long it took, and its receipts', async () => {
    const { text, samples: s } = await eventually(async () => {
      const got = await scrape(urls.distributor);
      return value(got.samples, 'fieldstream_distributor_receipts_total') >= 1 ? got : undefined;
    }, 15_000, 'a receipt published');
    assert.equal(value(s, 'fieldstream_broker_connected', { service: 'distributor' }), 1);
    assert.ok(value(s, 'fieldstream_distributor_points_total') >= N);
    assert.ok(value(s, 'fieldstream_distributor_messages_total', { data_type: 'timeseries' }) >= N);
    assert.ok(value(s, 'fieldstream_distributor_write_seconds_count') >= 1);
    assert.ok(value(s, 'fieldstream_distributor_batch_points_count') >= 1);
    assert.ok(value(s, 'fieldstream_distributor_batch_points_sum') >= N);
    // Every reading observed once, though observed by run (observeMany).
    const e2eCount = value(s, 'fieldstream_distributor_end_to_end_seconds_count');
    assert.ok(e2eCount >= N, `end-to-end count ${e2eCount}`);
    assert.equal(value(s, 'fieldstream_distributor_end_to_end_seconds_bucket', { le: '+Inf' }), e2eCount);
    const e2eSum = value(s, 'fieldstream_distributor_end_to_end_seconds_sum');
    assert.ok(e2eSum >= 0 && e2eSum / e2eCount < 30, `mean end-to-end ${e2eSum / e2eCount} s`);
    assert.equal(value(s, 'fieldstream_distributor_dead_letters_total'), 0);
    assert.equal(value(s, 'fieldstream_distributor_write_failures_total'), 0);
    assert.ok(value(s, 'fieldstream_distributor_oldest_in_progress_seconds') < 30);
    for (const name of ['fieldstream_distributor_security_events_total', 'fieldstream_distributor_duplicates_total', 'fieldstream_distributor_write_failures_total', 'fieldstream_distributor_dead_letters_total']) {
      assert.match(text, new RegExp(`^# TYPE ${name} counter$`, 'm'));
    }
    assert.ok(!s.some((x) => x.name.startsWith('fieldstream_process_')), 'process metrics only once in one process');
    // Its durable folders' file systems (FieldStreamDiskFilling) and its certificates' ends (FieldStreamServiceCertificateExpiringSoon).
    for (const setting of ['FILE_STORAGE_PATH', 'DEAD_LETTER_PATH', 'DISTRIBUTOR_STATE_DIR']) {
      const available = value(s, 'fieldstream_filesystem_available_bytes', { setting });
      assert.ok(available > 0 && available <= value(s, 'fieldstream_filesystem_size_bytes', { setting }), setting);
    }
    for (const setting of ['MQTT_CERT_FILE', 'MQTT_CA_FILE']) assert.ok(value(s, 'fieldstream_certificate_expiry_timestamp_seconds', { setting }) > Date.now() / 1000, setting);
  });

  it('the command API counts commands by state and requests by status', async () => {
    const { text, samples: s } = await scrape(urls.commandApi);
    assert.equal(value(s, 'fieldstream_broker_connected', { service: 'command-api' }), 1);
    assert.ok(value(s, 'fieldstream_command_api_commands') >= 1);
    assert.ok(s.some((x) => x.name === 'fieldstream_command_api_commands' && x.labels.state === 'expired'), 'every state listed, 0 included');
    assert.ok(value(s, 'fieldstream_command_api_requests_total', { status: '202' }) >= 1);
    assert.match(text, /^# TYPE fieldstream_command_api_responses_refused_total counter$/m);
    assert.ok(value(s, 'fieldstream_filesystem_available_bytes', { setting: 'COMMAND_STATE_PATH' }) > 0);
  });

  it('no series is labelled by device, and every one names its service', async () => {
    for (const [service, base] of Object.entries(urls)) {
      const { samples } = await scrape(base);
      assert.ok(samples.length > 0);
      for (const x of samples) {
        for (const label of Object.keys(x.labels)) assert.ok(!/^device(_?id)?$/i.test(label), `${service}: ${x.name} has a label ${label}`);
        assert.ok(x.labels.service, `${service}: ${x.name} has no service label`);
        assert.ok(x.name.startsWith('fieldstream_'), x.name);
      }
    }
  });
});
