import { statSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { z } from 'zod';
import { parseConfig } from '../../shared/config.ts';

/**
 * Where the admin command finds the state it manages. Each path is, in order: the command-line
 * option, the setting (the environment or `.env`: the same names the services read), the
 * repository's default. The defaults are the folders of a checkout run with `npm start`, which the
 * compose files mount too (./certs, ./data/distributor-state, ./data/dead-letter); the command
 * journal is the exception: `npm start` keeps it in data/commands.jsonl, docker-compose.internal.yml
 * in data/command-api/commands.jsonl (its ./data/command-api mounted at /data), so the default is
 * the first unless it does not exist and the compose file's folder does.
 */
export const AdminSettingsSchema = z.object({
  /** the certificates folder of scripts/generate-certificates.sh (the CA, issued certificates, device keys, revocations) */
  CERTS_DIR: z.string().optional(),
  /** the distributor's state: its replay windows, its admitted event tag values (read by the dead-letter replay) */
  DISTRIBUTOR_STATE_DIR: z.string().optional(),
  /** the command API's journal of command state */
  COMMAND_STATE_PATH: z.string().optional(),
  /** the distributor's dead letters */
  DEAD_LETTER_PATH: z.string().optional(),
  /** the registry of device signing keys (default: internal/device-keys of the certificates folder) */
  DISTRIBUTOR_DEVICE_KEYS_DIR: z.string().optional(),
  /** revoked devices, one id per line (default: internal/revoked-devices.txt of the certificates folder) */
  DISTRIBUTOR_REVOKED_DEVICES_FILE: z.string().optional(),
});

export const REPO_ROOT = resolve(import.meta.dirname, '..', '..');

export const DEFAULT_PATHS = {
  certsDir: 'certs',
  stateDir: 'data/distributor-state',
  commandState: 'data/commands.jsonl',
  deadLetters: 'data/dead-letter',
} as const;

/** Where docker-compose.internal.yml keeps the command journal on the host (./data/command-api is the command API's /data). */
export const COMPOSE_COMMAND_STATE = 'data/command-api/commands.jsonl';

/** Where the command journal's path came from: --command-state, COMMAND_STATE_PATH, or a default (npm start's, the compose file's). */
export type CommandStateSource = 'option' | 'setting' | 'default' | 'compose';

export interface AdminPaths {
  certsDir: string;
  stateDir: string;
  commandState: string;
  /** how commandState was chosen (resolveAdminPaths); unset: given by the caller */
  commandStateFrom?: CommandStateSource;
}

/** What `dead-letters` reads: the letters, the registry their signatures are checked against, the distributor's state (its admitted event tag values). */
export interface DeadLetterPaths {
  deadLetters: string;
  deviceKeysDir: string;
  revokedDevicesFile: string;
  /** DISTRIBUTOR_STATE_DIR (--state-dir), every slot of it: read, never written */
  stateDir: string;
}

export interface PathOptions {
  'certs-dir'?: string | undefined;
  'state-dir'?: string | undefined;
  'command-state'?: string | undefined;
  'dead-letters'?: string | undefined;
}

/** Options and settings are taken relative to the working directory, defaults relative to the repository. */
function picker(cwd: string) {
  return (option: string | undefined, setting: string | undefined, fallback: string) =>
    option !== undefined ? resolve(cwd, option) : setting !== undefined ? resolve(cwd, setting) : isAbsolute(fallback) ? fallback : resolve(REPO_ROOT, fallback);
}

const isDir = (path: string) => statSync(path, { throwIfNoEntry: false })?.isDirectory() === true;
const exists = (path: string) => statSync(path, { throwIfNoEntry: false }) !== undefined;

/**
 * `root`: the repository, which the defaults are relative to. Without an option or setting, the
 * command journal is `npm start`'s data/commands.jsonl, unless that does not exist and
 * docker-compose.internal.yml's folder data/command-api/ does: then the compose file's
 * data/command-api/commands.jsonl (a compose host whose command API has run).
 */
export function resolveAdminPaths(options: PathOptions, env: Record<string, string | undefined> = process.env, cwd = process.cwd(), root = REPO_ROOT): AdminPaths {
  const settings = parseConfig(AdminSettingsSchema, env);
  const pick = (option: string | undefined, setting: string | undefined, fallback: string) =>
    option !== undefined ? resolve(cwd, option) : setting !== undefined ? resolve(cwd, setting) : resolve(root, fallback);
  const journal = options['command-state'] ?? settings.COMMAND_STATE_PATH;
  const npmStart = resolve(root, DEFAULT_PATHS.commandState);
  const compose = resolve(root, COMPOSE_COMMAND_STATE);
  const commandStateFrom: CommandStateSource =
    options['command-state'] !== undefined ? 'option'
    : settings.COMMAND_STATE_PATH !== undefined ? 'setting'
    : !exists(npmStart) && isDir(resolve(compose, '..')) ? 'compose'
    : 'default';
  return {
    certsDir: pick(options['certs-dir'], settings.CERTS_DIR, DEFAULT_PATHS.certsDir),
    stateDir: pick(options['state-dir'], settings.DISTRIBUTOR_STATE_DIR, DEFAULT_PATHS.stateDir),
    commandState: journal !== undefined ? resolve(cwd, journal) : commandStateFrom === 'compose' ? compose : npmStart,
    commandStateFrom,
  };
}

/** The device keys and revocations are where scripts/generate-client-cert.sh puts them in `certsDir`, unless the distributor's settings say otherwise; the state is resolveAdminPaths' `stateDir`. */
export function resolveDeadLetterPaths(options: PathOptions, { certsDir, stateDir }: Pick<AdminPaths, 'certsDir' | 'stateDir'>, env: Record<string, string | undefined> = process.env, cwd = process.cwd()): DeadLetterPaths {
  const settings = parseConfig(AdminSettingsSchema, env);
  const pick = picker(cwd);
  return {
    deadLetters: pick(options['dead-letters'], settings.DEAD_LETTER_PATH, DEFAULT_PATHS.deadLetters),
    deviceKeysDir: pick(undefined, settings.DISTRIBUTOR_DEVICE_KEYS_DIR, resolve(certsDir, 'internal', 'device-keys')),
    revokedDevicesFile: pick(undefined, settings.DISTRIBUTOR_REVOKED_DEVICES_FILE, resolve(certsDir, 'internal', 'revoked-devices.txt')),
    stateDir,
  };
}
