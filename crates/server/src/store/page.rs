//! One page of deliveries and the arrivals the health panel shows: what
//! [`InboxAdmin::page`](super::InboxAdmin::page) and
//! [`InboxAdmin::activity`](super::InboxAdmin::activity) take and give, and the scan every
//! store's page shares.
//!
//! A page is newest first by id and continues after a cursor, the id of the last delivery the
//! previous page showed (or the last one it looked at): it stays put while new deliveries
//! arrive, and still works once that delivery has been removed. The state and the time received
//! are filters a database applies with its indexes; the trigger, the entity reference and the
//! text in the body need the body, and are applied to the rows read. One call reads at most
//! [`PageQuery::max_scanned`] rows, and says where to go on when it stopped there, so a filter
//! that matches little never makes one call read the whole inbox.

use std::future::Future;

use crate::error::InboxError;
use crate::inbox::{DeliveryState, InboxEntry, StateFilter};
use crate::store::DeliveryId;

/// How many rows one [`InboxAdmin::page`](super::InboxAdmin::page) call reads at most, unless
/// the query says otherwise.
pub const DEFAULT_MAX_SCANNED: usize = 5_000;

/// How many rows a store reads in one go while the body filters decide.
pub(crate) const CHUNK: usize = 250;

/// How many minutes [`Activity::per_minute`] covers.
pub const ACTIVITY_MINUTES: usize = 60;

/// Which deliveries one page shows: newest first (by id), after a cursor, filtered.
///
/// ```
/// use preservica_webhook_server::store::PageQuery;
/// use preservica_webhook_server::{DeliveryState, StateFilter};
///
/// let mut query = PageQuery::newest(50);
/// query.state = StateFilter::Only(DeliveryState::Dead);
/// query.entity = Some("a2f9".to_owned());
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PageQuery {
    /// The deliveries in this state, or in any.
    pub state: StateFilter,
    /// The cursor: show only deliveries older than this id (the last one the previous page
    /// showed, or its [`Page::next`]); `None` for the newest. A numeric id need not exist any
    /// more; an id that is not a number and not stored starts at the newest.
    pub after: Option<DeliveryId>,
    /// How many deliveries the page shows at most (at least one).
    pub limit: usize,
    /// Only deliveries received at or after this moment (ms since the Unix epoch).
    pub received_from: Option<i64>,
    /// Only deliveries received before this moment (ms since the Unix epoch).
    pub received_before: Option<i64>,
    /// Only deliveries whose trigger contains this text, in any case (`moved` finds `MOVED`).
    pub trigger: Option<String>,
    /// Only deliveries with an entity reference that contains this text, in any case: a
    /// whole reference or a part of one.
    pub entity: Option<String>,
    /// Only deliveries whose body contains this text, in any case.
    pub text: Option<String>,
    /// How many deliveries in the state and time range one call reads at most while looking
    /// for matches (at least one); [`DEFAULT_MAX_SCANNED`] unless set.
    pub max_scanned: usize,
}

/// One page of deliveries, newest first, and where the next one starts.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Page {
    /// The deliveries that match, newest first; at most the query's limit.
    pub entries: Vec<InboxEntry>,
    /// The cursor ([`PageQuery::after`]) to continue with: the last delivery shown when more
    /// match, or the last one read when the call stopped at [`PageQuery::max_scanned`] (the
    /// page may then be short, even empty). `None` when nothing older matches.
    pub next: Option<DeliveryId>,
}

/// What the health panel shows about arrivals, as of a `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Activity {
    /// When the newest delivery was received (ms since the Unix epoch); `None` in an empty
    /// inbox.
    pub last_received_at: Option<i64>,
    /// When the oldest pending delivery was received; `None` when none is pending.
    pub oldest_pending_at: Option<i64>,
    /// Deliveries received per minute over the last hour, oldest minute first: the last
    /// element counts those received less than a minute before `now`, element `59 - m` those
    /// received `m` whole minutes before it.
    pub per_minute: [u32; ACTIVITY_MINUTES],
}

impl PageQuery {
    /// The newest `limit` deliveries in any state, unfiltered.
    pub fn newest(limit: usize) -> PageQuery {
        PageQuery {
            state: StateFilter::All,
            after: None,
            limit,
            received_from: None,
            received_before: None,
            trigger: None,
            entity: None,
            text: None,
            max_scanned: DEFAULT_MAX_SCANNED,
        }
    }

    /// Whether a delivery is in the query's state and time range (the filters a database
    /// applies with its indexes).
    pub fn in_range(&self, state: DeliveryState, received_at: i64) -> bool {
        self.state.admits(state)
            && self.received_from.is_none_or(|from| received_at >= from)
            && self
                .received_before
                .is_none_or(|before| received_at < before)
    }

