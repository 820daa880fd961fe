/** The field client as its own process (the field container's entry point). */
import { loadDotenv } from '../../shared/config.ts';
import { createLogger } from '../../shared/logger.ts';
import { runService } from '../../shared/service.ts';
import { loadFieldClientConfig } from './config.ts';
import { startFieldClient } from './start.ts';

loadDotenv();
runService('field-client', loadFieldClientConfig, async (config) =>
  startFieldClient(config, createLogger('field-client', config.LOG_LEVEL), {
    // Stopped already; exiting lets the supervisor (compose's restart policy) start it afresh.
    onDataDirLost: (err) => {
      process.stderr.write(`field-client: error ${err.code}: ${err.message}\n`);
      process.exit(1);
    },
  }),
);
