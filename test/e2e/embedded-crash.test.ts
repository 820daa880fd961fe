import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { cpSync, createWriteStream, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync, type WriteStream } from 'node:fs';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { after, describe, it } from 'node:test';
import { readLocalStore } from '../../internal-network/distributor/sinks/local-store.ts';
import { InfluxV1 } from '../../scripts/local-stack/databases.ts';
import { freePort } from '../../scripts/local-stack/ports.ts';
import { chattr, chattrReason } from '../helpers/chattr.ts';
import { fullDiskSkip, moduleUrl, runOnSmallDisk } from '../helpers/full-disk.ts';
import { tempDir } from '../helpers/pki.ts';
import { REPO_ROOT, influxSettings } from '../helpers/stack.ts';
import { eventually } from '../helpers/ws-device.ts';

const DEVICE = 'crash-sim-001';
const BATCH = 200;
const BATCHES = 30;
/** batches posted while InfluxDB is frozen */
const STALLED = 6;
const BASE = Date.parse('2026-03-01T00:00:00Z');
const batchOf = (b: number) => Array.from({ length: BATCH }, (_, k) => ({ v: b * BATCH + k, timestamp: BASE + (b * BATCH + k) * 1000 }));

interface Status {
  queue: { depth: number };
  commit: { receipts: boolean; awaitingReceipt: number };
}

/**
 * The embedded pipeline as `npm start` runs it: scripts/start-embedded.ts in its own process, the
 * simulated device's local HTTP input on, its certificates and every data folder in `dir` (and its
 * working directory there too, so no default path can reach the repository). Started again with
 * the same settings, it finds the same folders.
 */
class EmbeddedProcess {
  private child: ChildProcess | undefined;
  private readonly log: WriteStream;
  /** what it wrote to stderr, over every start */
  stderr = '';
  /** what it wrote to stdout (its log lines, its banner), over every start */
  stdout = '';
  private constructor(
    private readonly dir: string,
    private readonly env: Record<string, string | undefined>,
    readonly httpPort: number,
  ) {
    this.log = createWriteStream(join(dir, 'pipeline.log'));
  }

  static async create(dir: string, extraEnv: Record<string, string> = {}): Promise<EmbeddedProcess> {
    mkdirSync(dir, { recursive: true });
    const at = (name: string) => join(dir, name);
    const httpPort = await freePort();
    return new EmbeddedProcess(
      dir,
      {
        PATH: process.env.PATH,
        HOME: dir,
        FIELDSTREAM_ENV_FILE: '/dev/null',
        LOG_LEVEL: 'info',
        CERTS_DIR: at('certs'),
        GATEWAY_PORT: String(await freePort()),
        EMBEDDED_MQTT_PORT: String(await freePort()),
        COMMAND_API_PORT: String(await freePort()),
        // Every port picked now, the console's and the metrics' too: their defaults collided with
        // any npm start (or other test) running on the machine meanwhile (LISTEN_FAILED).
        CONSOLE_PORT: String(await freePort()),
        GATEWAY_METRICS_PORT: String(await freePort()),
        DISTRIBUTOR_METRICS_PORT: String(await freePort()),
        COMMAND_API_METRICS_PORT: String(await freePort()),
        CONSOLE_METRICS_PORT: String(await freePort()),
        FIELD_METRICS_PORT: String(await freePort()),
        COMMAND_API_TOKEN: 'embedded-crash-test-token-0123456789',
        DEVICE_ID: DEVICE,
        FIELD_SIMULATE: 'false',
        FIELD_HTTP_PORT: String(httpPort),
        FIELD_MQTT_PORT: 'off',
        FIELD_DATA_DIR: at('field'),
        FIELD_WATCH_DIR: at('outbox'),
        TIMESERIES_LOCAL_PATH: at('timeseries'),
        FILE_STORAGE_PATH: at('files'),
        DEAD_LETTER_PATH: at('dead-letter'),
        COMMAND_STATE_PATH: at('commands.jsonl'),
        DISTRIBUTOR_STATE_DIR: at('distributor-state'),
        ...extraEnv,
      },
      httpPort,
    );
  }

