// The tab's one realtime connection, tied to the session.

import { refreshSession } from './api.js';
import { Realtime } from './realtime.js';
import { session } from './session.js';

const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';

export const realtime = new Realtime({
  url: `${scheme}//${location.host}/ws`,
  getToken: () => session.token,
  renewToken: () => refreshSession(),
});

// A renewed token extends the open connection (no reconnect).
session.addEventListener('token', () => realtime.reauthenticate());
