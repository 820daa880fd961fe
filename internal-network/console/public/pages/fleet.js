// Fleet: every device, searchable and sortable, live. The rows live in the store's Map; this page
// keeps a filtered, sorted array of them, rebuilt at most once per frame when something changed,
// and the virtual table draws only the rows in view.

import { h, setText, setData } from '../dom.js';
import { relativeTime, dateTime, fieldsSummary, readingSummary, number, plural, setBadge, badge } from '../format.js';
import { VirtualTable } from '../virtual-table.js';

/** Must match `.fleet-table .vrow` height in console.css. */
const ROW_HEIGHT = 34;
/** Relative times ("12 s ago") are redrawn this often even when nothing arrives. */
const TICK_MS = 5000;
/** Certificates expiring within this many days are flagged. */
const CERT_WARN_DAYS = 30;

const STATE_ORDER = { online: 0, stale: 1, offline: 2, unknown: 3 };
const STATES = ['online', 'stale', 'offline', 'unknown'];

const text = (get) => ({
  create: () => h('span'),
  update: (cell, row, now) => setText(cell.firstChild, get(row, now)),
});

/** Sort keys: each gives a number or string; null sorts last in both directions. */
const SORT_VALUES = {
  id: (r) => r.id,
  state: (r) => (Object.hasOwn(STATE_ORDER, r.state) ? STATE_ORDER[r.state] : 4),
  lastSeen: (r) => r.lastSeen,
  lastReading: (r) => r.lastReading?.time ?? null,
  backlog: (r) => r.backlog,
  certDaysLeft: (r) => r.certDaysLeft,
  revoked: (r) => (r.revoked ? 1 : 0),
  gateway: (r) => r.gateway,
};

function compareValues(a, b) {
  if (typeof a === 'number' && typeof b === 'number') return a - b;
  return String(a).localeCompare(String(b));
}

