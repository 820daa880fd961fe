/**
 * Reads back the embedded time-series store (the default when INFLUXDB_URL is not set).
 * Usage: USAGE below (docs/operations.md, "Reading the data back").
 */
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { loadDotenv } from '../shared/config.ts';
import { readLocalStore } from '../internal-network/distributor/sinks/local-store.ts';
import { toLineProtocol } from '../internal-network/distributor/sinks/line-protocol.ts';
import { terminalText } from '../shared/terminal-text.ts';
import type { StoredPoint } from '../internal-network/distributor/points.ts';

const USAGE = `usage: npm run readings -- [--measurement NAME] [--device ID] [--last N] [--line-protocol] [--dir DIR]
  --measurement NAME  only that measurement (readings, events, command_responses, files, device_status, device_health, ...)
  --device ID         only that device's points
  --last N            the last N points (default 20; 0 = all)
  --line-protocol     InfluxDB line protocol, nanoseconds (for influx write), instead of JSON lines
  --dir DIR           the store (TIMESERIES_LOCAL_PATH; default data/timeseries)`;

/** A wrong invocation is the caller's to fix: one line saying what, the usage, exit 64 (EX_USAGE), no stack trace. */
function usageError(message: string): never {
  process.stderr.write(`error: ${message}\n${USAGE}\n`);
  process.exit(64);
}

/**
 * The fields holding values of more than one type, per measurement. The local store keeps each value
 * as its message gave it (no field-type guard stands before it, as before InfluxDB:
 * internal-network/distributor/sinks/field-types.ts), and InfluxDB refuses a field of two types (1.6:
 * every point of that shard in the request), so an export holding one would not import whole. The
 * export stays the store's, byte for byte; what would be refused is said on stderr.
 */
function mixedFieldTypes(points: readonly StoredPoint[]): string[] {
  const kinds = new Map<string, Map<string, Set<string>>>();
  for (const p of points) {
    let fields = kinds.get(p.measurement);
    if (!fields) kinds.set(p.measurement, (fields = new Map()));
    for (const [name, value] of Object.entries(p.fields)) {
      // As line-protocol.ts writes them: every number a float.
      const kind = typeof value === 'number' ? 'float' : typeof value === 'boolean' ? 'boolean' : 'string';
      let seen = fields.get(name);
      if (!seen) fields.set(name, (seen = new Set()));
      seen.add(kind);
    }
  }
  const warnings: string[] = [];
  for (const [measurement, fields] of kinds) {
    for (const [name, seen] of fields) {
      if (seen.size < 2) continue;
      warnings.push(
        `warning: field ${JSON.stringify(name)} of measurement ${JSON.stringify(measurement)} has values of ${seen.size} types (${[...seen].sort().join(', ')}): ` +
          'InfluxDB refuses a field of two types (1.6: every point of that week in the request); give the values of one type a field of their own, or leave their lines out, before importing',
      );
    }
  }
  return warnings;
}

loadDotenv();
let parsed;
try {
  parsed = parseArgs({
    options: {
      measurement: { type: 'string' },
      device: { type: 'string' },
      last: { type: 'string', default: '20' },
      'line-protocol': { type: 'boolean', default: false },
      dir: { type: 'string', default: process.env.TIMESERIES_LOCAL_PATH ?? './data/timeseries' },
      help: { type: 'boolean', default: false },
    },
  });
} catch (err) {
  usageError(err instanceof Error ? err.message : String(err));
}
const { values } = parsed;
if (values.help) {
  process.stdout.write(`${USAGE}\n`);
  process.exit(0);
}
const last = Number(values.last);
if (!Number.isInteger(last) || last < 0) usageError('--last must be a whole number (0 = all)');
// No folder: nothing was ever written there. Said, as a store with no points says nothing: before
// npm start first wrote, a mistyped --dir, or npm run stack's store read without --dir all printed
// nothing at all.
if (!existsSync(resolve(values.dir))) {
  process.stderr.write(
    `no time series at ${resolve(values.dir)}: npm start (with no database set) writes there once it runs; ` +
      'npm run stack writes to data/stack/timeseries (--dir); a database is queried with its own tools\n',
  );
}
let points = readLocalStore(resolve(values.dir));
if (values.measurement) points = points.filter((p) => p.measurement === values.measurement);
if (values.device) points = points.filter((p) => p.tags.device === values.device);
if (last > 0) points = points.slice(-last);
// Devices chose the values (and a string value may hold any character): nothing reaches a terminal
// as a control sequence (shared/terminal-text.ts). JSON is escaped wherever it goes, its values
// the same; line protocol only on a terminal, as a file of it is the import's data, byte for byte.
if (values['line-protocol']) {
  // Always nanoseconds, the precision docs/operations.md gives for the import, whatever the points.
  if (points.length > 0) {
    const text = toLineProtocol(points, 'ns');
    console.log(process.stdout.isTTY ? terminalText(text, true) : text);
    for (const warning of mixedFieldTypes(points)) process.stderr.write(`${terminalText(warning)}\n`);
  }
} else {
  for (const p of points) console.log(terminalText(JSON.stringify({ time: new Date(p.time).toISOString(), measurement: p.measurement, ...p.tags, ...p.fields })));
}
