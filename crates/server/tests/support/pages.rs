//! What every store's [`InboxAdmin::page`] and [`InboxAdmin::activity`] do, through the seam
//! only: shared by the crate's own store tests and the PostgreSQL tests, which each include
//! this file beside the names it uses.

use super::{
    Bytes, DeliveryId, DeliveryKey, DeliveryState, InboxEntry, NewDelivery, PageQuery, StateFilter,
    Store, Stored,
};

/// When the first delivery of the checks is received; one more arrives each minute.
const T0: i64 = 1_700_000_000_000;
const MINUTE: i64 = 60_000;

/// Stores delivery `n`, received at minute `n`: dead when `n % 4 == 0`, done when
/// `n % 4 == 1`, else pending; MOVED when `n` is even; entity `ref-{n}`; text `word-{n}x`.
async fn arrive(inbox: &dyn Store, n: i64) -> DeliveryId {
    let state = match n % 4 {
        0 => DeliveryState::Dead,
        1 => DeliveryState::Done,
        _ => DeliveryState::Pending,
    };
    let trigger = if n % 2 == 0 {
        "MOVED"
    } else {
        "FULL_TEXT_INDEXED"
    };
    let body = Bytes::from(format!(
        r#"{{"trigger":"{trigger}","events":[{{"entityRef":"ref-{n}"}}],"note":"word-{n}x"}}"#
    ));
    let delivery = NewDelivery::new(DeliveryKey::of(&body), body, state);
    match inbox.store(delivery, T0 + n * MINUTE).await.unwrap() {
        Stored::New(id) => id,
        Stored::Duplicate(id) => panic!("delivery {n} was stored as a duplicate of {id}"),
    }
}

fn ids_of(page: &[InboxEntry]) -> Vec<DeliveryId> {
    page.iter().map(|entry| entry.id.clone()).collect()
}

/// Every page of `query`, followed by its cursors: the ids shown, and the cursors followed.
async fn follow(inbox: &dyn Store, mut query: PageQuery) -> (Vec<DeliveryId>, Vec<DeliveryId>) {
    let (mut shown, mut cursors) = (Vec::new(), Vec::new());
    for _ in 0..100 {
        let page = inbox.page(&query).await.unwrap();
        assert!(
            page.entries.len() <= query.limit,
            "a page longer than its limit"
        );
        shown.extend(ids_of(&page.entries));
        let Some(next) = page.next else {
            return (shown, cursors);
        };
        cursors.push(next.clone());
        query.after = Some(next);
    }
    panic!("the pages never ended");
}

/// The ids of deliveries `ns` (indexes into `ids`).
fn pick(ids: &[DeliveryId], ns: &[usize]) -> Vec<DeliveryId> {
    ns.iter().map(|n| ids[*n].clone()).collect()
}

