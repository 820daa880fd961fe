import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { caEndWarning } from '../../pki/certificates.ts';
import { readPkiMeta, VALIDITY_DAYS } from '../../pki/onboarding.ts';
import { buildDeviceBundle, deviceStartSteps, issueDeviceCertificate, RENEWED_DEVICE_STEPS, supersededStep } from '../../pki/device-bundle.ts';
import { revokeDevice } from '../../pki/revocation.ts';
import { revokeSupersededCertificates } from '../../pki/superseded.ts';
import { buildTokenBundle, hasToken, issueDeviceToken } from '../../pki/device-tokens.ts';
import { DeviceIdSchema } from '../../shared/contract/primitives.ts';
import { ERRORS, FieldStreamError, isFieldStreamError, type ErrorCode } from '../../shared/errors.ts';
import { terminalText } from '../../shared/terminal-text.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import { createBackup } from './backup.ts';
import { hasCaKey, journalDefaultNote, noCaKey, noJournal, noReplayWindows, restartNote, stillHalfRestoredNote } from './backup-text.ts';
import { deviceDetails, deviceTable } from './device-text.ts';
import { findDevice, listDevicesDespiteTokens, type DeviceSummary } from './devices.ts';
import { listDeadLetters, replayDeadLetters } from './dead-letters.ts';
import { REPO_ROOT, resolveAdminPaths, resolveDeadLetterPaths, type AdminPaths } from './paths.ts';
import { restoreBackup } from './restore.ts';

/**
 * fieldstream-admin: the operator's command, on the trusted machine that keeps the CA (devices)
 * and on the internal server (backup, restore, dead letters). Issuing and revoking run the very functions
 * scripts/generate-client-cert.sh and scripts/revoke-device.sh run (pki/), so both stay in step.
 */
export const USAGE = `usage: fieldstream-admin COMMAND [OPTIONS]
  devices list [--json]                       every device: id, auth (certificate or token), its expiry, token, revoked,
                                              signing key, superseded certificates still valid
  devices show ID [--json]                    one device in detail
  devices add ID [--days N]                   certificate, signing key and bundle for a new device;
                                              refused for a device that has a token
  devices add ID --token [--days N]           a device token instead of a certificate (only its scrypt hash goes
                                              to dmz/tokens/device-tokens.json), signing key and bundle;
                                              refused for a device that has a certificate
  devices renew ID [--days N]                 a new certificate and bundle; the signing key is kept
                                              (refused for a token device: its token is renewed with --token)
  devices renew ID --revoke-old [--days N]    the same, and every earlier certificate of the device revoked at once
                                              (a key that may have been copied: the device is refused until it has the new one)
  devices renew ID --token [--days N]         a new token replacing the old one, and a new bundle
                                              (--days: validity, 1 to 3650; default ${VALIDITY_DAYS.device}, for tokens ${LIMITS.deviceTokenValidityDays})
  devices revoke ID                           revoke every certificate and the token of the device, and its signing key
  devices revoke ID --superseded              revoke only the certificates of the device a renewal superseded, still
                                              valid; its newest and its signing key stay (refused when it has no newer one)
  backup FILE [--force]                       one archive (mode 0600) of the CA, certificates, device keys, the
                                              stored-feed key, revocations, replay windows and command journal
  restore FILE [--force] [--expect-sha256 HEX]
                                              put a backup back; refuses to overwrite other state without --force
  dead-letters list [--json]                  the distributor's dead letters, per file: codes, whole letters, replayed
  dead-letters replay [--dry-run] [--code CODE]
                                              write the data of the dead letters not replayed yet into the distributor's
                                              stores (its settings: INFLUXDB_*, POSTGRES_*); unsigned messages only
                                              with DISTRIBUTOR_REQUIRE_SIGNATURES=false set explicitly; event types and
                                              severities the distributor has not admitted (--state-dir) as ~other
options for every command:
  --certs-dir DIR        certificates folder (CERTS_DIR; default certs/ of the repository)
  --state-dir DIR        the distributor's state (DISTRIBUTOR_STATE_DIR; default data/distributor-state)
  --command-state FILE   the command journal (COMMAND_STATE_PATH; default data/commands.jsonl, or
                         data/command-api/commands.jsonl of docker-compose.internal.yml when only its folder is there)
  --dead-letters DIR     the dead-letter folder (DEAD_LETTER_PATH; default data/dead-letter)
exit codes: 0 done, 1 failed (devices list: also when the tokens file cannot be read; every device is listed,
            its token unreadable), 2 usage, 3 not found, 4 in the way (exists, revoked, other state)
`;

