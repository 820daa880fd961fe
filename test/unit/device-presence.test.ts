import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { MqttClient } from 'mqtt';
import { CommandRouter } from '../../dmz/gateway/command-router.ts';
import { ReceiptRouter } from '../../dmz/gateway/receipt-router.ts';
import type { DeviceSession } from '../../dmz/gateway/device-session.ts';
import { FileStore } from '../../internal-network/distributor/file-store.ts';
import { MessageHandler } from '../../internal-network/distributor/message-handler.ts';
import type { StoredPoint } from '../../internal-network/distributor/points.ts';
import { ReplayWindows } from '../../internal-network/distributor/security/replay-window.ts';
import { MessageVerifier } from '../../internal-network/distributor/security/verifier.ts';
import { TABLES } from '../../internal-network/distributor/sinks/postgres/rows.ts';
import { DeviceKeyRegistry } from '../../internal-network/shared/device-keys.ts';
import { StatusEnvelopeSchema, type StatusEnvelope } from '../../shared/contract/envelope.ts';
import { commandTopic, receiptTopic, statusTopic } from '../../shared/contract/topics.ts';
import { DAY_MS } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';
import { captureLogs } from '../helpers/gateway-fixture.ts';
import { tempDir } from '../helpers/pki.ts';

/**
 * A device's presence over a long connection: the gateway publishes it again every day (and after
 * reconnecting to its broker) with the connection's `since`, so what reads presence within a window
 * of time still finds the device; the distributor stores such a reminder tagged apart from a
 * connection or a disconnection.
 */
const log = createLogger('test', 'silent');
const T0 = Date.UTC(2026, 0, 1);
const NOT_AFTER = T0 + 400 * DAY_MS;

/** The broker side of mqtt.js as the router uses it: what was published, a connection to toggle. */
class FakeMqtt extends EventEmitter {
  connected = true;
  readonly published: Array<{ topic: string; status: StatusEnvelope; retain: boolean }> = [];
  publish(topic: string, payload: string, opts: { retain?: boolean }): void {
    this.published.push({ topic, status: StatusEnvelopeSchema.parse(JSON.parse(payload)), retain: opts.retain === true });
  }
  subscribe(_filters: unknown, _opts: unknown, cb?: (err: Error | null, grants: unknown[]) => void): void {
    cb?.(null, []);
  }
  unsubscribe(): void {}
  /** what was published since the last call, as [device, state, at, since] */
  take(): Array<[string, string, number, number | undefined]> {
    const out = this.published.map((p): [string, string, number, number | undefined] => [p.topic.split('/')[3] as string, p.status.state, p.status.at, p.status.since]);
    this.published.length = 0;
    return out;
  }
}

const session = (deviceId: string) => ({ deviceId, isClosed: false, close: () => undefined }) as unknown as DeviceSession;

