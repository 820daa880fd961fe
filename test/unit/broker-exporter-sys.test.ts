import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { describe, it } from 'node:test';
import type { MqttClient } from 'mqtt';
import { BrokerWatch, SYS } from '../../internal-network/broker-exporter/exporter.ts';
import { LIMITS } from '../../shared/limits.ts';

/**
 * The broker exporter's reading of $SYS: a bridge the internal broker runs brings in any topic the
 * DMZ broker sends, $SYS ones included, and no ACL applies to it (SECURITY.md). What it keeps must
 * not grow with what such a broker invents.
 */
describe('the broker exporter keeps only the $SYS it reads', () => {
  const watch = () => {
    const client = Object.assign(new EventEmitter(), { connected: true });
    return { client, w: new BrokerWatch('internal', client as unknown as MqttClient, 60_000) };
  };

  it('keeps the values it reports, and no other $SYS topic however many arrive', () => {
    const { client, w } = watch();
    client.emit('message', SYS.clientsConnected, Buffer.from('3'));
    for (let i = 0; i < 10_000; i++) client.emit('message', `$SYS/invented/${i}`, Buffer.from('1'));
    assert.deepEqual([...w.values], [[SYS.clientsConnected, 3]]);
  });

  it(`keeps at most ${LIMITS.exporterBridgesMax} bridge states, and goes on updating those it has`, () => {
    const { client, w } = watch();
    client.emit('message', '$SYS/broker/connection/fieldstream-bridge/state', Buffer.from('1'));
    for (let i = 0; i < LIMITS.exporterBridgesMax * 4; i++) client.emit('message', `$SYS/broker/connection/invented-${i}/state`, Buffer.from('1'));
    assert.equal(w.bridges.size, LIMITS.exporterBridgesMax);
    client.emit('message', '$SYS/broker/connection/fieldstream-bridge/state', Buffer.from('0'));
    assert.equal(w.bridges.get('fieldstream-bridge'), 0);
  });
});
