import { createPrivateKey, X509Certificate, randomBytes } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import { existsSync, readdirSync, readFileSync, statfsSync, statSync } from 'node:fs';
import { connect as tcpConnect, isIP } from 'node:net';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import WebSocket from 'ws';
import { z } from 'zod';
import { DownlinkFrameSchema, type DownlinkFrame } from '../../shared/contract/downlink.ts';
import { isFieldStreamError } from '../../shared/errors.ts';
import { TIMINGS } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';
import { daysUntil } from '../../shared/tls-files.ts';
import { loadFieldClientConfig, type FieldClientConfig } from './config.ts';
import { gatewayUrls } from './gateway-urls.ts';
import { readDeviceToken } from './gateway-connection.ts';
import { CERT_REVOKED, serverIdentityCheck, type ServerCrl } from './server-crl.ts';
import { ServerCrlSource } from './server-crl-source.ts';
import { rejectedBytes } from './rejected.ts';

/** A check's verdict: ok, a warning (works, but act soon), or a failure with what to do. */
export interface CheckResult {
  name: string;
  level: 'ok' | 'warn' | 'fail';
  detail: string;
  hint?: string;
}

type Check = (ctx: Context) => Promise<CheckResult | CheckResult[]>;
interface Context {
  env: Record<string, string | undefined>;
  config?: Readonly<FieldClientConfig>;
  tls?: { ca: string; cert?: string; key?: string; checkServerIdentity?: ReturnType<typeof serverIdentityCheck> };
  /** the device token (FIELD_TOKEN_FILE), sent as the gateway's token route expects it */
  token?: string;
  url?: URL;
  welcome?: { gatewayId: string; serverTime: number; receivedAt: number; rttMs: number };
  ws?: WebSocket;
  /** how the gateway closed the doctor's WebSocket, once it did */
  closed?: { code: number; reason: string };
}

const TIMEOUT_MS = 10_000;
/** The WebSocket close code of a connection another one of the same device replaced (GATEWAY_SUPERSEDED). */
const CLOSE_SUPERSEDED = 4009;

/**
 * `fieldstream doctor`: checks, in order, what a device needs to deliver its data, and says for
 * each failure what to do. A failed step stops the steps that depend on it.
 */
export async function runDoctor(env: Record<string, string | undefined>): Promise<CheckResult[]> {
  const ctx: Context = { env };
  const results: CheckResult[] = [];
  const local: Check[] = [configuration, commandSafety, certificates, serverCrl];
  const network: Check[] = [dns, tcp, tlsHandshake, websocket, roundTrip, clockSkew];
  const run = async (step: Check) => {
    const r = await step(ctx).catch((err: unknown): CheckResult => ({ name: step.name, level: 'fail', detail: (err as Error).message }));
    return Array.isArray(r) ? r : [r];
  };
  for (const step of local) {
    const list = await run(step);
    results.push(...list);
    if (list.some((x) => x.level === 'fail')) {
      if (step === configuration) return results;
      // the network steps cannot succeed; the local queue and disk can still be looked at
      results.push(...(await queueAndDisk(ctx)));
      return results;
    }
  }
  // Every URL of GATEWAY_URL in turn (one per DMZ server): the client fails over between them, so
  // each must work; with several, each result names the URL it is about.
  const urls = gatewayUrls((ctx.config as FieldClientConfig).GATEWAY_URL);
  for (const url of urls) {
    ctx.url = new URL(url);
    ctx.welcome = undefined;
    ctx.ws?.terminate();
    ctx.ws = undefined;
    ctx.closed = undefined;
    for (const step of network) {
      const list = await run(step);
      results.push(...(urls.length > 1 ? list.map((x) => ({ ...x, detail: `${url}: ${x.detail}` })) : list));
      if (list.some((x) => x.level === 'fail')) break; // later steps for this URL cannot succeed
    }
  }
  ctx.ws?.terminate();
  results.push(...(await queueAndDisk(ctx)));
  return results;
}

async function configuration(ctx: Context): Promise<CheckResult> {
  try {
    ctx.config = loadFieldClientConfig(ctx.env);
  } catch (err) {
    return { name: 'configuration', level: 'fail', detail: isFieldStreamError(err) ? err.message : String(err), hint: 'Fix the named variables in .env (see .env.example).' };
  }
  const urls = gatewayUrls(ctx.config.GATEWAY_URL);
  return { name: 'configuration', level: 'ok', detail: `device ${ctx.config.DEVICE_ID}, ${urls.length > 1 ? `gateways ${urls.join(' ')} (tried in turn)` : `gateway ${urls[0]}`}` };
}

