/** The distributor as its own process (the internal container's entry point). */
import { loadDotenv } from '../../shared/config.ts';
import { createLogger } from '../../shared/logger.ts';
import { runService } from '../../shared/service.ts';
import { loadDistributorConfig } from './config.ts';
import { startDistributor } from './distributor.ts';

loadDotenv();
runService('distributor', loadDistributorConfig, async (config) => {
  const distributor = startDistributor(config, createLogger('distributor', config.LOG_LEVEL), {
    // Stopped already; exiting lets the supervisor (compose's restart policy) start it afresh.
    onStateLost: (err) => {
      process.stderr.write(`distributor: error ${err.code}: ${err.message}\n`);
      process.exit(1);
    },
  });
  // A metrics port that cannot be had stops the process (LISTEN_FAILED), as a busy service port does.
  await distributor.metricsServer;
  return distributor;
});
