import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { fieldClientProcess } from '../helpers/field.ts';
import { startTestStack, influxSettings } from '../helpers/stack.ts';
import { TcpRelay } from '../helpers/tcp-relay.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { InfluxV1 } from '../../scripts/local-stack/databases.ts';
import type { ManagedProcess } from '../../scripts/local-stack/process.ts';
import type { ComponentName, LocalStack } from '../../scripts/local-stack/stack.ts';

const DB = 'sensor_data';
const DEVICE = 'field-commit';
/** readings streamed, values 0..N-1, each with its own timestamp */
const N = 50_000;
/** readings per call of the device's HTTP input */
const BATCH = 500;
/** ms between calls: N / BATCH calls spread over the faults (about 40 s) */
const CALL_INTERVAL_MS = 400;
/** ms: a receipt overdue this long is sent again (60 s by default) */
const COMMIT_TIMEOUT_MS = 5000;
/** ms allowed, once streaming is over, for every reading to be in InfluxDB and committed on the device */
const DRAIN_DEADLINE_MS = 180_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Sorted values as "a-b, c, ..." (the first 20 runs). */
const ranges = (values: number[]) => {
  const runs: string[] = [];
  for (let i = 0; i < values.length; ) {
    let j = i;
    while (j + 1 < values.length && values[j + 1] === (values[j] as number) + 1) j++;
    runs.push(i === j ? `${values[i]}` : `${values[i]}-${values[j]}`);
    i = j + 1;
  }
  return runs.length > 20 ? `${runs.slice(0, 20).join(', ')}, … (${runs.length} runs)` : runs.join(', ');
};
const base = Date.parse('2025-12-01T00:00:00Z');

interface FieldStatus {
  connection: { state: string };
  queue: { depth: number };
  commit: { receipts: boolean; awaitingReceipt: number; committed: number; receiptsInvalid: number; receiptsReplayed: number; resentForReceipt: number };
}

/**
 * The proof of commit receipts. A field client, run from its entry point as its
 * own process and fed through its local HTTP input as a sensor would, streams 50,000 readings into
 * the real three-tier stack (Caddy, gateway, DMZ Mosquitto, bridge, internal Mosquitto,
 * distributor requiring signatures, InfluxDB 1.x) while, one after another, every hop is killed
 * with SIGKILL and started again (the DMZ Mosquitto while the bridge is cut, so it dies holding a
 * backlog it acknowledged), and InfluxDB is frozen for 10 s. A reading counts as accepted when the
 * device's HTTP input answered 2xx; afterwards InfluxDB holds every one exactly once and the device
 * holds nothing more: each reading left it only on a receipt verified under its key.
 */
