// DOM helpers. Everything the console shows comes from devices it does not trust (ids, field names,
// values, reasons, command parameters), so data only ever becomes text nodes: there is no innerHTML
// anywhere, and the CSP (script-src 'self', no inline style) backs this up.

/** Attributes that would turn data into code or inline style; `h` refuses them. */
const FORBIDDEN = /^(on|style$|srcdoc$|innerhtml$|outerhtml$)/i;
/** Set as DOM properties, not attributes, so they reflect the live state of a form control. */
const PROPERTIES = new Set(['value', 'checked', 'disabled', 'selected', 'hidden']);

/**
 * Creates an element. `props`: `class`, `testid` (data-testid), `data` (data-* attributes), `on`
 * (event listeners), the form properties above, and any other attribute by name. Children: nodes,
 * strings and numbers (as text nodes), arrays of them; null, undefined and false are skipped.
 */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  if (props) {
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === 'class') el.className = String(value);
      else if (key === 'testid') el.setAttribute('data-testid', String(value));
      else if (key === 'data') for (const [k, v] of Object.entries(value)) setData(el, k, v);
      else if (key === 'on') for (const [type, fn] of Object.entries(value)) el.addEventListener(type, fn);
      else if (PROPERTIES.has(key)) el[key] = value;
      else if (FORBIDDEN.test(key)) throw new Error(`h(): attribute ${key} is not allowed`);
      else el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

/** Appends children as `h` does. */
export function append(parent, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(parent, child);
    else if (child instanceof Node) parent.appendChild(child);
    else parent.appendChild(document.createTextNode(String(child)));
  }
  return parent;
}

/** Replaces every child of `parent` with `children`. */
export function replaceChildren(parent, ...children) {
  parent.replaceChildren();
  return append(parent, children);
}

/** Sets an element's text, touching the DOM only when it changed (virtual rows are reused often). */
export function setText(el, text) {
  const s = String(text);
  if (el.textContent !== s) el.textContent = s;
}

/** Sets a data-* attribute (camelCase or dashed name); null removes it. */
export function setData(el, name, value) {
  const attr = 'data-' + name.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase());
  if (value === null || value === undefined) el.removeAttribute(attr);
  else if (el.getAttribute(attr) !== String(value)) el.setAttribute(attr, String(value));
}

/** A fragment link inside the console (hash routes only, so data can never choose a scheme). */
export function routeLink(path, text, props = {}) {
  return h('a', { ...props, href: '#/' + path.map((p) => encodeURIComponent(p)).join('/') }, text);
}
