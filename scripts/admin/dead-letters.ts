import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { REPLAYED_FILE, summarizeLetters } from '../../internal-network/distributor/dead-letter-files.ts';
import { leftOutText, replayLetters, type ReplayReport } from '../../internal-network/distributor/dead-letter-replay.ts';
import { admittedEventTags, overflowField } from '../../internal-network/distributor/event-tags.ts';
import { OVERFLOW_TAG_VALUE } from '../../internal-network/distributor/security/tag-admission.ts';
import { loadDistributorConfig } from '../../internal-network/distributor/config.ts';
import { FileStore } from '../../internal-network/distributor/file-store.ts';
import { selectDistributorSink } from '../../internal-network/distributor/sinks/select.ts';
import { DeviceKeyRegistry } from '../../internal-network/shared/device-keys.ts';
import { FieldStreamError } from '../../shared/errors.ts';
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
    rows.push([f.inUse ? `${f.file} (in use)` : f.file, String(f.bytes), String(f.letters), String(f.withData), String(f.replayed), String(f.unreadable), codes]);
  }
  return `${columns(rows)}WITH DATA: whole letters a replay can write (fieldstream-admin dead-letters replay); the others (an invalid payload or its excerpt, a presence or a gateway's security report) are kept to look at.
A file may be removed once its letters with data are all replayed, unless it is in use: the distributor may still be appending to it.\n`;
}

/**
 * Replays with the distributor's settings (the environment and `.env`, as the distributor reads
 * them): its stores (INFLUXDB_*, POSTGRES_*, or the local store; FILE_STORAGE_PATH) and DISTRIBUTOR_FRESHNESS_S.
 * Unsigned messages are written only where DISTRIBUTOR_REQUIRE_SIGNATURES=false is set: its
 * default (false, for `npm start`) is not taken here, as a replay on the host of a deployment whose
 * distributor requires signatures would otherwise write what that distributor refused.
 * Throws the store's DISTRIBUTOR_WRITE_FAILED when it could not be reached, or
 * DEAD_LETTERS_REFUSED_AGAIN when it refused a letter again, after printing what was done.
 * Events' types and severities are bounded by the values the distributors admitted, read from
 * their state folder (`paths.stateDir`, every slot; event-tags.ts admittedEventTags): read only,
 * so the replay may run beside them. No state folder there stops it (DEAD_LETTERS_NO_STATE): the
 * distributor makes it at its first start, so a missing one is a wrong path, under which every
 * event would be stored as `~other`.
 */
