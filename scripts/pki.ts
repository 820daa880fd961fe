/**
 * Certificate onboarding CLI, behind scripts/generate-certificates.sh and
 * scripts/generate-client-cert.sh. Run those; this file is their implementation.
 */
import { X509Certificate } from 'node:crypto';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { loadDotenv } from '../shared/config.ts';
import { DEVELOPMENT_DOMAIN } from '../embedded/dev-pki.ts';
import { isFieldStreamError } from '../shared/errors.ts';
import { TIMINGS } from '../shared/limits.ts';
import { caEndBefore, caEndWarning } from '../pki/certificates.ts';
import { readPkiMeta, readRevokedDevices, setupPki, VALIDITY_DAYS } from '../pki/onboarding.ts';
import { caKeyExists } from '../pki/set-meta.ts';
import { buildDeviceBundle, deviceStartSteps, issueDeviceCertificate, RENEWED_DEVICE_STEPS, supersededStep } from '../pki/device-bundle.ts';
import { pkiPaths, REVOCABLE_SERVICE_CERTS, SERVICE_CERTS } from '../pki/layout.ts';
import { revokeDevice } from '../pki/revocation.ts';
import { revokeSupersededCertificates } from '../pki/superseded.ts';
import { readTokensFile, tokenPaths } from '../pki/device-tokens.ts';
import { tokenEntry, type TokensFile } from '../shared/security/device-token.ts';

const repoRoot = resolve(import.meta.dirname, '..');
// CERTS_DIR from the environment or .env, as npm start and fieldstream-admin take it (relative to
// the working directory; empty means the default): the scripts and fieldstream-admin work on one
// folder. Without .env, revoke-device.sh looked for the device in ./certs while npm start and
// fieldstream-admin used the folder .env names.
loadDotenv();
const certsDir = resolve(process.env.CERTS_DIR?.trim() || resolve(repoRoot, 'certs'));
const fieldCompose = resolve(repoRoot, 'field-client', 'docker-compose.yml');

function usage(): never {
  console.error(`usage:
  scripts/generate-certificates.sh DOMAIN [--new-ca] [--renew] [--renew-dmz] [--renew-service NAME]... [--edge-host HOST]... [--dmz-broker-host HOST]... [--internal-broker-host HOST]...
      --renew-service NAME: one of ${[...REVOCABLE_SERVICE_CERTS.keys()].join(', ')}
  scripts/generate-client-cert.sh DEVICE_ID [--days N] [--renew [--revoke-old]]
      refused for a device that has a device token (fieldstream-admin devices renew DEVICE_ID --token renews it)
      --revoke-old: every earlier certificate of the device revoked at once (a key that may have been copied)
  scripts/revoke-device.sh DEVICE_ID [--superseded]
      --superseded: only the device's certificates a renewal superseded; its newest and its signing key stay`);
  process.exit(64);
}

/**
 * parseArgs, its errors (an unknown option, one without its value) answered as a wrong argument
 * is: ADMIN_USAGE and the usage, exit 64, where they escaped as a TypeError's stack trace, exit 1.
 */
function parseOptions<T extends ParseArgsConfig>(config: T): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs(config);
  } catch (err) {
    console.error(`error ADMIN_USAGE: ${(err as Error).message}`);
    return usage();
  }
}

