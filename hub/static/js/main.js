// The app shell: navigation, the connection indicator, the bell, and a hash router that
// gives each page a scope whose listeners and timers end when the page is left.

import { logout } from './api.js';
import { cart } from './cart.js';
import { h } from './dom.js';
import { realtime } from './live.js';
import { adminCatalogPage, adminOrdersPage } from './pages/admin.js';
import { registerPage, signInPage } from './pages/auth.js';
import { adminBroadcastsPage } from './pages/broadcasts.js';
import { catalogPage } from './pages/catalog.js';
import { adminCouponsPage } from './pages/coupons.js';
import { cartPage } from './pages/checkout.js';
import { notificationsPage, startBell } from './pages/notifications.js';
import { orderPage, ordersPage } from './pages/orders.js';
import { preferencesPage } from './pages/preferences.js';
import { disablePush, resyncPush } from './push.js';
import { session } from './session.js';

const ROUTES = [
  [/^\/$/, catalogPage],
  [/^\/signin$/, signInPage],
  [/^\/register$/, registerPage],
  [/^\/cart$/, cartPage],
  [/^\/orders$/, ordersPage],
  [/^\/orders\/([A-Za-z0-9_-]{1,64})$/, orderPage],
  [/^\/notifications$/, notificationsPage],
  [/^\/preferences$/, preferencesPage],
  [/^\/admin$/, adminCatalogPage],
  [/^\/admin\/orders$/, adminOrdersPage],
  [/^\/admin\/coupons$/, adminCouponsPage],
  [/^\/admin\/broadcasts$/, adminBroadcastsPage],
];

class Scope {
  constructor() {
    this.alive = true;
    this.cleanups = [];
  }

  add(fn) { this.cleanups.push(fn); }

  listen(channel, options) {
    const stop = realtime.listen(channel, options);
    let stopped = false;
    const once = () => { if (!stopped) { stopped = true; stop(); } };
    this.add(once);
    return once;
  }

  dispose() {
    this.alive = false;
    for (const fn of this.cleanups.splice(0)) {
      try { fn(); } catch (exc) { console.warn(exc); }
    }
  }
}

let scope = null;

function parseHash() {
  const raw = location.hash.startsWith('#/') ? location.hash.slice(1) : '/';
  const [path, search = ''] = raw.split('?');
  return { path, query: new URLSearchParams(search) };
}

async function route() {
  if (location.hash && !location.hash.startsWith('#/')) return; // an in-page link (skip link)
  shown = location.hash;
  const { path, query } = parseHash();
  if (scope) scope.dispose();
  scope = new Scope();
  const main = document.getElementById('main');
  main.replaceChildren();
  main.removeAttribute('aria-busy');
  const heading = h('h1', { id: 'page-title', tabindex: '-1' });
  main.append(heading);
  const view = {
    main, query, scope, params: [],
    title(text) {
      heading.textContent = text;
      document.title = `${text} · The hub`;
    },
    requireUser() {
      if (session.user) return true;
      location.replace(`#/signin?next=${encodeURIComponent(path)}`);
      return false;
    },
  };
  markNav(path);
  const found = ROUTES.find(([pattern]) => pattern.test(path));
  if (!found) {
    view.title('Not found');
    main.append(h('p', {}, 'There is no such page. ', h('a', { href: '#/' }, 'Go to the catalog')));
    return;
  }
  view.params = path.match(found[0]).slice(1);
  const current = scope;
  main.setAttribute('aria-busy', 'true');
  try {
    await found[1](view);
  } catch (error) {
    console.warn('page failed', error);
    if (current.alive) main.append(h('p', { role: 'alert' }, error.message || 'Something went wrong.'));
  } finally {
    if (current.alive) main.removeAttribute('aria-busy');
  }
  if (current.alive && focusOnRender) heading.focus({ preventScroll: false });
  focusOnRender = true;
}

let focusOnRender = false; // not on the first render: the page starts at the top anyway
let shown = null; // the hash route() last rendered
let queued = false;
function scheduleRoute() {
  // A sign-in changes the session and the hash at once: render once.
  if (queued) return;
  queued = true;
  setTimeout(() => { queued = false; route(); }, 0);
}

// Navigation --------------------------------------------------------------------------------------

