// Device: its state, latest values, health, charts, commands, events, security events and
// anomalies. The first answer comes from GET /api/devices/:id; after that the live feed follows this
// device (/api/live?device=ID) and each `device` event replaces what is shown. That event is bounded
// (docs/console.md): a long reading comes cut (`latest.cut`), and the page reads the whole from
// GET /api/devices/:id when asked ("Show the whole reading").

import { h, replaceChildren, setText, setData, routeLink } from '../dom.js';
import { getDevice } from '../api.js';
import { badge, setBadge, relativeTime, dateTime, value, json, number, score, bytes, duration, visible } from '../format.js';
import { dataTable, section } from '../table.js';
import { DeviceCharts, WINDOWS } from '../charts.js';
import { commandForm } from '../command-form.js';

/** How the health fields (measurement device_health) are shown: a label and a formatter. A Map:
 * field names come from devices, and a plain object would answer "constructor" too. */
const HEALTH = new Map([
  ['uptime_s', ['Uptime', duration]],
  ['queue_messages', ['Queued messages', number]],
  ['queue_bytes', ['Queued bytes', bytes]],
  ['awaiting_receipt', ['Awaiting receipt', number]],
  ['oldest_unsent_age_s', ['Oldest unsent', duration]],
  ['free_disk_bytes', ['Free disk', bytes]],
  ['cert_days_left', ['Certificate days left', number]],
  ['clock_offset_ms', ['Clock offset (ms)', number]],
  ['version', ['Version', value]],
  ['interval_s', ['Health interval', duration]],
]);

const time = (ms) => h('time', { title: dateTime(ms) }, dateTime(ms));

/** The lists the console may leave items out of (`omitted` of GET /api/devices/:id and of the live
 * `device` event), and what their items are called in the note that says how many. */
const OMITTED_LISTS = [
  ['commands', 'commands'],
  ['events', 'events'],
  ['security', 'security events'],
  ['anomalies', 'anomalies'],
  ['numericFields', 'numeric fields (not charted)'],
];

