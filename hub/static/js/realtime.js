// The WebSocket protocol (docs/realtime.md, CONTRACT §4) as a small client:
//
//   const stop = realtime.listen('order:42', {since, onFrame(frame) {...}, onReset() {...}});
//
// - One socket per tab. It is opened when something listens (or a user is signed in) and
//   authenticates with a first {"op":"auth"} frame, so the token stays out of URLs.
// - Every channel remembers the seq of the last frame seen. After a dropped connection the
//   client reconnects (backing off with jitter, after the hub's `reconnect` hint, rarely
//   while the browser says it is offline and at once when it is back online) and subscribes again with `since`: the hub replays
//   what was missed (`recovered: true`), or says it cannot (`recovered: false`) and every
//   listener's onReset() reloads its state by REST.
// - Frames with a seq already seen are dropped, so a replay never applies twice.
// - A listener that joins a channel the socket already follows, with a `since` from a REST
//   read (X-Channel-Seq), gets the frames after it from a small per-channel buffer (or a
//   reset if the buffer does not reach back).
// - State for the connection indicator: 'idle' | 'connecting' | 'online' | 'offline', with
//   `retryAt` (ms) while waiting to reconnect. Event "state".
// - Every subscribe carries an `id`; the hub echoes it, and an `error` about a channel names it,
//   so a refused subscription reaches that channel's listeners (onError) among many in flight.

const BUFFER = 50; // frames kept per channel for late listeners
const PING_EVERY_MS = 25_000;
const PONG_WITHIN_MS = 10_000;
const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 15000];
const OFFLINE_RETRY_MS = 30_000;

