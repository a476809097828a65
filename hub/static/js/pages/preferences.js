// Preferences: the profile (name, phone, time zone), notification preferences (channels
// and types, quiet hours, caps; validated by the hub, its errors shown per field) and web
// push on this device.

import { api } from '../api.js';
import { checkbox, clearErrors, errorSummary, field, h, showErrors, toast } from '../dom.js';
import { disablePush, enablePush, pushState, pushSupported } from '../push.js';
import { session } from '../session.js';
import { timezoneList } from './auth.js';

const CHANNELS = [
  ['email', 'Email', 'Send email'],
  ['sms', 'SMS', 'Send text messages'],
  ['push', 'Web push', 'Send push notifications'],
  ['websocket', 'In the app', 'Show them in the app'],
];
const CATEGORIES = [['order', 'Orders'], ['payment', 'Payments'], ['points', 'Points'], ['stock', 'Stock alerts'], ['marketing', 'Offers']];

/** A number for an integer-looking value, else the text as typed: the hub says what is wrong. */
function integer(value) {
  const trimmed = value.trim();
  return /^-?\d+$/.test(trimmed) ? Number(trimmed) : trimmed;
}

export async function preferencesPage(view) {
  const { main, scope } = view;
  if (!view.requireUser()) return;
  view.title('Preferences');
  const [user, prefs] = await Promise.all([api('/users/me'), api('/users/me/preferences')]);
  if (!scope.alive) return;
  main.append(profileForm(user), preferencesForm(prefs), pushSection(scope), timezoneList());
}

function profileForm(user) {
  const name = h('input', { type: 'text', name: 'name', value: user.name || '', autocomplete: 'name' });
  const phone = h('input', { type: 'tel', name: 'phone', value: user.phone || '', autocomplete: 'tel', placeholder: '+15551234567' });
  const zone = h('input', { type: 'text', name: 'timezone', value: user.timezone || 'UTC', list: 'timezones', autocomplete: 'off' });
  const form = h('form', { class: 'card', 'aria-labelledby': 'profile-title', novalidate: true },
    h('h2', { id: 'profile-title' }, 'Profile'), errorSummary(),
    field('Name', name).el, field('Phone (for SMS)', phone, 'International format, e.g. +15551234567.').el,
    field('Time zone', zone).el, h('button', { type: 'submit' }, 'Save profile'));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors(form);
    const changes = { timezone: zone.value.trim() };
    if (name.value.trim()) changes.name = name.value.trim();
    if (phone.value.trim()) changes.phone = phone.value.trim();
    try {
      const saved = await api('/users/me', { method: 'PATCH', body: changes });
      session.updateUser(saved);
      toast('Profile saved.', { kind: 'ok' });
    } catch (error) {
      showErrors(form, error, 'The profile was not saved.');
    }
  });
  return form;
}