export function mountDevice(root, { store, id, canCommand, user }) {
  const stateBadge = badge('unknown', 'unknown', { testid: 'device-state' });
  const facts = h('dl', { class: 'facts', testid: 'device-facts' });
  const unknown = h('p', { class: 'notice', testid: 'device-unknown', hidden: true });
  const latestTime = h('p', { class: 'muted', testid: 'latest-time' });
  const latestCutText = h('span');
  const wholeButton = h('button', { type: 'button', testid: 'latest-whole-button', on: { click: () => void readWhole() } }, 'Show the whole reading');
  const latestCut = h('p', { class: 'muted', testid: 'latest-cut', hidden: true }, latestCutText, ' ', wholeButton);
  const latest = dataTable({ caption: 'Latest values', headings: ['Field', 'Value'], testid: 'latest-values' });
  const healthTime = h('p', { class: 'muted', testid: 'health-time' });
  // A heartbeat comes cut in the live `device` event as the latest reading does (`health.cut`):
  // said, so a value ending in "…" or a measure missing is not taken for what the device sent.
  const healthCut = h('p', { class: 'muted', testid: 'health-cut', hidden: true });
  const health = dataTable({ caption: 'Health', headings: ['Measure', 'Value'], testid: 'device-health' });
  const commands = dataTable({
    caption: 'Commands',
    headings: ['Issued', 'Command', 'Parameters', 'State', 'Attempts', 'Response', 'Updated'],
    testid: 'command-list',
  });
  const events = dataTable({ caption: 'Events', headings: ['Time', 'Type', 'Event'], testid: 'device-events' });
  const security = dataTable({ caption: 'Security events', headings: ['Time', 'Reason'], testid: 'device-security' });
  const anomalies = dataTable({ caption: 'Anomalies', headings: ['Time', 'Field', 'Detector', 'Score', 'Value'], testid: 'device-anomalies' });
  // How many items of each list the console left out (`omitted`: its answer's and its live event's
  // bounds, docs/console.md): said under the list, never taken for all there is.
  const omittedNotes = new Map(OMITTED_LISTS.map(([name]) => [name, h('p', { class: 'muted', testid: `${name}-omitted`, hidden: true })]));
  const omittedNote = (name) => omittedNotes.get(name);

  const chartBox = h('div', { class: 'charts', testid: 'charts' });
  const charts = new DeviceCharts(id, chartBox);
  const windowSelect = h(
    'select',
    { id: 'chart-window', testid: 'chart-window', on: { change: () => charts.setWindow(Number(windowSelect.value)) } },
    WINDOWS.map((w) => h('option', { value: String(w.ms) }, w.label)),
  );

  /** Records of commands sent from this page, shown until the device's own list carries them. */
  const sent = new Map();
  /** The device's commands as last read: shown, said to be as they were, while the console cannot
   * read them (`commandsUnread`), rather than none. */
  let lastCommands = [];
  const commandsUnread = h('p', { class: 'notice', role: 'status', testid: 'commands-unread', hidden: true });
  let detail = null;
  /** The whole latest reading, read from GET /api/devices/:id: shown while it is the latest. */
  let whole = null;

  async function readWhole() {
    wholeButton.disabled = true;
    try {
      const d = await getDevice(id);
      if (d && d.latest && typeof d.latest === 'object') whole = d.latest;
      if (detail) render(detail);
    } catch (err) {
      setText(latestCutText, `The whole reading could not be read: ${err.message}`);
    } finally {
      wholeButton.disabled = false;
    }
  }

  root.append(
    h('div', { class: 'page-head' },
      h('h2', { tabindex: -1 }, h('span', { class: 'muted' }, 'Device '), h('span', { testid: 'device-id' }, visible(id)), ' ', stateBadge),
      routeLink(['fleet'], '← Fleet', { class: 'back-link' })),
    unknown,
    facts,
    h('div', { class: 'grid-2' },
      section('latest', 'Latest values', latestTime, latestCut, latest.el),
      section('health', 'Health', healthTime, healthCut, health.el)),
    section('charts-section', 'Charts',
      h('div', { class: 'toolbar' }, h('label', { for: 'chart-window' }, 'Window'), windowSelect),
      chartBox, omittedNote('numericFields')),
    section('commands', 'Commands',
      canCommand
        ? commandForm(id, user, (record) => {
            sent.set(record.commandId, record);
            renderCommands();
          })
        : h('p', { class: 'muted', testid: 'command-readonly' }, 'Your role can see commands but not send them.'),
      commandsUnread, commands.el, omittedNote('commands')),
    h('div', { class: 'grid-2' },
      section('events', 'Events', events.el, omittedNote('events')),
      section('security-events', 'Security events', security.el, omittedNote('security'))),
    section('anomalies-section', 'Anomalies', anomalies.el, omittedNote('anomalies')),
  );

  function renderFacts(row) {
    const fact = (term, ...desc) => h('div', { class: 'fact' }, h('dt', null, term), h('dd', null, ...desc));
    replaceChildren(
      facts,
      fact('State since', row.since ? relativeTime(row.since) : '—'),
      fact('Last seen', h('span', { title: dateTime(row.lastSeen) }, relativeTime(row.lastSeen))),
      fact('Gateway', row.gateway ?? '—'),
      fact('Backlog', number(row.backlog)),
      fact('Certificate days left', number(row.certDaysLeft)),
      fact('Revoked', row.revoked ? badge('bad', 'revoked', { testid: 'device-revoked' }) : h('span', { testid: 'device-revoked', data: { state: 'no' } }, 'no')),
    );
  }

  function renderCommands() {
    const unread = typeof detail?.commandsUnread === 'string' ? detail.commandsUnread : null;
    if (!unread) lastCommands = Array.isArray(detail?.commands) ? detail.commands.filter((c) => c && typeof c.commandId === 'string') : [];
    commandsUnread.hidden = !unread;
    setText(commandsUnread, unread
      ? `The commands could not be read (${unread}): ${lastCommands.length > 0 ? 'those shown are as last read' : 'there may be some'}.`
      : '');
    const list = lastCommands;
    const byId = new Map(list.map((c) => [c.commandId, c]));
    for (const [cid, rec] of sent) {
      const known = byId.get(cid);
      if (!known) byId.set(cid, rec);
      else if ((rec.updatedAt ?? 0) > (known.updatedAt ?? 0)) byId.set(cid, rec);
      else sent.delete(cid);
    }
    const rows = [...byId.values()].sort((a, b) => (b.issuedAt ?? 0) - (a.issuedAt ?? 0));
    commands.fill(rows, (c) => {
      const response = c.response && typeof c.response === 'object'
        ? `${value(c.response.status)}${c.response.result !== undefined ? ': ' + shown(c, c.response.result) : c.response.resultNotKept === true ? ' (result not kept)' : ''}`
        : '—';
      // The command API said `expired` first, and the device's answer came after (docs/commands.md):
      // said, since an operator may have acted on `expired` meanwhile.
      const late = c.state !== 'expired' && typeof c.expiredAt === 'number'
        ? h('span', { class: 'muted', testid: 'command-late' }, ' (answered after it expired, ', time(c.expiredAt), ')')
        : null;
      return h('tr', { testid: 'command-row', data: { commandId: c.commandId, state: String(c.state) } },
        h('td', null, time(c.issuedAt)),
        h('td', { class: 'mono' }, value(c.command)),
        h('td', { class: 'mono' }, c.params === undefined ? '—' : shown(c, c.params)),
        h('td', null, badge(String(c.state), String(c.state), { testid: 'command-state' }), late),
        h('td', { class: 'num' }, number(c.attempts)),
        h('td', { class: 'mono' }, response),
        h('td', null, relativeTime(c.updatedAt)));
    }, unread ? 'The commands could not be read.' : 'No commands for this device.');
  }

  function render(d) {
    detail = d;
    unknown.hidden = true;
    const row = d.row ?? {};
    setBadge(stateBadge, ['online', 'stale', 'offline'].includes(row.state) ? row.state : 'unknown');
    renderFacts(row);

    const reading = wholeOf(d.latest, whole) ? whole : d.latest;
    const fields = reading && typeof reading.fields === 'object' && reading.fields ? Object.entries(reading.fields) : [];
    const cut = Boolean(reading && reading.cut);
    latestCut.hidden = !cut;
    if (cut) setText(latestCutText, cutText(reading));
    fields.sort(([a], [b]) => a.localeCompare(b));
    setText(latestTime, d.latest ? `Reading of ${dateTime(d.latest.time)} (${relativeTime(d.latest.time)})` : 'No reading yet.');
    latest.fill(fields, ([k, v]) => h('tr', null, h('th', { scope: 'row' }, k), h('td', { testid: 'latest-value', data: { field: k } }, wholeValue(v))), 'No values.');

    const hf = d.health && typeof d.health.fields === 'object' && d.health.fields ? Object.entries(d.health.fields) : [];
    hf.sort(([a], [b]) => (HEALTH.has(a) ? 0 : 1) - (HEALTH.has(b) ? 0 : 1) || a.localeCompare(b));
    setText(healthTime, d.health ? `Heartbeat of ${dateTime(d.health.time)} (${relativeTime(d.health.time)})` : 'No heartbeat yet.');
    const healthIsCut = Boolean(d.health && d.health.cut === true);
    healthCut.hidden = !healthIsCut;
    setText(healthCut, healthIsCut ? cutText(d.health) : '');
    health.fill(hf, ([k, v]) => {
      const known = HEALTH.get(k);
      const label = known ? known[0] : k.startsWith('local_') ? `Local: ${k.slice(6)}` : k;
      return h('tr', null, h('th', { scope: 'row' }, label), h('td', { testid: 'health-value', data: { field: k } }, known ? known[1](v) : wholeValue(v)));
    }, 'No health values.');

    if (Array.isArray(d.numericFields)) charts.setFields(d.numericFields);
    if (reading) charts.addReading(reading.time, reading.fields);

    renderCommands();
    // What the device called the event (its type, its severity when it gave one), then its fields.
    events.fill(Array.isArray(d.events) ? d.events.filter((e) => e && typeof e === 'object') : [], (e) =>
      h('tr', { testid: 'device-event-row' },
        h('td', null, time(e.time)),
        h('td', null,
          h('span', { class: 'mono', testid: 'device-event-type' }, e.type === undefined ? '—' : value(e.type, 64)),
          e.severity === undefined ? null : [' ', h('span', { class: 'muted', testid: 'device-event-severity' }, value(e.severity, 32))]),
        h('td', { class: 'mono' }, eventText(e.fields))), 'No events.');
    // The distributor's findings and the gateways' reports together, newest first, each marked.
    security.fill(Array.isArray(d.security) ? d.security.filter((e) => e && typeof e === 'object') : [], (e) =>
      h('tr', { testid: 'device-security-row', data: { reason: String(e.reason), source: e.source === 'gateway' ? 'gateway' : 'distributor' } },
        h('td', null, time(e.time)),
        h('td', null, h('span', { class: 'mono' }, value(e.reason)), securityNote(e))), 'No security events.');
    anomalies.fill(Array.isArray(d.anomalies) ? d.anomalies : [], (a) =>
      h('tr', { testid: 'device-anomaly-row' },
        h('td', null, time(a.time)),
        h('td', null, a.field === '*' ? 'several fields' : value(a.field)),
        h('td', null, value(a.detector)),
        h('td', { class: 'num' }, score(a.score)),
        h('td', { class: 'num' }, a.value === undefined ? '—' : number(a.value))), 'No anomalies.');
    const omitted = d.omitted && typeof d.omitted === 'object' ? d.omitted : {};
    const totals = d.totals && typeof d.totals === 'object' ? d.totals : {};
    for (const [name, what] of OMITTED_LISTS) {
      // Left out of what the console sent (`omitted`), or no longer kept by it: of a list it counts
      // (`totals`, since it started), every one not listed; else those it says it left out.
      const left = Object.hasOwn(omitted, name) && typeof omitted[name] === 'number' && omitted[name] > 0 ? omitted[name] : 0;
      const shown = Array.isArray(d[name]) ? d[name].length : 0;
      const n = Object.hasOwn(totals, name) && typeof totals[name] === 'number' ? Math.max(left, totals[name] - shown) : left;
      const note = omittedNotes.get(name);
      note.hidden = n === 0;
      setText(note, n === 0 ? '' : `${number(n)} more ${what} not shown.`);
      setData(note, 'omitted', String(n));
    }
  }

  const fromStore = () => (store.detail && store.detail.row && store.detail.row.id === id ? store.detail : null);
  const unsubscribe = store.subscribe('detail', () => {
    const d = fromStore();
    if (d) render(d);
  });
  const tick = setInterval(() => {
    if (detail) renderFacts(detail.row ?? {});
  }, 5000);

  if (fromStore()) render(fromStore());
  getDevice(id).then(
    (d) => {
      if (d && d.latest && typeof d.latest === 'object') whole = d.latest;
      if (!fromStore() && d && d.row) render(d);
      else if (detail) render(detail);
    },
    (err) => {
      if (detail) return;
      unknown.hidden = false;
      setText(unknown, err.status === 404 ? 'No device with this id is known (yet). This page updates if it appears.' : `The device could not be read: ${err.message}`);
      setData(unknown, 'code', err.code);
    },
  );

  return {
    unmount() {
      unsubscribe();
      clearInterval(tick);
      charts.destroy();
    },
  };
}

