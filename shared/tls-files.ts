import { readFileSync } from 'node:fs';
import { FieldStreamError } from './errors.ts';

/** Reads a PEM file named by a setting; a failure names the setting, so the user knows what to fix. */
export function readPemSetting(variable: string, path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new FieldStreamError('CONFIG_FILE_UNREADABLE', `${variable}=${path} cannot be read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, {
      variable,
      path,
    });
  }
}
