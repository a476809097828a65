// The cart. A signed-out visitor's lives in this browser (localStorage): {product_id:
// {quantity, name, price, currency}}, prices for display only. Once signed in, the cart is
// the hub's (/users/me/cart): it follows the user to their other devices, which hear each
// change live (`cart.updated` on the `user` channel). On sign-in the browser's lines are added
// to the hub's cart (a product already there keeps the larger quantity) and forgotten here.
// Event "change" whenever what `items` returns may have changed.

import { api } from './api.js';
import { realtime } from './live.js';
import { session } from './session.js';

const KEY = 'hub.cart';
const MAX_QUANTITY = 1000;

class Cart extends EventTarget {
  constructor() {
    super();
    this.lines = this._load();
    this.remote = null; // the hub's cart view while signed in
    this.stopLive = null;
    window.addEventListener('storage', (event) => {
      if (event.key === KEY) { this.lines = this._load(); this._changed(false); }
    });
    session.addEventListener('change', () => this.connect());
    this.connect();
  }

  _load() {
    try {
      const lines = JSON.parse(localStorage.getItem(KEY) || '{}');
      return lines && typeof lines === 'object' ? lines : {};
    } catch {
      return {};
    }
  }

  _changed(save = true) {
    if (save) localStorage.setItem(KEY, JSON.stringify(this.lines));
    this.dispatchEvent(new Event('change'));
  }

  /** A cart view from the hub, unless an older one than what is shown (frames and answers race). */
  _show(view) {
    if (!view || (this.remote && view.version < this.remote.version)) return;
    this.remote = view;
    this._changed(false);
  }

  get signedIn() { return Boolean(session.user) && this.remote !== null; }

  /** Signed in: merge this browser's lines into the hub's cart and follow it live. */
  async connect() {
    if (this.stopLive) this.stopLive();
    this.stopLive = null;
    this.remote = null;
    if (!session.user) { this._changed(false); return; }
    const user = session.user.id;
    try {
      let view = await api('/users/me/cart');
      for (const [productId, line] of Object.entries(this.lines)) {
        const there = view.items.find((item) => item.product_id === productId);
        if (there && there.quantity >= line.quantity) continue;
        try {
          view = await api(`/users/me/cart/items/${encodeURIComponent(productId)}`,
            { method: 'PUT', body: { quantity: line.quantity } });
        } catch (error) {
          console.warn('a line of this browser\'s cart was not kept', productId, error);
        }
      }
      if (!session.user || session.user.id !== user) return; // signed out or switched meanwhile
      this.lines = {};
      localStorage.removeItem(KEY);
      this.stopLive = realtime.listen('user', {
        onFrame: (frame) => {
          if (frame.type === 'event' && frame.event.type === 'cart.updated') this._show(frame.event.data.cart);
        },
        onReset: () => this.refresh(),
      });
      this._show(view);
    } catch (error) {
      console.warn('the cart could not be loaded', error);
    }
  }

  async refresh() {
    if (session.user) this._show(await api('/users/me/cart'));
  }

  get count() {
    return this.items.reduce((sum, line) => sum + line.quantity, 0);
  }

  get items() {
    if (this.remote) {
      return this.remote.items.map((item) => ({ ...item, currency: this.remote.currency }));
    }
    return Object.entries(this.lines).map(([productId, line]) => ({ product_id: productId, ...line }));
  }

  /** What the hub would charge (signed in): subtotal, coupon, discount, points, total. */
  get summary() { return this.remote; }

  async _change(path, options) {
    this._show(await api(`/users/me/cart${path}`, options));
  }

  async add(product, quantity) {
    const line = this.items.find((item) => item.product_id === product.id);
    const next = Math.min(MAX_QUANTITY, (line ? line.quantity : 0) + quantity);
    if (this.signedIn) return this.set(product.id, next);
    this.lines[product.id] = { name: product.name, price: product.price, currency: product.currency, quantity: next };
    this._changed();
  }

  async set(productId, quantity) {
    const wanted = Math.max(0, Math.min(MAX_QUANTITY, quantity));
    if (this.signedIn) {
      return this._change(`/items/${encodeURIComponent(productId)}`, { method: 'PUT', body: { quantity: wanted } });
    }
    if (!this.lines[productId]) return;
    if (wanted > 0) this.lines[productId].quantity = wanted;
    else delete this.lines[productId];
    this._changed();
  }

  async setCoupon(code) {
    return this._change('/coupon', { method: 'PUT', body: { code } });
  }

  async removeCoupon() {
    return this._change('/coupon', { method: 'DELETE' });
  }

  async setPoints(points) {
    return this._change('/points', { method: 'PUT', body: { points } });
  }

  async clear() {
    if (this.signedIn) return this.refresh(); // the hub empties the cart an order was placed from
    this.lines = {};
    this._changed();
  }
}

export const cart = new Cart();
