// The cart lives in this browser only (localStorage): {product_id: {quantity, name, price,
// currency}}. Prices here are for display; the hub prices the order itself.

const KEY = 'hub.cart';

class Cart extends EventTarget {
  constructor() {
    super();
    this.lines = this._load();
    window.addEventListener('storage', (event) => {
      if (event.key === KEY) { this.lines = this._load(); this._changed(false); }
    });
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

  get count() {
    return Object.values(this.lines).reduce((sum, line) => sum + line.quantity, 0);
  }

  get items() {
    return Object.entries(this.lines).map(([productId, line]) => ({ product_id: productId, ...line }));
  }

  add(product, quantity) {
    const line = this.lines[product.id];
    this.lines[product.id] = {
      name: product.name, price: product.price, currency: product.currency,
      quantity: Math.min(1000, (line ? line.quantity : 0) + quantity),
    };
    this._changed();
  }

  set(productId, quantity) {
    if (!this.lines[productId]) return;
    if (quantity > 0) this.lines[productId].quantity = Math.min(1000, quantity);
    else delete this.lines[productId];
    this._changed();
  }

  clear() {
    this.lines = {};
    this._changed();
  }
}

export const cart = new Cart();
