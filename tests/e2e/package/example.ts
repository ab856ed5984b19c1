// A typed app using the package as a user would, checked with `tsc --noEmit`
// against the generated declarations and loaded in a browser by
// package.test.mjs from a project that installed the packed package.
import init, {
  Client, isSyncError, type ErrorCode, type FeedChange, type Item, type Outcome, type RejectionCode, type Status,
} from 'thoonk-sync';

/** The app's item type: an interface (no index signature), as apps write them. */
interface Task {
  title: string;
  tags: string[];
  done: boolean;
}

export async function run(url: string, feed: string): Promise<Item<Task>[]> {
  await init();
  const client: Client = await Client.open({ url, token: 'typed-user', dbName: `typed-${feed}` });
  const statuses: Status[] = [];
  client.onStatus((status: Status) => statuses.push(status));
  const seen = new Promise<FeedChange<Task>>((resolve) => {
    client.subscribe<Task>(feed, (change: FeedChange<Task>) => {
      if (change.changed.some((item: Item<Task>) => item.id === 'typed-1' && item.state === 'confirmed')) resolve(change);
    });
  });
  const task: Task = { title: 'typed', tags: ['a', 'b'], done: false };
  const { id, itemId, outcome } = await client.publish(feed, task, 'typed-1');
  const result: Outcome = await outcome;
  if (result.status !== 'accepted') throw new Error(`change ${id} was not accepted: ${JSON.stringify(result)}`);
  const revs: Record<string, number> = result.revs;
  if (revs[feed] !== 1) throw new Error(`unexpected revision ${revs[feed]}`);
  await seen;
  const edited = await (await client.edit(feed, itemId, { ...task, done: true })).outcome;
  if (edited.status === 'rejected') {
    const code: RejectionCode = edited.code;
    throw new Error(`edit rejected: ${code}`);
  }
  try {
    client.items('');
  } catch (error) {
    if (!isSyncError(error)) throw error;
    const code: ErrorCode = error.code;
    if (code !== 'bad_request') throw new Error(`unexpected code ${code}`);
  }
  const items: Item<Task>[] = client.items<Task>(feed);
  const { subscribe, getSnapshot } = client.view<Task>(feed);
  const stop: () => void = subscribe(() => undefined);
  const fromView: readonly Readonly<Item<Task>>[] = getSnapshot()[feed] ?? [];
  stop();
  if (fromView.length !== items.length) throw new Error('the view and items() disagree');
  const titles: string[] = items.map((item) => item.item.title);
  if (titles.length !== 1) throw new Error(`unexpected items ${titles.join()}`);
  client.close();
  return items;
}
