/**
 * InfluxDB 1.x's HTTP access log (`[http] log-enabled = true`): one line per request, in the
 * Common Log Format followed by the request id and the time the server took, in microseconds:
 *
 *   [httpd] 127.0.0.1 - user [02/Dec/2026:00:29:35 +0000] "POST /write?db=bench&precision=ms HTTP/1.1" 204 0 "-" "-" 738ff10c-… 37555
 *
 * The time in brackets is when the request began, to the second. The sustained load reads it to
 * tell the database's own time per write request from what the distributor measured around it
 * (its event loop, the network, the line protocol and gzip it builds first).
 */

/** milliseconds: a write request the database took longer than this is counted as slow in its window */
export const SLOW_WRITE_MS = 250;

export interface ServerWrite {
  /** epoch ms the request began (to the second) */
  atMs: number;
  /** milliseconds the server took */
  ms: number;
  status: number;
}

const WRITE_LINE = /^\[httpd\] \S+ \S+ \S+ \[(\d{2})\/(\w{3})\/(\d{4}):(\d{2}):(\d{2}):(\d{2}) ([+-]\d{4})\] "POST \/write\?\S* HTTP\/[\d.]+" (\d{3}) \S+ "[^"]*" "[^"]*" \S+ (\d+)$/;
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** The write requests in a log's text; every other line (queries, the server's own log) is skipped. */
export function serverWrites(log: string): ServerWrite[] {
  const out: ServerWrite[] = [];
  for (const line of log.split('\n')) {
    const m = WRITE_LINE.exec(line);
    if (!m) continue;
    const [, day, mon, year, hh, mm, ss, zone, status, micros] = m as unknown as string[];
    const month = MONTHS.indexOf(mon as string);
    if (month < 0) continue;
    const offsetMin = (zone?.startsWith('-') ? -1 : 1) * (Number(zone?.slice(1, 3)) * 60 + Number(zone?.slice(3)));
    const atMs = Date.UTC(Number(year), month, Number(day), Number(hh), Number(mm), Number(ss)) - offsetMin * 60_000;
    out.push({ atMs, ms: Number(micros) / 1000, status: Number(status) });
  }
  return out;
}

/** The slowest write that began in [fromMs, toMs), in ms (0: none), and how many took over `overMs`. */
export function slowestWrite(writes: readonly ServerWrite[], fromMs: number, toMs: number, overMs: number): { slowestMs: number; over: number } {
  let slowestMs = 0;
  let over = 0;
  for (const w of writes) {
    if (w.atMs < fromMs || w.atMs >= toMs) continue;
    slowestMs = Math.max(slowestMs, w.ms);
    if (w.ms > overMs) over++;
  }
  return { slowestMs: Math.round(slowestMs), over };
}
