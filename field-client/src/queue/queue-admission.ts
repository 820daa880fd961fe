import { FieldStreamError } from '../../../shared/errors.ts';
import { encodeBatch, type EncodedBatch } from './batch-encoder.ts';
import { makeRoom, type CapacityHost } from './capacity.ts';
import type { QueueEpochs } from './queue-epochs.ts';
import type { QueueItem, QueueOptions } from './queue-types.ts';

/** What deciding on an append needs of the queue. */
export interface AdmissionHost {
  readonly o: QueueOptions;
  readonly capacity: CapacityHost;
  /** refused: for want of room (FIELD_QUEUE_FULL); writeFailed: because the disk failed the queue (FIELD_QUEUE_WRITE_FAILED) */
  readonly stats: { dropped: number; refused: number; writeFailed: number };
  epochs(): QueueEpochs;
  /** bytes held elsewhere that count against maxBytes too (DurableQueue.shareCapacity) */
  sharedBytes(): number;
  bytesOnDisk(): number;
}

/**
 * Takes `items` for an append numbered from `nextSeq`, encoded (each payload serialised here,
 * once), or refuses them with a coded error, thrown: a drain-only queue takes nothing new until it
 * can save its epochs (queue-epochs.ts), and the batch must fit within maxBytes (capacity.ts).
 */
export function admit(host: AdmissionHost, items: readonly QueueItem[], nextSeq: number): EncodedBatch {
  const epochs = host.epochs();
  if (epochs.drainOnly) {
    const unsaved = epochs.retryUnsaved();
    if (unsaved) {
      host.stats.writeFailed += items.length;
      throw new FieldStreamError(
        'FIELD_QUEUE_WRITE_FAILED',
        `The queue is drain-only: it cannot save its epochs, which the ids of new messages depend on (${unsaved.message}); it sends what it holds and takes nothing new until it can; refused ${items.length} message(s).`,
        {},
        { cause: unsaved },
      );
    }
    host.o.log.info({ epoch: epochs.current }, 'the queue saved its epochs: it takes new data again');
  }
  const batch = encodeBatch(items, nextSeq, epochs.current, Date.now());
  let room: boolean;
  try {
    room = makeRoom(host.capacity, host.o, batch.block.length, host.stats);
  } catch (err) {
    // Deleting the oldest segment failed (drop-oldest): nothing of this batch was numbered nor written.
    host.stats.writeFailed += items.length;
    throw new FieldStreamError('FIELD_QUEUE_WRITE_FAILED', `The queue could not delete its oldest segment to make room: ${(err as Error).message}`, {}, { cause: err });
  }
  if (!room) {
    host.stats.refused += items.length;
    const shared = host.sharedBytes();
    const besides = shared > 0 ? ` (and ${shared} bytes of files waiting to be sent or being taken, and of refused messages set aside)` : '';
    throw new FieldStreamError('FIELD_QUEUE_FULL', `The queue holds ${host.bytesOnDisk()} bytes${besides} of at most ${host.o.maxBytes}; refused ${items.length} message(s).`, {
      refused: host.stats.refused,
    });
  }
  return batch;
}
