import { randomBytes } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import { connect as tcpConnect, isIP } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import WebSocket from 'ws';
import { z } from 'zod';
import { DownlinkFrameSchema, type DownlinkFrame } from '../../shared/contract/downlink.ts';
import { readSettingFile } from '../../shared/config.ts';
import { parseSigningKey, signMessage } from '../../shared/security/message-auth.ts';
import type { FieldClientConfig } from './config.ts';
import type { CheckResult, Context } from './doctor-context.ts';
import { CERT_REVOKED } from './server-crl.ts';

/* The doctor's checks of one gateway URL, in the order a connection goes: name, TCP, TLS, WebSocket, a test event, the clock. */

const TIMEOUT_MS = 10_000;
/** The WebSocket close code of a connection another one of the same device replaced (GATEWAY_SUPERSEDED). */
const CLOSE_SUPERSEDED = 4009;

/**
 * The host of the URL as a socket takes it: an IPv6 address without the brackets URL.hostname keeps
 * ("[::1]"), as ws connects to it; looked up as a name, it failed every check of a URL the client uses.
 */
function hostOf(url: URL): string {
  return url.hostname.startsWith('[') && url.hostname.endsWith(']') ? url.hostname.slice(1, -1) : url.hostname;
}

/** host:port as written in a URL, an IPv6 address in brackets. */
const where = (host: string, port: number) => `${isIP(host) === 6 ? `[${host}]` : host}:${port}`;

export async function dns(ctx: Context): Promise<CheckResult> {
  const host = hostOf(ctx.url as URL);
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
  return { host: hostOf(url), port: Number(url.port || 443) };
}

export async function tcp(ctx: Context): Promise<CheckResult> {
  const { host, port } = hostPort(ctx);
  const started = Date.now();
  return new Promise((resolve) => {
    const s = tcpConnect({ host, port, timeout: TIMEOUT_MS });
    s.once('connect', () => {
      s.destroy();
      resolve({ name: 'tcp', level: 'ok', detail: `${where(host, port)} reachable in ${Date.now() - started} ms` });
    });
    const fail = (why: string) => {
      s.destroy();
      resolve({ name: 'tcp', level: 'fail', detail: `cannot reach ${where(host, port)}: ${why}`, hint: 'Check the network path and firewalls: the device needs outbound TCP to that port.' });
    };
    s.once('timeout', () => fail('timed out'));
    s.once('error', (err: NodeJS.ErrnoException) => fail(err.code ?? err.message));
  });
}

export async function tlsHandshake(ctx: Context): Promise<CheckResult> {
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

export async function websocket(ctx: Context): Promise<CheckResult> {
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
              : code === 'GATEWAY_RECONNECTING_TOO_FAST' || code === 'GATEWAY_TOO_MANY_CONNECTIONS'
                ? 'The gateway refused for now (this device connected too often in a row, or the gateway is full: docs/errors.md); the client retries by itself. Run the doctor again in a minute.'
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

export async function roundTrip(ctx: Context): Promise<CheckResult> {
  const ws = ctx.ws as WebSocket;
  const id = `doctor-${randomBytes(4).toString('hex')}`;
  const signingKey = deviceSigningKey(ctx.config as FieldClientConfig);
  const how = signingKey ? 'signed' : 'unsigned: a distributor requiring signatures refuses it';
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
          ? { name: 'round trip', level: 'ok', detail: `test event acknowledged in ${Date.now() - started} ms (the DMZ broker has it; ${how})` }
          : { name: 'round trip', level: 'fail', detail: `${f.code}: ${f.message}` },
      );
    });
    ws.send(JSON.stringify(testEvent(ctx.config as FieldClientConfig, id, signingKey)));
  });
}

/**
 * The round trip's event, signed as the device's client signs (message-auth.ts, version 1) when
 * the device has a signing key: unsigned, a distributor requiring signatures refused it
 * (SECURITY_UNSIGNED), and the console showed a security event of the device for each doctor run.
 * Its identity is an epoch of its own (`doctor-` and 8 random hex digits, sequence number 0), so
 * it never meets a number of the client's queue in the distributor's replay window.
 */
function testEvent(c: FieldClientConfig, messageId: string, key: Buffer | undefined) {
  const payload = { eventType: 'fieldstream_doctor', message: 'connectivity check', timestamp: new Date().toISOString() };
  const signed = key ? { seq: 0, auth: signMessage(key, { deviceId: c.DEVICE_ID, dataType: 'event', epoch: `doctor-${randomBytes(4).toString('hex')}`, seq: 0, ts: Date.now(), payload }) } : {};
  return { deviceId: c.DEVICE_ID, dataType: 'event', messageId, payload, ...signed };
}

/** The device's signing key, or undefined without one (or one the commands check fails: it says why). */
function deviceSigningKey(c: FieldClientConfig): Buffer | undefined {
  if (!c.FIELD_SIGNING_KEY_FILE) return undefined;
  try {
    return parseSigningKey(readSettingFile('FIELD_SIGNING_KEY_FILE', c.FIELD_SIGNING_KEY_FILE));
  } catch {
    return undefined;
  }
}

export async function clockSkew(ctx: Context): Promise<CheckResult> {
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
