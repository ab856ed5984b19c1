// The demo: an offline-first team task list on thoonk-sync's public JS API.
//
// Each member's tasks are a sorted feed `team:{<team>}:member:<user>:tasks`
// (the team is a Redis Cluster hash tag: a team's feeds share a shard, so the
// page runs on one Redis and on a cluster alike; the access rules read
// `{353}` as `353`);
// the page follows the whole team with one pattern subscription. Adds, edits,
// completions, reorders and deletions are the client's feed operations (shown
// at once as pending, merged three-way on conflict); delegation is the named
// action `delegate_task`, which moves a task between two feeds atomically.
// With `?feed=NAME` the page shows one raw feed instead (raw.js).
import init, { Client } from '/pkg/thoonk_sync.js';
import { el, showStatus } from './ui.js';

const params = new URLSearchParams(location.search);

// The feed `team:{<team>}:<rest>`.
const teamFeed = (team, rest) => `team:{${team}}:${rest}`;
const wsUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
const $ = (id) => document.getElementById(id);

if ('serviceWorker' in navigator) {
  navigator.serviceWorker.register('/sw.js').catch((err) => console.warn('no offline cache:', err));
}


// ------------------------------------------------------------------ sign-in

/** The config's users, from the server or (offline) as last seen. */
async function loadUsers() {
  try {
    const response = await fetch('/demo/users.json', { cache: 'no-store' });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const users = await response.json();
    localStorage.setItem('thoonk-demo:users', JSON.stringify(users));
    return users;
  } catch (err) {
    const cached = localStorage.getItem('thoonk-demo:users');
    if (cached) return JSON.parse(cached);
    throw err;
  }
}

function showSignIn(users) {
  $('sign-in').hidden = false;
  $('status').textContent = 'signed out';
  $('users').replaceChildren(...users.map((user) => {
    const teams = Object.entries(user.teams).map(([team, role]) => `${role} of team ${team}`).join(', ') || 'in no team';
    const button = el('button', { type: 'button', class: 'user' }, [el('strong', {}, user.name), ` · ${teams}`]);
    button.addEventListener('click', () => {
      sessionStorage.setItem('thoonk-demo:user', user.name);
      location.search = `?user=${encodeURIComponent(user.name)}`;
    });
    return el('li', {}, button);
  }));
}

// ------------------------------------------------------------------ the app

async function runApp() {
  let users;
  try {
    users = await loadUsers();
  } catch (err) {
    $('status').textContent = `cannot load the demo users: ${err.message}`;
    return;
  }
  const name = params.get('user') ?? sessionStorage.getItem('thoonk-demo:user');
  const me = users.find((u) => u.name === name);
  if (!me) {
    showSignIn(users);
    return;
  }
  sessionStorage.setItem('thoonk-demo:user', me.name);
  const app = new TaskApp(me, users);
  await app.start();
}

const changeKey = (feed, id) => `${feed}\u0000${id}`;
const memberOf = (feed) => feed.split(':')[3];

class TaskApp {
  constructor(me, users) {
    this.me = me;
    this.users = users;
    // The user's teams, the biggest first (the default).
    const size = (team) => users.filter((u) => team in u.teams).length;
    const teams = Object.keys(me.teams).sort((a, b) => size(b) - size(a));
    const stored = localStorage.getItem(`thoonk-demo:team:${me.name}`);
    this.team = [params.get('team'), stored, teams[0]].find((t) => t && teams.includes(t)) ?? null;
    this.role = this.team ? me.teams[this.team] : null;
    this.pattern = this.team ? teamFeed(this.team, 'member:*:tasks') : null;
    this.myFeed = this.team ? teamFeed(this.team, `member:${me.name}:tasks`) : null;
    this.client = null;
    this.status = null;
    this.outcomes = new Map(); // change id → outcome the user must see
    this.refused = []; // changes that could not even be queued: { what, message }
    this.editing = null; // {feed, id}
    this.dragging = null; // {feed, id}
    this.lastSync = Number(localStorage.getItem(this.storageKey('last-sync'))) || null;
    this.descriptions = JSON.parse(localStorage.getItem(this.storageKey('changes')) ?? '{}');
    this.offline = localStorage.getItem(this.storageKey('offline')) === 'yes';
    this.renderQueued = false;
  }

