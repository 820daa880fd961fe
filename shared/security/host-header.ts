import type { IncomingMessage } from 'node:http';
import { isIP } from 'node:net';
import { z } from 'zod';
import { FieldStreamError } from '../errors.ts';

/**
 * DNS rebinding: a page at http://attacker.example:PORT/ has its name answered with 127.0.0.1 (or a
 * private address of ours) once loaded; the browser then takes our server for that page's own
 * origin and lets the page read every answer, with no Origin header (same origin) and, in browsers
 * that predate Sec-Fetch-*, nothing else that tells it from a program. What it cannot change is the
 * Host header: the browser names the host of the page's URL, attacker.example. So a server that
 * asks for no credential a page cannot present (a bearer token, a client certificate; cookies it
 * can, as the browser sends its own for the name it believes) answers only requests naming it.
 *
 * A Host is taken when it is:
 *  - an IP address (127.0.0.1, [::1], 10.0.0.5): a browser names an address only for a page whose
 *    URL has that address, loaded from that address; no name was resolved, so none was rebound;
 *  - `localhost`, as it is (not `localhost.`, which a browser may send to DNS): browsers answer it
 *    with loopback themselves (RFC 6761 §6.3);
 *  - a name the server's settings give it (`served`), the name it listens on included, with or
 *    without the final dot of a fully qualified name.
 * With or without a port (not compared: Docker publishes the port under another number), in any case.
 *
 * A request without Host is taken: Node answers 400 to an HTTP/1.1 one itself (requireHostHeader),
 * and an HTTP/1.0 one comes from a program, as browsers always send it. One with several Host
 * lines is taken only if each names a host served.
 */

/** A name a server answers to, as a setting gives it: a DNS name, compared in lower case. */
const HostName = z
  .string()
  .trim()
  .toLowerCase()
  .transform((s) => s.replace(/\.$/, ''))
  .pipe(z.string().regex(/^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$/, 'is not a host name (letters, digits, "-", "_", dot-separated labels; no port, no scheme)'));

/** `console.example.org,console`: the names besides localhost and IP addresses a server answers to. */
export const hostNamesSetting = (fallback = '') =>
  z
    .string()
    .default(fallback)
    .transform((s, ctx) => {
      const names: string[] = [];
      for (const item of s.split(',').map((x) => x.trim()).filter(Boolean)) {
        const parsed = HostName.safeParse(item);
        if (!parsed.success) {
          ctx.addIssue({ code: 'custom', message: `"${item.slice(0, 80)}" ${parsed.error.issues[0]?.message ?? 'is not a host name'}` });
          return z.NEVER;
        }
        names.push(parsed.data);
      }
      return names;
    });

/** The names a server listening on `listenHost` answers to: `configured`, and `listenHost` when it is a name. */
export function servedHostNames(listenHost: string, configured: readonly string[]): ReadonlySet<string> {
  const names = new Set(configured.map((n) => n.toLowerCase().replace(/\.$/, '')));
  const listen = listenHost.replace(/^\[|\]$/g, '');
  if (isIP(listen) === 0) names.add(listen.toLowerCase().replace(/\.$/, ''));
  return names;
}

/** Whether a Host header's value (or an absolute request target's authority) names a host the server does not answer to. */
export function hostNotServed(host: string, served: ReadonlySet<string>): boolean {
  if (host.startsWith('[')) {
    // An IPv6 address, the only form with colons inside (RFC 3986 §3.2.2).
    const m = /^\[([0-9a-fA-F:.]+)\](?::\d*)?$/.exec(host);
    return !m || isIP(m[1] as string) !== 6;
  }
  const m = /^([^:]*)(?::\d*)?$/.exec(host);
  if (!m) return true;
  let name = (m[1] as string).toLowerCase();
  if (isIP(name) === 4 || name === 'localhost') return false;
  return !served.has(name.replace(/\.$/, ''));
}

/**
 * Refuses (HTTP_HOST_NOT_SERVED) a request whose Host, or absolute request target, names a host the
 * server does not answer to (see above). `setting` names the setting that adds names, for the message.
 */
export function refuseUnservedHost(req: IncomingMessage, served: ReadonlySet<string>, setting: string): void {
  // Every Host line, not req.headers.host: Node keeps the first of several there, and a name in
  // another went unlooked at (a request with more than one is refused: RFC 9112 §3.2).
  const hosts: string[] = [];
  const raw = req.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) if ((raw[i] as string).toLowerCase() === 'host') hosts.push(raw[i + 1] as string);
  // An absolute target (`GET http://name/ HTTP/1.1`) is the one a server goes by, Host aside (RFC 9112 §3.2.2).
  const target = req.url ?? '';
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(target)) {
    const authority = /^[a-z][a-z0-9+.-]*:\/\/(?:[^@/?#]*@)?([^/?#]*)/i.exec(target)?.[1];
    hosts.push(authority ?? '');
  }
  for (const host of hosts) {
    if (!hostNotServed(host, served)) continue;
    throw new FieldStreamError(
      'HTTP_HOST_NOT_SERVED',
      `This server is not reached by the name ${JSON.stringify(host.slice(0, 256))}: use localhost or an IP address${served.size > 0 ? `, or ${[...served].slice(0, 8).join(', ')}` : ''}; ${setting} lists the names it also answers to.`,
    );
  }
}
