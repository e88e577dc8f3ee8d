//! The in-memory store ([`InboxConfig::InMemory`](crate::InboxConfig::InMemory)): every
//! delivery in maps under one lock, applied in the caller's task. It never waits for a disk,
//! and handing each call to another thread would cost more than applying it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use preservica_webhook_core::DeliveryKey;
use prometheus_client::metrics::counter::Counter;

use crate::error::InboxError;
use crate::inbox::{DeliveryState, InboxEntry, StateCounts, StateFilter};
use crate::store::{
    Activity, Attempt, BoxFuture, Claim, Claimed, DeliveryId, InboxAdmin, Intake, NewDelivery,
    Outcome, Page, PageQuery, RunRecord, Scan, Store, Stored, StoredDelivery, WorkQueue,
};

/// Deliveries in memory; lost when the process ends.
#[derive(Debug)]
pub(crate) struct MemoryStore {
    state: Mutex<Memory>,
    /// Counts each write, as the SQLite store counts its commits.
    commits: Counter,
}

#[derive(Debug, Default)]
struct Memory {
    rows: BTreeMap<u64, Row>,
    keys: HashMap<DeliveryKey, u64>,
    /// Pending rows by `(due, id)`, where a leased row is due when its lease ends; a claim
    /// reads only what it hands out.
    pending: BTreeSet<(i64, u64)>,
    /// The rows per state, kept as rows change, so counting reads no row.
    counts: StateCounts,
    last_id: u64,
    closed: bool,
    /// The receivers' runs by id.
    runs: HashMap<String, RunRecord>,
}

#[derive(Debug)]
struct Row {
    key: DeliveryKey,
    body: Bytes,
    state: DeliveryState,
    received_at: i64,
    attempts: u32,
    /// When a pending row is due (its lease's end while leased).
    due: Option<i64>,
    next_attempt_at: Option<i64>,
    last_error: Option<String>,
    updated_at: i64,
    /// Its finished attempts, oldest first; removed with the row.
    history: Vec<Attempt>,
}

impl MemoryStore {
    /// An empty store that counts its writes in `commits`.
    pub(crate) fn new(commits: Counter) -> MemoryStore {
        MemoryStore {
            state: Mutex::default(),
            commits,
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, Memory>, InboxError> {
        let memory = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if memory.closed {
            return Err(InboxError::Closed);
        }
        Ok(memory)
    }

    fn with<T: Send + 'static>(
        &self,
        apply: impl FnOnce(&mut Memory) -> T,
    ) -> BoxFuture<'_, Result<T, InboxError>> {
        let result = self.lock().map(|mut memory| apply(&mut memory));
        Box::pin(std::future::ready(result))
    }
}

impl Intake for MemoryStore {
    fn store(&self, delivery: NewDelivery, now: i64) -> BoxFuture<'_, Result<Stored, InboxError>> {
        self.commits.inc();
        self.with(|memory| memory.insert(&delivery, now))
    }
}

impl WorkQueue for MemoryStore {
    fn claim(
        &self,
        now: i64,
        limit: usize,
        lease_until: i64,
    ) -> BoxFuture<'_, Result<Claim, InboxError>> {
        self.with(|memory| memory.claim(now, limit, lease_until))
    }

    fn complete(
        &self,
        id: DeliveryId,
        attempt: u32,
        outcome: Outcome,
        now: i64,
    ) -> BoxFuture<'_, Result<(), InboxError>> {
        self.commits.inc();
        self.with(|memory| memory.complete(&id, attempt, outcome, now))
    }

    fn prune(&self, before: i64) -> BoxFuture<'_, Result<usize, InboxError>> {
        self.commits.inc();
        self.with(|memory| memory.prune(before))
    }
}

