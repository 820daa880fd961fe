import { existsSync, readdirSync, rmSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { makeDirDurablySync, replaceFileDurably } from '../../shared/durable-fs.ts';
import { CONSOLE } from '../../shared/limits.ts';
import { readLinesSync } from '../../shared/line-file.ts';
import type { Logger } from '../../shared/logger.ts';
import type { AnomalyParams } from './anomaly/params.ts';
import type { AnomalyScorer } from './anomaly/scorer.ts';
import { DeviceStateSchema } from './anomaly/state.ts';

/**
 * The anomaly detectors' state on disk (CONSOLE_STATE_DIR): what every device's detectors learnt
 * (anomaly/state.ts), so that a restart (an upgrade, a moved container) does not leave the fleet's
 * forests silent for two days while their baselines and buffers fill again.
 *
 * One file of JSON lines: a header (format, version, the parameters it was learnt under, how many
 * devices follow), then a line per device, the least recently heard from first. It is replaced
 * whole (written aside, synced, renamed: durable-fs.ts) every CONSOLE.anomalyStateSaveMs and when
 * the console stops, so a kill at any instant leaves the last one saved: what was learnt since is
 * lost, nothing else. It holds no device data the database does not (values relative to a field's
 * first, the last 64 of each field), and nothing acknowledged depends on it.
 */
export const ANOMALY_STATE_FILE = 'anomaly-state.jsonl';
const FORMAT = 'fieldstream-anomaly-state';

const HeaderSchema = z
  .object({
    format: z.literal(FORMAT),
    version: z.literal(1),
    savedAt: z.iso.datetime(),
    devices: z.number().int().min(0),
    params: z.record(z.string(), z.unknown()),
  })
  .strict();

/**
 * The parameters that give what was learnt its shape: the windows' and baselines' sizes, the
 * buffer's rows, their spacing and width, the fields a device may have. State learnt under other
 * values of these does not fit; the others (thresholds, maxDevices, the forests' trees, the seed)
 * may change across a restart, and the state learnt is kept.
 */
const SHAPING = ['windowSize', 'driftBins', 'forestBufferSize', 'forestSampleIntervalMs', 'forestMaxFields', 'maxFieldsPerDevice'] as const satisfies ReadonlyArray<keyof AnomalyParams>;

/** The shaping parameters whose saved value differs from today's. */
function reshaped(saved: Record<string, unknown>, now: Readonly<AnomalyParams>): string[] {
  return SHAPING.filter((k) => saved[k] !== now[k]);
}

export interface RestoredState {
  /** devices taken back */
  restored: number;
  /** device lines refused (damaged, or not fitting the parameters): those devices start afresh */
  refused: number;
}

/**
 * Gives `scorer` back what was saved in `dir`. A file that is not one (damaged, another format) or
 * that was learnt under other parameters is left alone and every device starts afresh; a damaged
 * device line costs that device its state only. Logged, with CONSOLE_STATE_INVALID where something
 * was damaged. Read before the console takes readings (synchronously: it is starting).
 */
export function loadAnomalyState(dir: string, scorer: AnomalyScorer, log: Logger): RestoredState {
  const path = join(dir, ANOMALY_STATE_FILE);
  const result: RestoredState = { restored: 0, refused: 0 };
  try {
    // What a killed save left aside: never read, never renamed over the file any more.
    if (existsSync(dir)) for (const name of readdirSync(dir)) if (name.startsWith(`${ANOMALY_STATE_FILE}.tmp-`)) rmSync(join(dir, name), { force: true });
  } catch (err) {
    // A folder that cannot be looked at (a file in its place, no permission, a read-only volume):
    // the console runs on, every device afresh; its saves will say what fails (CONSOLE_STATE_WRITE_FAILED).
    log.error({ code: 'CONSOLE_STATE_INVALID', path: dir, err }, 'the anomaly state folder cannot be looked at: every device starts afresh');
    return result;
  }
  if (!existsSync(path)) {
    log.info({ path }, 'no saved anomaly state: every device starts afresh');
    return result;
  }
  let header: z.infer<typeof HeaderSchema> | undefined;
  let firstProblem: string | undefined;
  let lineNo = 0;
  /** device lines passed over, the least recently heard from: more than maxDevices has room for */
  let skip = 0;
  let skipped = 0;
  const refuse = (problem: string) => {
    result.refused++;
    firstProblem ??= `line ${lineNo}: ${problem}`;
  };
  try {
    for (const line of readLinesSync(path, CONSOLE.anomalyStateLineMaxBytes)) {
      lineNo++;
      if (header === undefined) {
        const h = HeaderSchema.safeParse(parseJson(line));
        if (!h.success) {
          log.error({ code: 'CONSOLE_STATE_INVALID', path }, 'the saved anomaly state has no valid header (not a file of ours, or damaged): every device starts afresh, and the next save replaces it');
          return result;
        }
        header = h.data;
        const changed = reshaped(header.params, scorer.params);
        if (changed.length > 0) {
          log.warn({ path, savedAt: header.savedAt, changed }, 'the saved anomaly state was learnt under other parameters: every device starts afresh');
          return result;
        }
        // maxDevices may be lower than when it was saved: the lines are the least recently heard
        // from first, so those passed over are the first ones. Taken in order, the stalest filled
        // the places and the devices heard from last were refused (their forests two days away).
        skip = Math.max(0, header.devices - (scorer.params.maxDevices - scorer.stats().devices));
        continue;
      }
      if (skipped < skip) {
        skipped++;
        continue;
      }
      if (line === undefined) {
        refuse(`longer than ${CONSOLE.anomalyStateLineMaxBytes} bytes`);
        continue;
      }
      const s = DeviceStateSchema.safeParse(parseJson(line));
      if (!s.success) {
        refuse(s.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ').slice(0, 300));
        continue;
      }
      const problem = scorer.restoreDevice(s.data);
      if (problem === undefined) result.restored++;
      else refuse(`${s.data.id}: ${problem}`);
    }
  } catch (err) {
    log.error({ code: 'CONSOLE_STATE_INVALID', path, err }, 'the saved anomaly state could not be read: the devices not read start afresh');
    return result;
  }
  if (header === undefined) {
    log.error({ code: 'CONSOLE_STATE_INVALID', path }, 'the saved anomaly state is empty: every device starts afresh');
    return result;
  }
  const lines = skipped + result.restored + result.refused;
  if (skipped > 0) log.warn({ path, skipped, maxDevices: scorer.params.maxDevices }, 'the saved anomaly state holds more devices than maxDevices: the least recently heard from start afresh');
  if (lines !== header.devices) firstProblem ??= `${lines} devices of the ${header.devices} it was saved with`;
  if (firstProblem !== undefined) {
    log.error({ code: 'CONSOLE_STATE_INVALID', path, restored: result.restored, refused: result.refused, problem: firstProblem }, 'the saved anomaly state is damaged: the devices it does not hold whole start afresh');
  }
  log.info({ path, savedAt: header.savedAt, restored: result.restored }, 'anomaly state restored');
  return result;
}

function parseJson(line: string | undefined): unknown {
  if (line === undefined) return undefined;
  try {
    return JSON.parse(line);
  } catch {
    return undefined;
  }
}

/**
 * Saves the scorer's state into `dir`, one save at a time (a save asked for while one runs is
 * skipped: the next interval's takes it). Each device is made into its line when its turn comes,
 * and the file is written a piece at a time, so the console goes on serving while it saves.
 */
export class AnomalyStateSaver {
  private running: Promise<void> | undefined;
  private readonly path: string;
  /** the file aside, named for this host and process: consoles sharing the folder write their own */
  private readonly tmp: string;

  constructor(
    private readonly dir: string,
    private readonly scorer: AnomalyScorer,
    private readonly log: Logger,
  ) {
    this.path = join(dir, ANOMALY_STATE_FILE);
    this.tmp = `${this.path}.tmp-${hostname()}-${process.pid}`;
  }

  /** Saves now, or joins the save that runs. Never rejects: a failure is logged (CONSOLE_STATE_WRITE_FAILED). */
  save(): Promise<void> {
    this.running ??= this.write().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  /** The last save, when the console stops: after the one that runs (begun before the last readings), one more. */
  async saveLast(): Promise<void> {
    await this.running;
    await this.save();
  }

  private async write(): Promise<void> {
    const started = performance.now();
    const devices = this.scorer.devicesState();
    try {
      makeDirDurablySync(this.dir, 0o700);
      const header = { format: FORMAT, version: 1, savedAt: new Date().toISOString(), devices: devices.length, params: this.scorer.params };
      await replaceFileDurably(this.path, pieces(`${JSON.stringify(header)}\n`, devices), this.tmp);
      this.log.debug({ path: this.path, devices: devices.length, ms: Math.round(performance.now() - started) }, 'anomaly state saved');
    } catch (err) {
      this.log.error({ code: 'CONSOLE_STATE_WRITE_FAILED', path: this.path, err }, 'the anomaly state could not be saved: the last one saved stays; tried again at the next save');
    }
  }
}

/** The file's text, about CONSOLE.anomalyStateWriteBytes at a time; each device's line made when reached. */
function* pieces(header: string, devices: ReturnType<AnomalyScorer['devicesState']>): Generator<string> {
  let piece = header;
  for (const d of devices) {
    piece += `${JSON.stringify(d.toState())}\n`;
    if (piece.length >= CONSOLE.anomalyStateWriteBytes) {
      yield piece;
      piece = '';
    }
  }
  if (piece.length > 0) yield piece;
}
