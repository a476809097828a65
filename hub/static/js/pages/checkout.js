// Cart and checkout. Each checkout attempt has its own Idempotency-Key: a network failure
// is retried with the same key (the hub answers the same order, never a second one); a
// changed cart or a new click is a new attempt with a new key. Signed in, the cart is the
// hub's: it shows the hub's prices, stock, coupon and points, and the order is placed from it.

import { ApiError, api } from '../api.js';
import { cart } from '../cart.js';
import { errorSummary, field, h, money, newKey, showErrors, clearErrors, toast } from '../dom.js';
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
    const summary = cart.summary;
    const total = summary ? Number(summary.total) : items.reduce((sum, line) => sum + Number(line.price) * line.quantity, 0);
    const rows = items.map((line) => {
      const qty = h('input', { type: 'number', min: '0', max: '1000', value: String(line.quantity), name: `qty-${line.product_id}`, inputmode: 'numeric' });
      const id = `qty-${line.product_id}`;
      qty.id = id;
      qty.addEventListener('change', () => cart.set(line.product_id, Math.max(0, Math.floor(Number(qty.value) || 0)))
        .catch((error) => toast(error.message, { kind: 'error' })));
      const short = line.available !== undefined && line.available < line.quantity;
      return h('tr', { 'data-product-id': line.product_id, class: short ? 'short' : '' },
        h('th', { scope: 'row' }, line.name,
          short ? h('small', { class: 'hint' }, line.available > 0 ? ` (only ${line.available} left)` : ' (sold out)') : null),
        h('td', {}, money(line.price, line.currency)),
        h('td', {}, h('label', { for: id, class: 'visually-hidden' }, `Quantity of ${line.name}`), qty),
        h('td', {}, money(Number(line.price) * line.quantity, line.currency)),
        h('td', {}, h('button', { type: 'button', class: 'link', onclick: () => cart.set(line.product_id, 0).catch((error) => toast(error.message, { kind: 'error' })) },
          'Remove', h('span', { class: 'visually-hidden' }, ` ${line.name}`))));
    });
    const table = h('div', { class: 'table-wrap' }, h('table', { class: 'cart' },
      h('caption', { class: 'visually-hidden' }, 'Items in your cart'),
      h('thead', {}, h('tr', {}, ['Product', 'Price', 'Quantity', 'Line total'].map((t) => h('th', { scope: 'col' }, t)),
        h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, 'Actions')))),
      h('tbody', {}, rows),
      h('tfoot', {}, summary ? [
        totalRow('Subtotal', summary.subtotal, currency),
        summary.coupon_code ? totalRow(`Coupon ${summary.coupon_code}`, `-${summary.discount}`, currency) : null,
        summary.points_used ? totalRow(`${summary.points_used} points`, `-${summary.points_value}`, currency) : null,
      ] : null, h('tr', {}, h('th', { scope: 'row', colspan: '3' }, summary ? 'Total' : 'Estimated total'),
        h('td', { class: 'total' }, money(total, currency)), h('td')))));
    body.replaceChildren(table, ...(summary ? [discountsForm(summary)] : []), checkoutForm());
  }

  function totalRow(label, amount, currency) {
    return h('tr', {}, h('th', { scope: 'row', colspan: '3' }, label), h('td', {}, money(amount, currency)), h('td'));
  }

  /** Coupon and points (signed in): kept in the hub's cart, applied when the order is placed. */
  function discountsForm(summary) {
    const code = h('input', { type: 'text', name: 'code', maxlength: '40', autocomplete: 'off', value: summary.coupon_code || '' });
    const points = h('input', { type: 'number', name: 'points', min: '0', inputmode: 'numeric', value: String(summary.points || 0) });
    const form = h('form', { class: 'discounts', 'aria-label': 'Coupon and points', novalidate: true }, errorSummary(),
      field('Coupon code', code, summary.coupon_error ? summary.coupon_error.message : null).el,
      h('button', { type: 'submit', name: 'apply' }, 'Apply coupon'),
      summary.coupon_code ? h('button', { type: 'button', class: 'link', onclick: () => act(form, () => cart.removeCoupon()) },
        'Remove coupon') : null,
      field('Points to spend', points, 'Up to your balance and the total.').el,
      h('button', { type: 'button', name: 'use-points',
        onclick: () => act(form, () => cart.setPoints(Math.max(0, Math.floor(Number(points.value) || 0)))) }, 'Use points'));
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      act(form, () => (code.value.trim() ? cart.setCoupon(code.value.trim()) : cart.removeCoupon()));
    });
    return form;
  }

  async function act(form, change) {
    clearErrors(form);
    try {
      await change();
    } catch (error) {
      if (!scope.alive) return;
      const reason = error.code === 'coupon_invalid' && error.details ? COUPON_REASONS[error.details.reason] : null;
      showErrors(form, error, reason || error.message);
    }
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
      const payload = cart.signedIn ? { from_cart: true }
        : { items: cart.items.map((line) => ({ product_id: line.product_id, quantity: line.quantity })) };
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
      const name = (cart.items.find((item) => item.product_id === line.product_id) || {}).name || line.product_id;
      return line.available > 0
        ? `${name}: only ${line.available} left (you asked for ${line.requested})`
        : `${name}: sold out`;
    });
    return `Not enough stock, nothing was ordered. ${lines.join('; ')}.`;
  }
  if (error.code === 'unknown_product') return 'A product in your cart is no longer sold. Remove it and try again.';
  if (error.code === 'coupon_invalid' && error.details) return COUPON_REASONS[error.details.reason] || error.message;
  return error.message;
}

const COUPON_REASONS = {
  unknown: 'There is no such coupon.',
  not_started: 'This coupon is not valid yet.',
  expired: 'This coupon has expired.',
  min_subtotal: 'Your cart is below this coupon\'s minimum.',
  exhausted: 'This coupon has been used up.',
  per_user_limit: 'You have already used this coupon as often as allowed.',
  not_applicable: 'This coupon applies to none of the products in your cart.',
};
