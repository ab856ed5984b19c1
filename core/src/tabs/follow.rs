//! Following: joining the leader, forwarding changes under this tab's own
//! ids until answered, and the copy of the views, state and outcomes it shows.

use thoonk_protocol::{ChangeId, FeedName, FeedPattern, Operation, SortedMap};

use crate::effects::ItemView;

use super::{
    Ask, Handle, LeaderStatus, OutcomeEvent, Refusal, Role, SharedState, TabEvent, TabMachine,
    TabMessage, ViewCache, LEADER_SILENT_AFTER_PINGS, PING_INTERVAL_MS,
};

impl TabMachine {
    pub(super) fn follow(&mut self, now: u64) {
        self.role = Role::Following;
        self.followers.clear();
        self.missed_pings = 0;
        self.taking_over = false;
        self.next_ping = Some(now + PING_INTERVAL_MS);
        self.emit(TabEvent::AskLock(Ask::Wait));
        self.join();
    }

    pub(super) fn join(&mut self) {
        self.welcomed = false;
        self.post(TabMessage::Join {
            tab: self.tab.clone(),
        });
        let patterns: Vec<FeedPattern> = self.patterns.iter().cloned().collect();
        for pattern in patterns {
            self.ask_views(pattern);
        }
    }

    pub(super) fn ask_views(&mut self, pattern: FeedPattern) {
        self.next_req += 1;
        self.post(TabMessage::Subscribe {
            tab: self.tab.clone(),
            req: self.next_req,
            pattern,
        });
    }

    /// A new change id: `<client_id>:<tab>-<n>`, once the client id is known.
    pub(super) fn next_id(&mut self) -> Option<ChangeId> {
        let client_id = self.client_id.as_ref()?;
        self.next_change += 1;
        Some(ChangeId(format!(
            "{client_id}:{}-{}",
            self.tab, self.next_change
        )))
    }

    pub(super) fn answer(&mut self, handle: Handle, result: Result<ChangeId, Refusal>) {
        if let Some(index) = self.forwarded.iter().position(|c| c.handle == handle) {
            self.forwarded.remove(index);
            self.emit(TabEvent::Answer { handle, result });
            self.emit(TabEvent::StatusChanged);
        }
    }

    /// What a leader that steps aside knew, for the follower it becomes:
    /// its state, outcomes and the views of the feeds the app follows (shown
    /// until the new leader's answers arrive).
    pub fn stepped_aside(
        &mut self,
        state: SharedState,
        outcomes: Vec<OutcomeEvent>,
        views: Vec<(FeedName, Vec<ItemView>)>,
    ) {
        if self.role != Role::Following {
            return;
        }
        self.state.get_or_insert(state);
        for event in outcomes {
            self.outcomes.entry(event.id.clone()).or_insert(event);
        }
        for (feed, items) in views {
            if self.follows(&feed) && self.cache.items(&feed).is_none() {
                self.cache.replace(feed, items);
            }
        }
    }

    /// The leader's state as last heard.
    pub fn shared_state(&self) -> Option<&SharedState> {
        self.state.as_ref()
    }

    /// The stored outcomes as the leader last told them.
    pub fn outcomes(&self) -> impl Iterator<Item = &OutcomeEvent> {
        self.outcomes.values()
    }

    /// The cached view of `feed`.
    pub fn items(&self, feed: &FeedName) -> Option<&[ItemView]> {
        self.cache.items(feed)
    }

    /// The status a follower shows: the leader's, with this tab's unanswered
    /// changes counted as pending, and `connecting` while the leader is
    /// silent. `None` when this tab does not follow.
    pub fn follower_status(&self) -> Option<LeaderStatus> {
        if self.role != Role::Following && self.role != Role::Opening {
            return None;
        }
        let mut status = self
            .state
            .as_ref()
            .map(|s| s.status.clone())
            .unwrap_or_else(|| LeaderStatus {
                connection: "connecting".into(),
                ..LeaderStatus::default()
            });
        status.pending += self.forwarded.len() as u64;
        if self.missed_pings >= LEADER_SILENT_AFTER_PINGS {
            status.connection = "connecting".into();
        }
        Some(status)
    }

