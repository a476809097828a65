// The notification center: the bell (live unread count from the `user` channel, each
// notification acknowledged) and the inbox page (mark read, each delivery's channel,
// status and reason).

import { api } from '../api.js';
import { clock, dateTime, h, toast } from '../dom.js';
import { realtime } from '../live.js';
import { session } from '../session.js';

export const inbox = new EventTarget(); // "notification" (detail: the notification), "count"
let unread = 0;
let stopListening = null;
let resync = null;

function setCount(n) {
  unread = Math.max(0, n);
  const badge = document.getElementById('bell-count');
  const link = document.getElementById('bell');
  if (!badge || !link) return;
  badge.dataset.count = String(unread);
  badge.querySelector('.count').textContent = unread > 99 ? '99+' : String(unread);
  badge.hidden = unread === 0;
  link.setAttribute('aria-label', unread ? `Notifications, ${unread} unread` : 'Notifications, none unread');
  inbox.dispatchEvent(new Event('count'));
}

/** Reads the unread count by REST (the truth; frames only move it ahead of time). */
export async function syncCount() {
  if (!session.user) return;
  try {
    const answer = await api('/users/me/notifications?unread=true&limit=1');
    setCount(answer.unread_count);
  } catch (error) {
    console.warn('could not read the unread count', error);
  }
}

function syncSoon() {
  clearTimeout(resync);
  resync = setTimeout(syncCount, 1500);
}

export function startBell() {
  stopBell();
  const link = document.getElementById('bell');
  link.hidden = !session.user;
  if (!session.user) return;
  stopListening = realtime.listen('user', {
    onSubscribed: () => syncCount(), // the count as of now; later notifications arrive as frames
    onReset: () => syncCount(),
    onFrame: (frame) => {
      if (frame.type !== 'notification') return;
      const note = frame.notification;
      realtime.ack(note.id);
      setCount(unread + 1);
      syncSoon();
      const orderId = note.data && note.data.order_id;
      toast(note.title, { kind: 'info', href: orderId ? `#/orders/${orderId}` : '#/notifications' });
      inbox.dispatchEvent(new CustomEvent('notification', { detail: note }));
    },
  });
}

export function stopBell() {
  if (stopListening) stopListening();
  stopListening = null;
  clearTimeout(resync);
  setCount(0);
}

// Deliveries ------------------------------------------------------------------------------------

const CHANNEL_LABELS = { email: 'Email', sms: 'SMS', push: 'Push', websocket: 'In app' };
const REASONS = {
  dnd: 'do not disturb', frequency_cap: 'frequency cap', preference: 'off in your preferences',
  no_address: 'no address to send to', address_bounced: 'your email address bounced', channel_off: 'not set up on this hub', expired: 'no longer relevant',
  no_user: 'no such user', subscription_gone: 'device unsubscribed', template_error: 'template error',
  recipient_rejected: 'address rejected', smtp_rejected: 'rejected by the mail server', sms_rejected: 'rejected by the SMS provider',
  bad_subscription: 'invalid device subscription', timeout: 'provider did not answer', unreachable: 'provider unreachable',
};

/** "held: do not disturb until 08:00", "sent", "queued: provider unreachable, next try at 10:32 (2 attempts)". */
export function describeDelivery(delivery, timeZone) {
  let text = delivery.status;
  const reason = delivery.reason ? (REASONS[delivery.reason] || delivery.reason.replaceAll('_', ' ')) : null;
  if (reason) text += `: ${reason}`;
  if (delivery.until && delivery.status === 'held') text += ` until ${clock(delivery.until, timeZone)}`;
  if (delivery.until && delivery.status === 'queued') text += `${reason ? ',' : ':'} next try at ${clock(delivery.until, timeZone)}`;
  if (delivery.attempts > 1) text += ` (${delivery.attempts} attempts)`;
  return text;
}

// The inbox page ----------------------------------------------------------------------------------

export async function notificationsPage(view) {
  const { main, scope } = view;
  if (!view.requireUser()) return;
  view.title('Notifications');
  const onlyUnread = h('input', { type: 'checkbox', id: 'only-unread' });
  const readAll = h('button', { type: 'button' }, 'Mark all read');
  const status = h('p', { role: 'status', class: 'result-count' }, 'Loading…');
  const list = h('ul', { class: 'inbox', 'aria-label': 'Notifications' });
  main.append(h('div', { class: 'toolbar' }, h('div', { class: 'check' }, onlyUnread, h('label', { for: 'only-unread' }, 'Unread only')), readAll),
    status, list);

  // "until" times read in the zone the DND window is written in.
  let timeZone = session.user?.timezone;
  try {
    const prefs = await api('/users/me/preferences');
    timeZone = (prefs.dnd && prefs.dnd.timezone) || timeZone;
  } catch { /* the profile's zone will do */ }

  async function load() {
    try {
      const answer = await api(`/users/me/notifications?limit=50${onlyUnread.checked ? '&unread=true' : ''}`);
      if (!scope.alive) return;
      setCount(answer.unread_count);
      list.replaceChildren(...answer.items.map(item));
      status.textContent = answer.items.length ? `${answer.unread_count} unread` : 'Nothing here yet.';
    } catch (error) {
      if (scope.alive) status.textContent = error.message;
    }
  }

  function item(note) {
    const titleId = `note-${note.id}`;
    const unreadNow = !note.read_at;
    const markRead = unreadNow ? h('button', { type: 'button', class: 'small', onclick: async (event) => {
      event.target.disabled = true;
      try {
        await api(`/users/me/notifications/${encodeURIComponent(note.id)}/read`, { method: 'POST' });
        await load();
      } catch (error) {
        toast(error.message, { kind: 'error' });
        event.target.disabled = false;
      }
    } }, 'Mark read', h('span', { class: 'visually-hidden' }, `: ${note.title}`)) : null;
    const orderId = note.data && note.data.order_id;
    return h('li', { class: `card notification${unreadNow ? ' unread' : ''}`, 'data-notification-id': note.id, 'data-type': note.type, 'aria-labelledby': titleId },
      h('div', { class: 'notification-head' },
        h('h2', { id: titleId }, unreadNow ? h('span', { class: 'dot', 'aria-hidden': 'true' }) : null,
          unreadNow ? h('span', { class: 'visually-hidden' }, 'Unread: ') : null, note.title),
        note.priority === 'high' || note.priority === 'urgent' ? h('span', { class: `priority priority-${note.priority}` }, note.priority) : null),
      h('p', {}, note.body),
      h('p', { class: 'muted' }, h('time', { datetime: note.created_at }, dateTime(note.created_at, timeZone)),
        orderId ? [' · ', h('a', { href: `#/orders/${orderId}` }, 'View order')] : null),
      h('details', { class: 'deliveries' },
        h('summary', {}, 'Deliveries'),
        h('ul', {}, note.deliveries.map((delivery) => h('li', { 'data-channel': delivery.channel, 'data-status': delivery.status },
          h('strong', {}, `${CHANNEL_LABELS[delivery.channel] || delivery.channel}: `), describeDelivery(delivery, timeZone))))),
      markRead);
  }

  onlyUnread.addEventListener('change', load);
  readAll.addEventListener('click', async () => {
    readAll.disabled = true;
    try {
      await api('/users/me/notifications/read-all', { method: 'POST' });
      await load();
    } catch (error) {
      toast(error.message, { kind: 'error' });
    } finally {
      readAll.disabled = false;
    }
  });
  const fresh = () => load();
  inbox.addEventListener('notification', fresh);
  scope.add(() => inbox.removeEventListener('notification', fresh));
  await load();
}
