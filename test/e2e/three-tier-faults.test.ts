import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { eventually } from '../helpers/ws-device.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { InfluxV1 } from '../../scripts/local-stack/databases.ts';
import { startTestStack } from '../helpers/stack.ts';
import { untilReadiness } from '../helpers/readiness.ts';
import { TcpRelay } from '../helpers/tcp-relay.ts';
import { LogCapture } from '../helpers/embedded.ts';
import type { LocalStack } from '../../scripts/local-stack/stack.ts';
import type { RunningFieldClient } from '../../field-client/src/start.ts';
import { startTestFieldClient } from '../helpers/field.ts';

const DB = 'sensor_data';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('faults on the real stack: nothing acknowledged is lost, nothing is written twice', () => {
  const work = tempDir('faults');
  const pki = makeTestPki(['field-f']);
  let influx: InfluxV1;
  let stack: LocalStack;
  let relay: TcpRelay;
  let field: RunningFieldClient;
  const logs = new LogCapture();

  before(async () => {
    influx = await InfluxV1.start(join(work.dir, 'influxdb'), DB);
    ({ stack } = await startTestStack(
      pki.dir,
      join(work.dir, 'stack'),
      { INFLUXDB_URL: influx.url, INFLUXDB_DATABASE: DB, INFLUXDB_USERNAME: influx.user, INFLUXDB_PASSWORD: influx.password, DISTRIBUTOR_RETRY_MAX_MS: '1000' },
      {
        // The internal broker reaches the DMZ broker through a relay the test can cut.
        bridgeTarget: async (dmzPort) => {
          relay = new TcpRelay({ host: '127.0.0.1', port: dmzPort });
          return { host: 'localhost', port: await relay.start() };
        },
      },
    ));
    field = await startTestFieldClient(pki.paths, 'field-f', stack.urls.wss, logs.logger);
  });
  after(async () => {
    await field?.close();
    await stack?.close();
    await relay?.close();
    await influx?.process.stop();
    pki.cleanup();
    work.cleanup();
  });

  it('survives a distributor SIGKILL, a database outage and a cut bridge mid-stream', async () => {
    const base = Date.parse('2025-09-01T00:00:00Z');
    const acked: Array<Promise<unknown>> = [];
    let sent = 0;
    let streaming = true;
    const stream = (async () => {
      while (streaming) {
        for (let k = 0; k < 25; k++, sent++) acked.push(field.client.submit('timeseries', { v: sent, timestamp: base + sent }));
        await sleep(25);
      }
    })();

    await sleep(1000);
    await stack.distributor.kill(); // SIGKILL: whatever it held unacknowledged comes back
    await sleep(1500);
    await stack.distributor.start();

    await sleep(1000);
    await influx.process.stop(); // the database goes away for a while
    const outage = Date.now();
    // The distributor says so: not ready (its database failing), alive all the same.
    await untilReadiness(stack.metrics.distributor, 503, ['database'], 'the distributor /readyz 503, its database failing');
    assert.equal((await fetch(`${stack.metrics.distributor}/healthz`)).status, 200);
    await sleep(Math.max(0, 3000 - (Date.now() - outage)));
    await influx.restart();
    await untilReadiness(stack.metrics.distributor, 200, [], 'the distributor ready again once a write went through');

    await sleep(1000);
    await relay.cut(); // the link between the two brokers fails
    await sleep(3000);
    await relay.restore();

    await sleep(1000);
    streaming = false;
    await stream;
    const ids = await Promise.all(acked); // every reading was accepted: it is in the durable queue
    assert.equal(ids.length, sent);
    assert.ok(sent > 2000, `streamed ${sent} readings`);

    let rows: Record<string, unknown>[] = [];
    await eventually(
      async () => {
        rows = await influx.rows(DB, `SELECT v FROM readings WHERE device = 'field-f'`);
        return rows.length >= sent ? true : undefined;
      },
      90_000,
      `${sent} readings in InfluxDB`,
    ).catch((err: Error) => {
      const have = new Set(rows.map((r) => r.v));
      const missing = Array.from({ length: sent }, (_, i) => i).filter((i) => !have.has(i));
      throw new Error(`${err.message}: ${rows.length} there, missing ${missing.length} e.g. ${missing.slice(0, 10).join(',')}`);
    });
    assert.equal(rows.length, sent, 'exactly once: no reading missing, none twice');
    assert.deepEqual(
      rows.map((r) => r.v),
      Array.from({ length: sent }, (_, i) => i),
    );
    assert.deepEqual(
      rows.map((r) => r.time),
      Array.from({ length: sent }, (_, i) => base + i),
    );
    const distributorLog = stack.distributor.tail(400);
    assert.match(distributorLog, /DISTRIBUTOR_WRITE_FAILED/, 'the outage was seen and retried');
  });
});
