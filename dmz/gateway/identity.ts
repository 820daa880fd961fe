import { X509Certificate } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { DeviceIdSchema } from '../../shared/contract/primitives.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { LIMITS } from '../../shared/limits.ts';
import { bearerToken } from '../../shared/security/device-token.ts';
import type { DeviceTokens, TokenIdentity } from './device-tokens.ts';

/**
 * A device's identity is the CN of a client certificate verified against our CA, and nothing the
 * device writes in a message. The certificate must also be a *device* certificate (OU "devices"):
 * a service certificate from the same CA does not make its holder a device.
 *
 * Two ways to learn it:
 * - `tls`: the gateway terminates TLS itself (npm start) and reads the verified peer certificate.
 * - `proxy`: Caddy terminates the device's TLS and forwards the verified certificate in a header.
 *   The header is believed only on a connection whose own client certificate is a trusted proxy's
 *   (CN "edge" by default), or that came through the gateway's Unix socket, which only Caddy's
 *   user may open (EDGE_HOP=unix): a client, or anything else in the DMZ, cannot forge it. Caddy
 *   replaces any header of that name a device sends.
 *
 * Behind Caddy, a device without a certificate may come by the token route (CADDY_TOKEN_ROUTE):
 * Caddy marks each request with the route it came by (X-FieldStream-Route, always set by Caddy,
 * so a device cannot choose), and on the token route the identity is the device id its bearer
 * token proves against the slow hashes of device-tokens.ts; a certificate header is never believed
 * there. Without GATEWAY_TOKEN_AUTH=on, the token route is refused.
 */
export interface DeviceIdentity {
  deviceId: string;
  /** certificate serial, for the log and revocation */
  serial: string;
  /** epoch ms when the certificate expires */
  notAfter: number;
  /** set when the device proved itself with a device token instead of a certificate */
  token?: TokenIdentity;
  /**
   * The serial of the proxy's own certificate that forwarded the device (EDGE_HOP=mtls): a proxy
   * certificate revoked (`--renew-dmz`, after a DMZ compromise) forwards no one, and its connections close.
   */
  proxySerial?: string;
}

export type IdentifyDevice = (req: IncomingMessage) => DeviceIdentity | Promise<DeviceIdentity>;

/** The header Caddy fills with `{http.request.tls.client.certificate_der_base64}`. */
export const CLIENT_CERT_HEADER = 'x-fieldstream-client-cert';
/** The route a request came by at Caddy: "certificate" or "token" (set by Caddy on every request). */
export const ROUTE_HEADER = 'x-fieldstream-route';
/** The device's address on the token route (`{http.request.remote.host}`, set by Caddy). */
export const CLIENT_ADDR_HEADER = 'x-fieldstream-client-addr';

function deviceFrom(cn: unknown, ou: unknown, serial: string, validTo: string): DeviceIdentity {
  if (typeof cn !== 'string' || ou !== 'devices' || !DeviceIdSchema.safeParse(cn).success) {
    throw new FieldStreamError('GATEWAY_NOT_A_DEVICE_CERTIFICATE', undefined, { cn: typeof cn === 'string' ? cn.slice(0, 100) : null, ou: typeof ou === 'string' ? ou : null });
  }
  return { deviceId: cn, serial, notAfter: Date.parse(validTo) };
}

function verifiedPeer(socket: TLSSocket) {
  if (!socket.authorized) {
    throw new FieldStreamError('GATEWAY_NO_CLIENT_CERTIFICATE', `No verified client certificate (${socket.authorizationError ?? 'none presented'}).`);
  }
  return socket.getPeerCertificate();
}

export function identifyByTls(): IdentifyDevice {
  return (req) => {
    const cert = verifiedPeer(req.socket as TLSSocket);
    return deviceFrom(cert.subject?.CN, cert.subject?.OU, cert.serialNumber, cert.valid_to);
  };
}

/** RFC 4514-style subject lines as Node prints them ("CN=x\nO=y\nOU=z"). */
function subjectField(subject: string, key: string): string | undefined {
  for (const line of subject.split('\n')) {
    const i = line.indexOf('=');
    if (i > 0 && line.slice(0, i) === key) return line.slice(i + 1);
  }
  return undefined;
}

