import { join, resolve } from 'node:path';
import { FieldStreamError } from '../../shared/errors.ts';
import { TIMINGS } from '../../shared/limits.ts';
import { holderDetails, holderText, lockFor, type ProcessLock } from '../../shared/process-lock.ts';

/** The lock's file in FIELD_DATA_DIR. */
export const DATA_DIR_LOCK = 'field-client.lock';

export type DataDirLock = ProcessLock;

/**
 * FIELD_DATA_DIR for one field client at a time (shared/process-lock.ts). Two on one folder (a
 * second `npm start` with other ports, the device's compose service and `npm run field-client` by
 * hand) appended to one queue and each deleted segments the other was still sending from: what the
 * producers were answered 202 for was lost, and the outbox's files sent twice or not at all. The
 * second is refused with FIELD_DATA_DIR_IN_USE, naming the first; a client whose lock another took
 * over (it was stalled past TIMINGS.dataLockExpiryMs) is told so through `onLost`, and stops.
 */
export function lockDataDir(dir: string, onLost: (err: FieldStreamError) => void, o: { onTakeOver?: (at: 'stale' | 'marked') => void } = {}): Promise<DataDirLock> {
  const path = resolve(dir, DATA_DIR_LOCK);
  return lockFor(
    path,
    {
      inUse: (lock) =>
        new FieldStreamError(
          'FIELD_DATA_DIR_IN_USE',
          `FIELD_DATA_DIR=${dir} is in use by another field client (${holderText(lock, 'field client')}): two on one folder would delete what the other still sends. Stop it, or give this one a FIELD_DATA_DIR of its own.`,
          holderDetails(join(dir, DATA_DIR_LOCK), lock),
        ),
      lost: () => new FieldStreamError('FIELD_DATA_DIR_IN_USE', `${path} was taken over by another field client while this one was stalled past ${TIMINGS.dataLockExpiryMs} ms; this one stops.`, { path }),
    },
    onLost,
    o,
  );
}