  /**
   * Starts it; resolves once it printed that it runs. `viaNpm`: as a user does, `npm start` (the
   * repository's own script, run in the repository), in a process group of its own.
   */
  async start(o: { viaNpm?: boolean } = {}): Promise<number> {
    const t0 = Date.now();
    const p = o.viaNpm
      ? spawn('npm', ['--prefix', REPO_ROOT, '--silent', 'start'], { cwd: REPO_ROOT, env: this.env, stdio: ['ignore', 'pipe', 'pipe'], detached: true })
      : spawn(process.execPath, ['--import', import.meta.resolve('tsx'), join(REPO_ROOT, 'scripts', 'start-embedded.ts')], { cwd: this.dir, env: this.env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = p;
    let out = '';
    let exited: string | undefined;
    p.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      this.stdout += d.toString();
      this.log.write(d);
    });
    p.stderr?.on('data', (d: Buffer) => {
      this.stderr += d.toString();
      this.log.write(d);
    });
    p.once('exit', (code, signal) => (exited = `exited ${code ?? signal}`));
    await eventually(() => {
      if (exited) throw new Error(`the pipeline ${exited} before it was ready; see ${join(this.dir, 'pipeline.log')}`);
      return out.includes('FieldStream is running') ? true : undefined;
    }, 45_000, 'the embedded pipeline ready');
    return Date.now() - t0;
  }

  /** the process it spawned: node, or npm with `viaNpm` (then also its process group's id) */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** SIGKILL: the broker's memory, the distributor's pending writes and the device's timers go with it. */
  kill(): void {
    this.child?.kill('SIGKILL');
  }

  async exited(): Promise<NodeJS.Signals | number | null> {
    const c = this.child;
    if (!c) return null;
    if (c.exitCode === null && c.signalCode === null) await new Promise((resolve) => c.once('exit', resolve));
    return c.signalCode ?? c.exitCode;
  }

  async stop(): Promise<void> {
    this.child?.kill('SIGTERM');
    await this.exited();
    this.child = undefined;
    await new Promise<void>((resolve) => this.log.end(resolve));
  }

  async status(): Promise<Status> {
    return (await (await fetch(`http://127.0.0.1:${this.httpPort}/status`)).json()) as Status;
  }

  /** Readings into the device's HTTP input; resolves true on 202 (on the device's disk), throws otherwise. */
  async post(b: number): Promise<void> {
    const res = await fetch(`http://127.0.0.1:${this.httpPort}/v1/timeseries`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(batchOf(b)) });
    assert.equal(res.status, 202, await res.text());
  }
}

/**
 * Checks a store against what the device accepted: every accepted reading once, with its value
 * and timestamp; a batch whose request died with the process all there or not at all; nothing else.
 */
function assertEachOnce(stored: { v: number; time: number }[], accepted: Set<number>, uncertain: Set<number>): void {
  const count = new Map<number, number>();
  for (const r of stored) {
    assert.equal(r.time, BASE + r.v * 1000, `reading ${r.v} keeps its timestamp`);
    count.set(r.v, (count.get(r.v) ?? 0) + 1);
  }
  for (const b of accepted) for (const { v } of batchOf(b)) assert.equal(count.get(v), 1, `reading ${v}, accepted by the device, stored exactly once`);
  for (const b of uncertain) {
    const present = batchOf(b).filter((r) => count.has(r.v)).length;
    assert.ok(present === 0 || present === BATCH, `batch ${b}, whose request died with the process: all or nothing (${present})`);
  }
  const extra = [...count.keys()].filter((v) => !accepted.has(Math.floor(v / BATCH)) && !uncertain.has(Math.floor(v / BATCH)));
  assert.deepEqual(extra, [], 'nothing stored that the device was not given');
}

