// The command form of the device page (operators and admins only; the server refuses a viewer
// anyway). What it sends is checked here first, by the same rules as the command API's schema, so
// a typo is explained at once instead of coming back as a 400.

import { h, setText } from './dom.js';
import { sendCommand } from './api.js';

/** shared/contract/downlink.ts CommandNameSchema. */
const COMMAND_NAME = /^[A-Za-z0-9._-]{1,64}$/;
/** CONSOLE.bodyMaxBytes: the largest request body the console server takes. */
const BODY_MAX_BYTES = 16 * 1024;
/** LIMITS.commandMaxTtlS (30 days). */
const TTL_MAX_S = 30 * 86400;

/**
 * Checks the form's values; returns { body } to send, or { errors: { field: message } }.
 */
export function validateCommand(name, paramsText, ttlText) {
  const errors = {};
  const body = {};
  const command = name.trim();
  if (!COMMAND_NAME.test(command)) errors.command = 'A command name is 1 to 64 letters, digits, ".", "_" or "-".';
  else body.command = command;
  if (paramsText.trim() !== '') {
    let params;
    try {
      params = JSON.parse(paramsText);
    } catch (e) {
      errors.params = `Parameters are not valid JSON: ${e.message}`;
    }
    if (!('params' in errors)) {
      if (params === null || typeof params !== 'object' || Array.isArray(params)) errors.params = 'Parameters must be a JSON object, e.g. {"seconds": 10}.';
      else body.params = params;
    }
  }
  if (ttlText.trim() !== '') {
    const ttl = Number(ttlText);
    if (!Number.isInteger(ttl) || ttl < 1 || ttl > TTL_MAX_S) errors.ttl = `The time to live is a whole number of seconds from 1 to ${TTL_MAX_S}.`;
    else body.ttlSeconds = ttl;
  }
  if (!errors.params && body.params !== undefined && new TextEncoder().encode(JSON.stringify(body)).length > BODY_MAX_BYTES) {
    errors.params = `The command is larger than ${BODY_MAX_BYTES / 1024} KiB as JSON.`;
  }
  return Object.keys(errors).length ? { errors } : { body };
}