    /// The views this tab showed while it followed, for the leader it became
    /// to compare with its core's (emptied: a leader reads its core).
    pub fn take_cache(&mut self) -> ViewCache {
        std::mem::take(&mut self.cache)
    }

    /// How many changes this tab forwarded and did not hear back about.
    pub fn unanswered(&self) -> usize {
        self.forwarded.len()
    }

    pub(super) fn hear_leader(&mut self, message: TabMessage, now: u64) {
        let was_silent = std::mem::take(&mut self.missed_pings) >= LEADER_SILENT_AFTER_PINGS;
        self.taking_over = false;
        self.next_ping = Some(now + PING_INTERVAL_MS);
        if was_silent {
            self.emit(TabEvent::StatusChanged);
        }
        match message {
            TabMessage::Leader { .. } => self.join(),
            TabMessage::Welcome {
                to,
                client_id,
                state,
                outcomes,
            } if to == self.tab => self.take_welcome(client_id, state, outcomes),
            TabMessage::Views { to, feeds, .. } if to == self.tab => {
                for change in feeds {
                    self.cache
                        .replace(change.feed.clone(), change.changed.clone());
                    self.emit(TabEvent::FeedChanged(change));
                }
            }
            TabMessage::Queued { to, id } if to == self.tab => self.answer_id(&id, Ok(())),
            TabMessage::Refused { to, id, refusal } if to == self.tab => {
                self.answer_id(&id, Err(refusal))
            }
            TabMessage::Items { change } if self.follows(&change.feed) => {
                self.cache.apply(&change);
                self.emit(TabEvent::FeedChanged(change));
            }
            TabMessage::Outcome { event } => {
                self.outcomes.insert(event.id.clone(), event.clone());
                self.emit(TabEvent::Outcome(event));
            }
            TabMessage::State { state } => {
                self.state = Some(state);
                self.emit(TabEvent::StatusChanged);
            }
            _ => {}
        }
    }

    fn take_welcome(&mut self, client_id: String, state: SharedState, outcomes: Vec<OutcomeEvent>) {
        self.client_id = Some(client_id);
        self.state = Some(state);
        let mut stored = SortedMap::new();
        for event in outcomes {
            if !self.outcomes.contains_key(&event.id) {
                self.emit(TabEvent::Outcome(event.clone()));
            }
            stored.insert(event.id.clone(), event);
        }
        self.outcomes = stored;
        self.welcomed = true;
        self.resend_unanswered();
        self.emit(TabEvent::StatusChanged);
        self.open_done();
    }

    /// Everything unanswered goes (again) to the leader, under its id.
    pub(super) fn resend_unanswered(&mut self) {
        for (_, id, op) in self.unanswered_with_ids() {
            self.post(TabMessage::Change {
                tab: self.tab.clone(),
                id,
                op,
            });
        }
    }

    /// The unanswered changes, each with its id (given now to those made
    /// before the client id was known; kept for good once given).
    pub(super) fn unanswered_with_ids(&mut self) -> Vec<(Handle, ChangeId, Operation)> {
        let mut unanswered = vec![];
        for index in 0..self.forwarded.len() {
            if self.forwarded[index].id.is_none() {
                self.forwarded[index].id = self.next_id();
            }
            let change = &self.forwarded[index];
            if let Some(id) = &change.id {
                unanswered.push((change.handle, id.clone(), change.op.clone()));
            }
        }
        unanswered
    }

    fn answer_id(&mut self, id: &ChangeId, result: Result<(), Refusal>) {
        let handle = self
            .forwarded
            .iter()
            .find(|c| c.id.as_ref() == Some(id))
            .map(|c| c.handle);
        if let Some(handle) = handle {
            self.answer(handle, result.map(|()| id.clone()));
        }
    }
}