/**
 * `npm start` across a crash of its process. Readings go in through the simulated device's local
 * HTTP input; mid-stream the whole process is SIGKILLed — the embedded broker's memory and the
 * distributor's pending writes with it — and started again on the same folders. The device kept
 * every reading it accepted until its commit receipt, so what it held goes out again, and the
 * store ends with every accepted reading exactly once.
 */
describe('npm start (embedded) loses no accepted reading when its process is killed', () => {
  const work = tempDir('embedded-crash');
  const running: EmbeddedProcess[] = [];
  after(async () => {
    for (const p of running) p.kill();
    work.cleanup();
  });

  it('the local store: killed right after the device accepted a batch, two producers posting', async (t: TestContext) => {
    const dir = join(work.dir, 'local');
    const pipeline = await EmbeddedProcess.create(dir);
    running.push(pipeline);
    const firstStartMs = await pipeline.start();
    assert.equal((await pipeline.status()).commit.receipts, true, 'the simulated device keeps readings until their receipt');
    const readings = () =>
      readLocalStore(join(dir, 'timeseries'))
        .filter((p) => p.measurement === 'readings' && p.tags.device === DEVICE)
        .map((p) => ({ v: p.fields.v as number, time: p.time }));

    // Two producers post at once; as soon as 12 batches are accepted, SIGKILL.
    const accepted = new Set<number>();
    const uncertain = new Set<number>();
    let next = 0;
    let killed = false;
    const post = async (b: number) => {
      try {
        await pipeline.post(b);
        accepted.add(b);
        if (!killed && accepted.size >= 12) {
          killed = true;
          pipeline.kill();
        }
      } catch (err) {
        if (!killed) throw err;
        uncertain.add(b);
      }
    };
    const producer = async () => {
      while (!killed && next < BATCHES) await post(next++);
    };
    await Promise.all([producer(), producer()]);
    assert.equal(await pipeline.exited(), 'SIGKILL');
    const acceptedAtKill = accepted.size * BATCH;
    const storedAtKill = readings().length;

    const restartMs = await pipeline.start();
    const heldAfterRestart = (await pipeline.status()).queue.depth;
    assert.ok(heldAfterRestart > 0, 'the device still held readings after the crash');
    while (next < BATCHES) await post(next++);
    await eventually(async () => ((await pipeline.status()).queue.depth === 0 ? true : undefined), 30_000, 'the device’s queue drained');
    const expected = accepted.size * BATCH;
    const rows = await eventually(() => {
      const r = readings();
      return r.length >= expected ? r : undefined;
    }, 10_000, 'every accepted reading stored');
    assertEachOnce(rows, accepted, uncertain);
    // Before the reader's de-duplication by time: copies the distributor wrote twice (a documented
    // property of the local store, which InfluxDB and `npm run readings` resolve the same way).
    const rawLines = readdirSync(join(dir, 'timeseries'))
      .filter((f) => f.endsWith('.jsonl'))
      .flatMap((f) => readFileSync(join(dir, 'timeseries', f), 'utf8').split('\n'))
      .filter((l) => l.includes('"measurement":"readings"') && l.includes(`"device":"${DEVICE}"`)).length;
    t.diagnostic(
      `first start ${firstStartMs} ms, restart ${restartMs} ms; killed with ${acceptedAtKill} readings accepted (${uncertain.size} batch(es) in flight), ${storedAtKill} stored; ` +
        `the device held ${heldAfterRestart} after the restart; ${expected} accepted in all, ${rows.length} stored, ${rawLines} raw lines`,
    );
    await pipeline.stop();
  });

  it('a power cut that takes back readings the device had sent: what it numbers next is not taken for their copies', async (t: TestContext) => {
    const dir = join(work.dir, 'power');
    const pipeline = await EmbeddedProcess.create(dir);
    running.push(pipeline);
    await pipeline.start();
    const queueDir = join(dir, 'field', 'queue');
    const stored = () =>
      readLocalStore(join(dir, 'timeseries'))
        .filter((p) => p.measurement === 'readings' && p.tags.device === DEVICE)
        .map((p) => ({ v: p.fields.v as number, time: p.time }));
    const drained = (what: string) => eventually(async () => ((await pipeline.status()).queue.depth === 0 ? true : undefined), 30_000, what);
    await pipeline.post(0);
    await drained('batch 0 committed');
    // The device's disk as a power cut would leave it: taken while the client runs (an open queue
    // holds no clean-stop mark), once it is idle and ack.json holds batch 0's commit.
    const watermark = () => (existsSync(join(queueDir, 'ack.json')) ? (JSON.parse(readFileSync(join(queueDir, 'ack.json'), 'utf8')) as { watermark: number }).watermark : 0);
    await eventually(() => (watermark() >= BATCH ? true : undefined), 5_000, `ack.json written (${watermark()})`);
    const disk = join(dir, 'queue-at-the-cut');
    cpSync(queueDir, disk, { recursive: true });
    // Batch 1 goes out and is stored; then the power goes, and the disk never had it (a record is
    // sent once written, before its fsync; here it had been synced, so the disk is rolled back).
    await pipeline.post(1);
    await drained('batch 1 committed');
    assert.equal(stored().length, 2 * BATCH);
    pipeline.kill();
    assert.equal(await pipeline.exited(), 'SIGKILL');
    rmSync(queueDir, { recursive: true });
    renameSync(disk, queueDir);
    // and the machine starts again: the queue was last opened in another boot
    const meta = JSON.parse(readFileSync(join(queueDir, 'meta.json'), 'utf8')) as Record<string, unknown>;
    writeFileSync(join(queueDir, 'meta.json'), JSON.stringify({ ...meta, boot: 'a-boot-before-the-cut' }));

    await pipeline.start();
    // The same sequence numbers as batch 1's: under the old epoch the distributor would take these
    // readings for copies, send their receipt, and the device would delete them unstored.
    await pipeline.post(2);
    await drained('batch 2 committed');
    const rows = await eventually(() => {
      const r = stored();
      return r.length >= 3 * BATCH ? r : undefined;
    }, 10_000, 'batch 2 stored');
    assertEachOnce(rows, new Set([0, 1, 2]), new Set());
    const log = readFileSync(join(dir, 'pipeline.log'), 'utf8');
    assert.match(log, /FIELD_QUEUE_NEW_EPOCH/);
    t.diagnostic(`${rows.length} readings stored, each once; the device numbered batch 2 under a new epoch`);
    await pipeline.stop();
  });

  it('InfluxDB 1.x frozen: readings acked by the gateway and held in the broker’s memory are sent again', async (t: TestContext) => {
    const DB = 'sensor_data';
    const influx = await InfluxV1.start(join(work.dir, 'influxdb'), DB);
    try {
      const readings = async () =>
        (await influx.rows(DB, `SELECT v FROM readings WHERE device = '${DEVICE}'`)).map((r) => ({ v: r.v as number, time: r.time as number }));
      const count = async () => Number((await influx.rows(DB, `SELECT count(v) FROM readings WHERE device = '${DEVICE}'`))[0]?.count ?? 0);
      const dir = join(work.dir, 'influx');
      const pipeline = await EmbeddedProcess.create(dir, {
        ...influxSettings(influx, DB),
      });
      running.push(pipeline);
      await pipeline.start();
      const accepted = new Set<number>();
      let next = 0;
      for (; next < 6; next++) {
        await pipeline.post(next);
        accepted.add(next);
      }
      await eventually(async () => ((await count()) === 6 * BATCH ? true : undefined), 20_000, 'the first readings written');

      // The database freezes (SIGSTOP): it holds its sockets but answers nothing. What follows
      // reaches the in-memory broker, is acked by the gateway, and waits there or in the
      // distributor for a write that does not complete (its deadline, INFLUXDB_TIMEOUT_MS, is
      // 10 s: the process is killed well before).
      await influx.process.pause();
      const frozenAt = Date.now();
      for (; next < 6 + STALLED; next++) {
        await pipeline.post(next);
        accepted.add(next);
      }
      const s = await eventually(async () => {
        const st = await pipeline.status();
        return st.commit.awaitingReceipt >= STALLED * BATCH ? st : undefined;
      }, 20_000, 'the readings posted while the database is frozen acked by the gateway');
      // Longer than the device takes to persist what it let go of: nothing acked is let go.
      await new Promise((r) => setTimeout(r, 1000));
      assert.ok((await pipeline.status()).queue.depth >= STALLED * BATCH, 'the device still holds what the gateway acked');
      pipeline.kill();
      assert.equal(await pipeline.exited(), 'SIGKILL');
      const killedAfterMs = Date.now() - frozenAt;
      await influx.process.resume();
      // Woken, InfluxDB reads what reached its sockets while frozen: a write the distributor had
      // sent may still apply, though its writer is gone. What waited in the broker's memory cannot.
      let afterCrash = -1;
      await eventually(async () => {
        const n = await count();
        if (n === afterCrash) return true;
        afterCrash = n;
        await new Promise((r) => setTimeout(r, 500));
        return undefined;
      }, 10_000, 'the database settled after it woke');
      assert.ok(afterCrash < accepted.size * BATCH, `the crash lost readings acked by the gateway (${afterCrash} of ${accepted.size * BATCH} in the database)`);

      await pipeline.start();
      const heldAfterRestart = (await pipeline.status()).queue.depth;
      assert.ok(heldAfterRestart >= STALLED * BATCH, `the device held what the crash lost (${heldAfterRestart})`);
      for (; next < 12 + STALLED; next++) {
        await pipeline.post(next);
        accepted.add(next);
      }
      await eventually(async () => ((await pipeline.status()).queue.depth === 0 ? true : undefined), 30_000, 'the device’s queue drained');
      const expected = accepted.size * BATCH;
      // Waits for every accepted reading; a reading missing then is named by the checks below.
      await eventually(async () => ((await count()) >= expected ? true : undefined), 10_000, 'every accepted reading written').catch(() => undefined);
      const rows = await readings();
      assert.equal(await count(), expected, 'InfluxDB holds as many readings as the device accepted');
      assert.equal(rows.length, expected);
      assertEachOnce(rows, accepted, new Set());
      t.diagnostic(
        `killed ${killedAfterMs} ms into the freeze with ${s.commit.awaitingReceipt} awaiting their receipt; ${afterCrash} in the database once it woke; ` +
          `held after the restart ${heldAfterRestart}; ${expected} accepted, ${rows.length} in the database, ${await influx.pointsWritten()} points accepted by InfluxDB in all (resent copies and other measurements included)`,
      );
      await pipeline.stop();
    } finally {
      await influx.process.stop();
    }
  });
});

