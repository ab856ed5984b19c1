// A task list on thoonk-sync in React: `client.view(feed)` is an external
// store, read with `useSyncExternalStore`; every user of the feed sees the
// same tasks, live.
import { StrictMode, useMemo, useState, useSyncExternalStore, type FormEvent } from 'react';
import { createRoot } from 'react-dom/client';
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
const none: readonly Readonly<Item<Task>>[] = [];

function useStatus(client: Client): Status {
  const store = useMemo(() => {
    let current = client.status();
    const listeners = new Set<() => void>();
    client.onStatus((status) => {
      current = status;
      listeners.forEach((listener) => listener());
    });
    return {
      subscribe: (listener: () => void) => {
        listeners.add(listener);
        return () => listeners.delete(listener);
      },
      getSnapshot: () => current,
    };
  }, [client]);
  return useSyncExternalStore(store.subscribe, store.getSnapshot);
}

function Tasks({ client }: { client: Client }) {
  const view = useMemo(() => client.view<Task>(feed), [client]);
  const tasks = useSyncExternalStore(view.subscribe, view.getSnapshot)[feed] ?? none;
  const status = useStatus(client);
  const [title, setTitle] = useState('');
  const [error, setError] = useState<string | null>(null);

  async function add(event: FormEvent) {
    event.preventDefault();
    try {
      await client.publish<Task>(feed, { title, done: false });
      setTitle('');
    } catch (caught) {
      setError(isSyncError(caught) ? `not saved (${caught.code}): ${caught.message}` : String(caught));
    }
  }

  const why = status.connection === 'offline' && status.offlineReason ? ` (${status.offlineReason})` : '';
  return (
    <main>
      <h1>Tasks</h1>
      <p role="status">{`${user}: ${status.connection}${why}, ${status.pending} pending`}</p>
      {error && <p role="alert">{error}</p>}
      <form onSubmit={add}>
        <input aria-label="New task" placeholder="New task" required value={title} onChange={(e) => setTitle(e.target.value)} />
        <button>Add</button>
      </form>
      <ul aria-label="Tasks">
        {tasks.map((task) => (
          <li key={task.id}>
            <input
              type="checkbox"
              aria-label={task.item.title}
              checked={task.item.done}
              onChange={(e) => void client.edit<Task>(feed, task.id, { ...task.item, done: e.target.checked })}
            />
            {` ${task.item.title}`}{task.state === 'confirmed' ? '' : ` (${task.state})`}
          </li>
        ))}
      </ul>
    </main>
  );
}

await init({ module_or_path: wasmUrl });
const client = await Client.open({ url: server, token: user, dbName: `example-${user}` });
const root = document.getElementById('root');
if (!root) throw new Error('#root is missing');
createRoot(root).render(<StrictMode><Tasks client={client} /></StrictMode>);
