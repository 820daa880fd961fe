import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadConsoleConfig } from '../../internal-network/console/config.ts';
import { manageStatus } from '../../internal-network/console/manage/status.ts';
import { topicStructure, validateTopic } from '../../internal-network/console/manage/topics.ts';
import type { PipelineView } from '../../internal-network/console/pipeline/pipeline-view.ts';
import { mayPublish } from '../../shared/acl.ts';
import { DATA_TYPES } from '../../shared/contract/payloads.ts';
import { answerTestCommand } from '../../shared/contract/test-command.ts';
import { commandTopic, gatewayPresenceTopic, gatewaySecurityTopic, parseTopic, receiptTopic, statusTopic, uplinkTopic } from '../../shared/contract/topics.ts';

/** The management API's parts that need no network: topics, the pipeline's state, the test event's answer. */

const view = (over: Partial<PipelineView> = {}): PipelineView => ({
  at: Date.UTC(2026, 0, 1),
  services: [],
  brokers: [],
  bridgeConnected: null,
  readingsPerSecond: null,
  writeFailures: null,
  deadLetters: null,
  feedDropped: null,
  ...over,
});

describe('management API: topics', () => {
  it("agrees with parseTopic on every topic the builders make, and names each kind's pattern", () => {
    const made = [
      ...DATA_TYPES.map((t) => [uplinkTopic('d-1', t), 'uplink'] as const),
      [commandTopic('d-1'), 'downlink'],
      [statusTopic('d-1'), 'status'],
      [receiptTopic('g-1'), 'receipts'],
      [gatewayPresenceTopic('g-1'), 'gatewayPresence'],
      [gatewaySecurityTopic('g-1'), 'gatewaySecurity'],
    ] as const;
    for (const [topic, kind] of made) {
      const v = validateTopic(topic);
      assert.equal(v.valid, true, topic);
      assert.equal(v.valid && v.kind, kind);
      assert.deepEqual({ ...parseTopic(topic) }, Object.fromEntries(Object.entries(v).filter(([k]) => !['valid', 'topic', 'pattern', 'direction'].includes(k))));
    }
  });

  it('says no exactly when parseTopic does (the stored feed aside), always with a reason', () => {
    const samples = ['', '#', 'a/b', 'fieldstream/v1/devices', 'fieldstream/v1/devices/', 'fieldstream/v1/devices/x/up', 'fieldstream/v1/devices/x/up/health/more', 'fieldstream/v1/devices/x/status/', 'fieldstream/v1/gateways/', 'fieldstream/v1/gateways/g/', 'fieldstream/v1/gateways/g/presence', 'fieldstream/v1/devices/x/down/command', '/fieldstream/v1/devices/x/status'];
    for (const t of samples) {
      let parsed = true;
      try {
        parseTopic(t);
      } catch {
        parsed = false;
      }
      const v = validateTopic(t);
      assert.equal(v.valid, parsed, t);
      if (!v.valid) assert.ok(v.reason.length > 0 && v.message.length > 0, t);
    }
  });

  it('lists as publishers of each pattern exactly the roles the ACL lets publish there', () => {
    const example: Record<string, string> = {
      uplink: uplinkTopic('d-1', 'timeseries'),
      downlink: commandTopic('d-1'),
      status: statusTopic('d-1'),
      receipts: receiptTopic('g-1'),
      gatewayPresence: gatewayPresenceTopic('g-1'),
      gatewaySecurity: gatewaySecurityTopic('g-1'),
      storedFeed: 'fieldstream/v1/internal/stored',
    };
    for (const t of topicStructure()) {
      const topic = example[t.kind] as string;
      for (const role of ['gateway', 'distributor', 'command-api', 'consumer', 'console', 'bridge', 'monitor']) {
        assert.equal(t.publishers.includes(role), mayPublish(role, topic), `${role} on ${t.kind}`);
      }
    }
  });
});

describe('management API: state of the pipeline', () => {
  it('reads brokers and the bridge from the exporter, distributors and the database from their /readyz', () => {
    const s = manageStatus(
      view({
        brokers: [
          { name: 'internal', up: true },
          { name: 'dmz', up: false },
        ],
        bridgeConnected: false,
        services: [
          { name: 'distributor', service: 'distributor', ready: true, detail: 'ready', failing: [] },
          { name: 'distributor-2', service: 'distributor', ready: false, detail: 'not ready: database failing', failing: ['database'] },
          { name: 'distributor-3', ready: false, detail: 'no answer (timeout)' },
          { name: 'broker-exporter', service: 'broker-exporter', ready: true, detail: 'ready', failing: [] },
        ],
      }),
      false,
    );
    assert.deepEqual(s.brokers, { internal: { up: true, source: 'broker-exporter' }, dmz: { up: false, source: 'broker-exporter' } });
    assert.deepEqual(s.bridge, { connected: false, source: 'broker-exporter' });
    assert.deepEqual(
      s.distributors.map((d) => [d.name, d.broker, d.database]),
      [
        ['distributor', true, true],
        ['distributor-2', true, false],
        ['distributor-3', null, null],
      ],
    );
    assert.equal(s.database.ok, false);
    assert.match(s.database.detail, /distributor-2/);
    assert.equal(s.at, '2026-01-01T00:00:00.000Z');
  });

  it('says unknown, never up, when nothing measured it', () => {
    const s = manageStatus(view({ at: 0 }), true);
    assert.deepEqual([s.at, s.brokers.internal, s.brokers.dmz, s.bridge.connected, s.database.ok], [null, { up: true, source: 'console' }, { up: null, source: 'none' }, null, null]);
  });
});

describe('management API: the test event on the device', () => {
  it('answers completed with when it was received, and refuses params that are not a test event', () => {
    assert.deepEqual(answerTestCommand({ requestedBy: 'admin-user', note: 'hi' }, 5, 9), { status: 'completed', result: { test: 'received', receivedAt: 9, issuedAt: 5, note: 'hi' } });
    assert.deepEqual(answerTestCommand(undefined, 5, 9), { status: 'completed', result: { test: 'received', receivedAt: 9, issuedAt: 5 } });
    assert.equal(answerTestCommand({ rm: '-rf' }, 5, 9).status, 'rejected');
  });

  it('is on by default and can be turned off (CONSOLE_MANAGE_API)', () => {
    const env = { COMMAND_API_TOKEN: 'x'.repeat(32) };
    assert.equal(loadConsoleConfig(env).CONSOLE_MANAGE_API, 'on');
    assert.equal(loadConsoleConfig({ ...env, CONSOLE_MANAGE_API: 'off' }).CONSOLE_MANAGE_API, 'off');
    assert.throws(() => loadConsoleConfig({ ...env, CONSOLE_MANAGE_API: 'maybe' }));
  });
});
