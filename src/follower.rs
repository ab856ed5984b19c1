//! A following tab: it shows what the leading tab broadcasts and forwards its
//! app's changes and subscriptions to it.

use std::collections::BTreeMap;
use std::rc::Rc;

use futures::channel::oneshot;
use serde_json::{json, Value};
use thoonk_protocol::{ChangeId, FeedName, FeedPattern, Operation};
use wasm_bindgen::JsValue;

use crate::client::js_error;
use crate::tab::{Role, Tab};
use crate::tabs::{Interval, TabMessage, MISSED_PINGS_BEFORE_TAKEOVER, PING_INTERVAL_MS};

/// Unanswered pings after which a follower shows "connecting".
const LEADER_SILENT_AFTER_PINGS: u32 = 3;
use crate::view_cache::ViewCache;

/// A change this tab made and sent to the leader, not yet answered.
pub struct Forwarded {
    /// Its id, chosen once the client id is known (kept when sent again).
    pub id: Option<ChangeId>,
    /// What to do.
    pub op: Operation,
    /// Settles the app's promise: the id once durable, or the refusal.
    pub reply: oneshot::Sender<Result<ChangeId, JsValue>>,
}

/// The state of a following tab.
pub struct Follower {
    client_id: Option<String>,
    /// `{ status, outbox }` as the leader last sent it.
    state: Option<Value>,
    /// The views of the feeds this tab's app follows.
    pub cache: ViewCache,
    /// Stored outcome events by change id.
    pub outcomes: BTreeMap<ChangeId, Value>,
    /// Changes sent to the leader and not answered yet.
    pub forwarded: Vec<Forwarded>,
    next_change: u64,
    next_req: u64,
    missed_pings: u32,
    taking_over: bool,
    _pinger: Option<Interval>,
}

fn with_follower<R>(tab: &Tab, act: impl FnOnce(&mut Follower) -> R) -> Option<R> {
    match &mut *tab.role.borrow_mut() {
        Role::Follower(follower) => Some(act(follower)),
        _ => None,
    }
}

impl Follower {
    /// A follower of `tab`'s database, starting from what this tab knew as leader.
    pub fn new(
        tab: &Rc<Tab>,
        client_id: Option<String>,
        state: Option<Value>,
        cache: ViewCache,
        outcomes: BTreeMap<ChangeId, Value>,
    ) -> Self {
        let weak = Rc::downgrade(tab);
        let pinger = Interval::every(PING_INTERVAL_MS, move || {
            if let Some(tab) = weak.upgrade() {
                Follower::tick(&tab);
            }
        });
        Self {
            client_id,
            state,
            cache,
            outcomes,
            forwarded: vec![],
            next_change: 0,
            next_req: 0,
            missed_pings: 0,
            taking_over: false,
            _pinger: pinger,
        }
    }

    /// Asks the leader for the shared state and for the views the app follows.
    pub fn join(tab: &Rc<Tab>) {
        tab.post(&TabMessage::Join {
            tab: tab.id.clone(),
        });
        for pattern in tab.callbacks.patterns() {
            Follower::subscribe(tab, pattern);
        }
    }

    /// Sends the app's new pattern to the leader.
    pub fn subscribe(tab: &Rc<Tab>, pattern: FeedPattern) {
        let Some(req) = with_follower(tab, |f| {
            f.next_req += 1;
            f.next_req
        }) else {
            return;
        };
        tab.post(&TabMessage::Subscribe {
            tab: tab.id.clone(),
            req,
            pattern,
        });
    }

    /// Tells the leader the app left `pattern`; forgets the feeds no longer followed.
    pub fn unsubscribe(tab: &Rc<Tab>, pattern: FeedPattern) {
        with_follower(tab, |f| {
            let gone: Vec<String> = f
                .cache
                .feeds()
                .filter(|feed| FeedName::new(*feed).is_ok_and(|feed| !tab.callbacks.follows(&feed)))
                .map(str::to_owned)
                .collect();
            for feed in gone {
                f.cache.remove(&feed);
            }
        });
        tab.post(&TabMessage::Unsubscribe {
            tab: tab.id.clone(),
            pattern,
        });
    }

    /// Forwards a change to the leader; resolves once it is durable there.
    pub fn forward(tab: &Rc<Tab>, op: Operation) -> oneshot::Receiver<Result<ChangeId, JsValue>> {
        let (reply, answer) = oneshot::channel();
        let send = with_follower(tab, |f| {
            let id = f.next_id(&tab.id);
            f.forwarded.push(Forwarded {
                id: id.clone(),
                op: op.clone(),
                reply,
            });
            id
        });
        if let Some(Some(id)) = send {
            tab.post(&TabMessage::Change {
                tab: tab.id.clone(),
                id,
                op,
            });
        }
        Follower::report_status(tab);
        answer
    }

    /// A new change id: `<client_id>:<tab>-<n>`, once the client id is known.
    fn next_id(&mut self, tab: &str) -> Option<ChangeId> {
        let client_id = self.client_id.as_ref()?;
        self.next_change += 1;
        Some(ChangeId(format!("{client_id}:{tab}-{}", self.next_change)))
    }

