// The demo page: one feed, mirrored in IndexedDB and kept live.
import init, { Client } from '/pkg/thoonk_sync.js';

const params = new URLSearchParams(location.search);
const feed = params.get('feed') ?? 'demo:items';
const wsUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;

const statusEl = document.getElementById('status');
const list = document.getElementById('items');
document.getElementById('feed-name').textContent = feed;

function showStatus(status) {
  statusEl.textContent = status === 'online' ? 'live' : status;
  statusEl.className = status;
}

function render(client) {
  const items = client.items(feed);
  list.replaceChildren(...items.map(({ id, item }) => {
    const li = document.createElement('li');
    li.dataset.id = id;
    li.textContent = typeof item === 'object' && item !== null && 'title' in item ? item.title : JSON.stringify(item);
    return li;
  }));
}

await init();
const client = await Client.open({ url: wsUrl, token: params.get('user') ?? 'demo', dbName: `thoonk-demo:${feed}` });
client.onStatus(showStatus);
showStatus(client.status());
client.subscribe(feed, () => render(client));
render(client);

document.getElementById('add').addEventListener('submit', async (event) => {
  event.preventDefault();
  const input = document.getElementById('title');
  const title = input.value.trim();
  if (!title) return;
  input.value = '';
  const outcome = await client.publish(feed, { title });
  if (outcome.status !== 'accepted') statusEl.textContent = `rejected: ${outcome.message ?? outcome.status}`;
});
