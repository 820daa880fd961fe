import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
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
});
