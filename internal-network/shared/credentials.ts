import { createHash, timingSafeEqual } from 'node:crypto';
import { readJsonSetting } from '../../shared/config.ts';
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

  /** COMMAND_API_TOKEN (operator) and the tokens file, as the command API and the console read them. */
  static fromSettings(s: { token?: string | undefined; tokensFile?: string | undefined }): Credentials {
    const entries: Array<[string, Principal]> = [];
    if (s.token !== undefined) entries.push([sha256Hex(s.token), { name: 'COMMAND_API_TOKEN', role: 'operator' }]);
    const file = s.tokensFile ? readJsonSetting('COMMAND_API_TOKENS_FILE', s.tokensFile, TokensFileSchema) : [];
    for (const t of file) entries.push([t.sha256, { name: t.name, role: t.role }]);
    return new Credentials(entries);
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

export function sha256Hex(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/** Roles are ordered viewer < operator < admin: each may do what the ones before it may. */
export function roleAllows(role: Role, needs: Role): boolean {
  return ROLES.indexOf(role) >= ROLES.indexOf(needs);
}
