import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ROLE_POLICIES } from '../../shared/acl.ts';
import { buildDeviceBundle, issueDeviceCertificate, setupPki } from '../../pki/onboarding.ts';
import { tempDir } from '../helpers/pki.ts';

const repoRoot = join(import.meta.dirname, '..', '..');

/** Parses a Mosquitto acl_file into {user: {read: [...], write: [...]}}. */
function parseAcl(text: string): Record<string, { read: string[]; write: string[] }> {
  const out: Record<string, { read: string[]; write: string[] }> = {};
  let user = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const [kw, a, b] = line.split(/\s+/);
    if (kw === 'user' && a) {
      user = a;
      out[user] = { read: [], write: [] };
    } else if (kw === 'topic' && (a === 'read' || a === 'write') && b) {
      out[user]?.[a].push(b);
    } else {
      assert.fail(`unexpected ACL line: ${line}`);
    }
  }
  return out;
}

/** docker-compose.internal.yml as `docker-compose config` resolves it with `env` and these profiles, parsed. */
function internalConfig(env: Record<string, string | undefined>, profiles: string[]) {
  const yaml = execFileSync('docker-compose', ['-f', join(repoRoot, 'docker-compose.internal.yml'), ...profiles.flatMap((p) => ['--profile', p]), 'config'], { env, encoding: 'utf8', cwd: repoRoot });
  return JSON.parse(execFileSync('python3', ['-c', 'import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)'], { input: yaml, encoding: 'utf8' })) as {
    services: Record<string, { image?: string; profiles?: string[]; environment?: Record<string, string>; volumes?: string[]; secrets?: Array<{ source: string }>; healthcheck?: { test: string[] }; ports?: unknown[]; networks?: Record<string, unknown> }>;
    secrets?: Record<string, { file: string }>;
  };
}

