import { join } from 'node:path';
import { loadCommandApiConfig } from '../../internal-network/command-api/config.ts';
import { startCommandApi, type CommandApi } from '../../internal-network/command-api/command-api.ts';
import type { Logger } from '../../shared/logger.ts';
import type { makeTestPki } from './pki.ts';

/**
 * The command API as embedded/pipeline.ts starts it, on a broker of the test's own over mutual TLS
 * (its `internal/command-api` certificate), its journal in `dir`, no metrics server.
 */
export function startTestCommandApi(o: { brokerUrl: string; pki: ReturnType<typeof makeTestPki>; dir: string; token: string; clientId: string; log: Logger }): Promise<CommandApi> {
  const p = o.pki.paths;
  return startCommandApi(
    loadCommandApiConfig({
      MQTT_URL: o.brokerUrl,
      MQTT_CA_FILE: p.publicCa,
      MQTT_CERT_FILE: p.service('internal/command-api').cert,
      MQTT_KEY_FILE: p.service('internal/command-api').key,
      COMMAND_API_HOST: '127.0.0.1',
      COMMAND_API_PORT: '0',
      COMMAND_API_TOKEN: o.token,
      COMMAND_API_CLIENT_ID: o.clientId,
      COMMAND_STATE_PATH: join(o.dir, 'commands.jsonl'),
      COMMAND_DEVICE_KEYS_DIR: join(o.pki.dir, 'internal', 'device-keys'),
      COMMAND_REVOKED_DEVICES_FILE: join(o.pki.dir, 'internal', 'revoked-devices.txt'),
      COMMAND_API_METRICS_PORT: 'off',
    }),
    o.log,
    { processMetrics: false },
  );
}
