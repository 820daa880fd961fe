import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { commandTopic, gatewayPresenceTopic, gatewayUplinkTopic, gatewaySecurityTopic, parseTopic, sharedFilter, statusTopic, topicMatches, TOPIC_FILTERS, uplinkTopic } from '../../shared/contract/topics.ts';
import { filterCovers, mayPublish, maySubscribe } from '../../shared/acl.ts';
import { DATA_TYPES } from '../../shared/contract/payloads.ts';
import { FieldStreamError } from '../../shared/errors.ts';

describe('MQTT topics', () => {
  it('round-trips every topic kind through build and parse', () => {
    for (const dataType of DATA_TYPES) {
      const t = uplinkTopic('sensor-001', dataType);
      assert.deepEqual(parseTopic(t), { kind: 'uplink', deviceId: 'sensor-001', dataType });
      assert.ok(topicMatches(TOPIC_FILTERS.uplink, t));
    }
    assert.deepEqual(parseTopic(commandTopic('a.b_c-1')), { kind: 'downlink', deviceId: 'a.b_c-1' });
    assert.deepEqual(parseTopic(statusTopic('x')), { kind: 'status', deviceId: 'x' });
    assert.ok(topicMatches(TOPIC_FILTERS.downlink, commandTopic('x')));
    assert.ok(topicMatches(TOPIC_FILTERS.status, statusTopic('x')));
    assert.deepEqual(parseTopic(gatewayPresenceTopic('gw-1')), { kind: 'gatewayPresence', gatewayId: 'gw-1' });
    assert.ok(topicMatches(TOPIC_FILTERS.gatewayPresence, gatewayPresenceTopic('gw-1')));
    assert.throws(() => gatewayPresenceTopic('a/b'), FieldStreamError);
    assert.deepEqual(parseTopic(gatewaySecurityTopic('gw-1')), { kind: 'gatewaySecurity', gatewayId: 'gw-1' });
    assert.ok(topicMatches(TOPIC_FILTERS.gatewaySecurity, gatewaySecurityTopic('gw-1')));
    assert.deepEqual(parseTopic(gatewayUplinkTopic('gw-1')), { kind: 'gatewayUplink', gatewayId: 'gw-1', dataType: 'timeseries' });
    assert.ok(topicMatches(TOPIC_FILTERS.gatewayUplink, gatewayUplinkTopic('gw-1')));
    assert.throws(() => gatewayUplinkTopic('a/b'), FieldStreamError);
  });

  it('refuses device ids that would break the topic tree', () => {
    for (const id of ['a/b', '+', '#', '', '../x', 'a b']) {
      assert.throws(() => uplinkTopic(id, 'timeseries'), FieldStreamError);
    }
  });

  it('refuses topics that are not ours', () => {
    for (const t of ['x/y', 'fieldstream/v1/gateways/g/up/event', 'fieldstream/v1/gateways/g/up', 'fieldstream/v1/gateways/g/up/timeseries/x', 'fieldstream/v1/devices/d/up/video', 'fieldstream/v1/devices/d/up/timeseries/extra', 'fieldstream/v1/devices/+/status', 'fieldstream/v1/devices/d/down/other']) {
      assert.throws(() => parseTopic(t), (err: unknown) => err instanceof FieldStreamError && err.code === 'CONTRACT_INVALID_TOPIC');
    }
  });

  it('builds shared subscriptions', () => {
    assert.equal(sharedFilter('distributors', TOPIC_FILTERS.uplink), `$share/distributors/${TOPIC_FILTERS.uplink}`);
    assert.throws(() => sharedFilter('a/b', 'x'));
  });
});

