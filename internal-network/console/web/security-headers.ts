import { CONSOLE } from '../../../shared/limits.ts';

/**
 * The console's protective headers, the one list of them: written on every answer of its port,
 * the pages, files and API answers, its live streams, the management API's, and every error among
 * them, including the ones no route or hook sees (a URL that cannot be decoded, a request without
 * Host, a request Node's parser refuses). They were set by a plugin's onRequest hook, which those
 * answers never reach: a browser got them without the CSP, nosniff or the framing refusal.
 * server.ts sets them on the response before fastify sees the request, and writes them into the
 * parser's refusals itself. docs/console.md names them.
 */

/** What the pages may load: only their own origin, no plugin, no framing by anyone. */
const CONTENT_SECURITY_POLICY: ReadonlyArray<readonly [string, string]> = [
  ['default-src', "'self'"],
  ['script-src', "'self'"],
  ['style-src', "'self'"],
  ['img-src', "'self' data:"],
  ['connect-src', "'self'"],
  ['font-src', "'self'"],
  ['object-src', "'none'"],
  ['base-uri', "'none'"],
  ['form-action', "'self'"],
  ['frame-ancestors', "'none'"],
];

/**
 * The headers, by lower-case name. `secure`: the console is reached over HTTPS (CONSOLE_COOKIE_SECURE),
 * so browsers are also told to keep to HTTPS (CONSOLE.hstsMaxAgeS).
 */
export function consoleSecurityHeaders(secure: boolean): Readonly<Record<string, string>> {
  return {
    'content-security-policy': CONTENT_SECURITY_POLICY.map(([directive, sources]) => `${directive} ${sources}`).join(';'),
    // For browsers without CSP's frame-ancestors, the same: no framing at all, not even by the
    // console's own origin (SAMEORIGIN would let a page of it frame another).
    'x-frame-options': 'DENY',
    // An error's JSON is never taken for a script or a page, whatever a browser would guess.
    'x-content-type-options': 'nosniff',
    // No URL of the console (a device id in a path) goes to another site.
    'referrer-policy': 'no-referrer',
    'cross-origin-opener-policy': 'same-origin',
    'cross-origin-resource-policy': 'same-origin',
    'origin-agent-cluster': '?1',
    'x-dns-prefetch-control': 'off',
    'x-download-options': 'noopen',
    'x-permitted-cross-domain-policies': 'none',
    // The old XSS filters of browsers did harm of their own; 0 turns them off.
    'x-xss-protection': '0',
    ...(secure ? { 'strict-transport-security': `max-age=${CONSOLE.hstsMaxAgeS}; includeSubDomains` } : {}),
  };
}
