import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { gzipSync } from 'node:zlib';
import * as tar from 'tar';
import { makeDirDurablySync, replaceFileDurablySync } from '../shared/durable-fs.ts';
import { FieldStreamError } from '../shared/errors.ts';
import { DeviceIdSchema } from '../shared/contract/primitives.ts';
import { caEndBefore, issueCertificate } from './certificates.ts';
import { pkiPaths, refuseReservedDeviceId } from './layout.ts';
import { isRevoked, loadCa, readPkiMeta, VALIDITY_DAYS, writeKeyAndCert } from './onboarding.ts';
import { refuseChangedCa } from './restore-mark.ts';
import { readIssuedRecords, serialOf, underRevocationLock } from './revocation.ts';
import { checkRevocationLogs, revokeSupersededLocked } from './superseded.ts';
import { readTokensFile, refuseTokenDevice } from './device-tokens.ts';
import { refuseCaseTwin } from './device-id-twins.ts';

/*
 * A device's certificate, signing key and bundle: what `generate-client-cert.sh` and
 * `fieldstream-admin devices` make for one device (the set-up of the CA and the services is
 * onboarding.ts).
 */

export interface DeviceOptions {
  validityDays?: number;
  /** Replace an existing certificate of this device. */
  renew?: boolean;
  /**
   * With renew: revoke every earlier certificate of the device still valid, under the lock the
   * issue holds (superseded.ts): for a key that may have been copied.
   */
  revokeSuperseded?: boolean;
}

/**
 * Issues the device's certificate (and its signing key when it has none). `caEnd`: the CA ends
 * before the validity asked for, and so does the certificate (certificates.ts caEndBefore).
 */
export function issueDeviceCertificate(root: string, deviceId: string, options: DeviceOptions = {}): { cert: string; key: string; caEnd?: Date; revoked?: string[] } {
  if (!DeviceIdSchema.safeParse(deviceId).success) {
    throw new FieldStreamError(
      'PKI_INVALID_NAME',
      `DEVICE_ID ${JSON.stringify(deviceId)} is not valid: 1–64 letters, digits, ".", "_" or "-", starting with a letter or digit.`,
    );
  }
  refuseReservedDeviceId(deviceId);
  const ca = loadCa(root);
  const paths = pkiPaths(root).device(deviceId);
  const refuse = () => {
    if (isRevoked(root, deviceId)) {
      throw new FieldStreamError('PKI_DEVICE_REVOKED', `Device ${deviceId} was revoked; onboard it under a new id.`);
    }
    // After the revoked check, as issueDeviceToken's check for a certificate. Under the revocation
    // lock, the second time: every change of the tokens file (a token's issue, a revocation, a
    // restore's mark) is made under it too, so a token issued meanwhile is seen here. Before the
    // certificate check: a device left with both (a certificate issued before this check) is told
    // of its token, not sent to --renew, which would refuse it for the token.
    refuseTokenDevice(root, deviceId);
    // Before the certificate check: on a case-insensitive file system a twin's certificate answers
    // for this id's ("exists"; and --renew would overwrite it).
    refuseCaseTwin(root, deviceId, Object.keys(readTokensFile(root).devices));
    if (existsSync(paths.cert) && !options.renew) {
      throw new FieldStreamError('PKI_CERT_EXISTS', `Device ${deviceId} already has a certificate (${paths.cert}); pass --renew to issue a new one.`);
    }
  };
  refuse();
  // The key made outside the lock (an RSA key takes a while); checked again, recorded and written
  // under it: a revocation running meanwhile either sees this certificate in the CA's log and
  // revokes it too, or has listed the device as revoked before it is checked here. Without the
  // lock a renewal could record its certificate just after a revocation read the log: valid, and
  // never revoked.
  const issued = issueCertificate(ca, {
    commonName: deviceId,
    organizationalUnit: 'devices',
    role: 'client',
    validityDays: options.validityDays ?? VALIDITY_DAYS.device,
  });
  const revoked = underRevocationLock(root, () => {
    refuse();
    refuseChangedCa(root, ca.certPem);
    // The certificate it replaces, should the CA's log lack it (a set older than the log); and the
    // logs read before anything is written, so that a damaged one stops the renewal, not only its
    // revocation after the new certificate is out.
    const replaced = options.revokeSuperseded && existsSync(paths.cert) ? serialOf(readFileSync(paths.cert)) : undefined;
    if (options.revokeSuperseded) checkRevocationLogs(root);
    writeKeyAndCert(paths, issued, { root, name: `devices/${deviceId}` });
    // Under the lock too: a revocation between the two would otherwise find no key to remove, and
    // this would then register the revoked device's key.
    ensureSigningKey(root, deviceId);
    if (!options.revokeSuperseded) return undefined;
    const mine = readIssuedRecords(root).filter((r) => r.name === `devices/${deviceId}`);
    return revokeSupersededLocked(root, mine, replaced ? [replaced] : []);
  });
  const caEnd = caEndBefore(ca.certPem, options.validityDays ?? VALIDITY_DAYS.device);
  return { cert: paths.cert, key: paths.key, ...(caEnd ? { caEnd } : {}), ...(revoked ? { revoked } : {}) };
}