describe('deployment files', () => {
  for (const [broker, file, roles] of [
    ['DMZ', 'dmz/mosquitto/acl', ['bridge', 'gateway', 'monitor']],
    ['internal', 'internal-network/mosquitto/acl', ['command-api', 'console', 'consumer', 'distributor', 'monitor']],
  ] as const) {
    it(`the ${broker} broker ACL grants exactly what shared/acl.ts allows ${roles.join(' and ')}`, () => {
      const acl = parseAcl(readFileSync(join(repoRoot, file), 'utf8'));
      assert.deepEqual(Object.keys(acl).sort(), [...roles]);
      for (const role of roles) {
        assert.deepEqual(acl[role]?.write.sort(), [...(ROLE_POLICIES[role]?.publish ?? [])].sort(), role);
        assert.deepEqual(acl[role]?.read.sort(), [...(ROLE_POLICIES[role]?.subscribe ?? [])].sort(), role);
      }
    });
  }

  it('the Mosquitto templates render with defaults, and refuse nothing but unset variables', () => {
    const tmp = tempDir('render');
    try {
      for (const conf of ['dmz/mosquitto/mosquitto.conf', 'internal-network/mosquitto/mosquitto.conf']) {
        const out = join(tmp.dir, 'out.conf');
        execFileSync(join(repoRoot, 'scripts', 'render-config.sh'), [join(repoRoot, conf), out], { env: { PATH: process.env.PATH } });
        const text = readFileSync(out, 'utf8');
        assert.doesNotMatch(text, /\$\{/, conf);
        assert.match(text, /^require_certificate true$/m);
        assert.match(text, /^allow_anonymous false$/m);
        assert.match(text, /^persistence true$/m);
        assert.match(text, /^listener 8883 0\.0\.0\.0$/m);
        assert.doesNotMatch(text, /^listener 1883/m, 'no plain-text listener');
      }
      const tpl = join(tmp.dir, 't.conf');
      writeFileSync(tpl, 'a ${NOT_SET_ANYWHERE}\n');
      const r = spawnSync(join(repoRoot, 'scripts', 'render-config.sh'), [tpl, join(tmp.dir, 'x')], { env: { PATH: process.env.PATH }, encoding: 'utf8' });
      assert.equal(r.status, 78);
      assert.match(r.stderr, /NOT_SET_ANYWHERE is not set/);
    } finally {
      tmp.cleanup();
    }
  });

  for (const file of ['docker-compose.dmz.yml', 'docker-compose.internal.yml']) {
    it(`${file} passes docker-compose config, and pins every image`, () => {
      const env = { PATH: process.env.PATH, DOMAIN_NAME: 'fs.example.org', ADMIN_EMAIL: 'ops@example.org', DMZ_BROKER_HOST: 'fs.example.org', COMMAND_API_TOKEN: 'x'.repeat(32), INFLUXDB_PASSWORD: 'p', INFLUXDB_TOKEN: 't', GRAFANA_ADMIN_PASSWORD: 'g' };
      const out = execFileSync('docker-compose', ['-f', join(repoRoot, file), '--profile', 'with-influxdb', '--profile', 'with-postgres', 'config'], { env, encoding: 'utf8', cwd: repoRoot });
      const images = [...out.matchAll(/^\s+image: (\S+)$/gm)].map((m) => m[1] as string);
      assert.ok(images.length > 0);
      for (const image of images) assert.match(image, /:v?[0-9][\w.-]*$/, `${image} is pinned`); // a version, never latest (Prometheus's tags start with v)
      assert.doesNotMatch(out, /container_name/, 'no fixed container names: --scale works');
      for (const m of out.matchAll(/- (\S*certs\S*):\S+:(\w+)$/gm)) assert.equal(m[2], 'ro', `${m[1]} mounted read-only`);
      assert.doesNotMatch(out, /ca\/ca\.key|certs\/ca:/, 'the CA key is never mounted');
      // A missing setting is named, not silently empty.
      const r = spawnSync('docker-compose', ['-f', join(repoRoot, file), 'config', '-q'], { env: { PATH: process.env.PATH }, encoding: 'utf8', cwd: repoRoot });
      assert.notEqual(r.status, 0);
      assert.match(r.stderr, /DOMAIN_NAME|DMZ_BROKER_HOST/);
    });
  }

  it('docker-compose.internal.yml offers PostgreSQL under the with-postgres profile: pinned, a volume, a health check, the password from a secret file, the distributor and the console wired to it', () => {
    // docker-compose 1.29 checks every service's variables, profiles or not: InfluxDB's too.
    const env = { PATH: process.env.PATH, DMZ_BROKER_HOST: 'fs.example.org', COMMAND_API_TOKEN: 'x'.repeat(32), GRAFANA_ADMIN_PASSWORD: 'g', INFLUXDB_PASSWORD: 'p', INFLUXDB_TOKEN: 't', PGHOST: 'postgres', PGPASSWORD_FILE: '/run/fieldstream-secrets/postgres-password' };
    const c = internalConfig(env, ['with-postgres']);
    const pg = c.services.postgres;
    assert.ok(pg, 'a postgres service');
    assert.deepEqual(pg.profiles, ['with-postgres']);
    assert.match(pg.image ?? '', /^postgres:16\.\d+-alpine$/);
    assert.equal(pg.ports, undefined, 'never published: the internal network only');
    assert.ok(pg.volumes?.some((v) => v.endsWith(':/var/lib/postgresql/data:rw')), 'its data in a volume');
    assert.match(pg.healthcheck?.test.join(' ') ?? '', /pg_isready/);
    assert.equal(pg.environment?.POSTGRES_PASSWORD_FILE, '/run/secrets/postgres_password');
    assert.equal(pg.environment?.POSTGRES_PASSWORD, undefined, 'no password in the environment');
    assert.deepEqual(pg.secrets?.map((s) => s.source), ['postgres_password']);
    assert.match(c.secrets?.postgres_password?.file ?? '', /\/secrets\/postgres-password$/);
    for (const name of ['distributor', 'console']) {
      const e = c.services[name]?.environment ?? {};
      assert.equal(e.PGHOST, 'postgres', `${name}: PGHOST from .env`);
      assert.equal(e.PGPASSWORD_FILE, '/run/fieldstream-secrets/postgres-password', `${name}: the password from the file`);
      assert.equal(e.POSTGRES_SCHEMA, 'fieldstream');
      assert.ok(c.services[name]?.volumes?.includes(`${join(repoRoot, 'secrets')}:/run/fieldstream-secrets:ro`), `${name}: the secrets folder read-only`);
    }
    assert.equal(c.services.grafana?.environment?.GRAFANA_POSTGRES_HOST, 'postgres:5432');
    // Only the two databases are optional (docker-compose config lists profiled services too; up starts them only with their profile).
    assert.deepEqual(Object.entries(c.services).filter(([, v]) => v.profiles !== undefined).map(([k, v]) => [k, v.profiles]), [['influxdb', ['with-influxdb']], ['postgres', ['with-postgres']]]);
  });

  it('docker-compose.internal.yml runs its InfluxDB on the internal network only, with the profiling endpoint off', () => {
    const env = { PATH: process.env.PATH, DMZ_BROKER_HOST: 'fs.example.org', COMMAND_API_TOKEN: 'x'.repeat(32), GRAFANA_ADMIN_PASSWORD: 'g', INFLUXDB_PASSWORD: 'p', INFLUXDB_TOKEN: 't' };
    const c = internalConfig(env, ['with-influxdb']);
    const influx = c.services.influxdb;
    assert.ok(influx, 'an influxdb service');
    assert.equal(influx.ports, undefined, 'never published: the internal network only');
    assert.deepEqual(Object.keys(influx.networks ?? {}), ['internal']);
    assert.equal(influx.environment?.INFLUXD_PPROF_DISABLED, 'true');
  });

  it("the field client's compose file passes docker-compose config inside a device bundle", () => {
    const tmp = tempDir('bundle');
    try {
      const certs = join(tmp.dir, 'certs');
      setupPki(certs, { domain: 'fs.example.org' });
      issueDeviceCertificate(certs, 'pump-7');
      const bundle = buildDeviceBundle(certs, 'pump-7', join(repoRoot, 'field-client', 'docker-compose.yml'));
      const site = join(tmp.dir, 'device');
      mkdirSync(site);
      execFileSync('tar', ['-xzf', bundle, '-C', site]);
      const out = execFileSync('docker-compose', ['config'], { cwd: join(site, 'pump-7'), env: { PATH: process.env.PATH }, encoding: 'utf8' });
      assert.match(out, /DEVICE_ID: pump-7/);
      assert.match(out, /GATEWAY_URL: wss:\/\/fs\.example\.org\/ws/);
      assert.match(out, /image: fieldstream\/node:0\.1\.0/);
    } finally {
      tmp.cleanup();
    }
  });
});
