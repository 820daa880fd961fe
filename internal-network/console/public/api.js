// The console server's API (docs: the console web API contract): JSON requests carrying the CSRF
// token, and the live feed (server-sent events) with reconnection.

/** An error answer `{ error: { code, message } }`, or a network failure (status 0). */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** The CSRF token of the current session; replaced by each /api/session and /api/login answer. */
let csrfToken = '';
/** Who this page is logged in as, `{ user, role }`, or null; what its view and requests are for. */
let pageSession = null;
/** Called on any 401: the session is gone (expired, logged out elsewhere, server restarted). */
let onUnauthorized = () => {};
/** Called when the browser's session is no longer this page's: another login in another tab. */
let onSessionChanged = () => {};

export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

export function setSessionChangedHandler(fn) {
  onSessionChanged = fn;
}

/** Whether `s` (an /api/session answer) is the session this page shows. */
const isPageSession = (s) =>
  s.authenticated ? pageSession !== null && s.user === pageSession.user && s.role === pageSession.role : pageSession === null;

/**
 * One request. Every state-changing request carries `x-csrf-token`. A request without a body sends
 * no content-type (a JSON content-type with an empty body is a malformed request).
 *
 * The tabs of one browser share one session cookie, and a token is good for the session it was
 * made for only: a login in another tab (a new session) makes this page's token stale. Refused for
 * that (CONSOLE_CSRF_INVALID), the request takes a fresh token and is sent once more if the
 * browser is still logged in as the user this page shows (the refused one was never carried out;
 * only a script of this origin can read a token, so nothing is weakened). A login is always sent
 * again (`anySession`): it replaces whatever session there is. Otherwise the page is told its
 * session changed, and the request fails.
 */
export async function request(method, path, body, { quiet401 = false, anySession = false, headers = {} } = {}) {
  try {
    return await send(method, path, body, quiet401, headers);
  } catch (err) {
    if (method === 'GET' || !(err instanceof ApiError) || err.code !== 'CONSOLE_CSRF_INVALID') throw err;
    let s;
    try {
      s = await refreshSession();
    } catch {
      throw err;
    }
    if (!anySession && !isPageSession(s)) {
      onSessionChanged(s);
      throw err;
    }
    return send(method, path, body, quiet401, headers);
  }
}

/** `extra`: headers of the request's own (a command's Idempotency-Key). */
async function send(method, path, body, quiet401, extra = {}) {
  const headers = { ...extra, accept: 'application/json' };
  if (method !== 'GET') headers['x-csrf-token'] = csrfToken;
  if (body !== undefined) headers['content-type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
      cache: 'no-store',
    });
  } catch {
    throw new ApiError(0, 'NETWORK', 'The console server cannot be reached.');
  }
  let data = null;
  try {
    data = await res.json();
  } catch {
    data = null;
  }
  if (!res.ok) {
    const e = data && typeof data === 'object' && data.error && typeof data.error === 'object' ? data.error : {};
    const err = new ApiError(
      res.status,
      typeof e.code === 'string' ? e.code : `HTTP_${res.status}`,
      typeof e.message === 'string' ? e.message : res.statusText || `HTTP ${res.status}`,
    );
    if (res.status === 401 && !quiet401) onUnauthorized(err);
    throw err;
  }
  return data;
}

/** GET /api/session: who is logged in, and the CSRF token to use; the page's session from now on. */
export async function getSession() {
  const s = await refreshSession();
  pageSession = s.authenticated ? { user: s.user, role: s.role } : null;
  return s;
}

/** GET /api/session for a fresh CSRF token, leaving the page's session as it is: who is logged in. */
async function refreshSession() {
  const s = await request('GET', '/api/session');
  if (s && typeof s.csrfToken === 'string') csrfToken = s.csrfToken;
  if (s && s.authenticated === true && typeof s.user === 'string' && typeof s.role === 'string') {
    return { authenticated: true, user: s.user, role: s.role };
  }
  return { authenticated: false };
}

/** POST /api/login with a role token (in the body, never in a URL). */
export async function login(token) {
  const s = await request('POST', '/api/login', { token }, { quiet401: true, anySession: true });
  if (s && typeof s.csrfToken === 'string') csrfToken = s.csrfToken;
  pageSession = { user: String(s?.user ?? ''), role: String(s?.role ?? '') };
  return { authenticated: true, ...pageSession };
}

export async function logout() {
  await request('POST', '/api/logout', undefined, { quiet401: true });
  pageSession = null;
}

export const getDevice = (id) => request('GET', `/api/devices/${encodeURIComponent(id)}`);

export function getHistory(id, field, from, to) {
  const q = new URLSearchParams({ field, from: String(Math.floor(from)), to: String(Math.ceil(to)) });
  return request('GET', `/api/devices/${encodeURIComponent(id)}/history?${q}`);
}

/** GET /api/security/devices: `{total, devices: [{device, count}], next}`, the per-device security
 * counts largest first (the live stream names the devices with most only), `limit` of them after
 * `after` ([device, count]: the last one listed, sent as the cursor `COUNT:DEVICE`), or from the
 * first without it. */
export function getSecurityDevices(after, limit) {
  const q = new URLSearchParams({ limit: String(limit) });
  if (after) q.set('after', `${after[1]}:${after[0]}`);
  return request('GET', `/api/security/devices?${q}`);
}

/** POST a command with its Idempotency-Key (command-form.js): sent again with the key, it is the same command. */
export const sendCommand = (id, body, key) => request('POST', `/api/devices/${encodeURIComponent(id)}/commands`, body, { headers: { 'idempotency-key': `"${key}"` } });

