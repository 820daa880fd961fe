import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, readdirSync, readFileSync, existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connectAsync } from 'mqtt';
import { loadDistributorConfig } from '../../internal-network/distributor/config.ts';
import { startDistributor, type Distributor } from '../../internal-network/distributor/distributor.ts';
import type { RetainedSweepOptions } from '../../internal-network/distributor/retained-sweeper.ts';
import { commandTopic, gatewayPresenceTopic, gatewaySecurityTopic, gatewayUplinkTopic, receiptTopic, STORED_FEED_TOPIC, statusTopic, TOPIC_FILTERS, uplinkTopic } from '../../shared/contract/topics.ts';
import { createLogger } from '../../shared/logger.ts';
import { parseExposition, sumOf } from '../../shared/metrics/exposition.ts';
import { makeTestPki, serviceMqttSettings, tempDir } from '../helpers/pki.ts';
import { RogueDmzBroker, startBridgedInternalMosquitto } from '../helpers/rogue-dmz-broker.ts';
import { eventually } from '../helpers/ws-device.ts';

const REGISTERED = 'pump-7';
const REVOKED = 'valve-3';
const INVENTED = 300;
const presence = (state: 'online' | 'offline') => JSON.stringify({ v: 1, state, gatewayId: 'gw-1', at: Date.now() });

/** Settings of a distributor of a test on the rig: signatures required, its metrics served, no feed. */
type DistributorSettings = Record<string, string>;

/**
 * The real internal Mosquitto with its own configuration and ACL, bridged to a broker standing in for
 * a compromised DMZ one, with a PKI of `devices`, in a folder of its own; the distributor each test
 * starts on it, and what the internal broker holds retained, as a new subscriber is handed it.
 */
function bridgedToRogue(name: string, devices: string[]) {
  const pki = makeTestPki(devices);
  const work = tempDir(name);
  const rogue = new RogueDmzBroker(pki.paths.service('dmz/mosquitto'));
  let internal: Awaited<ReturnType<typeof startBridgedInternalMosquitto>> | undefined;
  let distributor: Distributor | undefined;
  const broker = () => internal ?? assert.fail('the internal broker is not started');
  return {
    pki,
    work,
    rogue,
    get internal() {
      return broker();
    },
    get distributor() {
      return distributor ?? assert.fail('no distributor started');
    },
    async start(): Promise<void> {
      await rogue.listen();
      internal = await startBridgedInternalMosquitto(join(import.meta.dirname, '..', '..'), pki, work.dir, `localhost:${rogue.port}`);
      await Promise.race([rogue.subscribed, new Promise<never>((_, no) => setTimeout(() => no(new Error('the bridge never subscribed')), 30_000))]);
    },
    /** A distributor on the internal broker; `settings` over the rig's own, `sweep` its sweeps of what is retained. */
    async startDistributor(settings: DistributorSettings, sweep: Partial<RetainedSweepOptions>): Promise<Distributor> {
      distributor = startDistributor(
        loadDistributorConfig({
          ...serviceMqttSettings(pki.paths, 'internal/distributor', broker().url),
          DISTRIBUTOR_REQUIRE_SIGNATURES: 'true',
          DISTRIBUTOR_DEVICE_KEYS_DIR: join(pki.dir, 'internal', 'device-keys'),
          DISTRIBUTOR_STATE_DIR: join(work.dir, 'state'),
          DISTRIBUTOR_METRICS_HOST: '127.0.0.1',
          DISTRIBUTOR_METRICS_PORT: '0',
          DISTRIBUTOR_FEED: 'off',
          TIMESERIES_LOCAL_PATH: join(work.dir, 'timeseries'),
          FILE_STORAGE_PATH: join(work.dir, 'files'),
          DEAD_LETTER_PATH: join(work.dir, 'dead-letter'),
          ...settings,
        }),
        createLogger('distributor', 'silent'),
        { processMetrics: false, retainedSweep: sweep },
      );
      await distributor.ready;
      return distributor;
    },
    /** The retained messages a new plain subscriber of `filter` is handed (topic → payload), once 500 ms pass without one. */
    async retained(filter: string = TOPIC_FILTERS.status, service = 'internal/command-api'): Promise<Map<string, string>> {
      const s = pki.paths.service(service);
      const c = await connectAsync(broker().url, { ca: readFileSync(pki.paths.publicCa), cert: readFileSync(s.cert), key: readFileSync(s.key), clientId: `retained-${Date.now()}`, protocolVersion: 5, reconnectPeriod: 0 });
      const got = new Map<string, string>();
      let last = Date.now();
      c.on('message', (topic, payload, packet) => {
        if (!packet.retain) return;
        got.set(topic, payload.toString());
        last = Date.now();
      });
      await c.subscribeAsync(filter, { qos: 1 });
      while (Date.now() - last < 500) await new Promise((r) => setTimeout(r, 100));
      await c.endAsync(true);
      return got;
    },
    async stop(): Promise<void> {
      await distributor?.close();
      await internal?.stop();
      await rogue.close();
      work.cleanup();
      pki.cleanup();
    },
  };
}

