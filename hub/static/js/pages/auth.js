// Sign in and register.

import { api } from '../api.js';
import { clearErrors, errorSummary, field, h, showErrors } from '../dom.js';
import { session } from '../session.js';

function next(query) {
  const target = query.get('next') || '/';
  return target.startsWith('/') ? `#${target}` : '#/';
}

function authMessage(error) {
  switch (error.code) {
    case 'invalid_credentials': return 'Email or password is wrong.';
    case 'account_locked': return 'Too many failed attempts: the account is locked for a while. Try again later.';
    case 'email_taken': return 'An account with this email exists already. Sign in instead?';
    case 'rate_limited': return 'Too many attempts. Wait a minute and try again.';
    case 'validation_failed': return 'Please correct the fields below.';
    default: return error.message;
  }
}

// Both forms: post the body, keep the session the hub answers, go where the user was going.
function onSubmit(form, submit, query, path, body) {
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors(form);
    submit.disabled = true;
    try {
      const answer = await api(path, { method: 'POST', body: body(), auth: false });
      location.hash = next(query);
      session.set(answer);
    } catch (error) {
      showErrors(form, error, authMessage(error));
    } finally {
      submit.disabled = false;
    }
  });
}

export async function signInPage(view) {
  const { main, query } = view;
  view.title('Sign in');
  const email = h('input', { type: 'email', name: 'email', autocomplete: 'username', required: true });
  const password = h('input', { type: 'password', name: 'password', autocomplete: 'current-password', required: true });
  const submit = h('button', { type: 'submit' }, 'Sign in');
  const form = h('form', { class: 'card narrow', 'aria-labelledby': 'page-title', novalidate: true },
    errorSummary(), field('Email', email).el, field('Password', password).el, submit,
    h('p', {}, 'No account yet? ', h('a', { href: `#/register${query.get('next') ? `?next=${encodeURIComponent(query.get('next'))}` : ''}` }, 'Register')));
  main.append(form);
  onSubmit(form, submit, query, '/auth/login', () => ({ email: email.value, password: password.value }));
  email.focus();
}

export async function registerPage(view) {
  const { main, query } = view;
  view.title('Create an account');
  const email = h('input', { type: 'email', name: 'email', autocomplete: 'email', required: true });
  const password = h('input', { type: 'password', name: 'password', autocomplete: 'new-password', required: true, minlength: '8' });
  const name = h('input', { type: 'text', name: 'name', autocomplete: 'name' });
  const zone = h('input', { type: 'text', name: 'timezone', value: Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC', list: 'timezones', autocomplete: 'off' });
  const submit = h('button', { type: 'submit' }, 'Create account');
  const form = h('form', { class: 'card narrow', 'aria-labelledby': 'page-title', novalidate: true },
    errorSummary(), field('Email', email).el, field('Password', password, 'At least 8 characters.').el,
    field('Name (optional)', name).el, field('Time zone', zone, 'Used for quiet hours and times shown.').el,
    timezoneList(), submit,
    h('p', {}, 'Have an account? ', h('a', { href: '#/signin' }, 'Sign in')));
  main.append(form);
  onSubmit(form, submit, query, '/auth/register', () => {
    const body = { email: email.value, password: password.value, timezone: zone.value };
    if (name.value.trim()) body.name = name.value.trim();
    return body;
  });
  email.focus();
}

/** <datalist id="timezones"> of the IANA names the browser knows. */
export function timezoneList() {
  const names = Intl.supportedValuesOf ? Intl.supportedValuesOf('timeZone') : ['UTC'];
  return h('datalist', { id: 'timezones' }, names.map((zoneName) => h('option', { value: zoneName })));
}