/**
 * Whether `whole` (read from GET /api/devices/:id) is the reading the live feed sent cut: of its
 * time, each value kept equal or the start of the whole one (a cut value ends in "…"), and as many
 * fields. A reading of the same time replaces the latest (a device's clock may give two readings
 * one time): the whole of the one before it is not shown for it. One not cut is shown as it came.
 */
function wholeOf(latest, whole) {
  if (!latest || latest.cut !== true || !whole || whole.time !== latest.time) return false;
  const kept = latest.fields && typeof latest.fields === 'object' ? Object.entries(latest.fields) : [];
  const all = whole.fields && typeof whole.fields === 'object' ? whole.fields : {};
  const omitted = typeof latest.omitted === 'number' ? latest.omitted : 0;
  if (Object.keys(all).length !== kept.length + omitted) return false;
  return kept.every(([k, v]) => {
    if (!Object.hasOwn(all, k)) return false;
    const w = all[k];
    if (v === w) return true;
    return typeof v === 'string' && typeof w === 'string' && v.endsWith('…') && w.startsWith(v.slice(0, -1));
  });
}

/** What the live feed cut of a reading or heartbeat sent cut (`cut`): its long values, and how many fields it left out. */
function cutText(r) {
  const omitted = typeof r.omitted === 'number' && r.omitted > 0 ? `, ${number(r.omitted)} fields left out` : '';
  return `Long values cut${omitted}.`;
}