impl InboxAdmin for MemoryStore {
    fn list(&self, filter: StateFilter) -> BoxFuture<'_, Result<Vec<InboxEntry>, InboxError>> {
        self.with(|memory| {
            memory
                .rows
                .iter()
                .filter(|(_, row)| filter.admits(row.state))
                .map(|(id, row)| row.entry(*id))
                .collect()
        })
    }

    /// Walks the rows down from the cursor, building an entry only for those in the state and
    /// time range.
    fn page<'a>(&'a self, query: &'a PageQuery) -> BoxFuture<'a, Result<Page, InboxError>> {
        self.with(|memory| {
            let below = query
                .after
                .as_ref()
                .and_then(DeliveryId::as_u64)
                .map_or(Bound::Unbounded, Bound::Excluded);
            let mut scan = Scan::new(query);
            for (id, row) in memory.rows.range((Bound::Unbounded, below)).rev() {
                if query.in_range(row.state, row.received_at) && !scan.offer(row.entry(*id)) {
                    break;
                }
            }
            scan.finish()
        })
    }

    fn activity(&self, now: i64) -> BoxFuture<'_, Result<Activity, InboxError>> {
        self.with(|memory| {
            Activity::of(
                now,
                memory.rows.values().map(|row| (row.received_at, row.state)),
            )
        })
    }

    fn get<'a>(
        &'a self,
        id: &'a DeliveryId,
    ) -> BoxFuture<'a, Result<Option<InboxEntry>, InboxError>> {
        self.with(|memory| {
            let id = id.as_u64()?;
            memory.rows.get(&id).map(|row| row.entry(id))
        })
    }

    fn retry<'a>(
        &'a self,
        id: &'a DeliveryId,
        now: i64,
    ) -> BoxFuture<'a, Result<bool, InboxError>> {
        self.with(|memory| id.as_u64().is_some_and(|id| memory.requeue(id, now)))
    }

    fn retry_dead(&self, now: i64) -> BoxFuture<'_, Result<usize, InboxError>> {
        self.with(|memory| {
            let dead: Vec<u64> = memory
                .rows
                .iter()
                .filter(|(_, row)| row.state == DeliveryState::Dead)
                .map(|(id, _)| *id)
                .collect();
            dead.into_iter()
                .filter(|id| memory.requeue(*id, now))
                .count()
        })
    }

    fn counts(&self) -> BoxFuture<'_, Result<StateCounts, InboxError>> {
        self.with(|memory| memory.counts)
    }

    fn runs(&self) -> BoxFuture<'_, Result<Vec<RunRecord>, InboxError>> {
        self.with(|memory| {
            let mut runs: Vec<RunRecord> = memory.runs.values().cloned().collect();
            runs.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
            runs
        })
    }

    fn attempts<'a>(
        &'a self,
        id: &'a DeliveryId,
    ) -> BoxFuture<'a, Result<Vec<Attempt>, InboxError>> {
        self.with(|memory| {
            id.as_u64()
                .and_then(|id| memory.rows.get(&id))
                .map(|row| row.history.clone())
                .unwrap_or_default()
        })
    }
}

