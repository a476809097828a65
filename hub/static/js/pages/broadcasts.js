// Admin: topics and broadcasts (CONTRACT v2 §5, docs/notifications.md). Topics with their
// member counts; a form to compose a broadcast; each broadcast's progress as a live bar with
// per-channel counts, pushed by the hub as `broadcast.progress` events on `admin:orders`
// (docs/realtime.md), with a cancel button while it runs.
//
// Listen first, then read the list: a progress event that raced the read is applied only when
// it shows more processed than the read did.

import { api } from '../api.js';
import { checkbox, clearErrors, dateTime, errorSummary, field, h, newKey, showErrors, toast } from '../dom.js';
import { session } from '../session.js';

const CHANNELS = ['email', 'sms', 'push', 'websocket'];
const CATEGORIES = ['marketing', 'order', 'payment', 'points', 'stock'];

export async function adminBroadcastsPage(view) {
  const { main, scope } = view;
  if (!view.requireUser()) return;
  if (!session.isAdmin) {
    view.title('Admins only');
    main.append(h('p', { role: 'alert' }, 'This page is for the shop’s admins.'));
    return;
  }
  view.title('Admin: broadcasts');
  const topicsBody = h('tbody');
  const topics = h('section', { class: 'card', 'aria-labelledby': 'topics-title' },
    h('h2', { id: 'topics-title' }, 'Topics'),
    h('div', { class: 'table-wrap' }, h('table', { class: 'admin-topics' },
      h('thead', {}, h('tr', {}, ['Topic', 'Name', 'Public', 'Members'].map((t) => h('th', { scope: 'col' }, t)))),
      topicsBody)));
  const list = h('ul', { class: 'broadcasts', 'aria-live': 'polite' });
  const rows = new Map(); // id -> {el, data}
  const audience = h('select', { name: 'audience' }, h('option', { value: 'all' }, 'Everyone'));
  main.append(composeForm(audience, (created) => { show(created); load(); }), topics,
    h('section', { 'aria-labelledby': 'broadcasts-title' }, h('h2', { id: 'broadcasts-title' }, 'Broadcasts'), list));

  function show(data) {
    const known = rows.get(data.id);
    if (known && known.data.status !== 'queued' && data.processed + (data.skipped || 0)
        < known.data.processed + (known.data.skipped || 0)) return; // older than what is shown
    const el = broadcastItem(data, async () => {
      try {
        show(await api(`/broadcasts/${data.id}/cancel`, { method: 'POST' }));
        toast('Broadcast cancelled.', { kind: 'ok' });
      } catch (error) {
        toast(`Not cancelled: ${error.message}`, { kind: 'error' });
      }
    });
    if (known) known.el.replaceWith(el);
    else list.prepend(el);
    rows.set(data.id, { el, data });
  }

  async function load() {
    const [topicAnswer, broadcastAnswer] = await Promise.all([api('/topics'), api('/broadcasts')]);
    if (!scope.alive) return;
    topicsBody.replaceChildren(...topicAnswer.items.map((topic) => h('tr', { 'data-topic': topic.key },
      h('th', { scope: 'row' }, topic.key), h('td', {}, topic.name), h('td', {}, topic.public ? 'yes' : 'no'),
      h('td', { class: 'members' }, String(topic.subscribers)))));
    if (!topicAnswer.items.length) topicsBody.append(h('tr', {}, h('td', { colspan: '4' }, 'No topics yet.')));
    const chosen = audience.value;
    audience.replaceChildren(h('option', { value: 'all' }, 'Everyone'),
      ...topicAnswer.items.map((topic) => h('option', { value: `topic:${topic.key}` },
        `Topic: ${topic.name} (${topic.subscribers})`)), h('option', { value: 'users' }, 'These users…'));
    audience.value = [...audience.options].some((o) => o.value === chosen) ? chosen : 'all';
    for (const data of [...broadcastAnswer.items].reverse()) show(data);
  }

  scope.listen('admin:orders', {
    onSubscribed: () => load(),
    onReset: () => load(),
    onFrame: (frame) => {
      if (frame.type === 'event' && frame.event && frame.event.type === 'broadcast.progress') show(frame.event.data);
    },
  });
}

