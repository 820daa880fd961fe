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
});

export const REPO_ROOT = resolve(import.meta.dirname, '..', '..');

export const DEFAULT_PATHS = {
  certsDir: 'certs',
  stateDir: 'data/distributor-state',
  commandState: 'data/commands.jsonl',
} as const;

export interface AdminPaths {
  certsDir: string;
  stateDir: string;
  commandState: string;
}

export interface PathOptions {
  'certs-dir'?: string | undefined;
  'state-dir'?: string | undefined;
  'command-state'?: string | undefined;
}

/** Options and settings are taken relative to the working directory, defaults relative to the repository. */
export function resolveAdminPaths(options: PathOptions, env: Record<string, string | undefined> = process.env, cwd = process.cwd()): AdminPaths {
  const settings = parseConfig(AdminSettingsSchema, env);
  const pick = (option: string | undefined, setting: string | undefined, fallback: string) =>
    option !== undefined ? resolve(cwd, option) : setting !== undefined ? resolve(cwd, setting) : isAbsolute(fallback) ? fallback : resolve(REPO_ROOT, fallback);
  return {
    certsDir: pick(options['certs-dir'], settings.CERTS_DIR, DEFAULT_PATHS.certsDir),
    stateDir: pick(options['state-dir'], settings.DISTRIBUTOR_STATE_DIR, DEFAULT_PATHS.stateDir),
    commandState: pick(options['command-state'], settings.COMMAND_STATE_PATH, DEFAULT_PATHS.commandState),
  };
}
