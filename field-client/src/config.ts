import { z } from 'zod';
import { parseConfig, setting } from '../../shared/config.ts';
import { DeviceIdSchema } from '../../shared/contract/primitives.ts';
import { LIMITS } from '../../shared/limits.ts';

/** The field client's settings (see .env.example and the README's configuration table). */
export const FieldClientConfigSchema = z.object({
  DEVICE_ID: DeviceIdSchema,
  GATEWAY_URL: setting.url(['wss']),
  FIELD_CA_FILE: z.string().default('/certs/ca.crt'),
  FIELD_CERT_FILE: z.string().default('/certs/client.crt'),
  FIELD_KEY_FILE: z.string().default('/certs/client.key'),
  /** messages per frame */
  FIELD_BATCH_MAX: z.coerce.number().int().min(1).max(LIMITS.batchMaxMessages).default(500),
  /** messages sent and not yet acknowledged */
  FIELD_WINDOW: setting.positiveInt(2000),
  /** milliseconds: the longest pause between reconnect attempts */
  FIELD_RECONNECT_MAX_MS: setting.positiveInt(30_000),
  /** Run the built-in simulated sensor (readings, events, files). */
  FIELD_SIMULATE: setting.bool(true),
  /** milliseconds between simulated readings */
  FIELD_SAMPLE_INTERVAL_MS: setting.positiveInt(1000),
  LOG_LEVEL: setting.logLevel(),
});
export type FieldClientConfig = z.infer<typeof FieldClientConfigSchema>;

export function loadFieldClientConfig(env: Record<string, string | undefined> = process.env): Readonly<FieldClientConfig> {
  return parseConfig(FieldClientConfigSchema, env);
}
