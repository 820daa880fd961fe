import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { CommandHandlers } from '../../field-client/src/commands.ts';
import { loadFieldClientConfig } from '../../field-client/src/config.ts';
import { FieldClient } from '../../field-client/src/field-client.ts';
import { FileOutbox } from '../../field-client/src/files/file-outbox.ts';
import { GatewayConnection } from '../../field-client/src/gateway-connection.ts';
import { HealthReporter, softwareVersion } from '../../field-client/src/health.ts';
import { toLocalValuesUpdate } from '../../field-client/src/inputs/validate.ts';
import { DurableQueue } from '../../field-client/src/queue/durable-queue.ts';
import { healthPoints } from '../../internal-network/distributor/points.ts';
import { createCertificateAuthority, issueCertificate } from '../../pki/certificates.ts';
import { parseEnvelope, UplinkEnvelopeSchema, type EnvelopeOf } from '../../shared/contract/envelope.ts';
import { canonicalPayload, HealthPayloadSchema } from '../../shared/contract/payloads.ts';
import { parseUplinkFrame } from '../../shared/contract/uplink.ts';
import { isFieldStreamError } from '../../shared/errors.ts';
import { LIMITS } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';
import { tempDir } from '../helpers/pki.ts';

const log = createLogger('test', 'silent');

const GOOD = {
  uptimeSeconds: 3600,
  queueMessages: 12,
  queueBytes: 40960,
  awaitingReceipt: 3,
  oldestUnsentAgeSeconds: 42,
  freeDiskBytes: 5_000_000_000,
  certDaysLeft: 364,
  clockOffsetMs: -120,
  version: '0.1.0',
  intervalSeconds: 60,
  local: { battery: 87, signal_dbm: -71, network: 'LTE', charging: true },
  timestamp: '2024-01-01T12:00:00Z',
};

const manyValues = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`v${i}`, i]));

/** Whether the payload is refused, at the gateway as in the schema, with CONTRACT_INVALID_MESSAGE. */
function refused(payload: unknown): boolean {
  const ok = HealthPayloadSchema.safeParse(payload).success;
  let code: string | undefined;
  try {
    parseUplinkFrame(JSON.stringify({ deviceId: 'd1', dataType: 'health', payload }));
  } catch (err) {
    code = isFieldStreamError(err) ? err.code : 'not coded';
  }
  assert.equal(ok, code === undefined, 'the schema and the gateway agree');
  if (code !== undefined) assert.equal(code, 'CONTRACT_INVALID_MESSAGE');
  return !ok;
}