/** Commands drive actuators: say when the device would run commands nobody authenticated. */
async function commandSafety(ctx: Context): Promise<CheckResult> {
  const c = ctx.config as FieldClientConfig;
  const name = 'commands';
  if (!c.FIELD_SIGNING_KEY_FILE) {
    if (c.FIELD_ALLOW_UNSIGNED_COMMANDS) {
      return {
        name,
        level: 'warn',
        detail: 'FIELD_ALLOW_UNSIGNED_COMMANDS=true and no FIELD_SIGNING_KEY_FILE: commands run unauthenticated; whoever holds the DMZ can command this device',
        hint: 'Set FIELD_SIGNING_KEY_FILE to the signing.key of the device bundle and remove FIELD_ALLOW_UNSIGNED_COMMANDS.',
      };
    }
    return { name, level: c.FIELD_COMMANDS_FILE ? 'warn' : 'ok', detail: 'no FIELD_SIGNING_KEY_FILE: every command is refused (FIELD_COMMAND_UNSIGNED)', hint: 'Set FIELD_SIGNING_KEY_FILE to the signing.key of the device bundle.' };
  }
  if (c.FIELD_ALLOW_UNSIGNED_COMMANDS) {
    return { name, level: 'warn', detail: 'FIELD_ALLOW_UNSIGNED_COMMANDS=true has no effect on a device with a signing key: its commands must be authenticated', hint: 'Remove FIELD_ALLOW_UNSIGNED_COMMANDS.' };
  }
  return { name, level: 'ok', detail: `only commands authenticated for this device run (issued within ${c.FIELD_COMMAND_MAX_AGE_S} s, clock skew ${c.FIELD_COMMAND_CLOCK_SKEW_S} s)` };
}

