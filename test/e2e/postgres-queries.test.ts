import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { eventually, startBothStores, type BothStores } from '../helpers/pg-pipeline.ts';

const REPO = join(import.meta.dirname, '..', '..');
const HOUR = 3_600_000;
const BASE = Date.UTC(2026, 0, 1, 0, 0, 0);
/** meter-1: a reading every 10 minutes for three hours, k = 0..17 */
const temperature = (k: number) => 20 + k * 0.5;

/** The ```sql blocks of each ### heading of one ## section of a Markdown file, in order. */
function sqlBlocks(file: string, section: string): Map<string, string[]> {
  const text = readFileSync(join(REPO, file), 'utf8');
  const start = text.indexOf(`\n## ${section}\n`);
  assert.ok(start >= 0, `${file} has the section "${section}"`);
  const end = text.indexOf('\n## ', start + 1);
  const body = text.slice(start, end < 0 ? undefined : end);
  const out = new Map<string, string[]>();
  for (const part of body.split('\n### ').slice(1)) {
    const heading = part.slice(0, part.indexOf('\n'));
    out.set(heading, [...part.matchAll(/```sql\n([\s\S]*?)```/g)].map((m) => m[1] as string));
  }
  return out;
}

/**
 * Grafana's PostgreSQL macros and this dashboard's variables, expanded as Grafana 11 expands them
 * before it sends a query (its grafana-postgresql-datasource macros; Grafana cannot run here, so
 * this is a stand-in, kept to what the dashboard uses):
 *   $__timeFilter(c)                → c BETWEEN 'FROM' AND 'TO'   (RFC 3339, UTC)
 *   $__timeTo()                     → 'TO'
 *   $__timeGroup(c, I[, fill])      → floor(extract(epoch from c)/S)*S   (S: I in seconds; the fill is Grafana's own, after the query)
 *   $__timeGroupAlias(c, I[, fill]) → the same AS "time"
 *   $__interval                     → the interval Grafana picks for the range (here 1h)
 *   $device                         → 'meter-1','meter-2'   (a multi-value variable: each value quoted, comma-separated)
 *   $field                          → temperature           (a single value: as it is)
 * Anything else left with a `$` fails the test.
 */
function expandMacros(sql: string, range: { from: Date; to: Date }): string {
  const seconds = (interval: string) => {
    const m = /^'?(\d+)(s|m|h|d)'?$/.exec(interval.trim());
    assert.ok(m, `an interval: ${interval}`);
    return Number(m[1]) * { s: 1, m: 60, h: 3600, d: 86_400 }[m[2] as 's' | 'm' | 'h' | 'd'];
  };
  const out = sql
    .replace(/\$__interval\b/g, '1h')
    .replace(/\$__timeFilter\(([^)]+)\)/g, (_, c: string) => `${c.trim()} BETWEEN '${range.from.toISOString()}' AND '${range.to.toISOString()}'`)
    .replace(/\$__timeTo\(\)/g, `'${range.to.toISOString()}'`)
    .replace(/\$__timeGroup(Alias)?\(([^,)]+),([^,)]+)(?:,[^)]*)?\)/g, (_, alias: string | undefined, c: string, i: string) => {
      const s = seconds(i);
      return `floor(extract(epoch from ${c.trim()})/${s})*${s}${alias ? ' AS "time"' : ''}`;
    })
    .replace(/\$device\b/g, `'meter-1','meter-2'`)
    .replace(/\$field\b/g, 'temperature');
  assert.doesNotMatch(out, /\$\w/, `a macro or variable left unexpanded in: ${out}`);
  return out;
}

/**
 * The SQL of docs/postgres.md ("Queries for the most common questions") and of the PostgreSQL
 * Grafana dashboard, run on a real PostgreSQL 15 holding what devices sent through the real gateway
 * and distributor: readings, events, a command's responses, presence. Each answer is checked.
 */
