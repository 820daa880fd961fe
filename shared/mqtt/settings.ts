import { z } from 'zod';
import { setting } from '../config.ts';

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
