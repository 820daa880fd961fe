import { CONSOLE } from '../../shared/limits.ts';
import { sha256Hex, type Credentials } from '../shared/credentials.ts';

/**
 * Tokens the command API refused (401) though the console's own credentials know them: revoked
 * there (its tokens file changed and it restarted) while the console's file still holds them (a
 * copy not updated; a change to the console's own file is seen without this, ReloadingCredentials).
 * The console refuses them too from then on, until it restarts. Without that, every request of such
 * a login would reach the command API and be refused, and 20 refusals within its window throttle the
 * console's address there (API_THROTTLED): every operator of the console locked out by one stale
 * login. Kept as digests, at most CONSOLE.refusedTokensMax (the oldest forgotten first).
 */
export class RefusedTokens {
  private readonly digests = new Set<string>();

  add(token: string): void {
    const digest = sha256Hex(token);
    this.digests.delete(digest);
    this.digests.add(digest);
    while (this.digests.size > CONSOLE.refusedTokensMax) {
      const oldest = this.digests.values().next().value;
      if (oldest === undefined) break;
      this.digests.delete(oldest);
    }
  }

  has(token: string): boolean {
    return this.digests.has(sha256Hex(token));
  }

  /** `credentials`, less the tokens refused. */
  except(credentials: Pick<Credentials, 'verify'>): Pick<Credentials, 'verify'> {
    return { verify: (token) => (this.has(token) ? undefined : credentials.verify(token)) };
  }
}
