import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { LocalStack } from '../../scripts/local-stack/stack.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { startTestStack } from '../helpers/stack.ts';
import { eventually } from '../helpers/ws-device.ts';
import { parseExposition } from '../helpers/exposition.ts';

/**
 * The broker exporter on the real stack: the real Mosquittos (2.0) publish $SYS, the exporter reads
 * both as `monitor` (the DMZ one dialling out from the internal side) and reports them; stopping the
 * DMZ broker shows, and so does the bridge dropping, and both come back.
 */
describe('the broker exporter reports both Mosquittos and the bridge from $SYS', () => {
  const work = tempDir('broker-exporter');
  const pki = makeTestPki([]);
  let stack: LocalStack;

  before(async () => {
    ({ stack } = await startTestStack(pki.dir, join(work.dir, 'stack'), {}));
  });
  after(async () => {
    await stack?.close();
    work.cleanup();
    pki.cleanup();
  });

  const scrape = async () => {
    const res = await fetch(`${stack.metrics.brokerExporter}/metrics`);
    assert.equal(res.status, 200);
    return parseExposition(await res.text());
  };
  const get = (m: Map<string, number>, name: string, broker?: 'dmz' | 'internal') =>
    m.get(`fieldstream_${name}{${broker ? `broker="${broker}",` : ''}service="broker-exporter"}`);
  /** Waits until the exporter reports what `want` says (name → value, or a predicate). */
  const until = (want: Record<string, number | ((v: number | undefined) => boolean)>, timeoutMs: number, what: string) =>
    eventually(async () => {
      const m = await scrape();
      for (const [key, expected] of Object.entries(want)) {
        const [name, broker] = key.split('@') as [string, 'dmz' | 'internal' | undefined];
        const v = get(m, name, broker);
        if (typeof expected === 'number' ? v !== expected : !expected(v)) return undefined;
      }
      return m;
    }, timeoutMs, what);

  it('both brokers up, the bridge connected, their counts read', async () => {
    // $SYS values are published every sys_interval (5 s), so the counts follow the connections by up to that.
    // DMZ: the gateway, the bridge, the exporter; internal: the distributor, the command API, the exporter.
    const m = await until(
      {
        'mosquitto_up@dmz': 1,
        'mosquitto_up@internal': 1,
        bridge_connected: 1,
        'mosquitto_clients_connected@dmz': (v) => (v ?? 0) >= 3,
        'mosquitto_clients_connected@internal': (v) => (v ?? 0) >= 3,
      },
      30_000,
      'both brokers up, the bridge connected, the clients counted',
    );
    for (const broker of ['dmz', 'internal'] as const) {
      assert.ok((get(m, 'mosquitto_messages_received_total', broker) ?? 0) > 0, broker);
      assert.ok((get(m, 'mosquitto_messages_sent_total', broker) ?? 0) > 0, broker);
      assert.ok(get(m, 'mosquitto_messages_stored', broker) !== undefined, broker);
      assert.equal(get(m, 'mosquitto_dropped_total', broker), 0, broker);
    }
    const text = await (await fetch(`${stack.metrics.brokerExporter}/metrics`)).text();
    assert.match(text, /^# TYPE fieldstream_mosquitto_messages_received_total counter$/m);
    assert.match(text, /^# TYPE fieldstream_mosquitto_dropped_total counter$/m);
    assert.equal((await fetch(`${stack.metrics.brokerExporter}/readyz`)).status, 200);
  });

  it('the DMZ broker stopped: mosquitto_up{broker="dmz"} 0 and bridge_connected 0; back to 1 when it restarts', async () => {
    await stack.dmzMosquitto.stop();
    const down = await until({ 'mosquitto_up@dmz': 0, bridge_connected: 0, 'mosquitto_up@internal': 1 }, 30_000, 'the DMZ broker reported down');
    // Nothing stale is reported for a broker the exporter cannot read.
    assert.equal(get(down, 'mosquitto_clients_connected', 'dmz'), undefined);
    // The exporter stays ready: the DMZ broker being down is what it reports.
    assert.equal((await fetch(`${stack.metrics.brokerExporter}/readyz`)).status, 200);

    await stack.dmzMosquitto.start();
    // The bridge retries with a growing delay (restart_timeout 2 30).
    await until({ 'mosquitto_up@dmz': 1, bridge_connected: 1, 'mosquitto_clients_connected@dmz': (v) => (v ?? 0) >= 2 }, 60_000, 'the DMZ broker and the bridge back');
  });

  it('the internal broker stopped: it and the bridge read as down, and not ready', async () => {
    await stack.internalMosquitto.stop();
    await until({ 'mosquitto_up@internal': 0, bridge_connected: 0, 'mosquitto_up@dmz': 1 }, 30_000, 'the internal broker reported down');
    assert.equal((await fetch(`${stack.metrics.brokerExporter}/readyz`)).status, 503);
    await stack.internalMosquitto.start();
    await until({ 'mosquitto_up@internal': 1, bridge_connected: 1 }, 60_000, 'the internal broker and the bridge back');
  });
});
