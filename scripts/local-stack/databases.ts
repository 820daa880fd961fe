import { execFile } from 'node:child_process';
import { chmodSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { ManagedProcess } from './process.ts';
import { freePort } from './ports.ts';
import { activityOf, shardsOf, type InfluxActivity, type InfluxShard } from './influx-stats.ts';

/**
 * The HTTP API of an InfluxDB 1.x started by InfluxV1, as its admin user: what another process (a
 * benchmark's probe device) needs to read it, given the URL (and namespace) the server has.
 */
export class InfluxV1Api {
  readonly user = 'fieldstream';
  readonly password = 'not-a-secret-test-password';

  /** `netns`: the server's network namespace, whose loopback the URL is on (called through curl there) */
  constructor(
    readonly url: string,
    readonly netns?: string,
  ) {}

  async query(q: string, database?: string, auth = true): Promise<InfluxResult> {
    const url = new URL('/query', this.url);
    url.searchParams.set('q', q);
    url.searchParams.set('epoch', 'ms');
    if (database) url.searchParams.set('db', database);
    const headers: Record<string, string> = auth ? { authorization: `Basic ${Buffer.from(`${this.user}:${this.password}`).toString('base64')}` } : {};
    const res = await this.http('POST', url.toString(), headers);
    const body = JSON.parse(res.body) as InfluxResult;
    if (res.status !== 200 || body.results?.[0]?.error) throw new Error(`InfluxDB query failed (${res.status}): ${JSON.stringify(body)}`);
    return body;
  }

  /** Rows of `SELECT * FROM measurement WHERE ...` as objects keyed by column. */
  async rows(database: string, q: string): Promise<Record<string, unknown>[]> {
    const body = await this.query(q, database);
    const series = body.results?.[0]?.series ?? [];
    return series.flatMap((s) => s.values.map((v) => Object.fromEntries(s.columns.map((c, i) => [c, v[i]]))));
  }

  /**
   * Points InfluxDB has accepted since it started (its own counter, `/debug/vars`): a write it
   * acknowledged is durable and readable. Reading this costs nothing, where counting the points
   * with a query scans them.
   */
  async pointsWritten(): Promise<number> {
    return (await this.activity()).pointsWritten;
  }

  /**
   * What the storage engine has done since InfluxDB started, from its own counters (`/debug/vars`):
   * accepted points, cache snapshots written to TSM files, TSM compactions (every level, optimise
   * and full) and the time they took, and the Go runtime's garbage-collection pauses. Differences
   * between two readings tell what happened in between (the sustained benchmark's windows).
   */
  async activity(): Promise<InfluxActivity> {
    return activityOf(JSON.parse((await this.http('GET', `${this.url}/debug/vars`)).body));
  }

  /**
   * The shards of `database` (`SHOW SHARDS`): each holds the points of one shard group's span of
   * time, with its own cache, WAL and TSM files (a shard group lasts 7 days under the default
   * retention policy). How many a load wrote into says how many caches it kept filling.
   */
  async shards(database: string): Promise<InfluxShard[]> {
    return shardsOf(await this.query('SHOW SHARDS'), database);
  }

  /** An HTTP request to the server, from inside its namespace when it has one. */
  protected async http(method: 'GET' | 'POST', url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
    if (!this.netns) {
      const res = await fetch(url, { method, headers });
      return { status: res.status, body: await res.text() };
    }
    const args = ['netns', 'exec', this.netns, 'curl', '-sS', '-X', method, '-w', '\n%{http_code}', ...Object.entries(headers).flatMap(([k, v]) => ['-H', `${k}: ${v}`]), url];
    const out = await new Promise<string>((resolve, reject) => execFile('ip', args, { maxBuffer: 64 << 20 }, (err, stdout) => (err ? reject(err) : resolve(String(stdout)))));
    const cut = out.lastIndexOf('\n');
    return { status: Number(out.slice(cut + 1)), body: out.slice(0, cut) };
  }
}

/** A real InfluxDB 1.x (Debian's influxd) with authentication on, in a folder of its own. */
export class InfluxV1 extends InfluxV1Api {
  readonly process: ManagedProcess;
  /** where influxd writes its log (and its HTTP access log, when started with `accessLog`) */
  readonly logFile: string;

  /**
   * `netns`: run it inside that network namespace (on the namespace's loopback); its HTTP API is
   * then called from inside the namespace too (curl under `ip netns exec`), since Node cannot enter one.
   */
  private constructor(dir: string, port: number, rpcPort: number, netns?: string, accessLog = false, maxBodySize?: number, maxValuesPerTag?: number) {
    super(`http://127.0.0.1:${port}`, netns);
    const conf = join(dir, 'influxdb.conf');
    writeFileSync(
      conf,
      `reporting-disabled = true
bind-address = "127.0.0.1:${rpcPort}"
[meta]
  dir = "${join(dir, 'meta')}"
[data]
  dir = "${join(dir, 'data')}"
  wal-dir = "${join(dir, 'wal')}"
  query-log-enabled = false
${maxValuesPerTag === undefined ? '' : `  max-values-per-tag = ${maxValuesPerTag}\n`}[http]
  bind-address = "127.0.0.1:${port}"
  auth-enabled = true
  log-enabled = ${accessLog}
${maxBodySize === undefined ? '' : `  max-body-size = ${maxBodySize}\n`}`,
    );
    this.logFile = join(dir, 'influxd.log');
    this.process = new ManagedProcess({
      name: 'influxd',
      command: 'influxd',
      args: ['-config', conf],
      env: { PATH: process.env.PATH, HOME: dir },
      cwd: dir,
      logFile: this.logFile,
      ready: { port },
      ...(netns ? { netns } : {}),
    });
  }

  /**
   * In a namespace, give fixed ports (freePort() answers for ours, not the namespace's).
   * `accessLog`: a line per HTTP request in its log, with the time the server took
   * (bench/lib/influx-access-log.ts reads it). `maxBodySize`: bytes of a write request's body it
   * takes (`max-body-size`; InfluxDB 1.6 measures a body as sent, so only one sent without gzip).
   * `maxValuesPerTag`: the values a tag key may have (`max-values-per-tag`, 100,000 by default),
   * lowered for a test to reach it with a few hundred points.
   */
  static async start(dir: string, database: string, o: { netns?: string; port?: number; rpcPort?: number; accessLog?: boolean; maxBodySize?: number; maxValuesPerTag?: number } = {}): Promise<InfluxV1> {
    mkdirSync(dir, { recursive: true });
    const db = new InfluxV1(dir, o.port ?? (await freePort()), o.rpcPort ?? (await freePort()), o.netns, o.accessLog, o.maxBodySize, o.maxValuesPerTag);
    await db.process.start();
    await db.waitPing();
    // With no user yet, InfluxDB lets the first admin be created without credentials.
    await db.query(`CREATE USER "${db.user}" WITH PASSWORD '${db.password}' WITH ALL PRIVILEGES`, undefined, false);
    await db.query(`CREATE DATABASE "${database}"`);
    return db;
  }

  private async waitPing(): Promise<void> {
    for (let i = 0; i < 100; i++) {
      const ok = await this.http('GET', `${this.url}/ping`).then((r) => r.status === 204, () => false);
      if (ok) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error('influxd does not answer /ping');
  }

  async restart(): Promise<void> {
    await this.process.start();
    await this.waitPing();
  }
}

interface InfluxResult {
  results?: Array<{ error?: string; series?: Array<{ name: string; tags?: Record<string, string>; columns: string[]; values: unknown[][] }> }>;
}

/**
 * A real PostgreSQL (Debian's postgresql 15) in a folder of its own. It refuses to run as root, so
 * the folder belongs to the `postgres` user and the server runs as that user (setpriv execs it in
 * place: the pid we hold is the postmaster's). Connections over the Unix socket in the folder are
 * trusted (the tests' administration, as `superuser`); over TCP they need a password (SCRAM), as a
 * deployed distributor's would.
 */
export class Postgres {
  static readonly BIN = '/usr/lib/postgresql/15/bin';
  readonly process: ManagedProcess;
  readonly host = '127.0.0.1';
  readonly superuser = 'fs';

  private constructor(
    readonly dir: string,
    readonly port: number,
    tls: boolean,
  ) {
    const ssl = tls ? ['-c', 'ssl=on', '-c', `ssl_cert_file=${join(dir, 'server.crt')}`, '-c', `ssl_key_file=${join(dir, 'server.key')}`] : [];
    this.process = new ManagedProcess({
      name: 'postgres',
      command: 'setpriv',
      args: ['--reuid=postgres', '--regid=postgres', '--init-groups', '--', join(Postgres.BIN, 'postgres'), '-D', join(dir, 'data'), '-p', String(port), '-k', dir, '-c', `listen_addresses=127.0.0.1`, ...ssl],
      env: { PATH: process.env.PATH, LC_ALL: 'C' },
      cwd: dir,
      logFile: join(dir, 'postgres.log'),
      ready: { port },
    });
  }

  /** `tls`: a server certificate and key (PEM): TLS is then offered beside plain connections. */
  static async start(dir: string, o: { port?: number; tls?: { certPem: string; keyPem: string } } = {}): Promise<Postgres> {
    mkdirSync(dir, { recursive: true });
    // The server's user must reach its folder: the folders above it (a test's mkdtemp folder is
    // 0700) get the traverse bit for others, never read.
    for (let up = dirname(dir); up !== dirname(up); up = dirname(up)) {
      const mode = statSync(up).mode;
      if ((mode & 0o001) === 0) chmodSync(up, (mode & 0o7777) | 0o001);
    }
    await run('chown', ['postgres:postgres', dir]);
    await run('chmod', ['0700', dir]);
    await run('setpriv', [
      '--reuid=postgres',
      '--regid=postgres',
      '--init-groups',
      '--',
      join(Postgres.BIN, 'initdb'),
      '-D',
      join(dir, 'data'),
      '-U',
      'fs',
      '-E',
      'UTF8',
      '--locale=C',
      '--auth-local=trust',
      '--auth-host=scram-sha-256',
      '--no-sync',
    ]);
    if (o.tls) {
      // PostgreSQL refuses a key that others may read (mode 0600, owned by the server's user).
      writeFileSync(join(dir, 'server.crt'), o.tls.certPem);
      writeFileSync(join(dir, 'server.key'), o.tls.keyPem, { mode: 0o600 });
      await run('chown', ['postgres:postgres', join(dir, 'server.crt'), join(dir, 'server.key')]);
    }
    const db = new Postgres(dir, o.port ?? (await freePort()), o.tls !== undefined);
    await db.process.start();
    await db.waitReady();
    return db;
  }

  /** psql as the superuser over the socket: the output of one command, unaligned, tuples only. */
  async psql(sql: string, database = 'postgres'): Promise<string> {
    return run(join(Postgres.BIN, 'psql'), ['-h', this.dir, '-p', String(this.port), '-U', this.superuser, '-d', database, '-X', '-v', 'ON_ERROR_STOP=1', '-A', '-t', '-c', sql]);
  }

  /** A role that logs in with a password, owning a new database of the same name. */
  async createUser(name: string, password: string): Promise<void> {
    await this.psql(`CREATE ROLE ${name} LOGIN PASSWORD '${password.replace(/'/g, "''")}'`);
    await this.psql(`CREATE DATABASE ${name} OWNER ${name}`);
  }

  private async waitReady(): Promise<void> {
    for (let i = 0; i < 100; i++) {
      const ok = await this.psql('SELECT 1').then(
        () => true,
        () => false,
      );
      if (ok) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error('postgres does not answer');
  }

  /**
   * A fast shutdown (SIGINT: clients are disconnected at once, PostgreSQL docs §19.5); SIGTERM's
   * smart shutdown would wait for the distributor's pooled connections for ever.
   */
  async stop(): Promise<void> {
    if (this.process.running) await this.process.signal('SIGINT');
    await this.process.stop();
  }

  async restart(): Promise<void> {
    await this.process.start();
    await this.waitReady();
  }
}

/**
 * A real PgBouncer (Debian's) in front of a Postgres started above, in transaction mode and
 * otherwise its defaults (no `ignore_startup_parameters`), as a site pools its connections: each
 * transaction gets whichever server connection is free. Run as the `postgres` user (PgBouncer
 * refuses root), its files in the server's folder; `user` logs in with `password` (auth_type plain).
 */
export class PgBouncer {
  readonly process: ManagedProcess;
  readonly host = '127.0.0.1';

  private constructor(
    readonly port: number,
    conf: string,
    logFile: string,
  ) {
    this.process = new ManagedProcess({
      name: 'pgbouncer',
      command: 'setpriv',
      args: ['--reuid=postgres', '--regid=postgres', '--init-groups', '--', 'pgbouncer', conf],
      env: { PATH: process.env.PATH },
      cwd: dirname(conf),
      logFile,
      ready: { port },
    });
  }

  static async start(db: Postgres, database: string, user: string, password: string, poolMode: 'session' | 'transaction' | 'statement' = 'transaction'): Promise<PgBouncer> {
    const port = await freePort();
    const conf = join(db.dir, 'pgbouncer.ini');
    const users = join(db.dir, 'pgbouncer-users.txt');
    writeFileSync(users, `"${user}" "${password}"\n`, { mode: 0o600 });
    writeFileSync(
      conf,
      `[databases]
${database} = host=${db.host} port=${db.port} dbname=${database}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = ${port}
unix_socket_dir =
auth_type = plain
auth_file = ${users}
pool_mode = ${poolMode}
default_pool_size = 4
`,
    );
    await run('chown', ['postgres:postgres', conf, users]);
    const bouncer = new PgBouncer(port, conf, join(db.dir, 'pgbouncer.log'));
    await bouncer.process.start();
    return bouncer;
  }

  stop(): Promise<void> {
    return this.process.stop();
  }
}

function run(command: string, args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(command, args, { maxBuffer: 64 << 20 }, (err, stdout, stderr) => (err ? reject(new Error(`${command} failed: ${String(stderr).trim() || err.message}`)) : resolve(String(stdout)))),
  );
}
