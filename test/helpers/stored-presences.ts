import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FileStore } from '../../internal-network/distributor/file-store.ts';
import { MessageHandler } from '../../internal-network/distributor/message-handler.ts';
import { DistributorMetrics } from '../../internal-network/distributor/metrics.ts';
import type { StoredPoint } from '../../internal-network/distributor/points.ts';
import { ReplayWindows } from '../../internal-network/distributor/security/replay-window.ts';
import { MessageVerifier } from '../../internal-network/distributor/security/verifier.ts';
import { DeviceKeyRegistry } from '../../internal-network/shared/device-keys.ts';
import type { StatusEnvelope } from '../../shared/contract/envelope.ts';
import { statusTopic } from '../../shared/contract/topics.ts';
import { createLogger } from '../../shared/logger.ts';

/** device_status points as the distributor's handler stores these presences (newest last). */
export async function storedPresences(dir: string, presences: ReadonlyArray<[string, Omit<StatusEnvelope, 'v' | 'gatewayId'>]>): Promise<StoredPoint[]> {
  mkdirSync(join(dir, 'keys'), { recursive: true });
  // Registered devices: a presence of an id neither registered nor revoked is counted, not stored.
  for (const [device] of presences) writeFileSync(join(dir, 'keys', `${device}.key`), `${'ab'.repeat(32)}\n`);
  writeFileSync(join(dir, 'revoked.txt'), '');
  const written: StoredPoint[] = [];
  const sink = { description: 'memory', write: async (p: readonly StoredPoint[]) => void written.push(...p), close: async () => {} };
  const log = createLogger('test', 'silent');
  const verifier = new MessageVerifier(new DeviceKeyRegistry(join(dir, 'keys'), join(dir, 'revoked.txt')), new ReplayWindows(join(dir, 'replay')), { requireSignatures: true, freshnessMs: 30_000, maxDelayMs: 3_600_000 }, log);
  const handler = new MessageHandler(sink, new FileStore(join(dir, 'files')), verifier, new DistributorMetrics());
  for (const [device, status] of presences) await handler.handle(statusTopic(device), Buffer.from(JSON.stringify({ v: 1, gatewayId: 'gw-1', ...status })));
  assert.equal(written.length, presences.length);
  return written;
}
