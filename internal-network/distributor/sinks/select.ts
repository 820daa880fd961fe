import type { InfluxSettings } from '../../shared/influx-settings.ts';
import type { Logger } from '../../../shared/logger.ts';
import { FanoutSink } from './fanout.ts';
import { postgresConnection, postgresEnabled, type PostgresSettings } from './postgres/settings.ts';
import { PostgresSink, type PostgresSinkMetrics } from './postgres/sink.ts';
import { InfluxV1Sink } from './influx-v1.ts';
import { InfluxV2Sink } from './influx-v2.ts';
import { LocalPointStore } from './local-store.ts';
import type { PointSink } from './sink.ts';
import { FieldTypeGuard } from './field-types.ts';
import { MEASUREMENTS } from '../points.ts';

/**
 * INFLUXDB_TOKEN selects InfluxDB 2.x, INFLUXDB_DATABASE 1.x; without INFLUXDB_URL the local store.
 * InfluxDB behind the field-type guard (field-types.ts): one device's value of another type must
 * not fix a field's type in a new shard for every device.
 */
export function selectSink(c: InfluxSettings, log: Logger, measurements: readonly string[]): PointSink {
  if (!c.INFLUXDB_URL) return new LocalPointStore(c.TIMESERIES_LOCAL_PATH);
  const guarded = log.child({ subsystem: 'field-types' });
  if (c.INFLUXDB_TOKEN !== undefined) {
    // The 2.x API answers no InfluxQL without a DBRP mapping: its guard learns from writes alone.
    return new FieldTypeGuard(new InfluxV2Sink({
      url: c.INFLUXDB_URL,
      token: c.INFLUXDB_TOKEN,
      org: c.INFLUXDB_ORG ?? '',
      bucket: c.INFLUXDB_BUCKET ?? '',
      timeoutMs: c.INFLUXDB_TIMEOUT_MS,
    }), guarded);
  }
  const v1 = new InfluxV1Sink({
    url: c.INFLUXDB_URL,
    database: c.INFLUXDB_DATABASE ?? '',
    username: c.INFLUXDB_USERNAME,
    password: c.INFLUXDB_PASSWORD,
    timeoutMs: c.INFLUXDB_TIMEOUT_MS,
  });
  // Only the writer's own measurements: other writers' fields of a shared database are not ours to guard.
  return new FieldTypeGuard(v1, guarded, () => v1.fieldTypes(measurements));
}

/**
 * The distributor's stores: InfluxDB when INFLUXDB_URL is set, PostgreSQL when POSTGRES_URL or
 * PGHOST is; both at once through a FanoutSink (a write is done when both have it). With neither,
 * the local store, as before.
 */
export function selectDistributorSink(c: InfluxSettings & PostgresSettings, log: Logger, postgresMetrics?: PostgresSinkMetrics): PointSink {
  if (!postgresEnabled(c)) return selectSink(c, log, Object.values(MEASUREMENTS));
  const postgres = new PostgresSink(postgresConnection(c), log.child({ subsystem: 'postgres' }), postgresMetrics);
  return c.INFLUXDB_URL ? new FanoutSink([selectSink(c, log, Object.values(MEASUREMENTS)), postgres]) : postgres;
}
