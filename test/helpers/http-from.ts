import { request } from 'node:http';
import type { IncomingHttpHeaders } from 'node:http';

export interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  /** the body parsed as JSON, or its text when it is not JSON */
  body: any;
}

/**
 * One HTTP request with node:http from a chosen local address (Linux routes all of 127/8 to the
 * loopback): what throttles and proxies key on is the socket's address, which fetch cannot set.
 */
export function requestFrom(url: string | URL, o: { from?: string; method?: string; headers?: Record<string, string>; body?: unknown } = {}): Promise<Answer> {
  const body = o.body === undefined ? undefined : typeof o.body === 'string' ? o.body : JSON.stringify(o.body);
  const headers = { ...(o.headers ?? {}), ...(body !== undefined ? { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) } : {}) };
  return new Promise((resolve, reject) => {
    const req = request(url, { method: o.method ?? 'GET', localAddress: o.from ?? '127.0.0.1', headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => {
        let parsed: unknown = text;
        try {
          parsed = JSON.parse(text);
        } catch {
          /* not JSON */
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: parsed });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}
