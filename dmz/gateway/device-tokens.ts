import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { FieldStreamError, type ErrorCode } from '../../shared/errors.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import type { Logger } from '../../shared/logger.ts';
import { stampOf } from '../../shared/reloaded-file.ts';
import { hashTokenSecret, isTokenExpired, parseToken, tokenEntry, TokensFileSchema, tokenExpiryMs, verifyTokenSecret, type TokenHash, type TokensFile } from '../../shared/security/device-token.ts';
import { throttleKeys, TokenThrottle } from './token-throttle.ts';

const MISSING = 'missing';

export interface TokenIdentity {
  deviceId: string;
  tokenId: string;
}

export interface DeviceTokensOptions {
  /** GATEWAY_DEVICE_TOKENS_FILE */
  path: string;
  /** failed tokens per source address within `failureWindowMs` before it is refused unchecked (never per device: see verify) */
  maxFailures: number;
  failureWindowMs: number;
  log: Logger;
  /** called after a reload, and when a token expired, so the gateway can close connections whose token is no longer current */
  onChange?: () => void;
  /** tokens checked at once, at most (LIMITS.deviceTokenChecksMax) */
  checksMax?: number;
}

/**
 * The device tokens the DMZ knows, as slow hashes only (shared/security/device-token.ts), re-read
 * when the file changes (within TIMINGS.deviceTokensReloadMs, no restart): a revoked or rotated
 * token is refused from then on, and `onChange` lets the gateway close its open connections.
 * A token past its expiresAt is refused (GATEWAY_TOKEN_EXPIRED) and, at the first look after it
 * expired, its open connections are closed the same way. An entry without expiresAt (a file from
 * before tokens expired) never expires.
 * A damaged file is logged (TOKENS_FILE_INVALID) and the last good one stays in force; so does it
 * when the file is gone while the gateway runs (CONFIG_FILE_UNREADABLE, once): it is taken again
 * when back. Started without the file, the gateway accepts no token until it is there.
 *
 * The tooling never takes a revocation back, nor a token a rotation replaced: a file that brings
 * one back as active is an older copy (pushed again, restored, crossing a newer one), or a newer
 * file written over a restored older one. It is logged (TOKENS_FILE_INVALID, naming those devices)
 * and taken but for them, whose entries read before stay in force, and for the devices it lacks,
 * kept as read: the revoked serials never un-revoke what they listed (revocation.ts), and the
 * revocations the file makes are taken (refused whole, a file written by `devices revoke` after a
 * restore that undid a rotation left the device it revoked connected until the gateways restarted).
 * What was read as revoked or replaced is kept for the process's life: a device id and a
 * 16-hex-digit token id each, as many as the files held and the rotations made.
 */
export class DeviceTokens {
  private file: TokensFile = { version: 1, devices: {} };
  /** the version of the file last looked at (shared/reloaded-file.ts stampOf; MISSING: not there) */
  private stamp: string | undefined;
  /** the earliest expiry still ahead among the active tokens (ms since the epoch; Infinity: none) */
  private nextExpiryMs = Number.POSITIVE_INFINITY;
  private readonly timer: NodeJS.Timeout;
  private readonly throttle: TokenThrottle;
  /** a hash nobody's token matches: an unknown device costs a guesser as long as a known one */
  private decoy: Promise<TokenHash> | undefined;
  /** tokens being checked now */
  private checking = 0;
  /** devices read as revoked, and token ids read as replaced by a rotation, since the start */
  private readonly revokedIds = new Set<string>();
  private readonly replacedTokenIds = new Set<string>();
  /**
   * Per device, the token whose secret a check proved last, and a SHA-256 of that secret: the same
   * secret again (the device reconnecting, or retrying its expired token) is answered without another
   * scrypt and without a check slot (provenAnswer). Its tries are charged nothing (see check), so each
   * was a slow hash its holder could ask for at full speed, the slots of every other token device's
   * checks taken. One entry per device at most; the secret is 256 random bits, for which SHA-256 is
   * as slow to guess as scrypt, and a guess is never compared but with the one proven secret.
   */
  private readonly proven = new Map<string, { tokenId: string; digest: Buffer }>();

