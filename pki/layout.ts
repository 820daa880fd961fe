import { join } from 'node:path';
import { FieldStreamError } from '../shared/errors.ts';

/**
 * Where onboarding writes what, below the certificates folder (CERTS_DIR, default ./certs).
 *
 *   ca/ca.key, ca/ca.crt      the CA. ca/ is for the operator's machine only: never mounted into a
 *                             service, never put into a device bundle.
 *   ca.crt                    the public trust anchor every service and device receives
 *   ca.crl                    the CA's CRL (pki/revocation.ts): for the brokers, and in every device
 *                             bundle, which checks the server's certificate against it
 *   dmz/...                   what the DMZ server mounts (edge TLS, DMZ broker, gateway client)
 *   dmz/dmz-broker-ca.crt,    the one certificate the DMZ broker's clients (the gateways; the bridge
 *   internal/dmz-broker-ca.crt and the broker exporter inside) trust for that broker: the issuer of
 *                             dmz/mosquitto.crt (pki/dmz-anchor.ts)
 *   dmz/gateway-ca.crt        the one certificate Caddy trusts for the gateways it proxies to: the
 *                             issuer of dmz/gateway.crt (pki/dmz-anchor.ts)
 *   internal/...              what the internal server mounts (internal broker, bridge, distributor, command API,
 *                             console)
 *   devices/ID/...            one device's certificate and key, and its message-signing key
 *   internal/device-keys/     the internal network's registry of device signing keys
 *   internal/stored-feed.key  the key the distributors seal the stored feed with and the console
 *                             checks it with (internal-network/shared/stored-feed-auth.ts)
 *   bundles/ID.tar.gz         what is copied to that device, and nothing else
 *   .revocations.lock, .tokens.lock, .restore-running
 *                             the admin commands' locks and a restore's mark (never backed up)
 */
export interface ServiceCertSpec {
  /** path below the certificates folder, without extension */
  file: string;
  commonName: string;
  role: 'server' | 'client' | 'both';
  /** DNS names / IPs for server certificates, given the public domain and extra broker hosts */
  sans?: (ctx: { domain: string; edgeHosts: readonly string[]; dmzBrokerHosts: readonly string[]; internalBrokerHosts: readonly string[] }) => string[];
}

const LOCAL = ['localhost', '127.0.0.1', '::1'];

export const SERVICE_CERTS: readonly ServiceCertSpec[] = [
  // The public endpoint: Caddy in the three-tier deployment, the gateway itself when it serves WSS.
  // Caddy also presents it to the gateway, which takes device identities only from "edge".
  // With several DMZ servers that devices reach by their own names (GATEWAY_URL listing each),
  // one certificate names them all (--edge-host), so every server's Caddy can present it.
  { file: 'dmz/edge', commonName: 'edge', role: 'both', sans: ({ domain, edgeHosts }) => [domain, ...edgeHosts, ...LOCAL] },
  // The gateway serves Caddy over mTLS (EDGE_HOP=mtls). Issued by an anchor of its own after a
  // --renew-dmz (dmz-anchor.ts), which Caddy trusts alone for that hop. "both": before this set's
  // first --renew-dmz it is of the CA, and a gateway still given it as its client certificate (a
  // compose file of an earlier version) keeps connecting to the DMZ broker.
  { file: 'dmz/gateway', commonName: 'gateway', role: 'both', sans: () => ['gateway', ...LOCAL] },
  // The gateway's client certificate to the DMZ broker: always of the CA, which the broker verifies
  // its clients with (and its CRL). CN "gateway" is the user of the broker's ACL.
  { file: 'dmz/gateway-client', commonName: 'gateway', role: 'client' },
  {
    file: 'dmz/mosquitto',
    commonName: 'dmz-mosquitto',
    role: 'server',
    // The internal broker dials the DMZ broker by the public domain unless told another host name.
    sans: ({ domain, dmzBrokerHosts }) => ['dmz-mosquitto', domain, ...dmzBrokerHosts, ...LOCAL],
  },
  {
    file: 'internal/mosquitto',
    commonName: 'internal-mosquitto',
    role: 'server',
    sans: ({ internalBrokerHosts }) => ['internal-mosquitto', ...internalBrokerHosts, ...LOCAL],
  },
  { file: 'internal/bridge', commonName: 'bridge', role: 'client' },
  { file: 'internal/distributor', commonName: 'distributor', role: 'client' },
  { file: 'internal/command-api', commonName: 'command-api', role: 'client' },
  // Read-only consumers on the internal broker (analytics, dashboards): they see data, change nothing.
  { file: 'internal/consumer', commonName: 'consumer', role: 'client' },
  // The operator console (internal-network/console): subscribes to the stored feed only.
  { file: 'internal/console', commonName: 'console', role: 'client' },
  // The broker exporter (internal-network/broker-exporter): reads both brokers' $SYS state, nothing else.
  { file: 'internal/monitor', commonName: 'monitor', role: 'client' },
];

