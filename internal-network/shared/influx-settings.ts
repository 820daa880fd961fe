import { z } from 'zod';
import { setting } from '../../shared/config.ts';

/**
 * Where the time series are: InfluxDB 2.x (INFLUXDB_TOKEN, _ORG, _BUCKET), InfluxDB 1.x
 * (INFLUXDB_DATABASE, with a user and password if it asks for them), or, without INFLUXDB_URL, the
 * local store of `npm start` (TIMESERIES_LOCAL_PATH). The distributor writes there; the console
 * reads history from there and writes its own observations.
 */
export function influxSettings() {
  return {
    INFLUXDB_URL: setting.url(['http', 'https']).optional(),
    INFLUXDB_TOKEN: z.string().optional(),
    INFLUXDB_ORG: z.string().optional(),
    INFLUXDB_BUCKET: z.string().optional(),
    INFLUXDB_DATABASE: z.string().optional(),
    INFLUXDB_USERNAME: z.string().optional(),
    INFLUXDB_PASSWORD: z.string().optional(),
    /** milliseconds per request */
    INFLUXDB_TIMEOUT_MS: setting.timerMs(10_000),
    TIMESERIES_LOCAL_PATH: z.string().default('./data/timeseries'),
  };
}

export interface InfluxSettings {
  readonly INFLUXDB_URL?: string | undefined;
  readonly INFLUXDB_TOKEN?: string | undefined;
  readonly INFLUXDB_ORG?: string | undefined;
  readonly INFLUXDB_BUCKET?: string | undefined;
  readonly INFLUXDB_DATABASE?: string | undefined;
  readonly INFLUXDB_USERNAME?: string | undefined;
  readonly INFLUXDB_PASSWORD?: string | undefined;
  readonly INFLUXDB_TIMEOUT_MS: number;
  readonly TIMESERIES_LOCAL_PATH: string;
}

/**
 * With INFLUXDB_URL, one version's settings: INFLUXDB_TOKEN (with _ORG and _BUCKET) selects 2.x,
 * else INFLUXDB_DATABASE 1.x. With 2.x, INFLUXDB_DATABASE may be set too: the database name a DBRP
 * mapping gives the bucket for InfluxQL (`influx v1 dbrp create --db NAME`), which Grafana's
 * InfluxQL data source and the console's history read through (docs/monitoring.md). The compose
 * files and the Kubernetes overlay hand the distributor, the console and Grafana the same
 * INFLUXDB_DATABASE, so refusing it beside a token stopped the distributor and the console of
 * every 2.x site that followed monitoring.md.
 */
export function checkInfluxSettings(c: InfluxSettings, ctx: z.RefinementCtx): void {
  if (!c.INFLUXDB_URL) return;
  const v2 = c.INFLUXDB_TOKEN !== undefined;
  const v1 = c.INFLUXDB_DATABASE !== undefined;
  if (!v1 && !v2) {
    ctx.addIssue({
      code: 'custom',
      path: ['INFLUXDB_TOKEN'],
      message: 'with INFLUXDB_URL, set either INFLUXDB_TOKEN/INFLUXDB_ORG/INFLUXDB_BUCKET (InfluxDB 2.x) or INFLUXDB_DATABASE (InfluxDB 1.x)',
    });
  }
  if (v2) {
    for (const key of ['INFLUXDB_ORG', 'INFLUXDB_BUCKET'] as const) {
      if (!c[key]) ctx.addIssue({ code: 'custom', path: [key], message: 'is required with INFLUXDB_TOKEN (InfluxDB 2.x)' });
    }
  }
}

/**
 * The URL as a description may show it: without the user and password it may carry
 * (`http://user:password@host:8086`, which the distributor's v1 sink and the console's history
 * authenticate with). A description is logged at the start, printed by `fieldstream-admin
 * dead-letters replay`, and put in the message of every refusal of a fan-out, which dead letters
 * keep, and of the console's CONSOLE_HISTORY_FAILED.
 */
export function shownUrl(url: string): string {
  const u = new URL(url);
  if (u.username === '' && u.password === '') return url;
  u.username = '';
  u.password = '';
  return u.toString();
}