async function certificates(ctx: Context): Promise<CheckResult[]> {
  const c = ctx.config as FieldClientConfig;
  if (c.FIELD_TOKEN_FILE !== undefined) return tokenCredentials(ctx, c);
  const files: Record<string, string> = {};
  for (const [variable, path] of [['FIELD_CA_FILE', c.FIELD_CA_FILE], ['FIELD_CERT_FILE', c.FIELD_CERT_FILE], ['FIELD_KEY_FILE', c.FIELD_KEY_FILE]] as const) {
    try {
      files[variable] = readFileSync(path, 'utf8');
    } catch (err) {
      return [{ name: 'certificates', level: 'fail', detail: `${variable}=${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, hint: 'Unpack the device bundle and point the variable at its file.' }];
    }
  }
  let cert: X509Certificate;
  let ca: X509Certificate;
  try {
    cert = new X509Certificate(files.FIELD_CERT_FILE as string);
    ca = new X509Certificate(files.FIELD_CA_FILE as string);
  } catch (err) {
    return [{ name: 'certificates', level: 'fail', detail: `not a PEM certificate: ${(err as Error).message}` }];
  }
  try {
    if (!cert.checkPrivateKey(createPrivateKey(files.FIELD_KEY_FILE as string))) {
      return [{ name: 'certificates', level: 'fail', detail: 'FIELD_KEY_FILE is not the key of FIELD_CERT_FILE', hint: 'Use the client.key from the same bundle as client.crt.' }];
    }
  } catch (err) {
    return [{ name: 'certificates', level: 'fail', detail: `FIELD_KEY_FILE is not a private key: ${(err as Error).message}` }];
  }
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) {
    return [{ name: 'certificates', level: 'fail', detail: 'FIELD_CERT_FILE was not issued by the CA in FIELD_CA_FILE', hint: 'Both must come from the same bundle (scripts/generate-client-cert.sh).' }];
  }
  const cn = /(?:^|\n)CN=([^\n]+)/.exec(cert.subject)?.[1];
  if (cn !== c.DEVICE_ID) {
    return [{ name: 'certificates', level: 'fail', detail: `the certificate is for device "${cn}", DEVICE_ID is "${c.DEVICE_ID}"`, hint: 'The gateway takes the device id from the certificate: make DEVICE_ID match it.' }];
  }
  ctx.tls = { ca: files.FIELD_CA_FILE as string, cert: files.FIELD_CERT_FILE as string, key: files.FIELD_KEY_FILE as string };
  const now = Date.now();
  const notAfter = Date.parse(cert.validTo);
  if (Date.parse(cert.validFrom) > now) return [{ name: 'certificates', level: 'fail', detail: `not valid before ${cert.validFrom}`, hint: 'Check the device clock.' }];
  if (notAfter < now) return [{ name: 'certificates', level: 'fail', detail: `expired on ${cert.validTo}`, hint: `Issue a new one: scripts/generate-client-cert.sh ${c.DEVICE_ID} --renew` }];
  const days = daysUntil(notAfter, now);
  if (days < TIMINGS.certWarnDays) return [{ name: 'certificates', level: 'warn', detail: `expires in ${days} days (${cert.validTo})`, hint: `Renew soon: scripts/generate-client-cert.sh ${c.DEVICE_ID} --renew` }];
  return [{ name: 'certificates', level: 'ok', detail: `CN ${cn}, key matches, issued by our CA, valid ${days} more days` }];
}

/** The CRL the server's certificate is checked against (server-crl.ts), read as the client reads it. */
async function serverCrl(ctx: Context): Promise<CheckResult> {
  const c = ctx.config as FieldClientConfig;
  const tls = ctx.tls as NonNullable<Context['tls']>;
  const hint = "Copy the CA's current certs/ca.crl there (docs/field-client.md, \"The server's certificate and the CA's CRL\").";
  let crl: ServerCrl | undefined;
  try {
    // The file's, or the newer one a gateway handed over (FIELD_DATA_DIR/ca.crl), as the client takes it.
    crl = ServerCrlSource.open(c.FIELD_CRL_FILE, c.FIELD_CA_FILE, tls.ca, createLogger('doctor', 'silent'), c.FIELD_DATA_DIR).current();
  } catch (err) {
    return { name: 'crl', level: 'fail', detail: (err as Error).message, hint };
  }
  if (!crl) return { name: 'crl', level: 'ok', detail: "no CRL (FIELD_CRL_FILE unset, no ca.crl beside FIELD_CA_FILE): a revoked server certificate is taken" };
  tls.checkServerIdentity = serverIdentityCheck(crl);
  if (crl.notCurrent !== undefined) return { name: 'crl', level: 'warn', detail: `${crl.path} (FIELD_CRL_NOT_CURRENT): ${crl.notCurrent}`, hint };
  return { name: 'crl', level: 'ok', detail: `${crl.path}: ${crl.revoked} certificates revoked, valid until ${crl.nextUpdate?.toISOString() ?? 'no date'}` };
}

async function dns(ctx: Context): Promise<CheckResult> {
  const host = (ctx.url as URL).hostname;
  if (isIP(host)) return { name: 'dns', level: 'ok', detail: `${host} is an address` };
  try {
    const addrs = await lookup(host, { all: true });
    return { name: 'dns', level: 'ok', detail: `${host} → ${addrs.map((a) => a.address).join(', ')}` };
  } catch (err) {
    return { name: 'dns', level: 'fail', detail: `cannot resolve ${host}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, hint: 'Check the device DNS and that DOMAIN_NAME points at the DMZ server.' };
  }
}

function hostPort(ctx: Context): { host: string; port: number } {
  const url = ctx.url as URL;
  return { host: url.hostname, port: Number(url.port || 443) };
}

async function tcp(ctx: Context): Promise<CheckResult> {
  const { host, port } = hostPort(ctx);
  const started = Date.now();
  return new Promise((resolve) => {
    const s = tcpConnect({ host, port, timeout: TIMEOUT_MS });
    s.once('connect', () => {
      s.destroy();
      resolve({ name: 'tcp', level: 'ok', detail: `${host}:${port} reachable in ${Date.now() - started} ms` });
    });
    const fail = (why: string) => {
      s.destroy();
      resolve({ name: 'tcp', level: 'fail', detail: `cannot reach ${host}:${port}: ${why}`, hint: 'Check the network path and firewalls: the device needs outbound TCP to that port.' });
    };
    s.once('timeout', () => fail('timed out'));
    s.once('error', (err: NodeJS.ErrnoException) => fail(err.code ?? err.message));
  });
}

/** A token device: the CA file, and a token issued to this very DEVICE_ID (read as the client reads it). */
function tokenCredentials(ctx: Context, c: FieldClientConfig): CheckResult[] {
  let ca: string;
  try {
    ca = readFileSync(c.FIELD_CA_FILE, 'utf8');
    new X509Certificate(ca);
  } catch (err) {
    return [{ name: 'credentials', level: 'fail', detail: `FIELD_CA_FILE=${c.FIELD_CA_FILE}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, hint: 'Unpack the device bundle and point the variable at its ca.crt.' }];
  }
  try {
    ctx.token = readDeviceToken(c.FIELD_TOKEN_FILE as string, c.DEVICE_ID);
  } catch (err) {
    // The message names the file and the device, never the token.
    return [{ name: 'credentials', level: 'fail', detail: (err as Error).message, hint: 'Use the device.token of this device\'s bundle (fieldstream-admin devices add ID --token).' }];
  }
  ctx.tls = { ca };
  return [{ name: 'credentials', level: 'ok', detail: `a device token for ${c.DEVICE_ID} (FIELD_TOKEN_FILE), no client certificate: GATEWAY_URL must be the token route` }];
}

async function tlsHandshake(ctx: Context): Promise<CheckResult> {
  const { host, port } = hostPort(ctx);
  return new Promise((resolve) => {
    const s = tlsConnect({ host, port, servername: isIP(host) ? undefined : host, ...(ctx.tls as object), rejectUnauthorized: false, timeout: TIMEOUT_MS });
    s.once('secureConnect', () => {
      const ok = s.authorized;
      const proto = s.getProtocol();
      s.end();
      resolve(
        ok
          ? { name: 'tls', level: 'ok', detail: `${proto}, the server's certificate is valid for ${host}` }
          : String(s.authorizationError) === CERT_REVOKED // (Node gives the code, not an Error)
            ? { name: 'tls', level: 'fail', detail: "the server's certificate is revoked (FIELD_GATEWAY_CERT_REVOKED): the key of a DMZ certificate renewed after a compromise", hint: 'If this is your DMZ server, give it the renewed certs/dmz/ (docs/operations.md, "Recovering from a DMZ compromise"); else someone diverts this device\'s traffic.' }
            : { name: 'tls', level: 'fail', detail: `the server's certificate is not trusted: ${String(s.authorizationError)}`, hint: 'FIELD_CA_FILE must be the FieldStream CA, and the gateway certificate must name this host.' },
      );
    });
    s.once('timeout', () => {
      s.destroy();
      resolve({ name: 'tls', level: 'fail', detail: 'TLS handshake timed out' });
    });
    s.once('error', (err) => resolve({ name: 'tls', level: 'fail', detail: `TLS handshake failed: ${err.message}` }));
  });
}

