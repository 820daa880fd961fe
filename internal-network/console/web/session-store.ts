import type { Session } from 'fastify';
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
    /** @fastify/csrf-protection's secret */
    _csrf?: string;
  }
}

type Callback = (err?: unknown) => void;

/**
 * Sessions in memory, bounded: at most CONSOLE.maxSessions (the least recently used go first, so a
 * flood of anonymous visits cannot exhaust memory), each dropped at its expiry. A restart logs
 * everyone out, which is the safe way round for a console that can send commands.
 */
export class BoundedSessionStore {
  private readonly sessions = new Map<string, { session: Session; expires: number }>();

  constructor(
    private readonly ttlMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  set(id: string, session: Session, cb: Callback): void {
    this.sessions.delete(id); // re-inserted last: the Map's order is the order of use
    this.sessions.set(id, { session, expires: this.now() + this.ttlMs });
    while (this.sessions.size > CONSOLE.maxSessions) {
      const oldest = this.sessions.keys().next().value;
      if (oldest === undefined) break;
      this.sessions.delete(oldest);
    }
    cb();
  }

  get(id: string, cb: (err: unknown, result?: Session | null) => void): void {
    const found = this.sessions.get(id);
    if (!found || found.expires <= this.now()) {
      if (found) this.sessions.delete(id);
      cb(null, null);
      return;
    }
    cb(null, found.session);
  }

  destroy(id: string, cb: Callback): void {
    this.sessions.delete(id);
    cb();
  }

  get size(): number {
    return this.sessions.size;
  }
}
