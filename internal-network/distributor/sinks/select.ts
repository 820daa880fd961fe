import type { InfluxSettings } from '../../shared/influx-settings.ts';
import { InfluxV1Sink } from './influx-v1.ts';
import { InfluxV2Sink } from './influx-v2.ts';
import { LocalPointStore } from './local-store.ts';
import type { PointSink } from './sink.ts';

/** INFLUXDB_TOKEN selects InfluxDB 2.x, INFLUXDB_DATABASE 1.x; without INFLUXDB_URL the local store. */
export function selectSink(c: InfluxSettings): PointSink {
  if (!c.INFLUXDB_URL) return new LocalPointStore(c.TIMESERIES_LOCAL_PATH);
  if (c.INFLUXDB_TOKEN !== undefined) {
    return new InfluxV2Sink({
      url: c.INFLUXDB_URL,
      token: c.INFLUXDB_TOKEN,
      org: c.INFLUXDB_ORG ?? '',
      bucket: c.INFLUXDB_BUCKET ?? '',
      timeoutMs: c.INFLUXDB_TIMEOUT_MS,
    });
  }
  return new InfluxV1Sink({
    url: c.INFLUXDB_URL,
    database: c.INFLUXDB_DATABASE ?? '',
    username: c.INFLUXDB_USERNAME,
    password: c.INFLUXDB_PASSWORD,
    timeoutMs: c.INFLUXDB_TIMEOUT_MS,
  });
}
