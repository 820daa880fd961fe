// Login with a role token (the command API's credentials). The token goes in a POST body only:
// the form's method is POST so that even without this script it could never land in a URL.

import { h, setText } from '../dom.js';
import { login } from '../api.js';

export function mountLogin(root, { onLoggedIn, notice }) {
  const token = h('input', {
    id: 'login-token',
    type: 'password',
    testid: 'login-token',
    name: 'token',
    autocomplete: 'current-password',
    required: true,
    spellcheck: 'false',
  });
  const submit = h('button', { type: 'submit', class: 'primary', testid: 'login-submit' }, 'Log in');
  const error = h('p', { class: 'form-error', role: 'alert', testid: 'login-error', hidden: !notice }, notice ?? '');
  const form = h(
    'form',
    {
      class: 'login-form',
      testid: 'login-form',
      method: 'post',
      action: '/api/login',
      'aria-labelledby': 'login-title',
      on: {
        submit: async (ev) => {
          ev.preventDefault();
          error.hidden = true;
          if (token.value === '') {
            error.hidden = false;
            setText(error, 'Enter your access token.');
            token.focus();
            return;
          }
          submit.disabled = true;
          try {
            const session = await login(token.value);
            token.value = '';
            onLoggedIn(session);
          } catch (err) {
            error.hidden = false;
            setText(error,
              err.status === 401 ? 'That token is not valid.'
              : err.status === 429 ? 'Too many attempts: wait a minute, then try again.'
              : `Login failed: ${err.message}`);
            token.select();
          } finally {
            submit.disabled = false;
          }
        },
      },
    },
    h('h2', { id: 'login-title' }, 'Log in'),
    h('div', { class: 'field' },
      h('label', { for: 'login-token' }, 'Access token'),
      token,
      h('p', { class: 'hint' }, 'The viewer, operator or admin token you were given for the command API.')),
    h('div', { class: 'form-actions' }, submit),
    error,
  );
  root.append(h('div', { class: 'login-box', testid: 'page-login' }, form));
  token.focus();
  return { unmount() {} };
}