    /// Whether the query filters on what only the body tells (trigger, entity, text).
    fn reads_bodies(&self) -> bool {
        self.trigger.is_some() || self.entity.is_some() || self.text.is_some()
    }
}

impl Page {
    /// A page of `entries` that continues after `next`.
    pub fn new(entries: Vec<InboxEntry>, next: Option<DeliveryId>) -> Page {
        Page { entries, next }
    }
}

impl Default for Activity {
    fn default() -> Activity {
        Activity {
            last_received_at: None,
            oldest_pending_at: None,
            per_minute: [0; ACTIVITY_MINUTES],
        }
    }
}

impl Activity {
    /// The activity of the deliveries `(received at, state)` as of `now`, counted one by one;
    /// what a store without indexes to ask does.
    pub fn of(now: i64, deliveries: impl IntoIterator<Item = (i64, DeliveryState)>) -> Activity {
        let mut activity = Activity::default();
        for (at, state) in deliveries {
            activity.last_received_at = Some(activity.last_received_at.map_or(at, |it| it.max(at)));
            if state == DeliveryState::Pending {
                activity.oldest_pending_at =
                    Some(activity.oldest_pending_at.map_or(at, |it| it.min(at)));
            }
            if let Some(index) = minute_index(now - at) {
                activity.per_minute[index] += 1;
            }
        }
        activity
    }

    /// Counts `count` deliveries received `minutes_ago` whole minutes before `now`; minutes
    /// outside the last hour are left out.
    pub fn add_minute(&mut self, minutes_ago: i64, count: u32) {
        if let Some(index) = minute_index(minutes_ago.saturating_mul(60_000)) {
            self.per_minute[index] = self.per_minute[index].saturating_add(count);
        }
    }
}

/// The element of [`Activity::per_minute`] for a delivery received `ago` ms before `now`.
fn minute_index(ago: i64) -> Option<usize> {
    let minutes = usize::try_from(ago / 60_000).ok()?;
    (ago >= 0 && minutes < ACTIVITY_MINUTES).then(|| ACTIVITY_MINUTES - 1 - minutes)
}

/// A page being gathered from rows offered newest first.
#[derive(Debug)]
pub(crate) struct Scan<'q> {
    query: &'q PageQuery,
    limit: usize,
    max_scanned: usize,
    trigger: Option<String>,
    entity: Option<String>,
    text: Option<String>,
    entries: Vec<InboxEntry>,
    scanned: usize,
    last_read: Option<DeliveryId>,
    next: Option<DeliveryId>,
    stopped: bool,
}