/**
 * A value of the latest reading or heartbeat as it came, in a box of its own that wraps and scrolls:
 * what the live feed cut it says it cut (`cut`), and the whole reading ("Show the whole reading")
 * is shown whole. Cut again here to 200 characters, a long value ended in "…" with nothing saying
 * so, after the page had said the reading was whole. A string holds at most LIMITS.stringMaxChars.
 */
const wholeValue = (v) => (typeof v === 'string' ? h('div', { class: 'value-text' }, value(v, Number.POSITIVE_INFINITY)) : value(v));

/** A command's parameters or result: of a command the live feed cut (`cut`), the JSON text it sent, already cut. */
const shown = (c, v) => (c.cut === true && typeof v === 'string' ? visible(v) : json(v, 120));

/** A gateway's report is its word, and counts several refusals: both said beside the reason. */
function securityNote(e) {
  const parts = [];
  if (typeof e.count === 'number' && e.count > 1) parts.push(`×${number(e.count)}`);
  if (e.source === 'gateway') parts.push('reported by the gateway');
  return parts.length > 0 ? h('span', { class: 'muted', testid: 'device-security-report' }, ` ${parts.join(', ')}`) : null;
}

/** An event's fields as "name: value" pairs. */
function eventText(fields) {
  if (!fields || typeof fields !== 'object') return value(fields);
  return Object.entries(fields).map(([k, v]) => `${k}: ${value(v, 120)}`).join(', ') || '—';
}