/** A token device: its token's expiry is DeviceTokens' own check (refused and closed when past), not a certificate date. */
const TOKEN_NOT_AFTER = Number.MAX_SAFE_INTEGER;

async function identifyByToken(req: IncomingMessage, tokens: DeviceTokens | undefined): Promise<DeviceIdentity> {
  if (!tokens) throw new FieldStreamError('GATEWAY_TOKEN_AUTH_DISABLED');
  const header = req.headers.authorization;
  const token = typeof header === 'string' && header.length <= LIMITS.deviceTokenMaxChars + 'Bearer '.length ? bearerToken(header) : undefined;
  const addr = req.headers[CLIENT_ADDR_HEADER];
  const source = typeof addr === 'string' && addr.length > 0 && addr.length <= 64 ? addr : (req.socket.remoteAddress ?? 'unknown');
  const proved = await tokens.verify(token, source);
  return { deviceId: proved.deviceId, serial: `token:${proved.tokenId}`, notAfter: TOKEN_NOT_AFTER, token: proved };
}

/**
 * How the gateway knows a connection comes from Caddy: `certificate`, its TLS client certificate is
 * a trusted proxy's (EDGE_HOP=mtls); `socket`, it came through the Unix socket only Caddy's user
 * may open (EDGE_HOP=unix: the kernel checked the socket's permissions at connect(2)).
 */
export type ProxyProof = 'certificate' | 'socket';

export function identifyByProxy(caPem: string, trustedProxies: readonly string[], tokens?: DeviceTokens, proof: ProxyProof = 'certificate'): IdentifyDevice {
  const ca = new X509Certificate(caPem);
  return (req) => {
    let proxySerial: string | undefined;
    if (proof === 'certificate') {
      const proxy = verifiedPeer(req.socket as TLSSocket);
      if (proxy.subject?.OU !== 'services' || !trustedProxies.includes(String(proxy.subject?.CN))) {
        throw new FieldStreamError('GATEWAY_UNTRUSTED_PROXY', `Connection from "${String(proxy.subject?.CN)}", which is not a trusted proxy.`);
      }
      proxySerial = proxy.serialNumber;
    }
    const device = forwardedDevice(req, ca, tokens);
    if (proxySerial === undefined) return device;
    const serial = proxySerial;
    return device instanceof Promise ? device.then((d) => ({ ...d, proxySerial: serial })) : { ...device, proxySerial: serial };
  };
}

/** The device Caddy forwards: by its token on the token route, else by the certificate in its header. */
function forwardedDevice(req: IncomingMessage, ca: X509Certificate, tokens: DeviceTokens | undefined): DeviceIdentity | Promise<DeviceIdentity> {
  // Anything but Caddy's "token" is the certificate route (a Caddyfile from before the token route sets no marker).
  if (req.headers[ROUTE_HEADER] === 'token') return identifyByToken(req, tokens);
  const header = req.headers[CLIENT_CERT_HEADER];
  if (typeof header !== 'string' || header.length === 0) {
    throw new FieldStreamError('GATEWAY_NO_CLIENT_CERTIFICATE', 'The proxy forwarded no client certificate.');
  }
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(Buffer.from(header, 'base64'));
  } catch {
    throw new FieldStreamError('GATEWAY_NO_CLIENT_CERTIFICATE', 'The forwarded client certificate cannot be parsed.');
  }
  // Defence in depth: the proxy verified it already; a certificate we did not issue, or one out of
  // its validity period, is refused here too.
  const now = Date.now();
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey) || Date.parse(cert.validFrom) > now || Date.parse(cert.validTo) < now) {
    throw new FieldStreamError('GATEWAY_NO_CLIENT_CERTIFICATE', 'The forwarded client certificate is not valid under our CA.');
  }
  return deviceFrom(subjectField(cert.subject, 'CN'), subjectField(cert.subject, 'OU'), cert.serialNumber, cert.validTo);
}