  constructor(private readonly o: DeviceTokensOptions) {
    this.throttle = new TokenThrottle(o.maxFailures, o.failureWindowMs);
    this.reload();
    this.timer = setInterval(() => this.tick(), TIMINGS.deviceTokensReloadMs);
    this.timer.unref();
  }

  close(): void {
    clearInterval(this.timer);
  }

  /** Whether a connection opened with this token may stay open. */
  isCurrent(identity: TokenIdentity, now = Date.now()): boolean {
    return this.refusal(identity, now) === undefined;
  }

  /**
   * Why a connection opened with this token may no longer stay open, or undefined when it may:
   * GATEWAY_TOKEN_EXPIRED past its expiry, GATEWAY_TOKEN_REVOKED when revoked or replaced.
   */
  refusal(identity: TokenIdentity, now = Date.now()): 'GATEWAY_TOKEN_REVOKED' | 'GATEWAY_TOKEN_EXPIRED' | undefined {
    const e = tokenEntry(this.file.devices, identity.deviceId);
    if (e?.state !== 'active' || e.tokenId !== identity.tokenId) return 'GATEWAY_TOKEN_REVOKED';
    return isTokenExpired(e, now) ? 'GATEWAY_TOKEN_EXPIRED' : undefined;
  }

  /**
   * The identity a bearer token proves, or a coded refusal. `source` is the device's address (from
   * the edge proxy). Every failure counts against the address only, never against the device the
   * token names: a budget per device let anyone refuse a device its own right token for good, with
   * GATEWAY_TOKEN_MAX_FAILURES wrong ones naming it every window from any addresses, and bought
   * nothing, since the secret is 256 random bits (parseToken takes no shorter one) that no rate of
   * online guessing finds. What many addresses together can make the gateway hash is bounded by
   * the checks at once (LIMITS.deviceTokenChecksMax) and the speed of scrypt.
   */
  async verify(token: string | undefined, source: string): Promise<TokenIdentity> {
    const known = token === undefined ? undefined : this.provenAnswer(token, source);
    if (known) return known;
    // Before anything is charged: a device refused for room tries again later, its budget whole.
    if (this.checking >= (this.o.checksMax ?? LIMITS.deviceTokenChecksMax)) {
      throw new FieldStreamError('GATEWAY_TOO_MANY_CONNECTIONS', 'The gateway is checking as many device tokens as it does at once; try again later.');
    }
    this.checking++;
    try {
      return await this.check(token, source);
    } finally {
      this.checking--;
    }
  }

  private async check(token: string | undefined, source: string): Promise<TokenIdentity> {
    const parsed = token === undefined ? undefined : parseToken(token);
    // Every refusal names the address it came from, for the gateway's log: the connection's own is
    // the proxy's (on the Unix socket, none), which says nothing of who was guessing.
    const refused = (code: ErrorCode, message?: string, details: Record<string, unknown> = {}) =>
      new FieldStreamError(code, message, { ...(parsed ? { deviceId: parsed.deviceId } : {}), source, ...details });
    // An IPv6 source is budgeted as its /64 (throttleSource): a host holds all of it; and its
    // site, a /48, with a larger budget (throttleKeys): one holder has 65,536 /64s of it.
    const keys = throttleKeys(source);
    if (this.throttle.blocked(keys)) throw refused('GATEWAY_TOKEN_THROTTLED');
    if (!parsed) {
      this.throttle.fail(keys);
      throw refused('GATEWAY_TOKEN_MISSING');
    }
    const { deviceId } = parsed;
    const entry = tokenEntry(this.file.devices, deviceId);
    // Answered before any hash, and no secret gets past it: nothing to bound, so nothing charged. A
    // revoked device still running in the field, charged at each retry, kept its address's budget
    // spent, and every token device behind the same NAT refused with it.
    if (entry?.state === 'revoked') throw refused('GATEWAY_TOKEN_REVOKED');
    // Charged before the slow check and refunded once the secret is proven: guesses sent in
    // parallel cannot all pass the budget check while the first ones are still being hashed.
    this.throttle.fail(keys);
    if (!entry) {
      await verifyTokenSecret(parsed.secret, await this.decoyHash());
      throw refused('GATEWAY_TOKEN_UNKNOWN_DEVICE');
    }
    const ok = await verifyTokenSecret(parsed.secret, entry.scrypt);
    if (!ok) throw refused('GATEWAY_TOKEN_INVALID');
    // The file may have changed during the hash: the entry now in force decides.
    const now = tokenEntry(this.file.devices, deviceId);
    if (now?.state !== 'active' || now.tokenId !== entry.tokenId) {
      throw refused(now?.state === 'revoked' ? 'GATEWAY_TOKEN_REVOKED' : 'GATEWAY_TOKEN_INVALID');
    }
    // The secret is proven from here on: no guess, so nothing stays charged against the address. An
    // expired token's device retries with its back-off, and charged, it kept its address's budget
    // spent: every token device behind the same NAT was refused, and its own renewed token too.
    this.throttle.refund(keys);
    this.proven.set(deviceId, { tokenId: now.tokenId, digest: secretDigest(parsed.secret) });
    // Said only to the holder of the right secret: a guesser learns no more than "invalid".
    if (isTokenExpired(now)) throw expiredError(deviceId, now.expiresAt, source);
    return { deviceId, tokenId: entry.tokenId };
  }

