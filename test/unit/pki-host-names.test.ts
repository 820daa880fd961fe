import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { pkiPaths } from '../../pki/layout.ts';
import { setupPki } from '../../pki/onboarding.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { tempDir } from '../helpers/pki.ts';

describe('generate-certificates.sh --edge-host, --dmz-broker-host, --internal-broker-host', () => {
  it('refuses an address that is no IP address (a typo) rather than put it in a certificate as a DNS name that nothing dials', () => {
    // "192.0.2.256" and "192.0.2.07" passed the DNS name check (digits are a label) and
    // "dead:beef" the check for IPv6 characters; each went into the certificate as a DNS name, so
    // a device dialling the address meant got a certificate that does not name it.
    const scratch = tempDir('host-names');
    const root = join(scratch.dir, 'certs');
    try {
      for (const host of ['192.0.2.256', '192.0.2.07', '10.1.2', 'dead:beef', '2001:db8:::1']) {
        for (const option of ['edgeHosts', 'dmzBrokerHosts', 'internalBrokerHosts'] as const) {
          assert.throws(() => setupPki(root, { domain: 'example.org', [option]: [host] }), (e) => e instanceof FieldStreamError && e.code === 'PKI_INVALID_NAME' && e.message.includes(host), `${option} ${host}`);
        }
      }
      assert.throws(() => setupPki(root, { domain: '192.0.2.300' }), (e) => e instanceof FieldStreamError && e.code === 'PKI_INVALID_NAME');
      assert.equal(existsSync(root), false, 'nothing written');
    } finally {
      scratch.cleanup();
    }
  });

  it('keeps the --edge-host, --dmz-broker-host and --internal-broker-host names when --renew or --new-ca re-issues the certificates for the same domain', () => {
    // `--renew` is what a service certificate near its expiry takes (CERT_EXPIRING_SOON); issued
    // again with the domain alone, the edge and broker certificates lost the names given at the
    // set-up, and the bridge and the devices dialling those names failed their host name checks.
    const scratch = tempDir('host-names-renew');
    const root = join(scratch.dir, 'certs');
    const p = pkiPaths(root);
    const names = (file: string) => (new X509Certificate(readFileSync(p.service(file).cert)).subjectAltName ?? '').split(', ').sort().join(', ');
    try {
      setupPki(root, { domain: 'example.org', edgeHosts: ['dmz2.example.org', '192.0.2.7'], dmzBrokerHosts: ['broker.corp.example'], internalBrokerHosts: ['mqtt.corp.example'] });
      for (const options of [{ renew: true }, { newCa: true }]) {
        const before = names('dmz/edge');
        const report = setupPki(root, { domain: 'example.org', ...options });
        assert.ok(report.created.includes('dmz/edge'), JSON.stringify(options));
        assert.notEqual(names('dmz/edge'), '', 're-issued');
        assert.match(names('dmz/edge'), /DNS:dmz2\.example\.org/, JSON.stringify(options));
        assert.match(names('dmz/edge'), /IP Address:192\.0\.2\.7/, JSON.stringify(options));
        assert.match(names('dmz/mosquitto'), /DNS:broker\.corp\.example/, JSON.stringify(options));
        assert.match(names('internal/mosquitto'), /DNS:mqtt\.corp\.example/, JSON.stringify(options));
        assert.equal(names('dmz/edge'), before, 'no name twice, none added');
      }
      // Another domain is another deployment: its certificates name what is given now.
      setupPki(root, { domain: 'other.example.org', renew: true });
      assert.doesNotMatch(names('dmz/edge'), /dmz2\.example\.org|DNS:example\.org|192\.0\.2\.7/);
      assert.doesNotMatch(names('dmz/mosquitto'), /broker\.corp\.example/);
    } finally {
      scratch.cleanup();
    }
  });
});
