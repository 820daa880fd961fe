import { GatewayEnvelopeSchema, parseEnvelope, sectionEnvelope, UplinkEnvelopeSchema, uplinkEnvelopeMaxValues, type UplinkEnvelope } from '../../shared/contract/envelope.ts';
import { parseTopic } from '../../shared/contract/topics.ts';
import { FieldStreamError, isFieldStreamError, type ErrorCode } from '../../shared/errors.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import { sortBySignature, type Message } from '../shared/authentic.ts';
import type { DeviceKeyRegistry } from '../shared/device-keys.ts';
import { notReplayableWhy, readLetters, REPLAYED_FILE, ReplayLedger, type ReadLetter } from './dead-letter-files.ts';
import type { DeadLetter } from './dead-letter.ts';
import type { EnvelopeOf } from '../../shared/contract/envelope.ts';
import { boundEventTags, EVENT_DEVICE_TAGS, type EventDeviceTag, type EventTagAdmissions } from './event-tags.ts';
import type { FileStore } from './file-store.ts';
import { storeFiles, type FileToStore } from './file-records.ts';
import { dataPoints, filePoint, transferKey, uplinkKey, type StoredFileInfo, type StoredPoint } from './points.ts';
import type { PointSink } from './sinks/sink.ts';
import { arrivedInTime } from './security/verifier.ts';
import { refuseOutOfRange } from './write-batcher.ts';

/**
 * Puts dead letters back: once the cause is fixed (a field that changed type given a measurement of
 * its own, a retention policy widened, a distributor defect fixed), the data the letters hold is
 * written into the same stores, by `fieldstream-admin dead-letters replay`.
 *
 * Written straight into the stores, not published again: a letter is days old by then, so the
 * distributor would refuse it as stale (DISTRIBUTOR_MAX_DELAY_S), and its sequence numbers as
 * below the device's replay window. What does not depend on the time of the replay is checked as
 * the verifier checks it (security/verifier.ts), since a letter keeps its whole payload, messages
 * the distributor refused included, and a compromised DMZ wrote the arrival times:
 * - each message's signature under the device's key as the registry holds it now (a revoked
 *   device's none); unsigned messages only where signatures are not required;
 * - its arrival within LIMITS' spread of its envelope's, and, signed, within the freshness
 *   (DISTRIBUTOR_FRESHNESS_S) of its signing: a reading without a timestamp of its own is stored at
 *   its arrival, which no signature covers;
 * - one copy of each message in a run: the first met (letters are read oldest first), across
 *   letters up to LIMITS.deadLetterReplayKeysMax signed messages remembered. A message of a device
 *   that stamps its readings (the field client stamps every one) is one point wherever it is copied;
 *   one without a timestamp of its own is stored at its arrival, which copies may give differently.
 * Each point keeps the key and time the distributor would have given it, so a letter written again
 * (a replay run again after a kill, a letter kept twice after a redelivery) is one point in every
 * store. A letter with a message left out (but for copies) is written in part and not recorded as
 * replayed: a key missing now (a wrong folder, a Secret not yet updated) must not make it look done.
 *
 * An event's `event_type` and `severity` are bounded as the distributor bounds them (event-tags.ts
 * boundEventTags), against the values the distributors admitted (`eventTags`: event-tags.ts
 * admittedEventTags, their state read, never written): a value no distributor admitted for the
 * device is stored under `~other`, its own value in the field `<tag>_value`. Before, a replay wrote
 * each event's own values as tags: letters of invented types (a hostile device, a compromised DMZ
 * writing letters of its devices' messages) made as many series as they held, up to InfluxDB's
 * max-series-per-database, once an operator replayed them.
 *
 * A file's letter (its record refused by the database, or a defect while it was stored) is stored
 * as the distributor stores it, through the same FileStore (FILE_STORAGE_PATH), then its record
 * written: a whole file is found again by its SHA-256 under the name it was stored under (or
 * stored, should it be gone); a chunk finds its transfer's record in the done marker, with the
 * time the distributor gave it, or is stored with the transfer's other chunks, completing it if it
 * was the last. Each record keeps the distributor's key (a whole file's message key, a transfer's
 * `t:ID`), so it is the one point and row however often it is written. Before, a file's letter was
 * refused outright: its record could never be written, though its bytes were on disk.
 */