/**
 * Device presences are published retained (the gateway, on the DMZ broker) and the bridge carries
 * them in: the internal broker keeps the last of each device id for ever, in memory and in its
 * persistence file, and hands all of them to every new plain subscriber (the command API at each of
 * its reconnections). A compromised DMZ invents ids without end (SECURITY.md). The real internal
 * Mosquitto with its own configuration and ACL, bridged to a broker standing in for the DMZ one, and
 * the real distributor: what the internal broker holds retained, as a new subscriber (the command
 * API's identity) is handed it.
 */
describe('retained presences of invented device ids through a bridge to a compromised DMZ', () => {
  const rig = bridgedToRogue('retained-presence', [REGISTERED, REVOKED]);
  const { pki, rogue } = rig;
  const revokedFile = join(rig.work.dir, 'revoked-devices.txt');
  const deadLetters = join(rig.work.dir, 'dead-letter');
  const retained = rig.retained;
  const metric = async (name: string, labels: Record<string, string> = {}) => {
    const server = await rig.distributor.metricsServer;
    return sumOf(parseExposition(await (await fetch(`${server?.url}/metrics`)).text()), name, labels) ?? 0;
  };

  before(async () => {
    writeFileSync(revokedFile, `${REVOKED}\n`);
    await rig.start();
    // Sweeps of what is retained every 2 s rather than 5 minutes (TIMINGS.retainedSweepIntervalMs).
    await rig.startDistributor({ DISTRIBUTOR_CLIENT_ID: 'distributor-retained', DISTRIBUTOR_CONSUMERS: '2', DISTRIBUTOR_REVOKED_DEVICES_FILE: revokedFile }, { firstMs: 500, intervalMs: 2000 });
  });
  after(() => rig.stop());

  it("keeps the presences of registered and revoked devices, and none of invented ids'", async () => {
    rogue.inject(statusTopic(REGISTERED), presence('online'), true);
    rogue.inject(statusTopic(REVOKED), presence('offline'), true);
    for (let i = 0; i < INVENTED; i++) rogue.inject(statusTopic(`ghost-${i}`), presence('online'), true);
    const held = await eventually(
      async () => {
        const r = await retained();
        return r.size === 2 ? r : undefined;
      },
      30_000,
      'the invented presences cleared from the internal broker',
    ).catch(async () => (await retained()).size);
    assert.ok(held instanceof Map, `the internal broker holds ${String(held)} retained presences, ${INVENTED} of them of invented ids`);
    assert.deepEqual([...held.keys()].sort(), [statusTopic(REGISTERED), statusTopic(REVOKED)].sort());
    assert.equal(JSON.parse(held.get(statusTopic(REGISTERED)) ?? '{}').state, 'online', "the registered device's own presence, untouched");
    // Each clear counted: a sweep (below) may have found one retained before its clear landed, and cleared it again.
    assert.ok((await metric('fieldstream_distributor_presences_cleared_total')) >= INVENTED, 'each clear counted');
    // Its own clears (empty presences) come back to the distributor: neither refused nor dead letters.
    assert.deepEqual(existsSync(deadLetters) ? readdirSync(deadLetters) : [], []);
  });

  /**
   * Nothing else is retained on the internal broker (the gateways retain device presences only), but
   * the bridge brings in any topic the DMZ broker sends, retained too, held by no ACL, and Mosquitto
   * 2.0 keeps one per topic for ever: on the topics the distributor reads, on those other services
   * read, on topics no one reads. Every one of them cleared, the presences kept. Not the command
   * topics', which the distributor may not touch (the next test; SECURITY.md).
   */
  it('clears what the DMZ retained on any other topic, and keeps the presences', async () => {
    const read = [uplinkTopic(REGISTERED, 'timeseries'), uplinkTopic(REGISTERED, 'response'), gatewayUplinkTopic('gw-1'), gatewayPresenceTopic('gw-1'), gatewaySecurityTopic('gw-1')];
    const others = [receiptTopic('gw-1'), STORED_FEED_TOPIC, ...Array.from({ length: 200 }, (_, i) => `anything/${i}/at/all`)];
    const deadBefore = await metric('fieldstream_distributor_dead_letters_total');
    for (const topic of [...read, ...others]) rogue.inject(topic, `{"junk":"${'x'.repeat(200)}"}`, true);
    const held = await eventually(
      async () => {
        const r = await retained('#', 'internal/distributor');
        return r.size === 2 ? r : undefined;
      },
      30_000,
      'what the DMZ retained cleared from the internal broker',
    ).catch(async () => [...(await retained('#', 'internal/distributor')).keys()].filter((t) => !t.startsWith('fieldstream/v1/devices/') || !t.endsWith('/status')).slice(0, 10));
    assert.ok(held instanceof Map, `the internal broker still holds retained messages the DMZ left, e.g. ${JSON.stringify(held)}`);
    assert.deepEqual([...held.keys()].sort(), [statusTopic(REGISTERED), statusTopic(REVOKED)].sort(), 'the presences of the registered and the revoked device kept');
    assert.ok((await metric('fieldstream_distributor_retained_cleared_total')) >= read.length + others.length, 'each clear counted');
    // The junk on the topics it reads is handled as such (a dead letter each); its own clears coming back are nothing.
    await eventually(async () => ((await metric('fieldstream_distributor_dead_letters_total')) - deadBefore >= read.length ? true : undefined), 15_000, 'a dead letter for each junk message read');
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal((await metric('fieldstream_distributor_dead_letters_total')) - deadBefore, read.length);
  });

  /**
   * A retained message stays on the internal broker for ever, one per topic, and every new plain
   * subscriber of the presences (the command API, at each of its reconnections) is handed them all.
   * On a registered or revoked device's presence topic the DMZ may leave one of up to the broker's
   * packet limit (16 MiB): junk, or a valid presence padded with whitespace. Left because the id is
   * real, a fleet of 1,000 devices made 16 GB the broker held and sent again to each new subscriber.
   * Cleared, both: a gateway's presence is some 200 bytes, and the junk had replaced the device's own.
   */
  it("clears junk and oversized presences retained on registered and revoked devices' topics", async () => {
    const padded = `{"v":1,"state":"online","gatewayId":"gw-1","at":${Date.now()}${' '.repeat(1024 * 1024)}}`;
    rogue.inject(statusTopic(REGISTERED), 'x'.repeat(1024 * 1024), true);
    rogue.inject(statusTopic(REVOKED), padded, true);
    const held = await eventually(
      async () => {
        const r = await retained();
        return r.size === 0 ? r : undefined;
      },
      30_000,
      'the junk presences cleared from the internal broker',
    ).catch(async () => [...(await retained()).entries()].map(([t, p]) => `${t}: ${p.length} bytes`));
    assert.ok(held instanceof Map, `the internal broker still holds, retained: ${JSON.stringify(held)}`);
  });

  /**
   * A gateway of a later version may add a field to its presence, which this distributor's schema
   * does not know (it refuses the presence: a dead letter). That is the device's own presence all
   * the same, retained for the command API, which may know the field: it is not junk to clear.
   */
  it("keeps a registered device's retained presence carrying a field of a later version", async () => {
    const later = JSON.stringify({ v: 1, state: 'online', gatewayId: 'gw-1', at: Date.now(), laterField: 'x' });
    rogue.inject(statusTopic(REGISTERED), later, true);
    // a sweep every 2 s (above), and a clear of what arrives sent at once
    await new Promise((r) => setTimeout(r, 5000));
    assert.equal((await retained()).get(statusTopic(REGISTERED)), later, 'the presence still retained');
  });

  /**
   * The distributor holds the device keys the command API authenticates commands with (the same
   * registry: command-auth.ts), so its certificate must not reach the command topics, which the
   * bridges carry out to every DMZ server and so to the devices: a stolen distributor certificate and
   * keys would send commands that the devices run. Its clears and sweeps need no command topic. The
   * command API's identity, which does send commands, shows the bridge carrying them out.
   */
  it('lets no distributor certificate publish a command: nothing it sends on a command topic crosses the bridge', async () => {
    const as = async (service: string) => {
      const s = pki.paths.service(service);
      return connectAsync(rig.internal.url, { ca: readFileSync(pki.paths.publicCa), cert: readFileSync(s.cert), key: readFileSync(s.key), clientId: `cmd-${service.replace('/', '-')}`, protocolVersion: 5, reconnectPeriod: 0 });
    };
    const dist = await as('internal/distributor');
    const api = await as('internal/command-api');
    try {
      const command = '{"v":1,"commandId":"c-1","command":"close_valve"}';
      // Refused by the broker (PUBACK "not authorized") or dropped: either way not carried out.
      for (const [topic, retain] of [[commandTopic('by-distributor'), false], [commandTopic('by-distributor-retained'), true], [commandTopic('by-distributor-empty'), true]] as const) {
        await dist.publishAsync(topic, topic.endsWith('empty/down/command') ? '' : command, { qos: 1, retain }).catch(() => undefined);
      }
      await api.publishAsync(commandTopic('by-command-api'), command, { qos: 1 });
      await eventually(async () => rogue.received.includes(commandTopic('by-command-api')) || undefined, 10_000, "the command API's command carried out by the bridge");
      await new Promise((r) => setTimeout(r, 500));
      assert.deepEqual(rogue.received.filter((t) => t.includes('by-distributor')), [], 'commands published with the distributor certificate reached the DMZ');
    } finally {
      await dist.endAsync(true);
      await api.endAsync(true);
    }
  });
});