/**
 * The device's message-signing key: one copy for the device, one for the internal network's
 * registry; the DMZ never gets it. Kept when the certificate is renewed, so queued messages stay valid.
 * Either copy alone is the key: the device's is registered again, the registry's given back to the
 * device's folder. A new key made while the registry held one (the device's copy removed from this
 * machine once its bundle was delivered) replaced the key the device signs with, and every message
 * of it was refused from then on.
 */
export function ensureSigningKey(root: string, deviceId: string): void {
  const p = pkiPaths(root);
  const own = p.device(deviceId).signingKey;
  const registry = p.deviceKeyRegistry(deviceId);
  if ((existsSync(own) && existsSync(registry)) || isRevoked(root, deviceId)) return;
  const key = existsSync(own) ? readFileSync(own, 'utf8') : existsSync(registry) ? readFileSync(registry, 'utf8') : randomBytes(32).toString('hex') + '\n';
  makeDirDurablySync(dirname(own), 0o755);
  replaceFileDurablySync(own, key, 0o600);
  makeDirDurablySync(dirname(registry), 0o700);
  replaceFileDurablySync(registry, key, 0o600);
}

/** The `.env` a device receives: where to connect and where its certificate files are in the container. */
export function deviceEnvFile(deviceId: string, domain: string): string {
  return [
    '# FieldStream field client — generated by scripts/generate-client-cert.sh',
    `DEVICE_ID=${deviceId}`,
    `DOMAIN_NAME=${domain}`,
    `GATEWAY_URL=wss://${domain}/ws`,
    "# Paths as the field client container sees them (the bundle's certs/ folder is mounted at /certs)",
    'FIELD_CA_FILE=/certs/ca.crt',
    'FIELD_CERT_FILE=/certs/client.crt',
    'FIELD_KEY_FILE=/certs/client.key',
    'FIELD_SIGNING_KEY_FILE=/certs/signing.key',
    "# FIELD_CRL_FILE unset: the server's certificate is checked against /certs/ca.crl (the CA's CRL;",
    '# after a --renew-dmz, copy the CA\'s current certs/ca.crl over it: read again without a restart)',
    '# Readings come from local inputs (HTTP 127.0.0.1:8081, MQTT 127.0.0.1:1883, the outbox/ folder,',
    '# `fieldstream send`). To try the deployment without sensors, simulate one:',
    'FIELD_SIMULATE=false',
    '',
  ].join('\n');
}

/**
 * What to do on a device that runs already with a renewed certificate: it keeps its own .env and
 * folders, and its client reads the pair again when it changes (field-client/src/device-credentials.ts):
 * one file copied without the other is refused (and the pair in use kept) until both are there.
 */
export const RENEWED_DEVICE_STEPS =
  'On the device: put the new certs/client.crt and certs/client.key from the bundle in place: the running client presents them from its next connection, no restart.';

/**
 * What a renewal without --revoke-old leaves to do: its earlier certificates stay valid (so that the
 * device is not cut off before it has the new one) until they are revoked (superseded.ts).
 */
export const supersededStep = (deviceId: string) =>
  `The earlier certificate(s) stay valid until they expire: once the device connects with the new one (the gateway logs its serial), revoke them with bin/fieldstream-admin devices revoke ${deviceId} --superseded.`;

/**
 * What to run on the device once its bundle is there, as the onboarding commands print it. The
 * image comes first: the bundle's compose file names `localhost/fieldstream/node:0.1.0` (FIELDSTREAM_IMAGE
 * unset), which docker-compose cannot pull when the device does not hold it: a registry on the
 * device itself, deliberately, as a bare name would be pulled from Docker Hub, whatever someone
 * published under it, and run with the device's keys.
 */
export function deviceStartSteps(deviceId: string, domain: string, composeFile: string): string {
  const image = /\$\{FIELDSTREAM_IMAGE:-([^}]+)\}/.exec(readFileSync(composeFile, 'utf8'))?.[1] ?? 'localhost/fieldstream/node:0.1.0';
  return `On the device (${domain} must resolve to the DMZ server), the image first: build it here
(docker build -t ${image} .) and load it there (docker save ${image} | ssh DEVICE docker load),
or set FIELDSTREAM_IMAGE in the bundle's .env to your registry's; docker-compose pulls
${image} from no public registry (docs/deployment.md, "4. Field devices"). Then:
  mkdir -p /opt/fieldstream && tar -xzf ${deviceId}.tar.gz -C /opt/fieldstream
  cd /opt/fieldstream/${deviceId} && docker-compose up -d`;
}

