// The raw view of one feed (`/?feed=NAME[&user=TOKEN]`): its items, live,
// and a field to publish more. Useful to look at any feed the token may read.
import { el, showStatus } from './ui.js';

export async function runRaw(Client, wsUrl, params) {
  const feed = params.get('feed');
  const $ = (id) => document.getElementById(id);
  $('raw').hidden = false;
  $('raw-feed').textContent = feed;
  const client = await Client.open({ url: wsUrl, token: params.get('user') ?? 'demo', dbName: `thoonk-demo:raw:${feed}` });
  const list = $('raw-items');
  const render = () => {
    list.replaceChildren(...client.items(feed).map(({ id, item, state }) => el('li', { 'data-id': id, 'data-state': state, class: 'task' },
      typeof item === 'object' && item !== null && 'title' in item ? String(item.title) : JSON.stringify(item))));
  };
  const status = (s) => showStatus($('status'), s);
  client.onStatus(status);
  status(client.status());
  client.subscribe(feed, () => queueMicrotask(render));
  render();
  $('raw-add').addEventListener('submit', async (event) => {
    event.preventDefault();
    const input = $('raw-item');
    const title = input.value.trim();
    if (!title) return;
    input.value = '';
    const { outcome } = await client.publish(feed, { title });
    const result = await outcome;
    if (result.status === 'rejected') $('status').textContent = `rejected: ${result.message}`;
  });
}