/**
 * A port another program holds stops `npm start` at once, and its message names the setting that
 * chooses that port: the address alone does not tell the user which variable to change.
 */
describe('npm start (embedded) on a port another program holds', () => {
  const work = tempDir('embedded-busy-port');
  after(() => work.cleanup());

  it('stops with LISTEN_FAILED naming the setting of the port', async () => {
    const holder = createServer();
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
    const busy = String((holder.address() as { port: number }).port);
    try {
      // One folder for every start: its development certificates are made once.
      const dir = join(work.dir, 'pipeline');
      const free = async () => String(await freePort());
      const ports = { CONSOLE_PORT: await free(), GATEWAY_METRICS_PORT: await free(), DISTRIBUTOR_METRICS_PORT: await free(), COMMAND_API_METRICS_PORT: await free(), CONSOLE_METRICS_PORT: await free() };
      for (const setting of ['EMBEDDED_MQTT_PORT', 'GATEWAY_PORT', 'COMMAND_API_PORT', 'CONSOLE_PORT', 'GATEWAY_METRICS_PORT', 'DISTRIBUTOR_METRICS_PORT', 'COMMAND_API_METRICS_PORT', 'CONSOLE_METRICS_PORT']) {
        const pipeline = await EmbeddedProcess.create(dir, { ...ports, [setting]: busy });
        await assert.rejects(pipeline.start(), /exited 1 before it was ready/, setting);
        await pipeline.stop();
        const line = pipeline.stderr.split('\n').find((l) => l.includes('LISTEN_FAILED'));
        assert.ok(line, `${setting}: no LISTEN_FAILED in ${pipeline.stderr}`);
        assert.match(line, new RegExp(`127\\.0\\.0\\.1:${busy}\\b.*\\b${setting}\\b|\\b${setting}\\b.*127\\.0\\.0\\.1:${busy}\\b`), setting);
      }
    } finally {
      holder.close();
    }
  });
});

