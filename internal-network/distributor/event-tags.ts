import { statSync } from 'node:fs';
import { join } from 'node:path';
import { LIMITS } from '../../shared/limits.ts';
import type { Logger } from '../../shared/logger.ts';
import { MEASUREMENTS, type StoredPoint } from './points.ts';
import { OVERFLOW_TAG_VALUE, TagAdmission } from './security/tag-admission.ts';
import { slotDir } from './state-lease.ts';

/** The tags of an event whose values the device chooses, each bounded by a TagAdmission. */
export const EVENT_DEVICE_TAGS = ['event_type', 'severity'] as const;
export type EventDeviceTag = (typeof EVENT_DEVICE_TAGS)[number];

export type EventTagAdmissions = Record<EventDeviceTag, Pick<TagAdmission, 'admits'>>;

/** The field that holds a device's own value of `tag` when the point is stored under {@link OVERFLOW_TAG_VALUE}. */
export function overflowField(tag: EventDeviceTag): `${EventDeviceTag}_value` {
  return `${tag}_value`;
}

/**
 * The admissions of a distributor's state slot `dir` (its bounds, and the files it remembers the
 * values in). `readOnly`: the files are read, never written (TagAdmissionOptions.readOnly).
 */
export function openEventTagAdmissions(dir: string, log: Logger, opts: { readOnly?: boolean } = {}): Record<EventDeviceTag, TagAdmission> {
  const readOnly = opts.readOnly === true;
  return {
    event_type: new TagAdmission({ tag: 'event_type', perDevice: LIMITS.eventTypesPerDevice, total: LIMITS.eventTypesTotal, file: join(dir, 'event-types.jsonl'), readOnly }, log),
    severity: new TagAdmission({ tag: 'severity', perDevice: LIMITS.severitiesPerDevice, total: LIMITS.severitiesTotal, file: join(dir, 'event-severities.jsonl'), readOnly }, log),
  };
}

/**
 * The values the distributors keeping their state in `stateDir` (DISTRIBUTOR_STATE_DIR, every slot:
 * state-lease.ts) have admitted, read-only, for `fieldstream-admin dead-letters replay`: a value is
 * admitted when one slot holds it for the device, as a distributor started now on that slot would
 * (within the TTL and the bounds). Nothing new is admitted: the replay is not the distributor, and
 * may run beside it. Taking the slot's lease would stop a running distributor (the lease fences it),
 * and admitting values of its own, unrecorded, would let each replay run add series past the bounds
 * the distributor counts; appending to the distributor's file beside it would lose lines at its
 * compaction. So a value no distributor admitted is stored under {@link OVERFLOW_TAG_VALUE}, its own
 * value in its field, as the distributor stores one past the bound: nothing lost, only its grouping.
 */
export function admittedEventTags(stateDir: string, log: Logger): EventTagAdmissions {
  const slots: Array<Record<EventDeviceTag, TagAdmission>> = [];
  for (let slot = 1; slot <= LIMITS.distributorMaxInstances; slot++) {
    const dir = slotDir(stateDir, slot);
    if (statSync(dir, { throwIfNoEntry: false })?.isDirectory() === true) slots.push(openEventTagAdmissions(dir, log, { readOnly: true }));
  }
  const admission = (tag: EventDeviceTag) => ({ admits: (device: string, value: string) => slots.some((s) => s[tag].holds(device, value)) });
  return { event_type: admission('event_type'), severity: admission('severity') };
}

/**
 * Moves each event point's `event_type` and `severity` the admission does not admit (a device past
 * its bound of values, or the fleet past its own: security/tag-admission.ts) to the tag value
 * {@link OVERFLOW_TAG_VALUE}, the device's value kept in the field `<tag>_value`: the event is
 * stored all the same, and the series InfluxDB indexes stay bounded. Set after the device's own
 * fields, so that a field of that name the device sent cannot stand in for its value. `overflowed`:
 * called once per value moved (the metric).
 */
export function boundEventTags(points: StoredPoint[], admissions: EventTagAdmissions, overflowed: (tag: EventDeviceTag) => void): void {
  for (const p of points) {
    if (p.measurement !== MEASUREMENTS.events) continue;
    const device = p.tags.device as string;
    for (const tag of EVENT_DEVICE_TAGS) {
      const value = p.tags[tag];
      if (value === undefined || admissions[tag].admits(device, value)) continue;
      p.tags = { ...p.tags, [tag]: OVERFLOW_TAG_VALUE };
      p.fields = { ...p.fields, [overflowField(tag)]: value };
      overflowed(tag);
    }
  }
}