function setup(argv: string[]): void {
  const { values, positionals } = parseOptions({
    args: argv,
    allowPositionals: true,
    options: {
      'new-ca': { type: 'boolean', default: false },
      renew: { type: 'boolean', default: false },
      'renew-dmz': { type: 'boolean', default: false },
      'renew-service': { type: 'string', multiple: true, default: [] },
      'edge-host': { type: 'string', multiple: true, default: [] },
      'dmz-broker-host': { type: 'string', multiple: true, default: [] },
      'internal-broker-host': { type: 'string', multiple: true, default: [] },
    },
  });
  const domain = positionals[0];
  if (!domain || positionals.length > 1) usage();
  if (values['renew-dmz'] && values['new-ca']) {
    // A new CA already makes every earlier certificate useless, the DMZ's too: one or the other.
    console.error('error ADMIN_USAGE: --renew-dmz and --new-ca do not go together (a new CA re-issues every certificate, the DMZ\'s included)');
    usage();
  }
  if (values['renew-dmz'] && !caKeyExists(certsDir)) {
    console.error(`error PKI_CA_MISSING: --renew-dmz issues the DMZ's certificates again under the CA in ${pkiPaths(certsDir).caDir}, and there is none: run scripts/generate-certificates.sh ${domain} first.`);
    process.exit(65);
  }
  const renewServices = values['renew-service'];
  if (renewServices.length > 0) {
    if (values['new-ca']) {
      console.error('error ADMIN_USAGE: --renew-service and --new-ca do not go together (a new CA re-issues every certificate, the devices\' included; --renew-service revokes one service\'s under the CA kept)');
      usage();
    }
    for (const name of renewServices) checkRenewableService(name);
    if (!caKeyExists(certsDir)) {
      console.error(`error PKI_CA_MISSING: --renew-service issues a service's certificate again under the CA in ${pkiPaths(certsDir).caDir}, and there is none: run scripts/generate-certificates.sh ${domain} first.`);
      process.exit(65);
    }
  }
  // For the message only: a damaged file is what this run writes again.
  let before: string | undefined;
  try {
    before = readPkiMeta(certsDir)?.domain;
  } catch {
    before = undefined;
  }
  const report = setupPki(certsDir, {
    domain,
    newCa: values['new-ca'],
    renew: values.renew,
    renewDmz: values['renew-dmz'],
    renewServices,
    edgeHosts: values['edge-host'],
    dmzBrokerHosts: values['dmz-broker-host'],
    internalBrokerHosts: values['internal-broker-host'],
    // Said when the keys are made and another command holds a lock: a pause of seconds is not taken for hung.
    onWait: (lock) => console.error(`waiting for ${lock}: another command is revoking a device, issuing a certificate, changing the tokens file, backing up or restoring (at most ${TIMINGS.adminLockWaitMs / 1000} s)`),
  });
  const p = pkiPaths(certsDir);
  // Service certificates issued now end with a CA that ends first: said, as --new-ca is what mends it.
  const caEnd = report.created.some((name) => SERVICE_CERTS.some((s) => s.file === name)) ? caEndBefore(readFileSync(p.caCert, 'utf8'), VALIDITY_DAYS.service) : undefined;
  if (caEnd) console.error(caEndWarning(caEnd, VALIDITY_DAYS.service));
  const bundleDir = dirname(p.bundle('x'));
  const bundles = existsSync(bundleDir) ? readdirSync(bundleDir).filter((f) => f.endsWith('.tar.gz')) : [];
  // What a renewal that revoked certificates leaves to do, in place of the first set-up's copying.
  const renewalSteps = [
    ...(report.revoked !== undefined ? [dmzRenewalSteps(report.revoked, report.namesNotKept ?? [])] : []),
    ...(report.revokedServices !== undefined ? [serviceRenewalSteps(report.revokedServices)] : []),
  ];
  const caLine = {
    created: `created a new CA in ${p.caDir}/`,
    reused: report.finishedNewCa
      ? `kept the CA in ${p.caDir}/, new from a set-up that stopped midway: every service certificate was issued again under it`
      : `kept the existing CA in ${p.caDir}/ (pass --new-ca to replace it)`,
    replaced: `replaced the CA; the old one was moved to ${report.replacedCaDir}`,
  }[report.ca];
  console.log(`FieldStream certificates for ${domain} in ${certsDir}
  CA:        ${caLine}
  issued:    ${report.created.join(', ') || '(nothing new)'}
  kept:      ${report.kept.join(', ') || '(none)'}
${(report.ca === 'replaced' || report.finishedNewCa) && bundles.length > 0 ? `
The device bundles made before (${bundles.join(', ')}) are of the replaced CA: the servers refuse their certificates,
and their ca.crt does not verify the servers' new ones. ${reissueSteps(bundles)}
` : before !== undefined && before !== domain && bundles.length > 0 ? `
The domain was ${before}: the device bundles made before (${bundles.join(', ')}) point at wss://${before}/ws.
${reissueSteps(bundles, ", or set GATEWAY_URL in each device's .env")}
` : ''}${before === DEVELOPMENT_DOMAIN && domain !== DEVELOPMENT_DOMAIN && report.ca === 'reused' && !report.finishedNewCa ? developmentDevicesKept() : ''}
Keep ${p.caDir}/ on this machine only: it never goes to a server or a device.
${renewalSteps.length > 0 ? renewalSteps.join('\n\n') : `Copy certs/ca.crt + certs/ca.crl + certs/dmz/ to the DMZ server, certs/ca.crt + certs/ca.crl + certs/internal/ to the internal server
(both Mosquittos read certs/ca.crl: where it is missing, Docker mounts an empty folder and the broker stops).
Next, for each device: scripts/generate-client-cert.sh DEVICE_ID`}`);
}

