/** The command API as its own process (the internal container's entry point). */
import { loadDotenv } from '../../shared/config.ts';
import { createLogger } from '../../shared/logger.ts';
import { runService } from '../../shared/service.ts';
import { loadCommandApiConfig } from './config.ts';
import { startCommandApi } from './command-api.ts';

loadDotenv();
// Stopped because another command API took the journal over: the process ends with a failure, for
// its supervisor to see (the other holds the journal now).
runService('command-api', loadCommandApiConfig, (config) => startCommandApi(config, createLogger('command-api', config.LOG_LEVEL), { onStateLost: () => process.exit(1) }));
