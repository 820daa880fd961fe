import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readJsonSetting } from '../../shared/config.ts';
import { FieldStreamError, isFieldStreamError, type ErrorCode } from '../../shared/errors.ts';
import { parseSigningKey } from '../../shared/security/message-auth.ts';
import { TIMINGS } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';
import { daysUntil, readPemSetting } from '../../shared/tls-files.ts';
import { CommandsFileSchema } from './commands-file.ts';
import { loadFieldClientConfig, type FieldClientConfig } from './config.ts';
import type { Check, CheckResult, Context } from './doctor-context.ts';
import { clockSkew, dns, roundTrip, tcp, tlsHandshake, websocket } from './doctor-network.ts';
import { queueAndDisk } from './doctor-storage.ts';
import { gatewayUrls } from './gateway-urls.ts';
import { notADeviceCertificate } from './device-credentials.ts';
import { readDeviceToken } from './device-token-file.ts';
import { revokedSerial, serverIdentityCheck, type ServerCrl } from './server-crl.ts';
import { ServerCrlSource } from './server-crl-source.ts';

export type { CheckResult } from './doctor-context.ts';

/*
 * The codes a failure line starts with: the one the client stops on at its start for the same
 * file (CONFIG_*), or the one the gateway refuses the device with, so that an operator can look
 * each up in docs/errors.md whatever the wording.
 */
const REVOKED: ErrorCode = 'GATEWAY_CERTIFICATE_REVOKED';
const NOT_A_DEVICE: ErrorCode = 'GATEWAY_NOT_A_DEVICE_CERTIFICATE';
const INVALID: ErrorCode = 'CONFIG_INVALID';
const EXPIRED: ErrorCode = 'CERT_EXPIRED';
const EXPIRING: ErrorCode = 'CERT_EXPIRING_SOON';

/** An error as a failure line's text: its code first when it has one. */
const codedText = (err: unknown): string => (isFieldStreamError(err) ? `${err.code}: ${err.message}` : err instanceof Error ? err.message : String(err));

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
    return { name: 'configuration', level: 'fail', detail: codedText(err), hint: 'Fix the named variables in .env (see .env.example).' };
  }
  const urls = gatewayUrls(ctx.config.GATEWAY_URL);
  return { name: 'configuration', level: 'ok', detail: `device ${ctx.config.DEVICE_ID}, ${urls.length > 1 ? `gateways ${urls.join(' ')} (tried in turn)` : `gateway ${urls[0]}`}` };
}

/**
 * The command files the client reads at its start, read as it reads them (start.ts): one it cannot
 * read, or that holds no signing key or no commands file, stops the client there, so it is a
 * failure here, with the client's code; undefined when they read.
 */
function commandFilesProblem(c: FieldClientConfig): CheckResult | undefined {
  try {
    if (c.FIELD_SIGNING_KEY_FILE && !parseSigningKey(readPemSetting('FIELD_SIGNING_KEY_FILE', c.FIELD_SIGNING_KEY_FILE))) {
      throw new FieldStreamError('CONFIG_INVALID', `FIELD_SIGNING_KEY_FILE=${c.FIELD_SIGNING_KEY_FILE} does not hold a key (64 hex digits).`);
    }
    if (c.FIELD_COMMANDS_FILE) readJsonSetting('FIELD_COMMANDS_FILE', c.FIELD_COMMANDS_FILE, CommandsFileSchema);
    return undefined;
  } catch (err) {
    return { name: 'commands', level: 'fail', detail: `${codedText(err)} (the client stops at its start on it)`, hint: "Point the variable at the file of this device's bundle (signing.key), or at a readable commands file (docs/field-client.md)." };
  }
}