/** Why a message of a letter was not written. */
export type LeftOut = 'not authentic' | 'unsigned' | 'arrival' | 'repeated';

/** A letter a replay did not write whole, and why (a stable code and a sentence). */
export interface LetterProblem {
  file: string;
  line: number;
  code: ErrorCode;
  message: string;
}

export interface ReplayReport {
  /** letters written whole (or, with dryRun, that would be), recorded as replayed */
  replayed: number;
  /** letters written in part (messages left out, or points the store refused again), not recorded */
  partly: number;
  points: number;
  /** messages left out of the letters written, by why */
  leftOut: Record<LeftOut, number>;
  /** events of the letters written stored under `~other` for the tag, their value not admitted by any distributor */
  overflowed: Record<EventDeviceTag, number>;
  alreadyReplayed: number;
  /** problems by code, all of them */
  problemCounts: Partial<Record<ErrorCode, number>>;
  /** the first LIMITS.deadLetterReplayLinesShown problems, those refused again first (a folder of a
   * flood's junk holds a million letters: they are counted, not kept) */
  problems: LetterProblem[];
  /** the store could not be reached (DISTRIBUTOR_WRITE_FAILED), or a letter written could not be recorded (DEAD_LETTERS_UNRECORDED): the run stopped there */
  stoppedBy?: FieldStreamError;
}

export interface ReplayOptions {
  dir: string;
  sink: PointSink;
  keys: DeviceKeyRegistry;
  /** unsigned messages are written only without it (DISTRIBUTOR_REQUIRE_SIGNATURES) */
  requireSignatures: boolean;
  /** milliseconds a signed message's signing may lie after its arrival (DISTRIBUTOR_FRESHNESS_S) */
  freshnessMs: number;
  /** milliseconds after its signing a signed message may arrive (DISTRIBUTOR_TRANSIT_MAX_S); TIMINGS.deviceTransitMaxMs when not given */
  transitMs?: number;
  /** check and count, write nothing */
  dryRun?: boolean;
  /** only letters of this code */
  code?: string;
  /** the event tag values the distributors admitted (event-tags.ts admittedEventTags): others are written under `~other` */
  eventTags: EventTagAdmissions;
  /** the distributor's file storage (FILE_STORAGE_PATH): files' letters are not replayed without it */
  files?: FileStore;
  /** days: the oldest a point's time may be (DISTRIBUTOR_MAX_POINT_AGE_DAYS); LIMITS.pointMaxAgeDays when not given */
  maxAgeDays?: number;
}

/**
 * Writes the data of every letter not replayed yet. A letter the store refuses again is reported
 * and left for another run; a store that cannot be reached (DISTRIBUTOR_WRITE_FAILED) ends the run
 * (`stoppedBy`), what was replayed so far recorded.
 */
