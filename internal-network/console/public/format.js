// Formatting of the values the server sends. Every function accepts anything (the data came from
// devices) and returns a string; the caller puts it in a text node.

import { h } from './dom.js';

const isNum = (v) => typeof v === 'number' && Number.isFinite(v);

/** "12 s ago", "3 min ago", "in 5 s" (a clock ahead of ours); "never" for null. */
export function relativeTime(ms, now = Date.now()) {
  if (!isNum(ms)) return 'never';
  const d = Math.round((now - ms) / 1000);
  const abs = Math.abs(d);
  let text;
  if (abs < 5) return 'just now';
  if (abs < 60) text = `${abs} s`;
  else if (abs < 3600) text = `${Math.floor(abs / 60)} min`;
  else if (abs < 86400) text = `${Math.floor(abs / 3600)} h`;
  else text = `${Math.floor(abs / 86400)} d`;
  return d >= 0 ? `${text} ago` : `in ${text}`;
}

/** Local date and time to the second, e.g. "2026-11-30 12:43:27". */
export function dateTime(ms) {
  if (!isNum(ms)) return '—';
  const d = new Date(ms);
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** Time of day only, for live tables where the date is today. */
export function timeOfDay(ms) {
  const s = dateTime(ms);
  return s.length > 11 ? s.slice(11) : s;
}

/** A number with at most 4 significant decimals; integers as they are. */
export function number(v) {
  if (!isNum(v)) return v === null || v === undefined ? '—' : String(v);
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  return a >= 1000 ? v.toFixed(1) : a >= 1 ? String(Number(v.toFixed(3))) : String(Number(v.toPrecision(4)));
}

/** A count and its noun, the noun in the plural but for one: "1 device", "0 devices", "2 devices". */
export function plural(n, word) {
  return `${number(n)} ${word}${n === 1 ? '' : 's'}`;
}

/** An anomaly score: two decimals are enough to compare. */
export function score(v) {
  return typeof v === 'number' && Number.isFinite(v) ? v.toFixed(2) : value(v);
}

/** Any value a device sent, as text (objects as JSON, shortened). */
export function value(v, max = 200) {
  if (isNum(v)) return number(v);
  if (typeof v === 'string') return shorten(v, max);
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (v === null || v === undefined) return '—';
  return json(v, max);
}

/** JSON text of a value, shortened to `max` characters. */
export function json(v, max = 200) {
  let s;
  try {
    s = JSON.stringify(v);
  } catch {
    s = String(v);
  }
  return shorten(s ?? '', max);
}

/**
 * Unicode's format characters (\p{Cf}) but the joiners ZWNJ and ZWJ, which scripts and emoji need:
 * bidi overrides, embeddings and isolates, direction marks, the zero-width space, the byte order
 * mark, the soft hyphen, tag characters. They show nothing themselves; a bidi control reorders what
 * follows it ("report<U+202E>fdp.exe" on screen as "reportexe.pdf"), the others make a text look
 * like another. A device chooses every value, event and command result the pages show.
 */
const INVISIBLE = /(?![\u200c\u200d])\p{Cf}/gu;

/** `s` with each invisible format character as the text `\uXXXX` (`\u{XXXXX}` past U+FFFF): seen, never obeyed,
 * as the management API writes them for a terminal (shared/terminal-text.ts). */
export function visible(s) {
  return s.replace(INVISIBLE, (c) => {
    const cp = c.codePointAt(0);
    return cp > 0xffff ? `\\u{${cp.toString(16)}}` : `\\u${cp.toString(16).padStart(4, '0')}`;
  });
}

/** `s` cut to `max` characters (an ellipsis for the rest), its invisible characters made visible. */
export function shorten(s, max) {
  return visible(s.length > max ? s.slice(0, max - 1) + '…' : s);
}

/** "temperature 21.5 · humidity 40" for a reading's fields. */
export function fieldsSummary(fields, max = 120) {
  if (!fields || typeof fields !== 'object') return '—';
  const parts = Object.entries(fields).map(([k, v]) => `${k} ${value(v, 40)}`);
  return parts.length ? shorten(parts.join(' · '), max) : '—';
}

/** A reading as fieldsSummary writes it, then how many fields the console left out of it (a live
 * row's `lastReading.omitted`: those past what the fleet page shows), so that what is shown is never
 * taken for the whole. */
export function readingSummary(reading, max = 120) {
  if (!reading || typeof reading !== 'object') return '—';
  const text = fieldsSummary(reading.fields, max);
  const omitted = typeof reading.omitted === 'number' && reading.omitted > 0 ? reading.omitted : 0;
  return omitted > 0 ? `${text} (${number(omitted)} more fields not shown)` : text;
}

/** Bytes with a binary unit. */
export function bytes(v) {
  if (!isNum(v)) return value(v);
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let n = v;
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

/** Seconds as "3 d 4 h", "5 min 2 s". */
export function duration(seconds) {
  if (!isNum(seconds)) return value(seconds);
  let s = Math.round(seconds);
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const hh = Math.floor(s / 3600);
  s -= hh * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  if (d) return `${d} d ${hh} h`;
  if (hh) return `${hh} h ${m} min`;
  if (m) return `${m} min ${s} s`;
  return `${s} s`;
}

/** The states the badges know; anything else shows as "unknown" (never as a class name from data). */
const STATE_CLASSES = new Set([
  'online', 'stale', 'offline', 'unknown',
  'queued', 'sent', 'accepted', 'completed', 'failed', 'rejected', 'expired',
  'ok', 'bad', 'warn',
]);

/** A badge: text for everyone, colour for those who see it, `data-state` for tests. */
export function badge(state, text = state, props = {}) {
  const known = STATE_CLASSES.has(state) ? state : 'unknown';
  return h('span', { ...props, class: `badge badge-${known}`, data: { state: String(state) } }, String(text));
}

/** Makes an existing badge element show `state` (for reused rows). */
export function setBadge(el, state, text = state) {
  const known = STATE_CLASSES.has(state) ? state : 'unknown';
  const cls = `badge badge-${known}`;
  if (el.className !== cls) el.className = cls;
  if (el.textContent !== String(text)) el.textContent = String(text);
  if (el.getAttribute('data-state') !== String(state)) el.setAttribute('data-state', String(state));
}

/** A badge for a yes/no/unknown value (true is good unless `trueIsBad`). */
export function boolBadge(v, yes, no, trueIsBad = false, props = {}) {
  if (v === true) return badge(trueIsBad ? 'bad' : 'ok', yes, props);
  if (v === false) return badge(trueIsBad ? 'ok' : 'bad', no, props);
  return badge('unknown', 'unknown', props);
}