/** The live feed's event names (contract: GET /api/live). A fleet too large for one `snapshot`
 * event comes as `snapshot-part` events and a `snapshot-end`, handed on as one `snapshot`. */
const LIVE_EVENTS = ['snapshot', 'snapshot-part', 'snapshot-end', 'devices', 'security', 'pipeline', 'anomalies', 'device'];
/** Reconnection delays grow from the first to the last, and start over after a snapshot. */
const RETRY_MIN_MS = 1000;
const RETRY_MAX_MS = 15000;
/** The server sends `pipeline` every 2 s (CONSOLE.pipelinePollMs): this long without any event
 * means the stream is dead (a proxy may keep a dead connection open), so it is reopened. Its
 * keepalive comment does not count: EventSource hands a page events only. A snapshot part is an
 * event too: the server's parts come within this on its slowest promised link, and it gives up on
 * a part sooner (CONSOLE.liveSnapshotRowsPerEvent, liveDrainTimeoutMs). Checked against the
 * server's interval and parts by test/unit/console-live.test.ts. */
export const SILENCE_MS = 15000;

/**
 * The live feed: one EventSource at a time, on /api/live?parts=1 or /api/live?parts=1&device=ID
 * (which carries everything the plain one does, plus `device`), reopened with growing delays when it fails.
 * EventSource cannot see a 401, so after a failure the session is asked first: a session that
 * is gone shows the login view instead of retrying forever, as does one that is now another user's.
 */
export class LiveFeed {
  /** @param {(name: string, data: unknown) => void} onEvent @param {(status: string) => void} onStatus */
  constructor(onEvent, onStatus) {
    this.onEvent = onEvent;
    this.onStatus = onStatus;
    this.device = null;
    this.source = null;
    this.retryMs = RETRY_MIN_MS;
    this.retryTimer = 0;
    this.silenceTimer = 0;
    this.stopped = true;
    /** When the stream last handed this page an event (epoch ms; null: never; a snapshot's parts
     * count once it is whole): what it shows is the console's word as of then, which the shell says
     * while the stream is down. */
    this.heardAt = null;
  }

  start() {
    this.stopped = false;
    this.open();
  }

  stop() {
    this.stopped = true;
    this.closeSource();
    clearTimeout(this.retryTimer);
    this.onStatus('stopped');
  }

  /** Follows one device (its page is open) or none; reopens the stream when that changes. */
  setDevice(id) {
    if (id === this.device) return;
    this.device = id;
    if (!this.stopped) {
      clearTimeout(this.retryTimer);
      this.open();
    }
  }

  open() {
    this.closeSource();
    // `parts=1`: this page takes a large fleet's snapshot in parts. The console sends a request
    // without it (a page of an earlier version, open across an upgrade) the one `snapshot` event.
    const url = `/api/live?${new URLSearchParams(this.device === null ? { parts: '1' } : { parts: '1', device: this.device })}`;
    const es = new EventSource(url, { withCredentials: true });
    this.source = es;
    this.onStatus('connecting');
    // The rows of this stream's snapshot so far: the fleet is replaced once they are all here, never
    // by part of them (a page on a slow link would show a fraction of the fleet as the fleet). A new
    // stream starts a new snapshot: what an ended one had sent is dropped with it.
    let parts = [];
    for (const name of LIVE_EVENTS) {
      es.addEventListener(name, (ev) => {
        if (this.source !== es) return;
        // Each part is a word from the stream: a snapshot that takes minutes on a slow link is
        // not taken for a dead stream.
        this.heard();
        let data;
        try {
          data = JSON.parse(ev.data);
        } catch {
          return;
        }
        if (!data || typeof data !== 'object') return;
        if (name === 'snapshot-part') {
          if (Array.isArray(data.devices)) for (const row of data.devices) parts.push(row);
          return;
        }
        if (name === 'snapshot' || name === 'snapshot-end') {
          const devices = name === 'snapshot' ? [] : parts;
          parts = [];
          if (Array.isArray(data.devices)) for (const row of data.devices) devices.push(row);
          // A part missing (a proxy that dropped an event): not the fleet; a fresh stream sends it whole.
          if (typeof data.total === 'number' && devices.length !== data.total) {
            this.failed();
            return;
          }
          this.retryMs = RETRY_MIN_MS;
          this.heardAt = Date.now();
          this.onStatus('live');
          this.onEvent('snapshot', { ...data, devices });
          return;
        }
        this.heardAt = Date.now();
        this.onEvent(name, data);
      });
    }
    es.addEventListener('error', () => {
      if (this.source === es) this.failed();
    });
    this.heard();
  }

  heard() {
    clearTimeout(this.silenceTimer);
    this.silenceTimer = setTimeout(() => this.failed(), SILENCE_MS);
  }

  closeSource() {
    clearTimeout(this.silenceTimer);
    if (this.source) this.source.close();
    this.source = null;
  }

  failed() {
    this.closeSource();
    if (this.stopped) return;
    this.onStatus('reconnecting');
    clearTimeout(this.retryTimer);
    const delay = this.retryMs;
    this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
    this.retryTimer = setTimeout(async () => {
      if (this.stopped) return;
      try {
        const s = await refreshSession();
        if (!s.authenticated) {
          onUnauthorized(new ApiError(401, 'CONSOLE_UNAUTHORIZED', 'The session ended: log in again.'));
          return;
        }
        // Another user's login, in another tab: the stream would be theirs under this page's name.
        if (!isPageSession(s)) {
          onSessionChanged(s);
          return;
        }
      } catch {
        // The server is unreachable: try again later.
        this.failed();
        return;
      }
      if (!this.stopped) this.open();
    }, delay);
  }
}
