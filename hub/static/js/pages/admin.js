// Admin: the catalog with stock editing (live), and the order board (live through
// admin:orders) with the transitions the status table allows.

import { api } from '../api.js';
import { clearErrors, dateTime, errorSummary, field, h, money, showErrors, STATUS_LABELS, toast } from '../dom.js';
import { LiveOrders } from '../orders-live.js';
import { LiveProducts, stockLabel } from '../products.js';
import { session } from '../session.js';

// The hub's status table (CONTRACT §2 Orders): the buttons each column offers.
const TRANSITIONS = {
  pending: ['confirmed', 'cancelled'],
  confirmed: ['processing', 'cancelled'],
  processing: ['shipped', 'cancelled'],
  shipped: ['delivered', 'returned'],
  delivered: ['completed', 'returned'],
  returned: ['refunded'],
  completed: [], cancelled: [], refunded: [],
};
const ACTIONS = {
  confirmed: 'Confirm', processing: 'Start processing', shipped: 'Ship', delivered: 'Mark delivered',
  completed: 'Complete', cancelled: 'Cancel', returned: 'Mark returned', refunded: 'Refund',
};
const COLUMNS = ['pending', 'confirmed', 'processing', 'shipped', 'delivered', 'completed', 'returned', 'refunded', 'cancelled'];

function adminOnly(view) {
  if (!view.requireUser()) return false;
  if (session.isAdmin) return true;
  view.title('Admins only');
  view.main.append(h('p', { role: 'alert' }, 'This page is for the shop’s admins.'));
  return false;
}

// Catalog and stock -------------------------------------------------------------------------------

export async function adminCatalogPage(view) {
  const { main, scope } = view;
  if (!adminOnly(view)) return;
  view.title('Admin: catalog and stock');
  const q = h('input', { type: 'search', name: 'q', autocomplete: 'off' });
  const search = h('form', { role: 'search', class: 'filters', 'aria-label': 'Search products' }, field('Search', q).el,
    h('button', { type: 'submit' }, 'Search'));
  const tbody = h('tbody');
  const table = h('div', { class: 'table-wrap' }, h('table', { class: 'admin-products' },
    h('caption', { class: 'visually-hidden' }, 'Products, their price and stock'),
    h('thead', {}, h('tr', {}, ['Product', 'Price', 'Stock', 'Change stock'].map((t) => h('th', { scope: 'col' }, t)),
      h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, 'Actions')))),
    tbody));
  main.append(search, table, newProductForm(() => load()));
  const rows = new Map();
  const live = new LiveProducts(scope, { update: (product) => rows.get(product.id)?.update(product) });

  async function load() {
    const query = new URLSearchParams({ limit: '100', sort: 'name' });
    if (q.value.trim()) query.set('q', q.value.trim());
    const answer = await live.load(query.toString());
    if (!scope.alive) return;
    rows.clear();
    tbody.replaceChildren(...answer.items.map((product) => {
      const row = productRow(product, load);
      rows.set(product.id, row);
      return row.el;
    }));
  }
  search.addEventListener('submit', (event) => { event.preventDefault(); load(); });
  await load();
}