function preferencesForm(prefs) {
  const channelInputs = {};
  const channelSets = CHANNELS.map(([name, label, enabledLabel]) => {
    const current = prefs.channels[name] || { enabled: false, types: [] };
    const enabled = checkbox(enabledLabel, { name: `${name}-enabled`, checked: current.enabled, 'data-field': `channels.${name}.enabled` });
    const all = checkbox(['Everything', h('span', { class: 'visually-hidden' }, ` by ${label}`)], { name: `${name}-all`, checked: current.types.includes('all') });
    const categories = CATEGORIES.map(([category, categoryLabel]) =>
      checkbox(categoryLabel, { name: `${name}-${category}`, value: category, checked: current.types.includes(category) }));
    const known = new Set(['all', ...CATEGORIES.map(([c]) => c)]);
    const other = h('input', { type: 'text', name: `${name}-types`, 'data-field': `channels.${name}.types`,
      value: current.types.filter((t) => !known.has(t)).join(', '), autocomplete: 'off' });
    const sync = () => {
      for (const c of categories) c.input.disabled = all.input.checked || !enabled.input.checked;
      all.input.disabled = !enabled.input.checked;
      other.disabled = all.input.checked || !enabled.input.checked;
    };
    enabled.input.addEventListener('change', sync);
    all.input.addEventListener('change', sync);
    sync();
    channelInputs[name] = { enabled, all, categories, other };
    return h('fieldset', { class: 'channel', 'data-channel': name },
      h('legend', {}, label), enabled.el,
      h('div', { class: 'types' }, all.el, categories.map((c) => c.el)),
      field('Other notification types', other, 'Comma-separated, e.g. order_shipped, back_in_stock.').el);
  });

  const dnd = prefs.dnd;
  const dndEnabled = checkbox('Hold notifications during quiet hours', { name: 'dnd-enabled', checked: dnd.enabled, 'data-field': 'dnd.enabled' });
  const start = h('input', { type: 'time', name: 'dnd-start', value: dnd.start, 'data-field': 'dnd.start' });
  const end = h('input', { type: 'time', name: 'dnd-end', value: dnd.end, 'data-field': 'dnd.end' });
  const zone = h('input', { type: 'text', name: 'dnd-timezone', value: dnd.timezone || '', list: 'timezones', 'data-field': 'dnd.timezone', autocomplete: 'off', placeholder: session.user?.timezone || 'UTC' });
  const bypass = checkbox('Let urgent messages through', { name: 'dnd-urgent', checked: dnd.urgent_bypass, 'data-field': 'dnd.urgent_bypass' });
  const perHour = h('input', { type: 'number', name: 'max-per-hour', value: String(prefs.frequency.max_per_hour), 'data-field': 'frequency.max_per_hour', inputmode: 'numeric' });
  const perDay = h('input', { type: 'number', name: 'max-per-day', value: String(prefs.frequency.max_per_day), 'data-field': 'frequency.max_per_day', inputmode: 'numeric' });
  const saved = h('p', { role: 'status', class: 'saved' });

  const form = h('form', { class: 'card preferences', 'aria-labelledby': 'prefs-title', novalidate: true },
    h('h2', { id: 'prefs-title' }, 'Notifications'), errorSummary(),
    h('div', { class: 'channels' }, channelSets),
    h('fieldset', { class: 'dnd' }, h('legend', {}, 'Quiet hours (do not disturb)'), dndEnabled.el,
      h('div', { class: 'row' }, field('From', start).el, field('Until', end).el),
      field('Time zone', zone, 'Empty: your profile’s time zone. Held messages go out when quiet hours end.').el, bypass.el),
    h('fieldset', { class: 'caps' }, h('legend', {}, 'At most'),
      h('div', { class: 'row' }, field('Per hour', perHour).el, field('Per day', perDay).el),
      h('p', { class: 'hint' }, 'High-priority and urgent messages are not counted.')),
    h('button', { type: 'submit', class: 'primary' }, 'Save preferences'), saved);

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors(form);
    saved.textContent = '';
    const channels = {};
    for (const [name, inputs] of Object.entries(channelInputs)) {
      let types;
      if (inputs.all.input.checked) {
        types = ['all'];
      } else {
        types = inputs.categories.filter((c) => c.input.checked).map((c) => c.input.value);
        types.push(...inputs.other.value.split(',').map((t) => t.trim()).filter(Boolean));
      }
      channels[name] = { enabled: inputs.enabled.input.checked, types };
    }
    const body = {
      channels,
      dnd: { enabled: dndEnabled.input.checked, start: start.value, end: end.value,
        timezone: zone.value.trim() || null, urgent_bypass: bypass.input.checked },
      frequency: { max_per_hour: integer(perHour.value), max_per_day: integer(perDay.value) },
    };
    try {
      await api('/users/me/preferences', { method: 'PUT', body });
      saved.textContent = 'Preferences saved.';
    } catch (error) {
      showErrors(form, error, 'The preferences were not saved: please correct the fields below.');
    }
  });
  return form;
}

function pushSection(scope) {
  const state = h('p', { class: 'push-state', role: 'status' }, 'Checking…');
  const enable = h('button', { type: 'button', class: 'primary' }, 'Enable notifications');
  const disable = h('button', { type: 'button', hidden: true }, 'Turn off on this device');
  const section = h('section', { class: 'card', 'aria-labelledby': 'push-title' },
    h('h2', { id: 'push-title' }, 'Notifications on this device'),
    h('p', { class: 'hint' }, 'Get order updates from this browser even when the shop is closed.'),
    state, enable, disable);

  async function refresh(message = null) {
    const current = await pushState();
    if (!scope.alive) return;
    enable.hidden = current.subscribed;
    disable.hidden = !current.subscribed;
    enable.disabled = !current.supported;
    if (message) state.textContent = message;
    else if (!current.supported) state.textContent = pushSupported() ? '' : 'This browser cannot receive web push here.';
    else if (current.permission === 'denied') state.textContent = 'Notifications are blocked for this site in the browser.';
    else state.textContent = current.subscribed ? 'On: this device receives notifications.' : 'Off on this device.';
  }

  enable.addEventListener('click', async () => {
    enable.disabled = true;
    state.textContent = 'Turning on…';
    try {
      await enablePush();
      await refresh('On: this device receives notifications.');
    } catch (error) {
      await refresh(error.code === 'push_unavailable' ? 'Web push is not configured on this hub.' : error.message);
    }
  });
  disable.addEventListener('click', async () => {
    disable.disabled = true;
    try {
      await disablePush();
      await refresh('Off on this device.');
    } catch (error) {
      await refresh(error.message);
    } finally {
      disable.disabled = false;
    }
  });
  refresh();
  return section;
}