/** The exit codes, documented in the usage and in docs/operations.md. */
export const EXIT = { ok: 0, failed: 1, usage: 2, notFound: 3, conflict: 4 } as const;

export function exitCodeFor(code: ErrorCode): number {
  switch (code) {
    case 'ADMIN_USAGE':
    case 'PKI_INVALID_NAME':
    case 'BACKUP_OUTPUT_IN_SOURCE':
      return EXIT.usage;
    case 'ADMIN_UNKNOWN_DEVICE':
    case 'DEAD_LETTERS_NOT_FOUND':
    case 'DEAD_LETTERS_NO_KEYS':
    case 'DEAD_LETTERS_NO_STATE':
    case 'BACKUP_NOT_FOUND':
    case 'BACKUP_EMPTY':
    case 'PKI_CA_MISSING':
      return EXIT.notFound;
    case 'PKI_CERT_EXISTS':
    case 'PKI_DEVICE_REVOKED':
    case 'PKI_NO_NEWER_CERTIFICATE':
    case 'PKI_CERT_NOT_NEWEST':
    case 'BACKUP_EXISTS':
    case 'BACKUP_STATE_EXISTS':
      return EXIT.conflict;
    default:
      return EXIT.failed;
  }
}

const OPTIONS = {
  'certs-dir': { type: 'string' },
  'state-dir': { type: 'string' },
  'command-state': { type: 'string' },
  days: { type: 'string' },
  token: { type: 'boolean' },
  superseded: { type: 'boolean' },
  'revoke-old': { type: 'boolean' },
  force: { type: 'boolean' },
  json: { type: 'boolean' },
  'expect-sha256': { type: 'string' },
  'dead-letters': { type: 'string' },
  'dry-run': { type: 'boolean' },
  code: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;
type OptionName = keyof typeof OPTIONS;
type Values = { [K in OptionName]?: (typeof OPTIONS)[K]['type'] extends 'string' ? string : boolean };

const PATH_OPTIONS: OptionName[] = ['certs-dir', 'state-dir', 'command-state', 'dead-letters'];
/** Per command: how many arguments it takes, and the options it takes besides the paths. */
const COMMANDS: Record<string, { args: number; options: OptionName[] }> = {
  'devices list': { args: 0, options: ['json'] },
  'devices show': { args: 1, options: ['json'] },
  'devices add': { args: 1, options: ['days', 'token'] },
  'devices renew': { args: 1, options: ['days', 'token', 'revoke-old'] },
  'devices revoke': { args: 1, options: ['superseded'] },
  backup: { args: 1, options: ['force'] },
  restore: { args: 1, options: ['force', 'expect-sha256'] },
  'dead-letters list': { args: 0, options: ['json'] },
  'dead-letters replay': { args: 0, options: ['dry-run', 'code'] },
};

export interface Io {
  out(text: string): void;
  err(text: string): void;
  env: Record<string, string | undefined>;
  cwd: string;
  /** the checkout the default paths are relative to (default: this repository) */
  repoRoot?: string;
}

const usageError = (message: string) => new FieldStreamError('ADMIN_USAGE', message);

function parse(argv: readonly string[]): { command: string; args: string[]; values: Values } | 'help' {
  let parsed;
  try {
    parsed = parseArgs({ args: [...argv], options: OPTIONS, allowPositionals: true, strict: true });
  } catch (err) {
    throw usageError((err as Error).message);
  }
  const values = parsed.values as Values;
  const [first, second, ...rest] = parsed.positionals;
  if (values.help) return 'help';
  const grouped = first === 'devices' || first === 'dead-letters';
  const command = grouped && second !== undefined ? `${first} ${second}` : first;
  const args = grouped ? rest : [second, ...rest].filter((a): a is string => a !== undefined);
  const spec = command === undefined ? undefined : COMMANDS[command];
  if (first === 'devices' && second === undefined) throw usageError('devices takes list, show, add, renew or revoke');
  if (first === 'dead-letters' && second === undefined) throw usageError('dead-letters takes list or replay');
  if (!command || !spec) throw usageError(command ? `unknown command "${command}"` : 'no command given');
  if (args.length !== spec.args) throw usageError(`${command} takes ${spec.args === 0 ? 'no argument' : `${spec.args} argument`}, not ${args.length}`);
  for (const name of Object.keys(values) as OptionName[]) {
    if (!PATH_OPTIONS.includes(name) && !spec.options.includes(name)) throw usageError(`${command} does not take --${name}`);
  }
  return { command, args, values };
}

function deviceId(raw: string): string {
  if (!DeviceIdSchema.safeParse(raw).success) {
    throw usageError(`${JSON.stringify(raw)} is not a device id: 1–64 letters, digits, ".", "_" or "-", starting with a letter or digit`);
  }
  return raw;
}

function days(raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 3650) throw usageError('--days must be a whole number of days from 1 to 3650');
  return n;
}