describe('commit receipts, end to end: every hop crashes and no accepted reading is lost', () => {
  const work = tempDir('e2e-commit');
  const pki = makeTestPki([DEVICE]);
  const supervisorLogs = new LogCapture();
  let influx: InfluxV1;
  let stack: LocalStack;
  let relay: TcpRelay;
  let field: ManagedProcess;
  let httpPort: number;

  const status = async (): Promise<FieldStatus> => {
    const res = await fetch(`http://127.0.0.1:${httpPort}/status`, { signal: AbortSignal.timeout(5000) });
    if (!res.ok) throw new Error(`GET /status: ${res.status}`);
    return (await res.json()) as FieldStatus;
  };
  const fieldLog = () => {
    try {
      return readFileSync(field.spec.logFile, 'utf8');
    } catch {
      return '';
    }
  };
  /** Every reading of the device in InfluxDB, in time order, read in slices (a server may cap rows per answer). */
  const storedRows = async () => {
    const rows: Record<string, unknown>[] = [];
    const slice = 10_000;
    for (let from = 0; from < N + slice; from += slice) {
      const q = `SELECT v FROM readings WHERE device = '${DEVICE}' AND time >= ${base + from}ms AND time < ${base + from + slice}ms`;
      rows.push(...(await influx.rows(DB, q)));
    }
    const late = await influx.rows(DB, `SELECT v FROM readings WHERE device = '${DEVICE}' AND (time < ${base}ms OR time >= ${base + N + slice}ms)`);
    return [...rows, ...late];
  };
  const counts = async () => {
    const r = await influx.rows(DB, `SELECT count(v) AS n, sum(v) AS s FROM readings WHERE device = '${DEVICE}'`);
    return { n: Number(r[0]?.n ?? 0), sum: Number(r[0]?.s ?? 0) };
  };

  before(async () => {
    influx = await InfluxV1.start(join(work.dir, 'influxdb'), DB);
    ({ stack } = await startTestStack(
      pki.dir,
      join(work.dir, 'stack'),
      {
        ...influxSettings(influx, DB),
        // A frozen database: the write times out and is retried, then answered after SIGCONT.
        INFLUXDB_TIMEOUT_MS: '4000',
        DISTRIBUTOR_RETRY_MAX_MS: '1000',
        DISTRIBUTOR_REQUIRE_SIGNATURES: 'true',
      },
      {
        logger: supervisorLogs.logger,
        // The internal broker reaches the DMZ broker through a relay the test can cut.
        bridgeTarget: async (dmzPort) => {
          relay = new TcpRelay({ host: '127.0.0.1', port: dmzPort });
          return { host: 'localhost', port: await relay.start() };
        },
      },
    ));

    // The field client as the field container runs it: its own process, its own data folder,
    // restarted from that folder after a crash (supervised like the stack's components).
    ({ process: field, httpPort } = await fieldClientProcess({
      paths: pki.paths,
      deviceId: DEVICE,
      gatewayUrl: stack.urls.wss,
      dataDir: join(work.dir, 'field-data'),
      logFile: join(work.dir, 'logs', 'field-client.log'),
      env: { LOG_LEVEL: 'info', FIELD_COMMIT_TIMEOUT_MS: String(COMMIT_TIMEOUT_MS), FIELD_RECONNECT_MAX_MS: '2000' },
      supervisor: supervisorLogs.logger.child({ subsystem: 'supervisor' }),
    }));
    await field.start();
    const s = await status();
    assert.equal(s.commit.receipts, true, 'the device keeps each reading until its receipt');
  });

  after(async () => {
    await field?.stop();
    await stack?.close();
    await relay?.close();
    await influx?.process.stop();
    pki.cleanup();
    work.cleanup();
  });

  it(`streams ${N} readings through a SIGKILL of every hop and a frozen InfluxDB; InfluxDB holds each exactly once`, async (t) => {
    const started = Date.now();
    const events: string[] = [];
    const note = (what: string) => events.push(`${((Date.now() - started) / 1000).toFixed(1)}s ${what}`);

    // The sensor: batches of readings to the device's HTTP input, each sent again until the device
    // answered 2xx (its acknowledgement that the readings are on its disk). A batch the device wrote
    // but could not answer (killed meanwhile) is sent twice: the same readings, the same points.
    let accepted = 0;
    let retries = 0;
    const producer = (async () => {
      for (let first = 0; first < N; first += BATCH) {
        const due = started + (first / BATCH) * CALL_INTERVAL_MS;
        if (Date.now() < due) await sleep(due - Date.now());
        const body = JSON.stringify(Array.from({ length: Math.min(BATCH, N - first) }, (_, i) => ({ v: first + i, timestamp: base + first + i })));
        for (;;) {
          const ok = await fetch(`http://127.0.0.1:${httpPort}/v1/timeseries`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body,
            signal: AbortSignal.timeout(30_000),
          }).then(
            async (res) => {
              await res.arrayBuffer();
              return res.status >= 200 && res.status < 300;
            },
            () => false,
          );
          if (ok) break;
          retries++;
          await sleep(200);
        }
        accepted = Math.min(N, first + BATCH);
      }
    })();

    const crash = async (name: ComponentName) => {
      note(`SIGKILL ${name}`);
      await stack.kill(name, 'SIGKILL');
      await stack.untilRunning(name);
      note(`${name} back`);
    };
    const pause = () => sleep(1500);

    await sleep(2000);
    // The DMZ broker dies holding a backlog it acknowledged: the bridge is cut, readings pile up in it.
    note('bridge cut');
    await relay.cut();
    await sleep(2000);
    await crash('dmz-mosquitto');
    await relay.restore();
    note('bridge restored');
    await pause();
    await crash('internal-mosquitto');
    await pause();
    await crash('gateway-1');
    await pause();
    await crash('distributor');
    await pause();
    await crash('caddy');
    await pause();
    note('SIGKILL field-client');
    await field.signal('SIGKILL');
    await field.untilReady();
    note('field-client back');
    await pause();
    note('SIGSTOP influxd');
    await influx.process.pause();
    await sleep(10_000);
    await influx.process.resume();
    note('SIGCONT influxd');

    await producer;
    note(`all ${accepted} readings accepted by the device (${retries} calls sent again)`);
    assert.equal(accepted, N);
    const restarted = supervisorLogs.lines.filter((l) => typeof l.msg === 'string' && l.msg.endsWith(' restarted')).map((l) => l.component);
    for (const c of ['dmz-mosquitto', 'internal-mosquitto', 'gateway-1', 'distributor', 'caddy', 'field-client']) {
      assert.ok(restarted.includes(c), `${c} was restarted by its supervisor (${restarted.join(', ')})`);
    }

    // Everything the device accepted ends up in InfluxDB, and the device lets go of all of it.
    const deadline = Date.now() + DRAIN_DEADLINE_MS;
    let last = { n: 0, sum: 0 };
    let s: FieldStatus | undefined;
    for (;;) {
      last = await counts().catch(() => last);
      s = await status().catch(() => s);
      if (last.n >= N && s?.queue.depth === 0) break;
      if (Date.now() > deadline) break;
      await sleep(1000);
    }
    note(`drained: ${last.n} in InfluxDB, ${s?.queue.depth} held by the device`);
    const report = () =>
      `\n--- timeline ---\n${events.join('\n')}\n--- device status ---\n${JSON.stringify(s)}` +
      `\n--- field client (tail) ---\n${field.tail(20)}\n--- distributor (tail) ---\n${stack.distributor.tail(15)}`;

    if (last.n !== N) {
      const rows = await storedRows();
      const have = new Map<number, number>();
      for (const r of rows) have.set(Number(r.v), (have.get(Number(r.v)) ?? 0) + 1);
      const missing = Array.from({ length: N }, (_, i) => i).filter((i) => !have.has(i));
      const twice = [...have].filter(([, k]) => k > 1).map(([v]) => v);
      assert.fail(
        `InfluxDB holds ${last.n} of ${N} readings: ${missing.length} missing (${ranges(missing)}), ` +
          `${twice.length} values twice${report()}`,
      );
    }
    // Asked again: InfluxDB 1.x runs each aggregate of one SELECT on its own cursor, so the answer
    // that first counted them all may have summed them before the last points were in.
    assert.equal((await counts()).sum, (N * (N - 1)) / 2, `the sum of the values${report()}`);
    const rows = await storedRows();
    assert.deepEqual(
      rows.map((r) => r.v),
      Array.from({ length: N }, (_, i) => i),
      'every value once, each at its own timestamp',
    );
    assert.deepEqual(
      rows.map((r) => r.time),
      Array.from({ length: N }, (_, i) => base + i),
    );

    // On the device: nothing left uncommitted, and no receipt that failed to verify, in any of its lives.
    assert.ok(s, `the device answers its status${report()}`);
    assert.equal(s.queue.depth, 0, `every reading committed by a receipt${report()}`);
    assert.equal(s.commit.awaitingReceipt, 0);
    assert.equal(s.commit.receiptsInvalid, 0);
    assert.doesNotMatch(fieldLog(), /FIELD_RECEIPT_INVALID/, 'no receipt refused since the first start');
    const resends = fieldLog().split('"code":"FIELD_COMMIT_TIMEOUT"').length - 1;
    note(`${resends} resends for want of a receipt, ${s.commit.receiptsReplayed} receipts for copies (this process)`);
    for (const e of events) t.diagnostic(e);
  });
});
