import { hostname } from 'node:os';
import { z } from 'zod';
import { setting } from '../config.ts';
import { readKeyPairSettings, readPemSetting } from '../tls-files.ts';

/**
 * The broker settings every MQTT-speaking service reads: where the broker is (TLS only), and the
 * service's own certificate (`certs/<file>.crt|.key` by default).
 */
export function mqttSettings(certFile: string) {
  return {
    MQTT_URL: setting.url(['mqtts']).default('mqtts://127.0.0.1:8883'),
    MQTT_CA_FILE: z.string().default('certs/ca.crt'),
    MQTT_CERT_FILE: z.string().default(`certs/${certFile}.crt`),
    MQTT_KEY_FILE: z.string().default(`certs/${certFile}.key`),
    /** 5 for Mosquitto; the embedded broker speaks 4 */
    MQTT_PROTOCOL_VERSION: z.enum(['4', '5']).default('5').transform((v) => Number(v) as 4 | 5),
  };
}

/** This machine's host name as part of an MQTT client id or topic level: letters, digits, ".", "_"
 * and "-" only, at most 60 characters. */
export function hostLabel(): string {
  return hostname().replace(/[^A-Za-z0-9._-]/g, '-').slice(0, 60);
}

/** A service's MQTT client id setting, `PREFIX-HOSTNAME` unless set: stable per machine, so a
 * persistent broker session is found again after a restart. */
export function clientIdSetting(prefix: string) {
  return z
    .string()
    .regex(/^[A-Za-z0-9._-]{1,100}$/)
    .default(`${prefix}-${hostLabel()}`);
}

/** The TLS material of a service's broker connection, read from the files its settings name
 * (an unreadable file stops it with CONFIG_FILE_UNREADABLE naming the setting). */
export function readMqttTls(config: { readonly MQTT_CA_FILE: string; readonly MQTT_CERT_FILE: string; readonly MQTT_KEY_FILE: string }): {
  ca: string;
  cert: string;
  key: string;
} {
  return {
    ca: readPemSetting('MQTT_CA_FILE', config.MQTT_CA_FILE),
    ...readKeyPairSettings({ variable: 'MQTT_CERT_FILE', path: config.MQTT_CERT_FILE }, { variable: 'MQTT_KEY_FILE', path: config.MQTT_KEY_FILE }),
  };
}
