// The demo's offline cache: the page, its scripts and the client package are
// fetched from the network when possible (so they are never stale) and from
// this cache when the browser is offline, so the app also starts offline.
const CACHE = 'thoonk-demo-v2';
const SHELL = ['/', '/app.js', '/ui.js', '/raw.js', '/style.css', '/pkg/thoonk_sync.js', '/pkg/thoonk_sync_bg.wasm', '/demo/users.json'];

self.addEventListener('install', (event) => {
  event.waitUntil(caches.open(CACHE)
    .then((cache) => Promise.all(SHELL.map((path) => cache.add(path).catch(() => {}))))
    .then(() => self.skipWaiting()));
});

self.addEventListener('activate', (event) => {
  event.waitUntil(caches.keys()
    .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
    .then(() => self.clients.claim()));
});

self.addEventListener('fetch', (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== 'GET' || url.origin !== self.location.origin || url.pathname === '/ws') return;
  event.respondWith(fetch(event.request).then((response) => {
    if (response.ok) {
      const copy = response.clone();
      caches.open(CACHE).then((cache) => cache.put(url.pathname === '/index.html' ? '/' : url.pathname, copy));
    }
    return response;
  }).catch(async () => (await caches.match(url.pathname === '/index.html' ? '/' : url.pathname)) ?? Response.error()));
});
