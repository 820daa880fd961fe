/** The distributor as its own process (the internal container's entry point). */
import { loadDotenv } from '../../shared/config.ts';
import { createLogger } from '../../shared/logger.ts';
import { runService } from '../../shared/service.ts';
import { loadDistributorConfig } from './config.ts';
import { startDistributor } from './distributor.ts';

loadDotenv();
runService('distributor', loadDistributorConfig, async (config) => {
  const distributor = startDistributor(config, createLogger('distributor', config.LOG_LEVEL));
  // A metrics port that cannot be had stops the process (LISTEN_FAILED), as a busy service port does.
  await distributor.metricsServer;
  return distributor;
});
