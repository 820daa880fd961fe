import { FieldStreamError } from '../../../../shared/errors.ts';
import type { Naming } from './naming.ts';
import { DATA_TYPE_NAMES } from './proto.ts';
import type { SparkplugMetric } from './payload.ts';
import type { SparkplugTopic } from './topic.ts';

/** What a birth declares (Sparkplug 3.0.0 §6.4.7): each metric's name and data type, by alias and by name. */
export interface MetricDef {
  name: string;
  datatype: number;
  /** its field name, set by the host at the birth (names.ts) */
  naming?: Naming | undefined;
}

export interface Definitions {
  byAlias: Map<number, MetricDef>;
  byName: Map<string, MetricDef>;
  /** what they take in memory, estimated (see DEF_BYTES): the host bounds the sum of all it holds */
  bytes: number;
}

/**
 * bytes. What one definition takes in memory beside its name, and what an alias adds: a Map entry
 * and the small object it points to. A name is counted at two bytes per character (V8 keeps one,
 * or two when it holds characters past Latin-1). An upper bound: Node 20's heap grew by 60–80 % of
 * this estimate for 100,000 definitions of 10- to 200-character names.
 */
const DEF_BYTES = 128;
const ALIAS_BYTES = 64;
/**
 * bytes. The least one metric of a birth adds to Definitions.bytes (a second alias of a name
 * declared already): N metrics of a birth held take N times this at least (store.ts bounds what it
 * reads back with it).
 */
export const MIN_METRIC_BYTES = ALIAS_BYTES;

/** §6.4.7: every metric of a birth has a name and a data type (one, however many aliases name it); aliases, where given, are unique. */
export function definitions(metrics: ReadonlyArray<Pick<SparkplugMetric, 'name' | 'alias' | 'datatype'>>): Definitions {
  const defs: Definitions = { byAlias: new Map(), byName: new Map(), bytes: 0 };
  for (const m of metrics) {
    if (m.name === undefined || m.datatype === undefined) {
      throw new FieldStreamError('SPARKPLUG_PAYLOAD_INVALID', `a birth metric without ${m.name === undefined ? 'a name' : `a data type (${m.name})`}`);
    }
    // One name under two aliases is one metric, so one field: with two data types its values were a
    // number and a string by turns in that field, which the database refuses with every reading
    // written alongside (and the birth's own two values landed in one field, one of them lost).
    const named = defs.byName.get(m.name);
    if (named && named.datatype !== m.datatype) {
      throw new FieldStreamError('SPARKPLUG_PAYLOAD_INVALID', `metric ${m.name} declared with two data types (${DATA_TYPE_NAMES[named.datatype] ?? named.datatype} and ${DATA_TYPE_NAMES[m.datatype] ?? m.datatype})`);
    }
    const def = { name: m.name, datatype: m.datatype };
    if (m.alias !== undefined) {
      const other = defs.byAlias.get(m.alias);
      if (other && other.name !== m.name) throw new FieldStreamError('SPARKPLUG_PAYLOAD_INVALID', `alias ${m.alias} given to both ${other.name} and ${m.name}`);
      defs.byAlias.set(m.alias, def);
    }
    defs.byName.set(m.name, def);
  }
  for (const def of defs.byName.values()) defs.bytes += DEF_BYTES + 2 * def.name.length;
  defs.bytes += ALIAS_BYTES * defs.byAlias.size;
  return defs;
}

/**
 * The definition a metric of a birth or data message names: by its alias when it has one, else by its
 * name. A data message should carry the alias alone (§6.4.7, tck-id-payloads-alias-data-cmd-requirement);
 * one that carries both, naming two metrics of the birth, is refused as undeclared: read by its alias
 * alone, its value went to another metric's field, while the edge node meant the metric it named (its
 * aliases changed in a birth that was missed, or it is wrong), and the rebirth that refusal asks for
 * tells which.
 */
export function resolve(m: SparkplugMetric, defs: Definitions, t: SparkplugTopic): MetricDef {
  const def = m.alias !== undefined ? defs.byAlias.get(m.alias) : defs.byName.get(m.name as string);
  const where = () => `${t.type} of ${[t.group, t.edge, t.device].filter(Boolean).join('/')}`;
  if (!def) {
    const what = m.alias !== undefined ? `alias ${m.alias}` : `metric ${m.name}`;
    throw new FieldStreamError('SPARKPLUG_UNKNOWN_METRIC', `${where()} names ${what}, which its birth did not declare`);
  }
  if (m.name !== undefined && m.name !== def.name) {
    throw new FieldStreamError('SPARKPLUG_UNKNOWN_METRIC', `${where()} names metric ${m.name} with alias ${m.alias}, which its birth declared for ${def.name}`);
  }
  return def;
}
