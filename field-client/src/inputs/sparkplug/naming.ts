import { createHash } from 'node:crypto';
import type { Definitions } from './definitions.ts';
import { fieldName } from './mapping.ts';

// How one declared metric is named, alone: its field name by the documented mapping (mapping.ts),
// whether that mapping lost nothing, and its suffixed name. Which of several metrics sharing a name
// keeps it is names.ts (FieldNames).

/** The edge node (and device) a birth is of: shared by all its definitions. */
export interface Unit {
  group: string;
  edge: string;
  device: string | undefined;
}

/** How a declared metric is named (set by nameDefinitions at its birth). */
export interface Naming {
  unit: Unit;
  /** the field name of the documented mapping (mapping.ts fieldName); undefined: too long, skipped */
  plain: string | undefined;
  /**
   * The mapping lost nothing: the group, edge node and device ids and each folder of the metric name
   * hold only letters, digits, `_` and `-` (no `.`, nothing replaced by `_`), and the group starts
   * with a letter or `_` (no `_` put in front). Two such metrics can come out with the same field
   * name only as an edge node's metric `D/M` and its device `D`'s metric `M`.
   */
  exact: boolean;
  /** the plain name with the suffix of this metric (suffixOf), computed when first needed */
  suffixed?: string | undefined;
  /**
   * The field its values went to when its session was saved before a restart (store.ts; null:
   * skipped): a message of that session sent again after the restart goes to the same field.
   */
  saved?: string | null | undefined;
  /** With `saved`: the field from the message after seq `until` on (a rename while values under `saved` were unsaved: store-write.ts namer). */
  later?: { field: string | null; until: number } | undefined;
}

/**
 * bytes. What naming a definition adds in memory beside its field name (two bytes a character): the
 * Naming object and its entry in FieldNames (a Map entry and an array), from above. Counted into
 * Definitions.bytes, so LIMITS.sparkplugDefinitionsMaxBytes bounds it with the definitions.
 */
const NAMING_BYTES = 160;

/**
 * bytes. What a device born takes in memory whatever its birth declares, beside its id (two bytes a
 * character): its entry in its session's devices and in the host's names by edge node (Map
 * entries), and its Definitions object with its two Maps. From above: Node 20's heap grew by about
 * 500 bytes per device born with no metric and a short id (measured). Counted into Definitions.bytes,
 * so that LIMITS.sparkplugDefinitionsMaxBytes bounds devices too: uncounted, a DBIRTH declaring
 * nothing counted nothing, and 10,000 edge nodes of 1,000 such devices each (the count bounds) held
 * about 5 GB.
 */
const DEVICE_BYTES = 512;

/** A suffixed name's end (suffixOf): `-` and 8 hex digits. */
export const SUFFIXED = /-[0-9a-f]{8}$/;
export const SUFFIX_LENGTH = 9;

const EXACT_GROUP = /^[A-Za-z_][A-Za-z0-9_-]*$/;
const EXACT_ID = /^[A-Za-z0-9_-]+$/;
const EXACT_FOLDER = /^[A-Za-z0-9_-]*$/;

/**
 * Names every definition of a birth (its field name, whether exact) and counts what that takes into
 * `defs.bytes`, and for a DBIRTH what its device takes (DEVICE_BYTES).
 */
export function nameDefinitions(defs: Definitions, unit: Unit): void {
  if (unit.device !== undefined) defs.bytes += DEVICE_BYTES + 2 * unit.device.length;
  const prefixExact = EXACT_GROUP.test(unit.group) && EXACT_ID.test(unit.edge) && (unit.device === undefined || EXACT_ID.test(unit.device));
  const byName = new Map<string, Naming>();
  for (const def of defs.byName.values()) {
    const plain = fieldName(unit.group, unit.edge, unit.device, def.name);
    const naming: Naming = { unit, plain, exact: prefixExact && def.name.split('/').every((f) => EXACT_FOLDER.test(f)) };
    byName.set(def.name, naming);
    def.naming = naming;
    defs.bytes += NAMING_BYTES + 2 * (plain?.length ?? 0);
  }
  // A name declared twice (two aliases): the same metric, named once.
  for (const def of defs.byAlias.values()) def.naming ??= byName.get(def.name);
}

/**
 * The suffix a metric's field name gets when another metric has the same one: `-` and the first 8
 * hex digits of the SHA-256 of the JSON `[group, edge node, device or null, metric name]`. A
 * function of the metric alone, so the same at every birth, after every restart, on every client.
 */
export function suffixOf(group: string, edge: string, device: string | undefined, metric: string): string {
  return `-${createHash('sha256').update(JSON.stringify([group, edge, device ?? null, metric])).digest('hex').slice(0, 8)}`;
}