  storageKey(what) {
    return `thoonk-demo:${what}:${this.me.name}`;
  }

  members() {
    const names = this.users.filter((u) => this.team in u.teams).map((u) => u.name);
    for (const feed of Object.keys(this.status?.feeds ?? {})) {
      const member = memberOf(feed);
      if (feed.startsWith(teamFeed(this.team, 'member:')) && !names.includes(member)) names.push(member);
    }
    return names;
  }

  canChange(member) {
    return member === this.me.name || this.role === 'admin';
  }

  async start() {
    $('who').hidden = false;
    $('who-name').textContent = `Signed in as ${this.me.name}` + (this.team ? ` (${this.role} of team ${this.team})` : '');
    $('sign-out').addEventListener('click', () => {
      sessionStorage.removeItem('thoonk-demo:user');
      location.search = '';
    });
    const teams = Object.keys(this.me.teams);
    if (teams.length > 1) {
      $('team-pick').hidden = false;
      $('team').replaceChildren(...teams.map((t) => el('option', { value: t, selected: t === this.team }, `team ${t}`)));
      $('team').addEventListener('change', (event) => {
        localStorage.setItem(`thoonk-demo:team:${this.me.name}`, event.target.value);
        location.search = `?user=${encodeURIComponent(this.me.name)}&team=${encodeURIComponent(event.target.value)}`;
      });
    }
    $('app').hidden = false;
    $('offline-toggle').hidden = false;
    $('work-offline').checked = this.offline;
    $('work-offline').addEventListener('change', (event) => this.setOffline(event.target.checked));
    if (!this.team) {
      $('no-team').hidden = false;
      $('no-team').textContent = `${this.me.name} is not a member of any team.`;
      $('mine').hidden = true;
      $('team-tasks').hidden = true;
    } else {
      $('team-title').textContent = `Team ${this.team}, by member`;
      $('add').addEventListener('submit', (event) => this.onAdd(event));
      for (const list of [$('my-tasks'), $('members')]) {
        list.addEventListener('click', (event) => this.onClick(event));
        list.addEventListener('change', (event) => this.onChange(event));
        list.addEventListener('submit', (event) => this.onSubmit(event));
        list.addEventListener('keydown', (event) => this.onKeyDown(event));
        list.addEventListener('dragstart', (event) => this.onDragStart(event));
        list.addEventListener('dragover', (event) => this.onDragOver(event));
        list.addEventListener('dragleave', (event) => this.onDragLeave(event));
        list.addEventListener('drop', (event) => this.onDrop(event));
        list.addEventListener('dragend', () => this.onDragEnd());
      }
    }
    $('notice-list').addEventListener('click', (event) => this.onNoticeClick(event));
    // Every tab of this user opens the client: one of them holds the
    // connection and the others go through it (the library elects it).
    await this.openClient();
  }

  /** Opens the client (paused when working offline) and wires it up. */
  async openClient() {
    $('offline-toggle').hidden = false;
    $('inspector').hidden = false;
    $('notices').hidden = false;
    $('mine').hidden = !this.team;
    $('team-tasks').hidden = !this.team;
    // Working offline: opened without connecting (the client itself notices
    // when the browser has no network, and says so in its status).
    const client = await Client.open({
      url: wsUrl, token: this.me.token, dbName: `thoonk-demo:${this.me.name}`, offline: this.offline,
    });
    this.client = client;
    this.paused = this.offline;
    client.onStatus((status) => {
      this.status = status;
      this.noteSync();
      this.scheduleRender();
    });
    client.onOutcome(({ id, outcome }) => {
      if (outcome.status === 'accepted') {
        queueMicrotask(() => this.forget(id));
      } else {
        this.outcomes.set(id, outcome);
      }
      this.scheduleRender();
    });
    // Patterns this page followed before (another team) are left.
    const followed = JSON.parse(localStorage.getItem(this.storageKey('patterns')) ?? '[]');
    for (const old of followed.filter((p) => p !== this.pattern)) client.subscribe(old, () => {})();
    localStorage.setItem(this.storageKey('patterns'), JSON.stringify(this.pattern ? [this.pattern] : []));
    if (this.pattern) {
      client.subscribe(this.pattern, () => {
        this.noteSync();
        this.scheduleRender();
      });
    }
    // Descriptions of changes that are neither waiting nor shown any more
    // (those of changes lost with a wiped database are shown until dismissed).
    const lost = client.status().storageWiped?.lostChanges ?? [];
    const known = new Set([...client.outbox().map((e) => e.id), ...this.outcomes.keys(), ...lost]);
    for (const change of Object.keys(this.descriptions)) if (!known.has(change)) delete this.descriptions[change];
    localStorage.setItem(this.storageKey('changes'), JSON.stringify(this.descriptions));
    this.status = client.status();
    this.noteSync();
    this.render();
  }