export function mountFleet(root, { store, openDevice }) {
  let sortKey = 'id';
  let sortDir = 'asc';
  let query = '';
  let version = -1;
  let dirty = true;

  const columns = [
    {
      key: 'id',
      title: 'Device',
      create: () => h('a', { class: 'device-link' }),
      update: (cell, row) => {
        const a = cell.firstChild;
        setText(a, row.id);
        const href = `#/device/${encodeURIComponent(row.id)}`;
        if (a.getAttribute('href') !== href) a.setAttribute('href', href);
      },
    },
    {
      key: 'state',
      title: 'State',
      create: () => h('span', { class: 'badge', testid: 'fleet-state' }),
      update: (cell, row) => setBadge(cell.firstChild, Object.hasOwn(STATE_ORDER, row.state) ? row.state : 'unknown'),
    },
    {
      key: 'lastSeen',
      title: 'Last seen',
      create: () => h('span'),
      update: (cell, row, now) => {
        setText(cell.firstChild, relativeTime(row.lastSeen, now));
        cell.title = dateTime(row.lastSeen);
      },
    },
    {
      key: 'lastReading',
      title: 'Last reading',
      create: () => h('span'),
      update: (cell, row) => {
        setText(cell.firstChild, fieldsSummary(row.lastReading?.fields));
        // The cell is cut to its width; the whole reading, with its time, shows on hover, with how
        // many fields the console left out of the row (past what the hover shows).
        cell.title = row.lastReading ? `${dateTime(row.lastReading.time)}: ${readingSummary(row.lastReading, 2000)}` : '';
      },
    },
    { key: 'backlog', title: 'Backlog', ...text((r) => number(r.backlog)) },
    {
      key: 'certDaysLeft',
      title: 'Cert. days left',
      create: () => h('span'),
      update: (cell, row) => {
        setText(cell.firstChild, number(row.certDaysLeft));
        const d = row.certDaysLeft;
        cell.firstChild.className = typeof d === 'number' && d <= CERT_WARN_DAYS ? (d <= 0 ? 'text-bad' : 'text-warn') : '';
      },
    },
    {
      key: 'revoked',
      title: 'Revoked',
      create: () => h('span'),
      update: (cell, row) => {
        setText(cell.firstChild, row.revoked ? 'revoked' : '');
        cell.firstChild.className = row.revoked ? 'badge badge-bad' : '';
      },
    },
    { key: 'gateway', title: 'Gateway', ...text((r) => r.gateway ?? '—') },
  ];

  const table = new VirtualTable({
    columns,
    rowHeight: ROW_HEIGHT,
    label: 'Devices',
    testid: 'fleet-table',
    rowTestid: 'fleet-row',
    className: 'fleet-table',
    rowAttrs: (el, row) => {
      setData(el, 'deviceId', row.id);
      setData(el, 'state', row.state);
    },
    onActivate: (row) => openDevice(row.id),
    onSort: (key) => {
      if (key === sortKey) sortDir = sortDir === 'asc' ? 'desc' : 'asc';
      else {
        sortKey = key;
        sortDir = 'asc';
      }
      table.setSort(sortKey, sortDir);
      dirty = true;
      refresh();
    },
  });
  table.setSort(sortKey, sortDir);

  const search = h('input', {
    id: 'fleet-search',
    type: 'search',
    testid: 'fleet-search',
    placeholder: 'part of a device id',
    autocomplete: 'off',
    spellcheck: 'false',
    on: {
      input: () => {
        query = search.value.trim().toLowerCase();
        dirty = true;
        refresh();
      },
    },
  });
  const count = h('span', { class: 'muted', testid: 'fleet-count', 'aria-live': 'polite' });
  const stateCounts = new Map(STATES.map((s) => [s, h('span', { class: 'count' })]));
  const empty = h('p', { class: 'empty', testid: 'fleet-empty', hidden: true });

  root.append(
    h('div', { class: 'page-head' },
      h('h2', { tabindex: -1 }, 'Fleet'),
      h('div', { class: 'state-counts', testid: 'fleet-state-counts' },
        STATES.map((s) => h('span', { class: 'state-count' }, badge(s), ' ', stateCounts.get(s))))),
    h('div', { class: 'toolbar' },
      h('label', { for: 'fleet-search' }, 'Search devices'), search, count),
    table.el,
    empty,
  );

  /** Rebuilds the filtered, sorted rows when the devices, the query or the order changed. */
  function refresh() {
    if (!dirty && version === store.devicesVersion) return;
    version = store.devicesVersion;
    dirty = false;
    const get = SORT_VALUES[sortKey];
    const sign = sortDir === 'asc' ? 1 : -1;
    const perState = { online: 0, stale: 0, offline: 0, unknown: 0 };
    const rows = [];
    for (const row of store.devices.values()) {
      perState[Object.hasOwn(perState, row.state) ? row.state : 'unknown']++;
      if (query === '' || row.id.toLowerCase().includes(query)) rows.push(row);
    }
    rows.sort((a, b) => {
      const va = get(a);
      const vb = get(b);
      const na = va === null || va === undefined;
      const nb = vb === null || vb === undefined;
      if (na !== nb) return na ? 1 : -1;
      const c = na ? 0 : sign * compareValues(va, vb);
      return c !== 0 ? c : a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
    });
    table.setRows(rows);
    for (const s of STATES) setText(stateCounts.get(s), perState[s]);
    const total = store.devices.size;
    setText(count, query ? `${rows.length} of ${plural(total, 'device')}` : plural(total, 'device'));
    empty.hidden = rows.length > 0;
    setText(empty, total === 0 ? 'No device has been seen yet.' : 'No device id contains that text.');
  }

  const unsubscribe = store.subscribe('devices', refresh);
  const tick = setInterval(() => table.render(), TICK_MS);
  refresh();

  return {
    unmount() {
      unsubscribe();
      clearInterval(tick);
      table.destroy();
    },
  };
}
