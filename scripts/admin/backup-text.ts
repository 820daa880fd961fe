import type { Manifest } from './backup-manifest.ts';
import { COMPOSE_COMMAND_STATE, type AdminPaths } from './paths.ts';

/* What `fieldstream-admin backup` and `restore` tell the operator beside their summary (run.ts). */

/** Whether the archive holds the CA's key: a file of the kind "ca" may be its certificate alone (an internal server's certs/ca.crt). */
export const hasCaKey = (m: Manifest) => m.files.some((f) => f.root === 'certs' && f.path === 'ca/ca.key');
export const noCaKey = (m: Manifest) =>
  m.contents.ca && !hasCaKey(m) ? 'It holds no CA key (ca/ca.key is not in this certificates folder): back up the machine that keeps the CA as well.\n' : '';

/** What to start after a restore; the console reads the stored-feed key only at its start. */
export const restartNote = (storedFeedKey: boolean): string =>
  `Start (or restart) the distributor${storedFeedKey ? ', the command API and the console' : ' and the command API'} now: they read their state at start${storedFeedKey ? ' (the console its stored-feed key)' : ''}.`;

const COMPOSE_HINT = `docker-compose.internal.yml keeps it in ${COMPOSE_COMMAND_STATE}`;

/**
 * What a backup without replay windows says. A distributor that has accepted a message has them,
 * so their absence most often means the state folder is elsewhere (npm run stack keeps it under
 * STACK_DIR): restored without them, the distributor would take once more any message replayed
 * from the last DISTRIBUTOR_MAX_DELAY_S.
 */
export function noReplayWindows(paths: AdminPaths): string {
  return `No replay windows in ${paths.stateDir}, so the archive holds none: restored from it, the
distributor would take once more any message a compromised DMZ replays from before the restore
(up to DISTRIBUTOR_MAX_DELAY_S old). If the distributor keeps its state elsewhere (npm run stack:
data/stack/distributor-state), back up again with --state-dir DIR or DISTRIBUTOR_STATE_DIR=DIR.
`;
}

/** What a backup without a command journal says: where it looked, and how to point it elsewhere. */
export function noJournal(paths: AdminPaths): string {
  const how =
    paths.commandStateFrom === 'option' ? 'given by --command-state'
    : paths.commandStateFrom === 'setting' ? 'COMMAND_STATE_PATH'
    : paths.commandStateFrom === 'compose' ? `the default of docker-compose.internal.yml`
    : 'the default, as npm start keeps it';
  return `No command journal at ${paths.commandState} (${how}), so the archive holds none:
no command history, no commands waiting for their device. If the command API keeps its journal
elsewhere (${COMPOSE_HINT}), back up again with --command-state FILE or COMMAND_STATE_PATH=FILE.
`;
}

/** What a restore into the default journal path says: a compose host reads another one. */
export function journalDefaultNote(paths: AdminPaths): string {
  return `The command journal went to ${paths.commandState}, where npm start's command API reads it. ${COMPOSE_HINT}:
on such a host, restore again with --command-state ${COMPOSE_COMMAND_STATE} (the other files are in place now)
before starting the command API.
`;
}

/**
 * What a restore says of the folders another restore, killed, left half restored and this archive
 * held nothing of: their marks stay, and the services that read them do not start.
 */
export function stillHalfRestoredNote(dirs: readonly string[]): string {
  if (dirs.length === 0) return '';
  const one = dirs.length === 1;
  return `${dirs.map((d) => `  still half restored  ${d}\n`).join('')}A restore killed earlier was writing ${one ? 'this folder' : 'these folders'}, and this archive holds nothing of ${one ? 'it' : 'them'}:
${one ? 'its mark stays' : 'their marks stay'}, and the services that read ${one ? 'it' : 'them'} do not start (RESTORE_INCOMPLETE; the admin commands refuse
a marked certificates folder, PKI_RESTORE_RUNNING). Run that restore again to its end
(fieldstream-admin restore ARCHIVE), or restore an archive that holds ${one ? 'it' : 'them'}.
`;
}
