import type { Session } from 'fastify';
import { FieldStreamError } from '../../../shared/errors.ts';
import { CONSOLE } from '../../../shared/limits.ts';
import type { Principal } from '../../shared/credentials.ts';

declare module 'fastify' {
  interface Session {
    /** who logged in (absent: not logged in) */
    principal?: Principal;
    /** the token they logged in with, kept here (server side) to call the command API as them */
    commandToken?: string;
    /** epoch ms of the login */
    loggedInAt?: number;
  }
}

type Callback = (err?: unknown) => void;
type Entry = { session: Session; expires: number };

/**
 * Sessions in memory, bounded: at most CONSOLE.maxSessions, each dropped at its expiry. A restart
 * logs everyone out, which is the safe way round for a console that can send commands.
 *
 * Only a login stores a session (a visitor's CSRF secret is a cookie, see server.ts), so anonymous
 * visits cost nothing here. Should a session that is not logged in be stored all the same (the
 * empty one a login's regenerate() stores a moment before it is filled in), it is kept apart and
 * dropped first past the cap: a flood of visits can never push out an operator's session.
 *
 * A logged-in session is stored only over an entry the store holds: the empty one its login's
 * regenerate() created, or itself. One that is gone (logged out, replaced by a new login, expired,
 * dropped past the cap) is never created again, whoever saves it: a request that was running when
 * the session ended must not bring it back. The entry is the proof, so nothing needs remembering
 * of the sessions that ended (a memory of them would be bounded, and forget).
 *
 * One user (one credential, principal.name) holds at most CONSOLE.maxSessionsPerUser logins; a
 * login past it ends that user's own oldest. The cap over everyone is reached only by many users,
 * so one user logging in over and over cannot push the others out.
 */
export class BoundedSessionStore {
  /** each in the order of use (a Map keeps insertion order; an entry used is re-inserted last) */
  private readonly anonymous = new Map<string, Entry>();
  private readonly loggedIn = new Map<string, Entry>();
  /** each user's logged-in session ids, the oldest login first */
  private readonly byUser = new Map<string, Set<string>>();

  constructor(
    private readonly ttlMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  set(id: string, session: Session, cb: Callback): void {
    if (session.principal && this.live(id) === undefined) {
      cb(new FieldStreamError('CONSOLE_UNAUTHORIZED', 'This session ended (logged out, expired or dropped) while the request ran: log in again.'));
      return;
    }
    this.drop(id);
    // A login lasts ttlMs from the login, however busy (the routes refuse it past that, and a live
    // stream ends with it): it leaves the store then too, however often it is saved again.
    const expires = (session.loggedInAt ?? this.now()) + this.ttlMs;
    const user = session.principal?.name;
    if (user === undefined) this.anonymous.set(id, { session, expires });
    else {
      this.loggedIn.set(id, { session, expires });
      const ids = this.byUser.get(user) ?? new Set<string>();
      this.byUser.set(user, ids.add(id));
      for (const oldest of ids) {
        if (ids.size <= CONSOLE.maxSessionsPerUser) break;
        this.drop(oldest);
      }
    }
    // Past the cap, never the session being stored: the empty one a login's regenerate() stores
    // went first in a store full of logins, and the login then failed as a session that ended.
    while (this.size > CONSOLE.maxSessions) {
      const oldest = this.oldestExcept(this.anonymous, id) ?? this.oldestExcept(this.loggedIn, id);
      if (oldest === undefined) break;
      this.drop(oldest);
    }
    cb();
  }

  get(id: string, cb: (err: unknown, result?: Session | null) => void): void {
    const found = this.live(id);
    if (found) this.markUsed(id, found);
    cb(null, found?.session ?? null);
  }

  destroy(id: string, cb: Callback): void {
    this.drop(id);
    cb();
  }

  /** The token a live login was made with (undefined: no such login). */
  tokenOf(id: string): string | undefined {
    return this.live(id)?.session.commandToken;
  }

  /** Ends every logged-in session `ended` says has ended (its token no longer a credential); their ids. */
  endWhere(ended: (session: Session) => boolean): string[] {
    const ids = [...this.loggedIn].filter(([, e]) => ended(e.session)).map(([id]) => id);
    for (const id of ids) this.drop(id);
    return ids;
  }

  /** Whether the session is still there (not logged out, expired or dropped): a live stream ends with it. */
  has(id: string): boolean {
    return this.live(id) !== undefined;
  }

  get size(): number {
    return this.anonymous.size + this.loggedIn.size;
  }

  /** The least recently used id of `pool` other than `id`. */
  private oldestExcept(pool: Map<string, Entry>, id: string): string | undefined {
    for (const key of pool.keys()) if (key !== id) return key;
    return undefined;
  }

  /** Forgets a session wherever it is kept. */
  private drop(id: string): void {
    this.anonymous.delete(id);
    const entry = this.loggedIn.get(id);
    if (!entry) return;
    this.loggedIn.delete(id);
    const user = entry.session.principal?.name;
    const ids = user === undefined ? undefined : this.byUser.get(user);
    if (!ids) return;
    ids.delete(id);
    if (ids.size === 0) this.byUser.delete(user as string);
  }

  /** Last in its pool's order: the least recently used is dropped first past the cap (sessions are
   * saved at login only, so a request reading one is what says it is in use). */
  private markUsed(id: string, entry: Entry): void {
    const pool = this.loggedIn.has(id) ? this.loggedIn : this.anonymous;
    pool.delete(id);
    pool.set(id, entry);
  }

  private live(id: string): Entry | undefined {
    const pool = this.loggedIn.has(id) ? this.loggedIn : this.anonymous;
    const found = pool.get(id);
    if (found && found.expires <= this.now()) {
      this.drop(id);
      return undefined;
    }
    return found;
  }
}
