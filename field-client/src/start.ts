import type { Logger } from '../../shared/logger.ts';
import { readPemSetting } from '../../shared/tls-files.ts';
import { CommandHandlers } from './commands.ts';
import type { FieldClientConfig } from './config.ts';
import { FieldClient } from './field-client.ts';
import { GatewayConnection } from './gateway-connection.ts';
import { Simulator } from './simulator.ts';

export interface RunningFieldClient {
  readonly client: FieldClient;
  readonly connection: GatewayConnection;
  readonly commands: CommandHandlers;
  close(): Promise<void>;
}

/** Builds the field client from its configuration; with FIELD_SIMULATE it also runs the simulated sensor. */
export function startFieldClient(config: Readonly<FieldClientConfig>, logger: Logger): RunningFieldClient {
  const log = logger.child({ component: 'field-client', deviceId: config.DEVICE_ID });
  const connection = new GatewayConnection(
    {
      url: config.GATEWAY_URL,
      tls: {
        ca: readPemSetting('FIELD_CA_FILE', config.FIELD_CA_FILE),
        cert: readPemSetting('FIELD_CERT_FILE', config.FIELD_CERT_FILE),
        key: readPemSetting('FIELD_KEY_FILE', config.FIELD_KEY_FILE),
      },
      reconnectInitialMs: 500,
      reconnectMaxMs: config.FIELD_RECONNECT_MAX_MS,
      idleTimeoutMs: 90_000, // three missed gateway pings
    },
    log,
  );
  const commands = new CommandHandlers();
  const client = new FieldClient({ deviceId: config.DEVICE_ID, batchMax: config.FIELD_BATCH_MAX, window: config.FIELD_WINDOW }, connection, commands, log);
  const simulator = config.FIELD_SIMULATE ? new Simulator(client, config.FIELD_SAMPLE_INTERVAL_MS, log.child({ component: 'simulator' })) : undefined;
  simulator?.registerCommands(commands);
  connection.start();
  simulator?.start();
  return {
    client,
    connection,
    commands,
    async close() {
      simulator?.stop();
      await connection.stop();
    },
  };
}
