// A table that renders only the rows in view (virtual scrolling): with 10,000 devices the DOM holds
// a few dozen row elements, reused as the view scrolls, and updating a row writes only the cells
// whose text changed. The header stays in view (sticky) and scrolls sideways with the rows.

import { h } from './dom.js';

/** Rows rendered above and below the view, so a quick scroll does not show blank space. */
const OVERSCAN = 8;

/**
 * columns: [{ key, title, sortable?, create(): Element (the cell's content, made once per pooled
 * row), update(cell, row, now) }]. Options: rowHeight (px; must match the CSS), label, testid,
 * rowTestid, rowAttrs(rowEl, row), onActivate(row), onSort(key), className.
 */
export class VirtualTable {
  constructor(options) {
    this.o = options;
    this.rows = [];
    this.sort = { key: null, dir: 'asc' };
    this.pool = [];
    this.frame = 0;
    this.headerCells = new Map();
    this.body = h('div', { class: 'vtable-body', role: 'rowgroup' });
    const head = h(
      'div',
      { class: 'vtable-head', role: 'rowgroup' },
      h('div', { class: 'vrow vrow-head', role: 'row', 'aria-rowindex': 1 }, options.columns.map((c) => this.headerCell(c))),
    );
    this.el = h(
      'div',
      {
        class: `vtable ${options.className ?? ''}`,
        role: 'table',
        'aria-label': options.label,
        testid: options.testid,
        tabindex: 0,
        on: { scroll: () => this.schedule() },
      },
      head,
      this.body,
    );
    this.resizeObserver = new ResizeObserver(() => this.schedule());
    this.resizeObserver.observe(this.el);
  }

  headerCell(c) {
    const content = c.sortable === false
      ? h('span', null, c.title)
      : h('button', { type: 'button', class: 'sort-button', on: { click: () => this.o.onSort?.(c.key) } }, c.title, h('span', { class: 'sort-mark', 'aria-hidden': 'true' }));
    const cell = h('div', { class: `vcell vcell-${c.key}`, role: 'columnheader', data: { column: c.key } }, content);
    this.headerCells.set(c.key, cell);
    return cell;
  }

  /** Shows which column sorts the rows (aria-sort for assistive technology, an arrow for the eye). */
  setSort(key, dir) {
    this.sort = { key, dir };
    for (const [k, cell] of this.headerCells) {
      if (k === key) cell.setAttribute('aria-sort', dir === 'asc' ? 'ascending' : 'descending');
      else cell.removeAttribute('aria-sort');
      const mark = cell.querySelector('.sort-mark');
      if (mark) mark.textContent = k === key ? (dir === 'asc' ? ' ▲' : ' ▼') : '';
    }
  }

  setRows(rows) {
    this.rows = rows;
    this.el.setAttribute('aria-rowcount', String(rows.length + 1));
    this.body.style.height = `${rows.length * this.o.rowHeight}px`;
    this.schedule();
  }

  /** Renders on the next frame (scrolls and updates in between cost nothing). */
  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.render();
    });
  }

  /** Renders the rows in view now; also called every few seconds for relative times. */
  render() {
    const rh = this.o.rowHeight;
    const headHeight = this.body.offsetTop;
    const top = Math.max(0, this.el.scrollTop - headHeight);
    const viewHeight = this.el.clientHeight || 600;
    const first = Math.max(0, Math.floor(top / rh) - OVERSCAN);
    const last = Math.min(this.rows.length, Math.ceil((top + viewHeight) / rh) + OVERSCAN);
    const needed = Math.max(0, last - first);
    while (this.pool.length < needed) this.pool.push(this.makeRow());
    const now = Date.now();
    for (let i = 0; i < this.pool.length; i++) {
      const r = this.pool[i];
      const index = first + i;
      if (i >= needed) {
        if (r.el.parentNode) r.el.remove();
        r.data = null;
        continue;
      }
      const data = this.rows[index];
      if (!r.el.parentNode) this.body.appendChild(r.el);
      if (r.index !== index) {
        r.el.style.transform = `translateY(${index * rh}px)`;
        r.el.setAttribute('aria-rowindex', String(index + 2));
        r.index = index;
      }
      r.data = data;
      this.o.rowAttrs?.(r.el, data);
      this.o.columns.forEach((c, j) => c.update(r.cells[j], data, now));
    }
  }

  makeRow() {
    const cells = this.o.columns.map((c) => h('div', { class: `vcell vcell-${c.key}`, role: 'cell' }, c.create()));
    const el = h('div', { class: 'vrow', role: 'row', testid: this.o.rowTestid }, cells);
    el.style.height = `${this.o.rowHeight}px`;
    const r = { el, cells, data: null, index: -1 };
    el.addEventListener('click', (ev) => {
      // A link inside the row navigates by itself.
      if (r.data && !(ev.target instanceof Element && ev.target.closest('a'))) this.o.onActivate?.(r.data);
    });
    return r;
  }

  /** The cell content element made by the column's create(), for update() to fill. */
  static content(cell) {
    return cell.firstElementChild ?? cell;
  }

  destroy() {
    cancelAnimationFrame(this.frame);
    this.resizeObserver.disconnect();
  }
}