function broadcastItem(data, cancel) {
  const done = data.processed + (data.skipped || 0);
  const bar = h('progress', { max: String(Math.max(data.recipients, 1)), value: String(done),
    'aria-label': `Progress of ${data.title}` });
  const counts = Object.entries(data.counts || {}).map(([channel, statuses]) => h('li', { 'data-channel': channel },
    `${channel}: `, Object.entries(statuses).filter(([, n]) => n).map(([status, n]) => `${n} ${status}`).join(', ')));
  const running = data.status === 'queued' || data.status === 'running';
  const button = h('button', { type: 'button', class: 'small danger' }, 'Cancel',
    h('span', { class: 'visually-hidden' }, ` ${data.title}`));
  button.addEventListener('click', () => { button.disabled = true; cancel(); });
  const zone = session.user && session.user.timezone;
  const who = data.audience.topic ? `topic ${data.audience.topic}` : data.audience.all ? 'everyone'
    : `${data.audience.user_ids} users`;
  return h('li', { class: 'card broadcast', 'data-broadcast': data.id, 'data-status': data.status },
    h('h3', {}, data.title), h('p', { class: 'meta' }, `${data.category} · ${who} · ${data.channels.join(', ')} · `,
      dateTime(data.created_at, zone)),
    bar, h('p', { class: 'progress-text' }, `${data.status}: ${done} of ${data.recipients}`,
      data.skipped ? ` (${data.skipped} skipped)` : ''),
    h('ul', { class: 'counts' }, counts), running ? button : null);
}

function composeForm(audience, created) {
  const inputs = {
    users: h('textarea', { name: 'user_ids', rows: '2', placeholder: 'user ids, separated by spaces or commas' }),
    type: h('input', { type: 'text', name: 'type', value: 'announcement', required: true, maxlength: '64' }),
    category: h('select', { name: 'category' }, CATEGORIES.map((c) => h('option', { value: c }, c))),
    title: h('input', { type: 'text', name: 'title', required: true, maxlength: '200' }),
    body: h('textarea', { name: 'body', rows: '3', required: true, maxlength: '2000' }),
  };
  inputs.type.defaultValue = 'announcement'; // what form.reset() goes back to
  const channels = CHANNELS.map((name) => checkbox(name, { name: 'channels', value: name }));
  for (const c of channels) c.input.defaultChecked = c.input.checked = c.input.value !== 'sms';
  const usersField = field('User ids', inputs.users);
  usersField.el.hidden = true;
  audience.addEventListener('change', () => { usersField.el.hidden = audience.value !== 'users'; });
  const form = h('form', { class: 'card compose-broadcast', 'aria-labelledby': 'compose-title', novalidate: true },
    h('h2', { id: 'compose-title' }, 'New broadcast'), errorSummary(),
    h('div', { class: 'row wrap' }, field('Audience', audience).el, usersField.el, field('Type', inputs.type).el,
      field('Category', inputs.category).el),
    field('Title', inputs.title).el, field('Message', inputs.body).el,
    h('fieldset', { 'data-field': 'channels' }, h('legend', {}, 'Channels'), ...channels.map((c) => c.el)),
    h('button', { type: 'submit', class: 'primary' }, 'Send broadcast'));
  let key = newKey(); // one per broadcast: a retried submit is the same broadcast
  form.addEventListener('input', () => { key = newKey(); });
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors(form);
    const choice = audience.value;
    const body = {
      audience: choice === 'all' ? { all: true } : choice === 'users'
        ? { user_ids: inputs.users.value.split(/[\s,]+/).filter(Boolean) } : { topic: choice.slice(6) },
      type: inputs.type.value.trim(), category: inputs.category.value, title: inputs.title.value.trim(),
      body: inputs.body.value.trim(), channels: channels.filter((c) => c.input.checked).map((c) => c.input.value),
    };
    try {
      const answer = await api('/broadcasts', { method: 'POST', body, idempotencyKey: key });
      toast('Broadcast accepted.', { kind: 'ok' });
      form.reset();
      usersField.el.hidden = true;
      key = newKey();
      created(await api(`/broadcasts/${answer.id}`));
    } catch (error) {
      showErrors(form, error, 'The broadcast was not sent.');
    }
  });
  return form;
}
