import { z } from 'zod';
import { parseConfig, setting } from '../../shared/config.ts';
import { hostNamesSetting } from '../../shared/security/host-header.ts';
import { clientIdSetting, mqttSettings } from '../../shared/mqtt/settings.ts';

/** The broker exporter's settings (see .env.example and docs/configuration.md). */
export const BrokerExporterConfigSchema = z.object({
  // MQTT_URL: the internal broker; MQTT_CERT_FILE/MQTT_KEY_FILE: the monitor certificate (CN monitor,
  // read access to $SYS/# only), which it presents to both brokers.
  ...mqttSettings('internal/monitor'),
  /** The DMZ broker, dialled out from the internal side as the bridge does ("off": watch the internal broker only). */
  DMZ_MQTT_URL: z.union([z.literal('off'), setting.url(['mqtts'])]).default('mqtts://dmz-mosquitto:8883'),
  /**
   * What the DMZ broker's certificate is verified with: its own anchor (certs/internal/dmz-broker-ca.crt,
   * pki/dmz-anchor.ts), as the bridge does; empty: MQTT_CA_FILE, the CA (a set before --renew-dmz).
   */
  DMZ_MQTT_CA_FILE: z.string().default(''),
  /** Where Prometheus scrapes /metrics (and /healthz, /readyz are answered). */
  BROKER_EXPORTER_METRICS_HOST: setting.host('127.0.0.1'),
  BROKER_EXPORTER_METRICS_PORT: setting.port(9468),
  /** Names the metrics port is reached by besides localhost, IP addresses and BROKER_EXPORTER_METRICS_HOST (comma-separated; by
   * default the one Prometheus and the console use under compose and Kubernetes): another Host is refused, HTTP_HOST_NOT_SERVED. */
  BROKER_EXPORTER_METRICS_HOST_NAMES: hostNamesSetting('broker-exporter-metrics'),
  /**
   * seconds without any $SYS message after which a broker counts as down although its connection
   * stands (a hung broker), and without a bridge's heartbeat (the DMZ broker's uptime it carries
   * in, bridge.conf) after which that bridge counts as down too. Mosquitto publishes $SYS every
   * sys_interval (5 s in our configurations, on both brokers): keep this well above it.
   */
  BROKER_EXPORTER_STALE_S: z.coerce.number().int().min(2).max(3600).default(30),
  BROKER_EXPORTER_CLIENT_ID: clientIdSetting('broker-exporter'),
  /**
   * The internal broker's bridges, from the settings render-bridges.sh renders them from: one per
   * entry of DMZ_BROKER_HOSTS (split as that script splits it, on commas and blanks; empty: the one
   * DMZ_BROKER_HOST), with client ids BRIDGE_CLIENT_ID, BRIDGE_CLIENT_ID-2, -3 … in that order. Only
   * their states ($SYS/broker/connection/<client id>/state) are read: any other name is the DMZ's
   * invention (a bridge brings in whatever the DMZ broker sends, SECURITY.md).
   */
  DMZ_BROKER_HOSTS: z
    .string()
    .default('')
    .transform((v) => v.split(/[\s,]+/).filter((e) => e !== ''))
    .superRefine((entries, ctx) => {
      // render-bridges.sh's own checks, so that a list the broker is not started with is refused here too.
      for (const entry of entries) {
        const colon = entry.lastIndexOf(':');
        const [host, port] = colon >= 0 ? [entry.slice(0, colon), entry.slice(colon + 1)] : [entry, '8883'];
        if (host === '' || !/^[0-9]+$/.test(port)) ctx.addIssue({ code: 'custom', message: `"${entry}" is no host[:port] (e.g. dmz1.example.org:8883,dmz2.example.org)` });
      }
    }),
  /** The first bridge's client id (render-bridges.sh's default); a topic level, so no "/", "+" or "#". */
  BRIDGE_CLIENT_ID: z.string().regex(/^[A-Za-z0-9._-]{1,100}$/, 'must be 1 to 100 letters, digits, ".", "_" or "-"').default('fieldstream-bridge'),
  /**
   * render-bridges.sh's BRIDGE_STATE_TOKEN: each bridge's state is read under its client id, "-"
   * and this (a name the DMZ cannot know), and a state under the client id alone is counted as
   * forged. Unset: the client id alone, which a compromised DMZ can forge (logged at start).
   */
  BRIDGE_STATE_TOKEN: z.string().regex(/^[A-Za-z0-9_-]{16,128}$/, 'must be 16 to 128 letters, digits, "_" or "-" (the same as the internal broker\'s)').optional(),
  LOG_LEVEL: setting.logLevel(),
});
export type BrokerExporterConfig = z.infer<typeof BrokerExporterConfigSchema>;

/** The client ids of the internal broker's bridges, as render-bridges.sh names them. */
export function expectedBridges(config: Pick<BrokerExporterConfig, 'DMZ_BROKER_HOSTS' | 'BRIDGE_CLIENT_ID'>): string[] {
  const n = Math.max(1, config.DMZ_BROKER_HOSTS.length);
  return Array.from({ length: n }, (_, i) => (i === 0 ? config.BRIDGE_CLIENT_ID : `${config.BRIDGE_CLIENT_ID}-${i + 1}`));
}

/**
 * The names the internal broker publishes its bridges' states under ($SYS/broker/connection/<name>/state),
 * as render-bridges.sh renders them, each mapped to its bridge's client id (what is reported: the
 * token is never shown).
 */
export function bridgeStateNames(config: Pick<BrokerExporterConfig, 'DMZ_BROKER_HOSTS' | 'BRIDGE_CLIENT_ID' | 'BRIDGE_STATE_TOKEN'>): Map<string, string> {
  const token = config.BRIDGE_STATE_TOKEN;
  return new Map(expectedBridges(config).map((id) => [token === undefined ? id : `${id}-${token}`, id]));
}

export function loadBrokerExporterConfig(env: Record<string, string | undefined> = process.env): Readonly<BrokerExporterConfig> {
  return parseConfig(BrokerExporterConfigSchema, env);
}
