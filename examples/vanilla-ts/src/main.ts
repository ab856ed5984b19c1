// A task list on thoonk-sync: every user of the same feed sees the same
// tasks, live, and changes made offline are sent when the connection returns.
import init, { Client, isSyncError, type Item, type Status } from 'thoonk-sync';
// The module's URL through the bundler (also under `vite dev`, which pre-bundles the package).
import wasmUrl from 'thoonk-sync/thoonk_sync_bg.wasm?url';

interface Task {
  title: string;
  done: boolean;
}

const params = new URLSearchParams(location.search);
const server = params.get('server') ?? `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
const user = params.get('user') ?? 'ann';
const feed = params.get('feed') ?? 'example:tasks';

function element<T extends HTMLElement>(id: string): T {
  const node = document.getElementById(id);
  if (!node) throw new Error(`#${id} is missing`);
  return node as T;
}

const list = element<HTMLUListElement>('tasks');
const statusLine = element<HTMLParagraphElement>('status');

function showStatus(status: Status): void {
  const why = status.connection === 'offline' && status.offlineReason ? ` (${status.offlineReason})` : '';
  statusLine.textContent = `${user}: ${status.connection}${why}, ${status.pending} pending`;
}

function render(client: Client): void {
  const items: Item<Task>[] = client.items<Task>(feed);
  list.replaceChildren(...items.map((item) => {
    const row = document.createElement('li');
    const box = document.createElement('input');
    box.type = 'checkbox';
    box.checked = item.item.done;
    box.setAttribute('aria-label', item.item.title);
    box.addEventListener('change', () => {
      void client.edit<Task>(feed, item.id, { ...item.item, done: box.checked });
    });
    row.append(box, ` ${item.item.title}`, item.state === 'confirmed' ? '' : ` (${item.state})`);
    return row;
  }));
}

await init({ module_or_path: wasmUrl });
const client = await Client.open({ url: server, token: user, dbName: `example-${user}` });
client.onStatus(showStatus);
showStatus(client.status());
client.subscribe<Task>(feed, () => render(client));
render(client);

element<HTMLFormElement>('add').addEventListener('submit', async (event) => {
  event.preventDefault();
  const input = element<HTMLInputElement>('title');
  try {
    await client.publish<Task>(feed, { title: input.value, done: false });
    input.value = '';
  } catch (error) {
    statusLine.textContent = isSyncError(error) ? `not saved (${error.code}): ${error.message}` : String(error);
  }
});