/**
 * One --renew-service NAME checked before anything is done: an internal client certificate's CN
 * (REVOCABLE_SERVICE_CERTS), or ADMIN_USAGE, which says what to use for a server or DMZ certificate.
 */
function checkRenewableService(name: string): void {
  if (REVOCABLE_SERVICE_CERTS.has(name)) return;
  const known = [...REVOCABLE_SERVICE_CERTS.keys()].join(', ');
  // "mosquitto" is the basename of both brokers' certificates: each is answered for.
  const matches = SERVICE_CERTS.filter((s) => s.commonName === name || s.file === name || s.file.split('/')[1] === name);
  const why = matches.map((spec) =>
    spec.file.startsWith('dmz/')
      ? `${spec.file} is one of the DMZ's certificates, which --renew-dmz issues again and revokes together (docs/operations.md, "Recovering from a DMZ compromise")`
      : spec.role !== 'client'
        ? `${spec.file} is a server certificate, which no client checks against a CRL, so revoking it would not stop a copy of its key from serving (a leaked server key takes --new-ca)`
        : `${spec.file} is named by its certificate's CN, ${spec.commonName}`,
  );
  console.error(
    why.length > 0
      ? `error ADMIN_USAGE: --renew-service ${name}: ${why.join('; ')}. --renew-service takes ${known}.`
      : `error ADMIN_USAGE: --renew-service ${JSON.stringify(name)} is not an internal service's certificate: give one of ${known} (the option once for each).`,
  );
  usage();
}

/** The service of docker-compose.internal.yml that holds each certificate; none for consumer, handed to tools outside it. */
const COMPOSE_SERVICE: Readonly<Record<string, string>> = {
  bridge: 'internal-mosquitto', // its bridges dial the DMZ brokers with it
  distributor: 'distributor',
  'command-api': 'command-api',
  console: 'console',
  monitor: 'broker-exporter',
};

