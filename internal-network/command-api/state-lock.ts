import { dirname, resolve } from 'node:path';
import { makeDirDurablySync } from '../../shared/durable-fs.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { TIMINGS } from '../../shared/limits.ts';
import { holderDetails, holderText, lockFor, type ProcessLock } from '../../shared/process-lock.ts';

/**
 * COMMAND_STATE_PATH for one command API at a time (shared/process-lock.ts), its lock the file
 * beside it, `commands.jsonl.lock`. Two on one journal (`npm start` and `npm run command-api` in one
 * checkout share `./data/commands.jsonl`; a second container on one volume) each hold the commands
 * they read at their start and append their own: a compaction by one, which rewrites the journal
 * from what it holds, wiped the commands the other had accepted (202) since, and neither sent the
 * other's. The second is refused with API_STATE_IN_USE, naming the first; one whose lock another took
 * over (it was stalled past TIMINGS.dataLockExpiryMs) is told so through `onLost`, and stops.
 */
export function lockCommandState(
  statePath: string,
  onLost: (err: FieldStreamError) => void,
  /** what the refused taker is told to do (fieldstream-admin restore: stop the command API first) */
  advice = 'Stop it, or give this one a COMMAND_STATE_PATH of its own.',
): Promise<ProcessLock> {
  const path = `${resolve(statePath)}.lock`;
  makeDirDurablySync(dirname(path));
  return lockFor(
    path,
    {
      inUse: (lock) =>
        new FieldStreamError(
          'API_STATE_IN_USE',
          `COMMAND_STATE_PATH=${statePath} is in use by another command API (${holderText(lock, 'command API')}): two on one journal would each rewrite it without the commands the other accepted. ${advice}`,
          holderDetails(path, lock),
        ),
      lost: () => new FieldStreamError('API_STATE_IN_USE', `${path} was taken over by another command API while this one was stalled past ${TIMINGS.dataLockExpiryMs} ms; this one stops.`, { path }),
    },
    onLost,
  );
}