/** The body of a refused upgrade: the gateway's coded error. */
const RefusalSchema = z.object({ code: z.string().optional() });

/** A frame from the gateway, checked as the field client checks it; undefined when it is not one. */
function frameOf(text: string): DownlinkFrame | undefined {
  try {
    return DownlinkFrameSchema.safeParse(JSON.parse(text)).data;
  } catch {
    return undefined;
  }
}

async function websocket(ctx: Context): Promise<CheckResult> {
  const started = Date.now();
  return new Promise((resolve) => {
    const ws = new WebSocket((ctx.url as URL).toString(), {
      ...(ctx.tls as object),
      // The token in a header, never in the URL, as the field client sends it.
      ...(ctx.token !== undefined ? { headers: { authorization: `Bearer ${ctx.token}` } } : {}),
      perMessageDeflate: false,
      handshakeTimeout: TIMEOUT_MS,
    });
    ctx.ws = ws;
    ws.once('close', (code, reason) => {
      // Only this URL's own connection: the one before it, terminated, reports its close later.
      if (ctx.ws === ws) ctx.closed = { code, reason: reason.toString() };
    });
    const timer = setTimeout(() => resolve({ name: 'websocket', level: 'fail', detail: 'no welcome from the gateway' }), TIMEOUT_MS);
    ws.on('message', (data) => {
      const f = frameOf(data.toString());
      if (f?.type !== 'welcome') return;
      clearTimeout(timer);
      const rtt = Date.now() - started;
      ctx.welcome = { gatewayId: f.gatewayId, serverTime: f.serverTime, receivedAt: Date.now(), rttMs: rtt };
      resolve({ name: 'websocket', level: 'ok', detail: `gateway ${f.gatewayId} accepted device ${f.deviceId}` });
    });
    ws.once('unexpected-response', (_q, res) => {
      clearTimeout(timer);
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => {
        let code = '';
        try {
          code = RefusalSchema.safeParse(JSON.parse(body)).data?.code ?? '';
        } catch {
          /* not ours */
        }
        resolve({ name: 'websocket', level: 'fail', detail: `upgrade refused: HTTP ${res.statusCode} ${code}`, hint:
            code === 'GATEWAY_WRONG_PATH'
              ? 'Check the path of GATEWAY_URL (/ws).'
              : ctx.token !== undefined
                ? 'Check the token and that GATEWAY_URL is the token route (docs/errors.md: GATEWAY_TOKEN_*).'
                : 'Check that the certificate is a device certificate of this CA.',
        });
      });
    });
    ws.once('error', (err) => {
      clearTimeout(timer);
      resolve({ name: 'websocket', level: 'fail', detail: err.message, hint: /certificate|alert/.test(err.message) ? 'The server refused this device certificate: is it from this deployment\u2019s CA, and not revoked?' : undefined });
    });
  });
}

