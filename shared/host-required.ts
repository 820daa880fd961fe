import type { IncomingMessage } from 'node:http';

/**
 * Why a request's Host is refused, or undefined. RFC 9112 §3.2: the server answers 400 to an
 * HTTP/1.1 request without Host (an HTTP/1.0 one may name none), and to any request naming it more
 * than once: Node took the first and served it, while a proxy or cache in front may have gone by
 * another. Node's own check of the first (requireHostHeader) answered with no body, no code and none
 * of a server's headers: the console and the command API turn it off and refuse the request
 * themselves, as HTTP_MALFORMED in their error shape, the connection closed.
 */
export function hostRefusal(req: IncomingMessage): string | undefined {
  let hosts = 0;
  for (let i = 0; i < req.rawHeaders.length; i += 2) if (req.rawHeaders[i]?.toLowerCase() === 'host') hosts++;
  if (hosts > 1) return `A request must name its host once (RFC 9112 §3.2); this one has ${hosts} Host headers. The connection is closed.`;
  if (hosts === 0 && req.httpVersion === '1.1') return 'An HTTP/1.1 request must name its host (a Host header, RFC 9112 §3.2); the connection is closed.';
  return undefined;
}
