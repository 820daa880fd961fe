// Security: the latest security events (newest first) and counts per reason and per device, as the
// server's summary has them; redrawn at most once per frame when a `security` event arrives.
// The distributor's own findings and the gateways' reports (the DMZ's word) are listed apart: a
// flood of reports, forged or not, cannot push a finding out of view.

import { getSecurityDevices } from '../api.js';
import { h, setText, routeLink } from '../dom.js';
import { dateTime, timeOfDay, value, number, plural } from '../format.js';
import { dataTable, section } from '../table.js';
import { listedDevices } from './security-devices.js';

/** Devices listed in the per-device counts (the ones with most events), kept live; the console's
 * stream names its 100 with most (CONSOLE.liveSecurityTopDevices), which keeps these right. */
const TOP_DEVICES = 50;
/** Devices more listed at each "Show more", read from GET /api/security/devices (as they are then). */
const MORE_DEVICES = 100;

/** What each reason means, for the reader (the codes are documented in docs/errors.md). */
const REASONS = new Map([
  ['SECURITY_BAD_SIGNATURE', 'bad signature'],
  ['SECURITY_REPLAY', 'replay'],
  ['SECURITY_STALE', 'stale message'],
  ['SECURITY_UNSIGNED', 'unsigned'],
  ['SECURITY_REVOKED', 'revoked device'],
  ['SECURITY_UNKNOWN_DEVICE', 'unknown device'],
  ['SECURITY_DUPLICATE', 'duplicate'],
  ['GATEWAY_RATE_LIMITED', 'rate limited'],
  ['GATEWAY_CERTIFICATE_REVOKED', 'revoked certificate'],
  ['GATEWAY_DEVICE_MISMATCH', "claimed another device's id"],
  ['GATEWAY_TOKEN_INVALID', 'wrong device token'],
  ['GATEWAY_TOKEN_REVOKED', 'revoked device token'],
  ['GATEWAY_TOKEN_EXPIRED', 'expired device token'],
]);
/** A gateway reports its refusals counted, and in its own name (the DMZ's word): both are shown. */
const reportText = (e) => {
  const parts = [];
  if (typeof e.count === 'number' && e.count > 1) parts.push(`×${number(e.count)}`);
  if (e.source === 'gateway') parts.push('reported by the gateway');
  return parts.length > 0 ? h('span', { class: 'muted', testid: 'security-report' }, ` ${parts.join(', ')}`) : null;
};
const reasonText = (reason) => (REASONS.has(reason) ? h('span', { class: 'muted' }, ` (${REASONS.get(reason)})`) : null);

/** Says under a list how many of `total` events (null: not known) it does not show, `shown` being listed. */
function notShown(note, total, shown) {
  const n = typeof total === 'number' && total > shown ? total - shown : 0;
  note.hidden = n === 0;
  setText(note, n === 0 ? '' : `${number(n)} older events not shown.`);
}

const sortedCounts = (counts) =>
  Object.entries(counts)
    .filter(([, n]) => typeof n === 'number')
    .sort(([ka, a], [kb, b]) => b - a || ka.localeCompare(kb));

