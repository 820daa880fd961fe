import assert from 'node:assert/strict';
import { join } from 'node:path';
import pg from 'pg';
import type { Distributor } from '../../internal-network/distributor/distributor.ts';
import { InfluxV1, Postgres } from '../../scripts/local-stack/databases.ts';
import { distributorLike, startEmbeddedFixture, type EmbeddedFixture } from './embedded.ts';
import { tempDir } from './pki.ts';
import { eventually, RawDevice } from './ws-device.ts';

/**
 * The embedded pipeline (real gateway and broker) with a distributor writing every message to a
 * real InfluxDB 1.x and a real PostgreSQL 15 at once (the FanoutSink), for tests that compare what
 * the two hold or query what the PostgreSQL sink wrote. Devices send unsigned single messages.
 */
export interface BothStores {
  fx: EmbeddedFixture;
  influx: InfluxV1;
  influxDatabase: string;
  db: Postgres;
  /** the superuser over the socket, in the sink's database */
  admin: pg.Pool;
  /** the InfluxDB and PostgreSQL settings as the distributor (and the console) take them */
  influxEnv: Record<string, string>;
  postgresEnv: Record<string, string>;
  distributor: Distributor;
  connect(deviceId: string): Promise<RawDevice>;
  /** sends one message and waits for the gateway's ack (the broker holds it) */
  send(device: RawDevice, deviceId: string, dataType: string, payload: Record<string, unknown>): Promise<string>;
  /** rows of a table of the sink's schema matching `where` */
  pgCount(table: string, where?: string, params?: unknown[]): Promise<number>;
  stop(): Promise<void>;
}

export const PG_USER = 'fieldstream';

export async function startBothStores(name: string, deviceIds: readonly string[], password: string): Promise<BothStores> {
  const work = tempDir(name);
  const influxDatabase = 'both';
  const influx = await InfluxV1.start(join(work.dir, 'influx'), influxDatabase);
  const db = await Postgres.start(join(work.dir, 'pg'));
  await db.createUser(PG_USER, password);
  const admin = new pg.Pool({ host: db.dir, port: db.port, user: db.superuser, database: PG_USER, max: 2 });
  admin.on('error', () => undefined);
  const influxEnv = { INFLUXDB_URL: influx.url, INFLUXDB_DATABASE: influxDatabase, INFLUXDB_USERNAME: influx.user, INFLUXDB_PASSWORD: influx.password };
  const postgresEnv = { POSTGRES_URL: `postgres://${PG_USER}:${encodeURIComponent(password)}@127.0.0.1:${db.port}/${PG_USER}`, POSTGRES_TIMEOUT_MS: '5000' };
  const fx = await startEmbeddedFixture(deviceIds);
  await fx.pipeline.distributor.close();
  const distributor = distributorLike(fx, { ...influxEnv, ...postgresEnv, DISTRIBUTOR_RETRY_MAX_MS: '300' });
  await distributor.ready;
  const devices: RawDevice[] = [];
  let n = 0;
  return {
    fx,
    influx,
    influxDatabase,
    db,
    admin,
    influxEnv,
    postgresEnv,
    distributor,
    async connect(deviceId) {
      const d = await RawDevice.connect(fx.pipeline.gatewayUrl, RawDevice.tlsFor(fx.pki.paths, deviceId));
      devices.push(d);
      return d;
    },
    async send(device, deviceId, dataType, payload) {
      const messageId = `${name}-${++n}`;
      device.send(JSON.stringify({ deviceId, dataType, messageId, payload }));
      assert.deepEqual(await device.next(), { type: 'ack', messageIds: [messageId] });
      return messageId;
    },
    async pgCount(table, where = 'true', params = []) {
      const r = await admin.query(`SELECT count(*) AS n FROM fieldstream.${table} WHERE ${where}`, params).catch((err: { code?: string }) => {
        if (err.code === '42P01' || err.code === '3F000') return { rows: [{ n: 0 }] }; // not written yet
        throw err;
      });
      return Number(r.rows[0]?.n ?? 0);
    },
    async stop() {
      for (const d of devices) d.close();
      await distributor.close();
      await fx.stop();
      await admin.end().catch(() => undefined);
      await db.stop();
      await influx.process.stop();
      work.cleanup();
    },
  };
}

export { eventually };