describe('broker access policy', () => {
  it('lets the gateway write only uplink and status, and read only commands', () => {
    assert.ok(mayPublish('gateway', uplinkTopic('d', 'file')));
    assert.ok(mayPublish('gateway', statusTopic('d')));
    assert.ok(!mayPublish('gateway', commandTopic('d')));
    assert.ok(!mayPublish('gateway', 'other/topic'));
    assert.ok(mayPublish('gateway', gatewayPresenceTopic('gw-1')), 'its own presence (and its will)');
    assert.ok(mayPublish('gateway', gatewaySecurityTopic('gw-1')), 'its security reports');
    assert.ok(mayPublish('gateway', gatewayUplinkTopic('gw-1')), 'its envelopes of readings');
    assert.ok(!mayPublish('gateway', 'fieldstream/v1/gateways/gw-1/up/event'), 'readings only');
    assert.ok(maySubscribe('distributor', TOPIC_FILTERS.gatewayUplink));
    assert.ok(maySubscribe('bridge', TOPIC_FILTERS.gatewayUplink));
    assert.ok(!maySubscribe('gateway', TOPIC_FILTERS.gatewayUplink));
    assert.ok(!maySubscribe('console', TOPIC_FILTERS.gatewayUplink), 'the console reads the stored feed only');
    assert.ok(maySubscribe('distributor', TOPIC_FILTERS.gatewaySecurity));
    assert.ok(!mayPublish('distributor', gatewayPresenceTopic('gw-1')));
    assert.ok(maySubscribe('distributor', TOPIC_FILTERS.gatewayPresence));
    assert.ok(!maySubscribe('console', TOPIC_FILTERS.gatewayPresence), 'the console reads the stored feed only');
    assert.ok(maySubscribe('gateway', commandTopic('d')));
    assert.ok(!maySubscribe('gateway', TOPIC_FILTERS.uplink));
    assert.ok(!maySubscribe('gateway', '#'));
  });

  it('lets the distributor read (also through a shared subscription), and write no device topic but to clear a retained message', () => {
    assert.ok(maySubscribe('distributor', sharedFilter('g', TOPIC_FILTERS.uplink)));
    assert.ok(maySubscribe('distributor', TOPIC_FILTERS.status));
    assert.ok(!mayPublish('distributor', uplinkTopic('d', 'event')));
    assert.ok(mayPublish('distributor', statusTopic('d'), { payload: Buffer.alloc(0), retain: true }), 'an empty retained presence: a clear');
    assert.ok(!mayPublish('distributor', statusTopic('d')), 'no presence of its own making');
    assert.ok(!mayPublish('distributor', statusTopic('d'), { payload: '{"v":1}', retain: true }));
    assert.ok(!mayPublish('distributor', statusTopic('d'), { payload: Buffer.alloc(0), retain: false }), 'an empty message not retained clears nothing');
    assert.ok(!mayPublish('command-api', statusTopic('d'), { payload: Buffer.alloc(0), retain: true }), 'a role without clears clears nothing');
    assert.ok(!maySubscribe('distributor', TOPIC_FILTERS.downlink));
    // It clears any retained message the DMZ left (retained-sweeper.ts), "$" ones aside.
    assert.ok(filterCovers('#', 'a/b') && !filterCovers('#', '$SYS/broker/uptime') && !filterCovers('+/#', '$SYS/x'), '# matches no "$" topic (MQTT 5 §4.7.2)');
    // Never a command topic, not even to clear: it holds the device keys commands are authenticated
    // with, and a Mosquitto ACL grants a topic, not a payload (internal-network/mosquitto/acl).
    assert.ok(!mayPublish('distributor', commandTopic('d'), { payload: Buffer.alloc(0), retain: true }), 'no write on a command topic');
    assert.ok(!mayPublish('distributor', commandTopic('d'), { payload: '{"v":1}', retain: true }), 'no command of its own making');
    assert.ok(!maySubscribe('distributor', '#') && !maySubscribe('distributor', 'fieldstream/v1/devices/+/down/+'), 'no subscription reaching the commands');
    assert.ok(!mayPublish('distributor', '$SYS/broker/connection/x/state', { payload: Buffer.alloc(0), retain: true }));
  });

  it('denies unknown identities, such as a device certificate, everything', () => {
    assert.ok(!mayPublish('sensor-001', uplinkTopic('sensor-001', 'timeseries')));
    assert.ok(!maySubscribe('sensor-001', commandTopic('sensor-001')));
  });

  it('compares filters correctly', () => {
    assert.ok(filterCovers('a/+/c', 'a/b/c'));
    assert.ok(filterCovers('a/#', 'a/b/c'));
    assert.ok(!filterCovers('a/+/c', 'a/#'));
    assert.ok(!filterCovers('a/+', 'a/b/c'));
    assert.ok(!filterCovers('a/b', 'a/+'));
    assert.ok(filterCovers('a/+', 'a/+'));
  });
});
