import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { isBuiltin } from 'node:module';
import { describe, it } from 'node:test';
import { z } from 'zod';
import { denyFilters, readFilters, writeFilters } from '../../shared/acl.ts';
import { GatewayConfigSchema } from '../../dmz/gateway/config.ts';
import { DistributorConfigSchema } from '../../internal-network/distributor/config.ts';
import { ConsoleConfigSchema } from '../../internal-network/console/config.ts';
import { CommandApiConfigSchema } from '../../internal-network/command-api/config.ts';
import { BrokerExporterConfigSchema } from '../../internal-network/broker-exporter/config.ts';
import { setupPki } from '../../pki/onboarding.ts';
import { buildDeviceBundle, issueDeviceCertificate } from '../../pki/device-bundle.ts';
import { tempDir } from '../helpers/pki.ts';
import { TIMINGS } from '../../shared/limits.ts';
import { postgresSettings } from '../../internal-network/shared/postgres-settings.ts';

const repoRoot = join(import.meta.dirname, '..', '..');

/** Parses a Mosquitto acl_file into {user: {read: [...], write: [...]}}. */
function parseAcl(text: string): Record<string, { read: string[]; write: string[]; deny: string[] }> {
  const out: Record<string, { read: string[]; write: string[]; deny: string[] }> = {};
  let user = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const [kw, a, b] = line.split(/\s+/);
    if (kw === 'user' && a) {
      user = a;
      out[user] = { read: [], write: [], deny: [] };
    } else if (kw === 'topic' && (a === 'read' || a === 'write' || a === 'deny') && b) {
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

/**
 * What a TypeScript file loads at run time, its own modules' loads too: the local modules (paths from
 * the repository root) and the packages (import and export ... from, import(); `import type` and
 * `export type` are erased by the compiler and load nothing). An import's clause holds no `=` or
 * parenthesis: `export const x = {` … `from "y"` in a comment lines later is no import.
 */
function loads(entry: string): { modules: Set<string>; packages: Set<string> } {
  const specifier = /(?:^|\n)\s*(?:import|export)(\s+type\b)?[^'"`;=()]*?\bfrom\s*['"]([^'"]+)['"]|(?:^|\n)\s*import\s*['"]([^'"]+)['"]|\bimport\(\s*['"]([^'"]+)['"]\s*\)/g;
  const modules = new Set<string>();
  const packages = new Set<string>();
  const pending = [entry];
  for (let file = pending.pop(); file !== undefined; file = pending.pop()) {
    if (modules.has(file)) continue;
    modules.add(file);
    if (!file.endsWith('.ts')) continue;
    for (const m of readFileSync(join(repoRoot, file), 'utf8').matchAll(specifier)) {
      if (m[1]) continue; // a type-only import
      const spec = (m[2] ?? m[3] ?? m[4])!;
      if (spec.startsWith('.')) pending.push(relative(repoRoot, resolve(repoRoot, dirname(file), spec)));
      else if (!isBuiltin(spec)) packages.add(spec.split('/').slice(0, spec.startsWith('@') ? 2 : 1).join('/'));
    }
  }
  return { modules, packages };
}

