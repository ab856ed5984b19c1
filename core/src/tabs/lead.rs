//! Leading: the Web Lock and the store's fencing token, queueing the
//! changes other tabs forward, and answering and broadcasting to them.

use thoonk_protocol::{ChangeId, FeedPattern};

use super::{
    FeedChange, Origin, OutcomeEvent, Refusal, Role, SharedState, TabEvent, TabMachine, TabMessage,
};

impl TabMachine {
    /// The lock is this tab's: open the store.
    pub fn lock_granted(&mut self, _now: u64) {
        match self.role {
            Role::Starting | Role::Following => {
                self.role = Role::Opening;
                self.next_ping = None;
                self.open_attempt += 1;
                self.emit(TabEvent::OpenStore {
                    attempt: self.open_attempt,
                });
            }
            Role::Closed => self.emit(TabEvent::ReleaseLock),
            Role::Opening | Role::Leading => {}
        }
    }

    /// Asked with [`Ask::IfFree`](super::Ask::IfFree), the lock was taken: follow.
    pub fn lock_taken(&mut self, now: u64) {
        if self.role == Role::Starting {
            self.follow(now);
        }
    }

    /// The lock was taken from this tab (another tab stole it).
    pub fn lock_lost(&mut self, now: u64) {
        match self.role {
            Role::Leading | Role::Opening => {
                if self.role == Role::Leading {
                    self.emit(TabEvent::CloseStore);
                }
                self.follow(now);
            }
            Role::Starting | Role::Following | Role::Closed => {}
        }
    }

    /// The store refused a write: another tab claimed it. Step aside.
    pub fn fenced(&mut self, now: u64) {
        if self.role == Role::Leading {
            self.emit(TabEvent::ReleaseLock);
            self.emit(TabEvent::CloseStore);
            self.follow(now);
        }
    }

    /// The store of opening `attempt` is open and claimed, with this client
    /// id: lead with it (`true`). `false`: the shell must close that store at
    /// once (this tab closed, lost the lock while it opened, or that opening
    /// is not the latest).
    #[must_use]
    pub fn store_opened(&mut self, attempt: u64, client_id: impl Into<String>, _now: u64) -> bool {
        if self.role != Role::Opening || attempt != self.open_attempt {
            return false;
        }
        self.role = Role::Leading;
        self.client_id = Some(client_id.into());
        self.missed_pings = 0;
        self.taking_over = false;
        self.state = None;
        let patterns: Vec<FeedPattern> = self.patterns.iter().cloned().collect();
        for pattern in patterns {
            self.emit(TabEvent::Subscribe(pattern));
        }
        // What this tab forwarded and did not hear back about: queue it here.
        for (handle, id, op) in self.unanswered_with_ids() {
            self.emit(TabEvent::Queue {
                origin: Origin::Own(handle),
                id,
                op,
            });
        }
        self.emit(TabEvent::Led);
        self.post(TabMessage::Leader {
            tab: self.tab.clone(),
        });
        self.open_done();
        true
    }

    /// The store of opening `attempt` could not be opened: let go of the lock.
    pub fn store_failed(&mut self, attempt: u64, now: u64) {
        if self.role != Role::Opening || attempt != self.open_attempt {
            return;
        }
        self.emit(TabEvent::ReleaseLock);
        self.emit(TabEvent::OpenFailed);
        if self.opened {
            self.follow(now);
        } else {
            self.role = Role::Starting;
        }
    }

    /// A [`TabEvent::Queue`] ended: `Ok` once the change is durable, `Err`
    /// when it was refused. (A leader that closed or was fenced first does
    /// not report: the next leader hears the change again.)
    pub fn queued(&mut self, origin: Origin, id: ChangeId, result: Result<(), Refusal>) {
        match origin {
            Origin::Own(handle) => self.answer(handle, result.map(|()| id)),
            Origin::Tab(to) => self.post(match result {
                Ok(()) => TabMessage::Queued { to, id },
                Err(refusal) => TabMessage::Refused { to, id, refusal },
            }),
        }
    }

    /// The answer to a [`TabEvent::Welcome`].
    pub fn welcome(&mut self, to: String, state: SharedState, outcomes: Vec<OutcomeEvent>) {
        if let (Role::Leading, Some(client_id)) = (self.role, self.client_id.clone()) {
            self.post(TabMessage::Welcome {
                to,
                client_id,
                state,
                outcomes,
            });
        }
    }

    /// The answer to a [`TabEvent::Views`].
    pub fn views(&mut self, to: String, req: u64, feeds: Vec<FeedChange>) {
        if self.role == Role::Leading {
            self.post(TabMessage::Views { to, req, feeds });
        }
    }

    /// Tells the followers (if any) what changed: `items`, `outcome` or `state`.
    pub fn broadcast(&mut self, message: TabMessage) {
        if self.role == Role::Leading && !self.followers.is_empty() {
            self.post(message);
        }
    }

    /// True when this tab leads and some tab follows it.
    pub fn has_followers(&self) -> bool {
        self.role == Role::Leading && !self.followers.is_empty()
    }

    pub(super) fn serve(&mut self, message: TabMessage) {
        match message {
            TabMessage::Join { tab } => {
                self.followers.entry(tab.clone()).or_default();
                self.emit(TabEvent::Welcome { to: tab });
            }
            TabMessage::Leave { tab } => {
                if let Some(patterns) = self.followers.remove(&tab) {
                    for pattern in patterns {
                        self.unsubscribe_if_unused(&pattern);
                    }
                }
            }
            TabMessage::Subscribe { tab, req, pattern } => {
                self.followers
                    .entry(tab.clone())
                    .or_default()
                    .insert(pattern.clone());
                self.emit(TabEvent::Subscribe(pattern.clone()));
                self.emit(TabEvent::Views {
                    to: tab,
                    req,
                    pattern,
                });
            }
            TabMessage::Unsubscribe { tab, pattern } => {
                if let Some(patterns) = self.followers.get_mut(&tab) {
                    patterns.remove(&pattern);
                }
                self.unsubscribe_if_unused(&pattern);
            }
            TabMessage::Change { tab, id, op } => self.emit(TabEvent::Queue {
                origin: Origin::Tab(tab),
                id,
                op,
            }),
            TabMessage::Dismiss { id } => self.emit(TabEvent::Dismiss(id)),
            TabMessage::SetOnline { online } => self.emit(TabEvent::SetOnline(online)),
            TabMessage::Ping { tab } => self.post(TabMessage::Pong { to: tab }),
            _ => {}
        }
    }
}
