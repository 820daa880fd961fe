import type { Logger } from '../../../shared/logger.ts';
import type { QueueEpochs } from './queue-epochs.ts';

/*
 * What a stopping queue leaves on disk for the next start (queue-epochs.ts): the clean-stop mark,
 * or, after a failed fsync, the word that the next start must take a new epoch. A disk that refuses
 * either is logged, not thrown: the stop goes on, and the next start errs on the safe side.
 */

/**
 * An fsync failed: the next start must take a new epoch (queue-epochs.ts). A disk that refuses
 * meta.json too leaves the boot on it: logged, and no clean mark is written either (close), so
 * only a start in this same boot of the machine could keep the epoch.
 */
export function newEpochAtNextStart(epochs: QueueEpochs, log: Logger): void {
  try {
    epochs.newEpochAtNextStart();
  } catch (err) {
    log.error(
      { code: 'FIELD_STATE_WRITE_FAILED', err: (err as Error).message },
      'an fsync failed and meta.json cannot be saved either: a start before the machine restarts keeps the epoch',
    );
  }
}

/** A clean stop, after the last record's fsync (never after a failed one). */
export function markCleanStop(epochs: QueueEpochs, log: Logger): void {
  try {
    epochs.markClean();
  } catch (err) {
    log.warn(
      { code: 'FIELD_STATE_WRITE_FAILED', err: (err as Error).message },
      'cannot write the clean-stop mark: the next start takes this stop for one that was not clean (a new epoch if the machine restarted meanwhile); nothing is lost',
    );
  }
}