/** What --renew-service leaves to do (docs/operations.md, "Revoking an internal service's certificate"). */
function serviceRenewalSteps(renewed: ReadonlyArray<{ file: string; serials: readonly string[] }>): string {
  const lines: string[] = [];
  const recreate = new Set(['internal-mosquitto']);
  for (const { file, serials } of renewed) {
    const name = file.split('/')[1] as string;
    const compose = COMPOSE_SERVICE[name];
    lines.push(
      serials.length > 0
        ? `certs/${file}.crt is new; ${serials.length} earlier one(s) revoked in certs/ca.crl (serials ${serials.join(', ')}).`
        : `certs/${file}.crt is new; no earlier certificate of it was found to revoke (neither in the CA's log nor in place).`,
      compose === undefined
        ? `  ${name}: give certs/${file}.crt and certs/${file}.key (its private key, mode 0600) to each tool that used the old one, and restart it.`
        : `  ${name}: certs/${file}.crt and certs/${file}.key (mode 0600) go to the internal server, over the old ones.`,
    );
    if (compose !== undefined) recreate.add(compose);
  }
  // Both brokers take every certificate of the CA in their TLS handshake (their ACLs decide what it
  // may do then, and neither binds a client id to an identity): both must read the new CRL.
  return `${lines.join('\n')}
The old certificate is refused only by a broker restarted since: Mosquitto reads certs/ca.crl only when it starts,
and both brokers take any certificate of the CA until their CRL lists it.
  internal server: certs/ca.crl and the files above, then restart the broker and the service(s):
                   docker-compose -f docker-compose.internal.yml up -d --force-recreate ${[...recreate].join(' ')}
  DMZ server(s):   certs/ca.crl, then
                   docker-compose -f docker-compose.dmz.yml up -d --force-recreate dmz-mosquitto
  Kubernetes:      copy the same files into each overlay's certs/ and apply both overlays again.`;
}

/**
 * How the bundles `bundles` (ID.tar.gz) are made again, per kind of device: a token device's by
 * renewing its token, as generate-client-cert.sh refuses it a certificate (a device has one or the
 * other). A tokens file that cannot be read names both commands without sorting the devices.
 */
function reissueSteps(bundles: readonly string[], alternative = ''): string {
  // A revoked device's bundle stays in bundles/ (nothing removes it), and both commands refuse its
  // id (PKI_DEVICE_REVOKED): told to run them, the operator met that refusal once per such device.
  const revokedIds = readRevokedDevices(certsDir);
  const all = bundles.map((f) => f.slice(0, -'.tar.gz'.length));
  const ids = all.filter((id) => !revokedIds.has(id));
  const revoked = all.filter((id) => revokedIds.has(id));
  const one = revoked.length === 1;
  const revokedNote = revoked.length > 0 ? ` ${revoked.join(', ')} ${one ? 'was' : 'were'} revoked: nothing to issue for ${one ? 'it' : 'them'} (remove ${one ? 'its bundle' : 'their bundles'}).` : '';
  if (ids.length === 0) return revokedNote.trimStart();
  const certificate = 'scripts/generate-client-cert.sh DEVICE_ID --renew';
  const token = 'bin/fieldstream-admin devices renew DEVICE_ID --token';
  let tokens: TokensFile;
  try {
    tokens = readTokensFile(certsDir);
  } catch (err) {
    if (!isFieldStreamError(err) || err.code !== 'TOKENS_FILE_INVALID') throw err;
    return `Issue them again (${certificate}; for a device with a token, ${token}: ${tokenPaths(certsDir).file} cannot be read to tell which) for ${ids.join(', ')}${alternative}.${revokedNote}`;
  }
  const byToken = ids.filter((id) => tokenEntry(tokens.devices, id) !== undefined);
  const byCertificate = ids.filter((id) => !byToken.includes(id));
  const steps = [
    ...(byCertificate.length > 0 ? [`(${certificate}) for ${byCertificate.join(', ')}`] : []),
    ...(byToken.length > 0 ? [`(${token}) for ${byToken.join(', ')}`] : []),
  ];
  return `Issue them again ${steps.join(', and ')}${alternative}.${revokedNote}`;
}

/**
 * After --renew over npm start's folder: its development devices' certificates are of the CA kept,
 * their keys in devices/ for anyone with a copy of the clone, so the deployment accepts them until
 * each is revoked (docs/deployment.md). Those still valid, not revoked, are named.
 */
