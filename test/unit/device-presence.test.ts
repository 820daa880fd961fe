import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FileStore } from '../../internal-network/distributor/file-store.ts';
import { MessageHandler } from '../../internal-network/distributor/message-handler.ts';
import type { StoredPoint } from '../../internal-network/distributor/points.ts';
import { ReplayWindows } from '../../internal-network/distributor/security/replay-window.ts';
import { MessageVerifier } from '../../internal-network/distributor/security/verifier.ts';
import { TABLES } from '../../internal-network/distributor/sinks/postgres/rows.ts';
import { DeviceKeyRegistry } from '../../internal-network/shared/device-keys.ts';
import type { StatusEnvelope } from '../../shared/contract/envelope.ts';
import { statusTopic } from '../../shared/contract/topics.ts';
import { DAY_MS } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';
import { tempDir } from '../helpers/pki.ts';

/**
 * A device's presence over a long connection: the gateway publishes it again every day (and after
 * reconnecting to its broker) with the connection's `since` (test/e2e/gateway-presence.test.ts), so
 * what reads presence within a window of time still finds the device; the distributor stores such a
 * reminder tagged apart from a connection or a disconnection.
 */
const log = createLogger('test', 'silent');

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
