import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { isFieldStreamError } from '../../shared/errors.ts';
import { eventually } from '../helpers/ws-device.ts';
import { startEmbeddedFixture, type EmbeddedFixture } from '../helpers/embedded.ts';
import { startTestFieldClient } from '../helpers/field.ts';
import { parseExposition } from '../helpers/exposition.ts';

type TestField = Awaited<ReturnType<typeof startTestFieldClient>>;

const scrape = async (f: TestField) => {
  const res = await fetch(`${f.metricsUrl}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  return parseExposition(await res.text());
};
/** One sample, by name and its labels other than `service`. */
const sample = (m: Map<string, number>, name: string, labels = '') => m.get(`fieldstream_${name}{${labels ? `${labels},` : ''}service="field-client"}`);

describe('the field client: /metrics, /healthz and /readyz', () => {
  let fx: EmbeddedFixture;
  before(async () => {
    fx = await startEmbeddedFixture(['dev-metrics', 'dev-offline']);
  });
  after(() => fx.stop());

  it('connected: ready, queue empties as receipts come, certificate expiry from its certificate', async () => {
    const f = await startTestFieldClient(fx.pki.paths, 'dev-metrics', fx.pipeline.gatewayUrl, fx.logs.logger, { FIELD_METRICS_PORT: '0' });
    try {
      assert.ok(f.metricsUrl);
      await eventually(async () => ((await fetch(`${f.metricsUrl}/readyz`)).status === 200 ? true : undefined), 10_000, 'ready once connected');
      assert.equal((await fetch(`${f.metricsUrl}/healthz`)).status, 200);
      await f.client.submitMany(Array.from({ length: 50 }, (_, i) => ({ dataType: 'timeseries' as const, payload: { level: i } })));
      const m = await eventually(async () => {
        const m = await scrape(f);
        return sample(m, 'field_queue_messages') === 0 && (sample(m, 'field_receipts_total') ?? 0) > 0 ? m : undefined;
      }, 15_000, 'every reading committed');
      assert.equal(sample(m, 'field_connected'), 1);
      assert.equal(sample(m, 'field_awaiting_receipt_messages'), 0);
      assert.equal(sample(m, 'field_awaiting_receipt_bytes'), 0);
      assert.equal(sample(m, 'field_oldest_unsent_age_seconds'), 0);
      assert.equal(sample(m, 'field_sent_total'), 50);
      for (const name of ['field_dropped_total', 'field_refused_total', 'field_refused_by_gateway_total', 'field_receipts_invalid_total', 'field_receipts_replayed_total', 'field_resent_for_receipt_total']) {
        assert.equal(sample(m, name), 0, name);
      }
      assert.equal(sample(m, 'field_commands_total', 'outcome="run"'), 0);
      const notAfter = Math.floor(Date.parse(new X509Certificate(readFileSync(fx.pki.paths.device('dev-metrics').cert)).validTo) / 1000);
      assert.equal(sample(m, 'field_certificate_expiry_timestamp_seconds'), notAfter);
      assert.ok(notAfter > Date.now() / 1000);
      // Its own process's metrics (a field client runs alone), and no device id as a label anywhere.
      assert.ok(sample(m, 'process_cpu_seconds_total') !== undefined);
      assert.ok(![...m.keys()].some((k) => k.includes('dev-metrics')));
    } finally {
      await f.close();
    }
  });

  it('offline: alive but not ready, the backlog and its age grow, a full queue counts what it refuses', async () => {
    const f = await startTestFieldClient(fx.pki.paths, 'dev-offline', 'wss://localhost:1/ws', fx.logs.logger, {
      FIELD_METRICS_PORT: '0',
      FIELD_QUEUE_MAX_BYTES: String(1024 * 1024),
    });
    try {
      assert.equal((await fetch(`${f.metricsUrl}/healthz`)).status, 200);
      const ready = await fetch(`${f.metricsUrl}/readyz`);
      assert.equal(ready.status, 503);
      assert.deepEqual(((await ready.json()) as { failing: string[] }).failing, ['gateway']);
      let accepted = 0;
      let refused = 0;
      const batch = Array.from({ length: 200 }, (_, i) => ({ dataType: 'timeseries' as const, payload: { level: i, note: 'x'.repeat(100) } }));
      for (let i = 0; i < 60 && refused === 0; i++) {
        try {
          accepted += (await f.client.submitMany(batch)).length;
        } catch (err) {
          assert.ok(isFieldStreamError(err) && err.code === 'FIELD_QUEUE_FULL', String(err));
          refused += batch.length;
        }
      }
      assert.ok(refused > 0, 'the queue filled');
      await new Promise((r) => setTimeout(r, 1100));
      const m = await scrape(f);
      assert.equal(sample(m, 'field_connected'), 0);
      assert.equal(sample(m, 'field_queue_messages'), accepted);
      assert.ok((sample(m, 'field_queue_bytes') ?? 0) > 512 * 1024);
      assert.ok((sample(m, 'field_oldest_unsent_age_seconds') ?? 0) >= 1);
      assert.equal(sample(m, 'field_refused_total'), refused);
      assert.equal(sample(m, 'field_dropped_total'), 0);
      assert.equal(sample(m, 'field_sent_total'), 0);
    } finally {
      await f.close();
    }
  });

  it('FIELD_METRICS_PORT=off: no server', async () => {
    const f = await startTestFieldClient(fx.pki.paths, 'dev-offline', 'wss://localhost:1/ws', fx.logs.logger, { FIELD_METRICS_PORT: 'off' });
    try {
      assert.equal(f.metricsUrl, undefined);
    } finally {
      await f.close();
    }
  });
});