describe('the health message in the contract', () => {
  it('accepts a full health message, and one with only what every device can tell', () => {
    assert.equal(refused(GOOD), false);
    const { oldestUnsentAgeSeconds, freeDiskBytes, certDaysLeft, clockOffsetMs, local, timestamp, ...minimal } = GOOD;
    assert.equal(refused(minimal), false);
    assert.equal(refused({ ...GOOD, certDaysLeft: -3, clockOffsetMs: 250, timestamp: 1_704_110_400_000 }), false, 'an expired certificate, a clock behind, epoch ms');
    assert.equal(refused({ ...GOOD, local: manyValues(LIMITS.healthLocalMaxValues) }), false, 'as many local values as allowed');
    assert.equal(refused({ ...GOOD, local: { ['n'.repeat(64)]: 'x'.repeat(LIMITS.healthLocalStringMaxChars) } }), false, 'the longest name and string');
  });

  it('refuses a missing figure, an unknown one, or one of the wrong kind', () => {
    const { uptimeSeconds, ...noUptime } = GOOD;
    assert.ok(refused(noUptime));
    const { version, ...noVersion } = GOOD;
    assert.ok(refused(noVersion));
    assert.ok(refused({ ...GOOD, cpu: 12 }), 'strict: no unknown keys');
    assert.ok(refused({ ...GOOD, queueMessages: -1 }));
    assert.ok(refused({ ...GOOD, queueMessages: 1.5 }));
    assert.ok(refused({ ...GOOD, queueBytes: '40960' }));
    assert.ok(refused({ ...GOOD, certDaysLeft: 1.5 }));
    assert.ok(refused({ ...GOOD, certDaysLeft: LIMITS.healthCertDaysMax + 1 }));
    assert.ok(refused({ ...GOOD, clockOffsetMs: 0.5 }));
    assert.ok(refused({ ...GOOD, version: '' }));
    assert.ok(refused({ ...GOOD, version: '1.0 beta' }));
    assert.ok(refused({ ...GOOD, version: 'v'.repeat(65) }));
    assert.ok(refused({ ...GOOD, intervalSeconds: 0 }));
    assert.ok(refused({ ...GOOD, intervalSeconds: LIMITS.healthIntervalMaxS + 1 }));
    assert.ok(refused({ ...GOOD, timestamp: 'yesterday' }));
  });

  it('bounds the local values: their number, names and values', () => {
    assert.ok(refused({ ...GOOD, local: manyValues(LIMITS.healthLocalMaxValues + 1) }));
    assert.ok(refused({ ...GOOD, local: { 'bad name': 1 } }));
    assert.ok(refused({ ...GOOD, local: { '1st': 1 } }));
    assert.ok(refused({ ...GOOD, local: { ['n'.repeat(65)]: 1 } }));
    assert.deepEqual(HealthPayloadSchema.parse({ ...GOOD, local: JSON.parse('{"__proto__": 1, "ok": 1}') }).local, { ok: 1 }, '__proto__ is never a value');
    assert.ok(refused({ ...GOOD, local: { note: 'x'.repeat(LIMITS.healthLocalStringMaxChars + 1) } }));
    assert.ok(refused({ ...GOOD, local: { nested: { a: 1 } } }));
    assert.ok(refused({ ...GOOD, local: { gone: null } }), 'null removes a value at the local input; it is never sent');
    assert.ok(refused({ ...GOOD, local: [1, 2] }));
  });

  it("docs/message-contract.md's example is a valid health message, as typed into wscat", () => {
    const doc = readFileSync(join(import.meta.dirname, '..', '..', 'docs', 'message-contract.md'), 'utf8');
    const example = [...doc.matchAll(/```json\n([\s\S]*?)```/g)].map((m) => m[1]!).find((block) => block.includes('"dataType": "health"'));
    assert.ok(example, 'the example is in the document');
    const [m] = parseUplinkFrame(example);
    assert.equal(m?.dataType, 'health');
  });

  it('travels in an envelope that the distributor validates again', () => {
    const env = { v: 1, deviceId: 'd1', dataType: 'health', gatewayId: 'gw', receivedAt: 1, messages: [{ messageId: 'e.1', seq: 1, payload: GOOD }] };
    assert.equal(parseEnvelope(UplinkEnvelopeSchema, Buffer.from(JSON.stringify(env))).dataType, 'health');
    const bad = { ...env, messages: [{ messageId: 'e.1', seq: 1, payload: { ...GOOD, local: manyValues(LIMITS.healthLocalMaxValues + 1) } }] };
    assert.throws(() => parseEnvelope(UplinkEnvelopeSchema, Buffer.from(JSON.stringify(bad))), (err: unknown) => isFieldStreamError(err) && err.code === 'CONTRACT_INVALID_ENVELOPE');
  });

  it('has a canonical form, so the text signed is the text checked', () => {
    const shuffled = Object.fromEntries(Object.entries(GOOD).reverse());
    assert.notEqual(JSON.stringify(shuffled), JSON.stringify(GOOD));
    assert.equal(JSON.stringify(canonicalPayload('health', shuffled)), JSON.stringify(canonicalPayload('health', GOOD)));
  });
});

