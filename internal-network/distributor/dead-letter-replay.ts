import { createHash } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, openSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { GatewayEnvelopeSchema, parseEnvelope, sectionEnvelope, UplinkEnvelopeSchema, type UplinkEnvelope } from '../../shared/contract/envelope.ts';
import { parseTopic } from '../../shared/contract/topics.ts';
import { syncDirSync, writeWholeSync } from '../../shared/durable-fs.ts';
import { FieldStreamError, isFieldStreamError, type ErrorCode } from '../../shared/errors.ts';
import { LIMITS } from '../../shared/limits.ts';
import { readLinesSync } from '../../shared/line-file.ts';
import { sortBySignature, type Message } from '../shared/authentic.ts';
import type { DeviceKeyRegistry } from '../shared/device-keys.ts';
import { DeadLetterSchema, isUnparsable, LETTER_FILE, type DeadLetter } from './dead-letter.ts';
import { dataPoints, uplinkKey, type StoredPoint } from './points.ts';
import type { PointSink } from './sinks/sink.ts';

/**
 * Puts dead letters back: once the cause is fixed (a field that changed type given a measurement of
 * its own, a retention policy widened, a distributor defect fixed), the data the letters hold is
 * written into the same stores, by `fieldstream-admin dead-letters replay`.
 *
 * Written straight into the stores, not published again: a letter is days old by then, so the
 * distributor would refuse it as stale (DISTRIBUTOR_MAX_DELAY_S), and its sequence numbers as
 * below the device's replay window. What a replay still checks is what the letter cannot vouch
 * for: each message's signature under the device's key as the registry holds it now (a revoked
 * device's none), unsigned messages only where the distributor takes them
 * (DISTRIBUTOR_REQUIRE_SIGNATURES). Each point keeps the key the distributor would have given it,
 * so that a point written twice (a replay run again after a crash) is one point in every store.
 *
 * The letter files are never changed: the distributor may be appending to them. Which letters were
 * written is recorded in DIR/replayed.jsonl (the file's name and the SHA-256 of the letter's line),
 * appended and fsynced after each letter's write, so a replay run again skips them; the operator
 * removes a file once it holds nothing more to replay.
 */

export const REPLAYED_FILE = 'replayed.jsonl';

/** One line of DIR/replayed.jsonl. */
const ReplayedSchema = z.object({ at: z.string(), file: z.string(), sha256: z.string().regex(/^[0-9a-f]{64}$/) });
type Replayed = z.infer<typeof ReplayedSchema>;

/** The longest line of a letter: a payload of the largest MQTT packet in base64, and its fields. */
const LETTER_LINE_MAX_BYTES = Math.ceil(LIMITS.brokerPacketMaxBytes / 3) * 4 + 64 * 1024;

/** A letter as read from its file: where it is, and what it is (undefined: the line is not a letter). */
export interface ReadLetter {
  file: string;
  /** 1-based */
  line: number;
  sha256: string;
  letter: DeadLetter | undefined;
}

/** The letters of the folder, file by file (by name: by day), line by line. */
export function* readLetters(dir: string): Generator<ReadLetter> {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new FieldStreamError('DEAD_LETTERS_NOT_FOUND', `No dead-letter folder at ${dir} (DEAD_LETTER_PATH, or --dead-letters).`);
  for (const file of readdirSync(dir).filter((f) => LETTER_FILE.test(f)).sort()) {
    let line = 0;
    for (const text of readLinesSync(join(dir, file), LETTER_LINE_MAX_BYTES)) {
      line++;
      if (text === '') continue;
      const sha256 = text === undefined ? '' : createHash('sha256').update(text).digest('hex');
      yield { file, line, sha256, letter: text === undefined ? undefined : parseLetter(text) };
    }
  }
}