  /**
   * The answer to the secret a check proved last for its device, while that token is still the
   * device's: its identity, or GATEWAY_TOKEN_EXPIRED, with no hash. Undefined for anything else
   * (another secret, a token renewed or revoked since, an address refused), which is checked as any.
   */
  private provenAnswer(token: string, source: string): TokenIdentity | undefined {
    const parsed = parseToken(token);
    if (!parsed) return undefined;
    const digest = secretDigest(parsed.secret);
    const entry = tokenEntry(this.file.devices, parsed.deviceId);
    const proven = this.proven.get(parsed.deviceId);
    if (entry?.state !== 'active' || proven?.tokenId !== entry.tokenId || !timingSafeEqual(proven.digest, digest)) return undefined;
    if (this.throttle.blocked(throttleKeys(source))) return undefined;
    if (isTokenExpired(entry)) throw expiredError(parsed.deviceId, entry.expiresAt, source);
    return { deviceId: parsed.deviceId, tokenId: entry.tokenId };
  }

  private decoyHash(): Promise<TokenHash> {
    this.decoy ??= hashTokenSecret('decoy');
    return this.decoy;
  }

  /** The periodic look: the file, then the expiry dates (a token expires without the file changing). */
  private tick(now = Date.now()): void {
    this.reload();
    if (now < this.nextExpiryMs) return;
    this.nextExpiryMs = this.earliestExpiry(now);
    this.o.log.info('a device token expired: closing its connections');
    this.o.onChange?.();
  }

  private earliestExpiry(now: number): number {
    let next = Number.POSITIVE_INFINITY;
    for (const e of Object.values(this.file.devices)) {
      const at = tokenExpiryMs(e);
      if (at !== undefined && at > now && at < next) next = at;
    }
    return next;
  }

  /** The devices whose token `next` has active though a file read before revoked or replaced it. */
  private broughtBack(next: TokensFile): string[] {
    return Object.entries(next.devices)
      .filter(([id, e]) => e.state === 'active' && (this.revokedIds.has(id) || this.replacedTokenIds.has(e.tokenId)))
      .map(([id]) => id);
  }

  /**
   * `next` with the entries in force now for the devices it brings back (`back`; revoked when none
   * is), and for those it lacks: the rest of it (revocations, rotations, new devices) is taken.
   */
  private keepingCurrent(next: TokensFile, back: readonly string[]): TokensFile {
    const devices: TokensFile['devices'] = { ...this.file.devices, ...next.devices };
    for (const id of back) devices[id] = tokenEntry(this.file.devices, id) ?? { state: 'revoked', revokedAt: new Date().toISOString() };
    return { version: 1, devices };
  }

