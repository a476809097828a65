// Live product state shared by the catalog and the admin catalog: stock labels, and a
// product list kept current through product:<id> channels.
//
// A list read (GET /products) is a snapshot without a channel seq, so it is taken twice:
// read, subscribe every product on it, and once all are subscribed read again. Changes
// before the subscriptions are in the second read; changes after reach us as frames.
// inventory.* events carry absolute values (available, price) and their time, products
// their updated_at, so whichever is newer wins, in whatever order they arrive.

import { api } from './api.js';
import { h, stamp } from './dom.js';

export function stockState(stock, threshold) {
  if (stock <= 0) return { kind: 'sold-out', text: 'Sold out' };
  if (stock < threshold) return { kind: 'low', text: `Low stock: only ${stock} left` };
  return { kind: 'ok', text: `${stock} in stock` };
}

export function stockLabel(product) {
  const state = stockState(product.stock, product.low_stock_threshold);
  return h('p', { class: `stock stock-${state.kind}`, 'data-stock': product.stock, 'aria-live': 'polite' }, state.text);
}

/** Follows the products of a list. `render(products)` draws them; `update(product)` is
 * called with a changed product (a new object) after a frame or a newer read. */
export class LiveProducts {
  constructor(scope, { update }) {
    this.scope = scope;
    this.update = update;
    this.products = new Map(); // id -> product (with _stamp)
    this.stops = [];
    this.query = null;
    this.reloading = null;
  }

  /** Reads the list (GET /products?<query>), returns the answer; then follows its items. */
  async load(query) {
    this.query = query;
    for (const stop of this.stops) stop();
    this.stops = [];
    const answer = await api(`/products?${query}`);
    this.products = new Map(answer.items.map((p) => [p.id, { ...p, _stamp: stamp(p.updated_at) }]));
    let waiting = answer.items.length;
    for (const product of answer.items) {
      let first = true;
      this.stops.push(this.scope.listen(`product:${product.id}`, {
        onFrame: (frame) => this._onEvent(frame.event),
        onReset: () => this._reread(),
        onSubscribed: () => {
          if (!first) return;
          first = false;
          waiting -= 1;
          if (waiting === 0) this._reread();
        },
      }));
    }
    return answer;
  }

  _onEvent(event) {
    if (!event || !event.type.startsWith('inventory.')) return;
    const data = event.data || {};
    const current = this.products.get(data.product_id);
    const at = stamp(event.time);
    if (!current || at < current._stamp) return; // the page shows something newer
    const next = { ...current, stock: data.available, _stamp: at };
    if (typeof data.low_stock_threshold === 'number') next.low_stock_threshold = data.low_stock_threshold;
    if (data.price) next.price = data.price;
    this.products.set(next.id, next);
    this.update(next);
  }

  _reread() {
    // Several resets at once (every product after a long outage) make one read.
    if (this.reloading) return;
    const query = this.query;
    this.reloading = Promise.resolve().then(async () => {
      try {
        const answer = await api(`/products?${query}`);
        if (!this.scope.alive || query !== this.query) return;
        for (const product of answer.items) {
          const current = this.products.get(product.id);
          const fresh = { ...product, _stamp: stamp(product.updated_at) };
          if (current && fresh._stamp >= current._stamp) {
            this.products.set(product.id, fresh);
            this.update(fresh);
          }
        }
      } catch (exc) {
        console.warn('could not reload the products', exc);
      } finally {
        this.reloading = null;
      }
    });
  }
}
