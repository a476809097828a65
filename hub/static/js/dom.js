// Small DOM and formatting helpers. Text always goes in as text (never as HTML), so
// whatever the API returns cannot inject markup.

/** h('button', {class: 'x', onclick: fn, 'aria-label': 'y'}, 'text', child, [more]) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      el.addEventListener(name.slice(2), value);
    } else if (name === 'class') {
      el.className = value;
    } else if (name === 'value' || name === 'checked' || name === 'selected' || name === 'disabled') {
      el[name] = value;
    } else {
      el.setAttribute(name, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

export function $(selector, root = document) {
  return root.querySelector(selector);
}

let ids = 0;
/** A unique id for label/aria wiring. */
export function uid(prefix = 'f') {
  ids += 1;
  return `${prefix}-${ids}`;
}

/** A labelled form field: {el, input}. */
export function field(label, input, hint = null) {
  input.id = input.id || uid(input.name || 'f');
  const hintEl = hint ? h('small', { class: 'hint', id: `${input.id}-hint` }, hint) : null;
  if (hintEl) input.setAttribute('aria-describedby', hintEl.id);
  const error = h('small', { class: 'field-error', id: `${input.id}-error`, hidden: true });
  const el = h('div', { class: 'field' }, h('label', { for: input.id }, label), input, hintEl, error);
  return { el, input };
}

/** A checkbox with its label after it. */
export function checkbox(label, attrs = {}) {
  const input = h('input', { type: 'checkbox', id: uid(attrs.name || 'c'), ...attrs });
  return { el: h('div', { class: 'check' }, input, h('label', { for: input.id }, label)), input };
}

/** Shows an ApiError on a form: a summary (role=alert) and, for a 422, each field's message
 * next to the input whose data-field (or name) matches the error's field path. */
export function showErrors(form, error, summaryText = null) {
  clearErrors(form);
  const summary = form.querySelector('.form-errors');
  const fields = error && error.fields ? error.fields : {};
  const items = [];
  for (const [path, message] of Object.entries(fields)) {
    const input = inputFor(form, path);
    if (input) {
      input.setAttribute('aria-invalid', 'true');
      const slot = form.querySelector(`#${CSS.escape(input.id)}-error`);
      if (slot) {
        slot.textContent = message;
        slot.hidden = false;
        input.setAttribute('aria-describedby', [input.getAttribute('aria-describedby'), slot.id].filter(Boolean).join(' '));
      }
    }
    items.push(h('li', {}, input ? h('a', { href: `#${input.id}`, 'data-focus': input.id }, `${labelOf(input) || path}: ${message}`) : `${path}: ${message}`));
  }
  if (summary) {
    summary.replaceChildren(h('p', {}, summaryText || (error && error.message) || 'Something went wrong.'));
    if (items.length) summary.append(h('ul', {}, items));
    summary.hidden = false;
    // In-page links would change the hash route: focus the field instead.
    summary.querySelectorAll('a[data-focus]').forEach((a) => a.addEventListener('click', (event) => {
      event.preventDefault();
      document.getElementById(a.dataset.focus)?.focus();
    }));
    summary.focus();
  }
}

/** The input for an error's field path: data-field or name, else the path without its
 * trailing list indices ("channels.email.types.0" → "channels.email.types"). */
function inputFor(form, path) {
  for (let p = path; p; p = /\.\d+$/.test(p) ? p.replace(/\.\d+$/, '') : '') {
    const input = form.querySelector(`[data-field="${CSS.escape(p)}"]`) || form.querySelector(`[name="${CSS.escape(p)}"]`);
    if (input) return input;
  }
  return null;
}

function labelOf(input) {
  const label = input.id && document.querySelector(`label[for="${CSS.escape(input.id)}"]`);
  return label ? label.textContent.trim() : null;
}

export function clearErrors(form) {
  const summary = form.querySelector('.form-errors');
  if (summary) { summary.hidden = true; summary.replaceChildren(); }
  form.querySelectorAll('[aria-invalid]').forEach((input) => input.removeAttribute('aria-invalid'));
  form.querySelectorAll('.field-error').forEach((slot) => {
    slot.hidden = true;
    slot.textContent = '';
    const input = form.querySelector(`[aria-describedby~="${CSS.escape(slot.id)}"]`);
    if (input) {
      const rest = input.getAttribute('aria-describedby').split(' ').filter((id) => id !== slot.id).join(' ');
      if (rest) input.setAttribute('aria-describedby', rest); else input.removeAttribute('aria-describedby');
    }
  });
}

/** The error summary a form shows showErrors() in. */
export function errorSummary() {
  return h('div', { class: 'form-errors', role: 'alert', tabindex: '-1', hidden: true });
}

// Toasts ------------------------------------------------------------------------------------------

export function toast(message, { kind = 'info', href = null } = {}) {
  const region = document.getElementById('toasts');
  const item = h('div', { class: `toast toast-${kind}` }, href ? h('a', { href }, message) : message);
  region.append(item);
  while (region.children.length > 3) region.firstElementChild.remove(); // the newest few only
  setTimeout(() => item.remove(), 6000);
}

// Formatting --------------------------------------------------------------------------------------

export function money(amount, currency = 'USD') {
  const value = Number(amount);
  try {
    return new Intl.NumberFormat(undefined, { style: 'currency', currency }).format(value);
  } catch {
    return `${value.toFixed(2)} ${currency}`;
  }
}

function zone(timeZone) {
  try {
    new Intl.DateTimeFormat(undefined, { timeZone });
    return timeZone;
  } catch {
    return undefined;
  }
}

export function dateTime(iso, timeZone) {
  if (!iso) return '';
  return new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short', timeZone: zone(timeZone) })
    .format(new Date(iso));
}

/** "08:00" in the given zone (24-hour clock, as DND windows are written). */
export function clock(iso, timeZone) {
  return new Intl.DateTimeFormat('en-GB', { hour: '2-digit', minute: '2-digit', hourCycle: 'h23', timeZone: zone(timeZone) })
    .format(new Date(iso));
}

/** Microseconds since the epoch of an ISO timestamp (the hub writes microseconds; Date
 * keeps milliseconds), to order a REST snapshot and an event. */
export function stamp(iso) {
  if (!iso) return 0;
  const match = /\.(\d+)/.exec(iso);
  const micros = match ? Number((match[1] + '000000').slice(3, 6)) : 0;
  return Date.parse(iso) * 1000 + micros;
}

export function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

export const STATUS_LABELS = {
  pending: 'Awaiting payment', confirmed: 'Confirmed', processing: 'Processing', shipped: 'Shipped',
  delivered: 'Delivered', completed: 'Completed', cancelled: 'Cancelled', returned: 'Returned', refunded: 'Refunded',
};

export function statusBadge(status) {
  return h('span', { class: `status status-${status}`, 'data-status': status }, STATUS_LABELS[status] || status);
}
