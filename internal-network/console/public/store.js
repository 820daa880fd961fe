// What the live feed has told us, in memory. Updates are applied at once (a Map for the devices, so
// an update of 10,000 rows is 10,000 map writes, no DOM work), and the pages that listen are told
// at most once per animation frame, whatever the number of events in between.

/** Most anomalies kept for the anomalies page (newest first). */
const MAX_ANOMALIES = 500;
/** Most security events kept of each source (the server's snapshot sends 200 of each). */
const MAX_SECURITY = 200;

/** A copy of counts without a prototype (a device may be called `__proto__`), numbers only. */
function counts(from, into = Object.create(null)) {
  if (from && typeof from === 'object') for (const [k, n] of Object.entries(from)) if (typeof n === 'number') into[k] = n;
  return into;
}

export const TOPICS = ['devices', 'security', 'pipeline', 'anomalies', 'detail'];

export class Store {
  constructor() {
    /** @type {Map<string, object>} device id → DeviceRow */
    this.devices = new Map();
    /** Incremented on every device change, so a page can tell whether its sorted copy is stale. */
    this.devicesVersion = 0;
    // recent: the distributor's own findings; reported: the gateways' reports (the DMZ's word),
    // kept apart so a flood of reports cannot push the findings out here either.
    // devices: how many devices have events (the console's snapshot names those with most only).
    // recentTotal, reportedTotal: events of each source since the console started (null: a console
    // of an earlier version, which does not say), of which the lists hold the newest only.
    this.security = { recent: [], reported: [], byReason: Object.create(null), byDevice: Object.create(null), devices: 0, recentTotal: null, reportedTotal: null };
    this.pipeline = null;
    this.anomalies = [];
    /** Anomalies the fleet's list has had since the console started (null: a console of an earlier
     * version, which does not say), of which `anomalies` holds the newest only. */
    this.anomaliesTotal = null;
    /** DeviceDetail of the followed device, or null. */
    this.detail = null;
    this.listeners = new Map(TOPICS.map((t) => [t, new Set()]));
    this.pending = new Set();
    this.frame = 0;
  }

  /** Calls `fn(store)` after changes of `topic`, once per frame at most; returns the unsubscriber. */
  subscribe(topic, fn) {
    const set = this.listeners.get(topic);
    set.add(fn);
    return () => set.delete(fn);
  }

  changed(topic) {
    this.pending.add(topic);
    if (!this.frame) this.frame = requestAnimationFrame(() => this.flush());
  }

  flush() {
    this.frame = 0;
    const topics = [...this.pending];
    this.pending.clear();
    for (const t of topics) for (const fn of [...this.listeners.get(t)]) fn(this);
  }

  /** Applies one live event (names and shapes: the contract's GET /api/live). */
  apply(name, data) {
    if (!data || typeof data !== 'object') return;
    switch (name) {
      case 'snapshot':
        this.devices.clear();
        this.putRows(data.devices);
        this.setSecurity(data.security);
        this.setPipeline(data.pipeline);
        this.anomalies = [];
        this.anomaliesTotal = typeof data.anomaliesTotal === 'number' ? data.anomaliesTotal : null;
        this.addAnomalies(data.anomalies);
        this.changed('anomalies');
        break;
      case 'devices':
        this.putRows(data.rows);
        break;
      case 'security':
        this.addSecurity(data);
        break;
      case 'pipeline':
        this.setPipeline(data);
        break;
      case 'anomalies':
        if (typeof data.total === 'number') {
          this.anomaliesTotal = data.total;
          this.changed('anomalies');
        }
        this.addAnomalies(data.anomalies);
        break;
      case 'device':
        this.setDetail(data);
        break;
    }
  }

  putRows(rows) {
    if (!Array.isArray(rows)) return;
    for (const row of rows) {
      if (!row || typeof row.id !== 'string') continue;
      this.devices.set(row.id, row);
    }
    this.devicesVersion++;
    this.changed('devices');
    // The followed device's row is part of its detail too.
    if (this.detail && this.detail.row && this.devices.has(this.detail.row.id)) {
      const row = this.devices.get(this.detail.row.id);
      if (row !== this.detail.row) {
        this.detail = { ...this.detail, row };
        this.changed('detail');
      }
    }
  }

  /**
   * The picture (a snapshot). Of a console that sends its newest events in `security` events after
   * the snapshot's end, `recent` and `reported` are empty here and those events fill them; of the
   * per-device counts it sends those of the devices with most events, and `devices`, how many have
   * any (a console of an earlier version sent every count, and no `devices`).
   */
  setSecurity(summary) {
    if (!summary || typeof summary !== 'object') return;
    const byDevice = counts(summary.byDevice);
    this.security = {
      recent: Array.isArray(summary.recent) ? summary.recent : [],
      reported: Array.isArray(summary.reported) ? summary.reported : [],
      byReason: counts(summary.byReason),
      byDevice,
      devices: typeof summary.devices === 'number' ? summary.devices : Object.keys(byDevice).length,
      recentTotal: typeof summary.recentTotal === 'number' ? summary.recentTotal : null,
      reportedTotal: typeof summary.reportedTotal === 'number' ? summary.reportedTotal : null,
    };
    this.changed('security');
  }

  /**
   * What changed since the last look (a `security` event): the new events, newest first, each to
   * the list of its source, and the counts that changed, each its new total, set over ours.
   */
  addSecurity(update) {
    const fresh = Array.isArray(update.events) ? update.events.filter((e) => e && typeof e === 'object') : [];
    const s = this.security;
    const own = fresh.filter((e) => e.source !== 'gateway');
    const reported = fresh.filter((e) => e.source === 'gateway');
    if (own.length > 0) s.recent = own.concat(s.recent).slice(0, MAX_SECURITY);
    if (reported.length > 0) s.reported = reported.concat(s.reported).slice(0, MAX_SECURITY);
    counts(update.byReason, s.byReason);
    // The devices counted for the first time are devices more with events; a console that says how
    // many (in the last event of an update it sent as several) is taken at its word.
    const changed = counts(update.byDevice);
    for (const id of Object.keys(changed)) if (!(id in s.byDevice)) s.devices++;
    counts(changed, s.byDevice);
    if (typeof update.devices === 'number') s.devices = update.devices;
    if (typeof update.recentTotal === 'number') s.recentTotal = update.recentTotal;
    if (typeof update.reportedTotal === 'number') s.reportedTotal = update.reportedTotal;
    this.changed('security');
  }

  setPipeline(p) {
    if (!p || typeof p !== 'object') return;
    this.pipeline = p;
    this.changed('pipeline');
  }

  addAnomalies(list) {
    if (!Array.isArray(list) || list.length === 0) return;
    const fresh = list.filter((a) => a && typeof a === 'object').sort((a, b) => (b.time ?? 0) - (a.time ?? 0));
    this.anomalies = fresh.concat(this.anomalies).slice(0, MAX_ANOMALIES);
    this.changed('anomalies');
  }

  setDetail(detail) {
    if (!detail || typeof detail !== 'object' || !detail.row || typeof detail.row.id !== 'string') return;
    this.detail = detail;
    this.devices.set(detail.row.id, detail.row);
    this.devicesVersion++;
    this.changed('detail');
    this.changed('devices');
  }
}
