// The REST API (CONTRACT §2) over fetch: JSON in and out, the Bearer token, one renewal of
// an expired access token (serialized across tabs: refresh tokens work once), and errors
// as ApiError {status, code, message, details}.

import { session } from './session.js';

const BASE = '/api/v1';

export class ApiError extends Error {
  constructor(status, code, message, details = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }

  /** Field errors of a 422 as {field: message}. */
  get fields() {
    const out = {};
    if (Array.isArray(this.details)) {
      for (const item of this.details) {
        if (item && typeof item.field === 'string') out[item.field] = item.message;
      }
    }
    return out;
  }
}

async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: a proxy's error page
  }
  const error = body && body.error;
  if (error && error.code) return new ApiError(response.status, error.code, error.message || error.code, error.details);
  return new ApiError(response.status, 'http_' + response.status, `The hub answered ${response.status}.`);
}

/** {data, headers, status}. Throws ApiError; status 0 when the hub could not be reached. */
export async function request(path, { method = 'GET', body, headers = {}, idempotencyKey, auth = true, signal } = {}) {
  for (let attempt = 0; ; attempt += 1) {
    const sent = { Accept: 'application/json', ...headers };
    if (body !== undefined) sent['Content-Type'] = 'application/json';
    if (idempotencyKey) sent['Idempotency-Key'] = idempotencyKey;
    const token = auth ? session.token : null;
    if (token) sent.Authorization = `Bearer ${token}`;
    let response;
    try {
      response = await fetch(BASE + path, {
        method, headers: sent, signal, cache: 'no-store',
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (exc) {
      if (exc && exc.name === 'AbortError') throw exc;
      throw new ApiError(0, 'network_error', 'The hub cannot be reached. Check the connection and try again.');
    }
    if (response.ok) {
      const data = response.status === 204 ? null : await response.json();
      return { data, headers: response.headers, status: response.status };
    }
    const error = await errorOf(response);
    if (response.status === 401 && token && attempt === 0
        && (error.code === 'token_expired' || error.code === 'invalid_token')) {
      if (await refreshSession(token)) continue;
    }
    throw error;
  }
}

/** The answer's body only. */
export async function api(path, options) {
  return (await request(path, options)).data;
}

// Token renewal -----------------------------------------------------------------------------

/** Ends the session on the server: its refresh token and every other one of the same sign-in
 * die (CONTRACT §5). keepalive: it completes even if the page navigates away. */
export function logout(refreshToken) {
  return fetch(BASE + '/auth/logout', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ refresh_token: refreshToken }),
    keepalive: true,
  });
}

let renewing = null;

/** Renews the access token (once, however many callers ask at the same time). True when
 * the session is usable afterwards; false (and signed out) when the refresh token is dead. */
export function refreshSession(staleToken = session.token) {
  if (!renewing) {
    renewing = withLock('hub-token-refresh', () => renew(staleToken)).finally(() => { renewing = null; });
  }
  return renewing;
}

async function renew(staleToken) {
  // Another tab may have renewed while we waited for the lock: use its tokens.
  const stored = session.stored();
  if (!stored) {
    session.clear();
    return false;
  }
  if (stored.access_token !== staleToken && stored.expires_at > Date.now() + 30_000) {
    session.adopt(stored);
    return true;
  }
  let response;
  try {
    response = await fetch(BASE + '/auth/refresh', {
      method: 'POST', cache: 'no-store',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify({ refresh_token: stored.refresh_token }),
    });
  } catch {
    return false; // offline: keep the session, try again later
  }
  if (response.ok) {
    session.set(await response.json());
    return true;
  }
  if (response.status === 401) session.clear(); // used, revoked or expired: sign in again
  return false;
}

function withLock(name, fn) {
  // Web Locks serialize the renewal across tabs: presenting a refresh token twice would
  // revoke the whole session family (CONTRACT: the old refresh token is dead).
  if (navigator.locks && navigator.locks.request) return navigator.locks.request(name, fn);
  return fn();
}

// Renew a minute before expiry, so REST calls and the WebSocket never see a dead token.
let timer = null;
function schedule() {
  clearTimeout(timer);
  if (!session.token) return;
  const due = Math.max(5_000, session.expiresAt - Date.now() - 60_000);
  timer = setTimeout(() => { refreshSession(session.token); }, due);
}
session.addEventListener('change', schedule);
session.addEventListener('token', schedule);
schedule();