  setOffline(offline) {
    this.offline = offline;
    localStorage.setItem(this.storageKey('offline'), offline ? 'yes' : 'no');
    this.applyConnection();
  }

  /** Pauses the connection while working offline. */
  applyConnection() {
    const paused = this.offline;
    if (!this.client || paused === this.paused) return;
    this.paused = paused;
    this.client.setOnline(!paused);
  }

  noteSync() {
    if (this.status?.connection === 'online' && this.status.pending === 0) {
      this.lastSync = Date.now();
      localStorage.setItem(this.storageKey('last-sync'), String(this.lastSync));
    }
  }

  /** Remembers what a change was, to describe its outcome (also after a reload). */
  describe(change, text) {
    this.descriptions[change] = text;
    localStorage.setItem(this.storageKey('changes'), JSON.stringify(this.descriptions));
  }

  forget(change) {
    this.outcomes.delete(change);
    delete this.descriptions[change];
    localStorage.setItem(this.storageKey('changes'), JSON.stringify(this.descriptions));
    this.client?.dismissOutcome(change);
    this.scheduleRender();
  }

  async track(what, pending) {
    try {
      const { id, outcome } = await pending;
      outcome.catch(() => {}); // outcomes are shown through onOutcome
      this.describe(id, what);
      this.scheduleRender();
      return id;
    } catch (error) {
      // Not queued at all (e.g. storage full): say so instead of losing it silently.
      this.refused.push({ what, message: error.message });
      this.scheduleRender();
      return null;
    }
  }

  /** The user has read which changes a wiped database lost. */
  dismissWiped() {
    for (const change of this.status?.storageWiped?.lostChanges ?? []) delete this.descriptions[change];
    localStorage.setItem(this.storageKey('changes'), JSON.stringify(this.descriptions));
    this.client.dismissStorageWiped();
    this.status = this.client.status();
    this.scheduleRender();
  }

  // ---------------------------------------------------------------- changes

  task(feed, id) {
    return this.client.items(feed).find((i) => i.id === id);
  }