describe('the device_health point', () => {
  const env = (payload: unknown, receivedAt = 5): EnvelopeOf<'health'> =>
    parseEnvelope(UplinkEnvelopeSchema, Buffer.from(JSON.stringify({ v: 1, deviceId: 'd1', dataType: 'health', gatewayId: 'gw', receivedAt, messages: [{ messageId: 'e.1', payload }] }))) as EnvelopeOf<'health'>;

  it('stores every figure under the name the console reads, each local value as local_<name>, at the message time', () => {
    const [p] = healthPoints(env(GOOD));
    assert.deepEqual(p, {
      measurement: 'device_health',
      tags: { device: 'd1' },
      fields: {
        uptime_s: 3600,
        queue_messages: 12,
        queue_bytes: 40960,
        awaiting_receipt: 3,
        oldest_unsent_age_s: 42,
        free_disk_bytes: 5_000_000_000,
        cert_days_left: 364,
        clock_offset_ms: -120,
        version: '0.1.0',
        interval_s: 60,
        local_battery: 87,
        local_signal_dbm: -71,
        local_network: 'LTE',
        local_charging: true,
      },
      time: Date.parse('2024-01-01T12:00:00Z'),
    });
  });

  it('leaves out what the device could not tell, and falls back to the arrival time', () => {
    const { oldestUnsentAgeSeconds, freeDiskBytes, certDaysLeft, clockOffsetMs, local, timestamp, ...minimal } = GOOD;
    const [p] = healthPoints(env(minimal, 1234));
    assert.deepEqual(Object.keys(p!.fields).sort(), ['awaiting_receipt', 'interval_s', 'queue_bytes', 'queue_messages', 'uptime_s', 'version']);
    assert.equal(p!.time, 1234);
  });
});

describe('local health values', () => {
  it('takes a JSON object of named values, null removing one', () => {
    assert.deepEqual(toLocalValuesUpdate({ battery: 87, signal_dbm: null }), { battery: 87, signal_dbm: null });
  });

  it('refuses anything else with FIELD_INPUT_INVALID', () => {
    for (const body of [[1], 'battery', 42, null, { 'bad name': 1 }, { a: { b: 1 } }, { s: 'x'.repeat(LIMITS.healthLocalStringMaxChars + 1) }, manyValues(LIMITS.healthLocalMaxValues + 1)]) {
      assert.throws(() => toLocalValuesUpdate(body), (err: unknown) => isFieldStreamError(err) && err.code === 'FIELD_INPUT_INVALID', JSON.stringify(body).slice(0, 60));
    }
  });
});

describe('FIELD_HEALTH_INTERVAL_S', () => {
  const required = { DEVICE_ID: 'd1', GATEWAY_URL: 'wss://gateway:8443/ws' };
  it('is 60 s unless set; off or 0 turns health messages off; at most a day', () => {
    assert.equal(loadFieldClientConfig(required).FIELD_HEALTH_INTERVAL_S, 60);
    assert.equal(loadFieldClientConfig({ ...required, FIELD_HEALTH_INTERVAL_S: '5' }).FIELD_HEALTH_INTERVAL_S, 5);
    assert.equal(loadFieldClientConfig({ ...required, FIELD_HEALTH_INTERVAL_S: 'off' }).FIELD_HEALTH_INTERVAL_S, undefined);
    assert.equal(loadFieldClientConfig({ ...required, FIELD_HEALTH_INTERVAL_S: '0' }).FIELD_HEALTH_INTERVAL_S, undefined);
    assert.throws(() => loadFieldClientConfig({ ...required, FIELD_HEALTH_INTERVAL_S: String(LIMITS.healthIntervalMaxS + 1) }), /FIELD_HEALTH_INTERVAL_S/);
    assert.throws(() => loadFieldClientConfig({ ...required, FIELD_HEALTH_INTERVAL_S: '1.5' }), /FIELD_HEALTH_INTERVAL_S/);
  });
});

