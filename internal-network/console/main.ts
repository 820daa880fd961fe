/** The operator console as its own process (the internal machine's console container). */
import { loadDotenv } from '../../shared/config.ts';
import { createLogger } from '../../shared/logger.ts';
import { runService } from '../../shared/service.ts';
import { loadConsoleConfig } from './config.ts';
import { AnomalyScorer } from './anomaly/scorer.ts';
import { startConsole } from './console.ts';

loadDotenv();
runService('console', loadConsoleConfig, (config) => startConsole(config, createLogger('console', config.LOG_LEVEL), { scorer: new AnomalyScorer() }));
