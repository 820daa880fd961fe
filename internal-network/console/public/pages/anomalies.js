// Anomalies: the latest ones, newest first, each linked to its device.

import { h, setText, routeLink } from '../dom.js';
import { dateTime, value, number, score } from '../format.js';
import { dataTable } from '../table.js';

export function mountAnomalies(root, { store }) {
  const table = dataTable({
    caption: 'Anomalies, newest first',
    headings: ['Time', 'Device', 'Field', 'Detector', 'Kind', 'Score', 'Value'],
    testid: 'anomalies-table',
  });
  const count = h('span', { class: 'muted', testid: 'anomalies-count' });
  root.append(
    h('div', { class: 'page-head' }, h('h2', { tabindex: -1 }, 'Anomalies'), count),
    h('p', { class: 'muted' }, 'Field "several fields" means the fields of a reading together (the multivariate detector).'),
    h('div', { class: 'card' }, table.el),
  );

  function render() {
    const list = store.anomalies;
    // The page holds the newest 500; the console says how many there were in all.
    const total = store.anomaliesTotal;
    const older = typeof total === 'number' && total > list.length ? total - list.length : 0;
    setText(count, `${list.length} shown (the latest)${older > 0 ? `, ${number(older)} older not shown` : ''}`);
    table.fill(list, (a) =>
      h('tr', { testid: 'anomaly-row', data: { device: String(a.device), field: String(a.field), detector: String(a.detector), kind: String(a.kind) } },
        h('td', null, h('time', null, dateTime(a.time))),
        h('td', null, typeof a.device === 'string' ? routeLink(['device', a.device], a.device, { testid: 'anomaly-device-link' }) : value(a.device)),
        h('td', null, a.field === '*' ? 'several fields' : value(a.field)),
        h('td', null, value(a.detector)),
        // What it looks like (spike, stuck, drift, correlation): a hint for reading the score, not a verdict.
        h('td', { testid: 'anomaly-kind' }, value(a.kind)),
        h('td', { class: 'num' }, score(a.score)),
        h('td', { class: 'num' }, a.value === undefined ? '—' : number(a.value))),
      'No anomalies yet.');
  }

  const unsubscribe = store.subscribe('anomalies', render);
  render();
  return { unmount: unsubscribe };
}