impl Store for MemoryStore {
    fn record_run<'a>(&'a self, run: &'a RunRecord) -> BoxFuture<'a, Result<(), InboxError>> {
        let run = run.clone();
        self.with(move |memory| {
            memory.runs.insert(run.id.clone(), run);
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .closed = true;
        Box::pin(std::future::ready(()))
    }
}

impl Memory {
    fn insert(&mut self, delivery: &NewDelivery, now: i64) -> Stored {
        if let Some(id) = self.keys.get(&delivery.key) {
            return Stored::Duplicate(DeliveryId::from(*id));
        }
        self.last_id += 1;
        let id = self.last_id;
        self.keys.insert(delivery.key, id);
        let due = (delivery.state == DeliveryState::Pending).then_some(now);
        if let Some(at) = due {
            self.pending.insert((at, id));
        }
        self.counts.add(Some(delivery.state), 1);
        self.rows.insert(
            id,
            Row {
                key: delivery.key,
                // A copy: the request's bytes are a slice of the connection's read buffer,
                // which a stored slice would keep alive whole.
                body: Bytes::copy_from_slice(&delivery.body),
                state: delivery.state,
                received_at: now,
                attempts: 0,
                due,
                next_attempt_at: due,
                last_error: None,
                updated_at: now,
                history: Vec::new(),
            },
        );
        Stored::New(DeliveryId::from(id))
    }

    fn claim(&mut self, now: i64, limit: usize, lease_until: i64) -> Claim {
        let mut claim = Claim::default();
        let later = now.saturating_add(1);
        let due: Vec<(i64, u64)> = self
            .pending
            .range(..(later, 0))
            .take(limit)
            .copied()
            .collect();
        for (at, id) in due {
            let Some(row) = self.rows.get_mut(&id) else {
                continue;
            };
            self.pending.remove(&(at, id));
            self.pending.insert((lease_until, id));
            row.due = Some(lease_until);
            claim.due.push(Claimed {
                id: DeliveryId::from(id),
                key: row.key,
                body: row.body.clone(),
                attempts: row.attempts,
            });
        }
        claim.next_due = self.pending.range((later, 0)..).next().map(|&(at, _)| at);
        claim
    }

    fn complete(&mut self, id: &DeliveryId, attempt: u32, outcome: Outcome, now: i64) {
        let Some(id) = id.as_u64() else {
            return;
        };
        let Some(row) = self.rows.get_mut(&id) else {
            return;
        };
        // Another attempt's outcome, or one for a delivery re-queued or finished meanwhile.
        if row.state != DeliveryState::Pending || row.attempts.saturating_add(1) != attempt {
            return;
        }
        if let Some(at) = row.due {
            self.pending.remove(&(at, id));
        }
        row.attempts = attempt;
        row.updated_at = now;
        row.history.push(Attempt {
            number: attempt,
            finished_at: now,
            outcome: outcome.clone(),
        });
        (row.state, row.next_attempt_at) = match outcome {
            Outcome::Done => (DeliveryState::Done, None),
            Outcome::Retry { at, error } => {
                row.last_error = Some(error);
                (DeliveryState::Pending, Some(at))
            }
            Outcome::Dead { error } => {
                row.last_error = Some(error);
                (DeliveryState::Dead, None)
            }
        };
        row.due = row.next_attempt_at;
        self.counts.add(Some(DeliveryState::Pending), -1);
        self.counts.add(Some(row.state), 1);
        if let Some(at) = row.due {
            self.pending.insert((at, id));
        }
    }

    fn prune(&mut self, before: i64) -> usize {
        let old: Vec<u64> = self
            .rows
            .iter()
            .filter(|(_, row)| row.state == DeliveryState::Done && row.updated_at < before)
            .map(|(id, _)| *id)
            .collect();
        for id in &old {
            if let Some(row) = self.rows.remove(id) {
                self.keys.remove(&row.key);
                self.counts.add(Some(DeliveryState::Done), -1);
            }
        }
        old.len()
    }

    /// Makes a dead row pending, due at `now`, with its attempts reset.
    fn requeue(&mut self, id: u64, now: i64) -> bool {
        let Some(row) = self.rows.get_mut(&id) else {
            return false;
        };
        if row.state != DeliveryState::Dead {
            return false;
        }
        row.state = DeliveryState::Pending;
        self.counts.add(Some(DeliveryState::Dead), -1);
        self.counts.add(Some(DeliveryState::Pending), 1);
        row.attempts = 0;
        row.due = Some(now);
        row.next_attempt_at = Some(now);
        row.updated_at = now;
        self.pending.insert((now, id));
        true
    }
}

impl Row {
    fn entry(&self, id: u64) -> InboxEntry {
        InboxEntry::from(StoredDelivery {
            id: DeliveryId::from(id),
            key: self.key,
            body: self.body.clone(),
            state: self.state,
            received_at: self.received_at,
            attempts: self.attempts,
            next_attempt_at: self.next_attempt_at,
            last_error: self.last_error.clone(),
        })
    }
}