export async function replayLetters(o: ReplayOptions): Promise<ReplayReport> {
  const ledger = new ReplayLedger(o.dir);
  /** the signed messages met in this run, by device: copies in later letters are left out */
  const met = new Set<string>();
  const report: ReplayReport = { replayed: 0, partly: 0, points: 0, leftOut: { 'not authentic': 0, unsigned: 0, arrival: 0, repeated: 0 }, overflowed: { event_type: 0, severity: 0 }, alreadyReplayed: 0, problemCounts: {}, problems: [] };
  const refusedAgain: LetterProblem[] = [];
  const other: LetterProblem[] = [];
  const problem = (r: ReadLetter, code: ErrorCode, message: string) => {
    report.problemCounts[code] = (report.problemCounts[code] ?? 0) + 1;
    const list = code === 'DEAD_LETTERS_REFUSED_AGAIN' ? refusedAgain : other;
    if (list.length < LIMITS.deadLetterReplayLinesShown) list.push({ file: r.file, line: r.line, code, message });
  };
  try {
    for (const r of readLetters(o.dir)) {
      if (!r.letter) {
        problem(r, 'DEAD_LETTER_UNREADABLE', 'not a dead letter (a torn line after a crash, a line being appended at that moment, or a damaged file)');
        continue;
      }
      if (o.code !== undefined && r.letter.code !== o.code) continue;
      if (ledger.has(r)) {
        report.alreadyReplayed++;
        continue;
      }
      let data: LetterData;
      try {
        data = pointsOfLetter(r.letter, o, met);
      } catch (err) {
        if (!isFieldStreamError(err, 'DEAD_LETTER_NOT_REPLAYABLE')) throw err;
        problem(r, err.code, err.message);
        continue;
      }
      const leftOut = Object.values(data.leftOut).reduce((n, k) => n + k, 0);
      // A copy left out is written with the message it copies (in this letter, or an earlier one,
      // which stays to be replayed until it is written): it does not make the letter partly written.
      const missing = leftOut - data.leftOut.repeated;
      if (data.points.length === 0 && data.files.length === 0 && missing > 0) {
        problem(r, 'DEAD_LETTER_NOT_REPLAYABLE', `none of its ${data.messages} messages can be written: ${leftOutText(data.leftOut)}`);
        continue;
      }
      /** a file of the letter the file storage refuses for good: its other files are stored and recorded all the same */
      let refusedFile: FieldStreamError | undefined;
      if (data.files.length > 0) {
        // Files first, then their records, as the distributor: a record never names a file not there.
        let records: StoredPoint[];
        try {
          ({ points: records, refused: refusedFile } = await fileRecords(data.files, o));
        } catch (err) {
          if (isFieldStreamError(err, 'DEAD_LETTER_NOT_REPLAYABLE')) {
            problem(r, err.code, err.message);
            continue;
          }
          report.stoppedBy = isFieldStreamError(err) ? err : new FieldStreamError('DISTRIBUTOR_WRITE_FAILED', String(err), {}, { cause: err });
          return report;
        }
        if (refusedFile && records.length === 0) {
          problem(r, 'DEAD_LETTER_NOT_REPLAYABLE', `the file storage refuses it (${refusedFile.code}): ${refusedFile.message}`);
          continue;
        }
        data.points.push(...records);
      }
      try {
        // As the distributor refuses it (write-batcher.ts): the letter of a reading dated further
        // ahead than LIMITS.pointMaxAheadMs is replayable once its time has come, not before; written
        // now, the database made a shard for its week, what that refusal is there to prevent. One
        // older than DISTRIBUTOR_MAX_POINT_AGE_DAYS, once the operator set that further back.
        refuseOutOfRange(data.points, o.maxAgeDays ?? LIMITS.pointMaxAgeDays);
      } catch (err) {
        if (!isFieldStreamError(err, 'DISTRIBUTOR_WRITE_REJECTED')) throw err;
        problem(r, 'DEAD_LETTERS_REFUSED_AGAIN', `refused again, as the distributor refuses it: ${err.message}`);
        continue;
      }
      // A dry run bounds them too: the admissions are only read, and it counts what would be moved.
      const overflowed: Record<EventDeviceTag, number> = { event_type: 0, severity: 0 };
      boundEventTags(data.points, o.eventTags, (tag) => overflowed[tag]++);
      if (data.points.length > 0 && !o.dryRun) {
        let taken: Taken;
        try {
          taken = await writeTaken(o.sink, data.points);
        } catch (err) {
          report.stoppedBy = isFieldStreamError(err) ? err : new FieldStreamError('DISTRIBUTOR_WRITE_FAILED', String(err), {}, { cause: err });
          return report;
        }
        if (taken.refused) {
          const n = data.points.length;
          if (taken.written === 0) problem(r, 'DEAD_LETTERS_REFUSED_AGAIN', `${o.sink.description} refused it again: ${taken.refused.message}`);
          else {
            report.points += taken.written;
            report.partly++;
            problem(r, 'DEAD_LETTERS_REFUSED_AGAIN', `${o.sink.description} refused ${n - taken.written} of its ${n} points again (${taken.refused.message}); the other ${taken.written} were written. Not recorded as replayed: a run again writes them again and tries the rest`);
          }
          continue;
        }
      }
      report.points += data.points.length;
      for (const tag of EVENT_DEVICE_TAGS) report.overflowed[tag] += overflowed[tag];
      for (const [why, n] of Object.entries(data.leftOut) as Array<[LeftOut, number]>) report.leftOut[why] += n;
      if (refusedFile) {
        // Not recorded as replayed: a run again finds the same verdict, and writes the others' records again (the same points).
        problem(r, 'DEAD_LETTER_NOT_REPLAYABLE', `the file storage refuses one of its files (${refusedFile.code}): ${refusedFile.message}. Its other files ${o.dryRun ? 'would be' : 'were'} stored and recorded`);
        continue;
      }
      if (missing > 0) {
        report.partly++;
        problem(r, 'DEAD_LETTER_PARTLY_REPLAYED', `${data.messages - leftOut} of its ${data.messages} messages ${o.dryRun ? 'would be' : 'were'} written; left out: ${leftOutText(data.leftOut)}. Not recorded as replayed: a run again writes it again`);
        continue;
      }
      if (!o.dryRun) {
        try {
          ledger.record(r);
        } catch (err) {
          // A folder read-only, full or made immutable: the letter is written but cannot be marked
          // so. The run stops with a code and its report (a bare EROFS, before, lost both); a run
          // again writes this letter again, the same points and rows.
          report.stoppedBy = new FieldStreamError('DEAD_LETTERS_UNRECORDED', `${r.file}:${r.line} was written, but its record cannot be appended to ${REPLAYED_FILE} in the dead-letter folder (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, { file: r.file, line: r.line }, { cause: err });
          return report;
        }
      }
      report.replayed++;
    }
    return report;
  } finally {
    report.problems = [...refusedAgain, ...other].slice(0, LIMITS.deadLetterReplayLinesShown);
  }
}

interface Taken {
  /** points the store took */
  written: number;
  /** the first refusal of a point (DISTRIBUTOR_WRITE_REJECTED), if any */
  refused?: FieldStreamError;
}

/**
 * Writes a letter's points; refused as bad data, in halves, each half refused halved again, down to
 * the points refused alone: the others are written (at most two requests per point, only for a
 * letter refused again). The distributor sets aside only the section of a gateway's envelope the
 * store refuses, but a letter of the whole envelope (DISTRIBUTOR_MESSAGE_FAILED) was written whole:
 * one device's string PostgreSQL cannot hold (U+0000) kept every other device's readings, receipted
 * as durable, out of the database for good. So, within a device's letter, did one message its
 * good ones. Points are independent (one per message, keyed by it), so parts go as well as the
 * whole. A failure of the store (DISTRIBUTOR_WRITE_FAILED) is thrown: the run stops there.
 */
async function writeTaken(sink: PointSink, points: readonly StoredPoint[]): Promise<Taken> {
  try {
    await sink.write(points);
    return { written: points.length };
  } catch (err) {
    if (!isFieldStreamError(err, 'DISTRIBUTOR_WRITE_REJECTED')) throw err;
    if (points.length === 1) return { written: 0, refused: err };
    const half = Math.ceil(points.length / 2);
    const first = await writeTaken(sink, points.slice(0, half));
    const second = await writeTaken(sink, points.slice(half));
    const refused = first.refused ?? second.refused;
    return { written: first.written + second.written, ...(refused ? { refused } : {}) };
  }
}

const LEFT_OUT_TEXT: Record<LeftOut, string> = {
  'not authentic': 'not authentic under its device key as registered now (or no key, or revoked)',
  unsigned: 'unsigned where signatures are required (DISTRIBUTOR_REQUIRE_SIGNATURES)',
  arrival: "an arrival time that does not agree with its envelope's or with its signing",
  repeated: 'a copy of a message met before (in this letter or an earlier one)',
};

export function leftOutText(leftOut: Record<LeftOut, number>): string {
  return (Object.entries(leftOut) as Array<[LeftOut, number]>)
    .filter(([, n]) => n > 0)
    .map(([why, n]) => `${n} ${LEFT_OUT_TEXT[why]}`)
    .join(', ');
}

const notReplayable = (why: string) => new FieldStreamError('DEAD_LETTER_NOT_REPLAYABLE', why);

/**
 * Stores a letter's files (a dry run only looks) and returns the records to write, as the
 * distributor's message handler does (file-records.ts storeFiles, the one both use). `refused`: the
 * first file the storage refuses for good (refusedFile); the letter's other files are stored still.
 */
async function fileRecords(files: FileToStore[], o: Pick<ReplayOptions, 'files' | 'dryRun'>): Promise<{ points: StoredPoint[]; refused?: FieldStreamError }> {
  const store = o.files;
  if (!store) throw notReplayable('a file, and no file storage given (FILE_STORAGE_PATH): its record names where it is stored');
  if (!o.dryRun) return storeFiles(store, files, refusedFile);
  // Nothing written: a chunk's record is counted when its transfer's is there (its done marker), a
  // whole file's always, at the time each would be written.
  const points: StoredPoint[] = [];
  let refused: FieldStreamError | undefined;
  for (const f of files) {
    const { transfer, filename, metadata } = f.message.payload;
    let record: StoredFileInfo | undefined;
    try {
      record = transfer ? await store.recordOf(f.deviceId, transfer.id, transfer) : { filename, path: '', size: 0, sha256: '', contentType: '', timestamp: metadata?.timestamp };
    } catch (err) {
      if (!isFieldStreamError(err, 'DISTRIBUTOR_FILE_MARKER_DAMAGED') && !isFieldStreamError(err, 'DISTRIBUTOR_FILE_TRANSFER_REUSED')) throw err;
      refused ??= err;
      continue;
    }
    if (record) points.push(filePoint(f.deviceId, f.receivedAt, record, transfer ? transferKey(transfer.id) : f.key));
  }
  return refused ? { points, refused } : { points };
}

/**
 * What the storage refuses a letter's file for, for good as when the distributor gave it: a verdict
 * on the file (its checksum, its name, its transfer id taken by other content), or a damaged marker
 * (no verdict on the file, but final until an operator puts it right: the letter stays, to be
 * replayed then).
 */
function refusedFile(err: unknown): err is FieldStreamError {
  return ['DISTRIBUTOR_FILE_CHECKSUM', 'DISTRIBUTOR_FILE_NAME_TAKEN', 'DISTRIBUTOR_UNSAFE_FILENAME', 'DISTRIBUTOR_FILE_MARKER_DAMAGED', 'DISTRIBUTOR_FILE_TRANSFER_REUSED'].some((code) => isFieldStreamError(err, code as ErrorCode));
}

interface LetterData {
  points: StoredPoint[];
  /** file messages to store before their records are written */
  files: FileToStore[];
  /** the messages of its envelopes */
  messages: number;
  leftOut: Record<LeftOut, number>;
}

/** The points of a letter's data, as the distributor would have written them; throws DEAD_LETTER_NOT_REPLAYABLE. */
function pointsOfLetter(letter: DeadLetter, o: Pick<ReplayOptions, 'keys' | 'requireSignatures' | 'freshnessMs' | 'transitMs'>, met: Set<string>): LetterData {
  const why = notReplayableWhy(letter);
  if (why !== undefined) throw notReplayable(why);
  const data: LetterData = { points: [], files: [], messages: 0, leftOut: { 'not authentic': 0, unsigned: 0, arrival: 0, repeated: 0 } };
  for (const env of envelopesOf(letter)) {
    data.messages += env.messages.length;
    const revoked = o.keys.isRevoked(env.deviceId);
    const sorted = sortBySignature<Message>(revoked ? undefined : o.keys.get(env.deviceId), env);
    data.leftOut['not authentic'] += sorted.unverified.length;
    const seen = new Set<string>();
    const kept: Array<{ message: Message; key: string }> = [];
    const keep = (message: Message, key: string, signedAt: number | undefined) => {
      const arrived = message.receivedAt ?? env.receivedAt;
      const runKey = signedAt === undefined ? undefined : `${env.deviceId}\u0000${key}`;
      if (Math.abs(arrived - env.receivedAt) > TIMINGS.envelopeItemArrivalSpreadMs || (signedAt !== undefined && !arrivedInTime(arrived, signedAt, o.freshnessMs, o.transitMs ?? TIMINGS.deviceTransitMaxMs))) data.leftOut.arrival++;
      else if (seen.has(key) || (runKey !== undefined && met.has(runKey))) data.leftOut.repeated++;
      else {
        seen.add(key);
        if (runKey !== undefined && met.size < LIMITS.deadLetterReplayKeysMax) met.add(runKey);
        kept.push({ message, key });
      }
    };
    for (const a of sorted.authentic) keep(a.message, uplinkKey(a.message.messageId, a), a.signedAt);
    // As the verifier: a revoked device's messages are refused, signed or not.
    if (o.requireSignatures || revoked) data.leftOut.unsigned += sorted.unsigned.length;
    else for (const m of sorted.unsigned) keep(m, uplinkKey(m.messageId), undefined);
    if (kept.length === 0) continue;
    if (env.dataType === 'file') {
      for (const k of kept) {
        const message = k.message as EnvelopeOf<'file'>['messages'][number];
        data.files.push({ deviceId: env.deviceId, message, receivedAt: message.receivedAt ?? env.receivedAt, key: k.key });
      }
      continue;
    }
    const accepted = { ...env, messages: kept.map((k) => k.message) } as typeof env;
    data.points.push(...dataPoints(accepted, kept.map((k) => k.key)));
  }
  return data;
}

/** The device envelopes a letter holds: its own, or each device's section of a gateway's. */
function envelopesOf(letter: DeadLetter): UplinkEnvelope[] {
  const payload = Buffer.from(letter.payloadBase64 as string, 'base64');
  try {
    const where = parseTopic(letter.topic);
    if (where.kind === 'gatewayUplink') {
      const env = parseEnvelope(GatewayEnvelopeSchema, payload);
      if (env.gatewayId !== where.gatewayId) throw notReplayable(`its envelope (gateway ${env.gatewayId}) disagrees with its topic`);
      return env.devices.map((section) => sectionEnvelope(env, section));
    }
    if (where.kind === 'uplink') {
      const env = parseEnvelope(UplinkEnvelopeSchema, payload, uplinkEnvelopeMaxValues(where.dataType));
      if (env.deviceId !== where.deviceId || env.dataType !== where.dataType) throw notReplayable(`its envelope (${env.deviceId}/${env.dataType}) disagrees with its topic`);
      return [env];
    }
    throw notReplayable(`a ${where.kind} message holds no data to replay`);
  } catch (err) {
    if (isFieldStreamError(err, 'DEAD_LETTER_NOT_REPLAYABLE')) throw err;
    throw notReplayable(`its payload is not a valid envelope for ${letter.topic}: ${(err as Error).message}`);
  }
}
