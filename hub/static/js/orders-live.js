// A list of orders kept current from a channel that carries order.* events: `user` (the
// customer's own orders) or `admin:orders` (every order).
//
// Listen first; once the channel is followed, read the list by REST; from then on every
// change arrives as a frame. An order's updated_at and an event's time come from the same
// clock reading, so whichever is newer wins: frames that raced the read apply only when
// they are newer than what the read showed. A reset (history could not fill a gap after a
// reconnect) reads the list again.

import { api } from './api.js';
import { stamp } from './dom.js';

export class LiveOrders {
  constructor(scope, channel, { path, onLoad, onChange, onError = () => {} }) {
    this.scope = scope;
    this.path = path;
    this.onLoad = onLoad; // (orders) after every read
    this.onChange = onChange; // (order, isNew) after a frame changed one
    this.onError = onError;
    this.orders = new Map();
    this.loaded = false;
    this.stash = [];
    this.reading = false;
    scope.listen(channel, {
      onSubscribed: () => { if (!this.loaded) this.read(); },
      onFrame: (frame) => this._onFrame(frame),
      onReset: () => this.read(),
    });
  }

  async read() {
    if (this.reading) return;
    this.reading = true;
    try {
      const answer = await api(this.path);
      if (!this.scope.alive) return;
      this.orders = new Map(answer.items.map((order) => [order.id, { ...order, _stamp: stamp(order.updated_at) }]));
      this.loaded = true;
      this.onLoad([...this.orders.values()], answer);
      const stash = this.stash;
      this.stash = [];
      for (const event of stash) this._apply(event);
    } catch (error) {
      if (this.scope.alive) this.onError(error);
    } finally {
      this.reading = false;
    }
  }

  /** An order as a REST answer returned it (after an action): newer state wins. */
  put(order) {
    const fresh = { ...order, _stamp: stamp(order.updated_at) };
    const current = this.orders.get(order.id);
    if (current && fresh._stamp < current._stamp) return;
    this.orders.set(order.id, fresh);
    this.onChange(fresh, !current);
  }

  _onFrame(frame) {
    const event = frame.event;
    if (frame.type !== 'event' || !event || !event.type.startsWith('order.')) return;
    if (!this.loaded || this.reading) this.stash.push(event);
    else this._apply(event);
  }

  _apply(event) {
    const data = event.data || {};
    const at = stamp(event.time);
    const current = this.orders.get(data.order_id);
    if (current && at <= current._stamp) return; // the read showed this already, or newer
    const order = current
      ? { ...current }
      : { id: data.order_id, number: data.number, user_id: data.user_id, created_at: event.time, status_history: [],
          items: (data.items || []).map((line) => ({ ...line, name: null })) };
    Object.assign(order, { status: data.status, total: data.total, currency: data.currency, updated_at: event.time, _stamp: at });
    order.status_history = [...(order.status_history || []), { status: data.status, at: event.time, note: null }];
    this.orders.set(order.id, order);
    this.onChange(order, !current);
  }
}
