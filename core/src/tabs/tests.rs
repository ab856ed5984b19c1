use serde_json::json;
use thoonk_protocol::{ChangeId, FeedName, FeedPattern, ItemId, Operation};

use super::*;

fn op(n: u64) -> Operation {
    Operation::Publish {
        feed: FeedName::new("team:1:tasks").unwrap(),
        id: ItemId::new(format!("i{n}")).unwrap(),
        item: json!({ "n": n }),
        position: None,
    }
}

fn drain(machine: &mut TabMachine) -> (Vec<TabMessage>, Vec<TabEvent>) {
    let mut posted = vec![];
    while let Some(message) = machine.poll_transmit() {
        posted.push(message);
    }
    let mut events = vec![];
    while let Some(event) = machine.poll_event() {
        events.push(event);
    }
    (posted, events)
}

fn welcome(to: &str) -> TabMessage {
    TabMessage::Welcome {
        to: to.into(),
        client_id: "c1".into(),
        state: SharedState::default(),
        outcomes: vec![],
    }
}

/// A tab that follows a leader which welcomed it.
fn follower(tab: &str) -> TabMachine {
    let mut machine = TabMachine::new(tab);
    machine.lock_taken(0);
    machine.heard(welcome(tab), 0);
    drain(&mut machine);
    machine
}

