// Cart and checkout. Each checkout attempt has its own Idempotency-Key: a network failure
// is retried with the same key (the hub answers the same order, never a second one); a
// changed cart or a new click is a new attempt with a new key.

import { ApiError, api } from '../api.js';
import { cart } from '../cart.js';
import { errorSummary, field, h, money, newKey, showErrors, clearErrors } from '../dom.js';
import { session } from '../session.js';

export async function cartPage(view) {
  const { main, scope } = view;
  view.title('Your cart');
  const body = h('div');
  main.append(body);

  function render() {
    const items = cart.items;
    if (!items.length) {
      body.replaceChildren(h('p', {}, 'Your cart is empty. ', h('a', { href: '#/' }, 'Browse the catalog')));
      return;
    }
    const currency = items[0].currency || 'USD';
    const total = items.reduce((sum, line) => sum + Number(line.price) * line.quantity, 0);
    const rows = items.map((line) => {
      const qty = h('input', { type: 'number', min: '0', max: '1000', value: String(line.quantity), name: `qty-${line.product_id}`, inputmode: 'numeric' });
      const id = `qty-${line.product_id}`;
      qty.id = id;
      qty.addEventListener('change', () => cart.set(line.product_id, Math.max(0, Math.floor(Number(qty.value) || 0))));
      return h('tr', { 'data-product-id': line.product_id },
        h('th', { scope: 'row' }, line.name),
        h('td', {}, money(line.price, line.currency)),
        h('td', {}, h('label', { for: id, class: 'visually-hidden' }, `Quantity of ${line.name}`), qty),
        h('td', {}, money(Number(line.price) * line.quantity, line.currency)),
        h('td', {}, h('button', { type: 'button', class: 'link', onclick: () => cart.set(line.product_id, 0) },
          'Remove', h('span', { class: 'visually-hidden' }, ` ${line.name}`))));
    });
    const table = h('div', { class: 'table-wrap' }, h('table', { class: 'cart' },
      h('caption', { class: 'visually-hidden' }, 'Items in your cart'),
      h('thead', {}, h('tr', {}, ['Product', 'Price', 'Quantity', 'Line total'].map((t) => h('th', { scope: 'col' }, t)),
        h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, 'Actions')))),
      h('tbody', {}, rows),
      h('tfoot', {}, h('tr', {}, h('th', { scope: 'row', colspan: '3' }, 'Estimated total'),
        h('td', { class: 'total' }, money(total, currency)), h('td')))));
    body.replaceChildren(table, checkoutForm());
  }

  function checkoutForm() {
    const address = h('textarea', { name: 'shipping_address', rows: '3', autocomplete: 'shipping street-address' });
    const note = h('input', { type: 'text', name: 'note', maxlength: '1000' });
    const submit = h('button', { type: 'submit', class: 'primary' }, 'Place order');
    const form = h('form', { class: 'checkout', 'aria-label': 'Checkout', novalidate: true },
      errorSummary(), field('Shipping address', address).el, field('Note (optional)', note).el,
      h('p', { class: 'hint' }, 'The shop prices your order. It waits for payment until the shop confirms it.'), submit);
    if (!session.user) {
      submit.disabled = true;
      form.append(h('p', {}, h('a', { href: '#/signin?next=/cart' }, 'Sign in'), ' or ',
        h('a', { href: '#/register?next=/cart' }, 'create an account'), ' to place the order.'));
    }
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      clearErrors(form);
      const payload = { items: cart.items.map((line) => ({ product_id: line.product_id, quantity: line.quantity })) };
      if (address.value.trim()) payload.shipping_address = address.value.trim();
      if (note.value.trim()) payload.note = note.value.trim();
      submit.disabled = true;
      submit.textContent = 'Placing order…';
      try {
        const order = await placeOrder(payload, newKey());
        cart.clear();
        location.hash = `#/orders/${order.id}`;
      } catch (error) {
        if (!scope.alive) return;
        showErrors(form, error, describe(error));
        if (error.code === 'out_of_stock' || error.code === 'unknown_product') markShort(error.details);
      } finally {
        submit.disabled = false;
        submit.textContent = 'Place order';
      }
    });
    return form;
  }

  function markShort(details) {
    for (const line of details || []) {
      const row = body.querySelector(`tr[data-product-id="${CSS.escape(line.product_id)}"]`);
      if (row) row.classList.add('short');
    }
  }

  render();
  cart.addEventListener('change', render);
  scope.add(() => cart.removeEventListener('change', render));
}

/** POST /orders with `key`, retried with the same key while the hub cannot be reached. */
async function placeOrder(payload, key) {
  for (let attempt = 0; ; attempt += 1) {
    try {
      return await api('/orders', { method: 'POST', body: payload, idempotencyKey: key });
    } catch (error) {
      if (!(error instanceof ApiError) || error.status !== 0 || attempt >= 2) throw error;
      await new Promise((resolve) => setTimeout(resolve, 1000 * (attempt + 1)));
    }
  }
}

function describe(error) {
  if (error.code === 'out_of_stock') {
    const lines = (error.details || []).map((line) => {
      const name = (cart.lines[line.product_id] || {}).name || line.product_id;
      return line.available > 0
        ? `${name}: only ${line.available} left (you asked for ${line.requested})`
        : `${name}: sold out`;
    });
    return `Not enough stock, nothing was ordered. ${lines.join('; ')}.`;
  }
  if (error.code === 'unknown_product') return 'A product in your cart is no longer sold. Remove it and try again.';
  return error.message;
}
