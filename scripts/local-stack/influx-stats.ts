import { z } from 'zod';

/** One shard of a database (InfluxV1Api.shards): the span of time it holds, [startMs, endMs). */
export interface InfluxShard {
  startMs: number;
  endMs: number;
}

/** `SHOW SHARDS`: a series per database, a row per shard; the columns read are checked to be there. */
const ShowShardsSchema = z.object({
  results: z.array(
    z.object({
      series: z
        .array(
          z
            // A database without shards is listed without `values`.
            .object({ name: z.string(), columns: z.array(z.string()), values: z.array(z.array(z.unknown())).default([]) })
            .refine((s) => ['start_time', 'end_time'].every((c) => s.columns.includes(c)), 'SHOW SHARDS without start_time or end_time'),
        )
        .optional(),
    }),
  ),
});

/**
 * The shards of `database` in InfluxDB's answer to `SHOW SHARDS` (InfluxV1Api.shards), each the
 * span of time it holds.
 */
export function shardsOf(showShards: unknown, database: string): InfluxShard[] {
  const series = ShowShardsSchema.parse(showShards).results[0]?.series ?? [];
  return series
    .filter((s) => s.name === database)
    .flatMap((s) => {
      const at = (column: string) => s.columns.indexOf(column);
      return s.values.map((v) => ({ startMs: Date.parse(String(v[at('start_time')])), endMs: Date.parse(String(v[at('end_time')])) }));
    });
}

/** InfluxDB's engine counters at one moment (InfluxV1.activity). */
export interface InfluxActivity {
  pointsWritten: number;
  /** the in-memory cache written out to a TSM file (a "cache compaction") */
  cacheSnapshots: number;
  /** TSM files compacted: levels 1–3, optimise and full */
  compactions: number;
  /** the time the snapshots and compactions took, summed as they finished */
  compactionMs: number;
  /** the Go runtime's stop-the-world pauses in all */
  gcPauseMs: number;
}

const TSM_COMPACTIONS = ['tsmLevel1', 'tsmLevel2', 'tsmLevel3', 'tsmOptimize', 'tsmFull'] as const;

/** The parts of InfluxDB 1.x's `/debug/vars` read here: statistics by name, and the Go runtime's memstats. */
const StatisticSchema = z.object({
  name: z.string(),
  // Counters are numbers; anything else among the values is left out.
  values: z.record(z.string(), z.unknown()).transform((v): Record<string, number | undefined> => Object.fromEntries(Object.entries(v).filter((e): e is [string, number] => typeof e[1] === 'number'))),
});
const DebugVarsSchema = z.object({ memstats: z.object({ PauseTotalNs: z.number() }).partial().optional() }).catchall(z.unknown());

/** The storage engine's counters in InfluxDB's `/debug/vars` (InfluxV1Api.activity), summed over its shards. */
export function activityOf(debugVars: unknown): InfluxActivity {
  const vars = DebugVarsSchema.parse(debugVars);
  const a: InfluxActivity = { pointsWritten: 0, cacheSnapshots: 0, compactions: 0, compactionMs: 0, gcPauseMs: (vars.memstats?.PauseTotalNs ?? 0) / 1e6 };
  for (const entry of Object.values(vars)) {
    const stat = StatisticSchema.safeParse(entry);
    if (!stat.success) continue; // memstats, cmdline and the like
    const { name, values } = stat.data;
    if (name === 'httpd') a.pointsWritten += values.pointsWrittenOK ?? 0;
    if (name !== 'tsm1_engine') continue;
    a.cacheSnapshots += values.cacheCompactions ?? 0;
    a.compactionMs += (values.cacheCompactionDuration ?? 0) / 1e6;
    for (const kind of TSM_COMPACTIONS) {
      a.compactions += values[`${kind}Compactions`] ?? 0;
      a.compactionMs += (values[`${kind}CompactionDuration`] ?? 0) / 1e6;
    }
  }
  return a;
}
