import { gunzipSync } from 'node:zlib';
import protobuf from 'protobufjs';
import { z } from 'zod';
import type { HotSpot } from './profile-summary.ts';

/**
 * The CPU profiles of the stack's Go servers (Caddy, InfluxDB), as their `/debug/pprof/profile`
 * endpoint (Go's net/http/pprof) serves them: a gzipped `perftools.profiles.Profile` message
 * (github.com/google/pprof, proto/profile.proto). Only the messages and fields a summary reads are
 * described; protobuf skips the others (mappings, labels, comments) as unknown fields. Field
 * numbers are the format's.
 */
const opt = (type: string, id: number) => ({ type, id });
const rep = (type: string, id: number) => ({ rule: 'repeated', type, id });
const root = protobuf.Root.fromJSON({
  nested: {
    Profile: {
      fields: {
        sampleType: rep('ValueType', 1),
        sample: rep('Sample', 2),
        location: rep('Location', 4),
        function: rep('Function', 5),
        stringTable: rep('string', 6),
      },
    },
    ValueType: { fields: { type: opt('int64', 1), unit: opt('int64', 2) } },
    Sample: { fields: { locationId: rep('uint64', 1), value: rep('int64', 2) } },
    // `line`: the functions at this address, innermost first (the last is the one the others were inlined into)
    Location: { fields: { id: opt('uint64', 1), line: rep('Line', 4) } },
    Line: { fields: { functionId: opt('uint64', 1) } },
    Function: { fields: { id: opt('uint64', 1), name: opt('int64', 2) } },
  },
});
/** The Profile message (exported for tests, which build profiles of known content with it). */
export const ProfileMessage = root.lookupType('Profile');

const id = z.number().int().min(0);
/** What was decoded, checked before use: indexes into the string table are numbers here, not trusted. */
const PprofSchema = z.object({
  sampleType: z.array(z.object({ type: id, unit: id })),
  sample: z.array(z.object({ locationId: z.array(id), value: z.array(z.number().int()) })),
  location: z.array(z.object({ id, line: z.array(z.object({ functionId: id })) })),
  function: z.array(z.object({ id, name: id })),
  stringTable: z.array(z.string()),
});
export type Pprof = z.infer<typeof PprofSchema>;

/** bytes a profile may hold once unzipped (a minute of a busy server's is a few hundred KiB) */
const MAX_PROFILE_BYTES = 64 * 1024 * 1024;

/** Decodes one profile as the endpoint serves it (gzipped, or not). Throws on anything else, or on more than MAX_PROFILE_BYTES. */
export function decodePprof(data: Uint8Array): Pprof {
  const raw = data[0] === 0x1f && data[1] === 0x8b ? gunzipSync(data, { maxOutputLength: MAX_PROFILE_BYTES }) : data;
  const message = ProfileMessage.decode(raw);
  return PprofSchema.parse(ProfileMessage.toObject(message, { longs: Number, defaults: true, arrays: true }));
}

export interface PprofSummary {
  /** CPU seconds the samples stand for */
  cpuSeconds: number;
  /** samples taken (the profiler's own count: one stack sampled several times is one record of them) */
  samples: number;
  /** the functions with the most self time (share of all samples) */
  self: HotSpot[];
  /** the functions with the most total time: in them or in what they called */
  total: HotSpot[];
}

/**
 * Summarises profiles of one process taken one after another (the profiler serves them for a
 * whole number of seconds each) as if they were one. Go's CPU profiler records only time on the
 * CPU, so every sample is busy: the shares are of all of them. Each sample counts with its CPU
 * time (the value whose type is "cpu"), recursion and inlined copies once per sample.
 */
export function summarisePprof(profiles: readonly Pprof[], top = 12): PprofSummary {
  const self = new Map<string, number>();
  const total = new Map<string, number>();
  let busyNs = 0;
  let samples = 0;
  for (const p of profiles) {
    const str = (i: number) => p.stringTable[i] ?? `(string ${i})`;
    const cpu = p.sampleType.findIndex((t) => str(t.type) === 'cpu');
    const valueAt = cpu >= 0 ? cpu : p.sampleType.length - 1;
    const countAt = p.sampleType.findIndex((t) => str(t.type) === 'samples');
    const functionName = new Map(p.function.map((f) => [f.id, str(f.name) || '(unnamed)']));
    const frames = new Map(p.location.map((l) => [l.id, l.line.map((x) => functionName.get(x.functionId) ?? `(function ${x.functionId})`)]));
    for (const s of p.sample) {
      const ns = s.value[valueAt] ?? 0;
      if (ns <= 0) continue;
      busyNs += ns;
      samples += countAt >= 0 ? (s.value[countAt] ?? 0) : 1;
      const stack = s.locationId.flatMap((l) => frames.get(l) ?? [`(location ${l})`]);
      const leaf = stack[0] ?? '(no stack)';
      self.set(leaf, (self.get(leaf) ?? 0) + ns);
      for (const f of new Set(stack)) total.set(f, (total.get(f) ?? 0) + ns);
    }
  }
  const pct = (ns: number) => Math.round((ns / Math.max(1, busyNs)) * 1000) / 10;
  const spot = (where: string): HotSpot => ({ where, selfPercent: pct(self.get(where) ?? 0), totalPercent: pct(total.get(where) ?? 0) });
  const topOf = (m: Map<string, number>) => [...m.keys()].sort((a, b) => (m.get(b) as number) - (m.get(a) as number)).slice(0, top).map(spot);
  return { cpuSeconds: busyNs / 1e9, samples, self: topOf(self), total: topOf(total) };
}
