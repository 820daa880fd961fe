import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { startTestStack } from '../helpers/stack.ts';
import type { ComponentName, LocalStack } from '../../scripts/local-stack/stack.ts';

/**
 * The environment each process of `npm run stack` runs with, read from /proc/PID/environ: every
 * process was given the stack's whole environment, so the DMZ's gateways and Caddy held the
 * internal tier's settings (a database password, the command API token), where compose gives each
 * service its own. Each variable here is one compose gives one service (or, DISTRIBUTOR_RETRY_MAX_MS,
 * one only the distributor reads, which compose gives none).
 */
describe('npm run stack gives each process the variables compose gives its service, no other', () => {
  const work = tempDir('stack-env');
  const pki = makeTestPki([]);
  let stack: LocalStack;
  const given = {
    DEAD_LETTER_MAX_BYTES: '1073741824', // the distributor's
    CONSOLE_STALE_AFTER_S: '180', // the console's
    GATEWAY_TOKEN_MAX_FAILURES: '12', // the gateway's
    BRIDGE_PROTOCOL_VERSION: 'mqttv311', // the internal Mosquitto's
    DISTRIBUTOR_RETRY_MAX_MS: '1000', // read by the distributor alone, given by compose to none
    INFLUXDB_PASSWORD: 'not-for-the-dmz', // the distributor's, the command API's and the console's
    FIELDSTREAM_NOBODYS: 'x', // nobody's
    NODE_OPTIONS: '--max-old-space-size=1024', // every Node service's
  };
  before(async () => {
    ({ stack } = await startTestStack(pki.dir, join(work.dir, 'stack'), given));
  });
  after(async () => {
    await stack?.close();
    pki.cleanup();
    work.cleanup();
  });

  /** the names of `name`'s environment among `given`'s */
  const environOf = (name: ComponentName) => {
    const pid = stack.component(name).pid;
    assert.ok(pid, `${name} runs`);
    const vars = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').filter(Boolean).map((kv) => kv.slice(0, kv.indexOf('=')));
    return Object.keys(given).filter((v) => vars.includes(v)).sort();
  };

  it('each process: its own variables, none of another service', () => {
    assert.deepEqual(environOf('distributor'), ['DEAD_LETTER_MAX_BYTES', 'DISTRIBUTOR_RETRY_MAX_MS', 'INFLUXDB_PASSWORD', 'NODE_OPTIONS']);
    assert.deepEqual(environOf('console'), ['CONSOLE_STALE_AFTER_S', 'INFLUXDB_PASSWORD', 'NODE_OPTIONS']);
    assert.deepEqual(environOf('command-api'), ['INFLUXDB_PASSWORD', 'NODE_OPTIONS']);
    assert.deepEqual(environOf('broker-exporter'), ['NODE_OPTIONS']);
    assert.deepEqual(environOf('gateway-1'), ['GATEWAY_TOKEN_MAX_FAILURES', 'NODE_OPTIONS']);
    assert.deepEqual(environOf('internal-mosquitto'), ['BRIDGE_PROTOCOL_VERSION']);
    assert.deepEqual(environOf('dmz-mosquitto'), []);
    assert.deepEqual(environOf('caddy'), []);
  });

  it('the DMZ holds no secret of the internal tier: not the command API token, nor a database password', () => {
    for (const name of ['gateway-1', 'caddy', 'dmz-mosquitto'] as const) {
      const pid = stack.component(name).pid as number;
      const env = readFileSync(`/proc/${pid}/environ`, 'utf8');
      assert.doesNotMatch(env, /(^|\0)(COMMAND_API_TOKEN|INFLUXDB_PASSWORD|INFLUXDB_TOKEN|PGPASSWORD)=/, name);
    }
  });
});