function productRow(product, reload) {
  let current = product;
  const price = h('input', { type: 'text', inputmode: 'decimal', name: 'price', value: product.price, size: '8' });
  const priceLabel = h('label', { for: `price-${product.id}`, class: 'visually-hidden' }, `Price of ${product.name}`);
  price.id = `price-${product.id}`;
  const amount = h('input', { type: 'number', name: 'amount', id: `amount-${product.id}`, value: '10', inputmode: 'numeric' });
  const amountLabel = h('label', { for: amount.id, class: 'visually-hidden' }, `Stock quantity for ${product.name}`);
  const stockCell = h('td', { class: 'stock-cell' }, stockLabel(product));
  const name = h('span', { class: 'visually-hidden' }, ` ${product.name}`);
  const buttons = {
    price: h('button', { type: 'button', class: 'small' }, 'Save price', name.cloneNode(true)),
    add: h('button', { type: 'button', class: 'small' }, 'Add', name.cloneNode(true)),
    set: h('button', { type: 'button', class: 'small' }, 'Set to', name.cloneNode(true)),
    remove: h('button', { type: 'button', class: 'small danger' }, 'Delete', name.cloneNode(true)),
  };
  const el = h('tr', { 'data-product-id': product.id },
    h('th', { scope: 'row' }, product.name, product.category ? h('div', { class: 'muted' }, product.category) : null),
    h('td', {}, priceLabel, price, ' ', buttons.price),
    stockCell,
    h('td', {}, amountLabel, amount, ' ', buttons.add, ' ', buttons.set),
    h('td', {}, buttons.remove));

  async function act(button, call, done) {
    button.disabled = true;
    try {
      const answer = await call();
      done(answer);
    } catch (error) {
      const details = Object.values(error.fields || {}).join('; ');
      toast(`${current.name}: ${details || error.message}`, { kind: 'error' });
    } finally {
      button.disabled = false;
    }
  }

  const changeStock = (body) => api(`/products/${product.id}/stock`, { method: 'POST', body });
  buttons.add.addEventListener('click', () => act(buttons.add, () => changeStock({ delta: Number(amount.value) }),
    (p) => toast(`${p.name}: stock is ${p.stock}.`, { kind: 'ok' })));
  buttons.set.addEventListener('click', () => act(buttons.set, () => changeStock({ set: Number(amount.value) }),
    (p) => toast(`${p.name}: stock is ${p.stock}.`, { kind: 'ok' })));
  buttons.price.addEventListener('click', () => act(buttons.price,
    () => api(`/products/${product.id}`, { method: 'PATCH', body: { price: price.value.trim() } }),
    (p) => toast(`${p.name}: price is ${money(p.price, p.currency)}.`, { kind: 'ok' })));
  let armed = null;
  buttons.remove.addEventListener('click', () => {
    if (!armed) { // a second click within 4 s confirms
      buttons.remove.firstChild.textContent = 'Really delete?';
      armed = setTimeout(() => { buttons.remove.firstChild.textContent = 'Delete'; armed = null; }, 4000);
      return;
    }
    clearTimeout(armed);
    act(buttons.remove, () => api(`/products/${product.id}`, { method: 'DELETE' }), () => {
      toast(`${current.name} removed from the catalog.`, { kind: 'ok' });
      reload();
    });
  });

  return {
    el,
    update(next) {
      current = next;
      stockCell.replaceChildren(stockLabel(next));
      if (document.activeElement !== price) price.value = next.price;
    },
  };
}

function newProductForm(created) {
  const inputs = {
    name: h('input', { type: 'text', name: 'name', required: true }),
    price: h('input', { type: 'text', name: 'price', inputmode: 'decimal', placeholder: '12.50', required: true }),
    stock: h('input', { type: 'number', name: 'stock', value: '10', inputmode: 'numeric' }),
    category: h('input', { type: 'text', name: 'category' }),
    low_stock_threshold: h('input', { type: 'number', name: 'low_stock_threshold', value: '10', inputmode: 'numeric' }),
    description: h('textarea', { name: 'description', rows: '2' }),
  };
  const form = h('form', { class: 'card new-product', 'aria-labelledby': 'new-product-title', novalidate: true },
    h('h2', { id: 'new-product-title' }, 'New product'), errorSummary(),
    h('div', { class: 'row wrap' }, field('Name', inputs.name).el, field('Price', inputs.price).el, field('Stock', inputs.stock).el,
      field('Category', inputs.category).el, field('Low-stock threshold', inputs.low_stock_threshold).el),
    field('Description', inputs.description).el, h('button', { type: 'submit', class: 'primary' }, 'Add product'));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors(form);
    const body = { name: inputs.name.value.trim(), price: inputs.price.value.trim(), stock: wholeOrText(inputs.stock.value) };
    if (inputs.category.value.trim()) body.category = inputs.category.value.trim();
    if (inputs.description.value.trim()) body.description = inputs.description.value.trim();
    if (inputs.low_stock_threshold.value.trim()) body.low_stock_threshold = wholeOrText(inputs.low_stock_threshold.value);
    try {
      const product = await api('/products', { method: 'POST', body });
      toast(`${product.name} added.`, { kind: 'ok' });
      form.reset();
      created();
    } catch (error) {
      showErrors(form, error, 'The product was not added.');
    }
  });
  return form;
}