/// Pages newest first, cursors that hold while deliveries arrive and after one is removed,
/// each filter, the bounded scan, and the arrivals the health panel shows.
pub(crate) async fn pages_and_activity(inbox: &dyn Store) {
    let mut ids = Vec::new();
    for n in 0..12 {
        ids.push(arrive(inbox, n).await);
    }

    // Newest first, a page at a time; the cursor is the last delivery shown.
    let first = inbox.page(&PageQuery::newest(5)).await.unwrap();
    assert_eq!(ids_of(&first.entries), pick(&ids, &[11, 10, 9, 8, 7]));
    assert_eq!(first.next.as_ref(), Some(&ids[7]));
    assert_eq!(first.entries[0].entity_refs, ["ref-11"]);

    // Deliveries arriving meanwhile do not move the next page.
    ids.push(arrive(inbox, 12).await);
    ids.push(arrive(inbox, 13).await);
    let mut query = PageQuery::newest(5);
    query.after = first.next.clone();
    let second = inbox.page(&query).await.unwrap();
    assert_eq!(ids_of(&second.entries), pick(&ids, &[6, 5, 4, 3, 2]));
    query.after = second.next.clone();
    let last = inbox.page(&query).await.unwrap();
    assert_eq!(ids_of(&last.entries), pick(&ids, &[1, 0]));
    assert_eq!(last.next, None, "nothing older");
    let newest = inbox.page(&PageQuery::newest(2)).await.unwrap();
    assert_eq!(ids_of(&newest.entries), pick(&ids, &[13, 12]));

    // Each filter, alone and together.
    let check = |query: PageQuery, expected: &[usize], what: &'static str| {
        let expected = pick(&ids, expected);
        async move {
            let (shown, _) = follow(inbox, query).await;
            assert_eq!(shown, expected, "{what}");
        }
    };
    let mut query = PageQuery::newest(2);
    query.state = StateFilter::Only(DeliveryState::Dead);
    check(query, &[12, 8, 4, 0], "dead letters").await;
    let mut query = PageQuery::newest(20);
    query.trigger = Some("moved".into());
    check(query, &[12, 10, 8, 6, 4, 2, 0], "trigger, in any case").await;
    let mut query = PageQuery::newest(20);
    query.entity = Some("REF-3".into());
    check(query, &[3], "entity reference").await;
    let mut query = PageQuery::newest(20);
    query.entity = Some("ref-1".into());
    check(query, &[13, 12, 11, 10, 1], "part of an entity reference").await;
    let mut query = PageQuery::newest(20);
    query.text = Some("WORD-5X".into());
    check(query, &[5], "text in the body").await;
    let mut query = PageQuery::newest(2);
    query.received_from = Some(T0 + 3 * MINUTE);
    query.received_before = Some(T0 + 6 * MINUTE);
    check(query, &[5, 4, 3], "received from, and before").await;
    let mut query = PageQuery::newest(20);
    query.state = StateFilter::Only(DeliveryState::Pending);
    query.trigger = Some("MOVED".into());
    query.received_before = Some(T0 + 12 * MINUTE);
    check(query, &[10, 6, 2], "all at once").await;

    // A filter that matches nothing reads a bounded number of rows per call and says where to
    // go on; one that matches some finds them all across such calls.
    let mut query = PageQuery::newest(5);
    query.trigger = Some("no such trigger".into());
    query.max_scanned = 4;
    let (shown, cursors) = follow(inbox, query).await;
    assert_eq!(shown, []);
    assert_eq!(
        cursors,
        pick(&ids, &[10, 6, 2]),
        "stopped after 4 rows each"
    );
    let mut query = PageQuery::newest(2);
    query.trigger = Some("moved".into());
    query.max_scanned = 3;
    check(query, &[12, 10, 8, 6, 4, 2, 0], "bounded scans").await;

    // A cursor whose delivery is gone continues with the older ones.
    assert_eq!(inbox.prune(T0 + 2 * MINUTE).await.unwrap(), 1, "delivery 1");
    let mut query = PageQuery::newest(5);
    query.after = Some(ids[1].clone());
    let after_removed = inbox.page(&query).await.unwrap();
    assert_eq!(ids_of(&after_removed.entries), pick(&ids, &[0]));
    query.after = Some(ids[2].clone());
    let after_gap = inbox.page(&query).await.unwrap();
    assert_eq!(ids_of(&after_gap.entries), pick(&ids, &[0]));

    // Arrivals: the newest, the oldest pending (delivery 2), one a minute for 14 minutes
    // but for delivery 1, removed.
    let now = T0 + 13 * MINUTE + 30_000;
    let activity = inbox.activity(now).await.unwrap();
    assert_eq!(activity.last_received_at, Some(T0 + 13 * MINUTE));
    assert_eq!(activity.oldest_pending_at, Some(T0 + 2 * MINUTE));
    let mut expected = [0_u32; 60];
    for n in [0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13] {
        expected[46 + n] = 1;
    }
    assert_eq!(activity.per_minute, expected);
    let later = inbox.activity(T0 + 74 * MINUTE).await.unwrap();
    assert_eq!(later.per_minute, [0; 60], "nothing in the last hour");
    assert_eq!(later.last_received_at, Some(T0 + 13 * MINUTE));
}