/**
 * A second `npm start` on the same folders, with ports of its own: its distributor took the first's
 * state folder over (the first's stopped) and its device appended to the first device's queue.
 */
describe('npm start (embedded) twice on the same folders', () => {
  const work = tempDir('embedded-twice');
  after(() => work.cleanup());

  it('the second stops at once with FIELD_DATA_DIR_IN_USE, naming the first; the first runs on', async () => {
    const dir = join(work.dir, 'pipeline');
    const off = { CONSOLE_PORT: 'off', GATEWAY_METRICS_PORT: 'off', DISTRIBUTOR_METRICS_PORT: 'off', COMMAND_API_METRICS_PORT: 'off', FIELD_METRICS_PORT: 'off' };
    const first = await EmbeddedProcess.create(dir, off);
    await first.start();
    try {
      const second = await EmbeddedProcess.create(dir, off); // the same folders, other ports
      await assert.rejects(second.start(), /exited 1 before it was ready/);
      await second.stop();
      assert.match(second.stderr, new RegExp(`FIELD_DATA_DIR_IN_USE.*process ${first.pid}`), second.stderr);
      assert.doesNotMatch(second.stderr, /\n +at /, 'one line, no stack trace');
      // The first's device, distributor and all go on: a reading still reaches its store.
      await first.post(1);
      await eventually(async () => ((await first.status()).queue.depth === 0 ? true : undefined), 20_000, "the first's reading stored");
      assert.doesNotMatch(first.stdout, /DISTRIBUTOR_STATE_LEASE/, "the first's distributor kept its state folder");
    } finally {
      await first.stop();
    }
  });
});

