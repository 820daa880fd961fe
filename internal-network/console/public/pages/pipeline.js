// Pipeline: services ready, brokers up, the bridge, this console's own feed, throughput and the counts of what went wrong
// (PipelineView, sent every 2 s). null means the server could not tell: shown as "unknown".

import { h, setText, replaceChildren } from '../dom.js';
import { boolBadge, number, dateTime, relativeTime, value } from '../format.js';
import { dataTable, section } from '../table.js';

const METRICS = [
  ['readingsPerSecond', 'Readings per second', false],
  ['writeFailures', 'Write failures', true],
  ['deadLetters', 'Dead letters', true],
  ['feedDropped', 'Feed points dropped', true],
  // Refused by this console: no valid MAC, replayed or stale. Only the DMZ (through the bridge) or
  // someone inside can publish those: a security matter, not a fault.
  ['feedRefused', 'Feed messages refused (forged?)', true],
];

export function mountPipeline(root, { store }) {
  const services = dataTable({ caption: 'Services', headings: ['Service', 'Ready', 'Detail'], testid: 'pipeline-services' });
  const brokers = dataTable({ caption: 'Brokers', headings: ['Broker', 'Up'], testid: 'pipeline-brokers' });
  const bridge = h('p', { testid: 'pipeline-bridge' });
  // The console's own connection to the internal broker: the brokers and the bridge may all be up
  // while the console hears nothing of the fleet.
  const feed = h('p', { testid: 'pipeline-feed' });
  const metrics = h('div', { class: 'metrics' });
  const at = h('span', { class: 'muted', testid: 'pipeline-at' });

  root.append(
    h('div', { class: 'page-head' }, h('h2', { tabindex: -1 }, 'Pipeline'), at),
    metrics,
    h('div', { class: 'grid-2' },
      section('pipeline-services-section', 'Services', services.el),
      h('div', null,
        section('pipeline-brokers-section', 'Brokers', brokers.el),
        section('pipeline-bridge-section', 'Bridge', bridge),
        section('pipeline-feed-section', "This console's feed", feed))),
  );

  function render() {
    const p = store.pipeline;
    if (!p) {
      setText(at, 'Waiting for the first report…');
      return;
    }
    setText(at, `Reported ${relativeTime(p.at)} (${dateTime(p.at)})`);
    replaceChildren(metrics, METRICS.map(([key, label, countsTrouble]) => {
      const v = p[key];
      const bad = countsTrouble && typeof v === 'number' && v > 0;
      return h('div', { class: `metric${bad ? ' metric-bad' : ''}`, testid: 'pipeline-metric', data: { metric: key } },
        h('div', { class: 'metric-value' }, v === null || v === undefined ? 'unknown' : number(v)),
        h('div', { class: 'metric-label' }, label));
    }));
    services.fill(Array.isArray(p.services) ? p.services : [], (s) =>
      h('tr', { testid: 'pipeline-service-row', data: { name: String(s.name) } },
        h('th', { scope: 'row' }, value(s.name)),
        h('td', null, boolBadge(s.ready, 'ready', 'not ready')),
        h('td', null, value(s.detail))), 'No services reported.');
    brokers.fill(Array.isArray(p.brokers) ? p.brokers : [], (b) =>
      h('tr', { testid: 'pipeline-broker-row', data: { name: String(b.name) } },
        h('th', { scope: 'row' }, value(b.name)),
        h('td', null, boolBadge(b.up, 'up', 'down'))), 'No brokers reported.');
    replaceChildren(bridge, 'Internal broker to DMZ broker: ', boolBadge(p.bridgeConnected, 'connected', 'disconnected'));
    replaceChildren(feed, 'This console to the internal broker: ', boolBadge(p.feedConnected, 'connected', 'not connected', false, { testid: 'pipeline-feed-state' }),
      p.feedConnected === false && typeof p.feedDownSince === 'number' ? ` since ${dateTime(p.feedDownSince)}` : null);
  }

  const unsubscribe = store.subscribe('pipeline', render);
  render();
  return { unmount: unsubscribe };
}
