// The signed-in user and their tokens, kept in localStorage so that a reload (or another
// tab) stays signed in. Events: "change" when someone signs in or out, "token" when the
// access token was renewed for the same user, "profile" when the user's profile changed.

const KEY = 'hub.session';

function load() {
  try {
    const data = JSON.parse(localStorage.getItem(KEY) || 'null');
    return data && data.access_token && data.user ? data : null;
  } catch {
    return null;
  }
}

class Session extends EventTarget {
  constructor() {
    super();
    this.data = load();
    // Another tab signed in, out, or renewed the tokens.
    window.addEventListener('storage', (event) => {
      if (event.key !== KEY) return;
      const before = this.data;
      this.data = load();
      let kind = 'change';
      if (before && this.data && before.user.id === this.data.user.id) {
        kind = before.access_token === this.data.access_token ? 'profile' : 'token';
      }
      this.dispatchEvent(new Event(kind));
    });
  }

  get user() { return this.data ? this.data.user : null; }
  get token() { return this.data ? this.data.access_token : null; }
  get refreshToken() { return this.data ? this.data.refresh_token : null; }
  get expiresAt() { return this.data ? this.data.expires_at : 0; }
  get isAdmin() { return Boolean(this.user && (this.user.roles || []).includes('admin')); }

  /** Stored state as another tab may have left it (used inside the refresh lock). */
  stored() { return load(); }

  /** A register, login or refresh answer: {user, access_token, refresh_token, expires_in}. */
  set(answer) {
    const sameUser = this.user && this.user.id === answer.user.id;
    this.data = {
      user: answer.user,
      access_token: answer.access_token,
      refresh_token: answer.refresh_token,
      expires_at: Date.now() + (answer.expires_in || 900) * 1000,
    };
    this._save();
    this.dispatchEvent(new Event(sameUser ? 'token' : 'change'));
  }

  /** Takes over what another tab stored (it refreshed first). */
  adopt(data) {
    this.data = data;
    this.dispatchEvent(new Event('token'));
  }

  /** The same user's profile changed (name, time zone...): event "profile". */
  updateUser(user) {
    if (!this.data) return;
    this.data = { ...this.data, user };
    this._save();
    this.dispatchEvent(new Event('profile'));
  }

  clear() {
    if (!this.data) return;
    this.data = null;
    localStorage.removeItem(KEY);
    this.dispatchEvent(new Event('change'));
  }

  _save() {
    localStorage.setItem(KEY, JSON.stringify(this.data));
  }
}

export const session = new Session();