/**
 * A process manager, a container's init or `kill` stops `npm start` with SIGTERM to npm itself.
 * npm passes the signal to the shell that runs the script; that shell died of it and left the
 * pipeline running on, orphaned, every port still held.
 */
describe('npm start (embedded) stopped with SIGTERM to npm', () => {
  const work = tempDir('embedded-npm-sigterm');
  after(() => work.cleanup());

  it('stops the pipeline cleanly and leaves no process behind', async () => {
    const pipeline = await EmbeddedProcess.create(join(work.dir, 'pipeline'), {
      CONSOLE_PORT: 'off',
      GATEWAY_METRICS_PORT: 'off',
      DISTRIBUTOR_METRICS_PORT: 'off',
      COMMAND_API_METRICS_PORT: 'off',
      FIELD_METRICS_PORT: 'off',
      FIELD_SIMULATE: 'false',
      EMBEDDED_HOST: '127.0.0.1',
      npm_config_update_notifier: 'false',
      npm_config_cache: join(work.dir, 'npm-cache'),
    });
    await pipeline.start({ viaNpm: true });
    const group = pipeline.pid;
    assert.ok(group !== undefined);
    const alive = () => {
      try {
        process.kill(-group, 0);
        return true;
      } catch {
        return false;
      }
    };
    try {
      process.kill(group, 'SIGTERM');
      await pipeline.exited();
      await eventually(() => (alive() ? undefined : true), 20_000, 'every process of npm start gone').catch(() => assert.fail(`processes of npm start still run after npm exited; stderr: ${pipeline.stderr}`));
      assert.match(pipeline.stderr, /fieldstream: SIGTERM, stopping/);
      assert.doesNotMatch(pipeline.stderr, /error/i);
    } finally {
      if (alive()) process.kill(-group, 'SIGKILL');
    }
  });
});

