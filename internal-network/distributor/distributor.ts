import { writeFile } from 'node:fs/promises';
import type { MqttClient } from 'mqtt';
import { sharedFilter, TOPIC_FILTERS } from '../../shared/contract/topics.ts';
import type { Logger } from '../../shared/logger.ts';
import { connectMqtt, endMqtt } from '../../shared/mqtt/connect.ts';
import { readPemSetting } from '../../shared/tls-files.ts';
import type { DistributorConfig } from './config.ts';
import { Consumer } from './consumer.ts';
import { DeadLetters } from './dead-letter.ts';
import { FileStore } from './file-store.ts';
import { MessageHandler } from './message-handler.ts';
import { selectSink } from './sinks/select.ts';
import type { PointSink } from './sinks/sink.ts';

export interface Distributor {
  readonly mqtt: MqttClient;
  readonly sink: PointSink;
  readonly consumer: Consumer;
  /** Resolves once the subscription is in place. */
  readonly ready: Promise<void>;
  close(): Promise<void>;
}

export function startDistributor(config: Readonly<DistributorConfig>, logger: Logger): Distributor {
  const log = logger.child({ component: 'distributor' });
  const sink = selectSink(config);
  log.info({ timeseries: sink.description, files: config.FILE_STORAGE_PATH }, 'distributor writing');
  const mqtt = connectMqtt(
    {
      url: config.MQTT_URL,
      ca: readPemSetting('MQTT_CA_FILE', config.MQTT_CA_FILE),
      cert: readPemSetting('MQTT_CERT_FILE', config.MQTT_CERT_FILE),
      key: readPemSetting('MQTT_KEY_FILE', config.MQTT_KEY_FILE),
      clientId: config.DISTRIBUTOR_CLIENT_ID,
      protocolVersion: config.MQTT_PROTOCOL_VERSION,
      clean: false, // the broker keeps our messages while we are down
    },
    log.child({ subsystem: 'mqtt' }),
    { resubscribe: true },
  );
  const consumer = new Consumer(
    mqtt,
    new MessageHandler(sink, new FileStore(config.FILE_STORAGE_PATH)),
    new DeadLetters(config.DEAD_LETTER_PATH),
    { initialMs: 250, maxMs: config.DISTRIBUTOR_RETRY_MAX_MS },
    log,
  );
  const group = config.DISTRIBUTOR_SHARE_GROUP;
  const filters = [TOPIC_FILTERS.uplink, TOPIC_FILTERS.status].map((f) => (group === 'none' ? f : sharedFilter(group, f)));
  const ready = new Promise<void>((resolve) => {
    const subscribe = () =>
      mqtt.subscribe(filters, { qos: 1 }, (err, granted) => {
        const refused = granted?.filter((g) => g.qos >= 0x80) ?? [];
        if (err || refused.length > 0) {
          log.error({ err: err?.message, refused: refused.map((g) => g.topic) }, 'subscription refused by the broker');
          return;
        }
        log.info({ filters }, 'subscribed');
        resolve();
      });
    if (mqtt.connected) subscribe();
    else mqtt.once('connect', subscribe);
  });
  let healthTimer: NodeJS.Timeout | undefined;
  if (config.DISTRIBUTOR_HEALTH_FILE) {
    const file = config.DISTRIBUTOR_HEALTH_FILE;
    const touch = () => {
      if (mqtt.connected) writeFile(file, new Date().toISOString()).catch(() => undefined);
    };
    void ready.then(() => {
      touch();
      healthTimer = setInterval(touch, 10_000);
      healthTimer.unref();
    });
  }
  return {
    mqtt,
    sink,
    consumer,
    ready,
    async close() {
      clearInterval(healthTimer);
      consumer.stop();
      // Forced: an unfinished message must not be acknowledged on the way out.
      await endMqtt(mqtt, true);
      await sink.close();
    },
  };
}