function known(paths: AdminPaths, id: string): DeviceSummary {
  const d = findDevice(paths.certsDir, id);
  if (!d || (!d.certificate && d.issued.length === 0 && !hasToken(paths.certsDir, id))) {
    throw new FieldStreamError('ADMIN_UNKNOWN_DEVICE', `No certificate or token was issued to device ${id} in ${paths.certsDir}.`);
  }
  return d;
}

function issue(paths: AdminPaths, id: string, validityDays: number | undefined, renew: boolean, revokeOld = false): string {
  // Before anything is issued: a damaged fieldstream-pki.json (CONFIG_INVALID) stops it here.
  const domain = readPkiMeta(paths.certsDir)?.domain ?? 'DOMAIN';
  const issued = issueDeviceCertificate(paths.certsDir, id, { renew, revokeSuperseded: revokeOld, ...(validityDays ? { validityDays } : {}) });
  const bundle = buildDeviceBundle(paths.certsDir, id, join(REPO_ROOT, 'field-client', 'docker-compose.yml'));
  const d = findDevice(paths.certsDir, id);
  return `${issued.caEnd ? `${caEndWarning(issued.caEnd, validityDays ?? VALIDITY_DAYS.device)}\n` : ''}${renew ? 'Renewed' : 'Added'} device ${id}
  certificate: ${issued.cert} (serial ${d?.certificate?.serial ?? '?'}, valid until ${d?.certificate?.notAfter ?? '?'}, ${issued.caEnd ? `${Math.floor((issued.caEnd.getTime() - Date.now()) / 86_400_000)} days, cut short at the CA's end` : `${validityDays ?? VALIDITY_DAYS.device} days`})
  key:         ${issued.key} (mode 0600)
  signing key: ${renew ? 'kept (what the device has queued stays valid)' : 'new'}, registered in ${join(paths.certsDir, 'internal', 'device-keys')}
  bundle:      ${bundle} (mode 0600)
${issued.revoked ? `${revokedOldText(issued.revoked)}
` : ''}${
  renew
    ? `${RENEWED_DEVICE_STEPS}${revokeOld ? '' : `\n${supersededStep(id)}`}`
    : `${deviceStartSteps(id, domain, join(REPO_ROOT, 'field-client', 'docker-compose.yml'))}
Copy certs/internal/device-keys/${id}.key to the internal server (the distributor and command API read it within seconds).`
}
`;
}

/** What a renewal with --revoke-old says of the certificates it revoked, and what it leaves to copy. */
function revokedOldText(serials: readonly string[]): string {
  if (serials.length === 0) return '  revoked:     none: no earlier certificate of the device was left valid (ca.crl and the gateways\' list written again)';
  return `  revoked:     the superseded certificate(s) ${serials.join(', ')}: refused once the files below reach the servers,
               so the device connects again only once it has the new certificate
${CRL_STEPS}`;
}

/** What a revocation of certificates leaves to copy: the CRL and the gateways' list (pki/revocation.ts). */
const CRL_STEPS = `  ca.crl                          updated: copy it to both servers and restart their Mosquittos (Mosquitto reads a CRL only at start)
  dmz/revocation/revoked-serials.txt  updated: copy it to the DMZ server; gateways apply it within seconds`;

/** The port of Caddy's token route the bundle's .env points at (CADDY_TOKEN_PORT, as in the Caddyfile). */
function tokenPort(env: Io['env']): number {
  const n = Number(env.CADDY_TOKEN_PORT ?? 8444);
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw usageError('CADDY_TOKEN_PORT must be a port number');
  return n;
}

async function issueToken(paths: AdminPaths, id: string, validityDays: number | undefined, renew: boolean, io: Io): Promise<string> {
  // What the bundle needs, checked before the token is issued: a wrong CADDY_TOKEN_PORT or a damaged
  // fieldstream-pki.json found after it left a token in the DMZ's file and no bundle, and the same
  // command, once fixed, answered PKI_CERT_EXISTS.
  const port = tokenPort(io.env);
  readPkiMeta(paths.certsDir);
  const issued = await issueDeviceToken(paths.certsDir, id, { renew, ...(validityDays ? { validityDays } : {}) });
  const bundle = buildTokenBundle(paths.certsDir, id, join(REPO_ROOT, 'field-client', 'docker-compose.yml'), port);
  return `${renew ? 'Rotated the token of' : 'Added'} device ${id} (device token ${issued.tokenId})
  token:       ${issued.tokenFile} (mode 0600; for the bundle only)
  expires:     ${issued.expiresAt} (${validityDays ?? LIMITS.deviceTokenValidityDays} days; renew it before: devices renew ${id} --token)
  DMZ file:    ${join(paths.certsDir, 'dmz', 'tokens', 'device-tokens.json')} holds its scrypt hash, never the token:
               copy it to the DMZ server (GATEWAY_DEVICE_TOKENS_FILE); gateways apply it within seconds
  signing key: ${renew ? 'kept' : 'new'}, registered in ${join(paths.certsDir, 'internal', 'device-keys')}
  bundle:      ${bundle} (mode 0600)
${renew ? 'On the device: put certs/device.token from the new bundle in place; the old token is refused once the DMZ has the file.' : 'The deployment needs CADDY_TOKEN_ROUTE=on and GATEWAY_TOKEN_AUTH=on (docs/deployment.md, "Devices with a token").'}
`;
}

/** What backup and restore say when a lock of the certificates folder is held: why they pause. */
const waitingFor = (io: Io) => (lock: string) =>
  io.err(`waiting for ${lock}: another command is revoking a device, issuing a certificate or changing the tokens file (at most ${TIMINGS.adminLockWaitMs / 1000} s)\n`);

async function execute(command: string, args: string[], values: Values, io: Io): Promise<void> {
  const paths = resolveAdminPaths(values, io.env, io.cwd, io.repoRoot);
  switch (command) {
    case 'devices list': {
      // A damaged tokens file leaves the rest of the fleet to show: listed, then failed as any partial answer.
      const { devices, tokensError } = listDevicesDespiteTokens(paths.certsDir);
      if (values.json) io.out(JSON.stringify(devices, null, 2) + '\n');
      else io.out(devices.length === 0 ? `No devices in ${paths.certsDir}.\n` : deviceTable(devices));
      if (tokensError) throw new FieldStreamError(tokensError.code, `${tokensError.message} Every device is listed, its token information unreadable; put a good copy of the tokens file back (docs/errors.md).`);
      return;
    }
    case 'devices show': {
      // Every device the list shows: on the internal server's copy (no CA, no tokens file) one is
      // known by its registered key or its revocation alone, which known() does not take.
      const id = deviceId(args[0]!);
      const d = findDevice(paths.certsDir, id);
      if (!d) throw new FieldStreamError('ADMIN_UNKNOWN_DEVICE', `No device ${id} in ${paths.certsDir}: no certificate or token was issued to it, no signing key is registered and it is not revoked.`);
      return io.out(values.json ? JSON.stringify(d, null, 2) + '\n' : deviceDetails(d));
    }
    case 'devices add':
      if (values.token) return io.out(await issueToken(paths, deviceId(args[0]!), days(values.days), false, io));
      return io.out(issue(paths, deviceId(args[0]!), days(values.days), false));
    case 'devices renew': {
      // A token's renewal refuses the old token already: there is nothing superseded to revoke.
      if (values.token && values['revoke-old']) throw usageError('--revoke-old is for a certificate\'s renewal: renewing a token (--token) refuses the old token already');
      if (values.token) return io.out(await issueToken(paths, deviceId(args[0]!), days(values.days), true, io));
      const id = deviceId(args[0]!);
      const validity = days(values.days);
      known(paths, id);
      return io.out(issue(paths, id, validity, true, values['revoke-old'] === true));
    }
    case 'devices revoke': {
      const id = deviceId(args[0]!);
      if (values.superseded) {
        const { serials, kept } = revokeSupersededCertificates(paths.certsDir, id);
        return io.out(
          serials.length === 0
            ? `Device ${id} has no superseded certificate left valid (its newest, ${kept}, is its only valid one); nothing revoked now.
ca.crl and dmz/revocation/revoked-serials.txt were written again from the revocation log.
`
            : `Revoked the superseded certificates of device ${id} (serials ${serials.join(', ')}); its newest, ${kept}, stays valid.
${CRL_STEPS}
The device itself is not revoked: its signing key stays registered and it connects with its newest certificate.
`,
        );
      }
      // Not looked up through known(): its listing reads the tokens file, and a damaged one stopped
      // the revocation before anything was revoked. revokeDevice revokes the certificates all the
      // same, says the token could not be, and answers ADMIN_UNKNOWN_DEVICE for an id with neither.
      const { serials, token } = revokeDevice(paths.certsDir, id);
      return io.out(`Revoked device ${id} (${serials.length ? `certificate serials ${serials.join(', ')}` : 'no certificate'}${token ? '; its device token' : ''}).${token ? `
  dmz/tokens/device-tokens.json          the token's hash removed: copy it to the DMZ server; gateways apply it within seconds` : ''}
${CRL_STEPS}
  internal/device-keys/${id}.key  removed, and ${id} added to internal/revoked-devices.txt:
                                  on the internal server, copy the list over its own (in place) and remove the key
                                  there too; distributors refuse its messages within seconds
`);
    }
    case 'backup': {
      const r = await createBackup(paths, resolve(io.cwd, args[0]!), {
        force: values.force === true,
        onWait: waitingFor(io),
      });
      const kinds = Object.entries(r.manifest.contents).map(([k, n]) => `${k} ${n}`).join(', ');
      const journal = r.manifest.contents['command-journal'] !== undefined;
      const windows = r.manifest.contents['replay-windows'] !== undefined;
      return io.out(`Backed up ${r.manifest.files.length} files to ${r.file} (mode 0600): ${kinds}
  from     ${paths.certsDir}, ${paths.stateDir}
  journal  ${journal ? paths.commandState : `none: no command journal at ${paths.commandState}`}
  sha256   ${r.sha256}
${windows ? '' : noReplayWindows(paths)}${journal ? '' : noJournal(paths)}${noCaKey(r.manifest)}The archive holds private keys${hasCaKey(r.manifest) ? ' and the CA key' : ''}: keep it where only operators can read it, and its sha256
apart from it, to restore with --expect-sha256 ${r.sha256}.
`);
    }
    case 'dead-letters list':
      return io.out(listDeadLetters(resolveDeadLetterPaths(values, paths, io.env, io.cwd), values.json === true));
    case 'dead-letters replay': {
      if (values.code !== undefined && !Object.hasOwn(ERRORS, values.code)) throw usageError(`--code takes an error code of docs/errors.md, e.g. DISTRIBUTOR_WRITE_REJECTED; not ${JSON.stringify(values.code)}`);
      return replayDeadLetters(resolveDeadLetterPaths(values, paths, io.env, io.cwd), io.env, { dryRun: values['dry-run'] === true, code: values.code }, io.out);
    }
    case 'restore': {
      const expect = values['expect-sha256'];
      if (expect !== undefined && !/^[0-9a-fA-F]{64}$/.test(expect)) throw usageError('--expect-sha256 takes the 64 hexadecimal digits of a sha256');
      const r = await restoreBackup(paths, resolve(io.cwd, args[0]!), { force: values.force === true, ...(expect ? { expectSha256: expect } : {}), onWait: waitingFor(io) });
      const kinds = Object.entries(r.manifest.contents).map(([k, n]) => `${k} ${n}`).join(', ');
      const journal = r.manifest.contents['command-journal'] !== undefined;
      return io.out(`Restored ${args[0]} (made ${r.manifest.created}): ${kinds}
  written    ${r.written.length} files; ${r.unchanged.length} were in place already
${r.setAside.length > 0 ? `  removed    ${r.setAside.length} replay window file(s) of a newer generation, which a distributor would have read instead\n` : ''}  into       ${paths.certsDir}, ${paths.stateDir}
  journal    ${journal ? paths.commandState : 'none in the archive'}
${journal && paths.commandStateFrom === 'default' ? journalDefaultNote(paths) : ''}${stillHalfRestoredNote(r.stillHalfRestored)}${restartNote(r.manifest.contents['stored-feed-key'] !== undefined)}
`);
    }
  }
}

/** Runs one command line; returns its exit code. */
export async function runAdmin(argv: readonly string[], given: Io): Promise<number> {
  // What the commands print quotes others' text (a device's file name, a database's answer, in a
  // dead letter's problem): never written to the terminal as a control sequence (terminal-text.ts).
  const io: Io = { ...given, out: (text) => given.out(terminalText(text, true)), err: (text) => given.err(terminalText(text, true)) };
  try {
    const parsed = parse(argv);
    if (parsed === 'help') {
      io.out(USAGE);
      return EXIT.ok;
    }
    await execute(parsed.command, parsed.args, parsed.values, io);
    return EXIT.ok;
  } catch (err) {
    if (isFieldStreamError(err)) {
      io.err(`error ${err.code}: ${err.message}\n`);
      if (err.code === 'ADMIN_USAGE') io.err(USAGE);
      return exitCodeFor(err.code);
    }
    io.err(`error: ${(err as Error).message}\n`);
    return EXIT.failed;
  }
}
