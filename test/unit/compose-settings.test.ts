import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { z } from 'zod';
import { GatewayConfigSchema } from '../../dmz/gateway/config.ts';
import { BrokerExporterConfigSchema } from '../../internal-network/broker-exporter/config.ts';
import { CommandApiConfigSchema } from '../../internal-network/command-api/config.ts';
import { ConsoleConfigSchema } from '../../internal-network/console/config.ts';
import { DistributorConfigSchema } from '../../internal-network/distributor/config.ts';

/**
 * A setting of .env.example reaches a compose service only when the compose file names it in that
 * service's `environment:`: nothing else of the host's .env gets into a container. Many tunables
 * were named nowhere (COMMAND_DEFAULT_TTL_S, GATEWAY_RATE_*, CONSOLE_SESSION_TTL_S ...), so an
 * operator who set them ran on the defaults without a word. Each setting a service reads is now
 * passed (`VAR: ${VAR:-}`), fixed by the compose file for the container, or listed below with why.
 */
const repoRoot = join(import.meta.dirname, '..', '..');
const read = (file: string) => readFileSync(join(repoRoot, file), 'utf8');
const COMPOSE_FILES = ['docker-compose.dmz.yml', 'docker-compose.internal.yml'] as const;

/** The Node services of the compose files and the settings schema of the program each runs. */
const SERVICES: Array<[string, (typeof COMPOSE_FILES)[number], z.ZodObject]> = [
  ['gateway', 'docker-compose.dmz.yml', GatewayConfigSchema],
  ['distributor', 'docker-compose.internal.yml', DistributorConfigSchema],
  ['command-api', 'docker-compose.internal.yml', CommandApiConfigSchema],
  ['console', 'docker-compose.internal.yml', ConsoleConfigSchema],
  ['broker-exporter', 'docker-compose.internal.yml', BrokerExporterConfigSchema],
];

/** Sections of .env.example (their titles' beginnings) whose settings no compose service is given, and why. */
const OTHER_SECTIONS: Record<string, string> = {
  '(before the first section)': 'FIELDSTREAM_ENV_FILE names the .env file itself: set in the real environment, never in the file',
  'npm start': 'the embedded pipeline on one machine (npm start), not the containers',
  'npm run stack': 'the local processes of npm run stack, not the containers',
  'Load balancer': "read by haproxy/haproxy.cfg's own deployment",
  Firewall: 'read by scripts/setup-firewall.sh on the host',
  'Field client': "each device's bundle carries a .env of its own (field-client/docker-compose.yml)",
};

/**
 * Settings a compose service's program reads (or a compose section of .env.example lists) that the
 * compose files neither pass nor fix: "NAME" for every service, "service:NAME" for one.
 */
const NOT_PASSED: Record<string, string> = {
  GATEWAY_HOST: "the container must listen on every address of its networks: the default 0.0.0.0 (a host's npm start value would cut Caddy off)",
  GATEWAY_ID: 'one value would be every replica\'s (--scale gateway=3): each gateway takes its host name and a random suffix',
  GATEWAY_TRUSTED_PROXIES: "Caddy presents certs/dmz/edge.crt, CN edge, the default; another CN would refuse every forwarded device",
  MQTT_PROTOCOL_VERSION: 'the brokers compose runs are Mosquitto 2, which speaks 5, the default (4 is for the embedded broker of npm start)',
  FILE_STORAGE_TYPE: 'only local exists; compose mounts FILE_STORAGE_PATH as the folder',
  PGPASSWORD: 'the password is the secret file PGPASSWORD_FILE names (./secrets), never a variable of the container (docs/postgres.md)',
  POSTGRES_SSL_CERT_FILE: 'no client certificate under compose (docs/postgres.md): the password authenticates',
  POSTGRES_SSL_KEY_FILE: 'no client certificate under compose (docs/postgres.md): the password authenticates',
  'command-api:POSTGRES_POOL_SIZE': 'the command API holds one connection at most, whatever the pool size (stored responses)',
  BRIDGE_CLIENT_ID: 'compose keeps the default for render-bridges.sh and the broker exporter alike (the bridges\' persistent sessions are named by it)',
};

