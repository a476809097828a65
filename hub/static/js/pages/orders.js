// My orders: the list (live through the `user` channel) and one order with its status
// timeline (live through order:<id>, resumed from the X-Channel-Seq of the read).

import { request } from '../api.js';
import { dateTime, h, money, STATUS_LABELS, stamp, statusBadge, toast } from '../dom.js';
import { LiveOrders } from '../orders-live.js';
import { session } from '../session.js';

const OWNER_CANCELLABLE = new Set(['pending', 'confirmed']);

export async function ordersPage(view) {
  const { main, scope } = view;
  if (!view.requireUser()) return;
  view.title('My orders');
  const status = h('p', { role: 'status', class: 'result-count' }, 'Loading…');
  const list = h('ul', { class: 'orders', 'aria-label': 'Your orders' });
  main.append(status, list);
  const rows = new Map();

  function row(order) {
    const link = h('a', { href: `#/orders/${order.id}` }, `Order ${order.number}`);
    return h('li', { class: 'card order-row', 'data-order-id': order.id },
      h('div', {}, link, h('div', { class: 'muted' }, dateTime(order.created_at, session.user?.timezone))),
      h('div', { class: 'order-row-status', 'aria-live': 'polite' }, statusBadge(order.status)),
      h('div', { class: 'order-row-total' }, money(order.total, order.currency)));
  }

  function show(orders) {
    rows.clear();
    const sorted = orders.sort((a, b) => stamp(b.created_at) - stamp(a.created_at));
    list.replaceChildren(...sorted.map((order) => { const el = row(order); rows.set(order.id, el); return el; }));
    status.textContent = sorted.length ? `${sorted.length} order${sorted.length === 1 ? '' : 's'}` : 'No orders yet.';
  }

  new LiveOrders(scope, 'user', {
    path: '/orders?limit=100',
    onLoad: show,
    onError: (error) => { status.textContent = error.message; },
    onChange: (order, isNew) => {
      const el = row(order);
      if (isNew || !rows.has(order.id)) list.prepend(el);
      else rows.get(order.id).replaceWith(el);
      rows.set(order.id, el);
      status.textContent = `${rows.size} order${rows.size === 1 ? '' : 's'}`;
    },
  });
}

export async function orderPage(view) {
  const { main, scope, params } = view;
  if (!view.requireUser()) return;
  const orderId = params[0];
  view.title('Order');
  const body = h('div', { class: 'order-detail' });
  main.append(body);

  let order = null;
  let stop = null;

  async function load() {
    let answer;
    try {
      answer = await request(`/orders/${encodeURIComponent(orderId)}`);
    } catch (error) {
      if (!scope.alive) return;
      body.replaceChildren(h('p', { role: 'alert' }, error.status === 404 ? 'There is no such order of yours.' : error.message));
      return;
    }
    if (!scope.alive) return;
    order = { ...answer.data, _stamp: stamp(answer.data.updated_at) };
    render();
    // Resume the channel from the seq the hub read before the document: nothing is missed,
    // and anything replayed that the document shows already is skipped by its time.
    const seq = Number(answer.headers.get('X-Channel-Seq'));
    if (stop) stop();
    stop = scope.listen(`order:${orderId}`, {
      since: Number.isFinite(seq) ? seq : null,
      onFrame: (frame) => apply(frame.event),
      onReset: () => load(),
      onError: () => body.prepend(h('p', { class: 'notice', role: 'status' },
        'Live updates are not available for this order just now; reload the page to see changes.')),
    });
  }

  function apply(event) {
    if (!event || !event.type.startsWith('order.')) return;
    const at = stamp(event.time);
    if (at <= order._stamp) return;
    const data = event.data || {};
    order = {
      ...order, status: data.status, updated_at: event.time, _stamp: at,
      status_history: [...order.status_history, { status: data.status, at: event.time, note: null }],
    };
    render(); // the status region is aria-live: the change is announced
  }

  function render() {
    view.title(`Order ${order.number}`);
    const tz = session.user?.timezone;
    const cancel = OWNER_CANCELLABLE.has(order.status)
      ? h('button', { type: 'button', class: 'danger', onclick: cancelOrder }, 'Cancel order') : null;
    body.replaceChildren(
      h('section', { class: 'card', 'aria-labelledby': 'order-status-title' },
        h('h2', { id: 'order-status-title' }, 'Status'),
        h('p', { class: 'order-status', 'aria-live': 'polite' }, statusBadge(order.status)),
        h('ol', { class: 'timeline', 'aria-label': 'Status history' }, order.status_history.map((entry) =>
          h('li', { 'data-status': entry.status },
            h('span', { class: 'timeline-status' }, STATUS_LABELS[entry.status] || entry.status),
            h('time', { datetime: entry.at }, dateTime(entry.at, tz)),
            entry.note ? h('span', { class: 'history-note' }, entry.note) : null))),
        cancel),
      h('section', { class: 'card', 'aria-labelledby': 'order-items-title' },
        h('h2', { id: 'order-items-title' }, 'Items'),
        h('div', { class: 'table-wrap' }, h('table', {},
          h('thead', {}, h('tr', {}, ['Product', 'Unit price', 'Quantity', 'Line total'].map((t) => h('th', { scope: 'col' }, t)))),
          h('tbody', {}, order.items.map((line) => h('tr', {},
            h('th', { scope: 'row' }, line.name), h('td', {}, money(line.unit_price, order.currency)),
            h('td', {}, String(line.quantity)), h('td', {}, money(line.line_total, order.currency))))),
          h('tfoot', {}, h('tr', {}, h('th', { scope: 'row', colspan: '3' }, 'Total'),
            h('td', { class: 'total' }, money(order.total, order.currency)))))),
        order.shipping_address ? h('p', {}, h('strong', {}, 'Ship to: '), typeof order.shipping_address === 'string'
          ? order.shipping_address : JSON.stringify(order.shipping_address)) : null,
        order.note ? h('p', {}, h('strong', {}, 'Note: '), order.note) : null,
        h('p', { class: 'muted' }, `Placed ${dateTime(order.created_at, tz)}`)),
      h('p', {}, h('a', { href: '#/orders' }, 'All my orders')));
  }

  async function cancelOrder(event) {
    event.target.disabled = true;
    try {
      const answer = await request(`/orders/${encodeURIComponent(orderId)}/cancel`, { method: 'POST', body: {} });
      if (!scope.alive) return;
      order = { ...answer.data, _stamp: stamp(answer.data.updated_at) };
      render();
    } catch (error) {
      toast(error.message, { kind: 'error' });
      event.target.disabled = false;
    }
  }

  await load();
}
