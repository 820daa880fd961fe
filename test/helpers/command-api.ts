import { join } from 'node:path';
import { loadCommandApiConfig } from '../../internal-network/command-api/config.ts';
import { startCommandApi, type CommandApi } from '../../internal-network/command-api/command-api.ts';
import type { Logger } from '../../shared/logger.ts';
import type { makeTestPki } from './pki.ts';
import type { CommandDispatcher } from '../../internal-network/command-api/dispatcher.ts';
import { startCommandHttp } from '../../internal-network/command-api/http.ts';
import type { CommandStore } from '../../internal-network/command-api/store.ts';
import { Credentials, sha256Hex, type Principal } from '../../internal-network/shared/credentials.ts';

/**
 * The command API as embedded/pipeline.ts starts it, on a broker of the test's own over mutual TLS
 * (its `internal/command-api` certificate), its journal in `dir`, no metrics server.
 */
export function startTestCommandApi(o: { brokerUrl: string; pki: ReturnType<typeof makeTestPki>; dir: string; token: string; clientId: string; log: Logger; env?: Record<string, string> }): Promise<CommandApi> {
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
      ...o.env,
    }),
    o.log,
    { processMetrics: false },
  );
}

/** POSTs one command to the API at `port` with `token` and returns its id (the answer must be 202). */
export async function issueTestCommand(port: number, token: string, body: Record<string, unknown>): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}/v1/commands`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  if (res.status !== 202) throw new Error(`the command API answered ${res.status}: ${await res.text()}`);
  const id = ((await res.json()) as { commands: { commandId: string }[] }).commands[0]?.commandId;
  if (id === undefined) throw new Error('the command API answered 202 with no command');
  return id;
}

/** The state of command `id` as the API at `port` tells it. */
export async function testCommandState(port: number, token: string, id: string): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}/v1/commands/${id}`, { headers: { authorization: `Bearer ${token}` } });
  return ((await res.json()) as { state: string }).state;
}

/**
 * The command API's HTTP server alone (internal-network/command-api/http.ts) over `dispatcher` and
 * `store`, on a port picked now, each user by its token; the broker as `brokerConnected` says.
 */
export function startTestCommandHttp(o: { dispatcher: CommandDispatcher; store: CommandStore; logger: Logger; users: Record<string, Principal>; brokerConnected?: boolean }) {
  return startCommandHttp({
    host: '127.0.0.1',
    port: 0,
    setting: 'COMMAND_API_PORT',
    credentials: new Credentials(Object.entries(o.users).map(([token, user]) => [sha256Hex(token), user])),
    groups: {},
    defaultTtlSeconds: 60,
    dispatcher: o.dispatcher,
    store: o.store,
    brokerConnected: () => o.brokerConnected ?? false,
    logger: o.logger,
  });
}
