import { isFieldStreamError } from '../../../shared/errors.ts';
import { CONSOLE } from '../../../shared/limits.ts';
import type { Logger } from '../../../shared/logger.ts';
import type { StoredPoint } from '../../distributor/points.ts';
import type { PresenceReader } from '../history/presences.ts';
import type { Fleet } from './fleet.ts';

/**
 * At the console's start, the devices' and gateways' last presences read back from the store it
 * reads history from, applied as if they had come in the feed: the stored feed is not retained, and a
 * gateway publishes a device's presence when it connects and then once a day
 * (TIMINGS.presenceRefreshMs), so a restarted console showed a connected device sending data as
 * online through no gateway for up to a day.
 *
 * Only presences within CONSOLE.lastPresenceWindowMs: a device still connected had a reminder since.
 * Of the devices, those with a row (the registry's: the store reads theirs first, within
 * CONSOLE.lastPresenceMaxPairs) and at most CONSOLE.lastPresenceMaxUnregistered
 * others (kept as pending presences, in case verified data gives them a row). Applied in time order,
 * a device's presence before a gateway's status of the same time, so a gateway gone or restarted
 * after a device's presence takes it offline as it did when they came. The feed runs meanwhile: what
 * it brings is newer than what was read, and wins, as the fleet keeps a device's newest presence (an
 * older one changes nothing) and a gateway's status takes offline only devices whose presence is no
 * newer than it.
 *
 * A store that cannot be read is logged (CONSOLE_PRESENCES_NOT_LOADED) and the console goes on: the
 * states then come from the feed, as before. Never throws.
 *
 * Read again, from `since` (a little before the cut), each time the console's connection to the
 * broker is back after one was cut: its subscription is not durable, so what the feed brought
 * meanwhile (a device gone offline) never came (console.ts).
 */
export async function loadLastPresences(fleet: Fleet, reader: PresenceReader, log: Logger, now = Date.now(), since = now - CONSOLE.lastPresenceWindowMs): Promise<void> {
  let read;
  try {
    // The devices with a row read first: ids a DMZ invented, however many, cannot push them out.
    read = await reader.lastPresences(since, new Set(fleet.ids()));
  } catch (err) {
    log.warn(
      { code: 'CONSOLE_PRESENCES_NOT_LOADED', cause: isFieldStreamError(err) ? err.code : undefined, err: (err as Error).message },
      "the devices' last presences could not be read from the store: their states and gateways come from the feed",
    );
    return;
  }
  const others = new Set<string>();
  const devices = read.devices.filter((p) => {
    const id = p.tags.device;
    if (id === undefined) return false;
    if (fleet.versionOf(id) > 0 || others.has(id)) return true; // 0: no row
    if (others.size >= CONSOLE.lastPresenceMaxUnregistered) return false;
    others.add(id);
    return true;
  });
  const points: StoredPoint[] = [...devices, ...read.gateways];
  // Stable: of one time, the device's presence first (the order above), then the gateway's status.
  points.sort((a, b) => a.time - b.time);
  for (const p of points) fleet.apply(p);
  log.info({ devices: devices.length, gateways: read.gateways.length, unregistered: others.size }, "the devices' last presences read from the store");
}