/**
 * The certificates whose keys lie on the DMZ server: what `--renew-dmz` issues again and revokes
 * after a compromise of that server (pki/dmz-anchor.ts).
 */
export const DMZ_SERVICE_FILES: readonly string[] = SERVICE_CERTS.filter((s) => s.file.startsWith('dmz/')).map((s) => s.file);

/**
 * The certificates `--renew-service NAME` issues again and revokes one at a time, by their CN: the
 * internal services' client certificates. Each broker that checks them reads the CA's CRL
 * (`crlfile`), so a copy of the old key is refused there once it is revoked. Not the server
 * certificates (their clients check no CRL: revoking one would not stop a copy of its key from
 * serving) nor the DMZ's (`--renew-dmz`, which renews them together).
 */
export const REVOCABLE_SERVICE_CERTS: ReadonlyMap<string, string> = new Map(
  SERVICE_CERTS.filter((s) => s.role === 'client' && s.file.startsWith('internal/')).map((s) => [s.commonName, s.file]),
);

/**
 * Names no device may have: the services' certificate names. Both brokers take a client's user
 * name from its certificate's CN (use_identity_as_username) and trust the CA that signs devices,
 * so a device certificate named "bridge" would be the bridge to the DMZ broker's ACL.
 */
export const RESERVED_DEVICE_IDS: ReadonlySet<string> = new Set(SERVICE_CERTS.map((s) => s.commonName));

/**
 * Refuses a reserved id (PKI_INVALID_NAME) for a device, whichever way it authenticates: a
 * certificate (device-bundle.ts) or a token (device-tokens.ts). Checked for certificates only, a
 * token enrolled a device named "bridge" or "gateway": a device under a service's name in the
 * internal key registry, the fleet's listing and the topics, which the rules above keep apart.
 */
export function refuseReservedDeviceId(deviceId: string): void {
  if (RESERVED_DEVICE_IDS.has(deviceId)) {
    throw new FieldStreamError('PKI_INVALID_NAME', `DEVICE_ID ${JSON.stringify(deviceId)} is the name of a service's certificate: the brokers would take the device for that service. Choose another id.`);
  }
}

export function pkiPaths(root: string) {
  return {
    root,
    caDir: join(root, 'ca'),
    caKey: join(root, 'ca', 'ca.key'),
    caCert: join(root, 'ca', 'ca.crt'),
    /** there from a new CA's first file until every service certificate is issued under it (onboarding.ts) */
    caReissuePending: join(root, 'ca', 'reissue-pending'),
    publicCa: join(root, 'ca.crt'),
    crl: join(root, 'ca.crl'),
    meta: join(root, 'fieldstream-pki.json'),
    service: (file: string) => ({ cert: join(root, `${file}.crt`), key: join(root, `${file}.key`) }),
    device: (deviceId: string) => ({
      dir: join(root, 'devices', deviceId),
      cert: join(root, 'devices', deviceId, 'client.crt'),
      key: join(root, 'devices', deviceId, 'client.key'),
      signingKey: join(root, 'devices', deviceId, 'signing.key'),
    }),
    /** the stored feed's key: the distributors' and the console's only, never the DMZ's */
    storedFeedKey: join(root, 'internal', 'stored-feed.key'),
    /** the revoked devices, one id per line: what the distributor, the console and the command API refuse */
    revokedDevices: join(root, 'internal', 'revoked-devices.txt'),
    /** the internal network's copy of a device's message-signing key */
    deviceKeyRegistry: (deviceId: string) => join(root, 'internal', 'device-keys', `${deviceId}.key`),
    bundle: (deviceId: string) => join(root, 'bundles', `${deviceId}.tar.gz`),
    /** the DMZ broker's trust anchor, one copy for each server (pki/dmz-anchor.ts) */
    dmzBrokerCa: { dmz: join(root, 'dmz', 'dmz-broker-ca.crt'), internal: join(root, 'internal', 'dmz-broker-ca.crt') },
    /** the gateway's trust anchor, for Caddy (pki/dmz-anchor.ts) */
    gatewayCa: join(root, 'dmz', 'gateway-ca.crt'),
    /** one revocation, CRL or certificate's issue at a time (revocation.ts underRevocationLock) */
    revocationsLock: join(root, '.revocations.lock'),
    /** one change of the device tokens file at a time (device-tokens.ts) */
    tokensLock: join(root, '.tokens.lock'),
    /** there while a restore writes this folder, and after one killed midway (restore-mark.ts) */
    restoreMark: join(root, '.restore-running'),
  };
}
export type PkiPaths = ReturnType<typeof pkiPaths>;
