import { readFileSync } from 'node:fs';
import { FieldStreamError } from '../../shared/errors.ts';
import { parseToken } from '../../shared/security/device-token.ts';

/**
 * The device token from FIELD_TOKEN_FILE: one line, a token issued to this very DEVICE_ID. A
 * mistake is reported without the token's text.
 */
export function readDeviceToken(path: string, deviceId: string): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    // As every file a setting names (shared/tls-files.ts): the file, not its content, is what to fix.
    throw new FieldStreamError('CONFIG_FILE_UNREADABLE', `FIELD_TOKEN_FILE=${path} cannot be read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, {
      variable: 'FIELD_TOKEN_FILE',
      path,
    });
  }
  const token = text.trim();
  const parsed = parseToken(token);
  if (!parsed) throw new FieldStreamError('CONFIG_INVALID', `FIELD_TOKEN_FILE=${path} does not hold a device token (fst1.<device id>.<secret>).`);
  if (parsed.deviceId !== deviceId) throw new FieldStreamError('CONFIG_INVALID', `FIELD_TOKEN_FILE=${path} holds the token of device ${parsed.deviceId}, not of DEVICE_ID=${deviceId}.`);
  return token;
}
