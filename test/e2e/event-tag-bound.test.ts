import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connectAsync, type MqttClient } from 'mqtt';
import { ENVELOPE_VERSION, type EnvelopeOf } from '../../shared/contract/envelope.ts';
import { uplinkTopic } from '../../shared/contract/topics.ts';
import { LIMITS } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';
import { parseSigningKey, signGroup } from '../../shared/security/message-auth.ts';
import { loadDistributorConfig } from '../../internal-network/distributor/config.ts';
import { startDistributor, type Distributor } from '../../internal-network/distributor/distributor.ts';
import { OVERFLOW_TAG_VALUE } from '../../internal-network/distributor/security/tag-admission.ts';
import { InfluxV1 } from '../../scripts/local-stack/databases.ts';
import type { ManagedProcess } from '../../scripts/local-stack/process.ts';
import { makeTestPki, serviceMqttSettings, tempDir } from '../helpers/pki.ts';
import { startMosquitto } from '../helpers/sparkplug.ts';
import { eventually } from '../helpers/ws-device.ts';

const HOSTILE = 'sensor-hostile';
const OTHER = 'sensor-other';
const DB = 'fieldstream';
/** event types the hostile device invents: twice its bound */
const INVENTED = 2 * LIMITS.eventTypesPerDevice;
/** InfluxDB's max-values-per-tag, lowered so that the invented types reach it (100,000 by default) */
const MAX_VALUES_PER_TAG = LIMITS.eventTypesPerDevice + INVENTED / 4;

/**
 * A registered device chooses its events' types and severities, which InfluxDB stores as tag
 * values; past max-values-per-tag InfluxDB refuses every new value, of every device. A real
 * InfluxDB with that limit lowered, a real Mosquitto and the distributor: the hostile device's
 * invented types stay within its bound, each event stored with its real type, and another device's
 * new type is still stored under its own tag.
 */
