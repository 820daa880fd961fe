import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { createInternalServer } from '../../scripts/local-stack/internal-server.ts';
import { allowedVariables, COMPOSE_ENVIRONMENT, type StackService } from '../../scripts/local-stack/service-env.ts';
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

/** Each service's `environment:` keys, as `docker-compose config` resolves the file. */
function composeEnvironment(file: string): Record<string, string[]> {
  const env = { PATH: process.env.PATH, DOMAIN_NAME: 'fs.example.org', ADMIN_EMAIL: 'ops@example.org', DMZ_BROKER_HOST: 'fs.example.org', COMMAND_API_TOKEN: 'x'.repeat(32), GRAFANA_ADMIN_PASSWORD: 'g', BRIDGE_STATE_TOKEN: 'b'.repeat(32) };
  const yaml = execFileSync('docker-compose', ['-f', join(REPO_ROOT, file), 'config'], { env, encoding: 'utf8', cwd: REPO_ROOT });
  const parsed = JSON.parse(execFileSync('python3', ['-c', 'import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)'], { input: yaml, encoding: 'utf8' })) as { services: Record<string, { environment?: Record<string, string> }> };
  return Object.fromEntries(Object.entries(parsed.services).map(([name, svc]) => [name, Object.keys(svc.environment ?? {}).sort()]));
}

describe("what npm run stack gives each process of the stack's environment", () => {
  let read: Record<string, string[]> | undefined;
  const composeOf = () => (read ??= { ...composeEnvironment('docker-compose.dmz.yml'), ...composeEnvironment('docker-compose.internal.yml') });

  it("names, for each service it runs, the variables the compose files give that service", () => {
    const compose = composeOf();
    for (const [service, vars] of Object.entries(COMPOSE_ENVIRONMENT)) assert.deepEqual([...vars].sort(), compose[service], service);
  });

  it('gives no process a variable compose gives only other services', () => {
    const compose = composeOf();
    for (const service of Object.keys(COMPOSE_ENVIRONMENT) as StackService[]) {
      const others = new Set(Object.entries(compose).filter(([s]) => s !== service).flatMap(([, vars]) => vars));
      const own = new Set(compose[service]);
      const leaked = [...allowedVariables(service, REPO_ROOT)].filter((v) => others.has(v) && !own.has(v));
      assert.deepEqual(leaked, [], service);
    }
  });

  it("gives a service its own settings that compose gives nobody (the knobs tests and the benchmark turn), and Caddy the Caddyfile's", () => {
    assert.ok(allowedVariables('distributor', REPO_ROOT).has('DISTRIBUTOR_RETRY_MAX_MS'));
    assert.ok(allowedVariables('gateway', REPO_ROOT).has('GATEWAY_RATE_BURST_S'));
    assert.ok(!allowedVariables('gateway', REPO_ROOT).has('DISTRIBUTOR_RETRY_MAX_MS'));
    assert.ok(allowedVariables('caddy', REPO_ROOT).has('GATEWAY_PATH'), 'read by the Caddyfile as by the gateway');
  });

  it('passes on what the benchmark sets for how a program runs: LD_PRELOAD to each, NODE_OPTIONS to the Node services, GOMAXPROCS to Caddy', () => {
    for (const service of Object.keys(COMPOSE_ENVIRONMENT) as StackService[]) assert.ok(allowedVariables(service, REPO_ROOT).has('LD_PRELOAD'), service);
    assert.ok(allowedVariables('gateway', REPO_ROOT).has('NODE_OPTIONS'));
    assert.ok(!allowedVariables('dmz-mosquitto', REPO_ROOT).has('NODE_OPTIONS'));
    assert.ok(allowedVariables('caddy', REPO_ROOT).has('GOMAXPROCS'));
  });
});