/**
 * The gateway closed the doctor's connection before the test event's answer. 4009 is no fault of
 * the pipeline: the gateway keeps one connection per device, the newest (GATEWAY_SUPERSEDED), and the
 * device's own client, when it runs, reconnects within a fraction of a second and takes over.
 */
function closedBeforeAck(ctx: Context, closed: { code: number; reason: string }): CheckResult {
  const deviceId = (ctx.config as FieldClientConfig).DEVICE_ID;
  if (closed.code === CLOSE_SUPERSEDED || closed.reason === 'GATEWAY_SUPERSEDED') {
    return {
      name: 'round trip',
      level: 'fail',
      detail: `GATEWAY_SUPERSEDED: another connection of device ${deviceId} took over before the test event was acknowledged (close code ${closed.code})`,
      hint: "Another connection of this device took over (the gateway keeps the newest): stop the device's client while running doctor (in its bundle folder: docker-compose stop field-client, then start it again), or run doctor with another device id.",
    };
  }
  return {
    name: 'round trip',
    level: 'fail',
    detail: `the gateway closed the connection before the test event was acknowledged: close code ${closed.code}${closed.reason ? ` ${closed.reason}` : ''}`,
    hint: 'Look up the reason in docs/errors.md, and the gateway\u2019s log on the DMZ server.',
  };
}

async function roundTrip(ctx: Context): Promise<CheckResult> {
  const ws = ctx.ws as WebSocket;
  const id = `doctor-${randomBytes(4).toString('hex')}`;
  const started = Date.now();
  // Closed between the welcome and now (a client of the device took over at once, say).
  if (ctx.closed) return closedBeforeAck(ctx, ctx.closed);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve({ name: 'round trip', level: 'fail', detail: 'no ack within 10 s', hint: 'The gateway cannot reach its broker; see the DMZ server.' }), TIMEOUT_MS);
    ws.once('close', (code, reason) => {
      clearTimeout(timer);
      resolve(closedBeforeAck(ctx, { code, reason: reason.toString() }));
    });
    ws.on('message', (data) => {
      const f = frameOf(data.toString());
      if ((f?.type !== 'ack' && f?.type !== 'error') || !f.messageIds?.includes(id)) return;
      clearTimeout(timer);
      resolve(
        f.type === 'ack'
          ? { name: 'round trip', level: 'ok', detail: `test event acknowledged in ${Date.now() - started} ms (the DMZ broker has it)` }
          : { name: 'round trip', level: 'fail', detail: `${f.code}: ${f.message}` },
      );
    });
    ws.send(
      JSON.stringify({
        deviceId: (ctx.config as FieldClientConfig).DEVICE_ID,
        dataType: 'event',
        messageId: id,
        payload: { eventType: 'fieldstream_doctor', message: 'connectivity check', timestamp: new Date().toISOString() },
      }),
    );
  });
}

async function clockSkew(ctx: Context): Promise<CheckResult> {
  const w = ctx.welcome;
  if (!w) return { name: 'clock', level: 'warn', detail: 'no gateway time to compare with' };
  // The gateway stamped its time about half a round trip before we received it.
  const skew = w.receivedAt - w.rttMs / 2 - w.serverTime;
  const s = (Math.abs(skew) / 1000).toFixed(1);
  const side = skew > 0 ? 'ahead of' : 'behind';
  if (Math.abs(skew) > 30_000) return { name: 'clock', level: 'fail', detail: `the device clock is ${s} s ${side} the gateway`, hint: 'Enable NTP (timedatectl set-ntp true): readings carry the device time.' };
  if (Math.abs(skew) > 2_000) return { name: 'clock', level: 'warn', detail: `the device clock is ${s} s ${side} the gateway`, hint: 'Enable NTP.' };
  return { name: 'clock', level: 'ok', detail: `within ${s} s of the gateway` };
}