/**
 * One archive per device with exactly: ca.crt, ca.crl, client.crt, client.key, signing.key, .env,
 * docker-compose.yml. Nothing of another device, never the CA key.
 */
export function buildDeviceBundle(root: string, deviceId: string, composeFile: string): string {
  const p = pkiPaths(root);
  const device = p.device(deviceId);
  if (!existsSync(device.cert)) throw new FieldStreamError('PKI_CA_MISSING', `Device ${deviceId} has no certificate yet.`);
  const meta = readPkiMeta(root);
  if (!meta) throw new FieldStreamError('PKI_CA_MISSING', `No ${p.meta}; run scripts/generate-certificates.sh DOMAIN first.`);

  return packDeviceBundle(root, deviceId, {
    files: [
      { from: device.cert, name: 'client.crt' },
      { from: device.key, name: 'client.key', secret: true },
      { from: device.signingKey, name: 'signing.key', secret: true },
    ],
    env: deviceEnvFile(deviceId, meta.domain),
    composeFile,
  });
}

/** The user (and group) the field client's container runs as unless FIELDSTREAM_UID says otherwise (field-client/docker-compose.yml). */
const FIELD_CLIENT_UID = 1000;

/**
 * One tar entry (ustar, a pax header first should a name not fit), owned by the field client's
 * user: --owner/--group/--numeric-owner of GNU tar, so the archive does not depend on who built it
 * and, unpacked by root (as docs/deployment.md does), its keys are readable by the field client.
 */
function bundleEntry(path: string, mode: number, mtime: Date, data?: Buffer): Buffer {
  const type = data === undefined ? 'Directory' : 'File';
  const size = data?.length ?? 0;
  const ids = { uid: FIELD_CLIENT_UID, gid: FIELD_CLIENT_UID };
  const header = new tar.Header({ path, mode, size, mtime, type, ...ids });
  const block = Buffer.alloc(512);
  header.encode(block, 0);
  const pax = header.needPax ? [new tar.Pax({ path, size, mtime, ...ids }).encode()] : [];
  return Buffer.concat([...pax, block, ...(data ? [data, Buffer.alloc((512 - (size % 512)) % 512)] : [])]);
}

/**
 * Writes a device's bundle (certs/bundles/ID.tar.gz, 0600): the public CA and its CRL, the device's own files
 * under certs/ (secrets 0600), its .env (0600), the compose file, and the empty data/ (0700) and
 * outbox/ folders its compose file mounts writable (shipped, so that Docker does not make them as
 * root's: the field client could not write its queue there). One way for every kind of device
 * (certificate or token).
 *
 * Packed in memory and written aside at 0600, synced and renamed into place
 * (replaceFileDurablySync): no copy of a key is written anywhere but the bundle. A staging folder
 * in os.tmpdir() packed by tar left the device's keys there for good when the command was killed
 * (SIGKILL, a power cut) while tar ran. A bundle is a few KiB.
 */
export function packDeviceBundle(
  root: string,
  deviceId: string,
  o: { files: ReadonlyArray<{ from: string; name: string; secret?: boolean }>; env: string; composeFile: string },
): string {
  const p = pkiPaths(root);
  const now = new Date();
  const dir = (name: string, mode: number) => bundleEntry(`${deviceId}/${name}`, mode, now);
  const file = (name: string, mode: number, data: Buffer) => bundleEntry(`${deviceId}/${name}`, mode, now, data);
  const archive = gzipSync(
    Buffer.concat([
      dir('', 0o755),
      dir('certs/', 0o755),
      file('certs/ca.crt', 0o644, readFileSync(p.publicCa)),
      // The CA's CRL as it is now, which the field client checks the server's certificate against
      // (field-client/src/server-crl.ts): a device onboarded after a --renew-dmz refuses the old
      // edge certificate from the start. Every set has one (setupPki); one made before has not.
      ...(existsSync(p.crl) ? [file('certs/ca.crl', 0o644, readFileSync(p.crl))] : []),
      ...o.files.map((f) => file(`certs/${f.name}`, f.secret ? 0o600 : 0o644, readFileSync(f.from))),
      file('.env', 0o600, Buffer.from(o.env, 'utf8')),
      file('docker-compose.yml', 0o644, readFileSync(o.composeFile)),
      dir('data/', 0o700),
      dir('outbox/', 0o755),
      // the end of a tar archive: two empty blocks
      Buffer.alloc(1024),
    ]),
  );
  const out = p.bundle(deviceId);
  makeDirDurablySync(dirname(out), 0o700);
  replaceFileDurablySync(out, archive, 0o600);
  return out;
}
