/** The gateway as its own process (the DMZ container's entry point). */
import { loadDotenv } from '../../shared/config.ts';
import { createLogger } from '../../shared/logger.ts';
import { runService } from '../../shared/service.ts';
import { loadGatewayConfig } from './config.ts';
import { startGateway } from './gateway.ts';

loadDotenv();
runService('gateway', loadGatewayConfig, (config) => startGateway(config, createLogger('gateway', config.LOG_LEVEL)));
