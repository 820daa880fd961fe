/**
 * The device's command line:
 *   fieldstream send timeseries '{"temperature": 21.5}'     a reading (or an array of readings)
 *   fieldstream send event '{"eventType": "door_open"}'    an event
 *   fieldstream send file PATH [CONTENT_TYPE]              a file, of any size
 *   fieldstream health '{"battery": 87}'                    values sent with each health message (null removes one)
 *   fieldstream health                                     those values and the last health message
 *   fieldstream status                                     what the running client reports
 *   fieldstream doctor                                     check everything, in order
 * `send`, `health` and `status` talk to the running client's local HTTP input (FIELD_HTTP_PORT).
 */
import { createReadStream, statSync } from 'node:fs';
import { basename } from 'node:path';
import { loadDotenv } from '../../shared/config.ts';
import { terminalText } from '../../shared/terminal-text.ts';
import { FieldClientConfigSchema } from './config.ts';
import { runDoctor } from './doctor.ts';

loadDotenv();
const [command, ...args] = process.argv.slice(2);

/**
 * Where `send`, `health` and `status` reach the running client: its local HTTP input. Without one
 * (FIELD_HTTP_PORT=off, or 0: a port picked at its start) no address would answer, and a URL made of
 * the value would fail as "not running": the setting is named as the cause instead.
 */
function inputBase(): string {
  const port = FieldClientConfigSchema.shape.FIELD_HTTP_PORT.safeParse(process.env.FIELD_HTTP_PORT || undefined);
  if (!port.success || port.data === undefined || port.data === 0) {
    const why = !port.success ? 'is not a port' : port.data === undefined ? 'turns the local HTTP input off' : 'has the client pick a port at its start';
    process.stderr.write(
      `error CONFIG_INVALID: FIELD_HTTP_PORT=${terminalText(process.env.FIELD_HTTP_PORT ?? '')} ${why}: fieldstream send, health and status talk to the running client through that input; set FIELD_HTTP_PORT to the port it listens on (fieldstream doctor needs none)\n`,
    );
    process.exit(78);
  }
  // An IPv6 address (the client listens on one as on any other) goes in brackets in a URL: bare,
  // `http://::1:8081` was an invalid URL, reported as a client that does not run.
  const host = process.env.FIELD_HTTP_HOST || '127.0.0.1';
  return `http://${host.includes(':') ? `[${host}]` : host}:${port.data}`;
}

function usage(): never {
  process.stderr.write(`usage:
  fieldstream send timeseries JSON
  fieldstream send event JSON
  fieldstream send file PATH [CONTENT_TYPE]
  fieldstream health [JSON]
  fieldstream status
  fieldstream doctor
`);
  process.exit(64);
}

async function call(path: string, init: RequestInit & { duplex?: 'half' }): Promise<void> {
  const base = inputBase();
  let res: Response;
  try {
    res = await fetch(`${base}${path}`, init);
  } catch (err) {
    process.stderr.write(`error: the field client does not answer at ${base} (${(err as Error).cause ?? (err as Error).message}); is it running? (FIELD_HTTP_PORT)\n`);
    process.exit(69);
  }
  const body = (await res.json()) as { code?: string; message?: string; messageIds?: string[] };
  if (!res.ok) {
    process.stderr.write(`error ${terminalText(`${body.code}: ${body.message}`)}\n`);
    process.exit(1);
  }
  // The answer holds what the gateway said (its id, its refusals): escaped, as the doctor's lines.
  process.stdout.write(terminalText(body.messageIds ? `accepted ${body.messageIds.length} message(s): ${body.messageIds.join(' ')}\n` : `${JSON.stringify(body, null, 2)}\n`, true));
}

async function main(): Promise<void> {
  if (command === 'send') {
    const [kind, value, extra] = args;
    if (kind === 'timeseries' || kind === 'event') {
      if (!value) usage();
      return call(kind === 'event' ? '/v1/events' : '/v1/timeseries', { method: 'POST', headers: { 'content-type': 'application/json' }, body: value });
    }
    if (kind === 'file') {
      if (!value) usage();
      try {
        statSync(value);
      } catch (err) {
        process.stderr.write(`error FIELD_FILE_UNREADABLE: ${value}: ${(err as NodeJS.ErrnoException).code}\n`);
        process.exit(66);
      }
      const q = new URLSearchParams({ filename: basename(value), ...(extra ? { contentType: extra } : {}) });
      return call(`/v1/files?${q}`, { method: 'POST', body: createReadStream(value) as unknown as BodyInit, duplex: 'half', headers: { 'content-type': extra ?? 'application/octet-stream' } });
    }
    usage();
  }
  if (command === 'health') {
    const [value] = args;
    return value ? call('/v1/health', { method: 'PUT', headers: { 'content-type': 'application/json' }, body: value }) : call('/v1/health', { method: 'GET' });
  }
  if (command === 'status') return call('/status', { method: 'GET' });
  if (command === 'doctor') {
    const results = await runDoctor(process.env);
    const mark = { ok: '✔', warn: '!', fail: '✖' } as const;
    for (const r of results) {
      // A detail may quote the gateway (its welcome, error frame, close reason, refusal): one line, escaped.
      process.stdout.write(`${mark[r.level]} ${r.name.padEnd(13)} ${terminalText(r.detail)}\n`);
      if (r.hint && r.level !== 'ok') process.stdout.write(`  ${' '.repeat(13)} → ${terminalText(r.hint)}\n`);
    }
    process.exit(results.some((r) => r.level === 'fail') ? 1 : 0);
  }
  usage();
}

void main();