/**
 * A sweep hands at most `maxTopics` topics to be cleared (LIMITS.presenceClearsPendingMax: no more
 * can wait), but what the broker holds retained is mostly what may stay: a registered device's
 * presence each, as many as the fleet. Counted against that bound, a fleet of 50,000 devices took
 * every sweep's whole budget: the broker hands its retained messages over in the same order at each
 * sweep (its topic tree's), and what the DMZ left after them was never reached, never cleared. Here
 * with a bound of 10 and 20 registered devices, whose presences the broker holds before the junk.
 */
describe('a sweep of what is retained, with more registered presences than a sweep may clear', () => {
  const rig = bridgedToRogue('retained-sweep-bound', ['pump-7']);
  const { pki, rogue } = rig;
  const FLEET = 20;
  const JUNK = 5;
  const keysDir = join(rig.work.dir, 'device-keys');
  const retainedTopics = async (): Promise<string[]> => [...(await rig.retained('#', 'internal/distributor')).keys()];

  before(async () => {
    mkdirSync(keysDir, { recursive: true });
    const key = join(pki.dir, 'internal', 'device-keys', 'pump-7.key');
    for (let i = 0; i < FLEET; i++) copyFileSync(key, join(keysDir, `fleet-${i}.key`));
    await rig.start();
  });
  after(() => rig.stop());

  it('clears what the DMZ left however many presences may stay', async () => {
    // The fleet's presences first (the broker's tree holds them before the junk), then the junk, on topics no distributor reads.
    for (let i = 0; i < FLEET; i++) rogue.inject(statusTopic(`fleet-${i}`), presence('online'), true);
    await eventually(async () => ((await retainedTopics()).length === FLEET ? true : undefined), 15_000, 'the presences retained on the internal broker');
    for (let i = 0; i < JUNK; i++) rogue.inject(`anything/${i}/at/all`, '{"junk":true}', true);
    await eventually(async () => ((await retainedTopics()).length === FLEET + JUNK ? true : undefined), 15_000, 'the junk retained on the internal broker');
    await rig.startDistributor({ DISTRIBUTOR_CLIENT_ID: 'distributor-sweep-bound', DISTRIBUTOR_DEVICE_KEYS_DIR: keysDir }, { firstMs: 500, intervalMs: 1000, maxTopics: 10 });
    const left = await eventually(
      async () => {
        const topics = await retainedTopics();
        return topics.length === FLEET ? topics : undefined;
      },
      20_000,
      'the junk cleared',
    ).catch(async () => (await retainedTopics()).filter((t) => t.startsWith('anything/')));
    assert.equal(left.length, FLEET, `retained junk never cleared by the sweeps: ${JSON.stringify(left)}`);
    assert.ok(left.every((t) => t.endsWith('/status')), 'the registered devices\' presences kept');
  });
});

