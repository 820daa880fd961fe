import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { createInternalServer } from '../../scripts/local-stack/internal-server.ts';
import { createLogger } from '../../shared/logger.ts';
import { tempDir } from '../helpers/pki.ts';
import { REPO_ROOT } from '../helpers/stack.ts';

const log = createLogger('test', 'silent');

/**
 * What `npm run stack` hands its processes, against what the compose files hand the same services.
 */
describe("npm run stack renders the internal broker's bridges as docker-compose.internal.yml does", () => {
  const work = tempDir('stack-env-bridge');
  after(() => work.cleanup());

  /** The first bridge file rendered for the internal Mosquitto with these settings (nothing started). */
  const renderedBridge = async (env: Record<string, string | undefined>, name: string) => {
    const workDir = join(work.dir, name);
    const server = await createInternalServer({ repoRoot: REPO_ROOT, certsDir: join(work.dir, 'certs'), workDir, env, logger: log, commandApiToken: 'x'.repeat(32), dmzBrokers: [{ host: 'localhost', port: 18883 }], monitorDmzBroker: 'off' });
    server.mosquitto.spec.prepare?.();
    return readFileSync(join(workDir, 'internal-mosquitto', 'bridges', 'bridge-1.conf'), 'utf8');
  };

  // The compose file passes BRIDGE_PROTOCOL_VERSION (default mqttv311) to the broker whose
  // entrypoint renders bridge.conf; the stack rendered it without, so a site's setting was tried
  // under docker-compose only.
  it('BRIDGE_PROTOCOL_VERSION set: the bridge speaks that version', async () => {
    assert.match(await renderedBridge({ BRIDGE_PROTOCOL_VERSION: 'mqttv5' }, 'v5'), /^bridge_protocol_version mqttv5$/m);
  });

  it('BRIDGE_PROTOCOL_VERSION unset or empty: mqttv311, as compose says', async () => {
    assert.match(await renderedBridge({}, 'unset'), /^bridge_protocol_version mqttv311$/m);
    assert.match(await renderedBridge({ BRIDGE_PROTOCOL_VERSION: '' }, 'empty'), /^bridge_protocol_version mqttv311$/m);
  });
});
