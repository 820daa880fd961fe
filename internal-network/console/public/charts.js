// One uPlot chart per numeric field of a device over a chosen window: the history from
// GET /api/devices/:id/history, then the live readings appended as they arrive.
// uPlot is loaded by index.html as a classic script (window.uPlot); it sets text with textContent
// and styles through element.style, both allowed by the CSP.

import { h, setText } from './dom.js';
import { getHistory } from './api.js';
import { number, dateTime } from './format.js';

export const WINDOWS = [
  { label: '15 min', ms: 15 * 60_000 },
  { label: '1 h', ms: 3_600_000 },
  { label: '6 h', ms: 6 * 3_600_000 },
  { label: '24 h', ms: 24 * 3_600_000 },
];

const HEIGHT = 180;
/** Live points kept per chart beyond what the server sent (the server downsamples to ≤ 2000). */
const MAX_POINTS = 4000;

/**
 * History reads a device page runs at once, the rest waiting their turn: the console serves a few
 * at once for everyone (CONSOLE.historyMaxConcurrent) and takes a few more from one user
 * (CONSOLE.historyMaxPerUser); a device of dozens of fields must not ask for all at once (over
 * HTTP/2 the browser would send them all).
 */
const LOADS_AT_ONCE = 2;
/** A read the console was too busy for (CONSOLE_HISTORY_BUSY: other users' reads) is tried again, this many times, waiting longer each time. */
const BUSY_TRIES = 5;
const BUSY_WAIT_MS = 1000;

/**
 * Milliseconds a live reading may be dated past this browser's clock and still be charted: the
 * console's CONSOLE.deviceClockMaxLeadMs (shared/limits.ts; test/unit/console-fleet.test.ts checks
 * they agree). A chart's windows end at this clock (its history is read up to it); a reading dated
 * further ahead (a device clock that jumped) lies past every one of them.
 */
export const CLOCK_MAX_LEAD_MS = 5 * 60_000;

const isPoint = (p) => Array.isArray(p) && p.length >= 2 && Number.isFinite(p[0]) && Number.isFinite(p[1]);

const STROKE = '#1f5fbf';
/** Diameter (CSS pixels) of the mark drawn for a reading with no visible line. */
const LONE_POINT_SIZE = 7;
/** CSS pixels: a run of points spanning less than this, across and up, draws no line one can see. */
const LINE_MIN_PX = 2;

/**
 * uPlot's points filter: a mark for each run of points in view that draws no visible line (a single
 * reading; or a reading seen twice, as the mean of its history bucket and live, a fraction of a
 * pixel apart; or readings between gaps). The series draws no points otherwise (a line of hundreds
 * of dots would hide its shape), and one point, or a line shorter than a pixel, showed nothing at
 * all. One mark per run (at its first point); none for a run that draws a line.
 */
export function lonePoints(u, seriesIdx) {
  const xs = u.data[0];
  const ys = u.data[seriesIdx];
  const yScale = u.series[seriesIdx].scale ?? 'y';
  const [i0, i1] = u.series[0].idxs ?? [0, xs.length - 1];
  const lone = [];
  let first = -1;
  let x0 = 0;
  let x1 = 0;
  let y0 = 0;
  let y1 = 0;
  const endRun = () => {
    if (first >= 0 && x1 - x0 < LINE_MIN_PX && y1 - y0 < LINE_MIN_PX) lone.push(first);
    first = -1;
  };
  for (let i = i0; i <= i1; i++) {
    if (ys[i] == null) {
      endRun();
      continue;
    }
    const x = u.valToPos(xs[i], 'x');
    const y = u.valToPos(ys[i], yScale);
    if (first < 0) {
      first = i;
      x0 = x1 = x;
      y0 = y1 = y;
    } else {
      x0 = Math.min(x0, x);
      x1 = Math.max(x1, x);
      y0 = Math.min(y0, y);
      y1 = Math.max(y1, y);
    }
  }
  endRun();
  return lone.length > 0 ? lone : null;
}

export class DeviceCharts {
  /** @param {string} deviceId @param {HTMLElement} container */
  constructor(deviceId, container) {
    this.deviceId = deviceId;
    this.container = container;
    this.windowMs = WINDOWS[0].ms;
    this.charts = new Map();
    /** the history reads waiting for their turn, and how many run */
    this.toLoad = [];
    this.loading = 0;
    this.generation = 0;
    this.lastTime = -Infinity;
    this.resize = new ResizeObserver(() => this.fit());
    this.resize.observe(container);
  }

  /** Adds a chart for each field not charted yet, in the given order, and loads its history. */
  setFields(fields) {
    for (const field of fields) {
      if (typeof field !== 'string' || this.charts.has(field)) continue;
      const chart = this.makeChart(field);
      this.charts.set(field, chart);
      this.container.appendChild(chart.fig);
      this.load(chart, this.generation);
    }
  }

  setWindow(ms) {
    this.windowMs = ms;
    this.generation++;
    for (const chart of this.charts.values()) this.load(chart, this.generation);
  }

  makeChart(field) {
    const plotBox = h('div', { class: 'chart-plot' });
    const status = h('p', { class: 'chart-status muted', testid: 'chart-status' }, 'Loading…');
    const fig = h('figure', { class: 'chart', testid: 'chart', data: { field } }, h('figcaption', null, field), plotBox, status);
    return { field, fig, plotBox, status, xs: [], ys: [], plot: null, from: 0, to: 0 };
  }

