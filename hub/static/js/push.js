// Web Push on this device: the service worker (/sw.js), a PushManager subscription made
// with the hub's VAPID key, and that subscription registered with the hub.

import { api } from './api.js';

export function pushSupported() {
  return 'serviceWorker' in navigator && 'PushManager' in window && 'Notification' in window && window.isSecureContext;
}

function keyBytes(base64url) {
  const base64 = base64url.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - (base64url.length % 4)) % 4);
  return Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
}

function sameKey(buffer, base64url) {
  if (!buffer) return false;
  const a = new Uint8Array(buffer);
  const b = keyBytes(base64url);
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

async function registration() {
  return navigator.serviceWorker.getRegistration('/');
}

/** {supported, permission, subscribed} for this device. */
export async function pushState() {
  if (!pushSupported()) return { supported: false, permission: 'unsupported', subscribed: false };
  const reg = await registration();
  const sub = reg ? await reg.pushManager.getSubscription() : null;
  return { supported: true, permission: Notification.permission, subscribed: Boolean(sub) };
}

/** Asks for permission, registers the service worker, subscribes with the hub's VAPID key
 * and sends the subscription to the hub. Throws an Error with a sentence for the user. */
export async function enablePush() {
  if (!pushSupported()) throw new Error('This browser cannot receive web push here (it needs a secure origin).');
  const permission = await Notification.requestPermission();
  if (permission !== 'granted') {
    throw new Error('Notifications are blocked for this site. Allow them in the browser’s site settings, then try again.');
  }
  const { key } = await api('/push/vapid-public-key');
  await navigator.serviceWorker.register('/sw.js', { scope: '/' });
  const reg = await navigator.serviceWorker.ready;
  let sub = await reg.pushManager.getSubscription();
  if (sub && !sameKey(sub.options && sub.options.applicationServerKey, key)) {
    await sub.unsubscribe(); // made with another key (a development hub makes a new one per run)
    sub = null;
  }
  if (!sub) sub = await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: keyBytes(key) });
  await api('/users/me/push-subscriptions', { method: 'POST', body: sub.toJSON() });
  return sub;
}

/** Forgets this device at the hub and unsubscribes it. */
export async function disablePush() {
  if (!pushSupported()) return;
  const reg = await registration();
  const sub = reg ? await reg.pushManager.getSubscription() : null;
  if (!sub) return;
  try {
    await api('/users/me/push-subscriptions', { method: 'DELETE', body: { endpoint: sub.endpoint } });
  } finally {
    await sub.unsubscribe();
  }
}

/** After a sign-in: a device that is subscribed already is registered for this user too. */
export async function resyncPush() {
  try {
    const state = await pushState();
    if (state.subscribed && state.permission === 'granted') await enablePush();
  } catch (error) {
    console.warn('could not renew the push subscription', error);
  }
}