export async function replayDeadLetters(paths: DeadLetterPaths, env: Record<string, string | undefined>, opts: { dryRun: boolean; code: string | undefined }, out: (text: string) => void): Promise<void> {
  if (!existsSync(paths.deviceKeysDir) || !statSync(paths.deviceKeysDir).isDirectory()) {
    throw new FieldStreamError('DEAD_LETTERS_NO_KEYS', `No folder of device signing keys at ${paths.deviceKeysDir} (DISTRIBUTOR_DEVICE_KEYS_DIR, or internal/device-keys of --certs-dir): no message could be checked.`);
  }
  if (!existsSync(paths.stateDir) || !statSync(paths.stateDir).isDirectory()) {
    throw new FieldStreamError('DEAD_LETTERS_NO_STATE', `No distributor state folder at ${paths.stateDir} (DISTRIBUTOR_STATE_DIR, --state-dir): the event types and severities the distributor admitted could not be read. Point it at the distributor's (npm run stack: data/stack/distributor-state).`);
  }
  // The local store's default, as the other defaults here, is the repository's (where `npm start` keeps it), not the working directory's.
  const config = loadDistributorConfig({
    ...env,
    TIMESERIES_LOCAL_PATH: env.TIMESERIES_LOCAL_PATH ?? join(REPO_ROOT, 'data', 'timeseries'),
    FILE_STORAGE_PATH: env.FILE_STORAGE_PATH ?? join(REPO_ROOT, 'data', 'files'),
  });
  const log = createLogger('fieldstream-admin', 'error', process.stderr);
  // Before the store is opened: an unreadable revoked list stops the replay (CONFIG_FILE_UNREADABLE).
  const keys = new DeviceKeyRegistry(paths.deviceKeysDir, paths.revokedDevicesFile, undefined, log);
  // Before the store too: a file of admitted values that cannot be read stops it (CONFIG_FILE_UNREADABLE).
  const eventTags = admittedEventTags(paths.stateDir, log);
  const sink = selectDistributorSink(config, log);
  let report: ReplayReport;
  try {
    report = await replayLetters({
      dir: paths.deadLetters,
      sink,
      keys,
      eventTags,
      requireSignatures: env.DISTRIBUTOR_REQUIRE_SIGNATURES === undefined || config.DISTRIBUTOR_REQUIRE_SIGNATURES,
      freshnessMs: config.DISTRIBUTOR_FRESHNESS_S * 1000,
      transitMs: config.DISTRIBUTOR_TRANSIT_MAX_S * 1000,
      maxAgeDays: config.DISTRIBUTOR_MAX_POINT_AGE_DAYS,
      // A file's letter is stored again where the distributor stores files, then its record written.
      files: new FileStore(config.FILE_STORAGE_PATH),
      dryRun: opts.dryRun,
      ...(opts.code !== undefined ? { code: opts.code } : {}),
    });
  } finally {
    await sink.close();
  }
  out(replayText(report, paths, sink.description, opts.dryRun));
  if (report.stoppedBy) throw report.stoppedBy;
  const refused = report.problemCounts.DEAD_LETTERS_REFUSED_AGAIN ?? 0;
  if (refused > 0) throw new FieldStreamError('DEAD_LETTERS_REFUSED_AGAIN', `${refused} letter${refused === 1 ? ' was' : 's were'} refused again; fix the cause and replay again`);
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;

function replayText(r: ReplayReport, paths: DeadLetterPaths, store: string, dryRun: boolean): string {
  const leftOut = leftOutText(r.leftOut);
  const lines = [
    `${dryRun ? 'Would replay' : 'Replayed'} ${plural(r.replayed, 'letter')}${r.partly > 0 ? ` and ${r.partly} in part` : ''} (${plural(r.points, 'point')}) from ${paths.deadLetters} ${dryRun ? 'to' : 'into'} ${store}` +
      (leftOut ? `; messages left out: ${leftOut}` : ''),
  ];
  const overflowed = (Object.entries(r.overflowed) as Array<[keyof ReplayReport['overflowed'], number]>).filter(([, n]) => n > 0);
  if (overflowed.length > 0) {
    const what = overflowed.map(([tag, n]) => `the ${tag} of ${plural(n, 'event')}`).join(', ');
    const fields = overflowed.map(([tag]) => overflowField(tag)).join(', ');
    lines.push(`${what} ${dryRun ? 'would be' : 'was'} stored as ${OVERFLOW_TAG_VALUE}: values no distributor admitted for the device (${paths.stateDir}); each value in the field ${fields}`);
  }
  if (r.alreadyReplayed > 0) lines.push(`${r.alreadyReplayed} replayed before (${join(paths.deadLetters, REPLAYED_FILE)}), skipped`);
  const counted = Object.values(r.problemCounts).reduce((n, k) => n + k, 0);
  if (counted > 0) {
    lines.push(`not replayed whole: ${Object.entries(r.problemCounts).map(([code, n]) => `${code} ${n}`).join(', ')}`);
    for (const p of r.problems) lines.push(`  ${p.file}:${p.line}  ${p.code}  ${p.message}`);
    if (counted > r.problems.length) lines.push(`  … and ${counted - r.problems.length} more`);
  }
  if (r.stoppedBy?.code === 'DEAD_LETTERS_UNRECORDED') lines.push(`stopped: ${r.stoppedBy.code}: ${r.stoppedBy.message}; run it again once the folder takes writes (that letter is written again: the same points)`);
  else if (r.stoppedBy) lines.push(`stopped: ${r.stoppedBy.code}: ${r.stoppedBy.message}; what was replayed is recorded, run it again once the store is back`);
  if (!dryRun && r.replayed > 0) lines.push(`Each letter replayed whole is recorded in ${join(paths.deadLetters, REPLAYED_FILE)}: a run again skips it.`);
  return lines.join('\n') + '\n';
}
