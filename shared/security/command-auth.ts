import { z } from 'zod';
import { hmacSha256, MacSchema, sameMac } from './mac.ts';

/**
 * End-to-end authentication of commands, from the command API to the device.
 *
 * The DMZ holds the edge certificate and the gateway's broker identity, so TLS and the broker ACLs
 * cannot tell the command API's commands from a compromised DMZ's. The command API therefore
 * authenticates each command for its device with that device's 256-bit signing key (the same key
 * the device signs its uplink messages with; the internal network's registry holds a copy, the DMZ
 * never does), and the field client runs only commands whose MAC it can check:
 *
 *   mac = HMAC-SHA256(key, "fieldstream-command-v1" \n commandId \n deviceId \n command \n
 *                          issuedAt \n expiresAt \n params JSON)
 *
 * - The prefix separates these MACs from the uplink ones made with the same key
 *   (message-auth.ts: "fieldstream-auth-v1/v2"), so no uplink MAC is ever a valid command MAC.
 * - commandId, deviceId and command match /^[A-Za-z0-9._:-]+$/ (their schemas), issuedAt and
 *   expiresAt are decimal integers: none holds a newline, and params is the last field, so the
 *   input is unambiguous (the reason HMAC inputs need a canonical encoding: RFC 2104 §6 leaves
 *   that to the application).
 * - params JSON is JSON.stringify(params), or the empty string when there are none (no JSON text
 *   is empty, so "absent" and `null` differ). Every hop re-serialises parsed JSON, which
 *   reproduces exactly what JSON.stringify produced.
 * - The device id is in the MAC, so a command for one device is refused by another even where
 *   two devices shared a key.
 */
export const COMMAND_AUTH_PREFIX = 'fieldstream-command-v1';

export const CommandAuthSchema = z.strictObject({
  v: z.literal(1),
  /** epoch ms after which the device refuses the command (the command API's TTL) */
  expiresAt: z.number().int().min(0),
  /** HMAC-SHA256, base64url without padding */
  mac: MacSchema,
});
export type CommandAuth = z.infer<typeof CommandAuthSchema>;

export interface SignedCommand {
  commandId: string;
  deviceId: string;
  command: string;
  params?: unknown;
  /** epoch ms */
  issuedAt: number;
}

function commandMac(key: Buffer, c: SignedCommand, expiresAt: number): Buffer {
  const params = c.params === undefined ? '' : JSON.stringify(c.params);
  const text = [COMMAND_AUTH_PREFIX, c.commandId, c.deviceId, c.command, String(c.issuedAt), String(expiresAt), params].join('\n');
  return hmacSha256(key, text);
}

export function signCommand(key: Buffer, c: SignedCommand, expiresAt: number): CommandAuth {
  return { v: 1, expiresAt, mac: commandMac(key, c, expiresAt).toString('base64url') };
}

/** Constant-time check that `auth` was made with `key` for exactly this command. */
export function verifyCommand(key: Buffer, c: SignedCommand, auth: CommandAuth): boolean {
  return sameMac(auth.mac, commandMac(key, c, auth.expiresAt));
}
