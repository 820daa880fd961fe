import { MEASUREMENTS, type StoredPoint } from './points.ts';
import { OVERFLOW_TAG_VALUE, type TagAdmission } from './security/tag-admission.ts';

/** The tags of an event whose values the device chooses, each bounded by a TagAdmission. */
export const EVENT_DEVICE_TAGS = ['event_type', 'severity'] as const;
export type EventDeviceTag = (typeof EVENT_DEVICE_TAGS)[number];

export type EventTagAdmissions = Record<EventDeviceTag, Pick<TagAdmission, 'admits'>>;

/** The field that holds a device's own value of `tag` when the point is stored under {@link OVERFLOW_TAG_VALUE}. */
export function overflowField(tag: EventDeviceTag): `${EventDeviceTag}_value` {
  return `${tag}_value`;
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
