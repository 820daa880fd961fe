import { commitStatus, type CommitReceipts } from './commit-receipts.ts';
import type { CommandHandlers } from './commands.ts';
import type { FileOutbox } from './files/file-outbox.ts';
import type { FileTransfers } from './files/transfers.ts';
import type { DurableQueue } from './queue/durable-queue.ts';
import type { SendPacing } from './send-pacing.ts';
import type { SetAside } from './set-aside.ts';

/** What the field client's status is made of (its parts, read when asked; nothing is kept). */
export interface StatusSources {
  deviceId: string;
  connected: boolean;
  /** the gateway that welcomed the current connection */
  gatewayId: string | undefined;
  stats: { sent: number; refusedByGateway: number; lastAckAt: number; connectedSince: number };
  queue: DurableQueue;
  outbox: FileOutbox;
  receipts: CommitReceipts | undefined;
  rejected: SetAside;
  transfers: FileTransfers;
  commands: CommandHandlers;
  pacing: SendPacing;
}

const iso = (ms: number | undefined) => (ms ? new Date(ms).toISOString() : null);

/** The field client's status, for the local status endpoint and `fieldstream doctor`. */
export function clientStatus(s: StatusSources) {
  const { queue, commands } = s;
  return {
    deviceId: s.deviceId,
    connection: {
      state: s.connected ? ('connected' as const) : ('disconnected' as const),
      since: iso(s.stats.connectedSince),
      gatewayId: s.gatewayId ?? null,
      /** bytes per second the link carried, measured from the gateway's answers (null: not yet) */
      linkBytesPerSecond: s.pacing.bytesPerSecond ?? null,
      /** bytes handed to the connection and not yet answered, and the most that may be (send-pacing.ts) */
      unansweredBytes: s.pacing.outstanding,
      sendAheadBytes: Math.round(s.pacing.budget),
    },
    queue: {
      depth: queue.depth,
      bytes: queue.bytesOnDisk,
      outboxBytes: s.outbox.bytes(),
      oldestUnsentAt: iso(queue.oldestUnacked()),
      dropped: queue.stats.dropped,
      refused: queue.stats.refused,
      corruptTails: queue.stats.corruptTails,
      corruptRecords: queue.stats.corruptRecords,
    },
    commit: commitStatus(s.receipts, queue),
    lastAckAt: iso(s.stats.lastAckAt),
    sent: s.stats.sent,
    refusedByGateway: s.stats.refusedByGateway,
    /** what is set aside, counted against FIELD_QUEUE_MAX_BYTES; held: refused messages waiting in the queue for room */
    rejected: s.rejected.status(),
    filesInTransfer: s.transfers.size,
    /** running: handlers running now; waiting: commands waiting for one of those to end (FIELD_COMMANDS_CONCURRENCY) */
    commands: { run: commands.stats.run, refused: commands.stats.refused, refusedByCode: { ...commands.stats.refusedByCode }, unanswered: commands.stats.unanswered, running: commands.runningNow, waiting: commands.waitingNow },
  };
}
export type ClientStatus = ReturnType<typeof clientStatus>;