function parseLetter(text: string): DeadLetter | undefined {
  try {
    const parsed = DeadLetterSchema.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

/** Per file: its letters by code, how many hold their payload whole, how many were replayed. */
export interface LetterFileSummary {
  file: string;
  bytes: number;
  letters: number;
  byCode: Record<string, number>;
  /** letters whose payload is whole and holds data (what a replay can write) */
  withData: number;
  replayed: number;
  /** lines that are not letters (a torn last line after a crash, a damaged file) */
  unreadable: number;
}

export function summarizeLetters(dir: string): LetterFileSummary[] {
  const replayed = readReplayed(dir);
  const files = new Map<string, LetterFileSummary>();
  for (const r of readLetters(dir)) {
    let s = files.get(r.file);
    if (!s) files.set(r.file, (s = { file: r.file, bytes: statSync(join(dir, r.file)).size, letters: 0, byCode: {}, withData: 0, replayed: 0, unreadable: 0 }));
    if (!r.letter) {
      s.unreadable++;
      continue;
    }
    s.letters++;
    s.byCode[r.letter.code] = (s.byCode[r.letter.code] ?? 0) + 1;
    if (holdsData(r.letter)) s.withData++;
    if (replayed.has(ledgerKey(r.file, r.sha256))) s.replayed++;
  }
  return [...files.values()];
}

const holdsData = (l: DeadLetter) => l.payloadBase64 !== undefined && !isUnparsable(l);
const ledgerKey = (file: string, sha256: string) => `${file}\u0000${sha256}`;

/** The letters replayed before; a torn last line (a crash while appending) is no record. */
function readReplayed(dir: string): Set<string> {
  const path = join(dir, REPLAYED_FILE);
  const done = new Set<string>();
  if (!existsSync(path)) return done;
  for (const text of readLinesSync(path, 4096)) {
    if (!text) continue;
    try {
      const r = ReplayedSchema.safeParse(JSON.parse(text));
      if (r.success) done.add(ledgerKey(r.data.file, r.data.sha256));
    } catch {
      // not a record: skipped (its letter, if any, is replayed again, which writes the same points)
    }
  }
  return done;
}

function recordReplayed(dir: string, r: Replayed): void {
  const path = join(dir, REPLAYED_FILE);
  const created = !existsSync(path);
  const fd = openSync(path, 'a', 0o640);
  try {
    writeWholeSync(fd, Buffer.from(`${JSON.stringify(r)}\n`), path);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  if (created) syncDirSync(dir);
}

/** A letter a replay did not write, and why (a stable code and a sentence). */
export interface LetterProblem {
  file: string;
  line: number;
  code: ErrorCode;
  message: string;
}

export interface ReplayReport {
  /** letters written (or, with dryRun, that would be) */
  replayed: number;
  points: number;
  /** messages of replayed letters left out: their signature does not verify under the device's key, or unsigned where signatures are required */
  messagesLeftOut: number;
  alreadyReplayed: number;
  /** letters the store refused again (DEAD_LETTERS_REFUSED_AGAIN), not replayable, or not letters */
  problems: LetterProblem[];
  /** the store could not be reached (DISTRIBUTOR_WRITE_FAILED): the run stopped there */
  stoppedBy?: FieldStreamError;
}

export interface ReplayOptions {
  dir: string;
  sink: PointSink;
  keys: DeviceKeyRegistry;
  /** DISTRIBUTOR_REQUIRE_SIGNATURES: unsigned messages are written only without it */
  requireSignatures: boolean;
  /** check and count, write nothing */
  dryRun?: boolean;
  /** only letters of this code */
  code?: string;
}

/**
 * Writes the data of every letter not replayed yet. A letter the store refuses again is reported
 * and left for another run; a store that cannot be reached (DISTRIBUTOR_WRITE_FAILED) ends the run
 * (`stoppedBy`), what was replayed so far recorded.
 */
export async function replayLetters(o: ReplayOptions): Promise<ReplayReport> {
  const done = readReplayed(o.dir);
  const report: ReplayReport = { replayed: 0, points: 0, messagesLeftOut: 0, alreadyReplayed: 0, problems: [] };
  const problem = (r: ReadLetter, code: ErrorCode, message: string) => report.problems.push({ file: r.file, line: r.line, code, message });
  for (const r of readLetters(o.dir)) {
    if (!r.letter) {
      problem(r, 'DEAD_LETTER_UNREADABLE', 'not a dead letter (a torn line after a crash, or a damaged file)');
      continue;
    }
    if (o.code !== undefined && r.letter.code !== o.code) continue;
    if (done.has(ledgerKey(r.file, r.sha256))) {
      report.alreadyReplayed++;
      continue;
    }
    let points: StoredPoint[];
    let leftOut: number;
    try {
      ({ points, leftOut } = pointsOfLetter(r.letter, o));
    } catch (err) {
      if (!isFieldStreamError(err, 'DEAD_LETTER_NOT_REPLAYABLE')) throw err;
      problem(r, err.code, err.message);
      continue;
    }
    if (points.length === 0) {
      problem(r, 'DEAD_LETTER_NOT_REPLAYABLE', `none of its ${leftOut} messages is authentic under the device's key as registered now (or unsigned where signatures are required)`);
      continue;
    }
    if (!o.dryRun) {
      try {
        await o.sink.write(points);
      } catch (err) {
        if (isFieldStreamError(err, 'DISTRIBUTOR_WRITE_REJECTED')) {
          problem(r, 'DEAD_LETTERS_REFUSED_AGAIN', `${o.sink.description} refused it again: ${err.message}`);
          continue;
        }
        report.stoppedBy = isFieldStreamError(err) ? err : new FieldStreamError('DISTRIBUTOR_WRITE_FAILED', String(err), {}, { cause: err });
        return report;
      }
      recordReplayed(o.dir, { at: new Date().toISOString(), file: r.file, sha256: r.sha256 });
    }
    report.replayed++;
    report.points += points.length;
    report.messagesLeftOut += leftOut;
  }
  return report;
}

const notReplayable = (why: string) => new FieldStreamError('DEAD_LETTER_NOT_REPLAYABLE', why);

/** The points of a letter's data, as the distributor would have written them; throws DEAD_LETTER_NOT_REPLAYABLE. */
function pointsOfLetter(letter: DeadLetter, o: Pick<ReplayOptions, 'keys' | 'requireSignatures'>): { points: StoredPoint[]; leftOut: number } {
  if (!holdsData(letter)) {
    throw notReplayable(letter.payloadBase64 === undefined ? 'only an excerpt of an invalid payload is kept' : `its payload is not a valid message (${letter.code}): nothing in it can be written`);
  }
  const payload = Buffer.from(letter.payloadBase64 as string, 'base64');
  let envelopes: UplinkEnvelope[];
  try {
    const where = parseTopic(letter.topic);
    if (where.kind === 'gatewayUplink') {
      const env = parseEnvelope(GatewayEnvelopeSchema, payload);
      envelopes = env.devices.map((section) => sectionEnvelope(env, section));
    } else if (where.kind === 'uplink') {
      const env = parseEnvelope(UplinkEnvelopeSchema, payload);
      if (env.deviceId !== where.deviceId || env.dataType !== where.dataType) throw notReplayable(`its envelope (${env.deviceId}/${env.dataType}) disagrees with its topic`);
      envelopes = [env];
    } else throw notReplayable(`a ${where.kind} message holds no data to replay`);
  } catch (err) {
    if (isFieldStreamError(err, 'DEAD_LETTER_NOT_REPLAYABLE')) throw err;
    throw notReplayable(`its payload is not a valid envelope for ${letter.topic}: ${(err as Error).message}`);
  }
  const points: StoredPoint[] = [];
  let leftOut = 0;
  for (const env of envelopes) {
    if (env.dataType === 'file') throw notReplayable('a file is not replayed: its chunks, where kept, are in FILE_STORAGE_PATH/.failed/');
    const key = o.keys.isRevoked(env.deviceId) ? undefined : o.keys.get(env.deviceId);
    const sorted = sortBySignature<Message>(key, env);
    const accepted = sorted.authentic.map((a) => ({ message: a.message, key: uplinkKey(a.message.messageId, a) }));
    // As the verifier: a revoked device's messages are refused, signed or not.
    if (!o.requireSignatures && !o.keys.isRevoked(env.deviceId)) accepted.push(...sorted.unsigned.map((m) => ({ message: m, key: uplinkKey(m.messageId) })));
    leftOut += env.messages.length - accepted.length;
    if (accepted.length === 0) continue;
    const kept = { ...env, messages: accepted.map((a) => a.message) } as typeof env;
    points.push(...dataPoints(kept, accepted.map((a) => a.key)));
  }
  return { points, leftOut };
}
