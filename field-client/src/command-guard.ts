import type { CommandFrame } from '../../shared/contract/downlink.ts';
import type { ErrorCode } from '../../shared/errors.ts';
import { verifyCommand } from '../../shared/security/command-auth.ts';

export interface CommandGuardOptions {
  deviceId: string;
  /** the device's signing key; without it only FIELD_ALLOW_UNSIGNED_COMMANDS lets commands run */
  key: Buffer | undefined;
  /** FIELD_ALLOW_UNSIGNED_COMMANDS: a device *without* a key runs unsigned commands */
  allowUnsigned: boolean;
  /** ms: FIELD_COMMAND_MAX_AGE_S, the oldest issuedAt accepted */
  maxAgeMs: number;
  /** ms: FIELD_COMMAND_CLOCK_SKEW_S, how far the command API's clock may run ahead of the device's */
  skewMs: number;
}

/**
 * Decides whether a command may run, before anything is journaled or run: the gateway and the DMZ
 * broker are not trusted with commands (a compromised DMZ holds their certificates), so only the
 * command API's MAC made with this device's key counts (shared/security/command-auth.ts).
 *
 * - A device with a key runs only commands carrying a valid MAC for itself; FIELD_ALLOW_UNSIGNED_COMMANDS
 *   changes nothing for it (an attacker could simply strip the MAC).
 * - A device without a key runs nothing unless FIELD_ALLOW_UNSIGNED_COMMANDS is on.
 * - Freshness, from the device's clock: issued no longer ago than maxAge, not past its signed
 *   expiry, and not dated in the future — each with skewMs of slack for the two clocks. A forged
 *   date cannot pass: the dates are under the MAC.
 *
 * Returns the refusal's code, or undefined when the command may run (replays are the journal's
 * business: commands.ts).
 */
export function checkCommand(frame: CommandFrame, o: CommandGuardOptions, now = Date.now()): ErrorCode | undefined {
  if (o.key) {
    if (!frame.auth) return 'FIELD_COMMAND_UNSIGNED';
    const signed = { commandId: frame.commandId, deviceId: o.deviceId, command: frame.command, params: frame.params, issuedAt: frame.issuedAt };
    if (!verifyCommand(o.key, signed, frame.auth)) return 'FIELD_COMMAND_BAD_SIGNATURE';
  } else if (!o.allowUnsigned) {
    return 'FIELD_COMMAND_UNSIGNED';
  }
  if (frame.issuedAt > now + o.skewMs) return 'FIELD_COMMAND_FUTURE';
  if (now - frame.issuedAt > o.maxAgeMs + o.skewMs) return 'FIELD_COMMAND_STALE';
  if (o.key && frame.auth && now > frame.auth.expiresAt + o.skewMs) return 'FIELD_COMMAND_STALE';
  return undefined;
}
