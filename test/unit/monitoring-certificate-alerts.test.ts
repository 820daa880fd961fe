import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { createCertificateAuthority } from '../../pki/certificates.ts';
import { certificateExpiry } from '../../shared/metrics/certificates.ts';
import { ServiceMetrics } from '../../shared/metrics/registry.ts';
import { parseExposition } from '../helpers/exposition.ts';
import { tempDir } from '../helpers/pki.ts';
import { promtoolTestRules } from '../helpers/promtool.ts';

/**
 * The services' own certificates (and the CA, and the brokers'), issued together for 825 days by
 * generate-certificates.sh, end together: FieldStreamServiceCertificateExpiringSoon must say so
 * weeks before, from what the services expose of the files their settings name.
 */
const DAY_S = 86_400;

describe("monitoring: the services' certificates running out (FieldStreamServiceCertificateExpiringSoon)", () => {
  it("a service exposes when each certificate its settings name ends, read at each scrape, and the alert fires for the one under 30 days only", async () => {
    const tmp = tempDir('service-certs');
    try {
      const soon = join(tmp.dir, 'consumer.crt');
      const ca = join(tmp.dir, 'ca.crt');
      writeFileSync(soon, createCertificateAuthority('consumer', 20).certPem);
      writeFileSync(ca, createCertificateAuthority('ca', 400).certPem);
      const m = new ServiceMetrics('distributor', { processMetrics: false });
      certificateExpiry(m, [
        { setting: 'MQTT_CERT_FILE', path: soon },
        { setting: 'MQTT_CA_FILE', path: ca },
        { setting: 'DMZ_MQTT_CA_FILE', path: join(tmp.dir, 'absent.crt') },
      ]);
      const notAfter = (file: string) => Math.floor(Date.parse(new X509Certificate(readFileSync(file, 'utf8')).validTo) / 1000);
      const samples = parseExposition(await m.registry.metrics());
      const key = (setting: string) => `fieldstream_certificate_expiry_timestamp_seconds{setting="${setting}",service="distributor"}`;
      assert.equal(samples.get(key('MQTT_CERT_FILE')), notAfter(soon));
      assert.equal(samples.get(key('MQTT_CA_FILE')), notAfter(ca));
      assert.equal(samples.has(key('DMZ_MQTT_CA_FILE')), false, 'a file that cannot be read has no series');
      // Renewed in place: the next scrape says the new end, no restart needed.
      writeFileSync(soon, createCertificateAuthority('consumer', 825).certPem);
      assert.equal(parseExposition(await m.registry.metrics()).get(key('MQTT_CERT_FILE')), notAfter(soon));

      // promtool's clock starts at 0: each end is given as the seconds left from now, which is what
      // `expiry - time()` compares. The DMZ broker's certificate, as the broker exporter reads it.
      const now = Math.floor(Date.now() / 1000);
      const left = (days: number) => Math.round(days * DAY_S);
      const series = [
        [`fieldstream_certificate_expiry_timestamp_seconds{instance="distributor-1:9465",service="distributor",setting="MQTT_CERT_FILE"}`, left(20.5)],
        [`fieldstream_certificate_expiry_timestamp_seconds{instance="distributor-1:9465",service="distributor",setting="MQTT_CA_FILE"}`, notAfter(ca) - now],
        [`fieldstream_mosquitto_certificate_expiry_timestamp_seconds{instance="broker-exporter-metrics:9468",service="broker-exporter",broker="dmz"}`, left(10.5)],
        [`fieldstream_mosquitto_certificate_expiry_timestamp_seconds{instance="broker-exporter-metrics:9468",service="broker-exporter",broker="internal"}`, left(300)],
      ]
        .map(([s, v]) => `      - series: '${s}'\n        values: '${v}x20'\n`)
        .join('');
      promtoolTestRules(`  - interval: 15s
    input_series:
${series}    alert_rule_test:
      - eval_time: 2m
        alertname: FieldStreamServiceCertificateExpiringSoon
        exp_alerts:
          - exp_labels: {severity: warning, instance: "distributor-1:9465", service: distributor, setting: MQTT_CERT_FILE}
            exp_annotations:
              summary: "A certificate of distributor (MQTT_CERT_FILE) expires within 30 days"
              description: "It expires in 20d 11h 58m 0s (negative: expired; distributor-1:9465). Once it has, every connection that needs it is refused; the services' and the brokers' certificates were issued together and end together. Re-issue them (scripts/generate-certificates.sh DOMAIN --renew, --renew-dmz for the DMZ's, --new-ca for the CA: docs/operations.md), install them and restart what reads them."
          - exp_labels: {severity: warning, instance: "broker-exporter-metrics:9468", service: broker-exporter, broker: dmz}
            exp_annotations:
              summary: "A certificate of broker-exporter: the one the dmz broker presents, expires within 30 days"
              description: "It expires in 10d 11h 58m 0s (negative: expired; broker-exporter-metrics:9468). Once it has, every connection that needs it is refused; the services' and the brokers' certificates were issued together and end together. Re-issue them (scripts/generate-certificates.sh DOMAIN --renew, --renew-dmz for the DMZ's, --new-ca for the CA: docs/operations.md), install them and restart what reads them."
`);
    } finally {
      tmp.cleanup();
    }
  });
});