function wholeOrText(value) {
  return /^\d+$/.test(value.trim()) ? Number(value.trim()) : value.trim();
}

// The order board -------------------------------------------------------------------------------

export async function adminOrdersPage(view) {
  const { main, scope } = view;
  if (!adminOnly(view)) return;
  view.title('Admin: order board');
  const status = h('p', { role: 'status', class: 'result-count' }, 'Loading…');
  const lists = {};
  const headings = {};
  // Focusable: the board scrolls sideways, and keyboards must be able to scroll it.
  const board = h('div', { class: 'board', role: 'region', 'aria-label': 'Orders by status', tabindex: '0' }, COLUMNS.map((column) => {
    lists[column] = h('ul', { 'aria-labelledby': `col-${column}` });
    headings[column] = h('h2', { id: `col-${column}` }, STATUS_LABELS[column]);
    return h('section', { class: 'column', 'data-status': column }, headings[column], lists[column]);
  }));
  main.append(status, board);
  const cards = new Map();

  const live = new LiveOrders(scope, 'admin:orders', {
    path: '/orders?limit=100',
    onError: (error) => { status.textContent = error.message; },
    onLoad: (orders) => {
      cards.clear();
      for (const column of COLUMNS) lists[column].replaceChildren();
      orders.sort((a, b) => (a.created_at < b.created_at ? 1 : -1)).forEach((order) => place(order, false));
      counts();
    },
    onChange: (order) => { place(order, true); counts(); },
  });

  function counts() {
    for (const column of COLUMNS) {
      const n = lists[column].children.length;
      headings[column].textContent = `${STATUS_LABELS[column]} (${n})`;
    }
    status.textContent = `${cards.size} order${cards.size === 1 ? '' : 's'}; the board moves as they change.`;
  }

  function place(order, first) {
    const old = cards.get(order.id);
    const card = orderCard(order);
    cards.set(order.id, card);
    if (old) old.remove();
    const list = lists[order.status] || lists.pending;
    if (first) list.prepend(card); else list.append(card);
  }

  function orderCard(order) {
    const items = (order.items || []).reduce((n, line) => n + line.quantity, 0);
    const actions = (TRANSITIONS[order.status] || []).map((target) => h('button', {
      type: 'button', class: `small${target === 'cancelled' ? ' danger' : ''}`, 'data-transition': target,
      onclick: (event) => move(order, target, event.currentTarget),
    }, ACTIONS[target], h('span', { class: 'visually-hidden' }, ` order ${order.number}`)));
    return h('li', { class: 'card order-card', 'data-order-id': order.id, 'data-number': order.number, 'data-status': order.status },
      h('div', { class: 'order-card-head' }, h('strong', {}, order.number), h('span', {}, money(order.total, order.currency))),
      h('div', { class: 'muted' }, `${items} item${items === 1 ? '' : 's'} · ${dateTime(order.created_at, session.user?.timezone)}`),
      actions.length ? h('div', { class: 'actions' }, actions) : null);
  }

  async function move(order, target, button) {
    button.disabled = true;
    try {
      live.put(await api(`/orders/${order.id}/transitions`, { method: 'POST', body: { status: target } }));
    } catch (error) {
      toast(`${order.number}: ${error.message}`, { kind: 'error' });
      button.disabled = false;
    }
  }
}