export class Realtime extends EventTarget {
  constructor({ url, getToken, renewToken }) {
    super();
    this.url = url;
    this.getToken = getToken;
    this.renewToken = renewToken; // async () => boolean
    this.channels = new Map(); // name -> {seq, pending, listeners: Set, buffer: []}
    this.ws = null;
    this.state = 'idle';
    this.retryAt = null;
    this.failures = 0;
    this.hintMs = null; // the hub's `reconnect` hint, for the next attempt
    this.hintUntil = 0; // no attempt before this (ms), even when the browser comes back online
    this.connectedOnce = false;
    this.authedAs = null; // token the open socket was authenticated with
    this.timer = null;
    this.pingTimer = null;
    this.pongTimer = null;
    this.frameIds = 0;
    window.addEventListener('online', () => this._wake());
    window.addEventListener('offline', () => this._setState(this.ws ? this.state : 'offline'));
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible') this._wake();
    });
  }

  // Public API ------------------------------------------------------------------------------

  /** Follows a channel; returns a function that stops. `since`: the seq the caller's state
   * is at (X-Channel-Seq of a REST read); onFrame(frame) for `event`/`notification` frames;
   * onReset() when history cannot fill a gap and the state must be reloaded by REST;
   * onSubscribed(frame) after every (re)subscription, and at once for a channel followed
   * already: from then on every change reaches onFrame (read lists by REST after it);
   * onError(frame) when the hub refuses the subscription. */
  listen(name, { since = null, onFrame = () => {}, onReset = () => {}, onSubscribed = () => {},
                 onError = () => {} } = {}) {
    const listener = { onFrame, onReset, onSubscribed, onError, seq: since };
    let channel = this.channels.get(name);
    if (!channel) {
      channel = { seq: since, pending: true, listeners: new Set(), buffer: [] };
      this.channels.set(name, channel);
      channel.listeners.add(listener);
      if (this._isOpen()) this._subscribe(name, channel);
      else this._connectSoon();
    } else {
      channel.listeners.add(listener);
      this._catchUp(channel, listener);
      if (!channel.pending) {
        // Followed already: tell this listener as if it had just subscribed.
        const frame = { type: 'subscribed', channel: name, seq: channel.seq, recovered: true };
        queueMicrotask(() => { if (channel.listeners.has(listener)) listener.onSubscribed(frame); });
      }
    }
    return () => {
      channel.listeners.delete(listener);
      if (channel.listeners.size === 0 && this.channels.get(name) === channel) {
        this.channels.delete(name);
        this._send({ op: 'unsubscribe', channel: name });
      }
    };
  }

  /** Tells the hub a notification arrived (its websocket delivery becomes "delivered"). */
  ack(id) {
    this._send({ op: 'ack', id });
  }

  /** The signed-in user changed (sign in, sign out, another user): start over. */
  restart() {
    for (const channel of this.channels.values()) channel.pending = true;
    if (this.ws) this._drop(this.ws, 'restart');
    clearTimeout(this.timer);
    this.timer = null;
    this.failures = 0;
    this.hintUntil = 0;
    if (this._wanted()) this._connectSoon(0);
    else this._setState('idle');
  }

  /** The access token was renewed: extend the open connection with it. */
  reauthenticate() {
    const token = this.getToken();
    if (token && this._isOpen() && this.authedAs) {
      this._send({ op: 'auth', token });
      this.authedAs = token;
    }
  }

  // Connection ------------------------------------------------------------------------------

  _isOpen() {
    return this.ws && this.ws.readyState === WebSocket.OPEN;
  }

  _wanted() {
    return this.channels.size > 0 || Boolean(this.getToken());
  }

  _connectSoon(delay = 0) {
    if (this.ws || this.timer || !this._wanted()) return;
    // While the browser says it is offline, try rarely ('online' wakes us at once): the hub
    // may still be reachable (on this machine), but a failed attempt is all there is to learn.
    if (!navigator.onLine && this.connectedOnce) delay = Math.max(delay, OFFLINE_RETRY_MS);
    this.retryAt = delay > 0 ? Date.now() + delay : null;
    this._setState(delay > 0 ? 'offline' : 'connecting');
    this.timer = setTimeout(() => {
      this.timer = null;
      this.retryAt = null;
      this._connect();
    }, delay);
  }

  _wake() {
    if (this.ws || !this._wanted()) return;
    // Back online, or the tab is visible again: try now, but not before the hub's hint.
    clearTimeout(this.timer);
    this.timer = null;
    this._connectSoon(Math.max(0, this.hintUntil - Date.now()));
  }

  _connect() {
    if (this.ws || !this._wanted()) return;
    this._setState('connecting');
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.onopen = () => {
      this.connectedOnce = true;
      const token = this.getToken();
      this.authedAs = token || null;
      if (token) this._send({ op: 'auth', token });
      for (const [name, channel] of this.channels) this._subscribe(name, channel);
      this._setState('online');
      this._heartbeat();
    };
    ws.onmessage = (message) => this._onMessage(message.data);
    ws.onclose = (event) => this._onClose(ws, event);
    ws.onerror = () => {}; // onclose follows and decides
  }

  _drop(ws, reason) {
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try { ws.close(1000, reason); } catch { /* already closing */ }
    if (this.ws === ws) this.ws = null;
    this._stopHeartbeat();
  }

  _onClose(ws, event) {
    if (this.ws !== ws) return;
    this._lost(event.code);
  }

  async _lost(code) {
    this.ws = null;
    this.authedAs = null;
    this._stopHeartbeat();
    for (const channel of this.channels.values()) channel.pending = true;
    let delay;
    let hinted = false;
    if (code === 4401 && this.getToken()) {
      // The token expired (or is no longer valid): renew it, then come back at once.
      delay = (await this.renewToken()) ? 0 : this._backoff();
    } else if (this.hintMs !== null) {
      delay = this.hintMs; // the hub is restarting: its hint spreads the reconnects
      hinted = true;
    } else {
      delay = this._backoff();
    }
    this.hintMs = null;
    this.hintUntil = hinted ? Date.now() + delay : 0;
    this._connectSoon(delay);
  }

  _backoff() {
    const base = BACKOFF_MS[Math.min(this.failures, BACKOFF_MS.length - 1)];
    this.failures += 1;
    return Math.round(base * (0.5 + Math.random() * 0.5));
  }

  _heartbeat() {
    this._stopHeartbeat();
    // The hub pings at the protocol level; this catches a connection that died silently
    // (a sleeping laptop, a NAT box that forgot us) from our side.
    this.pingTimer = setInterval(() => {
      if (!this._isOpen()) return;
      this._send({ op: 'ping' });
      clearTimeout(this.pongTimer);
      const ws = this.ws;
      this.pongTimer = setTimeout(() => {
        if (this.ws !== ws) return;
        this._drop(ws, 'no pong');
        this._lost(4000);
      }, PONG_WITHIN_MS);
    }, PING_EVERY_MS);
  }

  _stopHeartbeat() {
    clearInterval(this.pingTimer);
    clearTimeout(this.pongTimer);
  }

  _send(frame) {
    if (this._isOpen()) this.ws.send(JSON.stringify(frame));
  }

  _subscribe(name, channel) {
    channel.pending = true;
    this.frameIds += 1;
    const frame = { op: 'subscribe', channel: name, id: this.frameIds };
    if (channel.seq !== null && channel.seq !== undefined) frame.since = channel.seq;
    this._send(frame);
  }

  _setState(state) {
    if (state === this.state && state !== 'offline') return;
    this.state = state;
    this.dispatchEvent(new Event('state'));
  }

  // Frames --------------------------------------------------------------------------------------

  _onMessage(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    switch (frame.type) {
      case 'subscribed': return this._onSubscribed(frame);
      case 'event':
      case 'notification': return this._onFrame(frame);
      case 'pong': clearTimeout(this.pongTimer); return undefined;
      case 'reconnect': this.hintMs = Number(frame.after_ms) || 1000; return undefined;
      case 'error':
        // Errors change nothing on the hub; one about a channel names it.
        console.warn('hub:', frame.code, frame.message, frame.channel || '');
        this._onChannelError(frame);
        this.dispatchEvent(new CustomEvent('error', { detail: frame }));
        return undefined;
      default: return undefined; // authenticated, unsubscribed, and what later versions add
    }
  }

  _onSubscribed(frame) {
    const channel = this.channels.get(frame.channel);
    if (!channel) return;
    this.failures = 0;
    const resumed = channel.seq !== null && channel.seq !== undefined;
    channel.pending = false;
    if (resumed && !frame.recovered) {
      // History does not reach back: nothing is replayed; reload by REST from here on.
      channel.seq = frame.seq;
      channel.buffer = [];
      for (const listener of channel.listeners) {
        listener.seq = frame.seq;
        listener.onReset();
      }
    } else if (!resumed) {
      channel.seq = frame.seq;
      for (const listener of channel.listeners) if (listener.seq === null) listener.seq = frame.seq;
    }
    // recovered: the missed frames follow, in order, before any live one.
    for (const listener of channel.listeners) listener.onSubscribed(frame);
  }

  _onChannelError(frame) {
    const channel = frame.channel && this.channels.get(frame.channel);
    if (!channel || !channel.pending) return;
    channel.pending = false;
    for (const listener of channel.listeners) listener.onError(frame);
  }

  _onFrame(frame) {
    const channel = this.channels.get(frame.channel);
    if (!channel || typeof frame.seq !== 'number') return;
    if (channel.seq !== null && frame.seq <= channel.seq) return; // seen already
    channel.seq = frame.seq;
    channel.buffer.push(frame);
    if (channel.buffer.length > BUFFER) channel.buffer.shift();
    for (const listener of channel.listeners) this._deliver(listener, frame);
  }

  _deliver(listener, frame) {
    if (listener.seq !== null && frame.seq <= listener.seq) return;
    listener.seq = frame.seq;
    try {
      listener.onFrame(frame);
    } catch (exc) {
      console.warn('a realtime listener failed', exc);
    }
  }

  _catchUp(channel, listener) {
    // A second listener on a followed channel: bring it to the channel's seq.
    if (channel.pending || listener.seq === null || channel.seq === null) return;
    if (listener.seq >= channel.seq) return;
    const missed = channel.buffer.filter((frame) => frame.seq > listener.seq);
    if (missed.length && missed[0].seq === listener.seq + 1) {
      for (const frame of missed) this._deliver(listener, frame);
    } else {
      listener.seq = channel.seq;
      listener.onReset();
    }
  }
}