/**
 * What is set aside as refused (rejected.jsonl, rejected/): it counts against FIELD_QUEUE_MAX_BYTES
 * until the operator moves it off the device. `held`: refused messages the running client holds in
 * its queue for lack of room (undefined when its status was not asked for).
 */
function rejectedCheck(c: FieldClientConfig, bytes: number, held: number | undefined): CheckResult {
  const where = join(c.FIELD_DATA_DIR, 'rejected.jsonl');
  const share = `${bytes} bytes, ${((bytes / c.FIELD_QUEUE_MAX_BYTES) * 100).toFixed(1)}% of FIELD_QUEUE_MAX_BYTES`;
  const hint = `Look at ${where} and ${join(c.FIELD_DATA_DIR, 'rejected')}/ (the gateway's code says what is wrong), then move them off the device: the client takes the room back within a second, no restart.`;
  if (held !== undefined && held > 0) {
    return { name: 'set aside', level: 'fail', detail: `${held} refused messages wait in the queue for room to be set aside (FIELD_REJECTED_FULL); ${share} set aside`, hint };
  }
  if (bytes > 0) return { name: 'set aside', level: 'warn', detail: `refused messages set aside: ${share}`, hint };
  return { name: 'set aside', level: 'ok', detail: 'nothing refused by the gateway is set aside' };
}

async function queueAndDisk(ctx: Context): Promise<CheckResult[]> {
  const c = ctx.config as FieldClientConfig;
  const out: CheckResult[] = [];
  let status:
    | { connection?: { state: string }; queue?: { depth: number; oldestUnsentAt: string | null }; lastAckAt?: string | null; rejected?: { held: number } }
    | undefined;
  if (c.FIELD_HTTP_PORT !== undefined) {
    status = await fetch(`http://${c.FIELD_HTTP_HOST}:${c.FIELD_HTTP_PORT}/status`, { signal: AbortSignal.timeout(3000) })
      .then((r) => r.json() as Promise<typeof status>)
      .catch(() => undefined);
  }
  const queueDir = join(c.FIELD_DATA_DIR, 'queue');
  const queueBytes = existsSync(queueDir) ? readdirSync(queueDir).reduce((n, f) => n + statSync(join(queueDir, f)).size, 0) : 0;
  const setAside = rejectedBytes(c.FIELD_DATA_DIR);
  if (status?.queue) {
    const old = status.queue.oldestUnsentAt ? ` — oldest unsent from ${status.queue.oldestUnsentAt}` : '';
    out.push({
      name: 'queue',
      level: status.queue.depth > 0 && status.connection?.state !== 'connected' ? 'warn' : 'ok',
      detail: `client ${status.connection?.state}, ${status.queue.depth} messages queued (${queueBytes} bytes)${old}; last ack ${status.lastAckAt ?? 'never'}`,
    });
  } else {
    const why = c.FIELD_HTTP_PORT === undefined ? 'FIELD_HTTP_PORT=off: no client status asked for' : "the client's status endpoint is not answering: is it running?";
    out.push({ name: 'queue', level: 'ok', detail: `${queueBytes} bytes queued in ${queueDir} (${why})` });
  }
  out.push(rejectedCheck(c, setAside, status?.rejected?.held));
  try {
    const fs = statfsSync(existsSync(c.FIELD_DATA_DIR) ? c.FIELD_DATA_DIR : '/');
    const free = fs.bavail * fs.bsize;
    // What is set aside counts against the same cap, so the queue may grow only into the rest.
    const room = c.FIELD_QUEUE_MAX_BYTES - queueBytes - setAside;
    const mib = (n: number) => `${Math.round(n / 1048576)} MiB`;
    if (free < 64 * 1048576) out.push({ name: 'disk', level: 'fail', detail: `${mib(free)} free in ${c.FIELD_DATA_DIR}`, hint: 'Free disk space: readings cannot be queued.' });
    else if (free < room) out.push({ name: 'disk', level: 'warn', detail: `${mib(free)} free, less than the queue may still grow (${mib(room)})`, hint: 'Lower FIELD_QUEUE_MAX_BYTES or free space.' });
    else out.push({ name: 'disk', level: 'ok', detail: `${mib(free)} free in ${c.FIELD_DATA_DIR}` });
  } catch (err) {
    out.push({ name: 'disk', level: 'warn', detail: `cannot measure free space: ${(err as Error).message}` });
  }
  return out;
}
