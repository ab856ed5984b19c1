// A typed app using the package as a user would, checked with `tsc --noEmit`
// against the generated declarations and loaded in a browser by
// package.test.mjs from a project that installed the packed package.
import init, { Client, type FeedChange, type Item, type Outcome, type Status } from 'thoonk-sync';

export async function run(url: string, feed: string): Promise<Item[]> {
  await init();
  const client: Client = await Client.open({ url, token: 'typed-user', dbName: `typed-${feed}` });
  const statuses: Status[] = [];
  client.onStatus((status: Status) => statuses.push(status));
  const seen = new Promise<FeedChange>((resolve) => {
    client.subscribe(feed, (change: FeedChange) => {
      if (change.changed.some((item: Item) => item.id === 'typed-1' && item.state === 'confirmed')) resolve(change);
    });
  });
  const { id, outcome } = await client.publish(feed, { title: 'typed', tags: ['a', 'b'], done: false }, 'typed-1');
  const result: Outcome = await outcome;
  if (result.status !== 'accepted') throw new Error(`change ${id} was not accepted: ${JSON.stringify(result)}`);
  const revs: Record<string, number> = result.revs;
  if (revs[feed] !== 1) throw new Error(`unexpected revision ${revs[feed]}`);
  await seen;
  const items: Item[] = client.items(feed);
  client.close();
  return items;
}