  /** What `next`, taken over `prev`, revokes or replaces (an entry gone is neither: its token is refused anyway). */
  private remember(prev: TokensFile, next: TokensFile): void {
    for (const [id, e] of Object.entries(next.devices)) if (e.state === 'revoked') this.revokedIds.add(id);
    for (const [id, e] of Object.entries(prev.devices)) {
      const after = tokenEntry(next.devices, id);
      if (e.state === 'active' && after !== undefined && (after.state !== 'active' || after.tokenId !== e.tokenId)) this.replacedTokenIds.add(e.tokenId);
    }
  }

  private reload(): void {
    let stamp: string;
    try {
      stamp = stampOf(this.o.path);
    } catch (err) {
      if (this.stamp === MISSING) return;
      const problem = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      if (this.stamp === undefined) {
        // Never there since the start (token devices not set up yet): nothing to keep in force.
        this.o.log.warn({ code: 'CONFIG_FILE_UNREADABLE', path: this.o.path, problem }, 'device tokens file missing: no device token is accepted until it is there');
        this.stamp = MISSING;
        this.file = { version: 1, devices: {} };
        this.nextExpiryMs = Number.POSITIVE_INFINITY;
        this.o.onChange?.();
        return;
      }
      // Gone while running: most often for a moment (a copy that removes it first, an editor's save,
      // rsync replacing it), and dropping every token then closed every token device's connection.
      // The last good file stays in force, as for a damaged one; the file is taken again when back.
      this.o.log.warn({ code: 'CONFIG_FILE_UNREADABLE', path: this.o.path, problem }, 'device tokens file gone: the last good one stays in force until it is back');
      this.stamp = MISSING;
      return;
    }
    if (stamp === this.stamp) return;
    this.stamp = stamp;
    let parsed: TokensFile;
    try {
      parsed = TokensFileSchema.parse(JSON.parse(readFileSync(this.o.path, 'utf8')));
    } catch (err) {
      this.o.log.error({ code: 'TOKENS_FILE_INVALID', path: this.o.path, err: (err as Error).message.slice(0, 500) }, 'device tokens file not valid: the last good one stays in force');
      return;
    }
    const back = this.broughtBack(parsed);
    if (back.length > 0) {
      this.o.log.error(
        { code: 'TOKENS_FILE_INVALID', path: this.o.path, devices: back.slice(0, 20), count: back.length },
        'device tokens file brings back tokens revoked or replaced before (an older copy?): taken but for these devices, whose entries read before stay in force',
      );
      parsed = this.keepingCurrent(parsed, back);
      if (sameDevices(parsed, this.file)) return;
    }
    this.remember(this.file, parsed);
    this.file = parsed;
    // Only the tokens still in the file as they were: a renewed one is checked anew.
    for (const [id, proven] of this.proven) {
      const e = tokenEntry(parsed.devices, id);
      if (e?.state !== 'active' || e.tokenId !== proven.tokenId) this.proven.delete(id);
    }
    const now = Date.now();
    this.nextExpiryMs = this.earliestExpiry(now);
    const entries = Object.values(parsed.devices);
    const active = entries.filter((e) => e.state === 'active');
    this.o.log.info(
      { active: active.length, expired: active.filter((e) => isTokenExpired(e, now)).length, revoked: entries.filter((e) => e.state === 'revoked').length },
      'device tokens loaded',
    );
    this.o.onChange?.();
  }
}

/** Whether two files hold the same entries (an older copy that changes nothing is not taken again). */
function sameDevices(a: TokensFile, b: TokensFile): boolean {
  const ids = Object.keys(a.devices);
  return ids.length === Object.keys(b.devices).length && ids.every((id) => JSON.stringify(tokenEntry(a.devices, id)) === JSON.stringify(tokenEntry(b.devices, id)));
}

/** GATEWAY_TOKEN_EXPIRED for the holder of the right secret, with what the gateway's log names. */
function expiredError(deviceId: string, expiresAt: string | undefined, source: string): FieldStreamError {
  return new FieldStreamError('GATEWAY_TOKEN_EXPIRED', `The device token of ${deviceId} expired at ${expiresAt}.`, { deviceId, source, expiresAt });
}

/** A fast digest of a token's secret, for telling the secret proven last (DeviceTokens.proven). */
function secretDigest(secret: string): Buffer {
  return createHash('sha256').update(secret).digest();
}
