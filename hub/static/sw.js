// The service worker: shows the hub's web pushes, and on a click brings the shop to what
// the notification is about. Served at /sw.js so its scope is the whole site.
//
// The hub's push payload (channels/push.py): {id, title, body, data, priority}.

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

function targetOf(data) {
  if (data && typeof data.order_id === 'string') return `/#/orders/${encodeURIComponent(data.order_id)}`;
  return '/#/notifications';
}

self.addEventListener('push', (event) => {
  let message;
  try {
    message = event.data ? event.data.json() : {};
  } catch {
    message = { title: 'The hub', body: event.data ? event.data.text() : '' };
  }
  const data = message.data || {};
  // One notification per order: a newer update replaces the older one (like the push Topic).
  const tag = typeof data.order_id === 'string' ? `order-${data.order_id}` : message.id || 'hub';
  event.waitUntil(self.registration.showNotification(message.title || 'The hub', {
    body: message.body || '',
    tag,
    renotify: true,
    icon: '/static/icon.svg',
    requireInteraction: message.priority === 'urgent',
    data: { id: message.id || null, url: targetOf(data) },
  }));
});

self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  const url = new URL((event.notification.data && event.notification.data.url) || '/', self.location.origin).href;
  event.waitUntil((async () => {
    const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
    const tab = windows.find((client) => new URL(client.url).origin === self.location.origin);
    if (tab) {
      tab.postMessage({ type: 'open', url }); // the page routes itself (see js/main.js)
      try {
        await tab.focus();
      } catch {
        // focusing needs the click's user activation; the tab has navigated anyway
      }
      return;
    }
    await self.clients.openWindow(url);
  })());
});
