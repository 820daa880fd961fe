/** The distributor as its own process (the internal container's entry point). */
import { loadDotenv } from '../../shared/config.ts';
import { createLogger } from '../../shared/logger.ts';
import { runService } from '../../shared/service.ts';
import { loadDistributorConfig } from './config.ts';
import { startDistributor } from './distributor.ts';

loadDotenv();
runService('distributor', loadDistributorConfig, async (config) => startDistributor(config, createLogger('distributor', config.LOG_LEVEL)));
