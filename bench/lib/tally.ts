// Readings counted device by device: what each device sent against what the database holds of it.

/** Each device's readings sent, against those stored; `lost` and `duplicated` summed over the devices. */
export interface Tally {
  /** readings sent, every device's */
  readings: number;
  stored: number;
  /** readings a device sent and the database does not hold (its shortfall), summed */
  lost: number;
  /** points the database holds beyond what their device sent (a device's excess, and every point of a device that sent none), summed */
  duplicated: number;
  /** `device stored of sent` for each device whose count is off, in the devices' order */
  off: string;
}

/**
 * Device by device, not in all: a total equal to what was sent can be one device short and another
 * over (a reading stored twice under a time of its own), and a total over what was sent would hide
 * a shortfall in the other devices. `sent`: every device that sent, with how many; `stored`: the
 * database's count per device (those with none absent).
 */
export function tally(sent: Readonly<Record<string, number>>, stored: Readonly<Record<string, number>>): Tally {
  let readings = 0;
  let held = 0;
  let lost = 0;
  let duplicated = 0;
  const off: string[] = [];
  for (const device of new Set([...Object.keys(sent), ...Object.keys(stored)])) {
    const s = sent[device] ?? 0;
    const d = stored[device] ?? 0;
    readings += s;
    held += d;
    lost += Math.max(0, s - d);
    duplicated += Math.max(0, d - s);
    if (s !== d) off.push(`${device} ${d.toLocaleString('en')} of ${s.toLocaleString('en')}`);
  }
  return { readings, stored: held, lost, duplicated, off: off.join('; ') };
}
