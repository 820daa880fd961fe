import type { PkiPaths } from '../../shared/pki/layout.ts';
import type { Logger } from '../../shared/logger.ts';
import { loadFieldClientConfig } from '../../field-client/src/config.ts';
import { startFieldClient, type RunningFieldClient } from '../../field-client/src/start.ts';
import { tempDir } from './pki.ts';

/** A field client in this process with its own data folder; local inputs off unless asked for. */
export async function startTestFieldClient(
  paths: PkiPaths,
  deviceId: string,
  gatewayUrl: string,
  logger: Logger,
  env: Record<string, string> = {},
): Promise<RunningFieldClient & { dataDir: string }> {
  const data = tempDir(`field-${deviceId}`);
  const d = paths.device(deviceId);
  const running = await startFieldClient(
    loadFieldClientConfig({
      DEVICE_ID: deviceId,
      GATEWAY_URL: gatewayUrl,
      FIELD_CA_FILE: paths.publicCa,
      FIELD_CERT_FILE: d.cert,
      FIELD_KEY_FILE: d.key,
      FIELD_SIGNING_KEY_FILE: d.signingKey,
      FIELD_DATA_DIR: data.dir,
      FIELD_HTTP_PORT: 'off',
      FIELD_MQTT_PORT: 'off',
      ...env,
    }),
    logger,
  );
  return {
    ...running,
    dataDir: data.dir,
    async close() {
      await running.close();
      data.cleanup();
    },
  };
}
