// The demo page: one feed, mirrored in IndexedDB and kept live.
import init, { Client } from '/pkg/thoonk_sync.js';

const params = new URLSearchParams(location.search);
const feed = params.get('feed') ?? 'demo:items';
const wsUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;

const statusEl = document.getElementById('status');
const list = document.getElementById('items');
document.getElementById('feed-name').textContent = feed;

function showStatus({ connection, pending }) {
  statusEl.textContent = (connection === 'online' ? 'live' : connection) + (pending ? ` · ${pending} pending` : '');
  statusEl.className = connection;
}

function render(client) {
  const items = client.items(feed);
  list.replaceChildren(...items.map(({ id, item, state }) => {
    const li = document.createElement('li');
    li.dataset.id = id;
    li.dataset.state = state;
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
  const { outcome } = await client.publish(feed, { title });
  const result = await outcome;
  if (result.status === 'rejected') statusEl.textContent = `rejected: ${result.message}`;
});
