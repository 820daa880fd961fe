import { join } from 'node:path';
import { REPLAYED_FILE, replayLetters, summarizeLetters, type ReplayReport } from '../../internal-network/distributor/dead-letter-replay.ts';
import { loadDistributorConfig } from '../../internal-network/distributor/config.ts';
import { selectDistributorSink } from '../../internal-network/distributor/sinks/select.ts';
import { DeviceKeyRegistry } from '../../internal-network/shared/device-keys.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { LIMITS } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';
import { columns } from './columns.ts';
import { REPO_ROOT, type DeadLetterPaths } from './paths.ts';

/**
 * `fieldstream-admin dead-letters list|replay`, on the internal server (docs/operations.md, "Dead
 * letters"): what the folder holds, and its data written into the distributor's stores once the
 * cause is fixed (internal-network/distributor/dead-letter-replay.ts).
 */

export function listDeadLetters(paths: DeadLetterPaths, json: boolean): string {
  const files = summarizeLetters(paths.deadLetters);
  if (json) return JSON.stringify(files, null, 2) + '\n';
  if (files.length === 0) return `No dead letters in ${paths.deadLetters}.\n`;
  const rows = [['FILE', 'BYTES', 'LETTERS', 'WITH DATA', 'REPLAYED', 'UNREADABLE', 'CODES']];
  for (const f of files) {
    const codes = Object.entries(f.byCode)
      .sort(([, a], [, b]) => b - a)
      .map(([code, n]) => `${code} ${n}`)
      .join(', ');
    rows.push([f.file, String(f.bytes), String(f.letters), String(f.withData), String(f.replayed), String(f.unreadable), codes]);
  }
  return `${columns(rows)}(WITH DATA: whole letters a replay can write, \`fieldstream-admin dead-letters replay\`; the others keep an invalid payload, or its excerpt, to look at)\n`;
}

/**
 * Replays with the distributor's settings (the environment and `.env`, as the distributor reads
 * them): its stores (INFLUXDB_*, POSTGRES_*, or the local store) and DISTRIBUTOR_REQUIRE_SIGNATURES.
 * Throws the store's DISTRIBUTOR_WRITE_FAILED when it could not be reached, or
 * DEAD_LETTERS_REFUSED_AGAIN when it refused a letter again, after printing what was done.
 */
export async function replayDeadLetters(paths: DeadLetterPaths, env: Record<string, string | undefined>, opts: { dryRun: boolean; code: string | undefined }, out: (text: string) => void): Promise<void> {
  // The local store's default, as the other defaults here, is the repository's (where `npm start` keeps it), not the working directory's.
  const config = loadDistributorConfig({ ...env, TIMESERIES_LOCAL_PATH: env.TIMESERIES_LOCAL_PATH ?? join(REPO_ROOT, 'data', 'timeseries') });
  const sink = selectDistributorSink(config, createLogger('fieldstream-admin', 'error', process.stderr));
  let report: ReplayReport;
  try {
    report = await replayLetters({
      dir: paths.deadLetters,
      sink,
      keys: new DeviceKeyRegistry(paths.deviceKeysDir, paths.revokedDevicesFile),
      requireSignatures: config.DISTRIBUTOR_REQUIRE_SIGNATURES,
      dryRun: opts.dryRun,
      ...(opts.code !== undefined ? { code: opts.code } : {}),
    });
  } finally {
    await sink.close();
  }
  out(replayText(report, paths, sink.description, opts.dryRun));
  if (report.stoppedBy) throw report.stoppedBy;
  const refused = report.problems.filter((p) => p.code === 'DEAD_LETTERS_REFUSED_AGAIN').length;
  if (refused > 0) throw new FieldStreamError('DEAD_LETTERS_REFUSED_AGAIN', `${refused} letter${refused === 1 ? ' was' : 's were'} refused again; fix the cause and replay again`);
}

function replayText(r: ReplayReport, paths: DeadLetterPaths, store: string, dryRun: boolean): string {
  const lines = [
    `${dryRun ? 'Would replay' : 'Replayed'} ${r.replayed} letter${r.replayed === 1 ? '' : 's'} (${r.points} point${r.points === 1 ? '' : 's'}) from ${paths.deadLetters} ${dryRun ? 'to' : 'into'} ${store}` +
      (r.messagesLeftOut > 0 ? `; ${r.messagesLeftOut} of their messages left out (not authentic under the device's key as registered now, or unsigned where signatures are required)` : ''),
  ];
  if (r.alreadyReplayed > 0) lines.push(`${r.alreadyReplayed} replayed before (${join(paths.deadLetters, REPLAYED_FILE)}), skipped`);
  if (r.problems.length > 0) {
    // Those refused again first: they are what the operator came for. A folder of a flood's junk
    // would print a line per letter at every run; the rest is counted.
    const shown = [...r.problems].sort((a, b) => Number(b.code === 'DEAD_LETTERS_REFUSED_AGAIN') - Number(a.code === 'DEAD_LETTERS_REFUSED_AGAIN')).slice(0, LIMITS.deadLetterReplayLinesShown);
    lines.push('not replayed:');
    for (const p of shown) lines.push(`  ${p.file}:${p.line}  ${p.code}  ${p.message}`);
    if (r.problems.length > shown.length) lines.push(`  … and ${r.problems.length - shown.length} more`);
  }
  if (r.stoppedBy) lines.push(`stopped: ${r.stoppedBy.code}: ${r.stoppedBy.message}; what was replayed is recorded, run it again once the store is back`);
  if (!dryRun && r.replayed > 0) lines.push(`Each letter replayed is recorded in ${join(paths.deadLetters, REPLAYED_FILE)}: a run again skips it. Remove a letter file once it holds nothing more to replay.`);
  return lines.join('\n') + '\n';
}
