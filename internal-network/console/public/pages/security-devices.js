// Which per-device security counts the security page lists: those the live store holds of the
// devices with most events, and those read on request past them (GET /api/security/devices).
// No DOM here: the list is worked out apart from drawing it (test/unit/console-fleet-dmz.test.ts).

/** Whether [device, count] `a` goes before `b` as the console ranks them (fleet/counts.ts): the
 * larger first, equal ones by id in code-unit order. The page's next "Show more" reads the console's
 * ranking after the last row listed: in another order (a locale's), the devices of equal counts
 * the console ranks first were not all listed, and those past them were never read. */
const before = (a, b) => a[1] > b[1] || (a[1] === b[1] && a[0] < b[0]);
const order = (a, b) => (before(a, b) ? -1 : before(b, a) ? 1 : 0);

/**
 * [device, count] rows to list, in the console's order: the `top` with most of `byDevice` (the
 * store's counts: the devices with most events, and every count that changed since the snapshot),
 * or, once pages were read, every device the console ranks before the last one `read` (read from
 * the console, in its order, each page as it was then), whatever moved since. A count only grows,
 * so a device ranked before that one when it was read still is, and one that passed it changed and
 * is in the store: the rows are the console's first ones, and the next page is read after them.
 * Listed as the top and the pages read after them, one read that then moved up among the top left
 * out the device it passed, which no later page read either (it was before their cursor).
 */
export function listedDevices(byDevice, read, top) {
  const merged = new Map();
  for (const [device, n] of read) merged.set(device, Math.max(n, merged.get(device) ?? 0));
  for (const [device, n] of Object.entries(byDevice)) if (typeof n === 'number') merged.set(device, Math.max(n, merged.get(device) ?? 0));
  const sorted = [...merged].sort(order);
  if (read.length === 0) return sorted.slice(0, top);
  let last = read[0];
  for (const entry of read) if (before(last, entry)) last = entry;
  return sorted.filter((entry, i) => i < top || !before(last, entry));
}
