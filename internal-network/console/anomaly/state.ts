import { z } from 'zod';
import { DeviceIdSchema, FieldNameSchema } from '../../../shared/contract/primitives.ts';
import { LIMITS } from '../../../shared/limits.ts';
import type { AnomalyParams } from './params.ts';

/**
 * What the scorer keeps of a device across a restart, as it is written to and read back from disk
 * (internal-network/console/anomaly-state-file.ts): a device's windows, stuck runs, daily baselines
 * and training buffer, everything its detectors learnt from its readings. The forest itself is not
 * kept: it is grown again from the buffer at the device's next row (device.ts, fromState).
 *
 * Typed arrays are their bytes in base64, little-endian as every platform Node runs the console on
 * (x86-64, arm64). JSON has no NaN or Infinity: null stands for them where a field can hold one
 * (said at each). What is read back is checked here and against the parameters (deviceStateProblem):
 * a file is the console's own, but a damaged or edited one must not put a window of the wrong size
 * or a buffer row out of range into a detector.
 */

const Base64Schema = z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/, 'must be base64');
const Finite = z.number();
const Count = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

export const DailyProfileStateSchema = z
  .object({
    /** Float32 per bin, relative to the field's ref */
    value: Base64Schema,
    /** Uint8 per bin */
    count: Base64Schema,
    /** epoch ms; null: NaN (not yet started) */
    since: Finite.nullable(),
    latest: Finite.nullable(),
  })
  .strict();

export const FieldStateSchema = z
  .object({
    name: FieldNameSchema,
    /** Float64 values of the rolling window, oldest first */
    window: Base64Schema,
    ref: Finite,
    last: Finite,
    /** the device's reading (its counter) and time that last carried it */
    lastReading: Count,
    lastTime: Finite,
    seen: Count.min(1),
    rate: z.number().min(0).max(1),
    run: Count.min(1),
    /** null: Infinity (no run can be stuck yet). At least 2, as live (stuckMinRun): a run of 1 is
     * stuck at every value, each reported as a stuck run, its spikes never scored, until a repeat. */
    requiredRun: Count.min(2).nullable(),
    /** null: Infinity (the field never changed) */
    minStep: z.number().positive().nullable(),
    stuck: z.boolean(),
    profile: DailyProfileStateSchema.nullable(),
  })
  .strict();

export const DeviceStateSchema = z
  .object({
    id: DeviceIdSchema,
    /**
     * epoch ms, wall clock: when its last reading arrived (the scorer's monotonic clock does not
     * outlive the process). Absent in files saved before it was kept: the device then counts as
     * heard from at the restart.
     */
    heardAt: Finite.optional(),
    readings: Count,
    /** the reading time of the last row taken; null: none yet */
    lastSampleTime: Finite.nullable(),
    rowsSinceTrain: Count,
    keptOut: Count,
    trainings: Count,
    /** whether a forest was trained: it is grown again at the next row */
    forest: z.boolean(),
    buffer: z
      .object({
        fields: z.number().int().min(1).max(64),
        head: Count,
        count: Count,
        /** Float32 rows of 2 x fields (levels, then drifts), forestBufferSize of them */
        rows: Base64Schema,
      })
      .strict()
      .nullable(),
    fields: z.array(FieldStateSchema).max(LIMITS.readingMaxFields),
  })
  .strict();

export type DailyProfileState = z.infer<typeof DailyProfileStateSchema>;
export type FieldStateData = z.infer<typeof FieldStateSchema>;
export type DeviceState = z.infer<typeof DeviceStateSchema>;

/** The bytes of a typed array in base64. */
export function encodeArray(a: Float64Array | Float32Array | Uint8Array): string {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');
}

type ArrayKind = typeof Float64Array | typeof Float32Array | typeof Uint8Array;

/** base64 back into a typed array of `kind`; undefined if its bytes are not a whole number of elements. */
export function decodeArray<K extends ArrayKind>(kind: K, base64: string): InstanceType<K> | undefined {
  const bytes = Buffer.from(base64, 'base64');
  if (bytes.length % kind.BYTES_PER_ELEMENT !== 0) return undefined;
  // Copied into a buffer of its own: a Buffer's bytes may start at an offset no Float64Array can.
  const own = new ArrayBuffer(bytes.length);
  new Uint8Array(own).set(bytes);
  return new kind(own) as InstanceType<K>;
}

/** null for what JSON cannot carry (NaN, ±Infinity). */
export function finiteOrNull(x: number): number | null {
  return Number.isFinite(x) ? x : null;
}

/**
 * Whether a device's state, valid by its schema, also fits these parameters: sizes, counters and
 * values a detector can take. The reason if not (the device then starts afresh), else undefined.
 */
export function deviceStateProblem(s: DeviceState, p: Readonly<AnomalyParams>): string | undefined {
  if (s.fields.length > p.maxFieldsPerDevice) return `${s.fields.length} fields, more than maxFieldsPerDevice`;
  const names = new Set<string>();
  for (const f of s.fields) {
    if (names.has(f.name)) return `field ${f.name} twice`;
    names.add(f.name);
    if (f.lastReading > s.readings) return `field ${f.name} last seen after the device's last reading`;
    const window = decodeArray(Float64Array, f.window);
    if (window === undefined || window.length > p.windowSize || window.length > f.seen) return `field ${f.name}: a window of the wrong size`;
    if (!window.every(Number.isFinite)) return `field ${f.name}: a value in its window is not finite`;
    if (f.profile !== null) {
      const value = decodeArray(Float32Array, f.profile.value);
      const count = decodeArray(Uint8Array, f.profile.count);
      // Its values may be infinite or NaN, as saved by an earlier version (a field of values near
      // 1.8e308 overflowed a Float32): the bin starts again at its next update (DailyProfile.update).
      if (value?.length !== p.driftBins || count?.length !== p.driftBins) return `field ${f.name}: a daily baseline of the wrong size`;
    }
  }
  const b = s.buffer;
  if (b !== null) {
    if (b.fields > Math.min(p.forestMaxFields, s.fields.length)) return 'a buffer of more fields than the forest takes';
    if (b.head >= p.forestBufferSize || b.count > p.forestBufferSize) return 'a buffer position out of range';
    if (b.count < p.forestBufferSize && b.head !== b.count) return 'a buffer not filled in order';
    const rows = decodeArray(Float32Array, b.rows);
    if (rows?.length !== p.forestBufferSize * 2 * b.fields) return 'a buffer of the wrong size';
  }
  return undefined;
}