export function mountSecurity(root, { store }) {
  const events = dataTable({ caption: 'Security events found by the distributor, newest first', headings: ['Time', 'Device', 'Reason'], testid: 'security-events' });
  const reports = dataTable({ caption: 'Refusals reported by the gateways, newest first', headings: ['Time', 'Device', 'Reason'], testid: 'security-reports' });
  const byReason = dataTable({ caption: 'Events per reason', headings: ['Reason', 'Events'], testid: 'security-by-reason' });
  const byDevice = dataTable({ caption: 'Events per device', headings: ['Device', 'Events'], testid: 'security-by-device' });
  const total = h('span', { class: 'muted', testid: 'security-total' });
  // How many events of each list are not shown: the page holds the newest 200 of each source, the
  // console keeps 1,000 (CONSOLE.fleetRing) and counts every one.
  const recentMore = h('p', { class: 'muted', testid: 'security-recent-omitted', hidden: true });
  const reportedMore = h('p', { class: 'muted', testid: 'security-reported-omitted', hidden: true });
  // The devices past the TOP_DEVICES with most: how many ("and K more"), and read on request.
  const moreText = h('span', { testid: 'security-devices-more' });
  const moreButton = h('button', { type: 'button', testid: 'security-devices-more-button', on: { click: () => void showMore() } }, 'Show more');
  const more = h('p', { class: 'muted' }, moreText, ' ', moreButton);
  /** [device, count] read from the console past the live ones, in its order */
  let extra = [];
  /** the last [device, count] listed: the next "Show more" reads the devices the console ranks after it */
  let lastListed;

  root.append(
    h('div', { class: 'page-head' }, h('h2', { tabindex: -1 }, 'Security'), total),
    h('div', { class: 'grid-main-side' },
      h('div', null,
        section('security-recent', 'Found by the distributor', events.el, recentMore),
        section('security-reported', 'Reported by the gateways (the DMZ\'s word)', reports.el, reportedMore)),
      h('div', null,
        section('security-reasons', 'Per reason', byReason.el),
        section('security-devices', 'Per device', byDevice.el, more))),
  );

  const eventRow = (e) =>
    h('tr', { testid: 'security-row', data: { device: String(e.device), reason: String(e.reason), source: e.source === 'gateway' ? 'gateway' : 'distributor' } },
      h('td', null, h('time', { title: dateTime(e.time) }, timeOfDay(e.time))),
      h('td', null, typeof e.device === 'string' ? routeLink(['device', e.device], e.device) : value(e.device)),
      h('td', null, h('span', { class: 'mono' }, value(e.reason)), reasonText(e.reason), reportText(e)));

  function render() {
    const s = store.security;
    const recent = s.recent.filter((e) => e && typeof e === 'object');
    const reported = s.reported.filter((e) => e && typeof e === 'object');
    events.fill(recent, eventRow, 'No security events.');
    reports.fill(reported, eventRow, 'No gateway reports.');
    notShown(recentMore, s.recentTotal, recent.length);
    notShown(reportedMore, s.reportedTotal, reported.length);
    const reasons = sortedCounts(s.byReason);
    byReason.fill(reasons, ([reason, n]) =>
      h('tr', { testid: 'security-reason-row', data: { reason } },
        h('td', null, h('span', { class: 'mono' }, reason), reasonText(reason)),
        h('td', { class: 'num' }, number(n))),
      'None.');
    // The store holds the counts of the devices with most events and of those that changed since
    // (not every device's: the console sends those a page at a time), and how many have any.
    const rows = listedDevices(s.byDevice, extra, TOP_DEVICES);
    lastListed = rows.at(-1);
    byDevice.fill(rows, ([device, n]) =>
      h('tr', { testid: 'security-device-row', data: { device } }, h('td', null, routeLink(['device', device], device)), h('td', { class: 'num' }, number(n))),
      'None.');
    const devices = Math.max(s.devices, rows.length);
    setText(moreText, devices > rows.length ? `and ${number(devices - rows.length)} more` : '');
    more.hidden = devices <= rows.length;
    const sum = reasons.reduce((a, [, n]) => a + n, 0);
    setText(total, `${plural(sum, 'event')}, ${plural(devices, 'device')}`);
  }

  /** The next devices, as the console ranks them now, after the last one listed: read after it (a
   * keyset cursor, not an offset), counts that changed meanwhile neither list one again nor skip one. */
  async function showMore() {
    moreButton.disabled = true;
    try {
      const page = await getSecurityDevices(lastListed, MORE_DEVICES);
      const have = new Set(extra.map(([device]) => device));
      for (const d of Array.isArray(page?.devices) ? page.devices : []) {
        if (d && typeof d.device === 'string' && typeof d.count === 'number' && !have.has(d.device)) extra.push([d.device, d.count]);
      }
      render();
    } catch {
      // Shown as it was: the button may be pressed again.
    } finally {
      moreButton.disabled = false;
    }
  }

  const unsubscribe = store.subscribe('security', render);
  render();
  return { unmount: unsubscribe };
}