  onAdd(event) {
    event.preventDefault();
    const input = $('new-task');
    const title = input.value.trim();
    if (!title) return;
    input.value = '';
    const items = this.client.items(this.myFeed);
    // A position keeps the feed sorted (a publish at the end would create a time-ordered feed).
    const position = items.length ? { after: items[items.length - 1].id } : 'begin';
    const id = `t${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
    this.track(`Add “${title}”`, this.client.publish(this.myFeed, { title, done: false }, id, position));
  }

  setDone(feed, id, done) {
    const task = this.task(feed, id);
    if (!task) return;
    const title = task.item.title;
    this.track(`${done ? 'Complete' : 'Reopen'} “${title}”`, this.client.edit(feed, id, { ...plain(task.item), done }));
  }

  rename(feed, id, title) {
    const task = this.task(feed, id);
    if (!task || !title || title === task.item.title) return;
    this.track(`Rename “${task.item.title}” to “${title}”`, this.client.edit(feed, id, { ...plain(task.item), title }));
  }

  remove(feed, id) {
    const task = this.task(feed, id);
    if (!task) return;
    this.track(`Delete “${task.item.title}”`, this.client.retract(feed, id));
  }

  move(feed, id, position) {
    const task = this.task(feed, id);
    if (!task) return;
    this.track(`Move “${task.item.title}”`, this.client.move(feed, id, position));
  }

  moveBy(feed, id, step) {
    const items = this.client.items(feed);
    const index = items.findIndex((i) => i.id === id);
    const neighbour = items[index + step];
    if (index < 0 || !neighbour) return;
    this.move(feed, id, step < 0 ? { before: neighbour.id } : { after: neighbour.id });
  }

  delegate(feed, id, to) {
    const task = this.task(feed, id);
    if (!task || !to) return;
    this.track(`Delegate “${task.item.title}” to ${to}`, this.client.action('delegate_task', { feed, id, to }));
  }

  // ---------------------------------------------------------------- events

  target(event) {
    const row = event.target.closest('li.task');
    return row ? { row, feed: row.dataset.feed, id: row.dataset.id } : null;
  }

  onClick(event) {
    const button = event.target.closest('button[data-action]');
    const t = this.target(event);
    if (!button || !t) return;
    const { feed, id } = t;
    switch (button.dataset.action) {
      case 'up': this.moveBy(feed, id, -1); break;
      case 'down': this.moveBy(feed, id, 1); break;
      case 'edit': this.editing = { feed, id }; this.render(); this.focus(`${feed}|${id}|title-input`); break;
      case 'cancel': this.stopEditing(feed, id); break;
      case 'delete': this.remove(feed, id); break;
      case 'delegate': this.delegate(feed, id, t.row.querySelector('select[data-action="delegate-to"]').value); break;
      case 'dismiss': this.forget(button.dataset.change); break;
      default: return;
    }
  }

  onChange(event) {
    const t = this.target(event);
    if (t && event.target.dataset.action === 'done') this.setDone(t.feed, t.id, event.target.checked);
  }

  onSubmit(event) {
    event.preventDefault();
    const t = this.target(event);
    if (!t) return;
    const title = event.target.elements.title.value.trim();
    this.editing = null;
    this.rename(t.feed, t.id, title);
    this.render();
    this.focus(`${t.feed}|${t.id}|edit`);
  }

  onKeyDown(event) {
    const t = this.target(event);
    if (t && event.key === 'Escape' && this.editing) this.stopEditing(t.feed, t.id);
  }

  stopEditing(feed, id) {
    this.editing = null;
    this.render();
    this.focus(`${feed}|${id}|edit`);
  }

  onDragStart(event) {
    const t = this.target(event);
    if (!t || t.row.getAttribute('draggable') !== 'true') return;
    this.dragging = { feed: t.feed, id: t.id };
    event.dataTransfer.effectAllowed = 'move';
    event.dataTransfer.setData('text/plain', t.id);
    t.row.classList.add('dragging');
  }

  dropPlace(event) {
    const t = this.target(event);
    if (!this.dragging || !t || t.feed !== this.dragging.feed || t.id === this.dragging.id) return null;
    const box = t.row.getBoundingClientRect();
    const before = event.clientY < box.top + box.height / 2;
    return { ...t, before };
  }

  onDragOver(event) {
    const place = this.dropPlace(event);
    if (!place) return;
    event.preventDefault();
    place.row.classList.toggle('drop-before', place.before);
    place.row.classList.toggle('drop-after', !place.before);
  }

  onDragLeave(event) {
    const t = this.target(event);
    t?.row.classList.remove('drop-before', 'drop-after');
  }

  onDrop(event) {
    const place = this.dropPlace(event);
    if (!place) return;
    event.preventDefault();
    const { feed, id } = this.dragging;
    this.move(feed, id, place.before ? { before: place.id } : { after: place.id });
    this.onDragEnd();
  }

  onDragEnd() {
    this.dragging = null;
    for (const row of document.querySelectorAll('.dragging, .drop-before, .drop-after')) {
      row.classList.remove('dragging', 'drop-before', 'drop-after');
    }
  }

  onNoticeClick(event) {
    const other = event.target.closest('button[data-action="wiped"], button[data-action="refused"]');
    if (other?.dataset.action === 'wiped') this.dismissWiped();
    if (other?.dataset.action === 'refused') {
      this.refused.splice(Number(other.dataset.index), 1);
      this.scheduleRender();
    }
    const button = event.target.closest('button[data-change]');
    if (!button) return;
    const change = button.dataset.change;
    const outcome = this.outcomes.get(change);
    if (button.dataset.action === 'mine' && outcome?.status === 'unresolved') this.keepMine(change, outcome.conflict);
    this.forget(change);
    $('new-task').focus();
  }

  /** Resolves a conflict with our version, made again on top of theirs. */
  keepMine(change, conflict) {
    const { feed, id, ours, theirs } = conflict;
    const what = this.descriptions[change] ?? 'Your change';
    if (ours === null) {
      if (theirs !== null) this.track(what, this.client.retract(feed, id));
    } else if (theirs === null) {
      this.track(what, this.client.publish(feed, ours, id, 'end'));
    } else {
      // The task says who kept which version over whose, for the others to see.
      const keptOver = { by: this.me.name, title: theirs.title };
      this.track(what, this.client.edit(feed, id, { ...plain(ours), keptOver }));
    }
  }

  // ---------------------------------------------------------------- render

  scheduleRender() {
    if (this.renderQueued) return;
    this.renderQueued = true;
    queueMicrotask(() => {
      this.renderQueued = false;
      this.render();
    });
  }

  focus(key) {
    const target = document.querySelector(`[data-focus="${CSS.escape(key)}"]`);
    target?.focus();
  }

  render() {
    if (!this.client) return;
    const active = document.activeElement?.dataset?.focus;
    const selection = active && document.activeElement.type === 'text'
      ? [document.activeElement.selectionStart, document.activeElement.selectionEnd, document.activeElement.value]
      : null;
    const status = this.status ?? this.client.status();
    showStatus($('status'), status, this.lastSync);
    if (this.team) {
      const delegating = new Map();
      for (const entry of this.client.outbox()) {
        const op = entry.op;
        if (op?.kind === 'action' && op.name === 'delegate_task') delegating.set(changeKey(op.payload.feed, op.payload.id), op.payload.to);
      }
      this.delegating = delegating;
      $('my-tasks').replaceChildren(...this.rows(this.myFeed));
      const others = this.members().filter((m) => m !== this.me.name);
      $('members').replaceChildren(...others.map((member) => {
        const feed = teamFeed(this.team, `member:${member}:tasks`);
        const rows = this.rows(feed);
        const headingId = `member-${member}`;
        return el('section', { class: 'member', 'aria-labelledby': headingId }, [
          el('h3', { id: headingId }, `${member}${this.role === 'admin' ? '' : ' (read only)'}`),
          rows.length ? el('ol', { class: 'tasks', 'aria-labelledby': headingId }, rows) : el('p', { class: 'empty' }, 'No tasks.'),
        ]);
      }));
      if (!this.client.items(this.myFeed).length) {
        $('my-tasks').append(el('li', { class: 'empty' }, 'No tasks yet: add one above.'));
      }
    }
    this.renderNotices();
    this.renderInspector(status);
    if (active) {
      const again = document.querySelector(`[data-focus="${CSS.escape(active)}"]`);
      if (again && again !== document.activeElement) {
        again.focus();
        if (selection && again.value === selection[2]) again.setSelectionRange(selection[0], selection[1]);
      }
    }
  }

  rows(feed) {
    const member = memberOf(feed);
    const writable = this.canChange(member);
    const items = this.client.items(feed);
    const teammates = this.members().filter((m) => m !== member);
    return items.map((task, index) => {
      const { id, item } = task;
      const title = typeof item?.title === 'string' ? item.title : JSON.stringify(item);
      const key = `${feed}|${id}`;
      const domId = `task-${member}-${id}`;
      const to = this.delegating.get(changeKey(feed, id));
      const rejected = task.state === 'rejected' ? this.outcomes.get(task.changes[0]) : null;
      const state = to ? 'pending' : task.state;
      const badges = [];
      if (state === 'pending') badges.push(el('span', { class: 'badge pending' }, to ? `moving to ${to}…` : 'pending'));
      // The row shows the server's version: the badge speaks of the user's own change.
      if (task.state === 'rejected') {
        const waiting = rejected?.status === 'unresolved';
        badges.push(el('span', { class: 'badge rejected' }, waiting ? 'your change: choose below' : 'your change was not saved'));
      }
      const parts = [];
      if (this.editing?.feed === feed && this.editing?.id === id) {
        parts.push(el('form', { class: 'edit' }, [
          el('label', { for: `${domId}-title`, class: 'visually-hidden' }, `Title of “${title}”`),
          el('input', { id: `${domId}-title`, name: 'title', value: title, required: true, maxlength: 500, autocomplete: 'off', 'data-focus': `${key}|title-input` }),
          el('button', { type: 'submit', 'data-focus': `${key}|save` }, 'Save'),
          el('button', { type: 'button', 'data-action': 'cancel' }, 'Cancel'),
        ]));
      } else {
        parts.push(el('span', { class: 'check' }, [
          el('input', { type: 'checkbox', id: `${domId}-done`, checked: item?.done === true, disabled: !writable, 'data-action': 'done', 'data-focus': `${key}|done` }),
          el('label', { for: `${domId}-done`, class: 'title' }, title),
        ]));
        parts.push(...badges);
      }
      if (writable && !(this.editing?.feed === feed && this.editing?.id === id)) {
        const options = [el('option', { value: '' }, 'delegate to…'), ...teammates.map((m) => el('option', { value: m }, m))];
        parts.push(el('span', { class: 'actions' }, [
          el('button', { type: 'button', 'data-action': 'up', 'aria-label': `Move “${title}” up`, 'aria-disabled': index === 0 ? 'true' : false, 'data-focus': `${key}|up` }, '↑'),
          el('button', { type: 'button', 'data-action': 'down', 'aria-label': `Move “${title}” down`, 'aria-disabled': index === items.length - 1 ? 'true' : false, 'data-focus': `${key}|down` }, '↓'),
          el('button', { type: 'button', 'data-action': 'edit', 'aria-label': `Edit “${title}”`, 'data-focus': `${key}|edit` }, 'Edit'),
          el('label', { for: `${domId}-to`, class: 'visually-hidden' }, `Delegate “${title}” to`),
          el('select', { id: `${domId}-to`, 'data-action': 'delegate-to', 'data-focus': `${key}|to` }, options),
          el('button', { type: 'button', 'data-action': 'delegate', 'aria-label': `Delegate “${title}”`, 'data-focus': `${key}|delegate` }, 'Delegate'),
          el('button', { type: 'button', 'data-action': 'delete', 'aria-label': `Delete “${title}”`, class: 'danger', 'data-focus': `${key}|delete` }, 'Delete'),
        ]));
      }
      const { keptOver } = item ?? {};
      if (keptOver && keptOver.by !== this.me.name) {
        parts.push(el('p', { class: 'reason' }, `${keptOver.by} kept their version over “${keptOver.title}”.`));
      }
      if (rejected && rejected.status !== 'unresolved') {
        parts.push(el('p', { class: 'reason' }, [
          `Not saved: ${outcomeReason(rejected)} `,
          el('button', { type: 'button', 'data-action': 'dismiss', 'data-change': task.changes[0] }, 'Dismiss'),
        ]));
      }
      return el('li', {
        class: `task${item?.done ? ' done' : ''}`,
        'data-feed': feed,
        'data-id': id,
        'data-state': state,
        draggable: writable ? 'true' : 'false',
      }, parts);
    });
  }

  renderNotices() {
    const notices = [...this.outcomes].map(([change, outcome]) => {
      const what = this.descriptions[change] ?? `Change ${change}`;
      if (outcome.status === 'unresolved') {
        const { ours, theirs } = outcome.conflict;
        if (theirs === null && ours !== null) {
          // Deleted by someone else while this user changed it.
          return el('li', { class: 'notice conflict', 'data-change': change }, [
            el('p', {}, [el('strong', {}, `${what}: not saved,`), ' because someone else deleted the task meanwhile.']),
            el('button', { type: 'button', 'data-change': change, 'data-action': 'mine' }, 'Restore it'),
            ' ',
            el('button', { type: 'button', 'data-change': change, 'data-action': 'theirs' }, 'Leave it deleted'),
          ]);
        }
        return el('li', { class: 'notice conflict', 'data-change': change }, [
          el('p', {}, [el('strong', {}, `${what}: conflict.`), ' Someone else changed this task too. Which version should stay?']),
          el('dl', { class: 'versions' }, [
            el('dt', {}, 'Yours'), el('dd', {}, describeTask(ours)),
            el('dt', {}, 'Theirs'), el('dd', {}, describeTask(theirs)),
          ]),
          el('button', { type: 'button', 'data-change': change, 'data-action': 'mine' }, 'Keep mine'),
          ' ',
          el('button', { type: 'button', 'data-change': change, 'data-action': 'theirs' }, 'Keep theirs'),
        ]);
      }
      if (outcome.status === 'conflict_resolved') {
        const how = { merged: 'merged with', kept_theirs: 'already matched', kept_ours: 'saved over', dropped_ours: 'dropped after' }[outcome.resolution] ?? outcome.resolution;
        return el('li', { class: 'notice info', 'data-change': change }, [
          el('p', {}, [el('strong', {}, `${what}:`), ` ${how} a change someone else made meanwhile.`]),
          el('button', { type: 'button', 'data-change': change, 'data-action': 'dismiss' }, 'OK'),
        ]);
      }
      return el('li', { class: 'notice rejected', 'data-change': change }, [
        el('p', {}, [el('strong', {}, `${what}: rejected.`), ` ${outcomeReason(outcome)}`]),
        el('button', { type: 'button', 'data-change': change, 'data-action': 'dismiss' }, 'Dismiss'),
      ]);
    });
    // Changes lost with a wiped database (kept until the user has read it).
    const wiped = this.status?.storageWiped;
    if (wiped) {
      const lost = wiped.lostChanges.map((change) => this.descriptions[change] ?? 'A change made on this device');
      notices.unshift(el('li', { class: 'notice rejected', 'data-wiped': '' }, [
        el('p', {}, [
          el('strong', {}, lost.length ? 'Some of your changes were lost.' : 'This browser’s saved data was cleared.'),
          lost.length ? ' This browser cleared the data it kept for this site before they reached the server:' : ' Nothing of yours was waiting to be sent.',
        ]),
        el('ul', { class: 'lost' }, lost.map((what) => el('li', {}, what))),
        el('button', { type: 'button', 'data-action': 'wiped' }, 'OK'),
      ]));
    }
    this.refused.forEach(({ what, message }, index) => notices.push(el('li', { class: 'notice rejected' }, [
      el('p', {}, [el('strong', {}, `${what}: not saved.`), ` This browser could not store it (${message}). Try again.`]),
      el('button', { type: 'button', 'data-action': 'refused', 'data-index': String(index) }, 'Dismiss'),
    ])));
    $('notices-title').hidden = notices.length === 0; // the list stays: it is a live region
    $('notice-list').replaceChildren(...notices);
  }

  /** The task a change is about, by its title. */
  taskOf(op) {
    const feed = op?.feed ?? op?.payload?.feed;
    const id = op?.id ?? op?.payload?.id;
    const title = op?.item?.title
      ?? (feed === undefined ? undefined : this.client.items(feed).find((item) => item.id === id)?.item?.title);
    return title === undefined ? 'a task' : `“${title}”`;
  }

  renderInspector(status) {
    const outbox = this.client.outbox();
    $('outbox').replaceChildren(...(outbox.length ? outbox.map((entry) => el('tr', { 'data-change': entry.id }, [
      el('td', {}, this.taskOf(entry.op)),
      el('td', {}, describeOp(entry.op)),
      el('td', {}, entry.accepted ? 'accepted' : entry.conflicts ? `${entry.conflicts} conflict(s)` : 'waiting'),
    ])) : [el('tr', {}, el('td', { colspan: 3, class: 'empty' }, 'empty: nothing waiting'))]));
    const feeds = Object.entries(status.feeds ?? {});
    $('revs').replaceChildren(...feeds.map(([feed, head]) => el('tr', {}, [
      el('td', {}, el('code', {}, feed)),
      el('td', { 'data-feed': feed }, String(head.rev)),
    ])));
  }
}

function outcomeReason(outcome) {
  if (outcome.status === 'rejected') return `${outcome.message} (${outcome.code})`;
  if (outcome.status === 'unresolved') return outcome.reason;
  return outcome.status;
}

function describeTask(task) {
  if (task === null || task === undefined) return 'deleted';
  if (typeof task !== 'object') return JSON.stringify(task);
  return `“${task.title}”${task.done ? ', done' : ', not done'}`;
}

/** A task's own fields, without the note of a conflict settled earlier. */
function plain(task) {
  const { keptOver, ...rest } = task ?? {};
  return rest;
}

/** A waiting change in words. */
function describeOp(op) {
  if (!op) return '';
  if (op.kind === 'action') return op.payload?.to ? `hand over to ${op.payload.to}` : op.name.replaceAll('_', ' ');
  return { publish: 'new task', edit: 'changed', retract: 'deleted', move: 'moved' }[op.kind] ?? op.kind;
}

await init();
if (params.has('feed')) {
  const { runRaw } = await import('./raw.js');
  await runRaw(Client, wsUrl, params);
} else {
  await runApp();
}