/** A new Idempotency-Key: 128 random bits in hex (crypto.randomUUID needs HTTPS, which the console may not have). */
function newKey() {
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * The command waiting to be confirmed, kept in the tab's sessionStorage (per device) so that it
 * outlives a reload of the page: kept in the page's memory only, the key was lost at the reload an
 * operator does after a network error, and the same command sent again from the reloaded page went
 * under a new key, a second command. The tab's own storage, not localStorage: another tab sending
 * the same command means another command. Storage refused (a browser that disables it) leaves the
 * key in memory, as before.
 */
const pendingStore = {
  // Per user as well as per device: the command API keeps an Idempotency-Key per caller, so the
  // same key sent by another user logged in at this tab after a logout is another command. Offered
  // to them, the command was said not to be sent twice, and was. Only its sender is offered it.
  name: (user, deviceId) => `fieldstream.command-pending:${JSON.stringify([user, deviceId])}`,
  read(user, deviceId) {
    try {
      const v = JSON.parse(sessionStorage.getItem(this.name(user, deviceId)) ?? 'null');
      // Read as any stored text: only the shape written below is taken.
      if (!v || typeof v.text !== 'string' || typeof v.key !== 'string' || !/^[0-9a-f]{32}$/.test(v.key)) return null;
      const f = v.fields;
      if (!f || typeof f.name !== 'string' || typeof f.params !== 'string' || typeof f.ttl !== 'string') return null;
      return { text: v.text, key: v.key, fields: { name: f.name, params: f.params, ttl: f.ttl } };
    } catch {
      return null;
    }
  },
  write(user, deviceId, pending) {
    try {
      if (pending) sessionStorage.setItem(this.name(user, deviceId), JSON.stringify(pending));
      else sessionStorage.removeItem(this.name(user, deviceId));
    } catch {
      // kept in memory only
    }
  },
};

/** Whether a failed send may have been taken all the same: no answer, or the console's 5xx (the
 * command API's answer lost or failed: CONSOLE_COMMAND_API_FAILED). A 4xx refused it: nothing was sent. */
const unsure = (err) => err.status === 0 || err.status >= 500;

/** The form of `user` (the logged-in user's name); `onSent(record)` is called with the command API's record of a command it accepted. */
export function commandForm(deviceId, user, onSent) {
  // The command waiting to be confirmed (its JSON) and the Idempotency-Key it went with. Sent again
  // unchanged (the button pressed again after an answer that never came), it carries the same key,
  // and the command API answers with the command it took, if it took one: never a second command.
  // A confirmed command, or another one, gets a new key. Kept in the tab's storage until then
  // (pendingStore): a reload offers it again, with its key.
  let pending = pendingStore.read(user, deviceId);
  const setPending = (p) => {
    pending = p;
    pendingStore.write(user, deviceId, p);
  };
  const field = (id, label, control, hint) => {
    const error = h('p', { id: `${id}-error`, class: 'field-error', testid: `${id}-error`, hidden: true });
    control.id = id;
    control.setAttribute('aria-describedby', [hint ? `${id}-hint` : null, `${id}-error`].filter(Boolean).join(' '));
    return {
      control,
      error,
      el: h('div', { class: 'field' }, h('label', { for: id }, label), control, hint ? h('p', { id: `${id}-hint`, class: 'hint' }, hint) : null, error),
    };
  };
  const name = field('command-name', 'Command', h('input', { type: 'text', testid: 'command-name', required: true, autocomplete: 'off', spellcheck: 'false', maxlength: 64 }));
  const params = field('command-params', 'Parameters (JSON object, optional)', h('textarea', { testid: 'command-params', rows: 3, spellcheck: 'false', placeholder: '{"seconds": 10}' }));
  // Text, not type=number: a number input reports "" for "abc", which would pass as no value.
  const ttl = field('command-ttl', 'Time to live, seconds (optional)', h('input', { type: 'text', testid: 'command-ttl', inputmode: 'numeric', autocomplete: 'off' }), 'How long the command waits for a device that is offline.');
  const submit = h('button', { type: 'submit', testid: 'command-submit', class: 'primary' }, 'Send command');
  const status = h('p', { class: 'form-status', role: 'status', testid: 'command-status' });
  const failure = h('p', { class: 'form-error', role: 'alert', testid: 'command-error', hidden: true });

  const showErrors = (errors) => {
    for (const [key, f] of [['command', name], ['params', params], ['ttl', ttl]]) {
      const msg = errors[key];
      f.error.hidden = !msg;
      setText(f.error, msg ?? '');
      if (msg) f.control.setAttribute('aria-invalid', 'true');
      else f.control.removeAttribute('aria-invalid');
    }
  };

  const form = h(
    'form',
    {
      class: 'command-form',
      testid: 'command-form',
      method: 'post',
      novalidate: true,
      'aria-label': 'Send a command',
      on: {
        submit: async (ev) => {
          ev.preventDefault();
          failure.hidden = true;
          setText(status, '');
          const checked = validateCommand(name.control.value, params.control.value, ttl.control.value);
          showErrors(checked.errors ?? {});
          if (checked.errors) {
            const first = ['command', 'params', 'ttl'].find((k) => checked.errors[k]);
            ({ command: name, params, ttl })[first].control.focus();
            return;
          }
          submit.disabled = true;
          setText(status, 'Sending…');
          const text = JSON.stringify(checked.body);
          // Stored before it is sent: a reload while it is on its way keeps its key too.
          if (!pending || pending.text !== text) setPending({ text, key: newKey(), fields: { name: name.control.value, params: params.control.value, ttl: ttl.control.value } });
          try {
            const record = await sendCommand(deviceId, checked.body, pending.key);
            setPending(null);
            setText(status, `Sent: ${checked.body.command} (${record?.commandId ?? 'no id'}), ${record?.state ?? 'queued'}.`);
            params.control.value = '';
            if (record && typeof record.commandId === 'string') onSent(record);
          } catch (err) {
            setText(status, '');
            failure.hidden = false;
            if (!unsure(err)) setPending(null);
            setText(failure,
              err.status === 403 ? 'Your role may not send commands.'
              : unsure(err) ? `Not confirmed: ${err.message} (${err.code}). The command may have been taken: sending it again unchanged does not send it twice.`
              : `Not sent: ${err.message} (${err.code}).`);
          } finally {
            submit.disabled = false;
          }
        },
      },
    },
    name.el,
    params.el,
    ttl.el,
    h('div', { class: 'form-actions' }, submit),
    status,
    failure,
  );
  if (pending) {
    // A command of this tab not confirmed before the page was left or reloaded: offered again as
    // it was typed, so that sending it unchanged goes under its key.
    name.control.value = pending.fields.name;
    params.control.value = pending.fields.params;
    ttl.control.value = pending.fields.ttl;
    failure.hidden = false;
    setText(failure, 'A command sent from this page was not confirmed: it may have been taken. Sending it again unchanged does not send it twice.');
  }
  return form;
}