/**
 * Ctrl-C in the terminal signals the whole foreground process group: npm and the pipeline (and tsx,
 * when npm start ran under its command line) each get one SIGINT, and npm and tsx pass theirs on as well. One key press reached the pipeline
 * two or three times within milliseconds, and it took the copies for a second Ctrl-C: the stop was
 * forced (SERVICE_STOP_FORCED, exit 130) every time, never clean.
 */
describe('npm start (embedded) stopped with one Ctrl-C', () => {
  const work = tempDir('embedded-npm-ctrl-c');
  after(() => work.cleanup());

  it('stops cleanly, not forced, with status 0', async () => {
    const pipeline = await EmbeddedProcess.create(join(work.dir, 'pipeline'), {
      CONSOLE_PORT: 'off',
      GATEWAY_METRICS_PORT: 'off',
      DISTRIBUTOR_METRICS_PORT: 'off',
      COMMAND_API_METRICS_PORT: 'off',
      FIELD_METRICS_PORT: 'off',
      // A reading every second: the stop has something in flight to finish, as in a first `npm start`.
      FIELD_SIMULATE: 'true',
      npm_config_update_notifier: 'false',
      npm_config_cache: join(work.dir, 'npm-cache'),
    });
    await pipeline.start({ viaNpm: true });
    const group = pipeline.pid;
    assert.ok(group !== undefined);
    try {
      // Connected and sending: the stop has a device, a gateway and a broker to close.
      await eventually(async () => ((await pipeline.status().catch(() => undefined))?.queue !== undefined ? true : undefined), 10_000, 'the device answers');
      // The banner's other device takes local ports beside the simulated device's that are free now:
      // 8082 fixed was the simulated device's own when FIELD_HTTP_PORT was 8082.
      const other = /FIELD_HTTP_PORT=(\d+) FIELD_MQTT_PORT=(\d+) npm run field-client/.exec(pipeline.stdout);
      assert.ok(other, pipeline.stdout);
      assert.ok(Number(other[1]) > pipeline.httpPort, `${other[1]} beside ${pipeline.httpPort}`);
      assert.notEqual(Number(other[1]), pipeline.httpPort);
      await new Promise((r) => setTimeout(r, 1000));
      // What the terminal does at Ctrl-C: SIGINT to every process of the foreground group.
      process.kill(-group, 'SIGINT');
      const status = await pipeline.exited();
      assert.ok(!pipeline.stdout.includes('SERVICE_STOP_FORCED'), `one Ctrl-C forced the stop (SERVICE_STOP_FORCED); stderr: ${pipeline.stderr}`);
      assert.match(pipeline.stderr, /fieldstream: SIGINT, stopping/);
      assert.equal(status, 0, `stderr: ${pipeline.stderr}`);
    } finally {
      try {
        process.kill(-group, 'SIGKILL');
      } catch {
        /* gone */
      }
      await pipeline.stop();
    }
  });
});

/**
 * A data folder the pipeline cannot write (a read-only disk, a permission, an immutable folder):
 * `npm start` ended with the system's error and a stack trace of the pipeline's insides, and no
 * code. It stops with SERVICE_START_FAILED, on one line naming the operation and the folder.
 */