/** .env.example's settings (`NAME=` and `# NAME=`), each with its section's title. */
function exampleSettings(): Array<{ name: string; section: string }> {
  let section = '(before the first section)';
  const out: Array<{ name: string; section: string }> = [];
  for (const line of read('.env.example').split('\n')) {
    const title = /^# --- (.+?) -+$/.exec(line);
    if (title) section = title[1]!;
    const setting = /^(?:# ?)?([A-Z][A-Z0-9_]*)=/.exec(line);
    if (setting) out.push({ name: setting[1]!, section });
  }
  return out;
}

type Environments = Record<string, Record<string, string>>;

/** Each service's `environment:` as written (values uninterpolated), of both files. */
function writtenEnvironments(): Environments {
  const out: Environments = {};
  for (const file of COMPOSE_FILES) {
    const doc = JSON.parse(execFileSync('python3', ['-c', 'import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)', join(repoRoot, file)], { encoding: 'utf8' })) as { services: Record<string, { environment?: Record<string, unknown> }> };
    for (const [name, svc] of Object.entries(doc.services)) out[name] = Object.fromEntries(Object.entries(svc.environment ?? {}).map(([k, v]) => [k, String(v)]));
  }
  return out;
}

/** Each service's environment as `docker-compose config` resolves it with `env` (the host's .env, in effect). */
function resolvedEnvironments(file: string, env: Record<string, string>, envFile?: string): Environments {
  const base = { PATH: process.env.PATH ?? '', DOMAIN_NAME: 'fs.example.org', ADMIN_EMAIL: 'ops@example.org', DMZ_BROKER_HOST: 'fs.example.org', COMMAND_API_TOKEN: 'x'.repeat(32), GRAFANA_ADMIN_PASSWORD: 'g', BRIDGE_STATE_TOKEN: 'b'.repeat(32) };
  // An empty env file: a .env of the working tree would be read too (docker-compose takes no /dev/null).
  const dir = mkdtempSync(join(tmpdir(), 'compose-settings-'));
  let yaml: string;
  try {
    writeFileSync(join(dir, 'empty.env'), '');
    yaml = execFileSync('docker-compose', ['--env-file', envFile ?? join(dir, 'empty.env'), '-f', join(repoRoot, file), 'config'], { env: { ...base, ...env }, encoding: 'utf8', cwd: repoRoot });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const doc = JSON.parse(execFileSync('python3', ['-c', 'import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)'], { input: yaml, encoding: 'utf8' })) as { services: Record<string, { environment?: Record<string, string> }> };
  return Object.fromEntries(Object.entries(doc.services).map(([name, svc]) => [name, svc.environment ?? {}]));
}

const passes = (value: string | undefined, name: string) => value !== undefined && value.includes(`\${${name}:`);
const notPassed = (service: string, name: string) => NOT_PASSED[name] ?? NOT_PASSED[`${service}:${name}`];

describe('the compose files hand each service the settings of .env it reads', () => {
  const written = writtenEnvironments();

  it('every setting a service reads is passed from .env or fixed by the compose file, unless listed here with why', () => {
    const problems: string[] = [];
    for (const [service, , schema] of SERVICES) {
      const env = written[service] ?? assert.fail(`no service ${service}`);
      for (const name of Object.keys(schema.shape)) if (!(name in env) && notPassed(service, name) === undefined) problems.push(`${service}: ${name}`);
    }
    assert.deepEqual(problems, [], 'read by the service, silently left at its default under docker-compose: pass it (NAME: ${NAME:-}) or list it in NOT_PASSED with why');
  });

  it("every setting of .env.example's server sections reaches a compose service, or is listed here with why", () => {
    const composeText = COMPOSE_FILES.map(read).join('\n');
    const named = new Set(Object.values(written).flatMap((env) => Object.keys(env)));
    const sections = new Set<string>();
    const problems: string[] = [];
    for (const { name, section } of exampleSettings()) {
      sections.add(section);
      if (Object.keys(OTHER_SECTIONS).some((s) => section.startsWith(s))) continue;
      if (composeText.includes(`\${${name}:`) || composeText.includes(`\${${name}}`) || named.has(name)) continue;
      if (!Object.keys(NOT_PASSED).some((k) => k === name || k.endsWith(`:${name}`))) problems.push(`${name} (${section})`);
    }
    assert.deepEqual(problems, [], '.env.example documents them for the servers, and no compose file names them');
    for (const s of Object.keys(OTHER_SECTIONS)) assert.ok([...sections].some((t) => t.startsWith(s)), `.env.example has no section "${s}" any more`);
  });

  it('lists nothing here that a compose file passes after all', () => {
    for (const key of Object.keys(NOT_PASSED)) {
      const [service, name] = key.includes(':') ? key.split(':') : [undefined, key];
      for (const [s, env] of Object.entries(written)) if (service === undefined || s === service) assert.ok(!passes(env[name!], name!), `${key}: ${s} is given it`);
    }
  });

  it("a value set in .env reaches every service whose program reads it, through docker-compose config", () => {
    // Each passed setting of a service, set in the environment docker-compose interpolates from (as a .env would).
    for (const file of COMPOSE_FILES) {
      const site: Record<string, string> = {};
      const expect: Array<[string, string]> = [];
      for (const [service, f, schema] of SERVICES) {
        if (f !== file) continue;
        for (const name of Object.keys(schema.shape)) {
          if (!passes(written[service]?.[name], name)) continue;
          site[name] = `site-${name.toLowerCase()}`;
          expect.push([service, name]);
        }
      }
      assert.ok(expect.length >= 10, `${file}: ${expect.length} settings passed`);
      const resolved = resolvedEnvironments(file, site);
      for (const [service, name] of expect) assert.match(resolved[service]?.[name] ?? '', new RegExp(`(^|,)${site[name]}$`), `${file} ${service}: ${name}`);
    }
    // Among them those an operator sets most (they once reached no container).
    const resolved = { ...resolvedEnvironments('docker-compose.dmz.yml', { GATEWAY_MAX_CONNECTIONS: '50000' }), ...resolvedEnvironments('docker-compose.internal.yml', { COMMAND_DEFAULT_TTL_S: '3600', INFLUXDB_TIMEOUT_MS: '30000' }) };
    assert.equal(resolved.gateway?.GATEWAY_MAX_CONNECTIONS, '50000');
    assert.equal(resolved['command-api']?.COMMAND_DEFAULT_TTL_S, '3600');
    for (const s of ['distributor', 'command-api', 'console']) assert.equal(resolved[s]?.INFLUXDB_TIMEOUT_MS, '30000', s);
  });

  for (const [what, envFile] of [
    ['unset in .env, a passed setting is empty in the container: the program takes its own default', undefined],
    ['.env a fresh copy of .env.example: every value passed is one the program takes', join(repoRoot, '.env.example')],
  ] as const) {
    it(what, () => {
      const resolved = { ...resolvedEnvironments('docker-compose.dmz.yml', {}, envFile), ...resolvedEnvironments('docker-compose.internal.yml', {}, envFile) };
      for (const [service, , schema] of SERVICES) {
        const env = Object.fromEntries(Object.entries(resolved[service] ?? {}).map(([k, v]) => [k, String(v)]));
        // As parseConfig reads it: an empty value is unset.
        const parsed = schema.safeParse(Object.fromEntries(Object.entries(env).filter(([, v]) => v.trim() !== '')));
        assert.deepEqual(parsed.success ? [] : parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`), [], service);
      }
    });
  }

  it("docs/configuration.md says so where compose does not take a setting from .env: 'compose' in the row", () => {
    const rows = read('docs/configuration.md').split('\n').filter((l) => l.startsWith('| `'));
    const rowOf = (name: string) => rows.filter((r) => (r.split('|')[1] ?? '').includes(`\`${name}\``)).join(' ');
    const listed = new Set(exampleSettings().map((s) => s.name));
    const problems: string[] = [];
    for (const [service, , schema] of SERVICES) {
      for (const name of Object.keys(schema.shape)) {
        const value = written[service]?.[name];
        const fixed = value !== undefined && !passes(value, name);
        const left = value === undefined && notPassed(service, name) !== undefined;
        if ((fixed || left) && listed.has(name) && !/compose/i.test(rowOf(name))) problems.push(`${name} (${service}: ${fixed ? `fixed, ${value}` : 'not passed'})`);
      }
    }
    assert.deepEqual([...new Set(problems)], []);
  });
});
