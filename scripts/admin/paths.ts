import { isAbsolute, resolve } from 'node:path';
import { z } from 'zod';
import { parseConfig } from '../../shared/config.ts';

/**
 * Where the admin command finds the state it manages. Each path is, in order: the command-line
 * option, the setting (the environment or `.env`: the same names the services read), the
 * repository's default. The defaults are those of a checkout run with `npm start` or the compose
 * files, which mount ./certs, ./data/distributor-state and ./data/commands.jsonl.
 */
export const AdminSettingsSchema = z.object({
  /** the certificates folder of scripts/generate-certificates.sh (the CA, issued certificates, device keys, revocations) */
  CERTS_DIR: z.string().optional(),
  /** the distributor's state: its replay windows */
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

export interface AdminPaths {
  certsDir: string;
  stateDir: string;
  commandState: string;
}

/** What `dead-letters` reads: the letters, and the registry their signatures are checked against. */
export interface DeadLetterPaths {
  deadLetters: string;
  deviceKeysDir: string;
  revokedDevicesFile: string;
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

export function resolveAdminPaths(options: PathOptions, env: Record<string, string | undefined> = process.env, cwd = process.cwd()): AdminPaths {
  const settings = parseConfig(AdminSettingsSchema, env);
  const pick = picker(cwd);
  return {
    certsDir: pick(options['certs-dir'], settings.CERTS_DIR, DEFAULT_PATHS.certsDir),
    stateDir: pick(options['state-dir'], settings.DISTRIBUTOR_STATE_DIR, DEFAULT_PATHS.stateDir),
    commandState: pick(options['command-state'], settings.COMMAND_STATE_PATH, DEFAULT_PATHS.commandState),
  };
}

/** The device keys and revocations are where scripts/generate-client-cert.sh puts them in `certsDir`, unless the distributor's settings say otherwise. */
export function resolveDeadLetterPaths(options: PathOptions, certsDir: string, env: Record<string, string | undefined> = process.env, cwd = process.cwd()): DeadLetterPaths {
  const settings = parseConfig(AdminSettingsSchema, env);
  const pick = picker(cwd);
  return {
    deadLetters: pick(options['dead-letters'], settings.DEAD_LETTER_PATH, DEFAULT_PATHS.deadLetters),
    deviceKeysDir: pick(undefined, settings.DISTRIBUTOR_DEVICE_KEYS_DIR, resolve(certsDir, 'internal', 'device-keys')),
    revokedDevicesFile: pick(undefined, settings.DISTRIBUTOR_REVOKED_DEVICES_FILE, resolve(certsDir, 'internal', 'revoked-devices.txt')),
  };
}
