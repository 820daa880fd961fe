import { DAY_MS, TIMINGS } from '../../../shared/limits.ts';
import type { Logger } from '../../../shared/logger.ts';
import { ReloadedFile } from '../../../shared/reloaded-file.ts';
import { deviceAuth, readTokensFileAt, tokenEntry, tokenStanding, type TokensFile } from '../../../shared/security/device-token.ts';
import type { PipelineView } from '../pipeline/pipeline-view.ts';

/** up: true or false when something measured it; null when nothing says (no exporter, no answer). */
export interface PartState {
  up: boolean | null;
  /** where the answer comes from */
  source: string;
}

export interface ManageStatus {
  /** ISO time of the look at the services this comes from (null: none yet) */
  at: string | null;
  brokers: { internal: PartState; dmz: PartState };
  bridge: { connected: boolean | null; source: string };
  distributors: Array<{ name: string; ready: boolean | null; detail: string; broker: boolean | null; database: boolean | null; files: boolean | null }>;
  database: { ok: boolean | null; detail: string };
  services: PipelineView['services'];
  figures: { readingsPerSecond: number | null; writeFailures: number | null; deadLetters: number | null; feedDropped: number | null; feedRefused: number | null };
  /**
   * The console's own connection to the internal broker, which its fleet (GET /devices) is heard
   * through: while it is down, every device's state and values are as of `downSince` (the last look
   * at which it stood; null when not known), whatever the brokers' own state says.
   */
  feed: { connected: boolean; downSince: string | null };
}

const EXPORTER = 'broker-exporter';
/** The checks of a distributor whose /readyz does not name its checks (a version before `files`). */
const DISTRIBUTOR_CHECKS_BEFORE_NAMED: readonly string[] = ['broker', 'database'];

/**
 * The state of the pipeline's parts from the pipeline view (the services' own /readyz and
 * /metrics, CONSOLE_PIPELINE_TARGETS): both brokers and the bridge from the broker exporter
 * (fieldstream_mosquitto_up, fieldstream_bridge_connected); each distributor, and the database
 * through them, from their /readyz checks `broker`, `database` and `files` (internal-network/distributor).
 * Without the exporter the internal broker is judged by the console's own connection to it, and
 * the DMZ broker and the bridge are unknown (null), never guessed.
 */
export function manageStatus(view: PipelineView, consoleBrokerConnected: boolean): ManageStatus {
  const broker = (name: 'internal' | 'dmz'): PartState | undefined => {
    const b = view.brokers.find((x) => x.name === name);
    return b ? { up: b.up, source: EXPORTER } : undefined;
  };
  const distributors = view.services
    .filter((s) => s.service === 'distributor' || (s.service === undefined && /^distributor/.test(s.name)))
    .map((s) => {
      // A distributor that answered names its failing checks; one that did not answer says nothing of
      // them. A check it does not have reads null, not passed: one of a version before /readyz named its
      // checks had only `broker` and `database` (no `files`), during a rolling upgrade.
      const has = s.checks ?? DISTRIBUTOR_CHECKS_BEFORE_NAMED;
      const check = (name: string) => (s.failing === undefined || !has.includes(name) ? null : !s.failing.includes(name));
      return { name: s.name, ready: s.ready, detail: s.detail, broker: check('broker'), database: check('database'), files: check('files') };
    });
  const judged = distributors.filter((d) => d.database !== null);
  const failing = judged.filter((d) => d.database === false).map((d) => d.name);
  const database =
    judged.length === 0
      ? { ok: null, detail: distributors.length === 0 ? 'no distributor among CONSOLE_PIPELINE_TARGETS' : 'no distributor answered' }
      : failing.length > 0
        ? { ok: false, detail: `the last write failed at ${failing.join(', ')}` }
        : { ok: true, detail: `writes succeed (${judged.map((d) => d.name).join(', ')})` };
  return {
    at: view.at > 0 ? new Date(view.at).toISOString() : null,
    brokers: {
      internal: broker('internal') ?? { up: consoleBrokerConnected, source: 'console' },
      dmz: broker('dmz') ?? { up: null, source: 'none' },
    },
    bridge: view.bridgeConnected === null ? { connected: null, source: 'none' } : { connected: view.bridgeConnected, source: EXPORTER },
    distributors,
    database,
    services: view.services,
    figures: { readingsPerSecond: view.readingsPerSecond, writeFailures: view.writeFailures, deadLetters: view.deadLetters, feedDropped: view.feedDropped, feedRefused: view.feedRefused },
    feed: { connected: consoleBrokerConnected, downSince: !consoleBrokerConnected && view.feedDownSince !== null ? new Date(view.feedDownSince).toISOString() : null },
  };
}

/**
 * How a device authenticates, and when that credential expires, as the management API shows it.
 * auth: the rule the tooling uses (deviceAuth: a token when the tokens file has an entry for it);
 * null when the console has no tokens file (CONSOLE_DEVICE_TOKENS_FILE), never guessed.
 * A certificate's expiry: its days left only, as the gateway's presence and the device's health
 * report them (the fleet's certDaysLeft); a token's: its expiresAt (null: a token from before
 * expiry dates, which never expires; or a revoked one).
 */
export interface DeviceCredential {
  auth: 'certificate' | 'token' | null;
  credentialExpiresAt: string | null;
  credentialDaysLeft: number | null;
  /** token devices only: active, expired (the gateways refuse it) or revoked */
  tokenState?: 'active' | 'expired' | 'revoked';
}

export function deviceCredential(certDaysLeft: number | null, tokens: TokensFile['devices'] | undefined, id: string, now = Date.now()): DeviceCredential {
  if (tokens === undefined) return { auth: null, credentialExpiresAt: null, credentialDaysLeft: certDaysLeft };
  const entry = tokenEntry(tokens, id);
  if (deviceAuth(entry) === 'certificate' || !entry) return { auth: 'certificate', credentialExpiresAt: null, credentialDaysLeft: certDaysLeft };
  const t = tokenStanding(entry, now);
  if (t.state === 'revoked') return { auth: 'token', credentialExpiresAt: null, credentialDaysLeft: null, tokenState: 'revoked' };
  return {
    auth: 'token',
    credentialExpiresAt: t.expiresAt,
    credentialDaysLeft: t.expiresAt === null ? null : Math.floor((Date.parse(t.expiresAt) - now) / DAY_MS),
    tokenState: t.expired ? 'expired' : 'active',
  };
}

/**
 * The device tokens file as the console reads it (readTokensFileAt, the tooling's reader), looked
 * at again at most every TIMINGS.deviceTokensReloadMs and read only when it changed (ReloadedFile,
 * as the role tokens). A damaged file is logged once and the last good one kept; a missing one
 * means the console does not know (undefined).
 */
export class DeviceTokensView {
  private readonly file: ReloadedFile<TokensFile['devices'] | undefined>;

  constructor(path: string, log: Logger) {
    this.file = new ReloadedFile({
      path,
      recheckMs: TIMINGS.deviceTokensReloadMs,
      read: (p) => readTokensFileAt(p)?.devices,
      whenMissing: 'forget',
      onInvalid: (err) => log.error({ code: 'TOKENS_FILE_INVALID', path, err: err.message }, 'device tokens file not valid: the last good one stays in force'),
    });
  }

  current(now = Date.now()): TokensFile['devices'] | undefined {
    return this.file.current(now);
  }
}