function link(href, text, extra = {}) {
  return h('li', {}, h('a', { href, ...extra }, text));
}

function renderNav() {
  const nav = document.getElementById('nav');
  const user = session.user;
  const cartLink = h('a', { href: '#/cart', id: 'cart-link' }, 'Cart ',
    h('span', { class: 'pill', id: 'cart-count' }, String(cart.count)),
    h('span', { class: 'visually-hidden' }, ' items'));
  const items = [link('#/', 'Catalog'), h('li', {}, cartLink)];
  if (user) {
    items.push(link('#/orders', 'My orders'), link('#/notifications', 'Inbox'), link('#/preferences', 'Preferences'));
    if (session.isAdmin) items.push(link('#/admin', 'Admin: catalog'), link('#/admin/orders', 'Order board'),
      link('#/admin/coupons', 'Coupons'), link('#/admin/broadcasts', 'Broadcasts'));
    items.push(h('li', {}, h('button', { type: 'button', class: 'link', id: 'sign-out', onclick: signOut },
      'Sign out', h('span', { class: 'visually-hidden' }, ` ${user.email}`))));
  } else {
    items.push(link('#/signin', 'Sign in'), link('#/register', 'Register'));
  }
  nav.replaceChildren(...items);
  document.getElementById('who').textContent = user ? (user.name || user.email) : '';
  markNav(parseHash().path);
}

function markNav(path) {
  for (const a of document.querySelectorAll('#nav a')) {
    const target = a.getAttribute('href').slice(1);
    if (target === path) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
}

async function signOut() {
  // A signed-out device gets no more of this user's pushes, and its refresh token dies.
  try { await disablePush(); } catch (error) { console.warn('could not turn push off', error); }
  const refreshToken = session.refreshToken;
  if (refreshToken) logout(refreshToken).catch((error) => console.warn('could not end the session', error));
  session.clear();
  location.hash = '#/';
}

function renderCartCount() {
  const count = document.getElementById('cart-count');
  if (count) count.textContent = String(cart.count);
}

// The connection indicator ------------------------------------------------------------------------

let countdown = null;
function renderConnection() {
  const el = document.getElementById('conn');
  const label = el.querySelector('.conn-label');
  clearInterval(countdown);
  const state = realtime.state;
  el.dataset.state = state;
  el.hidden = state === 'idle';
  if (state === 'online') label.textContent = 'Live';
  else if (state === 'connecting') label.textContent = 'Connecting…';
  else if (state === 'offline' && !navigator.onLine) label.textContent = 'Offline';
  else if (state === 'offline' && realtime.retryAt) {
    const tick = () => {
      const seconds = Math.max(0, Math.ceil((realtime.retryAt - Date.now()) / 1000));
      label.textContent = seconds ? `Reconnecting in ${seconds} s` : 'Reconnecting…';
    };
    tick();
    countdown = setInterval(tick, 1000);
  } else if (state === 'offline') label.textContent = 'Reconnecting…';
}

// Start -------------------------------------------------------------------------------------------

session.addEventListener('change', () => {
  renderNav();
  startBell();
  realtime.restart();
  scheduleRoute();
  if (session.user) resyncPush();
});
session.addEventListener('profile', renderNav);
cart.addEventListener('change', renderCartCount);
realtime.addEventListener('state', renderConnection);
// Two quick changes queue two hashchange events, and the first may arrive once the page shows
// the second hash already: rendering it again would read everything twice.
window.addEventListener('hashchange', () => { if (location.hash !== shown) scheduleRoute(); });
window.addEventListener('online', renderConnection);
window.addEventListener('offline', renderConnection);

// The service worker asks an open tab to show what a clicked notification is about.
if ('serviceWorker' in navigator) {
  navigator.serviceWorker.addEventListener('message', (event) => {
    if (event.data && event.data.type === 'open' && typeof event.data.url === 'string') {
      const url = new URL(event.data.url, location.origin);
      if (url.origin === location.origin) location.hash = url.hash || '#/';
    }
  });
  navigator.serviceWorker.startMessages();
}

document.getElementById('skip-link').addEventListener('click', (event) => {
  event.preventDefault(); // the hash is the route: focus the content instead
  document.getElementById('main').focus();
});

renderNav();
renderConnection();
startBell();
route();
if (session.user) resyncPush();