fn changes_posted(posted: &[TabMessage]) -> Vec<ChangeId> {
    posted
        .iter()
        .filter_map(|m| match m {
            TabMessage::Change { id, .. } => Some(id.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_tab_that_led_in_between_never_reuses_a_change_id() {
    let mut tab = follower("tA");
    tab.change(op(1)).unwrap();
    let (posted, _) = drain(&mut tab);
    let first = changes_posted(&posted);
    assert_eq!(first, [ChangeId("c1:tA-1".into())]);
    tab.heard(
        TabMessage::Queued {
            to: "tA".into(),
            id: first[0].clone(),
        },
        1,
    );
    // It leads for a while, is fenced, and follows again.
    tab.lock_granted(2);
    assert!(tab.store_opened(1, "c1", 2));
    assert_eq!(tab.role(), Role::Leading);
    tab.fenced(3);
    assert_eq!(tab.role(), Role::Following);
    tab.heard(welcome("tA"), 4);
    drain(&mut tab);
    tab.change(op(2)).unwrap();
    let (posted, _) = drain(&mut tab);
    let second = changes_posted(&posted);
    assert_eq!(second.len(), 1);
    assert_ne!(
        second[0], first[0],
        "a new change must not take the id of one the leader already queued"
    );
}

#[test]
fn unanswered_changes_go_again_to_each_new_leader_under_the_same_id() {
    let mut tab = follower("tB");
    let Ok(ChangeRoute::Forwarded(handle)) = tab.change(op(1)) else {
        panic!("a follower forwards");
    };
    let (posted, _) = drain(&mut tab);
    let id = changes_posted(&posted)[0].clone();
    // The leader went away before answering; another one leads.
    tab.heard(
        TabMessage::Leader {
            tab: "tOther".into(),
        },
        1,
    );
    let (posted, _) = drain(&mut tab);
    assert!(matches!(&posted[..], [TabMessage::Join { tab }] if tab == "tB"));
    tab.heard(welcome("tB"), 2);
    let (posted, _) = drain(&mut tab);
    assert_eq!(changes_posted(&posted), std::slice::from_ref(&id));
    tab.heard(
        TabMessage::Queued {
            to: "tB".into(),
            id: id.clone(),
        },
        3,
    );
    let (_, events) = drain(&mut tab);
    assert!(events.contains(&TabEvent::Answer {
        handle,
        result: Ok(id.clone())
    }));
    assert_eq!(tab.unanswered(), 0);
    // A duplicate answer changes nothing.
    tab.heard(
        TabMessage::Queued {
            to: "tB".into(),
            id,
        },
        4,
    );
    let (_, events) = drain(&mut tab);
    assert!(!events.iter().any(|e| matches!(e, TabEvent::Answer { .. })));
}

#[test]
fn a_follower_that_becomes_leader_queues_what_it_forwarded() {
    let mut tab = follower("tC");
    let Ok(ChangeRoute::Forwarded(handle)) = tab.change(op(1)) else {
        panic!("a follower forwards");
    };
    drain(&mut tab);
    tab.lock_granted(1);
    assert_eq!(drain(&mut tab).1, [TabEvent::OpenStore { attempt: 1 }]);
    assert!(tab.store_opened(1, "c1", 2));
    let (posted, events) = drain(&mut tab);
    let id = ChangeId("c1:tC-1".into());
    assert!(events.contains(&TabEvent::Queue {
        origin: Origin::Own(handle),
        id: id.clone(),
        op: op(1)
    }));
    assert!(matches!(&posted[..], [TabMessage::Leader { tab }] if tab == "tC"));
    tab.queued(Origin::Own(handle), id.clone(), Ok(()));
    let (_, events) = drain(&mut tab);
    assert!(events.contains(&TabEvent::Answer {
        handle,
        result: Ok(id)
    }));
}

#[test]
fn a_silent_leader_is_pinged_then_stolen_from() {
    let mut tab = follower("tD");
    let mut now;
    let mut pings = 0;
    loop {
        now = tab.poll_timeout().expect("a follower pings");
        tab.handle_timeout(now);
        let (posted, events) = drain(&mut tab);
        pings += posted
            .iter()
            .filter(|m| matches!(m, TabMessage::Ping { .. }))
            .count();
        if events.contains(&TabEvent::AskLock(Ask::Steal)) {
            break;
        }
        assert!(now < 60_000, "never took over");
    }
    assert_eq!(pings as u32, MISSED_PINGS_BEFORE_TAKEOVER);
    assert_eq!(
        tab.follower_status().unwrap().connection,
        "connecting",
        "a silent leader shows as connecting"
    );
    // An answer in time resets the count.
    let mut tab = follower("tE");
    for _ in 0..MISSED_PINGS_BEFORE_TAKEOVER {
        now = tab.poll_timeout().unwrap();
        tab.handle_timeout(now);
    }
    tab.heard(TabMessage::Pong { to: "tE".into() }, now);
    for _ in 0..MISSED_PINGS_BEFORE_TAKEOVER {
        now = tab.poll_timeout().unwrap();
        tab.handle_timeout(now);
    }
    let (_, events) = drain(&mut tab);
    assert!(!events.contains(&TabEvent::AskLock(Ask::Steal)));
}

#[test]
fn a_leader_that_loses_the_lock_or_is_fenced_stops_writing_and_follows() {
    for fenced in [false, true] {
        let mut tab = TabMachine::new("tF");
        tab.lock_granted(0);
        assert!(tab.store_opened(1, "c1", 0));
        tab.heard(TabMessage::Join { tab: "tG".into() }, 0);
        drain(&mut tab);
        assert!(tab.has_followers());
        if fenced {
            tab.fenced(1);
        } else {
            tab.lock_lost(1);
        }
        let (posted, events) = drain(&mut tab);
        assert!(events.contains(&TabEvent::CloseStore));
        assert!(events.contains(&TabEvent::AskLock(Ask::Wait)));
        assert!(matches!(&posted[..], [TabMessage::Join { .. }]));
        assert_eq!(tab.role(), Role::Following);
        // A change heard now is not for this tab to queue.
        tab.heard(
            TabMessage::Change {
                tab: "tG".into(),
                id: ChangeId("c1:tG-1".into()),
                op: op(1),
            },
            2,
        );
        assert!(!drain(&mut tab)
            .1
            .iter()
            .any(|e| matches!(e, TabEvent::Queue { .. })));
    }
}

#[test]
fn a_store_opened_after_the_lock_was_lost_is_closed_again() {
    let mut tab = follower("tH");
    tab.lock_granted(0);
    tab.lock_lost(1);
    drain(&mut tab);
    assert!(!tab.store_opened(1, "c1", 2));
    let (posted, events) = drain(&mut tab);
    assert!(events.is_empty() && posted.is_empty());
    assert_eq!(tab.role(), Role::Following);
}

#[test]
fn only_the_latest_opening_leads() {
    let mut tab = follower("tI");
    // Granted, lost while the store opened, granted again: two openings run.
    tab.lock_granted(0);
    tab.lock_lost(1);
    tab.lock_granted(2);
    drain(&mut tab);
    assert!(
        !tab.store_opened(1, "c1", 3),
        "the first opening's store is closed, not led with"
    );
    assert_eq!(tab.role(), Role::Opening);
    assert!(tab.store_opened(2, "c1", 4));
    assert_eq!(tab.role(), Role::Leading);
    assert!(
        !tab.store_opened(2, "c1", 5),
        "a store opened again never replaces the one this tab leads with"
    );
    assert_eq!(tab.role(), Role::Leading);
    assert!(!drain(&mut tab).1.contains(&TabEvent::CloseStore));
}

#[test]
fn the_leader_serves_followers_and_unsubscribes_what_no_tab_follows() {
    let mut tab = TabMachine::new("tL");
    tab.lock_granted(0);
    assert!(tab.store_opened(1, "c1", 0));
    let pattern = FeedPattern::new("team:1:*").unwrap();
    drain(&mut tab);
    tab.heard(TabMessage::Ping { tab: "tM".into() }, 1);
    tab.heard(
        TabMessage::Subscribe {
            tab: "tM".into(),
            req: 1,
            pattern: pattern.clone(),
        },
        1,
    );
    let (posted, events) = drain(&mut tab);
    assert_eq!(posted, [TabMessage::Pong { to: "tM".into() }]);
    assert_eq!(
        events,
        [
            TabEvent::Subscribe(pattern.clone()),
            TabEvent::Views {
                to: "tM".into(),
                req: 1,
                pattern: pattern.clone()
            }
        ]
    );
    tab.heard(TabMessage::Leave { tab: "tM".into() }, 2);
    assert_eq!(drain(&mut tab).1, [TabEvent::Unsubscribe(pattern)]);
    tab.broadcast(TabMessage::State {
        state: SharedState::default(),
    });
    assert!(
        drain(&mut tab).0.is_empty(),
        "no broadcast without followers"
    );
}

#[test]
fn closing_refuses_unanswered_changes() {
    let mut tab = follower("tN");
    let Ok(ChangeRoute::Forwarded(handle)) = tab.change(op(1)) else {
        panic!("a follower forwards");
    };
    drain(&mut tab);
    tab.close();
    let (posted, events) = drain(&mut tab);
    assert!(matches!(&posted[..], [TabMessage::Leave { .. }]));
    assert!(events.iter().any(|e| matches!(
        e,
        TabEvent::Answer { handle: h, result: Err(r) } if *h == handle && r.code == "closed"
    )));
    assert_eq!(tab.change(op(2)), Err(TabError::Closed));
}

#[test]
fn messages_are_json_with_a_t_field() {
    let message = TabMessage::Refused {
        to: "t1".into(),
        id: ChangeId("c1:t1-1".into()),
        refusal: Refusal::new("bad_request", "no"),
    };
    let text = serde_json::to_value(&message).unwrap();
    assert_eq!(
        text,
        json!({ "t": "refused", "to": "t1", "id": "c1:t1-1", "code": "bad_request", "message": "no" })
    );
    let state = TabMessage::State {
        state: SharedState {
            status: serde_json::from_value(
                json!({ "connection": "online", "pending": 2, "feeds": {}, "storageError": null }),
            )
            .unwrap(),
            outbox: vec![],
        },
    };
    let text = serde_json::to_string(&state).unwrap();
    assert_eq!(serde_json::from_str::<TabMessage>(&text).unwrap(), state);
    assert!(text.contains("\"storageError\":null"), "{text}");
}