    /// Hears the leader.
    pub fn hear(tab: &Rc<Tab>, message: TabMessage) {
        let was_silent = with_follower(tab, |f| {
            std::mem::take(&mut f.missed_pings) >= LEADER_SILENT_AFTER_PINGS
        });
        if was_silent == Some(true) {
            Follower::report_status(tab);
        }
        match message {
            TabMessage::Leader { .. } => Follower::join(tab),
            TabMessage::Welcome {
                to,
                client_id,
                state,
                outcomes,
            } if to == tab.id => {
                let Some((resend, new_outcomes)) = with_follower(tab, |f| {
                    f.client_id = Some(client_id);
                    f.state = Some(state);
                    let mut new_outcomes = vec![];
                    let mut stored = BTreeMap::new();
                    for event in outcomes {
                        let Some(id) = event["id"].as_str().map(|id| ChangeId(id.to_owned()))
                        else {
                            continue;
                        };
                        if !f.outcomes.contains_key(&id) {
                            new_outcomes.push(event.clone());
                        }
                        stored.insert(id, event);
                    }
                    f.outcomes = stored;
                    // Everything unanswered goes (again) to this leader.
                    let mut resend = vec![];
                    for index in 0..f.forwarded.len() {
                        if f.forwarded[index].id.is_none() {
                            f.forwarded[index].id = f.next_id(&tab.id);
                        }
                        let change = &f.forwarded[index];
                        if let Some(id) = &change.id {
                            resend.push((id.clone(), change.op.clone()));
                        }
                    }
                    (resend, new_outcomes)
                }) else {
                    return;
                };
                for (id, op) in resend {
                    tab.post(&TabMessage::Change {
                        tab: tab.id.clone(),
                        id,
                        op,
                    });
                }
                for event in &new_outcomes {
                    tab.callbacks.outcome(event);
                }
                Follower::report_status(tab);
                tab.opened();
            }
            TabMessage::Views { to, feeds, .. } if to == tab.id => {
                for change in &feeds {
                    let (Some(feed), Some(items)) = (
                        change["feed"].as_str(),
                        change["changed"].as_array().cloned(),
                    ) else {
                        continue;
                    };
                    with_follower(tab, |f| f.cache.replace(feed, items));
                    tab.callbacks.feed_changed(change);
                }
            }
            TabMessage::Queued { to, id } if to == tab.id => {
                Follower::answer(tab, &id, Ok(id.clone()));
            }
            TabMessage::Refused {
                to,
                id,
                code,
                message,
            } if to == tab.id => {
                Follower::answer(tab, &id, Err(js_error(&code, message)));
            }
            TabMessage::Items { change } => {
                let followed = change["feed"]
                    .as_str()
                    .and_then(|feed| FeedName::new(feed).ok())
                    .is_some_and(|feed| tab.callbacks.follows(&feed));
                if followed {
                    with_follower(tab, |f| f.cache.apply(&change));
                    tab.callbacks.feed_changed(&change);
                }
            }
            TabMessage::Outcome { event } => {
                if let Some(id) = event["id"].as_str() {
                    let id = ChangeId(id.to_owned());
                    with_follower(tab, |f| f.outcomes.insert(id, event.clone()));
                }
                tab.callbacks.outcome(&event);
            }
            TabMessage::State { state } => {
                with_follower(tab, |f| f.state = Some(state));
                Follower::report_status(tab);
            }
            _ => {}
        }
    }

    fn answer(tab: &Tab, id: &ChangeId, answer: Result<ChangeId, JsValue>) {
        let change = with_follower(tab, |f| {
            let index = f.forwarded.iter().position(|c| c.id.as_ref() == Some(id))?;
            Some(f.forwarded.remove(index))
        });
        if let Some(Some(change)) = change {
            let _ = change.reply.send(answer);
            Follower::report_status(tab);
        }
    }

    /// Checks that the leader answers; takes the lead from one that stopped.
    fn tick(tab: &Rc<Tab>) {
        let take_over = with_follower(tab, |f| {
            if f.taking_over {
                return false;
            }
            f.missed_pings += 1;
            f.taking_over = f.missed_pings > MISSED_PINGS_BEFORE_TAKEOVER;
            f.taking_over
        });
        match take_over {
            Some(true) => tab.take_over(),
            Some(false) => {
                tab.post(&TabMessage::Ping {
                    tab: tab.id.clone(),
                });
                Follower::report_status(tab);
            }
            None => {}
        }
    }

    /// The status as `status()` shows it in this tab: the leader's, with
    /// this tab's unanswered changes counted as pending, and "connecting"
    /// while the leader does not answer.
    pub fn status(tab: &Tab) -> Option<Value> {
        match &*tab.role.borrow() {
            Role::Follower(f) => {
                let mut status = f.state.as_ref().map(|s| s["status"].clone()).unwrap_or_else(
                    || json!({ "connection": "connecting", "server": "available", "pending": 0, "feeds": {}, "storageError": null, "storageWiped": null }),
                );
                let pending = status["pending"].as_u64().unwrap_or(0);
                status["pending"] = (pending + f.forwarded.len() as u64).into();
                if f.missed_pings >= LEADER_SILENT_AFTER_PINGS {
                    status["connection"] = "connecting".into();
                }
                status["tab"] = "follower".into();
                Some(status)
            }
            _ => None,
        }
    }

    /// Tells the app's status listeners about a change of [`Follower::status`].
    fn report_status(tab: &Tab) {
        if let Some(status) = Follower::status(tab) {
            tab.callbacks.status(&status);
        }
    }

    /// The outbox as the leader last sent it.
    pub fn outbox(&self) -> Value {
        self.state
            .as_ref()
            .map(|s| s["outbox"].clone())
            .unwrap_or_else(|| json!([]))
    }

    /// The cached items of `feed`.
    pub fn items(&self, feed: &FeedName) -> Value {
        Value::Array(
            self.cache
                .items(feed.as_str())
                .map(<[Value]>::to_vec)
                .unwrap_or_default(),
        )
    }

    /// The revision of `feed` as the leader last reported it.
    pub fn rev(&self, feed: &FeedName) -> Option<u64> {
        self.state.as_ref()?["status"]["feeds"][feed.as_str()]["rev"].as_u64()
    }
}
