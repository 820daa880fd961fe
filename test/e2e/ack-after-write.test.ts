import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connectAsync } from 'mqtt';
import { eventually, RawDevice, within } from '../helpers/ws-device.ts';
import { distributorLike, startEmbeddedFixture, type EmbeddedFixture } from '../helpers/embedded.ts';
import type { Distributor } from '../../internal-network/distributor/distributor.ts';
import { readLocalStore } from '../../internal-network/distributor/sinks/local-store.ts';
import { commandTopic, uplinkTopic } from '../../shared/contract/topics.ts';
import { tempDir } from '../helpers/pki.ts';
import { TIMINGS } from '../../shared/limits.ts';

describe('the distributor acknowledges only what it has written', () => {
  let fx: EmbeddedFixture;
  const store = tempDir('store');
  // Every step that waits has a bound of its own (ms), so that a hang names its step.
  before(async () => {
    fx = await within(startEmbeddedFixture(['sensor-001']), 60_000, 'the embedded fixture starting');
  });
  after(async () => {
    await within(fx.stop(), 30_000, 'the embedded fixture stopping');
    store.cleanup();
  });

  const distributorWith = (timeseries: string): Distributor => distributorLike(fx, { TIMESERIES_LOCAL_PATH: timeseries, DISTRIBUTOR_RETRY_MAX_MS: '200' });

  it('keeps a message through a storage outage and a distributor crash, then writes it exactly once', async () => {
    // Swap the pipeline's distributor for one whose store cannot be written: today's file is a directory.
    await within(fx.pipeline.distributor.close(), 15_000, "the pipeline's distributor closing");
    // Tomorrow's too: a midnight (UTC) during the outage would have given the store a file it can write.
    const blocked = [0, 86_400_000].map((ahead) => join(store.dir, `${new Date(Date.now() + ahead).toISOString().slice(0, 10)}.jsonl`));
    for (const dir of blocked) mkdirSync(dir, { recursive: true });
    const failing = distributorWith(store.dir);
    await within(failing.ready, 60_000, 'the failing distributor subscribing');

    const d = await within(RawDevice.connect(fx.pipeline.gatewayUrl, RawDevice.tlsFor(fx.pki.paths, 'sensor-001')), 15_000, 'the device connecting');
    d.send(JSON.stringify({ deviceId: 'sensor-001', dataType: 'timeseries', messageId: 'precious-1', payload: { v: 42, timestamp: 1750000000000 } }));
    assert.deepEqual(await d.next(), { type: 'ack', messageIds: ['precious-1'] }, 'the broker has it');
    await eventually(() => (failing.stats().retries >= 3 ? true : undefined), 10_000, 'write retries');
    assert.equal(failing.stats().messages, 0);
    assert.ok(fx.logs.codes().includes('DISTRIBUTOR_WRITE_FAILED'));

    // The distributor dies mid-retry; it never acknowledged the message.
    await within(failing.close(), 15_000, 'the failing distributor closing');
    for (const dir of blocked) rmSync(dir, { recursive: true });
    // What a distributor killed in file storage leaves: a join of chunks cut off hours ago, the
    // chunks of a file stored just before the kill. And a temporary file a live writer holds.
    const files = fx.data.files;
    const stale = join(files, 'sensor-001', '.incoming-killed-join');
    const live = join(files, 'sensor-001', '.incoming-live');
    const stored = join(files, '.partial', 'sensor-001', 'f-stored');
    mkdirSync(stored, { recursive: true });
    mkdirSync(join(files, 'sensor-001'), { recursive: true });
    writeFileSync(join(stored, '0.chunk'), 'a chunk of a file stored');
    writeFileSync(`${stored}.done.json`, '{}');
    writeFileSync(stale, Buffer.alloc(64 * 1024));
    const longAgo = new Date(Date.now() - TIMINGS.fileTempStaleMs - 60_000);
    utimesSync(stale, longAgo, longAgo);
    writeFileSync(live, 'being written');
    const healthy = distributorWith(store.dir);
    try {
      await within(healthy.ready, 60_000, 'the healthy distributor subscribing');
      // Swept at its start.
      await eventually(() => (!existsSync(stale) && !existsSync(stored) ? true : undefined), 10_000, 'file storage swept');
      assert.ok(existsSync(live) && existsSync(`${stored}.done.json`), 'a fresh temporary file and the done marker kept');
      const points = await eventually(() => {
        const pts = readLocalStore(store.dir).filter((p) => p.fields.v === 42);
        return pts.length > 0 ? pts : undefined;
      });
      assert.equal(points.length, 1);
      assert.equal(points[0]?.time, 1750000000000);
    } finally {
      d.close();
      await within(healthy.close(), 15_000, 'the healthy distributor closing');
    }
  });
});

describe('the embedded broker enforces identities and roles', () => {
  let fx: EmbeddedFixture;
  before(async () => {
    fx = await within(startEmbeddedFixture(['sensor-001']), 60_000, 'the embedded fixture starting');
  });
  after(() => within(fx.stop(), 30_000, 'the embedded fixture stopping'));

  const connectAs = (file: string | { cert: string; key: string }, clientId: string) => {
    const f = typeof file === 'string' ? fx.pki.paths.service(file) : file;
    return connectAsync(`mqtts://127.0.0.1:${fx.pipeline.broker.port}`, {
      ca: readFileSync(fx.pki.paths.publicCa),
      cert: readFileSync(f.cert),
      key: readFileSync(f.key),
      protocolVersion: 4,
      clientId,
      reconnectPeriod: 0,
    });
  };

  it('refuses a client without a certificate', async () => {
    await assert.rejects(
      connectAsync(`mqtts://127.0.0.1:${fx.pipeline.broker.port}`, { ca: readFileSync(fx.pki.paths.publicCa), reconnectPeriod: 0, connectTimeout: 5000 }),
    );
  });

  it('refuses a device certificate: devices talk to the gateway, never to a broker', async () => {
    await assert.rejects(connectAs(fx.pki.paths.device('sensor-001'), 'sneaky-device'));
  });

  it("refuses the gateway's subscription to uplink data and a distributor's publish", async () => {
    const gw = await connectAs('dmz/gateway', 'test-gw');
    // SUBACK 0x80 (MQTT 3.1.1 §3.9.3), which mqtt.js reports as an error.
    await assert.rejects(gw.subscribeAsync(uplinkTopic('sensor-001', 'timeseries'), { qos: 1 }), /Subscribe error/);
    const ok = await gw.subscribeAsync(commandTopic('sensor-001'), { qos: 1 });
    assert.equal(ok[0]?.qos, 1);
    await within(gw.endAsync(), 15_000, 'the gateway client ending');

    const dist = await connectAs('internal/distributor', 'test-dist');
    const closed = new Promise<void>((resolve) => dist.once('close', () => resolve()));
    dist.publish(commandTopic('sensor-001'), '{}', { qos: 1 });
    await within(closed, 15_000, 'the broker dropping the distributor'); // the broker drops a client that publishes outside its role
    await within(dist.endAsync(true), 15_000, 'the distributor client ending');
    assert.ok(fx.logs.codes().includes('BROKER_NOT_AUTHORIZED'));
  });
});
