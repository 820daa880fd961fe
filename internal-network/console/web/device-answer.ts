import { CONSOLE } from '../../../shared/limits.ts';
import type { DeviceDetail } from './live.ts';

/** The lists of a device's detail, each bounded in the answer of GET /api/devices/:id. */
export const DEVICE_LISTS = ['events', 'security', 'anomalies', 'commands', 'numericFields'] as const;
export type DeviceListName = (typeof DEVICE_LISTS)[number];

/** A device's detail as GET /api/devices/:id answers it: `omitted`, how many items of each list were
 * left out (only the lists that left some out; absent when none did). */
export type DeviceAnswer = DeviceDetail & { omitted?: Partial<Record<DeviceListName, number>> };

/**
 * The answer of GET /api/devices/:id: the device's latest reading and health whole (the page's
 * "Show the whole reading"), and each list within CONSOLE.deviceAnswerListMaxBytes of JSON, its
 * items kept in their order (newest first) while the list fits, those past it left out and counted.
 * Whole items only: an item cut would show as the device never sent it. Everything held for the
 * device was tens of megabytes (50 events of up to a megabyte each, 50 commands of hundreds of KB).
 */
export function deviceAnswer(detail: DeviceDetail): DeviceAnswer {
  const answer: DeviceAnswer = { ...detail };
  const omitted: Partial<Record<DeviceListName, number>> = {};
  for (const name of DEVICE_LISTS) {
    const list: readonly unknown[] = detail[name];
    let bytes = 2; // the brackets
    let kept = 0;
    for (const item of list) {
      // Its JSON, and the comma before it after the first.
      const size = Buffer.byteLength(JSON.stringify(item) ?? 'null') + (kept > 0 ? 1 : 0);
      if (bytes + size > CONSOLE.deviceAnswerListMaxBytes) break;
      bytes += size;
      kept++;
    }
    if (kept === list.length) continue;
    (answer as Record<DeviceListName, unknown[]>)[name] = list.slice(0, kept);
    omitted[name] = list.length - kept;
  }
  if (Object.keys(omitted).length > 0) answer.omitted = omitted;
  return answer;
}