/** Commands drive actuators: say when the device would run commands nobody authenticated. */
async function commandSafety(ctx: Context): Promise<CheckResult> {
  const c = ctx.config as FieldClientConfig;
  const name = 'commands';
  const unreadable = commandFilesProblem(c);
  if (unreadable) return unreadable;
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
      files[variable] = readPemSetting(variable, path);
    } catch (err) {
      return [{ name: 'certificates', level: 'fail', detail: codedText(err), hint: 'Unpack the device bundle and point the variable at its file.' }];
    }
  }
  // Each file parsed on its own, so that the failure names it and what belongs there.
  const parse = (variable: 'FIELD_CERT_FILE' | 'FIELD_CA_FILE', path: string, bundled: string): X509Certificate | CheckResult => {
    try {
      return new X509Certificate(files[variable] as string);
    } catch (err) {
      return { name: 'certificates', level: 'fail', detail: `${INVALID}: ${variable}=${path} is not a PEM certificate: ${(err as Error).message}`, hint: `Point ${variable} at certs/${bundled} of this device's bundle.` };
    }
  };
  const cert = parse('FIELD_CERT_FILE', c.FIELD_CERT_FILE, 'client.crt');
  if (!(cert instanceof X509Certificate)) return [cert];
  const ca = parse('FIELD_CA_FILE', c.FIELD_CA_FILE, 'ca.crt');
  if (!(ca instanceof X509Certificate)) return [ca];
  // Before the key and the name: the bundle's ca.crt given for its client.crt was "not the key",
  // and a service's certificate passed, or was answered with "make DEVICE_ID match" its name.
  const notDevice = notADeviceCertificate(cert);
  if (notDevice !== undefined) {
    return [{ name: 'certificates', level: 'fail', detail: `${NOT_A_DEVICE}: FIELD_CERT_FILE=${c.FIELD_CERT_FILE} is ${notDevice}: the gateway refuses it`, hint: "Point FIELD_CERT_FILE at certs/client.crt of this device's bundle and FIELD_KEY_FILE at its client.key (scripts/generate-client-cert.sh DEVICE_ID issues them)." }];
  }
  try {
    if (!cert.checkPrivateKey(createPrivateKey(files.FIELD_KEY_FILE as string))) {
      return [{ name: 'certificates', level: 'fail', detail: `${INVALID}: FIELD_KEY_FILE is not the key of FIELD_CERT_FILE`, hint: 'Use the client.key from the same bundle as client.crt.' }];
    }
  } catch (err) {
    return [{ name: 'certificates', level: 'fail', detail: `${INVALID}: FIELD_KEY_FILE=${c.FIELD_KEY_FILE} is not a private key: ${(err as Error).message}`, hint: "Point FIELD_KEY_FILE at certs/client.key of this device's bundle (the same bundle as client.crt)." }];
  }
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) {
    return [{ name: 'certificates', level: 'fail', detail: `${INVALID}: FIELD_CERT_FILE was not issued by the CA in FIELD_CA_FILE`, hint: 'Both must come from the same bundle (scripts/generate-client-cert.sh).' }];
  }
  const cn = /(?:^|\n)CN=([^\n]+)/.exec(cert.subject)?.[1];
  if (cn !== c.DEVICE_ID) {
    return [{ name: 'certificates', level: 'fail', detail: `${INVALID}: the certificate is for device "${cn}", DEVICE_ID is "${c.DEVICE_ID}"`, hint: 'The gateway takes the device id from the certificate: make DEVICE_ID match it.' }];
  }
  ctx.tls = { ca: files.FIELD_CA_FILE as string, cert: files.FIELD_CERT_FILE as string, key: files.FIELD_KEY_FILE as string };
  const now = Date.now();
  const notAfter = Date.parse(cert.validTo);
  if (Date.parse(cert.validFrom) > now) return [{ name: 'certificates', level: 'fail', detail: `not valid before ${cert.validFrom}`, hint: 'Check the device clock.' }];
  if (notAfter < now) return [{ name: 'certificates', level: 'fail', detail: `${EXPIRED}: expired on ${cert.validTo}`, hint: `Issue a new one: scripts/generate-client-cert.sh ${c.DEVICE_ID} --renew` }];
  const days = daysUntil(notAfter, now);
  if (days < TIMINGS.certWarnDays) return [{ name: 'certificates', level: 'warn', detail: `${EXPIRING}: expires in ${days} days (${cert.validTo})`, hint: `Renew soon: scripts/generate-client-cert.sh ${c.DEVICE_ID} --renew` }];
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
    return { name: 'crl', level: 'fail', detail: codedText(err), hint };
  }
  if (!crl) return { name: 'crl', level: 'ok', detail: "no CRL (FIELD_CRL_FILE unset, no ca.crl beside FIELD_CA_FILE): a revoked server certificate is taken" };
  tls.checkServerIdentity = serverIdentityCheck(crl);
  // The device's own certificate against the same CRL: revoked, the gateway refuses it
  // (GATEWAY_CERTIFICATE_REVOKED), and "valid N more days" above was no use to the operator.
  const own = tls.cert !== undefined ? revokedSerial(crl, new X509Certificate(tls.cert).raw) : undefined;
  if (own !== undefined) {
    return {
      name: 'crl',
      level: 'fail',
      detail: `${REVOKED}: FIELD_CERT_FILE=${c.FIELD_CERT_FILE} (serial ${own}) is revoked in ${crl.path}: the gateway refuses it`,
      hint: `A certificate superseded by a renewal: copy the device's new bundle here (fieldstream-admin devices renew ${c.DEVICE_ID} makes one). A device revoked as a whole gets no certificate under that id again.`,
    };
  }
  if (crl.notCurrent !== undefined) return { name: 'crl', level: 'warn', detail: `${crl.path} (FIELD_CRL_NOT_CURRENT): ${crl.notCurrent}`, hint };
  return { name: 'crl', level: 'ok', detail: `${crl.path}: ${crl.revoked} certificates revoked, valid until ${crl.nextUpdate?.toISOString() ?? 'no date'}` };
}

/** A token device: the CA file, and a token issued to this very DEVICE_ID (read as the client reads it). */
function tokenCredentials(ctx: Context, c: FieldClientConfig): CheckResult[] {
  let ca: string;
  const caHint = 'Unpack the device bundle and point the variable at its ca.crt.';
  try {
    ca = readPemSetting('FIELD_CA_FILE', c.FIELD_CA_FILE);
  } catch (err) {
    return [{ name: 'credentials', level: 'fail', detail: codedText(err), hint: caHint }];
  }
  try {
    new X509Certificate(ca);
  } catch (err) {
    return [{ name: 'credentials', level: 'fail', detail: `${INVALID}: FIELD_CA_FILE=${c.FIELD_CA_FILE} is not a PEM certificate: ${(err as Error).message}`, hint: caHint }];
  }
  try {
    ctx.token = readDeviceToken(c.FIELD_TOKEN_FILE as string, c.DEVICE_ID);
  } catch (err) {
    // The message names the file and the device, never the token.
    return [{ name: 'credentials', level: 'fail', detail: codedText(err), hint: 'Use the device.token of this device\'s bundle (fieldstream-admin devices add ID --token).' }];
  }
  ctx.tls = { ca };
  return [{ name: 'credentials', level: 'ok', detail: `a device token for ${c.DEVICE_ID} (FIELD_TOKEN_FILE), no client certificate: GATEWAY_URL must be the token route` }];
}