/**
 * A junk presence on a registered device's topic is cleared, but the clear waits its turn behind
 * others (LIMITS.presenceClearsPerSecond): a DMZ inventing ids keeps the queue seconds long. The
 * device's gateway publishing its genuine presence meanwhile replaced the junk on the broker; the
 * clear sent after that removed the genuine presence, which the command API learns from.
 */
describe('a genuine presence arriving while the clear of the junk it replaced waits', () => {
  const rig = bridgedToRogue('retained-presence-race', [REGISTERED]);
  const { rogue } = rig;
  const retainedOf = async (topic: string): Promise<string | undefined> => (await rig.retained(topic)).get(topic);

  before(async () => {
    await rig.start();
    // No sweep during the test: the clear of the junk as it arrives is what is looked at.
    await rig.startDistributor({ DISTRIBUTOR_CLIENT_ID: 'distributor-presence-race', DISTRIBUTOR_CONSUMERS: '1' }, { firstMs: 600_000, intervalMs: 600_000 });
  });
  after(() => rig.stop());

  it('keeps the genuine presence', async () => {
    for (let i = 0; i < 4000; i++) rogue.inject(statusTopic(`ghost-${i}`), presence('online'), true);
    rogue.inject(statusTopic(REGISTERED), 'junk', true);
    const genuine = presence('online');
    rogue.inject(statusTopic(REGISTERED), genuine, true);
    // Every clear sent (4,000 at 1,000 a second), and then some.
    await new Promise((r) => setTimeout(r, 8000));
    assert.equal(await retainedOf(statusTopic(REGISTERED)), genuine, "the device's genuine presence, retained after the junk, is still held");
  });
});