describe('PostgreSQL queries of the docs and the Grafana dashboard', () => {
  let s: BothStores;
  const q = async (sql: string) => (await s.admin.query(sql)).rows as Array<Record<string, unknown>>;

  before(async () => {
    s = await startBothStores('pgqueries', ['meter-1', 'meter-2'], 'pg-queries-Wd3kQ8zP');
    let one = await s.connect('meter-1');
    for (let k = 0; k < 18; k++) await s.send(one, 'meter-1', 'timeseries', { temperature: temperature(k), humidity: 40 + k, timestamp: BASE + k * 600_000 });
    // A reading whose field is not a number: kept out of every average by jsonb_typeof.
    await s.send(one, 'meter-1', 'timeseries', { temperature: 'n/a', timestamp: BASE + HOUR + 300_000 });
    for (const [eventType, at] of [['door-open', 15], ['low-battery', 60], ['door-open', 80], ['door-open', 160], ['door-open', 24 * 60 + 5]] as const) {
      await s.send(one, 'meter-1', 'event', { eventType, severity: 'warning', message: `${eventType} at ${at}`, zone: 'north', timestamp: BASE + at * 60_000 });
    }
    await s.send(one, 'meter-1', 'response', { commandId: 'cmd-42', status: 'accepted', timestamp: BASE + 30 * 60_000 });
    await s.send(one, 'meter-1', 'response', { commandId: 'cmd-42', status: 'completed', result: { position: 42 }, timestamp: BASE + 30 * 60_000 + 5000 });
    await s.send(one, 'meter-1', 'response', { commandId: 'cmd-7', status: 'failed', result: 'no such valve', timestamp: BASE + 40 * 60_000 });
    const two = await s.connect('meter-2');
    for (let k = 0; k < 3; k++) await s.send(two, 'meter-2', 'timeseries', { temperature: 10 + k, timestamp: BASE + k * 600_000 });
    await eventually(async () => ((await s.pgCount('device_status', "device = 'meter-2'")) >= 1 ? true : undefined), 15_000, "meter-2's presence");
    two.close();
    // meter-1 goes away and comes back: online, offline, online.
    one.close();
    await eventually(async () => ((await s.pgCount('device_status', "device = 'meter-1' AND state = 'offline'")) >= 1 ? true : undefined), 15_000, "meter-1's disconnect");
    one = await s.connect('meter-1');
    await eventually(async () => ((await s.pgCount('device_status', "device = 'meter-1'")) >= 3 ? true : undefined), 15_000, "meter-1's reconnect");
    await eventually(async () => ((await s.pgCount('device_status', "device = 'meter-2' AND state = 'offline'")) >= 1 ? true : undefined), 15_000, "meter-2's disconnect");
    await eventually(async () => ((await s.pgCount('readings')) === 22 && (await s.pgCount('events')) === 5 && (await s.pgCount('command_responses')) === 3 ? true : undefined), 15_000, 'every row');
    // A day on, meter-1's gateway would publish its presence again (dmz/gateway/command-router.ts):
    // the row the sink writes of that reminder, `since` the time of the connection.
    await q(
      `INSERT INTO fieldstream.device_status (device, time, message_key, gateway, state, cert_not_after, cert_days_left, since)
       SELECT device, time + interval '1 second', message_key || ':again', gateway, state, cert_not_after, cert_days_left, time
       FROM fieldstream.device_status WHERE device = 'meter-1' ORDER BY time DESC LIMIT 1`,
    );
    // Gateway presence, the rows as the sink writes them (every arrival a row, keyed
    // `<since>:<state>:<arrival>`): gw-1 online, the same online delivered again, its connection
    // lost and back, lost, then started twice with no will between (a DMZ server killed); gw-2
    // online, then offline 5 ms later.
    const gatewayRows: Array<[string, string, number, number]> = [
      ['gw-1', 'online', BASE + 59 * 60_000, BASE + HOUR],
      ['gw-1', 'online', BASE + 59 * 60_000, BASE + HOUR + 30_000],
      ['gw-1', 'offline', BASE + 59 * 60_000, BASE + 2 * HOUR],
      ['gw-1', 'online', BASE + 59 * 60_000, BASE + 2 * HOUR + 10_000],
      ['gw-1', 'offline', BASE + 59 * 60_000, BASE + 3 * HOUR],
      ['gw-1', 'online', BASE + 4 * HOUR, BASE + 4 * HOUR + 1000],
      ['gw-1', 'online', BASE + 5 * HOUR, BASE + 5 * HOUR + 1000],
      ['gw-2', 'online', BASE, BASE + HOUR],
      ['gw-2', 'offline', BASE, BASE + HOUR + 5],
    ];
    for (const [gateway, state, since, at] of gatewayRows) {
      await s.admin.query(
        `INSERT INTO fieldstream.gateway_status (gateway, time, message_key, state, since) VALUES ($1, 'epoch'::timestamptz + $2 * interval '1 millisecond', $3, $4, 'epoch'::timestamptz + $5 * interval '1 millisecond')`,
        [gateway, at, `${since}:${state}:${at}`, state, since],
      );
    }
  });
  after(async () => {
    await s?.stop();
  });

  describe('docs/postgres.md: Queries for the most common questions', () => {
    const blocks = sqlBlocks('docs/postgres.md', 'Queries for the most common questions');
    const of = (heading: string, n: number) => {
      const b = blocks.get(heading);
      assert.equal(b?.length, n, `"${heading}" has ${n} SQL blocks`);
      return b as string[];
    };

    it('has the six questions, and every block runs', async () => {
      assert.deepEqual([...blocks.keys()], ['The last value of each device', "A field's hourly average", 'Events of a type in a time range', "A command's response", "A device's presence history", "A gateway's state"]);
      // A stand-in for TimescaleDB's time_bucket (not packaged here): date_bin from its default
      // origin, 2000-01-03 00:00 UTC, the same buckets for widths of a day or less.
      await q(`CREATE OR REPLACE FUNCTION public.time_bucket(bucket_width interval, ts timestamptz) RETURNS timestamptz LANGUAGE sql IMMUTABLE AS $$ SELECT date_bin(bucket_width, ts, timestamptz '2000-01-03 00:00:00+00') $$`);
      for (const [heading, sqls] of blocks) for (const sql of sqls) await assert.doesNotReject(q(sql), `${heading}: ${sql}`);
    });

    it('the last value of each device', async () => {
      const [all, lateral] = of('The last value of each device', 2);
      assert.deepEqual(
        (await q(all as string)).map((r) => [r.device, (r.time as Date).getTime(), r.fields]),
        [
          ['meter-1', BASE + 17 * 600_000, { temperature: temperature(17), humidity: 57 }],
          ['meter-2', BASE + 2 * 600_000, { temperature: 12 }],
        ],
      );
      assert.deepEqual((await q(lateral as string)).map((r) => [r.device, r.temperature]), [['meter-1', '28.5'], ['meter-2', '12']]);
    });

    it("a field's hourly average: date_trunc, time_bucket and date_bin agree, the text value left out", async () => {
      const [trunc, bucket, bin] = of("A field's hourly average", 3);
      const hourly = [0, 1, 2].map((h) => {
        const ks = [0, 1, 2, 3, 4, 5].map((i) => h * 6 + i);
        return [BASE + h * HOUR, ks.reduce((n, k) => n + temperature(k), 0) / 6, '6'];
      });
      const rows = (sql: string) => q(sql).then((r) => r.map((x) => [((x.hour ?? x.quarter) as Date).getTime(), x.temperature, x.readings]));
      assert.deepEqual(await rows(trunc as string), hourly);
      assert.deepEqual(await rows(bucket as string), hourly);
      const quarters = await rows(bin as string);
      assert.equal(quarters.length, 12);
      assert.deepEqual(quarters[0], [BASE, (temperature(0) + temperature(1)) / 2, undefined]);
    });

    it('events of a type in a time range', async () => {
      const [sql] = of('Events of a type in a time range', 1);
      const rows = await q(sql as string);
      assert.deepEqual(
        rows.map((r) => [(r.time as Date).getTime(), r.device, r.severity, r.message, r.extra]),
        [15, 80, 160].map((at) => [BASE + at * 60_000, 'meter-1', 'warning', `door-open at ${at}`, { zone: 'north' }]),
      );
    });

    it("a command's response", async () => {
      const [sql] = of("A command's response", 1);
      const rows = await q(sql as string);
      assert.deepEqual(rows.map((r) => [r.device, r.status]), [['meter-1', 'accepted'], ['meter-1', 'completed']]);
      assert.equal(rows[0]?.result, '');
      assert.deepEqual(JSON.parse(rows[1]?.result as string), { position: 42 });
      assert.deepEqual(rows.map((r) => [r.result_type, r.value]), [['none', null], ['json', { position: 42 }]]);
    });

    it("a device's presence history, and every device's state now", async () => {
      const [history, now] = of("A device's presence history", 2);
      const rows = await q(history as string);
      assert.deepEqual(rows.map((r) => r.state), ['online', 'offline', 'online']);
      assert.deepEqual(rows.map((r) => r.lasted === null), [false, false, true], 'each state lasted until the next; the last still holds');
      assert.ok(rows.every((r) => typeof r.gateway === 'string' && r.gateway !== ''));
      assert.deepEqual((await q(now as string)).map((r) => [r.device, r.state]), [['meter-1', 'online'], ['meter-2', 'offline']]);
    });

    it("a gateway's state now, and its changes without the presence delivered again", async () => {
      const [now, changes] = of("A gateway's state", 2);
      const ms = (v: unknown) => (v as Date).getTime();
      // Only the gateways of the rows above: the pipeline's own gateway may have rows of its own.
      const states = (await q(now as string)).filter((r) => r.gateway === 'gw-1' || r.gateway === 'gw-2');
      assert.deepEqual(
        states.map((r) => [r.gateway, r.state, ms(r.since), ms(r.time)]),
        [
          ['gw-1', 'online', BASE + 5 * HOUR, BASE + 5 * HOUR + 1000],
          ['gw-2', 'offline', BASE, BASE + HOUR + 5],
        ],
      );
      assert.deepEqual(
        (await q(changes as string)).map((r) => [r.state, ms(r.time), ms(r.since)]),
        [
          ['online', BASE + HOUR, BASE + 59 * 60_000],
          ['offline', BASE + 2 * HOUR, BASE + 59 * 60_000],
          ['online', BASE + 2 * HOUR + 10_000, BASE + 59 * 60_000],
          ['offline', BASE + 3 * HOUR, BASE + 59 * 60_000],
          ['online', BASE + 4 * HOUR + 1000, BASE + 4 * HOUR],
          ['online', BASE + 5 * HOUR + 1000, BASE + 5 * HOUR],
        ],
      );
    });
  });

  describe('Grafana: the PostgreSQL data source and the "Devices (PostgreSQL)" dashboard', () => {
    const dashboard = JSON.parse(readFileSync(join(REPO, 'monitoring', 'grafana', 'dashboards', 'devices-postgres.json'), 'utf8')) as {
      panels: Array<{ title: string; datasource: { uid: string }; targets: Array<{ rawSql: string; format: string; datasource: { uid: string } }> }>;
      templating: { list: Array<{ name: string; query: string; datasource: { uid: string } }> };
    };
    const range = () => ({ from: new Date(BASE), to: new Date() });
    const panel = async (title: string) => {
      const p = dashboard.panels.find((x) => x.title === title);
      assert.ok(p, title);
      return q(expandMacros(p.targets[0]?.rawSql as string, range()));
    };

    it('is provisioned with every credential from the environment, none in the file', () => {
      const yaml = execFileSync('python3', ['-c', 'import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)'], { input: readFileSync(join(REPO, 'monitoring', 'grafana', 'provisioning', 'datasources', 'fieldstream.yml')), encoding: 'utf8' });
      const ds = (JSON.parse(yaml) as { datasources: Array<Record<string, unknown> & { jsonData?: Record<string, unknown>; secureJsonData?: Record<string, unknown> }> }).datasources.find((d) => d.uid === 'postgres');
      assert.ok(ds);
      assert.equal(ds.type, 'grafana-postgresql-datasource');
      for (const v of [ds.url, ds.user, ds.jsonData?.database, ds.secureJsonData?.password]) assert.match(String(v), /^\$\{GRAFANA_POSTGRES_[A-Z]+\}$/);
      assert.equal(ds.password, undefined, 'no plain-text password field');
      assert.ok(dashboard.panels.every((p) => p.datasource.uid === 'postgres' && p.targets.every((t) => t.datasource.uid === 'postgres')));
    });

    it('every panel and variable query runs with its macros expanded', async () => {
      const texts = [...dashboard.panels.flatMap((p) => p.targets.map((t) => [p.title, t.rawSql] as const)), ...dashboard.templating.list.map((v) => [`$${v.name}`, v.query] as const)];
      assert.equal(texts.length, 12);
      for (const [where, sql] of texts) await assert.doesNotReject(q(expandMacros(sql, range())), `${where}: ${expandMacros(sql, range())}`);
      assert.deepEqual((await q(expandMacros(dashboard.templating.list[0]?.query as string, range()))).map((r) => r.device), ['meter-1', 'meter-2']);
      assert.deepEqual((await q(expandMacros(dashboard.templating.list[1]?.query as string, range()))).map((r) => r.jsonb_object_keys), ['humidity', 'temperature']);
    });

    it('reads readings through the primary key, by device, never the whole table', async () => {
      // The primary key (device, time, message_key) is readings' only index: a query that selects
      // by time alone reads every row ever stored (a year of a fleet, at each load of the dashboard).
      // Seq scans off, so that the plan shows what an index can serve on these few rows.
      const texts = [...dashboard.panels.flatMap((p) => p.targets.map((t) => [p.title, t.rawSql] as const)), ...dashboard.templating.list.map((v) => [`$${v.name}`, v.query] as const)];
      const client = await s.admin.connect();
      try {
        await client.query('BEGIN');
        await client.query('SET LOCAL enable_seqscan = off');
        for (const [where, sql] of texts.filter(([, x]) => x.includes('fieldstream.readings'))) {
          const plan = (await client.query(`EXPLAIN (FORMAT JSON) ${expandMacros(sql, range())}`)).rows[0]?.['QUERY PLAN'] as unknown;
          const scans: Array<Record<string, unknown>> = [];
          const walk = (n: unknown): void => {
            if (Array.isArray(n)) n.forEach(walk);
            else if (n && typeof n === 'object') {
              const node = n as Record<string, unknown>;
              if (node['Relation Name'] === 'readings' || String(node['Index Name'] ?? '').startsWith('readings_')) scans.push(node);
              Object.values(node).forEach(walk);
            }
          };
          walk(plan);
          assert.ok(scans.length > 0, where);
          for (const n of scans) {
            if (n['Node Type'] === 'Bitmap Heap Scan') continue; // its Bitmap Index Scan below is checked
            assert.notEqual(n['Node Type'], 'Seq Scan', `${where}: ${JSON.stringify(n)}`);
            assert.match(String(n['Index Cond'] ?? ''), /\bdevice\b/, `${where}: reads the index by device: ${JSON.stringify(n)}`);
          }
        }
      } finally {
        await client.query('ROLLBACK');
        client.release();
      }
    });

    it('and answers what the devices did: one online, one offline, every reading, the last of each, the events per interval', async () => {
      assert.deepEqual(await panel('Devices online'), [{ online: '1' }]);
      assert.deepEqual(await panel('Devices offline'), [{ offline: '1' }]);
      assert.deepEqual(await panel('Readings stored (range)'), [{ readings: '22' }]);
      const expiring = await q(`SELECT count(*) AS n FROM (SELECT DISTINCT ON (device) cert_not_after FROM fieldstream.device_status WHERE cert_not_after IS NOT NULL ORDER BY device, time DESC) l WHERE cert_not_after < now() + interval '30 days'`);
      assert.deepEqual(await panel('Certificates expiring within 30 days'), [{ expiring: expiring[0]?.n }]);
      // As of the end of the range: a range that ends 10 days before the later certificate expires
      // finds both expiring within 30 days (none does within 30 days of now).
      assert.equal(expiring[0]?.n, '0');
      const [last] = await q(`SELECT max(cert_not_after) AS t FROM fieldstream.device_status`);
      const ahead = { from: new Date(BASE), to: new Date((last?.t as Date).getTime() - 10 * 86_400_000) };
      const title = 'Certificates expiring within 30 days';
      assert.deepEqual(await q(expandMacros(dashboard.panels.find((x) => x.title === title)?.targets[0]?.rawSql as string, ahead)), [{ expiring: '2' }]);
      const state = await panel('State and certificate per device (last status, last 30 days)');
      assert.deepEqual(state.map((r) => [r.device, r.state]), [['meter-1', 'online'], ['meter-2', 'offline']]);
      // meter-1's last row is the reminder: its `since` is the connection's, not the reminder's.
      const connected = await q(`SELECT time FROM fieldstream.device_status WHERE device = 'meter-1' AND since IS NULL ORDER BY time DESC LIMIT 1`);
      assert.equal((state[0]?.since as Date).getTime(), (connected[0]?.time as Date).getTime());
      // meter-2's last row is its disconnection, which names no certificate.
      assert.deepEqual(state.map((r) => r['certificate not after'] === null), [false, true]);
      const days = Math.floor(((state[0]?.['certificate not after'] as Date).getTime() - Date.now()) / 86_400_000);
      assert.ok(Math.abs(Number(state[0]?.['certificate days left']) - days) <= 1, `meter-1: ${state[0]?.['certificate days left']} days left, ${days} by its not-after`);
      // The readings are dated 2026-01-01: older than the panel's 30 days, so none is "last seen".
      const lastSeen = await panel('Last seen: the last reading of each device (last 30 days)');
      const recent = BASE > Date.now() - 30 * 86_400_000;
      assert.equal(lastSeen.length, recent ? 2 : 0);
      const perField = await panel('$field per device');
      assert.deepEqual(
        perField.filter((r) => r.metric === 'meter-1').map((r) => [Number(r.time) * 1000, r.value]),
        [0, 1, 2].map((h) => [BASE + h * HOUR, [0, 1, 2, 3, 4, 5].reduce((n, i) => n + temperature(h * 6 + i), 0) / 6]),
      );
      const events = await panel('Events per device');
      assert.deepEqual(
        events.map((r) => [Number(r.time) * 1000, r.metric, r.value]),
        [
          [BASE, 'meter-1 door-open', '1'],
          [BASE + HOUR, 'meter-1 door-open', '1'],
          [BASE + HOUR, 'meter-1 low-battery', '1'],
          [BASE + 2 * HOUR, 'meter-1 door-open', '1'],
          [BASE + 24 * HOUR, 'meter-1 door-open', '1'],
        ],
      );
      const counts = await panel('Readings per device (count per interval, per field)');
      assert.equal(counts.reduce((n, r) => n + Number(r.value), 0), 22);
      const changes = await panel('Connects and disconnects');
      assert.ok(changes.length >= 5);
      assert.equal(changes.length, Number((await q(`SELECT count(*) AS n FROM fieldstream.device_status WHERE since IS NULL`))[0]?.n), 'the reminder left out');
    });

    // Last: it adds readings the counts above do not expect.
    it("'$field per device' stands values near the largest double: one device cannot break the panel for all", async () => {
      // avg(float8) fails (SQLSTATE 22003) once its running sum passes the largest double, and the
      // panel's one query answers for every device.
      const two = await s.connect('meter-2');
      await s.send(two, 'meter-2', 'timeseries', { temperature: 1e308, timestamp: BASE + 5 * HOUR });
      await s.send(two, 'meter-2', 'timeseries', { temperature: 1.7e308, timestamp: BASE + 5 * HOUR + 1000 });
      await eventually(async () => ((await s.pgCount('readings', "device = 'meter-2'")) === 5 ? true : undefined), 15_000, "meter-2's huge readings");
      const perField = await panel('$field per device');
      assert.deepEqual(
        perField.filter((r) => r.metric === 'meter-2').map((r) => [Number(r.time) * 1000, r.value]),
        [
          [BASE, 11],
          [BASE + 5 * HOUR, 1.35e308],
        ],
      );
      assert.equal(perField.filter((r) => r.metric === 'meter-1').length, 3);
    });
  });
});
