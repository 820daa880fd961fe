import { z } from 'zod';
import { parseConfig, setting } from '../../shared/config.ts';
import { clientIdSetting, mqttSettings } from '../../shared/mqtt/settings.ts';

/** The broker exporter's settings (see .env.example and docs/configuration.md). */
export const BrokerExporterConfigSchema = z.object({
  // MQTT_URL: the internal broker; MQTT_CERT_FILE/MQTT_KEY_FILE: the monitor certificate (CN monitor,
  // read access to $SYS/# only), which it presents to both brokers.
  ...mqttSettings('internal/monitor'),
  /** The DMZ broker, dialled out from the internal side as the bridge does ("off": watch the internal broker only). */
  DMZ_MQTT_URL: z.union([z.literal('off'), setting.url(['mqtts'])]).default('mqtts://dmz-mosquitto:8883'),
  /** Where Prometheus scrapes /metrics (and /healthz, /readyz are answered). */
  BROKER_EXPORTER_METRICS_HOST: setting.host('127.0.0.1'),
  BROKER_EXPORTER_METRICS_PORT: setting.port(9468),
  /**
   * seconds without any $SYS message after which a broker counts as down although its connection
   * stands (a hung broker). Mosquitto publishes $SYS every sys_interval (5 s in our configurations).
   */
  BROKER_EXPORTER_STALE_S: z.coerce.number().int().min(2).max(3600).default(30),
  BROKER_EXPORTER_CLIENT_ID: clientIdSetting('broker-exporter'),
  LOG_LEVEL: setting.logLevel(),
});
export type BrokerExporterConfig = z.infer<typeof BrokerExporterConfigSchema>;

export function loadBrokerExporterConfig(env: Record<string, string | undefined> = process.env): Readonly<BrokerExporterConfig> {
  return parseConfig(BrokerExporterConfigSchema, env);
}