  /** Queues the chart's history read; LOADS_AT_ONCE of them run at a time. */
  load(chart, generation) {
    setText(chart.status, 'Loading…');
    chart.status.hidden = false;
    this.toLoad.push({ chart, generation });
    this.nextLoads();
  }

  nextLoads() {
    while (this.loading < LOADS_AT_ONCE && this.toLoad.length > 0) {
      const { chart, generation } = this.toLoad.shift();
      // Read for a window since changed, or for a page left: not asked at all.
      if (generation !== this.generation || this.charts.get(chart.field) !== chart) continue;
      this.loading++;
      this.loadNow(chart, generation).finally(() => {
        this.loading--;
        this.nextLoads();
      });
    }
  }

  async loadNow(chart, generation) {
    const to = Date.now();
    const from = to - this.windowMs;
    let answer;
    for (let attempt = 1; ; attempt++) {
      try {
        answer = await getHistory(this.deviceId, chart.field, from, to);
        break;
      } catch (err) {
        if (generation !== this.generation) return;
        if (err.code === 'CONSOLE_HISTORY_BUSY' && attempt < BUSY_TRIES) {
          await new Promise((resolve) => setTimeout(resolve, BUSY_WAIT_MS * attempt));
          if (generation !== this.generation) return;
          continue;
        }
        setText(chart.status, `History not available: ${err.message}`);
        return;
      }
    }
    if (generation !== this.generation || !this.charts.has(chart.field)) return;
    const points = Array.isArray(answer?.points) ? answer.points.filter(isPoint) : [];
    points.sort((a, b) => a[0] - b[0]);
    // Live points that arrived while the history was on its way are kept.
    const lastHistory = points.length ? points[points.length - 1][0] : -Infinity;
    const live = chart.xs.map((x, i) => [x, chart.ys[i]]).filter(([x]) => x > lastHistory && x >= from);
    const all = points.concat(live);
    chart.xs = all.map((p) => p[0]);
    chart.ys = all.map((p) => p[1]);
    chart.from = from;
    chart.to = to;
    this.draw(chart);
  }

  /** Appends a live reading (a `device` event's latest values) to the charts of its numeric fields. */
  addReading(time, fields) {
    // Not charted when dated past the clock's lead: as the newest point it moved every chart's
    // window years ahead, and held out each correct reading after it (all older) until the page was left.
    if (!Number.isFinite(time) || time > Date.now() + CLOCK_MAX_LEAD_MS || time <= this.lastTime || !fields || typeof fields !== 'object') return;
    this.lastTime = time;
    for (const [field, v] of Object.entries(fields)) {
      const chart = this.charts.get(field);
      if (!chart || typeof v !== 'number' || !Number.isFinite(v)) continue;
      if (chart.xs.length && time <= chart.xs[chart.xs.length - 1]) continue;
      chart.xs.push(time);
      chart.ys.push(v);
      chart.to = Math.max(chart.to, time);
      chart.from = chart.to - this.windowMs;
      let cut = 0;
      while (cut < chart.xs.length && chart.xs[cut] < chart.from) cut++;
      cut = Math.max(cut, chart.xs.length - MAX_POINTS);
      if (cut > 0) {
        chart.xs.splice(0, cut);
        chart.ys.splice(0, cut);
      }
      this.draw(chart);
    }
  }

  draw(chart) {
    const uPlot = window.uPlot;
    if (typeof uPlot !== 'function') {
      setText(chart.status, 'The chart library did not load.');
      chart.status.hidden = false;
      return;
    }
    chart.status.hidden = chart.xs.length > 0;
    if (chart.xs.length === 0) setText(chart.status, 'No values in this window.');
    const data = [chart.xs, chart.ys];
    if (chart.plot) {
      chart.plot.setData(data, false);
      chart.plot.setScale('x', { min: chart.from, max: chart.to });
      return;
    }
    const opts = {
      width: this.width(chart),
      height: HEIGHT,
      ms: 1,
      // Room on the right for the last time label (the x range ends exactly at "now").
      padding: [12, 28, null, null],
      legend: { show: true },
      cursor: { drag: { x: true, y: false } },
      scales: { x: { time: true, range: () => [chart.from, chart.to] } },
      axes: [{}, { size: 64, values: (u, ticks) => ticks.map((t) => number(t)) }],
      series: [
        { value: (u, v) => (v == null ? '—' : dateTime(v)) },
        {
          label: chart.field,
          stroke: STROKE,
          width: 1.5,
          points: { show: false, filter: lonePoints, size: LONE_POINT_SIZE, fill: STROKE },
          value: (u, v) => (v == null ? '—' : number(v)),
        },
      ],
    };
    chart.plot = new uPlot(opts, data, chart.plotBox);
  }

  /** The width of the chart's figure (the CSS grid decides how many charts share a row). */
  width(chart) {
    return Math.max(200, chart.plotBox.clientWidth || 600);
  }

  fit() {
    for (const chart of this.charts.values()) {
      const width = this.width(chart);
      if (chart.plot && chart.plot.width !== width) chart.plot.setSize({ width, height: HEIGHT });
    }
  }

  destroy() {
    this.generation++;
    this.resize.disconnect();
    for (const chart of this.charts.values()) chart.plot?.destroy();
    this.charts.clear();
  }
}
