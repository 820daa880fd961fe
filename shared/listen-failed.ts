import { FieldStreamError } from './errors.ts';

/**
 * LISTEN_FAILED for a server that could not listen on `where`, naming `setting`, the variable that
 * chooses that address: the address alone does not tell a user whose port is taken what to change.
 * The caller names it, as it knows which of its settings it read (npm start's and a service's own
 * share the names, a service's metrics port has its own).
 */
export function listenFailed(what: string, where: string, setting: string, err: Error): FieldStreamError {
  return new FieldStreamError('LISTEN_FAILED', `${what} cannot listen on ${where} (${setting}): ${err.message}`);
}