impl<'q> Scan<'q> {
    pub(crate) fn new(query: &'q PageQuery) -> Scan<'q> {
        let lower = |it: &Option<String>| it.as_deref().map(str::to_lowercase);
        Scan {
            query,
            limit: query.limit.max(1),
            max_scanned: query.max_scanned.max(1),
            trigger: lower(&query.trigger),
            entity: lower(&query.entity),
            text: lower(&query.text),
            entries: Vec::new(),
            scanned: 0,
            last_read: None,
            next: None,
            stopped: false,
        }
    }

    /// How many rows to read next: one more than the page lacks when nothing but the state
    /// and time decide, else a chunk; never past the scan's bound.
    pub(crate) fn wanted(&self) -> usize {
        let by_filter = if self.query.reads_bodies() {
            CHUNK
        } else {
            (self.limit - self.entries.len())
                .saturating_add(1)
                .min(CHUNK)
        };
        by_filter.min(self.max_scanned - self.scanned).max(1)
    }

    /// Takes the next older row; `false` once the page is complete (read no more).
    pub(crate) fn offer(&mut self, entry: InboxEntry) -> bool {
        if self.stopped {
            return false;
        }
        if !self.in_range(&entry) {
            return true;
        }
        self.scanned += 1;
        let id = entry.id.clone();
        if self.matches(&entry) {
            if self.entries.len() == self.limit {
                self.next = self.entries.last().map(|it| it.id.clone());
                self.stopped = true;
                return false;
            }
            self.entries.push(entry);
        }
        self.last_read = Some(id);
        if self.scanned >= self.max_scanned {
            self.next = self.last_read.clone();
            self.stopped = true;
            return false;
        }
        true
    }

    /// The page, once the rows ran out or [`Scan::offer`] said it is complete.
    pub(crate) fn finish(self) -> Page {
        Page::new(self.entries, self.next)
    }

    /// Whether a row is in the query's state and time range; a row whose time cannot be read
    /// is in no time range.
    fn in_range(&self, entry: &InboxEntry) -> bool {
        let query = self.query;
        if query.received_from.is_none() && query.received_before.is_none() {
            return query.in_range(entry.state, 0);
        }
        chrono::DateTime::parse_from_rfc3339(&entry.received_at)
            .is_ok_and(|at| query.in_range(entry.state, at.timestamp_millis()))
    }

    fn matches(&self, entry: &InboxEntry) -> bool {
        let trigger_ok = self.trigger.as_deref().is_none_or(|want| {
            entry
                .trigger
                .as_deref()
                .is_some_and(|it| it.to_lowercase().contains(want))
        });
        let entity_ok = self.entity.as_deref().is_none_or(|want| {
            entry
                .entity_refs
                .iter()
                .any(|it| it.to_lowercase().contains(want))
        });
        let text_ok = self.text.as_deref().is_none_or(|want| {
            String::from_utf8_lossy(&entry.body)
                .to_lowercase()
                .contains(want)
        });
        trigger_ok && entity_ok && text_ok
    }
}

/// The page a database store reads in chunks: `fetch(before, n)` gives up to `n` rows in the
/// query's state and time range with ids below `before` (any id when `None`), newest first.
pub(crate) async fn scan_chunks<F, Fut>(query: &PageQuery, mut fetch: F) -> Result<Page, InboxError>
where
    F: FnMut(Option<i64>, usize) -> Fut,
    Fut: Future<Output = Result<Vec<InboxEntry>, InboxError>>,
{
    let mut scan = Scan::new(query);
    let mut before = query.after.as_ref().and_then(numeric);
    loop {
        let wanted = scan.wanted();
        let rows = fetch(before, wanted).await?;
        let ended = rows.len() < wanted;
        for entry in rows {
            before = numeric(&entry.id);
            if !scan.offer(entry) {
                return Ok(scan.finish());
            }
        }
        if ended || before.is_none() {
            return Ok(scan.finish());
        }
    }
}

/// The page of `newest_first` (every delivery in the query's state, newest first) that
/// `query` asks for: what a store that can only list does.
pub(crate) fn scan_listed(query: &PageQuery, newest_first: Vec<InboxEntry>) -> Page {
    let start = query
        .after
        .as_ref()
        .map_or(0, |cursor| after_cursor(&newest_first, cursor));
    let mut scan = Scan::new(query);
    for entry in newest_first.into_iter().skip(start) {
        if !scan.offer(entry) {
            break;
        }
    }
    scan.finish()
}

/// The index just past `cursor` in the newest-first `entries`: where the next page starts.
/// An id no longer listed (filtered out or pruned) falls back to comparing numeric ids; an id
/// that is neither listed nor a number starts at the newest.
pub(crate) fn after_cursor(entries: &[InboxEntry], cursor: &DeliveryId) -> usize {
    if let Some(at) = entries.iter().position(|entry| entry.id == *cursor) {
        return at + 1;
    }
    match cursor.as_u64() {
        Some(n) => entries
            .iter()
            .position(|entry| entry.id.as_u64().is_some_and(|it| it < n))
            .unwrap_or(entries.len()),
        None => 0,
    }
}

/// A database row id from a [`DeliveryId`] that is a number in its range.
fn numeric(id: &DeliveryId) -> Option<i64> {
    id.as_u64().and_then(|n| i64::try_from(n).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrivals_count_in_the_minute_they_are_ago_within_the_last_hour() {
        let now = 10_000_000;
        let activity = Activity::of(
            now,
            [
                (now, DeliveryState::Done),
                (now - 59_999, DeliveryState::Pending),
                (now - 60_000, DeliveryState::Dead),
                (now - 3_599_999, DeliveryState::Pending),
                (now - 3_600_000, DeliveryState::Done),
                (now + 1, DeliveryState::Done),
            ],
        );
        let mut expected = [0; ACTIVITY_MINUTES];
        (expected[59], expected[58], expected[0]) = (2, 1, 1);
        assert_eq!(activity.per_minute, expected);
        assert_eq!(activity.last_received_at, Some(now + 1));
        assert_eq!(activity.oldest_pending_at, Some(now - 3_599_999));

        let mut added = Activity::default();
        for (minutes_ago, count) in [(0, 2), (1, 1), (59, 1), (60, 5), (-1, 5)] {
            added.add_minute(minutes_ago, count);
        }
        assert_eq!(added.per_minute, expected);
        assert_eq!(Activity::of(now, []), Activity::default());
    }

    #[test]
    fn an_unbounded_limit_reads_a_chunk_at_a_time() {
        let query = PageQuery::newest(usize::MAX);
        assert_eq!(Scan::new(&query).wanted(), CHUNK);
        let small = PageQuery::newest(3);
        assert_eq!(Scan::new(&small).wanted(), 4, "one more than the page");
    }
}
