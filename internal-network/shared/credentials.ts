import { createHash, timingSafeEqual } from 'node:crypto';
import { readJsonSetting } from '../../shared/config.ts';
import { FieldStreamError, isFieldStreamError } from '../../shared/errors.ts';
import { TIMINGS } from '../../shared/limits.ts';
import type { Logger } from '../../shared/logger.ts';
import { ReloadedFile } from '../../shared/reloaded-file.ts';
import { ROLES, TokensFileSchema, type Role } from '../command-api/schemas.ts';

/** Who a credential belongs to, and what it may do. */
export interface Principal {
  readonly name: string;
  readonly role: Role;
}

/**
 * The role credentials of the internal network, one set for the command API and the console:
 * COMMAND_API_TOKEN (the operator's) and COMMAND_API_TOKENS_FILE (named tokens with roles, stored as
 * SHA-256 digests only). A token is found by comparing its digest with every known digest in
 * constant time, so timing says nothing about which tokens exist.
 */
export class Credentials {
  private readonly known: ReadonlyArray<{ digest: Buffer; who: Principal }>;

  constructor(entries: Iterable<readonly [sha256Hex: string, who: Principal]>) {
    this.known = [...entries].map(([hex, who]) => ({ digest: Buffer.from(hex, 'hex'), who }));
  }

  /** COMMAND_API_TOKEN (operator) and the tokens file, as the command API reads them (at start). */
  static fromSettings(s: CredentialSettings): Credentials {
    const token = tokenEntry(s.token);
    return new Credentials([...token, ...(s.tokensFile ? fileEntries(s.tokensFile, token) : [])]);
  }

  get size(): number {
    return this.known.length;
  }

  /** The principal a token belongs to, or undefined. */
  verify(token: string): Principal | undefined {
    const digest = createHash('sha256').update(token).digest();
    let found: Principal | undefined;
    for (const k of this.known) if (timingSafeEqual(k.digest, digest)) found = k.who;
    return found;
  }
}

export interface CredentialSettings {
  token?: string | undefined;
  tokensFile?: string | undefined;
}

function tokenEntry(token: string | undefined): Array<[string, Principal]> {
  return token === undefined ? [] : [[sha256Hex(token), { name: 'COMMAND_API_TOKEN', role: 'operator' }]];
}

/**
 * The tokens file's entries, checked against its schema (zod): throws CONFIG_FILE_UNREADABLE or
 * CONFIG_INVALID; CONFIG_INVALID too for an entry of COMMAND_API_TOKEN's token (`token`), which would
 * give that token the entry's name and role.
 */
function fileEntries(path: string, token: ReadonlyArray<[string, Principal]>): Array<[string, Principal]> {
  const entries = readJsonSetting('COMMAND_API_TOKENS_FILE', path, TokensFileSchema);
  const clash = entries.find((t) => token.some(([digest]) => digest === t.sha256));
  if (clash) throw new FieldStreamError('CONFIG_INVALID', `COMMAND_API_TOKENS_FILE=${path}: the entry ${JSON.stringify(clash.name)} is COMMAND_API_TOKEN's token: one token, one name and role (give it a token of its own).`);
  return entries.map((t) => [t.sha256, { name: t.name, role: t.role }]);
}

/**
 * The role credentials as the console holds them while it runs: COMMAND_API_TOKEN, and the tokens
 * file read again when it changes (ReloadedFile, as the console's device tokens), so that a token
 * taken out of the file is refused, and one whose role changed has the new role, within
 * TIMINGS.roleTokensReloadMs, without a restart: the console's pages and management API read
 * without ever asking the command API, which would otherwise be the only one to learn of it.
 * Each verify() costs what Credentials.verify costs, and a clock read; the file is looked at (one
 * stat) at most once per TIMINGS.roleTokensReloadMs. At start the file must be valid, as before (the
 * console stops with CONFIG_INVALID or CONFIG_FILE_UNREADABLE); a version written later that is not
 * valid or cannot be read (removed) leaves the last valid set in force, logged as
 * ROLE_TOKENS_INVALID: an edit gone wrong locks no one out and stops nothing.
 */
export class ReloadingCredentials {
  /** without a file, the credentials; with one, those it held at start (current() has them from then on) */
  private readonly fixed: Credentials;
  private readonly file: ReloadedFile<Credentials> | undefined;
  private readonly listeners: Array<() => void> = [];

  constructor(s: CredentialSettings, log: Logger) {
    const token = tokenEntry(s.token);
    const path = s.tokensFile;
    if (path === undefined) {
      this.fixed = new Credentials(token);
      this.file = undefined;
      return;
    }
    this.file = new ReloadedFile({
      path,
      recheckMs: TIMINGS.roleTokensReloadMs,
      read: (p) => new Credentials([...token, ...fileEntries(p, token)]),
      // Removed, it is not taken to mean "no one": a deploy or an editor replacing it may remove it
      // for a moment, and the console would not start without it either.
      whenMissing: 'keep',
      // An error without a code is the look at the file failing (removed, or its folder unreadable).
      onInvalid: (err) =>
        log.error(
          { code: 'ROLE_TOKENS_INVALID', cause: isFieldStreamError(err) ? err.code : 'CONFIG_FILE_UNREADABLE', path, err: err.message },
          'the role tokens file changed to one that cannot be read or is not valid: the last valid set stays in force',
        ),
      onChange: (c) => {
        log.info({ path, tokens: c.size }, 'role tokens file read again');
        for (const l of this.listeners) l();
      },
    });
    this.fixed = this.file.load();
  }

  /** The principal a token belongs to now, or undefined. */
  verify(token: string, now = Date.now()): Principal | undefined {
    return (this.file?.current(now) ?? this.fixed).verify(token);
  }

  /** Called once the file's new version is in force (from inside the verify() that saw it). */
  onChange(listener: () => void): void {
    this.listeners.push(listener);
  }
}

export function sha256Hex(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/** Roles are ordered viewer < operator < admin: each may do what the ones before it may. */
export function roleAllows(role: Role, needs: Role): boolean {
  return ROLES.indexOf(role) >= ROLES.indexOf(needs);
}
