// Small, fully rendered tables (at most a few hundred rows: the security, anomaly and device lists).
// The fleet, which can hold 10,000 rows, uses virtual-table.js instead.

import { h, replaceChildren } from './dom.js';

/**
 * A table with a caption (for assistive technology), fixed headings and a body that `fill` replaces.
 * headings: column titles (strings).
 */
export function dataTable({ caption, headings, testid, className = '' }) {
  const tbody = h('tbody');
  const el = h(
    'table',
    { class: `data ${className}`, testid },
    h('caption', { class: 'visually-hidden' }, caption),
    h('thead', null, h('tr', null, headings.map((t) => h('th', { scope: 'col' }, t)))),
    tbody,
  );
  return {
    el,
    /** Replaces the rows: `rowFn(item)` returns a <tr>; with no items, one row saying `emptyText`. */
    fill(items, rowFn, emptyText) {
      if (items.length === 0) {
        replaceChildren(tbody, h('tr', { class: 'empty-row' }, h('td', { colspan: headings.length }, emptyText)));
      } else {
        const frag = document.createDocumentFragment();
        for (const item of items) frag.appendChild(rowFn(item));
        tbody.replaceChildren(frag);
      }
    },
  };
}

/** A section of a page with a heading it is labelled by. */
export function section(id, title, ...children) {
  return h('section', { class: 'card', 'aria-labelledby': `${id}-title` },
    h('h3', { id: `${id}-title` }, title), ...children);
}