describe('the gateway publishes the presence of each device it holds again', () => {
  it('a day after its last, with the time of the connection; a connection or a disconnection without it', () => {
    const mqtt = new FakeMqtt();
    let now = T0;
    const router = new CommandRouter(mqtt as unknown as MqttClient, 'gw-1', log, { refreshMs: DAY_MS, refreshCheckMs: 3_600_000, now: () => now });
    try {
      const a = session('meter-1');
      router.attach(a, NOT_AFTER);
      assert.deepEqual(mqtt.take(), [['meter-1', 'online', T0, undefined]]);
      now = T0 + DAY_MS - 1;
      router.refresh();
      assert.deepEqual(mqtt.take(), [], 'not due yet');
      now = T0 + DAY_MS;
      router.refresh();
      const [reminder] = mqtt.published;
      assert.deepEqual(mqtt.take(), [['meter-1', 'online', T0 + DAY_MS, T0]]);
      assert.equal(reminder?.status.certNotAfter, NOT_AFTER);
      assert.equal(reminder?.retain, true);
      assert.equal(reminder?.topic, statusTopic('meter-1'));
      now += 3_600_000;
      router.refresh();
      assert.deepEqual(mqtt.take(), [], 'the next one a day after this one');

      // Broker away: a device let in meanwhile has no presence yet; at the reconnection it gets its
      // first (no `since`), the one held before a reminder. The day counts from then.
      mqtt.connected = false;
      now += 3_600_000;
      router.attach(session('meter-2'), NOT_AFTER);
      now += 60_000;
      router.refresh();
      assert.deepEqual(mqtt.take(), []);
      mqtt.connected = true;
      mqtt.emit('connect', { sessionPresent: false });
      const reconnected = now;
      assert.deepEqual(mqtt.take(), [
        ['meter-1', 'online', reconnected, T0],
        ['meter-2', 'online', reconnected, undefined],
      ]);

      router.detach(a);
      assert.deepEqual(mqtt.take(), [['meter-1', 'offline', reconnected, undefined]]);
      now = reconnected + DAY_MS;
      router.refresh();
      assert.deepEqual(mqtt.take(), [['meter-2', 'online', reconnected + DAY_MS, reconnected - 60_000]]);
    } finally {
      router.close();
    }
  });

  /**
   * A device that left while the broker was away had its `offline` dropped (the broker is away, and
   * the next connection published only the devices still held): its retained presence said
   * `online` for a device long gone, until it connected again (a device retired, never).
   */
  it("publishes at the reconnection the offline of a device that left while the broker was away, at the time it left; not of one back meanwhile", () => {
    const mqtt = new FakeMqtt();
    let now = T0;
    const router = new CommandRouter(mqtt as unknown as MqttClient, 'gw-1', log, { refreshMs: DAY_MS, refreshCheckMs: 3_600_000, now: () => now });
    try {
      const gone = session('meter-gone');
      const back = session('meter-back');
      router.attach(gone, NOT_AFTER);
      router.attach(back, NOT_AFTER);
      mqtt.take();
      mqtt.connected = false;
      now += 60_000;
      const leftAt = now;
      router.detach(gone);
      router.detach(back);
      now += 60_000;
      const backAgain = session('meter-back');
      router.attach(backAgain, NOT_AFTER);
      assert.deepEqual(mqtt.take(), [], 'nothing while the broker is away');
      now += 60_000;
      mqtt.connected = true;
      mqtt.emit('connect', { sessionPresent: false });
      assert.deepEqual(mqtt.take().sort(), [
        ['meter-back', 'online', now, undefined],
        ['meter-gone', 'offline', leftAt, undefined],
      ]);
      mqtt.emit('connect', { sessionPresent: false });
      assert.deepEqual(mqtt.take().filter(([d]) => d === 'meter-gone'), [], 'published once');
    } finally {
      router.close();
    }
  });

  it('on its own timer, until closed', async () => {
    const mqtt = new FakeMqtt();
    let now = T0;
    const router = new CommandRouter(mqtt as unknown as MqttClient, 'gw-1', log, { refreshMs: DAY_MS, refreshCheckMs: 10, now: () => now });
    try {
      router.attach(session('meter-1'));
      mqtt.take();
      now = T0 + DAY_MS;
      const deadline = Date.now() + 5_000;
      while (mqtt.published.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      assert.deepEqual(mqtt.take(), [['meter-1', 'online', T0 + DAY_MS, T0]]);
      assert.equal(mqtt.published.at(0)?.status.certNotAfter, undefined, 'a device token: no certificate');
      router.close();
      now += 2 * DAY_MS;
      await new Promise((r) => setTimeout(r, 50));
      assert.deepEqual(mqtt.take(), []);
    } finally {
      router.close();
    }
  });
});

/**
 * mqtt.js calls its 'message' listeners synchronously: an error one of them throws ends the
 * process, and every device's connection with it. What the DMZ broker delivers is not the devices',
 * and a fault in handling one message (a bug, a compromised internal side) must cost that message only.
 */
describe('the gateway routers go on after a message whose handling fails unforeseen', () => {
  const failing = (deviceId: string) =>
    ({
      deviceId,
      isClosed: false,
      close: () => undefined,
      sendCommand: () => {
        throw new TypeError('unforeseen');
      },
      sendCommit: () => {
        throw new TypeError('unforeseen');
      },
    }) as unknown as DeviceSession;

  it('the command router logs it with its code, and routes the next command', () => {
    const mqtt = new FakeMqtt();
    const logs = captureLogs();
    const router = new CommandRouter(mqtt as unknown as MqttClient, 'gw-1', logs.logger);
    try {
      router.attach(failing('meter-1'));
      const command = (commandId: string) => Buffer.from(JSON.stringify({ v: 1, commandId, command: 'reboot', issuedAt: T0 }));
      assert.doesNotThrow(() => mqtt.emit('message', commandTopic('meter-1'), command('c-1')));
      const logged = logs.lines.filter((l) => l.code === 'GATEWAY_INTERNAL');
      assert.equal(logged.length, 1);
      assert.equal(logged[0]?.topic, commandTopic('meter-1'));
      assert.equal(logged[0]?.level, 50, 'logged as an error');
      // The router itself still works: the next command reaches a healthy session.
      const sent: unknown[] = [];
      router.attach({ deviceId: 'meter-2', isClosed: false, close: () => undefined, sendCommand: (f: unknown) => sent.push(f) } as unknown as DeviceSession);
      mqtt.emit('message', commandTopic('meter-2'), command('c-2'));
      assert.equal(sent.length, 1);
    } finally {
      router.close();
    }
  });

  it('the receipt router logs it with its code, and routes the next receipts', () => {
    const mqtt = new FakeMqtt();
    const logs = captureLogs();
    const sent: unknown[] = [];
    const healthy = { deviceId: 'meter-2', sendCommit: (f: unknown) => sent.push(f) } as unknown as DeviceSession;
    const router = new ReceiptRouter(mqtt as unknown as MqttClient, 'gw-1', (id) => (id === 'meter-1' ? failing(id) : healthy), logs.logger);
    try {
      const receipts = (deviceId: string) => Buffer.from(JSON.stringify({ v: 1, gatewayId: 'gw-1', receipts: [{ deviceId, epoch: 'e1', ranges: [[1, 2]], mac: 'A'.repeat(43) }] }));
      assert.doesNotThrow(() => mqtt.emit('message', receiptTopic('gw-1'), receipts('meter-1')));
      const logged = logs.lines.filter((l) => l.code === 'GATEWAY_INTERNAL');
      assert.equal(logged.length, 1);
      assert.equal(logged[0]?.topic, receiptTopic('gw-1'));
      mqtt.emit('message', receiptTopic('gw-1'), receipts('meter-2'));
      assert.equal(sent.length, 1);
    } finally {
      router.close();
    }
  });
});

describe('the distributor stores a reminder apart from a connection', () => {
  let tmp: { dir: string; cleanup(): void };
  let handler: MessageHandler;
  const written: StoredPoint[] = [];
  before(() => {
    tmp = tempDir('presence');
    mkdirSync(join(tmp.dir, 'keys'));
    // A registered device: a presence of an id neither registered nor revoked is counted, not stored.
    writeFileSync(join(tmp.dir, 'keys', 'meter-1.key'), `${'ab'.repeat(32)}\n`);
    writeFileSync(join(tmp.dir, 'revoked.txt'), '');
    const verifier = new MessageVerifier(new DeviceKeyRegistry(join(tmp.dir, 'keys'), join(tmp.dir, 'revoked.txt')), new ReplayWindows(join(tmp.dir, 'replay')), { requireSignatures: true, freshnessMs: 30_000, maxDelayMs: 3_600_000 }, log);
    const sink = { description: 'memory', write: async (p: readonly StoredPoint[]) => void written.push(...p), close: async () => {} };
    handler = new MessageHandler(sink, new FileStore(join(tmp.dir, 'files')), verifier);
  });
  after(() => tmp?.cleanup());

  it('tagged republished=true with the connection time in `since` (never later than the presence); PostgreSQL keeps `since`, null for a connection', async () => {
    const now = Date.now();
    const publish = (status: Omit<StatusEnvelope, 'v' | 'gatewayId'>) => handler.handle(statusTopic('meter-1'), Buffer.from(JSON.stringify({ v: 1, gatewayId: 'gw-1', ...status })));
    await publish({ state: 'online', at: now - 2 * DAY_MS, certNotAfter: now + 40 * DAY_MS });
    await publish({ state: 'online', at: now - DAY_MS, certNotAfter: now + 40 * DAY_MS, since: now - 2 * DAY_MS });
    await publish({ state: 'online', at: now - 1000, since: now }); // a `since` after its presence: taken as the presence's time
    await publish({ state: 'offline', at: now - 500 });
    assert.deepEqual(
      written.map((p) => [p.time - now, p.tags, p.fields.state, p.fields.since === undefined ? undefined : (p.fields.since as number) - now, p.fields.cert_days_left]),
      [
        [-2 * DAY_MS, { device: 'meter-1', gateway: 'gw-1' }, 'online', undefined, 42],
        [-DAY_MS, { device: 'meter-1', gateway: 'gw-1', republished: 'true' }, 'online', -2 * DAY_MS, 41],
        [-1000, { device: 'meter-1', gateway: 'gw-1', republished: 'true' }, 'online', -1000, undefined],
        [-500, { device: 'meter-1', gateway: 'gw-1' }, 'offline', undefined, undefined],
      ],
    );
    const spec = TABLES.device_status;
    assert.ok(spec);
    const since = spec.columns.findIndex((c) => c.name === 'since');
    assert.ok(since > 0 && spec.columns[since]?.time === true);
    assert.deepEqual(written.map((p) => spec.row(p, 'k')[since]), [null, now - 2 * DAY_MS, now - 1000, null]);
  });
});