describe('event types a device invents, on a real InfluxDB', () => {
  const pki = makeTestPki([HOSTILE, OTHER]);
  const work = tempDir('event-tag-bound');
  const deadLetters = join(work.dir, 'dead-letters');
  let influx: InfluxV1;
  let broker: { url: string; tlsUrl?: string; process: ManagedProcess };
  let distributor: Distributor;
  let dmz: MqttClient;

  before(async () => {
    const server = pki.paths.service('internal/mosquitto');
    [influx, broker] = await Promise.all([
      InfluxV1.start(join(work.dir, 'influxdb'), DB, { maxValuesPerTag: MAX_VALUES_PER_TAG }),
      startMosquitto(work.dir, { ca: pki.paths.publicCa, cert: server.cert, key: server.key }),
    ]);
    distributor = startDistributor(
      loadDistributorConfig({
        ...serviceMqttSettings(pki.paths, 'internal/distributor', broker.tlsUrl),
        MQTT_PROTOCOL_VERSION: '5',
        DISTRIBUTOR_CLIENT_ID: 'distributor-event-tags',
        DISTRIBUTOR_REQUIRE_SIGNATURES: 'true',
        DISTRIBUTOR_DEVICE_KEYS_DIR: join(pki.dir, 'internal', 'device-keys'),
        DISTRIBUTOR_STATE_DIR: join(work.dir, 'state'),
        // Served: the metrics count only then.
        DISTRIBUTOR_METRICS_HOST: '127.0.0.1',
        DISTRIBUTOR_METRICS_PORT: '0',
        DISTRIBUTOR_FEED: 'off',
        DISTRIBUTOR_RETRY_MAX_MS: '1000',
        INFLUXDB_URL: influx.url,
        INFLUXDB_DATABASE: DB,
        INFLUXDB_USERNAME: influx.user,
        INFLUXDB_PASSWORD: influx.password,
        FILE_STORAGE_PATH: join(work.dir, 'files'),
        DEAD_LETTER_PATH: deadLetters,
      }),
      createLogger('distributor', 'silent'),
      { processMetrics: false },
    );
    await distributor.ready;
    dmz = await connectAsync(broker.url, { protocolVersion: 5, clientId: 'compromised-dmz' });
  });
  after(async () => {
    await dmz?.endAsync();
    await distributor?.close();
    await broker?.process.stop();
    await influx?.process.stop();
    work.cleanup();
    pki.cleanup();
  });

  type Event = EnvelopeOf<'event'>['messages'][number];
  let seq = 1;
  /** A signed group of `payloads` from `device`, published as its gateway would. */
  const send = async (device: string, payloads: Event['payload'][]) => {
    const key = parseSigningKey(readFileSync(pki.paths.device(device).signingKey, 'utf8')) as Buffer;
    const header = { deviceId: device, dataType: 'event' as const, epoch: 'tags-e2e', ts: Date.now() };
    const members = payloads.map((payload) => ({ seq: seq++, payload }));
    const auth = signGroup(key, header, members);
    const messages: Event[] = members.map((m, j) => ({ messageId: `${device}-${m.seq}`, ...(j === 0 ? { auth } : { seq: m.seq }), payload: m.payload }));
    const envelope: EnvelopeOf<'event'> = { v: ENVELOPE_VERSION, deviceId: device, gatewayId: 'gateway-1', receivedAt: Date.now(), dataType: 'event', messages };
    await dmz.publishAsync(uplinkTopic(device, 'event'), JSON.stringify(envelope), { qos: 1 });
  };
  const tagValues = async (key: string) => (await influx.rows(DB, `SHOW TAG VALUES FROM "events" WITH KEY = "${key}"`)).map((r) => String(r.value));
  const eventsOf = async (device: string) => influx.rows(DB, `SELECT "event_type", "event_type_value", "severity", "severity_value", "message" FROM "events" WHERE "device" = '${device}'`);

  it('keeps one device to its bound of types and severities, stores every event with its real type, and stores another device’s new type under its own tag', async () => {
    const types = Array.from({ length: INVENTED }, (_, i) => `invented.${String(i).padStart(4, '0')}`);
    const severityOf = (i: number) => `sev${i % (2 * LIMITS.severitiesPerDevice)}`;
    // In groups of 50: as a flood arrives, many envelopes.
    for (let i = 0; i < INVENTED; i += 50) await send(HOSTILE, types.slice(i, i + 50).map((eventType, j) => ({ eventType, severity: severityOf(i + j), message: `m${i + j}` })));
    const hostile = await eventually(async () => {
      const rows = await eventsOf(HOSTILE);
      return rows.length === INVENTED ? rows : undefined;
    }, 30_000, `the hostile device's ${INVENTED} events stored`);

    // Another device's new type: stored under its own tag, though the hostile device is past its bound
    // (without the bound, InfluxDB refuses it: its event_type holds more than max-values-per-tag values).
    await send(OTHER, [{ eventType: 'door_open', severity: 'warning', message: 'the door' }]);
    const other = await eventually(async () => {
      const rows = await eventsOf(OTHER);
      return rows.length === 1 ? rows : undefined;
    }, 20_000, "the other device's event stored");
    assert.equal(other[0]?.event_type, 'door_open');
    assert.equal(other[0]?.severity, 'warning');
    assert.equal(other[0]?.event_type_value, null);

    // Every event stored, with its real type and severity: the tag, or the field when the tag is ~other.
    const realType = (r: Record<string, unknown>) => String(r.event_type === OVERFLOW_TAG_VALUE ? r.event_type_value : r.event_type);
    const realSeverity = (r: Record<string, unknown>) => String(r.severity === OVERFLOW_TAG_VALUE ? r.severity_value : r.severity);
    assert.deepEqual(hostile.map(realType).sort(), types);
    const byMessage = new Map(hostile.map((r) => [String(r.message), r]));
    for (let i = 0; i < INVENTED; i++) {
      const r = byMessage.get(`m${i}`);
      assert.ok(r, `m${i} stored`);
      assert.equal(realType(r), types[i]);
      assert.equal(realSeverity(r), severityOf(i));
    }
    const tagged = new Set(hostile.map((r) => String(r.event_type)));
    assert.equal(tagged.size, LIMITS.eventTypesPerDevice + 1, 'its bound of types, and ~other');
    assert.ok(tagged.has(OVERFLOW_TAG_VALUE));
    assert.equal(new Set(hostile.map((r) => String(r.severity))).size, LIMITS.severitiesPerDevice + 1, 'its bound of severities, and ~other');

    // What InfluxDB indexes stays bounded: the hostile device's admitted values, ~other, the other's.
    const eventTypes = await tagValues('event_type');
    assert.equal(eventTypes.length, LIMITS.eventTypesPerDevice + 2, JSON.stringify(eventTypes.length));
    assert.ok(eventTypes.includes('door_open'));
    assert.equal((await tagValues('severity')).length, LIMITS.severitiesPerDevice + 2);
    const series = await influx.rows(DB, 'SHOW SERIES FROM "events"');
    assert.ok(series.length <= (LIMITS.eventTypesPerDevice + 1) * (LIMITS.severitiesPerDevice + 1) + 1, `${series.length} series`);

    // Counted, and nothing dead-lettered.
    const overflow = (await distributor.metrics.eventTagsOverflow.get()).values;
    const counted = (tag: string) => overflow.find((v) => v.labels.tag === tag)?.value ?? 0;
    assert.equal(counted('event_type'), INVENTED - LIMITS.eventTypesPerDevice);
    assert.ok(counted('severity') > 0);
    assert.deepEqual(existsSync(deadLetters) ? readdirSync(deadLetters) : [], []);
  });
});