function developmentDevicesKept(): string {
  const p = pkiPaths(certsDir);
  const ca = new X509Certificate(readFileSync(p.caCert));
  const devicesDir = dirname(p.device('x').dir);
  const revoked = readRevokedDevices(certsDir);
  const kept = (existsSync(devicesDir) ? readdirSync(devicesDir) : []).filter((id) => {
    if (revoked.has(id) || !existsSync(p.device(id).cert)) return false;
    const cert = new X509Certificate(readFileSync(p.device(id).cert));
    return cert.checkIssued(ca) && cert.verify(ca.publicKey) && Date.parse(cert.validTo) > Date.now();
  });
  if (kept.length === 0) return '';
  return `
The development devices npm start made here (${kept.join(', ')}) have certificates of the CA kept, their keys in ${devicesDir}/:
the deployment accepts them until each is revoked: bin/fieldstream-admin devices revoke ID, for each (or set up with --new-ca instead).
`;
}

/** What --renew-dmz leaves to do on the servers (docs/operations.md, "Recovering from a DMZ compromise"). */
function dmzRenewalSteps(revoked: readonly string[], namesNotKept: ReadonlyArray<{ file: string; names: readonly string[] }>): string {
  // Their names are read from the old certificates: one not on this machine leaves only what was
  // given now, which a device (--edge-host) or the bridge (--dmz-broker-host) may not dial.
  const notKept = namesNotKept
    .map(
      ({ file, names }) =>
        `Warning: certs/${file}.crt was not there (or was damaged), so the names it had could not be kept; the new one names ${names.join(', ')} only.\n` +
        `  If it answered to more (the --edge-host and --dmz-broker-host given at the set-up), run this again with them.\n`,
    )
    .join('');
  return `${notKept}The DMZ's certificates are new; ${revoked.length} earlier one(s) revoked${revoked.length > 0 ? ` (serials ${revoked.join(', ')})` : ''}.
The old keys are refused once these are in place (devices keep their certificates and bundles):
  DMZ server:      certs/ca.crl and certs/dmz/ (new keys, the DMZ broker's new anchor dmz-broker-ca.crt,
                   the gateways' new anchor gateway-ca.crt for Caddy, revocation/revoked-serials.txt),
                   then recreate every service so each reads them:
                   docker-compose -f docker-compose.dmz.yml up -d --force-recreate
  internal server: certs/ca.crl and certs/internal/dmz-broker-ca.crt (the only anchor the bridge and the
                   broker exporter trust for the DMZ broker), then
                   docker-compose -f docker-compose.internal.yml up -d --force-recreate internal-mosquitto broker-exporter
  Kubernetes:      copy the same files into each overlay's certs/ and apply both overlays again.
  devices:         certs/ca.crl over each device's certs/ca.crl (its bundle folder): its client reads it
                   again without a restart and then refuses the old edge certificate (a device that
                   reaches a renewed DMZ server gets it from its gateway; bundles made from now on carry it).`;
}

