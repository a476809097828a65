// Admin: coupons (CONTRACT v2 §5): create, list with their redemption counts, deactivate
// and reactivate. The rules and rounding are the hub's (docs/cart.md).

import { api } from '../api.js';
import { clearErrors, dateTime, errorSummary, field, h, showErrors, toast } from '../dom.js';
import { session } from '../session.js';

export async function adminCouponsPage(view) {
  const { main, scope } = view;
  if (!view.requireUser()) return;
  if (!session.isAdmin) {
    view.title('Admins only');
    main.append(h('p', { role: 'alert' }, 'This page is for the shop’s admins.'));
    return;
  }
  view.title('Admin: coupons');
  const tbody = h('tbody');
  const table = h('div', { class: 'table-wrap' }, h('table', { class: 'admin-coupons' },
    h('caption', { class: 'visually-hidden' }, 'Coupons and how often they were used'),
    h('thead', {}, h('tr', {}, ['Code', 'Discount', 'Rules', 'Valid', 'Redemptions', 'Status']
      .map((t) => h('th', { scope: 'col' }, t)), h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, 'Actions')))),
    tbody));
  main.append(newCouponForm(() => load()), table);

  async function load() {
    const answer = await api('/coupons?limit=100');
    if (!scope.alive) return;
    tbody.replaceChildren(...answer.items.map((coupon) => couponRow(coupon, load)));
    if (!answer.items.length) tbody.append(h('tr', {}, h('td', { colspan: '7' }, 'No coupons yet.')));
  }
  await load();
}

function couponRow(coupon, reload) {
  const zone = session.user && session.user.timezone;
  const discount = coupon.kind === 'percent' ? `${Number(coupon.value)} %` : coupon.value;
  const rules = [
    coupon.max_discount ? `at most ${coupon.max_discount}` : null,
    Number(coupon.min_subtotal) > 0 ? `from ${coupon.min_subtotal}` : null,
    `${coupon.per_user_limit} per user`,
    coupon.product_ids.length ? `${coupon.product_ids.length} product(s)` : null,
  ].filter(Boolean).join(', ');
  const valid = [coupon.starts_at ? `from ${dateTime(coupon.starts_at, zone)}` : null,
    coupon.ends_at ? `until ${dateTime(coupon.ends_at, zone)}` : null].filter(Boolean).join(' ') || 'always';
  const toggle = h('button', { type: 'button', class: coupon.active ? 'small danger' : 'small' },
    coupon.active ? 'Deactivate' : 'Reactivate', h('span', { class: 'visually-hidden' }, ` ${coupon.code}`));
  toggle.addEventListener('click', async () => {
    toggle.disabled = true;
    try {
      const changed = await api(`/coupons/${encodeURIComponent(coupon.code)}`, { method: 'PATCH', body: { active: !coupon.active } });
      toast(`${changed.code} is ${changed.active ? 'active' : 'deactivated'}.`, { kind: 'ok' });
      reload();
    } catch (error) {
      toast(`${coupon.code}: ${error.message}`, { kind: 'error' });
      toggle.disabled = false;
    }
  });
  return h('tr', { 'data-code': coupon.code },
    h('th', { scope: 'row' }, coupon.code), h('td', {}, discount), h('td', {}, rules), h('td', {}, valid),
    h('td', { class: 'redemptions' }, coupon.max_redemptions ? `${coupon.redemptions} / ${coupon.max_redemptions}` : String(coupon.redemptions)),
    h('td', {}, coupon.active ? 'active' : 'deactivated'), h('td', {}, toggle));
}

function newCouponForm(created) {
  const inputs = {
    code: h('input', { type: 'text', name: 'code', maxlength: '40', autocomplete: 'off', required: true }),
    kind: h('select', { name: 'kind' }, h('option', { value: 'percent' }, 'Percent'), h('option', { value: 'amount' }, 'Amount')),
    value: h('input', { type: 'text', name: 'value', inputmode: 'decimal', placeholder: '10', required: true }),
    max_discount: h('input', { type: 'text', name: 'max_discount', inputmode: 'decimal' }),
    min_subtotal: h('input', { type: 'text', name: 'min_subtotal', inputmode: 'decimal' }),
    max_redemptions: h('input', { type: 'number', name: 'max_redemptions', min: '1', inputmode: 'numeric' }),
    per_user_limit: h('input', { type: 'number', name: 'per_user_limit', min: '1', value: '1', inputmode: 'numeric' }),
    ends_at: h('input', { type: 'datetime-local', name: 'ends_at' }),
  };
  const form = h('form', { class: 'card new-coupon', 'aria-labelledby': 'new-coupon-title', novalidate: true },
    h('h2', { id: 'new-coupon-title' }, 'New coupon'), errorSummary(),
    h('div', { class: 'row wrap' }, field('Code', inputs.code).el, field('Kind', inputs.kind).el,
      field('Value', inputs.value, 'A percentage, or an amount').el, field('Largest discount', inputs.max_discount).el,
      field('Minimum subtotal', inputs.min_subtotal).el, field('Redemptions in all', inputs.max_redemptions).el,
      field('Per user', inputs.per_user_limit).el, field('Ends at', inputs.ends_at).el),
    h('button', { type: 'submit', class: 'primary' }, 'Create coupon'));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors(form);
    const body = { code: inputs.code.value.trim(), kind: inputs.kind.value, value: inputs.value.value.trim() };
    for (const name of ['max_discount', 'min_subtotal']) {
      if (inputs[name].value.trim()) body[name] = inputs[name].value.trim();
    }
    for (const name of ['max_redemptions', 'per_user_limit']) {
      const text = inputs[name].value.trim();
      if (text) body[name] = /^\d+$/.test(text) ? Number(text) : text;
    }
    if (inputs.ends_at.value) body.ends_at = new Date(inputs.ends_at.value).toISOString();
    try {
      const coupon = await api('/coupons', { method: 'POST', body });
      toast(`Coupon ${coupon.code} created.`, { kind: 'ok' });
      form.reset();
      created();
    } catch (error) {
      showErrors(form, error, 'The coupon was not created.');
    }
  });
  return form;
}