describe('the health reporter on a real queue', () => {
  async function setup(o: { intervalMs?: number; certValidityDays?: number } = {}) {
    const work = tempDir('health');
    const certFile = join(work.dir, 'client.crt');
    const ca = createCertificateAuthority('Health Test CA', 30);
    writeFileSync(certFile, issueCertificate(ca, { commonName: 'd1', organizationalUnit: 'devices', role: 'client', validityDays: o.certValidityDays ?? 10 }).certPem);
    const queue = await DurableQueue.open({ dir: join(work.dir, 'queue'), maxBytes: 64 * 1024 * 1024, segmentBytes: 1024 * 1024, fullPolicy: 'reject', sync: { mode: 'always' }, receipts: true, log });
    const outbox = new FileOutbox(work.dir, 64 * 1024);
    // Never started: the reporter needs no gateway, only the welcome frames the connection emits.
    const connection = new GatewayConnection({ url: 'wss://127.0.0.1:9/ws', tls: { ca: '', cert: '', key: '' }, reconnectInitialMs: 100, reconnectMaxMs: 100, idleTimeoutMs: 1000 }, log);
    const commands = new CommandHandlers({ deviceId: 'd1', key: undefined, allowUnsigned: false, maxAgeMs: 1000, skewMs: 1000 });
    const client = new FieldClient({ deviceId: 'd1', batchMax: 100, window: 100, fileWindow: 1, maxBytes: 64 * 1024 * 1024, dataDir: work.dir }, queue, outbox, connection, commands, log);
    const reporter = new HealthReporter(client, connection, outbox, { intervalMs: o.intervalMs ?? 3_600_000, dataDir: work.dir, certFile, version: softwareVersion() }, log);
    // A welcome is the first frame of a connection (a second one on the same connection is ignored):
    // each comes after an 'open', as on a reconnect.
    const welcome = (serverTime: number) => {
      connection.emit('open');
      connection.emit('frame', { type: 'welcome', deviceId: 'd1', gatewayId: 'gw', serverTime, limits: { frameMaxBytes: LIMITS.frameMaxBytes, batchMaxMessages: LIMITS.batchMaxMessages } });
    };
    /** the health messages in the queue, as the gateway would parse them */
    const queued = () => {
      queue.rewind();
      return queue
        .next(1000)
        .filter((m) => m.dataType === 'health')
        .map((m) => parseUplinkFrame(JSON.stringify({ deviceId: 'd1', dataType: 'health', payload: JSON.parse(m.payloadJson) }))[0]!.payload as ReturnType<typeof HealthPayloadSchema.parse>);
    };
    return {
      work,
      certFile,
      queue,
      client,
      reporter,
      welcome,
      queued,
      async close() {
        await reporter.stop();
        client.stop();
        await queue.close();
        work.cleanup();
      },
    };
  }

  it('tells the backlog, the disk, the certificate, the version and the interval; what it cannot tell is absent', async () => {
    const t = await setup();
    try {
      const empty = await t.reporter.snapshot();
      assert.equal(empty.queueMessages, 0);
      assert.equal(empty.oldestUnsentAgeSeconds, undefined, 'nothing unsent: no age');
      assert.equal(empty.clockOffsetMs, undefined, 'no welcome yet: no clock offset');
      assert.equal(empty.local, undefined);

      await t.client.submitMany([
        { dataType: 'timeseries', payload: { v: 1 } },
        { dataType: 'timeseries', payload: { v: 2 } },
        { dataType: 'timeseries', payload: { v: 3 } },
      ]);
      const h = await t.reporter.snapshot();
      assert.equal(h.queueMessages, 3);
      assert.equal(h.queueBytes, t.queue.bytesOnDisk);
      assert.ok(h.queueBytes > 0);
      assert.equal(h.awaitingReceipt, 0);
      assert.equal(h.oldestUnsentAgeSeconds, 0);
      assert.ok(h.freeDiskBytes !== undefined && h.freeDiskBytes > 0);
      assert.ok(h.certDaysLeft === 9 || h.certDaysLeft === 10, `certDaysLeft ${h.certDaysLeft}`);
      assert.equal(h.version, (JSON.parse(readFileSync(join(import.meta.dirname, '..', '..', 'package.json'), 'utf8')) as { version: string }).version);
      assert.equal(h.intervalSeconds, 3600);
      assert.ok(h.uptimeSeconds >= 0);
      assert.equal(HealthPayloadSchema.safeParse(h).success, true);

      // The certificate is read again each time: a renewal shows, a missing file leaves the figure out.
      // A CA that outlives the renewed certificate: none is issued past its CA's end.
      const ca = createCertificateAuthority('Health Test CA', 500);
      writeFileSync(t.certFile, issueCertificate(ca, { commonName: 'd1', organizationalUnit: 'devices', role: 'client', validityDays: 400 }).certPem);
      const renewed = (await t.reporter.snapshot()).certDaysLeft;
      assert.ok(renewed === 399 || renewed === 400, `renewed ${renewed}`);
      writeFileSync(t.certFile, 'not a certificate');
      assert.equal((await t.reporter.snapshot()).certDaysLeft, undefined);
    } finally {
      await t.close();
    }
  });

  it("reports the clock offset from the gateway's welcome: positive when the gateway is ahead", async () => {
    const t = await setup();
    try {
      t.welcome(Date.now() + 5_000);
      const ahead = (await t.reporter.snapshot()).clockOffsetMs!;
      assert.ok(ahead >= 4_900 && ahead <= 5_000, `ahead ${ahead}`);
      t.welcome(Date.now() - 3_000);
      const behind = (await t.reporter.snapshot()).clockOffsetMs!;
      assert.ok(behind >= -3_100 && behind <= -3_000, `behind ${behind}`);
    } finally {
      await t.close();
    }
  });

  it('keeps local values until replaced, null removing one, and refuses more than allowed whole', async () => {
    const t = await setup();
    try {
      assert.deepEqual(t.reporter.setLocal({ battery: 87, signal_dbm: -71 }), { battery: 87, signal_dbm: -71 });
      assert.deepEqual(t.reporter.setLocal({ battery: 86 }), { battery: 86, signal_dbm: -71 }, 'a value replaced, the other kept');
      assert.deepEqual(t.reporter.setLocal({ signal_dbm: null }), { battery: 86 });
      assert.deepEqual((await t.reporter.snapshot()).local, { battery: 86 });
      assert.throws(() => t.reporter.setLocal(manyValues(LIMITS.healthLocalMaxValues)), (err: unknown) => isFieldStreamError(err) && err.code === 'FIELD_INPUT_INVALID');
      assert.deepEqual(t.reporter.localValues(), { battery: 86 }, 'a refused update changes nothing');
      assert.doesNotThrow(() => t.reporter.setLocal({ battery: null, ...manyValues(LIMITS.healthLocalMaxValues) }), 'room made in the same update');
    } finally {
      await t.close();
    }
  });

  it('queues the first message at the first welcome, not an interval later, then one per interval', async () => {
    const t = await setup({ intervalMs: 3_600_000 });
    try {
      t.reporter.setLocal({ battery: 87 });
      t.reporter.start();
      t.welcome(Date.now());
      await waitFor(() => t.queued().length === 1);
      const [h] = t.queued();
      assert.deepEqual(h!.local, { battery: 87 });
      assert.ok(h!.clockOffsetMs !== undefined, 'sent after the welcome: the offset is known');
      assert.equal(t.reporter.last?.payload.local?.battery, 87);
      t.welcome(Date.now());
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(t.queued().length, 1, 'a later welcome (a reconnect) sends none of its own');
    } finally {
      await t.close();
    }
  });

  it('without a welcome, queues the first after a short delay; each interval after it; none once stopped', async () => {
    const t = await setup({ intervalMs: 1_000 });
    try {
      t.reporter.start();
      await waitFor(() => t.queued().length >= 2, 4_000);
      const [first] = t.queued();
      assert.equal(first!.clockOffsetMs, undefined, 'no gateway yet: no offset');
      assert.equal(first!.intervalSeconds, 1);
      await t.reporter.stop();
      const n = t.queued().length;
      await new Promise((r) => setTimeout(r, 1_300));
      assert.equal(t.queued().length, n);
    } finally {
      await t.close();
    }
  });
});

async function waitFor(ok: () => boolean, timeoutMs = 3_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > end) assert.fail('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}
