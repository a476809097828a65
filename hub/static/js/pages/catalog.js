// Catalog: search and filters (kept in the URL), product cards with live stock.

import { api } from '../api.js';
import { cart } from '../cart.js';
import { checkbox, field, h, money, toast } from '../dom.js';
import { LiveProducts, stockLabel } from '../products.js';

const PAGE_SIZE = 12;
let categories = null; // read once per page load of the app

async function loadCategories() {
  if (categories) return categories;
  // The API has no list of categories: take them from the first 100 products by name.
  const answer = await api('/products?limit=100&sort=name');
  categories = [...new Set(answer.items.map((p) => p.category).filter(Boolean))].sort();
  return categories;
}

export async function catalogPage(view) {
  const { main, query, scope } = view;
  view.title('Catalog');

  const q = h('input', { type: 'search', name: 'q', value: query.get('q') || '', autocomplete: 'off', placeholder: 'mug, notebook…' });
  const category = h('select', { name: 'category' }, h('option', { value: '' }, 'All categories'));
  const inStock = checkbox('In stock only', { name: 'in_stock', checked: query.get('in_stock') === 'true' });
  const sort = h('select', { name: 'sort' },
    [['newest', 'Newest'], ['price', 'Price: low to high'], ['-price', 'Price: high to low'], ['name', 'Name']]
      .map(([value, label]) => h('option', { value, selected: query.get('sort') === value }, label)));
  const minPrice = h('input', { type: 'number', name: 'min_price', min: '0', step: '0.01', inputmode: 'decimal', value: query.get('min_price') || '' });
  const maxPrice = h('input', { type: 'number', name: 'max_price', min: '0', step: '0.01', inputmode: 'decimal', value: query.get('max_price') || '' });
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Search the catalog' },
    field('Search products', q).el, field('Category', category).el, field('Sort by', sort).el,
    field('Min price', minPrice).el, field('Max price', maxPrice).el, inStock.el,
    h('button', { type: 'submit' }, 'Search'));
  const count = h('p', { class: 'result-count', role: 'status' });
  const grid = h('ul', { class: 'grid products', 'aria-label': 'Products' });
  const pager = h('nav', { class: 'pager', 'aria-label': 'Result pages' });
  main.append(form, count, grid, pager);

  let page = Math.max(1, Number(query.get('page')) || 1);
  const cards = new Map(); // product id -> card element
  const live = new LiveProducts(scope, { update: (product) => cards.get(product.id)?.update(product) });

  loadCategories().then((names) => {
    if (!scope.alive) return;
    for (const name of names) category.append(h('option', { value: name, selected: query.get('category') === name }, name));
  }).catch(() => {});

  function params() {
    const p = new URLSearchParams();
    for (const [name, value] of new FormData(form)) if (value !== '') p.set(name, value === 'on' ? 'true' : value);
    if (!q.value.trim()) p.delete('q');
    if (p.get('sort') === 'newest') p.delete('sort'); // the default
    if (page > 1) p.set('page', String(page));
    return p;
  }

  async function load() {
    const shown = params();
    history.replaceState(null, "", shown.toString() ? `#/?${shown}` : "#/");
    const request = new URLSearchParams(shown);
    request.set('limit', String(PAGE_SIZE));
    grid.setAttribute('aria-busy', 'true');
    let answer;
    try {
      answer = await live.load(request.toString());
    } catch (exc) {
      if (!scope.alive) return;
      count.textContent = exc.status === 422 ? `Check the filters: ${Object.values(exc.fields).join('; ') || exc.message}` : exc.message;
      grid.replaceChildren();
      grid.removeAttribute('aria-busy');
      return;
    }
    if (!scope.alive) return;
    grid.removeAttribute('aria-busy');
    cards.clear();
    grid.replaceChildren(...answer.items.map((product) => {
      const card = productCard(product);
      cards.set(product.id, card);
      return card.el;
    }));
    count.textContent = answer.total === 0 ? 'No products match.' : `${answer.total} product${answer.total === 1 ? '' : 's'}`;
    const pages = Math.max(1, Math.ceil(answer.total / PAGE_SIZE));
    pager.replaceChildren(
      h('button', { type: 'button', disabled: page <= 1, onclick: () => { page -= 1; load(); } }, 'Previous'),
      h('span', {}, `Page ${page} of ${pages}`),
      h('button', { type: 'button', disabled: page >= pages, onclick: () => { page += 1; load(); } }, 'Next'));
  }

  let debounce = null;
  form.addEventListener('input', () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => { page = 1; load(); }, 300);
  });
  scope.add(() => clearTimeout(debounce));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    clearTimeout(debounce);
    page = 1;
    load();
  });
  await load();
}

function productCard(product) {
  const titleId = `product-${product.id}`;
  const price = h('p', { class: 'price' }, money(product.price, product.currency));
  let stock = stockLabel(product);
  const quantity = h('input', { type: 'number', name: 'quantity', min: '1', max: String(Math.max(1, product.stock)), value: '1', inputmode: 'numeric' });
  const button = h('button', { type: 'submit' }, 'Add to cart', h('span', { class: 'visually-hidden' }, `: ${product.name}`));
  const form = h('form', { class: 'add-to-cart' }, field('Quantity', quantity).el, button);
  const article = h('article', { class: 'card product', 'data-product-id': product.id, 'aria-labelledby': titleId },
    h('h2', { id: titleId }, product.name),
    product.category ? h('p', { class: 'category' }, product.category) : null,
    product.description ? h('p', { class: 'description' }, product.description) : null,
    price, stock, form);
  let current = product;

  function sync() {
    const soldOut = current.stock <= 0;
    button.disabled = soldOut;
    quantity.disabled = soldOut;
    quantity.max = String(Math.max(1, current.stock));
    article.classList.toggle('sold-out', soldOut);
  }
  sync();

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const n = Math.max(1, Math.floor(Number(quantity.value) || 1));
    cart.add(current, n).then(() => toast(`Added ${n} × ${current.name} to the cart.`, { kind: 'ok', href: '#/cart' }),
      (error) => toast(error.message, { kind: 'error' }));
  });

  return {
    el: h('li', {}, article),
    update(next) {
      current = next;
      const label = stockLabel(next);
      // Same element, new text: the aria-live region announces the change.
      stock.className = label.className;
      stock.dataset.stock = label.dataset.stock;
      stock.textContent = label.textContent;
      price.textContent = money(next.price, next.currency);
      sync();
    },
  };
}