describe('npm start (embedded) with a data folder it cannot write', () => {
  const work = tempDir('embedded-unwritable');
  const skip = chattrReason('i');
  after(() => work.cleanup());

  it('stops with SERVICE_START_FAILED naming the folder, on one line, no stack trace', { skip }, async () => {
    const dir = join(work.dir, 'pipeline');
    const locked = join(dir, 'locked');
    mkdirSync(locked, { recursive: true });
    const under = (name: string) => join(locked, name);
    const pipeline = await EmbeddedProcess.create(dir, {
      CONSOLE_PORT: 'off',
      GATEWAY_METRICS_PORT: 'off',
      DISTRIBUTOR_METRICS_PORT: 'off',
      COMMAND_API_METRICS_PORT: 'off',
      FIELD_METRICS_PORT: 'off',
      TIMESERIES_LOCAL_PATH: under('timeseries'),
      FILE_STORAGE_PATH: under('files'),
      DEAD_LETTER_PATH: under('dead-letter'),
      COMMAND_STATE_PATH: under('commands.jsonl'),
      DISTRIBUTOR_STATE_DIR: under('distributor-state'),
      FIELD_DATA_DIR: under('field'),
      FIELD_WATCH_DIR: under('outbox'),
    });
    // Nothing may be made in it, by root too.
    chattr(locked, '+i');
    try {
      await assert.rejects(pipeline.start(), /exited 1 before it was ready/);
      await pipeline.stop();
      const lines = pipeline.stderr.split('\n').filter((l) => l.trim() !== '');
      assert.equal(lines.length, 1, `one line, no stack trace:\n${pipeline.stderr}`);
      assert.match(lines[0] as string, /^fieldstream: error SERVICE_START_FAILED: /);
      assert.ok(lines[0]?.includes(locked), `names the folder: ${lines[0]}`);
      assert.match(lines[0] as string, /\bEPERM\b/, 'says what the system answered');
    } finally {
      chattr(locked, '-i');
    }
  });

  it('on a full disk: SERVICE_START_FAILED with ENOSPC, on one line, no stack trace', { skip: fullDiskSkip }, async () => {
    const dir = join(work.dir, 'full');
    const disk = join(dir, 'disk');
    mkdirSync(disk, { recursive: true });
    const free = async () => String(await freePort());
    // The pipeline, started as npm start starts it, on a disk filled first; its certificates elsewhere.
    const script = `import { fillDisk } from ${moduleUrl('test/helpers/full-disk.ts')};
      const { code } = fillDisk(process.env.MNT);
      if (code !== 'ENOSPC') throw new Error('the disk did not fill: ' + code);
      for (const [k, v] of Object.entries({ TIMESERIES_LOCAL_PATH: 'timeseries', FILE_STORAGE_PATH: 'files', DEAD_LETTER_PATH: 'dead-letter', COMMAND_STATE_PATH: 'commands.jsonl', DISTRIBUTOR_STATE_DIR: 'distributor-state', CONSOLE_STATE_DIR: 'console-state', FIELD_DATA_DIR: 'field', FIELD_WATCH_DIR: 'outbox' })) process.env[k] = process.env.MNT + '/' + v;
      await import(${moduleUrl('scripts/start-embedded.ts')});`;
    const r = runOnSmallDisk(disk, script, 256, {
      timeoutMs: 60_000,
      env: {
        FIELDSTREAM_ENV_FILE: '/dev/null',
        CERTS_DIR: join(dir, 'certs'),
        GATEWAY_PORT: await free(),
        EMBEDDED_MQTT_PORT: await free(),
        COMMAND_API_PORT: await free(),
        CONSOLE_PORT: 'off',
        GATEWAY_METRICS_PORT: 'off',
        DISTRIBUTOR_METRICS_PORT: 'off',
        COMMAND_API_METRICS_PORT: 'off',
        FIELD_METRICS_PORT: 'off',
        FIELD_HTTP_PORT: await free(),
        FIELD_MQTT_PORT: 'off',
      },
    });
    assert.equal(r.status, 1, `stdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
    const lines = r.stderr.split('\n').filter((l) => l.trim() !== '');
    assert.equal(lines.length, 1, `one line, no stack trace:\n${r.stderr}`);
    assert.match(lines[0] as string, /^fieldstream: error SERVICE_START_FAILED: ENOSPC\b/);
  });
});
