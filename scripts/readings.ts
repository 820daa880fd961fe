/**
 * Reads back the embedded time-series store (the default when INFLUXDB_URL is not set).
 *   npm run readings -- [--measurement readings|events|command_responses|files|device_status|device_health] [--device ID] [--last N] [--line-protocol]
 */
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { loadDotenv } from '../shared/config.ts';
import { readLocalStore } from '../internal-network/distributor/sinks/local-store.ts';
import { toLineProtocol } from '../internal-network/distributor/sinks/line-protocol.ts';
import { terminalText } from '../shared/terminal-text.ts';

loadDotenv();
const { values } = parseArgs({
  options: {
    measurement: { type: 'string' },
    device: { type: 'string' },
    last: { type: 'string', default: '20' },
    'line-protocol': { type: 'boolean', default: false },
    dir: { type: 'string', default: process.env.TIMESERIES_LOCAL_PATH ?? './data/timeseries' },
  },
});
const last = Number(values.last);
if (!Number.isInteger(last) || last < 0) {
  console.error('error: --last must be a whole number (0 = all)');
  process.exit(64);
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
  }
} else {
  for (const p of points) console.log(terminalText(JSON.stringify({ time: new Date(p.time).toISOString(), measurement: p.measurement, ...p.tags, ...p.fields })));
}
