//! The Jepsen-style accounting of the fault and chaos suites: every change
//! the clients made, checked against the feeds' change logs and the job
//! ledger (lost, duplicated, unexpected), and the clients' convergence.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use thoonk_protocol::{ChangeId, FeedName};
use thoonk_server::feeds::FeedStore;

use crate::core_client::CoreClient;

/// The result of checking the clients' ledger against Redis.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Accounting {
    /// Changes the clients made.
    pub made: usize,
    /// Of those, applied on the server (accepted or resolved by resubmission).
    pub applied: usize,
    /// Of those, refused (rejected or unresolved).
    pub refused: usize,
    /// Told applied (or never told anything) but absent from every change log.
    pub lost: usize,
    /// In the change logs more than once.
    pub duplicated: usize,
    /// In a change log but never made, or made and told refused.
    pub unexpected: usize,
    /// Applied exactly once although put on the wire more than once (resent
    /// after a fault).
    pub recovered: usize,
    /// Details of every lost, duplicated or unexpected change.
    pub problems: Vec<String>,
}

impl Accounting {
    /// Prints the counts, and appends them to the file named by
    /// `THOONK_ACCOUNTING_LOG` when set (`scripts/test` shows that file).
    pub fn report(&self, name: &str) {
        let line = format!(
            "[accounting] {name}: made {} applied {} refused {} lost {} duplicated {} unexpected {} recovered {}",
            self.made, self.applied, self.refused, self.lost, self.duplicated, self.unexpected, self.recovered
        );
        eprintln!("{line}");
        if let Some(path) = std::env::var_os("THOONK_ACCOUNTING_LOG") {
            use std::io::Write;
            if let Ok(mut file) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                let _ = writeln!(file, "{line}");
            }
        }
        for p in &self.problems {
            eprintln!("[accounting] {name}: {p}");
        }
    }

    pub fn assert_clean(&self, name: &str) {
        self.report(name);
        assert_eq!(
            (self.lost, self.duplicated, self.unexpected),
            (0, 0, 0),
            "{name}: lost / duplicated / unexpected must be 0: {:#?}",
            self.problems
        );
    }
}

/// Every change-log entry of `feed` by job id: how many entries carry each.
pub async fn log_jobs(store: &FeedStore, feed: &FeedName) -> BTreeMap<String, usize> {
    let mut jobs = BTreeMap::new();
    let mut after = 0;
    loop {
        let page = match store.history(feed, after, 1000).await {
            Ok(page) => page,
            Err(thoonk_server::feeds::FeedError::FeedNotFound { .. }) => break,
            Err(err) => panic!("history of {feed}: {err}"),
        };
        let Some(last) = page.events.last() else {
            break;
        };
        after = last.rev;
        for event in &page.events {
            if let Some(job) = &event.change.job {
                *jobs.entry(job.clone()).or_default() += 1;
            }
        }
    }
    jobs
}

/// Checks every change the clients made against the change logs of `feeds`
/// (and, for refused changes, the job ledger). `logs` may carry entries read
/// before a log was lost on purpose (FLUSHALL), added to what is read now.
pub async fn account(
    store: &FeedStore,
    clients: &[&CoreClient],
    feeds: &[FeedName],
    earlier: &BTreeMap<String, usize>,
) -> Accounting {
    let mut logged: BTreeMap<String, usize> = earlier.clone();
    for feed in feeds {
        for (job, n) in log_jobs(store, feed).await {
            *logged.entry(job).or_default() += n;
        }
    }
    let mut acc = Accounting::default();
    let mut known = BTreeSet::new();
    for client in clients {
        for made in &client.made {
            acc.made += 1;
            let record = client.core().outcomes().get(&made.id);
            // Every wire id the change went out under (a conflict resubmission
            // takes a fresh one).
            let mut wires: BTreeSet<String> = BTreeSet::from([made.id.0.clone()]);
            if let Some(r) = record {
                wires.insert(r.wire_id.0.clone());
            }
            let count: usize = wires
                .iter()
                .map(|w| logged.get(w).copied().unwrap_or(0))
                .sum();
            let sends: u32 = wires
                .iter()
                .map(|w| {
                    client
                        .submits
                        .get(&ChangeId(w.clone()))
                        .copied()
                        .unwrap_or(0)
                })
                .sum();
            known.extend(wires.iter().cloned());
            match record.map(|r| r.outcome.applied()) {
                Some(true) => {
                    acc.applied += 1;
                    match count {
                        0 => {
                            acc.lost += 1;
                            acc.problems
                                .push(format!("lost: {} accepted but not in any log", made.id.0));
                        }
                        1 => {
                            if sends > 1 {
                                acc.recovered += 1;
                            }
                        }
                        n => {
                            acc.duplicated += 1;
                            acc.problems.push(format!(
                                "duplicated: {} is in the logs {n} times",
                                made.id.0
                            ));
                        }
                    }
                }
                Some(false) => {
                    acc.refused += 1;
                    if count > 0 {
                        acc.unexpected += 1;
                        acc.problems.push(format!(
                            "unexpected: {} was told {:?} but is in the logs {count} times",
                            made.id.0,
                            record.map(|r| &r.outcome)
                        ));
                    }
                }
                None => {
                    acc.lost += 1;
                    acc.problems.push(format!(
                        "lost: {} has no outcome (in the logs {count} times, sent {sends} times)",
                        made.id.0
                    ));
                }
            }
        }
    }
    for (job, n) in &logged {
        if !known.contains(job) {
            acc.unexpected += n;
            acc.problems.push(format!(
                "unexpected: log entry of {job}, which no client made"
            ));
        }
    }
    acc
}

/// Every client's mirror equals the server: same epoch, revision and items
/// in the same order, and no client holds a feed the server lacks.
pub async fn assert_converged(store: &FeedStore, clients: &[&CoreClient], feeds: &[FeedName]) {
    for feed in feeds {
        let snap = store.snapshot(feed).await.expect("snapshot");
        let server: Vec<(String, Value)> = snap
            .items
            .iter()
            .map(|i| (i.id.to_string(), i.item.clone()))
            .collect();
        for client in clients {
            let head = client.core().position(feed);
            let mine: Vec<(String, Value)> = client
                .core()
                .confirmed(feed)
                .into_iter()
                .map(|(id, value, _)| (id.to_string(), value))
                .collect();
            assert_eq!(
                head.map(|h| (h.epoch, h.rev)),
                Some((snap.epoch, snap.rev)),
                "{}: {feed} mirrored at {head:?}, server at ({}, {})",
                client.client_id,
                snap.epoch,
                snap.rev
            );
            assert_eq!(
                mine, server,
                "{}: {feed} items differ from the server",
                client.client_id
            );
            let view: Vec<(String, Value)> = client
                .core()
                .view(feed)
                .into_iter()
                .map(|v| (v.id.to_string(), v.value))
                .collect();
            assert_eq!(
                view, server,
                "{}: {feed} view differs from the server",
                client.client_id
            );
        }
    }
}