function client(argv: string[]): void {
  const { values, positionals } = parseOptions({
    args: argv,
    allowPositionals: true,
    options: { days: { type: 'string' }, renew: { type: 'boolean', default: false }, 'revoke-old': { type: 'boolean', default: false } },
  });
  const deviceId = positionals[0];
  if (!deviceId || positionals.length > 1) usage();
  if (values['revoke-old'] && !values.renew) {
    console.error('error ADMIN_USAGE: --revoke-old goes with --renew: a first certificate supersedes none');
    usage();
  }
  const days = values.days === undefined ? undefined : Number(values.days);
  if (days !== undefined && (!Number.isInteger(days) || days < 1 || days > 3650)) {
    console.error('error: --days must be a whole number of days from 1 to 3650');
    process.exit(64);
  }
  // Read before the certificate is issued: a damaged file stops the command with nothing issued
  // (the bundle needs its domain), not after, when the next try would need --renew.
  const meta = readPkiMeta(certsDir);
  const paths = issueDeviceCertificate(certsDir, deviceId, { renew: values.renew, revokeSuperseded: values['revoke-old'], ...(days ? { validityDays: days } : {}) });
  if (paths.caEnd) console.error(caEndWarning(paths.caEnd, days ?? VALIDITY_DAYS.device));
  const bundle = buildDeviceBundle(certsDir, deviceId, fieldCompose);
  console.log(`Device ${deviceId}
  certificate: ${paths.cert}
  key:         ${paths.key} (mode 0600)
  bundle:      ${bundle}
${paths.revoked === undefined ? '' : paths.revoked.length === 0 ? '  revoked:     none: no earlier certificate of the device was left valid\n' : `  revoked:     the superseded certificate(s) ${paths.revoked.join(', ')}: refused once the files below reach the servers
  certs/ca.crl                        updated: copy it to both servers and restart their Mosquittos
  certs/dmz/revocation/revoked-serials.txt  updated: copy it to the DMZ server; gateways apply it within seconds
`}
${
    values.renew
      ? `${RENEWED_DEVICE_STEPS}${values['revoke-old'] ? '' : `\n${supersededStep(deviceId)}`}`
      : `${deviceStartSteps(deviceId, meta?.domain ?? 'DOMAIN', fieldCompose)}
Copy certs/internal/device-keys/${deviceId}.key to the internal server (the distributor and command API read it within seconds).`
  }`);
}

function revoke(argv: string[]): void {
  const { values, positionals } = parseOptions({ args: argv, allowPositionals: true, options: { superseded: { type: 'boolean', default: false } } });
  const deviceId = positionals[0];
  if (!deviceId || positionals.length > 1) usage();
  if (values.superseded) {
    const { serials, kept } = revokeSupersededCertificates(certsDir, deviceId);
    console.log(
      serials.length === 0
        ? `Device ${deviceId} has no superseded certificate left valid (its newest, ${kept}, is its only valid one); nothing revoked now.`
        : `Revoked the superseded certificates of device ${deviceId} (serials ${serials.join(', ')}); its newest, ${kept}, stays valid.
  certs/ca.crl                        updated: copy it to both servers and restart their Mosquittos
                                      (Mosquitto reads a CRL only at start)
  certs/dmz/revocation/revoked-serials.txt  updated: copy it to the DMZ server; gateways apply it within seconds
The device itself is not revoked: its signing key stays registered.`,
    );
    return;
  }
  const { serials, token } = revokeDevice(certsDir, deviceId);
  console.log(`Revoked device ${deviceId} (${serials.length ? `certificate serials ${serials.join(', ')}` : 'no certificate'}${token ? '; its device token' : ''}).${token ? `
  certs/dmz/tokens/device-tokens.json        the token's hash removed: copy it to the DMZ server; gateways apply it within seconds` : ''}
  certs/ca.crl                        updated: copy it to both servers and restart their Mosquittos
                                      (Mosquitto reads a CRL only at start)
  certs/dmz/revocation/revoked-serials.txt  updated: copy it to the DMZ server; gateways apply it within seconds
  certs/internal/device-keys/${deviceId}.key   removed, and ${deviceId} added to certs/internal/revoked-devices.txt:
                                      on the internal server, copy the list over its own (in place) and remove the key
                                      there too; distributors refuse its messages within seconds`);
}

const [command, ...rest] = process.argv.slice(2);
try {
  if (command === 'setup') setup(rest);
  else if (command === 'client') client(rest);
  else if (command === 'revoke') revoke(rest);
  else usage();
} catch (err) {
  if (isFieldStreamError(err)) {
    console.error(`error ${err.code}: ${err.message}`);
    const conflict = ['PKI_CERT_EXISTS', 'PKI_DEVICE_REVOKED', 'PKI_NAMES_MISSING', 'PKI_NO_NEWER_CERTIFICATE', 'PKI_CERT_NOT_NEWEST', 'PKI_CA_KEY_MISSING'];
    process.exit(conflict.includes(err.code) ? 73 : 65);
  }
  throw err;
}
