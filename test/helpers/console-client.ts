import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { sha256Hex } from '../../internal-network/shared/credentials.ts';

/** One credential per role, for COMMAND_API_TOKENS_FILE (the command API's and the console's). */
export const ROLE_TOKENS = {
  viewer: 'viewer-token-0123456789abcdef0123',
  operator: 'operator-token-0123456789abcdef01',
  admin: 'admin-token-0123456789abcdef012345',
} as const;

/** Writes the tokens file (digests only, as in production) and returns its path. */
export function writeRoleTokens(dir: string): string {
  const path = join(dir, 'api-tokens.json');
  writeFileSync(path, JSON.stringify(Object.entries(ROLE_TOKENS).map(([role, token]) => ({ name: `${role}-user`, role, sha256: sha256Hex(token) }))));
  return path;
}

export interface SseEvent {
  event: string;
  data: unknown;
}

/**
 * The console's API as a browser session, without a browser: a cookie jar of its two cookies (the
 * session's, and the CSRF secret's) and the CSRF token the console hands out, so a test can speak
 * to it exactly as the pages do.
 */
export class ConsoleSession {
  /** the session cookie, `name=value` (set at login) */
  cookie = '';
  /** the CSRF secret's cookie, `name=value` (set by the first /api/session) */
  csrfCookie = '';
  csrf = '';

  constructor(readonly base: string) {}

  async request(path: string, init: { method?: string; body?: unknown; csrf?: boolean; headers?: Record<string, string> } = {}): Promise<{ status: number; body: any }> {
    const headers: Record<string, string> = { ...(init.headers ?? {}) };
    if (this.cookies()) headers.cookie = this.cookies();
    if (init.body !== undefined) headers['content-type'] = 'application/json';
    if (init.csrf !== false && this.csrf && init.method === 'POST') headers['x-csrf-token'] = this.csrf;
    const res = await fetch(new URL(path, this.base), { method: init.method ?? 'GET', headers, ...(init.body !== undefined ? { body: JSON.stringify(init.body) } : {}) });
    const set = res.headers.getSetCookie().find((c) => c.startsWith('fieldstream_console='));
    if (set) this.cookie = set.split(';')[0] as string;
    const csrfSet = res.headers.getSetCookie().find((c) => c.startsWith('fieldstream_console_csrf='));
    if (csrfSet) this.csrfCookie = csrfSet.split(';')[0] as string;
    const text = await res.text();
    let body: any = text;
    try {
      body = JSON.parse(text);
    } catch {
      /* not JSON */
    }
    if (body && typeof body === 'object' && typeof body.csrfToken === 'string') this.csrf = body.csrfToken;
    return { status: res.status, body };
  }

  /** The Cookie header: both cookies held. */
  cookies(): string {
    return [this.cookie, this.csrfCookie].filter(Boolean).join('; ');
  }

  /** Logs in, or throws with the console's answer. */
  async login(token: string): Promise<{ status: number; body: any }> {
    await this.request('/api/session');
    const r = await this.request('/api/login', { method: 'POST', body: { token } });
    if (r.status !== 200) throw new Error(`login answered ${r.status}: ${JSON.stringify(r.body)}`);
    return r;
  }

  /** The live stream: every event received, a way to wait for one that passes a check, and `ended`
   * (resolved when the console ends the stream or it is closed). */
  async live(query = ''): Promise<{ events: SseEvent[]; until<T>(pick: (e: SseEvent) => T | undefined, timeoutMs?: number): Promise<T>; ended: Promise<void>; close(): void }> {
    const ctl = new AbortController();
    const res = await fetch(new URL(`/api/live${query}`, this.base), { headers: { cookie: this.cookies() }, signal: ctl.signal });
    if (res.status !== 200 || !res.body) throw new Error(`live stream answered ${res.status}: ${await res.text()}`);
    const events: SseEvent[] = [];
    const waiters = new Set<() => void>();
    const ended = (async () => {
      const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) return;
          buf += value;
          let end: number;
          while ((end = buf.indexOf('\n\n')) >= 0) {
            const block = buf.slice(0, end);
            buf = buf.slice(end + 2);
            const event = /^event: (.+)$/m.exec(block)?.[1];
            const data = /^data: (.+)$/m.exec(block)?.[1];
            if (event && data) events.push({ event, data: JSON.parse(data) });
          }
          for (const w of waiters) w();
        }
      } catch {
        /* closed */
      }
    })();
    return {
      events,
      ended,
      until: <T>(pick: (e: SseEvent) => T | undefined, timeoutMs = 20_000) =>
        new Promise<T>((resolve, reject) => {
          const check = () => {
            for (const e of events) {
              let v: T | undefined;
              try {
                v = pick(e);
              } catch (err) {
                // A check that throws on an event it did not expect fails the wait with its error,
                // rather than ending the stream's reader (which swallowed it, and the wait timed out).
                waiters.delete(check);
                clearTimeout(timer);
                reject(new Error(`the check threw on a ${e.event} event ${JSON.stringify(e.data).slice(0, 200)}: ${(err as Error).message}`));
                return;
              }
              if (v !== undefined) {
                waiters.delete(check);
                clearTimeout(timer);
                resolve(v);
                return;
              }
            }
          };
          const timer = setTimeout(() => {
            waiters.delete(check);
            reject(new Error(`no such live event within ${timeoutMs} ms; got ${events.map((e) => e.event).join(', ')}`));
          }, timeoutMs);
          waiters.add(check);
          check();
        }),
      close: () => ctl.abort(),
    };
  }
}