describe('deployment files', () => {
  it('the image holds every module its entry points load: each service of the compose files and bin/fieldstream-admin', () => {
    const copied = [...readFileSync(join(repoRoot, 'Dockerfile'), 'utf8').matchAll(/^COPY\s+(?:--\S+\s+)?(.+)\s+\S+$/gm)].flatMap((m) => m[1]!.trim().split(/\s+/));
    const composeFiles = ['docker-compose.dmz.yml', 'docker-compose.internal.yml', 'field-client/docker-compose.yml'];
    const entries = composeFiles.flatMap((f) => [...readFileSync(join(repoRoot, f), 'utf8').matchAll(/command: \["node", "--import", "tsx", "([^"]+)"/g)].map((m) => m[1]!));
    assert.ok(entries.length >= 6, `the services' entry points: ${entries.join(', ')}`);
    // bin/fieldstream-admin runs it: the operator's command inside a container (`docker-compose exec distributor bin/fieldstream-admin ...`)
    entries.push('scripts/admin/cli.ts');
    // The image installs the runtime dependencies only (npm ci --omit=dev).
    const runtime = Object.keys((JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { dependencies: Record<string, string> }).dependencies);
    for (const entry of entries) {
      const { modules, packages } = loads(entry);
      assert.ok(modules.size > 5 && packages.size > 0, `${entry}: ${modules.size} modules, ${packages.size} packages`);
      const missing = [...modules].filter((f) => !copied.some((c) => f === c || f.startsWith(`${c.replace(/\/$/, '')}/`)));
      assert.deepEqual(missing, [], `${entry} loads modules the image does not hold`);
      assert.deepEqual([...packages].filter((p) => !runtime.includes(p)), [], `${entry} loads packages that are not runtime dependencies`);
    }
  });

  it('our image is named on the localhost registry everywhere, so that a host without it never pulls a namesake from Docker Hub', () => {
    const files = ['docker-compose.dmz.yml', 'docker-compose.internal.yml', 'field-client/docker-compose.yml', 'k8s/base/dmz/gateway.yaml', 'k8s/base/internal/distributor.yaml', 'k8s/base/internal/command-api.yaml', 'k8s/base/internal/console.yaml', 'k8s/base/internal/broker-exporter.yaml'];
    let ours = 0;
    for (const file of files) {
      for (const m of readFileSync(join(repoRoot, file), 'utf8').matchAll(/image: (\S+)/g)) {
        const image = m[1]!.replace(/^\$\{FIELDSTREAM_IMAGE:-([^}]+)\}$/, '$1');
        if (!/fieldstream/.test(image)) continue;
        ours++;
        assert.match(image, /^localhost\/fieldstream\/node:/, `${file}: ${m[1]}`);
      }
    }
    assert.ok(ours >= 10, `${ours} services run our image`);
  });

  it("the image's build context holds no key, token or password: .dockerignore leaves out certs/ and secrets/ wherever they are, .env and data/", () => {
    // docker build sends the whole context to the daemon (docker-compose 1.29 packs it with docker-py,
    // whose exclude_paths reads .dockerignore as here). docs/kubernetes.md copies certificates, keys
    // and tokens into k8s/overlays/*/certs and */secrets of this very folder, the one the image is built from.
    const tmp = tempDir('context');
    try {
      const put = (rel: string) => {
        mkdirSync(dirname(join(tmp.dir, rel)), { recursive: true });
        writeFileSync(join(tmp.dir, rel), 'x');
      };
      const secret = ['certs/ca/ca.key', 'certs/internal/stored-feed.key', 'k8s/overlays/dmz/certs/dmz/edge.key', 'k8s/overlays/internal/certs/internal/stored-feed.key', 'k8s/overlays/internal/secrets/command-api-token', 'secrets/postgres-password', '.env', 'data/distributor-state/windows.json', 'data/stack/certs/x.key'];
      const kept = ['shared/limits.ts', 'dmz/gateway/main.ts', 'k8s/overlays/dmz/kustomization.yaml', 'package.json'];
      for (const rel of [...secret, ...kept]) put(rel);
      writeFileSync(join(tmp.dir, '.dockerignore'), readFileSync(join(repoRoot, '.dockerignore')));
      const script = 'import json, sys, docker.utils.build as b\nroot = sys.argv[1]\nprint(json.dumps(sorted(b.exclude_paths(root, [l.strip() for l in open(root + "/.dockerignore") if l.strip() and not l.startswith("#")]))))';
      const sent = JSON.parse(execFileSync('python3', ['-c', script, tmp.dir], { encoding: 'utf8' })) as string[];
      assert.deepEqual(secret.filter((f) => sent.includes(f)), [], 'secrets sent to the daemon with the build context');
      for (const f of kept) assert.ok(sent.includes(f), `${f} stays in the context`);
    } finally {
      tmp.cleanup();
    }
  });

  for (const [broker, file, roles] of [
    ['DMZ', 'dmz/mosquitto/acl', ['bridge', 'gateway', 'monitor']],
    ['internal', 'internal-network/mosquitto/acl', ['command-api', 'console', 'consumer', 'distributor', 'monitor']],
  ] as const) {
    it(`the ${broker} broker ACL grants exactly what shared/acl.ts allows ${roles.join(' and ')}`, () => {
      const acl = parseAcl(readFileSync(join(repoRoot, file), 'utf8'));
      assert.deepEqual(Object.keys(acl).sort(), [...roles]);
      for (const role of roles) {
        assert.deepEqual(acl[role]?.write.sort(), writeFilters(role).sort(), role);
        assert.deepEqual(acl[role]?.read.sort(), readFilters(role).sort(), role);
        assert.deepEqual(acl[role]?.deny.sort(), denyFilters(role).sort(), role);
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
      const env = { PATH: process.env.PATH, DOMAIN_NAME: 'fs.example.org', ADMIN_EMAIL: 'ops@example.org', DMZ_BROKER_HOST: 'fs.example.org', COMMAND_API_TOKEN: 'x'.repeat(32), INFLUXDB_PASSWORD: 'p', INFLUXDB_TOKEN: 't', GRAFANA_ADMIN_PASSWORD: 'g', BRIDGE_STATE_TOKEN: 'b'.repeat(32) };
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

  // The command API listened on every address by default, unlike the console beside it: run as a
  // process of its own (systemd, no compose), its plain-HTTP API took bearer tokens from any network.
  // Loopback now; the compose file, whose published port reaches it through the container's
  // network, says 0.0.0.0 itself, as it does for the console.
  it('docker-compose.internal.yml makes the command API and the console listen on the container network, their own defaults being loopback', () => {
    const env = { PATH: process.env.PATH, DMZ_BROKER_HOST: 'fs.example.org', COMMAND_API_TOKEN: 'x'.repeat(32), GRAFANA_ADMIN_PASSWORD: 'g', BRIDGE_STATE_TOKEN: 'b'.repeat(32) };
    const c = internalConfig(env, []);
    assert.equal(c.services['command-api']?.environment?.COMMAND_API_HOST, '0.0.0.0');
    assert.equal(c.services.console?.environment?.CONSOLE_HOST, '0.0.0.0');
    assert.equal(CommandApiConfigSchema.parse({ COMMAND_API_TOKEN: 'x'.repeat(32) }).COMMAND_API_HOST, '127.0.0.1');
    assert.equal(ConsoleConfigSchema.parse({ COMMAND_API_TOKEN: 'x'.repeat(32) }).CONSOLE_HOST, '127.0.0.1');
  });

  it('docker-compose.internal.yml offers PostgreSQL under the with-postgres profile: pinned, a volume, a health check, the password from a secret file, the distributor and the console wired to it', () => {
    const env = { PATH: process.env.PATH, DMZ_BROKER_HOST: 'fs.example.org', COMMAND_API_TOKEN: 'x'.repeat(32), GRAFANA_ADMIN_PASSWORD: 'g', BRIDGE_STATE_TOKEN: 'b'.repeat(32), PGHOST: 'postgres', PGPASSWORD_FILE: '/run/fieldstream-secrets/postgres-password' };
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
    // Every PostgreSQL setting of .env reaches both (an unlisted one, such as the CA file of
    // POSTGRES_SSL=verify-full, was silently not there: the server checked against the public roots).
    const site: Record<string, string> = {};
    // Not passed: PGPASSWORD (the password is the secret file's, or the URL's) and a client
    // certificate (docs/postgres.md says so).
    const notPassed = new Set(['POSTGRES_URL', 'PGPASSWORD', 'POSTGRES_SSL_CERT_FILE', 'POSTGRES_SSL_KEY_FILE']);
    for (const name of Object.keys(postgresSettings())) site[name] = notPassed.has(name) ? '' : `${name.toLowerCase()}-from-env`;
    const all = internalConfig({ ...env, ...site }, ['with-postgres']);
    for (const name of ['distributor', 'console']) {
      for (const [k, v] of Object.entries(site)) if (v !== '') assert.equal(all.services[name]?.environment?.[k], v, `${name}: ${k} from .env`);
    }
    // Only the two databases are optional (docker-compose config lists profiled services too; up starts them only with their profile).
    assert.deepEqual(Object.entries(c.services).filter(([, v]) => v.profiles !== undefined).map(([k, v]) => [k, v.profiles]), [['influxdb', ['with-influxdb']], ['postgres', ['with-postgres']]]);
  });

  it('docker-compose.internal.yml runs its InfluxDB on the internal network only, with the profiling endpoint off', () => {
    const env = { PATH: process.env.PATH, DMZ_BROKER_HOST: 'fs.example.org', COMMAND_API_TOKEN: 'x'.repeat(32), GRAFANA_ADMIN_PASSWORD: 'g', BRIDGE_STATE_TOKEN: 'b'.repeat(32), INFLUXDB_PASSWORD: 'p', INFLUXDB_TOKEN: 't' };
    const c = internalConfig(env, ['with-influxdb']);
    const influx = c.services.influxdb;
    assert.ok(influx, 'an influxdb service');
    assert.equal(influx.ports, undefined, 'never published: the internal network only');
    assert.deepEqual(Object.keys(influx.networks ?? {}), ['internal']);
    assert.equal(influx.environment?.INFLUXD_PPROF_DISABLED, 'true');
    // Grafana reads with credentials of its own, never the distributor's (which may write, and
    // here are the server's admin's): an editor's query in Explore goes to InfluxDB as written.
    const grafana = c.services.grafana?.environment ?? {};
    for (const secret of ['p', 't']) assert.ok(!Object.values(grafana).includes(secret), `the distributor's ${secret === 'p' ? 'password' : 'token'} is not Grafana's`);
    const own = internalConfig({ ...env, GRAFANA_INFLUXDB_USERNAME: 'grafana', GRAFANA_INFLUXDB_PASSWORD: 'gp', GRAFANA_INFLUXDB_TOKEN: 'gt' }, ['with-influxdb']).services.grafana?.environment ?? {};
    assert.deepEqual([own.INFLUXDB_USERNAME, own.INFLUXDB_PASSWORD, own.INFLUXDB_TOKEN], ['grafana', 'gp', 'gt']);
  });

  it('docker-compose.internal.yml passes docker-compose config with what docs/deployment.md says to set: an InfluxDB 2.x or 1.x of your own, or none, no profile', () => {
    // docs/deployment.md, "3. Internal server": `install -m 0600 .env.example .env  # set ...`, then `up`.
    const lines = readFileSync(join(repoRoot, 'docs', 'deployment.md'), 'utf8').split('\n');
    const up = lines.indexOf('docker-compose -f docker-compose.internal.yml up -d --build');
    const told = /^install -m 0600 \.env\.example \.env\s+# set (.*)$/.exec(lines[up - 1] ?? '')?.[1];
    assert.ok(told, 'the set-up names the settings to set');
    const named = new Set(told.match(/\b[A-Z][A-Z0-9_]*[A-Z0-9]\b/g));
    // Every variable the compose file requires (${VAR:?...}) is one the doc names.
    const compose = readFileSync(join(repoRoot, 'docker-compose.internal.yml'), 'utf8');
    const required = [...new Set([...compose.matchAll(/\$\{([A-Z0-9_]+):\?/g)].map((m) => m[1] as string))];
    assert.ok(required.length >= 3);
    for (const v of required) assert.ok(named.has(v), `docs/deployment.md's set-up comment names ${v}, which docker-compose requires`);
    // A .env as the doc says (copied from .env.example, so the rest are empty), no profile.
    const base = { PATH: process.env.PATH, DMZ_BROKER_HOST: 'fs.example.org', COMMAND_API_TOKEN: 'x'.repeat(32), GRAFANA_ADMIN_PASSWORD: 'g', BRIDGE_STATE_TOKEN: 'b'.repeat(32), FIELDSTREAM_UID: '1001', FIELDSTREAM_GID: '1001' };
    for (const n of Object.keys(base)) if (n !== 'PATH') assert.ok(named.has(n) || n.startsWith('FIELDSTREAM_'), n);
    const dbs: Record<string, Record<string, string>> = {
      'InfluxDB 2.x of your own': { INFLUXDB_URL: 'https://influx.corp.example:8086', INFLUXDB_TOKEN: 't0ken', INFLUXDB_ORG: 'plant', INFLUXDB_BUCKET: 'readings' },
      'InfluxDB 1.x of your own': { INFLUXDB_URL: 'http://influx1.corp.example:8086', INFLUXDB_DATABASE: 'fieldstream', INFLUXDB_USERNAME: 'writer', INFLUXDB_PASSWORD: 'secret' },
      'no InfluxDB': {},
    };
    for (const [name, db] of Object.entries(dbs)) {
      const r = spawnSync('docker-compose', ['-f', join(repoRoot, 'docker-compose.internal.yml'), 'config', '-q'], { env: { ...base, ...db }, encoding: 'utf8', cwd: repoRoot });
      assert.equal(r.status, 0, `${name}: ${r.stderr}`);
      const c = internalConfig({ ...base, ...db }, []);
      for (const [k, v] of Object.entries(db)) assert.equal(c.services.distributor?.environment?.[k], v, `${name}: the distributor gets ${k}`);
    }
    // Leaving out any one required setting is named.
    for (const v of required) {
      const r = spawnSync('docker-compose', ['-f', join(repoRoot, 'docker-compose.internal.yml'), 'config', '-q'], { env: { ...base, [v]: '' }, encoding: 'utf8', cwd: repoRoot });
      assert.notEqual(r.status, 0, v);
      assert.match(r.stderr, new RegExp(`set ${v}`), v);
    }
  });

  it('.env.example, read by docker-compose itself: no comment becomes a value, and a fresh copy names what must be set', () => {
    // docker-compose reads `KEY=   # comment` as the value "# comment" (an empty value is not
    // recognised before an inline comment): a copied .env gave the command API a public token.
    const envFile = ['--env-file', join(repoRoot, '.env.example')];
    const set = { DMZ_BROKER_HOST: 'fs.example.org', COMMAND_API_TOKEN: 'x'.repeat(32), GRAFANA_ADMIN_PASSWORD: 'g', BRIDGE_STATE_TOKEN: 'b'.repeat(32) };
    for (const file of ['docker-compose.dmz.yml', 'docker-compose.internal.yml']) {
      const r = spawnSync('docker-compose', [...envFile, '-f', join(repoRoot, file), '--profile', 'with-influxdb', '--profile', 'with-postgres', 'config'], { env: { PATH: process.env.PATH, ...set }, encoding: 'utf8', cwd: repoRoot });
      assert.equal(r.status, 0, `${file}: ${r.stderr}`);
      const comments = r.stdout.split('\n').filter((l) => /:\s+['"]?#/.test(l));
      assert.deepEqual(comments, [], `${file}: values that are .env.example's comments`);
      // Every setting .env.example gives the bridge reaches it (it renders bridge.conf from them).
      if (file === 'docker-compose.internal.yml') assert.match(r.stdout, /^\s+BRIDGE_PROTOCOL_VERSION: mqttv311$/m);
    }
    // A fresh copy, nothing set: refused, naming what the doc says to set.
    const fresh = spawnSync('docker-compose', [...envFile, '-f', join(repoRoot, 'docker-compose.internal.yml'), 'config', '-q'], { env: { PATH: process.env.PATH }, encoding: 'utf8', cwd: repoRoot });
    assert.notEqual(fresh.status, 0);
    assert.match(fresh.stderr, /set (DMZ_BROKER_HOST|COMMAND_API_TOKEN|GRAFANA_ADMIN_PASSWORD|BRIDGE_STATE_TOKEN)/);
  });

  it(".env, made as docs/deployment.md says from .env.example, is readable by its owner only: it holds the servers' tokens and passwords", () => {
    // The internal server's .env holds COMMAND_API_TOKEN (commands to every device),
    // GRAFANA_ADMIN_PASSWORD, BRIDGE_STATE_TOKEN and the InfluxDB token. A `cp` of the repository's
    // 0644 .env.example, under an operator's usual umask 022, left them readable by every local user.
    const lines = [...readFileSync(join(repoRoot, 'docs', 'deployment.md'), 'utf8').matchAll(/^(\S[^#\n]*\.env\.example[^#\n]*?)\s*(#.*)?$/gm)]
      .map((m) => m[1] as string)
      .filter((l) => /\s\.env$/.test(l));
    assert.ok(lines.length >= 2, `the DMZ and internal servers' set-up each make a .env: ${lines.join(' | ')}`);
    const tmp = tempDir('env-mode');
    try {
      for (const [i, line] of lines.entries()) {
        const site = join(tmp.dir, `site-${i}`);
        mkdirSync(site);
        writeFileSync(join(site, '.env.example'), readFileSync(join(repoRoot, '.env.example')), { mode: 0o644 });
        execFileSync('sh', ['-c', `umask 022 && ${line}`], { cwd: site });
        const mode = statSync(join(site, '.env')).mode & 0o777;
        assert.equal(mode & 0o077, 0, `\`${line}\` makes .env mode 0${mode.toString(8)}: readable by others than its owner`);
      }
    } finally {
      tmp.cleanup();
    }
  });

  it("docker-compose.internal.yml's InfluxDB (with-influxdb) refuses to start without its password and token, naming them, and else runs the image's entrypoint", () => {
    const env = { PATH: process.env.PATH, DMZ_BROKER_HOST: 'fs.example.org', COMMAND_API_TOKEN: 'x'.repeat(32), GRAFANA_ADMIN_PASSWORD: 'g', BRIDGE_STATE_TOKEN: 'b'.repeat(32) };
    const influx = internalConfig(env, ['with-influxdb']).services.influxdb as { entrypoint?: string[]; command?: string[]; environment?: Record<string, string> };
    assert.equal(influx.environment?.DOCKER_INFLUXDB_INIT_PASSWORD, '');
    const [sh, flag, script, argv0] = influx.entrypoint ?? [];
    assert.deepEqual([sh, flag], ['/bin/sh', '-c']);
    assert.deepEqual(influx.command, ['influxd'], "the image's command, which an entrypoint of our own clears");
    // What the container runs: compose turns $$ into $.
    const run = (password: string, token: string) =>
      spawnSync('/bin/sh', ['-c', (script as string).replaceAll('$$', '$'), argv0 as string, ...(influx.command ?? [])], {
        env: { PATH: process.env.PATH, DOCKER_INFLUXDB_INIT_PASSWORD: password, DOCKER_INFLUXDB_INIT_ADMIN_TOKEN: token },
        encoding: 'utf8',
      });
    const none = run('', '');
    assert.equal(none.status, 78);
    assert.match(none.stderr, /set INFLUXDB_PASSWORD and INFLUXDB_TOKEN in \.env/);
    const noToken = run('a-password', '');
    assert.equal(noToken.status, 78);
    assert.match(noToken.stderr, /set INFLUXDB_TOKEN in \.env/);
    assert.match(run('', 't0ken').stderr, /set INFLUXDB_PASSWORD in \.env/);
    // Both set: on to the image's /entrypoint.sh (absent here, so the shell says it is not found).
    const both = run('a-password', 't0ken');
    assert.equal(both.status, 127);
    assert.match(both.stderr, /\/entrypoint\.sh/);
    assert.doesNotMatch(both.stderr, /INFLUXDB_/);
  });

  it("docker-compose.internal.yml's Prometheus pulls /federate from each of DMZ_PROMETHEUS_HOSTS, or DMZ_PROMETHEUS_HOST, and when both are empty from each DMZ server it bridges to (DMZ_BROKER_HOSTS, else DMZ_BROKER_HOST)", () => {
    const tmp = tempDir('prom-entry');
    try {
      // What the container runs, on this machine: its mounts (monitoring/prometheus at
      // /etc/prometheus, the renderer on PATH, /tmp) in folders of the test, and a `prometheus`
      // that only notes its arguments.
      const bin = join(tmp.dir, 'bin');
      mkdirSync(bin);
      symlinkSync(join(repoRoot, 'scripts', 'render-config.sh'), join(bin, 'render-config.sh'));
      writeFileSync(join(bin, 'prometheus'), '#!/bin/sh\necho "$@" > "$RAN"\n', { mode: 0o755 });
      const federateTargets = (set: Record<string, string>): string[] => {
        const env = { PATH: process.env.PATH, DMZ_BROKER_HOST: 'fs.example.org', COMMAND_API_TOKEN: 'x'.repeat(32), GRAFANA_ADMIN_PASSWORD: 'g', BRIDGE_STATE_TOKEN: 'b'.repeat(32), ...set };
        const prom = internalConfig(env, []).services.prometheus as { entrypoint?: string[]; environment?: Record<string, string> };
        const [sh, flag, script] = prom.entrypoint ?? [];
        assert.deepEqual([sh, flag], ['/bin/sh', '-c']);
        const run = join(tmp.dir, 'run');
        rmSync(run, { recursive: true, force: true });
        mkdirSync(run);
        const command = (script as string)
          .replaceAll('$$', '$')
          .replace(/(?<![\w/])\/(etc\/prometheus|tmp)\//g, (_, dir: string) => `${dir === 'tmp' ? run : join(repoRoot, 'monitoring', 'prometheus')}/`);
        const r = spawnSync('/bin/sh', ['-c', command], { env: { ...prom.environment, PATH: `${bin}:${process.env.PATH}`, RAN: join(run, 'ran') }, encoding: 'utf8' });
        assert.equal(r.status, 0, r.stderr);
        assert.match(readFileSync(join(run, 'ran'), 'utf8'), new RegExp(`--config\\.file=${run}/prometheus\\.yml`));
        const jobs = [...readFileSync(join(run, 'prometheus.yml'), 'utf8').matchAll(/- job_name: (dmz-federate[-\d]*)\n[\s\S]*?targets: \["([^"]+)"\]/g)];
        assert.deepEqual(jobs.map((j) => j[1]), jobs.map((_, i) => (i === 0 ? 'dmz-federate' : `dmz-federate-${i + 1}`)));
        return jobs.map((j) => j[2] as string);
      };
      assert.deepEqual(federateTargets({}), ['fs.example.org:9091'], 'one DMZ server: the broker\'s host');
      assert.deepEqual(federateTargets({ DMZ_PROMETHEUS_HOST: 'metrics.dmz.example.org', DMZ_PROMETHEUS_PORT: '19091' }), ['metrics.dmz.example.org:19091']);
      // Several DMZ servers (docs/deployment.md): each runs its DMZ Prometheus, so each is pulled.
      const several = { DMZ_BROKER_HOSTS: 'dmz1.example.org:8883,dmz2.example.org' };
      assert.deepEqual(federateTargets(several), ['dmz1.example.org:9091', 'dmz2.example.org:9091']);
      assert.deepEqual(federateTargets({ ...several, DMZ_PROMETHEUS_HOSTS: 'm1.example.org,m2.example.org:19091' }), ['m1.example.org:9091', 'm2.example.org:19091']);
    } finally {
      tmp.cleanup();
    }
  });

  for (const [file, promService, config] of [
    ['docker-compose.dmz.yml', 'dmz-prometheus', 'dmz-prometheus.yml'],
    ['docker-compose.internal.yml', 'prometheus', 'prometheus.yml'],
  ] as const) {
    it(`${file}: every name ${config} scrapes is a service's name or alias on a network its Prometheus is on, serving /metrics on that port`, () => {
      // The configuration is shared with Kubernetes (k8s/base/*/config/), where the names are the
      // `*-metrics` Services that list pods failing readiness too; compose answers them as aliases.
      const env = { PATH: process.env.PATH, DOMAIN_NAME: 'fs.example.org', ADMIN_EMAIL: 'ops@example.org', DMZ_BROKER_HOST: 'fs.example.org', COMMAND_API_TOKEN: 'x'.repeat(32), GRAFANA_ADMIN_PASSWORD: 'g', BRIDGE_STATE_TOKEN: 'b'.repeat(32) };
      const yaml = execFileSync('docker-compose', ['-f', join(repoRoot, file), 'config'], { env, encoding: 'utf8', cwd: repoRoot });
      type Service = { environment?: Record<string, string>; networks?: Record<string, { aliases?: string[] } | null> };
      const { services } = JSON.parse(execFileSync('python3', ['-c', 'import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)'], { input: yaml, encoding: 'utf8' })) as { services: Record<string, Service> };
      const promNets = Object.keys(services[promService]?.networks ?? {});
      assert.ok(promNets.length > 0, `${promService}'s networks`);
      const text = readFileSync(join(repoRoot, 'monitoring', 'prometheus', config), 'utf8');
      const targets = [
        ...[...text.matchAll(/targets: \["([^"$]+):(\d+)"\]/g)].map((m) => [m[1] as string, Number(m[2])] as const),
        ...[...text.matchAll(/names: \["([^"]+)"\]\n\s+type: A\n\s+port: (\d+)/g)].map((m) => [m[1] as string, Number(m[2])] as const),
      ].filter(([host]) => host !== 'localhost');
      assert.ok(targets.length >= (promService === 'prometheus' ? 4 : 1), `${config}: ${JSON.stringify(targets)}`);
      for (const [host, port] of targets) {
        const found = Object.entries(services).filter(([name, svc]) =>
          promNets.some((net) => svc.networks && net in svc.networks && (name === host || (svc.networks[net]?.aliases ?? []).includes(host))),
        );
        assert.equal(found.length, 1, `${config}: ${host} answers on ${promService}'s networks (${promNets.join(', ')})`);
        const [name, svc] = found[0] as [string, Service];
        assert.ok(Object.entries(svc.environment ?? {}).some(([k, v]) => k.endsWith('_METRICS_PORT') && String(v) === String(port)), `${config}: ${name} serves /metrics on ${port}`);
      }
    });
  }

  /** A compose file as `docker-compose config` resolves it with what .env must set, parsed. */
  const resolved = (file: string) => {
    const env = { PATH: process.env.PATH, DOMAIN_NAME: 'fs.example.org', ADMIN_EMAIL: 'ops@example.org', DMZ_BROKER_HOST: 'fs.example.org', COMMAND_API_TOKEN: 'x'.repeat(32), GRAFANA_ADMIN_PASSWORD: 'g', BRIDGE_STATE_TOKEN: 'b'.repeat(32) };
    const yaml = execFileSync('docker-compose', ['-f', join(repoRoot, file), 'config'], { env, encoding: 'utf8', cwd: repoRoot });
    type Service = { user?: string; read_only?: boolean; tmpfs?: string[]; command?: string[]; volumes?: string[]; environment?: Record<string, string> };
    return (JSON.parse(execFileSync('python3', ['-c', 'import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)'], { input: yaml, encoding: 'utf8' })) as { services: Record<string, Service> }).services;
  };

  /** What docs/deployment.md's set-up makes: every word of its `install -d` lines. */
  const madeBySetUp = (): string[] => {
    return [...readFileSync(join(repoRoot, 'docs', 'deployment.md'), 'utf8').matchAll(/^install -d\b[^\n]*$/gm)].flatMap((m) => m[0].split(/\s+/));
  }

  /** Every host path the DMZ and internal compose files mount, relative to the checkout, with the service mounting it. */
  const mountSources = (): Array<{ where: string; rel: string }> => {
    const out: Array<{ where: string; rel: string }> = [];
    for (const file of ['docker-compose.dmz.yml', 'docker-compose.internal.yml']) {
      for (const [name, svc] of Object.entries(resolved(file))) {
        for (const v of svc.volumes ?? []) out.push({ where: `${file} ${name}`, rel: relative(repoRoot, v.split(':')[0] as string) });
      }
    }
    return out;
  }

  for (const file of ['docker-compose.dmz.yml', 'docker-compose.internal.yml']) {
    it(`${file}: each read-only service running TypeScript has a writable /tmp, and each folder of state a service writes is made by docs/deployment.md's set-up`, () => {
      const services = resolved(file);
      // tsx makes its cache of compiled modules in /tmp/tsx-UID at the first module: on a read-only
      // root file system without /tmp mounted it throws, and the service never starts.
      const noTmp = Object.entries(services)
        .filter(([, svc]) => svc.read_only && (svc.command ?? []).join(' ').includes('--import tsx') && !(svc.tmpfs ?? []).includes('/tmp'))
        .map(([name]) => name);
      assert.deepEqual(noTmp, [], 'services whose tsx cannot make its cache');
      // A bind mount's missing source is made by Docker, as root's: a service running as
      // FIELDSTREAM_UID with no capabilities cannot write it.
      const made = madeBySetUp();
      const missing: string[] = [];
      for (const [name, svc] of Object.entries(services)) {
        if (!svc.user) continue;
        for (const v of svc.volumes ?? []) {
          const [src, , mode] = v.split(':');
          const rel = src ? relative(repoRoot, src) : '';
          if (mode !== 'ro' && rel.startsWith('data/') && !made.includes(rel)) missing.push(`${name}: ${rel}`);
        }
      }
      assert.deepEqual(missing, [], 'folders of state the set-up does not make');
    });
  }

  it("docs/deployment.md's mends for a folder Docker made as root's give it to the owner of certs/, run as printed from an operator's shell", { skip: process.getuid?.() === 0 ? false : 'needs root (chown)' }, () => {
    // An operator's shell has no FIELDSTREAM_UID: it is a setting of .env, read by docker-compose.
    // `chown ":"` changes nothing and succeeds, so a mend built on it left the folder root's.
    const text = readFileSync(join(repoRoot, 'docs', 'deployment.md'), 'utf8').replace(/\s*\n\s*/g, ' ');
    const mends = [...text.matchAll(/`(sudo chown [^`]+)`/g)].map((m) => m[1] as string);
    assert.ok(mends.some((c) => c.includes('-R') && c.endsWith(' data/')), `the mend of data/: ${mends.join(' | ')}`);
    assert.ok(mends.some((c) => c.includes('data/edge-hop')), `the mend of data/edge-hop: ${mends.join(' | ')}`);
    const tmp = tempDir('mend');
    try {
      const owner = { uid: 4321, gid: 4322 };
      // sudo as the operator would run it: the command line is expanded by the operator's shell first.
      mkdirSync(join(tmp.dir, 'bin'));
      writeFileSync(join(tmp.dir, 'bin', 'sudo'), '#!/bin/sh\nexec "$@"\n', { mode: 0o755 });
      for (const mend of mends) {
        const site = join(tmp.dir, `site-${mends.indexOf(mend)}`);
        for (const d of ['certs', 'data/caddy/data', 'data/edge-hop']) mkdirSync(join(site, d), { recursive: true });
        execFileSync('chown', ['-R', `${owner.uid}:${owner.gid}`, join(site, 'certs')]);
        execFileSync('chmod', ['0755', join(site, 'data', 'edge-hop')]); // as Docker makes it: root's, 0755
        execFileSync('bash', ['-c', mend], { cwd: site, env: { PATH: `${join(tmp.dir, 'bin')}:${process.env.PATH}`, HOME: tmp.dir } });
        const made = mend.includes('-R') ? ['data', 'data/caddy/data', 'data/edge-hop'] : ['data/edge-hop'];
        for (const d of made) {
          const st = statSync(join(site, d));
          assert.deepEqual([st.uid, st.gid], [owner.uid, owner.gid], `${mend}: ${d} belongs to the owner of certs/`);
        }
        if (mend.includes('edge-hop')) assert.equal(statSync(join(site, 'data', 'edge-hop')).mode & 0o777, 0o700, `${mend}: data/edge-hop 0700`);
      }
    } finally {
      tmp.cleanup();
    }
  });

  it("docker-compose.internal.yml: the command API and the console take COMMAND_API_TOKENS_FILE from .env, the role tokens' file, and see its folder read-only", () => {
    // docs/console.md: under compose, operators log in with COMMAND_API_TOKEN "or a token of
    // COMMAND_API_TOKENS_FILE"; a setting compose does not pass, or a path no mount holds, is none.
    const file = '/certs/api-tokens/api-tokens.json';
    const env = { PATH: process.env.PATH, DMZ_BROKER_HOST: 'fs.example.org', COMMAND_API_TOKEN: 'x'.repeat(32), GRAFANA_ADMIN_PASSWORD: 'g', BRIDGE_STATE_TOKEN: 'b'.repeat(32), COMMAND_API_TOKENS_FILE: file };
    const c = internalConfig(env, []);
    for (const name of ['command-api', 'console']) {
      const svc = c.services[name];
      assert.equal(svc?.environment?.COMMAND_API_TOKENS_FILE, file, `${name} gets COMMAND_API_TOKENS_FILE`);
      // A folder, not the file: the file is replaced by renaming (both re-read it within a second), which a file mount would not show.
      assert.ok(svc?.volumes?.includes(`${join(repoRoot, 'certs', 'internal', 'api-tokens')}:/certs/api-tokens:ro`), `${name}: ${svc?.volumes?.join(', ')}`);
    }
    // Unset: none (an empty value is the default, no file), and docker-compose still starts.
    const none = internalConfig({ ...env, COMMAND_API_TOKENS_FILE: undefined }, []);
    assert.equal(none.services['command-api']?.environment?.COMMAND_API_TOKENS_FILE, '');
    // The set-up makes that folder as the owner of certs/: one Docker makes is root's, and the file could not be put there.
    const made = madeBySetUp();
    assert.ok(made.includes('certs/internal/api-tokens'), 'docs/deployment.md makes certs/internal/api-tokens');
  });

  for (const file of ['docker-compose.dmz.yml', 'docker-compose.internal.yml']) {
    it(`${file}: every absolute path a Node service is given lies in one of its mounts or its tmpfs`, () => {
      const env = { PATH: process.env.PATH, DOMAIN_NAME: 'fs.example.org', ADMIN_EMAIL: 'ops@example.org', DMZ_BROKER_HOST: 'fs.example.org', COMMAND_API_TOKEN: 'x'.repeat(32), GRAFANA_ADMIN_PASSWORD: 'g', BRIDGE_STATE_TOKEN: 'b'.repeat(32), COMMAND_API_TOKENS_FILE: '/certs/api-tokens/api-tokens.json', PGPASSWORD_FILE: '/run/fieldstream-secrets/postgres-password' };
      const yaml = execFileSync('docker-compose', ['-f', join(repoRoot, file), 'config'], { env, encoding: 'utf8', cwd: repoRoot });
      type Service = { command?: string[]; environment?: Record<string, string>; volumes?: string[]; tmpfs?: string[] };
      const { services } = JSON.parse(execFileSync('python3', ['-c', 'import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)'], { input: yaml, encoding: 'utf8' })) as { services: Record<string, Service> };
      const outside: string[] = [];
      for (const [name, svc] of Object.entries(services)) {
        if (!(svc.command ?? []).join(' ').includes('--import tsx')) continue;
        const targets = [...(svc.volumes ?? []).map((v) => v.split(':')[1] as string), ...(svc.tmpfs ?? [])];
        for (const [k, v] of Object.entries(svc.environment ?? {})) {
          // GATEWAY_PATH is where devices open their WebSocket: a URL's path, not a file's.
          if (typeof v !== 'string' || !v.startsWith('/') || k === 'GATEWAY_PATH') continue;
          if (!targets.some((t) => v === t || v.startsWith(`${t}/`))) outside.push(`${name}: ${k}=${v}`);
        }
      }
      assert.deepEqual(outside, [], 'paths no mount holds');
    });
  }

  it('every setting of a service that docs/deployment.md names reaches that service in the compose files, from .env', () => {
    // A setting the deployment guide tells an operator to set (GATEWAY_UPLINK_ENVELOPES=device while
    // the distributors are older, DISTRIBUTOR_CONSUMERS, ...) does nothing when compose does not pass it.
    const schemas: Record<string, { shape: Record<string, unknown> }> = {
      'dmz/gateway/main.ts': GatewayConfigSchema,
      'internal-network/distributor/main.ts': DistributorConfigSchema,
      'internal-network/console/main.ts': ConsoleConfigSchema,
      'internal-network/command-api/main.ts': CommandApiConfigSchema,
      'internal-network/broker-exporter/main.ts': BrokerExporterConfigSchema,
    };
    // Named by the guide, deliberately not passed: one value would be every --scale replica's (the default differs per container).
    const notPassed = new Set(['GATEWAY_ID']);
    const named = new Set(readFileSync(join(repoRoot, 'docs', 'deployment.md'), 'utf8').match(/\b[A-Z][A-Z0-9_]*[A-Z0-9]\b/g));
    const missing: string[] = [];
    for (const file of ['docker-compose.dmz.yml', 'docker-compose.internal.yml']) {
      for (const [name, svc] of Object.entries(resolved(file))) {
        const entry = (svc.command ?? []).find((a) => a.endsWith('.ts'));
        if (!entry) continue;
        const schema = schemas[entry] ?? assert.fail(`${file} ${name}: no schema known for ${entry}`);
        for (const k of Object.keys(schema.shape)) if (named.has(k) && !notPassed.has(k) && !(k in (svc.environment ?? {}))) missing.push(`${file} ${name}: ${k}`);
      }
    }
    assert.deepEqual(missing, [], 'settings docs/deployment.md names that compose does not pass');
  });

  it("each service's *_METRICS_HOST_NAMES reaches it from .env, its compose alias always among them", () => {
    // The metrics ports answer only the names they are told (HTTP_HOST_NOT_SERVED): a name set in
    // .env for another scraper did nothing when compose did not pass it; and the alias Prometheus
    // and the console's pipeline page use there must stay served whatever .env lists.
    const services: Record<string, [string, string, { shape: Record<string, unknown> }]> = {
      gateway: ['docker-compose.dmz.yml', 'GATEWAY_METRICS_HOST_NAMES', GatewayConfigSchema],
      distributor: ['docker-compose.internal.yml', 'DISTRIBUTOR_METRICS_HOST_NAMES', DistributorConfigSchema],
      'command-api': ['docker-compose.internal.yml', 'COMMAND_API_METRICS_HOST_NAMES', CommandApiConfigSchema],
      console: ['docker-compose.internal.yml', 'CONSOLE_METRICS_HOST_NAMES', ConsoleConfigSchema],
      'broker-exporter': ['docker-compose.internal.yml', 'BROKER_EXPORTER_METRICS_HOST_NAMES', BrokerExporterConfigSchema],
    };
    const base = { PATH: process.env.PATH, DOMAIN_NAME: 'fs.example.org', ADMIN_EMAIL: 'ops@example.org', DMZ_BROKER_HOST: 'fs.example.org', COMMAND_API_TOKEN: 'x'.repeat(32), GRAFANA_ADMIN_PASSWORD: 'g', BRIDGE_STATE_TOKEN: 'b'.repeat(32) };
    const namesOf = (file: string, service: string, variable: string, schema: { shape: Record<string, unknown> }, set: Record<string, string>) => {
      const yaml = execFileSync('docker-compose', ['-f', join(repoRoot, file), 'config'], { env: { ...base, ...set }, encoding: 'utf8', cwd: repoRoot });
      const svc = (JSON.parse(execFileSync('python3', ['-c', 'import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)'], { input: yaml, encoding: 'utf8' })) as { services: Record<string, { environment?: Record<string, string> }> }).services[service];
      const value = svc?.environment?.[variable];
      assert.ok(value !== undefined, `${file} ${service}: ${variable} not passed`);
      return (schema.shape[variable] as { parse(v: unknown): string[] }).parse(value);
    };
    for (const [service, [file, variable, schema]] of Object.entries(services)) {
      const alias = `${service}-metrics`;
      assert.deepEqual(namesOf(file, service, variable, schema, {}), [alias], `${service}: by default its alias`);
      assert.deepEqual(namesOf(file, service, variable, schema, { [variable]: 'metrics.plant.example' }).sort(), [alias, 'metrics.plant.example'].sort(), `${service}: a name from .env`);
    }
  });

  it('every certificate path a compose file mounts is made by generate-certificates.sh or by the set-up in docs/deployment.md, never left for Docker to make', () => {
    // A bind mount's missing source becomes a folder of root's: a key copied there later (a device
    // onboarded after the first `up`) cannot be written by the owner of certs/, nor read by the
    // services when root puts it there (0600), and the device's messages are refused as unknown.
    const tmp = tempDir('mount-sources');
    try {
      const certs = join(tmp.dir, 'certs');
      setupPki(certs, { domain: 'fs.example.org' });
      const made = madeBySetUp();
      const missing = mountSources()
        .filter(({ rel }) => rel.startsWith('certs/') && !existsSync(join(tmp.dir, rel)) && !made.includes(rel))
        .map(({ where, rel }) => `${where}: ${rel}`);
      assert.deepEqual(missing, [], 'mounted certificate paths that nothing makes');
    } finally {
      tmp.cleanup();
    }
  });

  it('every other host folder a compose file mounts is in the repository or made by the set-up in docs/deployment.md, never left for Docker to make', () => {
    // A missing mount source becomes a folder of root's. ./secrets, mounted into the distributor and
    // the console whether PostgreSQL is used or not, was one: docs/postgres.md's later
    // `openssl rand ... > secrets/postgres-password`, run as the owner of certs/, was then refused.
    const tracked = execFileSync('git', ['ls-files'], { cwd: repoRoot, encoding: 'utf8' }).split('\n').filter(Boolean);
    const made = madeBySetUp();
    const missing = mountSources()
      // data/ and certs/: the tests above; a path outside the checkout is the operator's own.
      .filter(({ rel }) => !(rel.startsWith('..') || rel.startsWith('data/') || rel.startsWith('certs/')))
      .filter(({ rel }) => !(tracked.some((t) => t === rel || t.startsWith(`${rel}/`)) || made.includes(rel)))
      .map(({ where, rel }) => `${where}: ${rel}`);
    assert.deepEqual(missing, [], 'mounted folders that nothing makes');
  });

  /** The certificate paths `file` mounts that neither `copied` nor docs/deployment.md's set-up provides. */
  const uncopied = (file: string, copied: string[]): string[] => {
    const made = madeBySetUp();
    const left: string[] = [];
    for (const [name, svc] of Object.entries(resolved(file))) {
      for (const v of svc.volumes ?? []) {
        const rel = relative(repoRoot, v.split(':')[0] as string);
        if (rel.startsWith('certs/') && !made.includes(rel) && !copied.some((c) => rel === c || rel.startsWith(`${c}/`))) left.push(`${name}: ${rel}`);
      }
    }
    return left;
  };
  const quoted = (text: string) => [...text.matchAll(/`([^`]+)`/g)].map((c) => (c[1] as string).replace(/\/$/, ''));

  it("docs/deployment.md copies to each server every certificate path its compose file mounts", () => {
    // "Copy the repository with `certs/...` and ... to the DMZ server, with ... to the internal server":
    // a mounted file left out is made by Docker as an empty folder (Mosquitto's crlfile then
    // stops the broker, and with it the tier).
    const text = readFileSync(join(repoRoot, 'docs', 'deployment.md'), 'utf8').replace(/\s+/g, ' ');
    const m = /Copy the repository with (.*?) to the DMZ server, with (.*?) to the internal server/.exec(text);
    assert.ok(m, 'the copy sentence of "1. Certificates"');
    for (const [file, named] of [['docker-compose.dmz.yml', m[1]], ['docker-compose.internal.yml', m[2]]] as const) {
      const copied = quoted(named as string);
      assert.deepEqual(uncopied(file, copied), [], `${file}: mounted, and not copied to its server (${copied.join(', ')})`);
    }
  });

  it('the README\'s three machines and what generate-certificates.sh prints copy every certificate path the compose files mount', () => {
    // The README's steps 2 and 3 and the script's closing lines are what a new operator follows;
    // without certs/ca.crl on a server Docker mounts an empty folder there and Mosquitto stops.
    const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8').replace(/\s+/g, ' ');
    const dmz = /\*\*DMZ server\*\*: (.*?), a `\.env`/.exec(readme);
    const internal = /\*\*Internal server\*\*: (.*?), its `\.env`/.exec(readme);
    assert.ok(dmz && internal, 'the README\'s steps 2 and 3');
    assert.deepEqual(uncopied('docker-compose.dmz.yml', quoted(dmz[1] as string)), [], 'README step 2');
    assert.deepEqual(uncopied('docker-compose.internal.yml', quoted(internal[1] as string)), [], 'README step 3');

    const tmp = tempDir('setup-output');
    try {
      const out = execFileSync(join(repoRoot, 'scripts', 'generate-certificates.sh'), ['fs.example.org'], {
        env: { ...process.env, CERTS_DIR: join(tmp.dir, 'certs'), FIELDSTREAM_ENV_FILE: '/dev/null' },
        encoding: 'utf8',
      });
      const m = /Copy (.*?) to the DMZ server, (.*?) to the internal server/.exec(out.replace(/\s+/g, ' '));
      assert.ok(m, `the copy line of generate-certificates.sh:\n${out}`);
      const listed = (s: string) => s.split(/\s*\+\s*|\s+and\s+/).map((x) => x.trim().replace(/\/$/, ''));
      assert.deepEqual(uncopied('docker-compose.dmz.yml', listed(m[1] as string)), [], 'generate-certificates.sh, DMZ server');
      assert.deepEqual(uncopied('docker-compose.internal.yml', listed(m[2] as string)), [], 'generate-certificates.sh, internal server');
    } finally {
      tmp.cleanup();
    }
  });

  it("every container of the compose files, the device bundle's too, keeps a bounded log: rotated, never more than LOG_MAX_BYTES", () => {
    // Docker's default json-file driver keeps a container's stdout for as long as the container
    // exists, growing without end: on a field device, years of reconnects and refusals would fill
    // the disk the durable queue (FIELD_QUEUE_MAX_BYTES, bounded itself) writes to; on a DMZ server,
    // the gateways' connection logs the one the broker persists its queue on.
    const LOG_MAX_BYTES = 64 * 2 ** 20;
    const Logging = z.object({ driver: z.enum(['json-file', 'local']), options: z.object({ 'max-size': z.string(), 'max-file': z.string() }) });
    const bytes = (size: string): number => {
      const m = /^(\d+)([kmg])$/.exec(size) ?? assert.fail(`max-size ${size}: a number and k, m or g`);
      return Number(m[1]) * 1024 ** ' kmg'.indexOf(m[2] as string);
    };
    for (const file of ['docker-compose.dmz.yml', 'docker-compose.internal.yml', 'field-client/docker-compose.yml']) {
      const parsed = JSON.parse(execFileSync('python3', ['-c', 'import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)'], { input: readFileSync(join(repoRoot, file), 'utf8'), encoding: 'utf8' })) as { services: Record<string, { logging?: unknown }> };
      for (const [name, svc] of Object.entries(parsed.services)) {
        const r = Logging.safeParse(svc.logging);
        assert.ok(r.success, `${file}: ${name} keeps its log without bound (logging: ${JSON.stringify(svc.logging)})`);
        const kept = bytes(r.data.options['max-size']) * Number(r.data.options['max-file']);
        assert.ok(kept > 0 && kept <= LOG_MAX_BYTES, `${file}: ${name} keeps up to ${kept} bytes of log`);
      }
    }
  });

  it("the field client's container is given the time of its orderly stop before Docker's SIGKILL", () => {
    // Its stop waits for the answers of exec commands still running (up to twice
    // TIMINGS.fieldCommandStopGraceMs), then closes its queue and connection: past Docker's default
    // 10 s, after which the programs' answers waited for the next start.
    const parsed = JSON.parse(execFileSync('python3', ['-c', 'import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)'], { input: readFileSync(join(repoRoot, 'field-client', 'docker-compose.yml'), 'utf8'), encoding: 'utf8' })) as { services: Record<string, { stop_grace_period?: string }> };
    const grace = parsed.services['field-client']?.stop_grace_period ?? '10s';
    const m = /^(\d+)s$/.exec(grace) ?? assert.fail(`stop_grace_period ${grace}: seconds`);
    assert.ok(Number(m[1]) * 1000 >= 2 * TIMINGS.fieldCommandStopGraceMs + 10_000, `stop_grace_period ${grace}`);
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
      assert.match(out, /image: localhost\/fieldstream\/node:0\.1\.0/);
    } finally {
      tmp.cleanup();
    }
  });
});

