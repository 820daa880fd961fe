import { join } from 'node:path';
import { CommandHandlers } from '../../field-client/src/commands.ts';
import { FieldClient } from '../../field-client/src/field-client.ts';
import { FileOutbox } from '../../field-client/src/files/file-outbox.ts';
import { GatewayConnection } from '../../field-client/src/gateway-connection.ts';
import { DurableQueue, type FullPolicy, type SyncPolicy } from '../../field-client/src/queue/durable-queue.ts';
import { LogCapture } from './embedded.ts';

/**
 * A field client with a real queue and outbox in `dir`, and no gateway (it dials a port nothing
 * listens on: nothing is sent): what the local inputs feed, for their tests. `close` stops both.
 */
export async function localDevice(dir: string, maxBytes = 64 * 1024 * 1024, sync: SyncPolicy = { mode: 'always' }, fullPolicy: FullPolicy = 'reject') {
  const logs = new LogCapture();
  const queue = await DurableQueue.open({ dir: join(dir, 'queue'), maxBytes, segmentBytes: 256 * 1024, fullPolicy, sync, log: logs.logger });
  const outbox = new FileOutbox(dir, 64 * 1024);
  const connection = new GatewayConnection({ url: 'wss://127.0.0.1:9/ws', tls: { ca: '', cert: '', key: '' }, reconnectInitialMs: 100, reconnectMaxMs: 100, idleTimeoutMs: 1000 }, logs.logger);
  const commands = new CommandHandlers({ deviceId: 'd1', key: undefined, allowUnsigned: false, maxAgeMs: 1000, skewMs: 1000 });
  const client = new FieldClient({ deviceId: 'd1', batchMax: 100, window: 100, fileWindow: 1, maxBytes, dataDir: dir }, queue, outbox, connection, commands, logs.logger);
  const close = async () => {
    client.stop();
    await queue.close();
  };
  return { dir, logs, queue, outbox, connection, client, close };
}

/** A queue slow to take what is submitted (an fsync on an SD card): each submission waits `ms` before it is queued. */
export function slowQueue(client: Pick<FieldClient, 'submitMany'>, ms = 300): void {
  const submitMany = client.submitMany.bind(client);
  client.submitMany = async (items) => {
    await new Promise((r) => setTimeout(r, ms));
    return submitMany(items);
  };
}
