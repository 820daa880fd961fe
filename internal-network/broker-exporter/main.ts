/** The broker exporter as its own process (the internal compose file's broker-exporter service). */
import { loadDotenv } from '../../shared/config.ts';
import { createLogger } from '../../shared/logger.ts';
import { runService } from '../../shared/service.ts';
import { loadBrokerExporterConfig } from './config.ts';
import { startBrokerExporter } from './exporter.ts';

loadDotenv();
runService('broker-exporter', loadBrokerExporterConfig, (config) => startBrokerExporter(config, createLogger('broker-exporter', config.LOG_LEVEL)));
