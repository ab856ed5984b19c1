// Small DOM helpers shared by the task list (app.js) and the raw feed view (raw.js).

/** Creates an element: `el('button', { type: 'button' }, ['text', child])`. */
export function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (name === 'checked' || name === 'value' || name === 'selected') node[name] = value;
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  node.append(...[children].flat().filter((c) => c !== null && c !== undefined));
  return node;
}

export function formatTime(ms) {
  return new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

/** The words for a connection state; "live" only when online. */
export function connectionText(connection) {
  return {
    online: 'live',
    offline: 'offline',
    connecting: 'connecting…',
    unauthorized: 'not signed in',
    stopped: 'stopped (update the page)',
  }[connection] ?? connection;
}

/** Why the client is offline, in the user's words. */
export function offlineReasonText(reason) {
  return {
    user: 'you chose to work offline',
    network: 'no network',
    unreachable: 'the server does not answer',
  }[reason];
}

/** The status bar: connection, pending count, last sync, why it is offline, and whether another tab syncs for this one. */
export function showStatus(node, { connection, offlineReason, pending, storageError, tab }, lastSync) {
  const parts = [connectionText(connection), `${pending} pending`];
  if (tab === 'follower') parts.push('via another tab');
  if (lastSync !== undefined) parts.push(lastSync ? `last sync ${formatTime(lastSync)}` : 'never synced');
  if (storageError) parts.push(`storage error: ${storageError}`);
  if (connection === 'offline' && offlineReason) parts.push(offlineReasonText(offlineReason));
  const text = parts.join(' · ');
  if (node.textContent !== text) node.textContent = text; // no repeated announcements
  node.dataset.connection = connection;
  node.dataset.offlineReason = offlineReason ?? '';
  node.dataset.pending = String(pending);
  node.dataset.tab = tab ?? '';
}
