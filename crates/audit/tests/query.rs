//! AuditQuery: the right rows, newest first, on both backends.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use chrono::{TimeZone, Utc};
use common::event_with;
use serde_json::json;
use warden_audit::{
    AuditError, AuditEvent, AuditFilter, AuditQuery, Cursor, Decision, Inclusion, Integrator,
    IntegratorConfig, append,
};
use warden_testkit::{Backend, TestDatabase};

fn ids(events: &[AuditEvent]) -> Vec<String> {
    events.iter().map(|e| e.request_id().to_owned()).collect()
}

/// 30 events: request r-0..r-29, callers alternate a/b/c, decisions cycle,
/// timestamps one minute apart from a fixed origin.
async fn seeded(backend: Backend) -> (TestDatabase, AuditQuery) {
    let t = TestDatabase::new(backend).await;
    let origin = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let decisions = [Decision::Allow, Decision::Deny, Decision::RequireApproval];
    let events: Vec<_> = (0..30)
        .map(|i| {
            let caller = ["a", "b", "c"][i % 3];
            let decision = decisions[(i / 2) % 3];
            let at = origin + chrono::Duration::minutes(i as i64);
            event_with(
                &format!("r-{i}"),
                caller,
                decision,
                &json!({"i": i}),
                Some(at),
            )
        })
        .collect();
    for chunk in events.chunks(7) {
        append(&t.db, chunk.to_vec(), Duration::from_secs(30))
            .await
            .unwrap();
    }
    let q = AuditQuery::new(t.db.clone());
    (t, q)
}

fn expected(filter: impl Fn(usize) -> bool) -> Vec<String> {
    (0..30)
        .rev()
        .filter(|i| filter(*i))
        .map(|i| format!("r-{i}"))
        .collect()
}

#[tokio::test]
async fn get_by_request_id() {
    for backend in Backend::ALL {
        let (t, q) = seeded(backend).await;
        let q_db = |_: &AuditQuery| t.db.clone();
        let e = q.get_by_request_id("r-7").await.unwrap().unwrap();
        assert_eq!(e.caller_id(), "b");
        // Appended, not integrated yet: queued, in no checkpoint.
        assert_eq!(
            e.inclusion(),
            Some(Inclusion {
                leaf_index: None,
                checkpoint_size: None
            })
        );
        assert_eq!(e.sanitized_args(), &json!({"i": 7}));
        Integrator::new(q_db(&q), IntegratorConfig::default())
            .integrate_all()
            .await
            .unwrap();
        let e = q.get_by_request_id("r-7").await.unwrap().unwrap();
        assert_eq!(
            e.inclusion(),
            Some(Inclusion {
                leaf_index: Some(7),
                checkpoint_size: Some(30)
            })
        );
        assert!(q.get_by_request_id("nope").await.unwrap().is_none());
        assert!(q.get_by_request_id("' OR 1=1 --").await.unwrap().is_none());
    }
}

#[tokio::test]
async fn list_by_caller_is_newest_first_with_offset() {
    for backend in Backend::ALL {
        let (_t, q) = seeded(backend).await;
        let all_b = expected(|i| i % 3 == 1);
        assert_eq!(ids(&q.list_by_caller("b", 100, 0).await.unwrap()), all_b);
        assert_eq!(
            ids(&q.list_by_caller("b", 3, 2).await.unwrap()),
            all_b[2..5]
        );
        assert!(q.list_by_caller("nobody", 10, 0).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn list_by_decision_and_recent() {
    for backend in Backend::ALL {
        let (_t, q) = seeded(backend).await;
        let deny = expected(|i| (i / 2) % 3 == 1);
        assert_eq!(
            ids(&q.list_by_decision(Decision::Deny, 100).await.unwrap()),
            deny
        );
        assert_eq!(
            ids(&q.list_by_decision(Decision::Deny, 2).await.unwrap()),
            deny[..2]
        );
        assert_eq!(
            ids(&q.list_recent(4).await.unwrap()),
            ["r-29", "r-28", "r-27", "r-26"]
        );
        assert!(
            q.list_by_decision(Decision::Error, 10)
                .await
                .unwrap()
                .is_empty()
        );
    }
}

#[tokio::test]
async fn keyset_pages_cover_every_match_once_in_order() {
    for backend in Backend::ALL {
        let (_t, q) = seeded(backend).await;
        let filter = AuditFilter {
            caller_id: Some("a".into()),
            ..Default::default()
        };
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = q.page(&filter, cursor, 3).await.unwrap();
            assert!(page.events.len() <= 3);
            seen.extend(ids(&page.events));
            // Cursors survive a round trip through their string form.
            cursor = page.next.map(|c| Cursor::decode(&c.encode()).unwrap());
            if cursor.is_none() {
                break;
            }
        }
        assert_eq!(seen, expected(|i| i % 3 == 0), "{backend:?}");
    }
}

#[tokio::test]
async fn time_range_and_decision_filters_combine() {
    for backend in Backend::ALL {
        let (_t, q) = seeded(backend).await;
        let origin = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let filter = AuditFilter {
            decision: Some(Decision::Allow),
            since: Some(origin + chrono::Duration::minutes(5)),
            until: Some(origin + chrono::Duration::minutes(20)),
            ..Default::default()
        };
        let page = q.page(&filter, None, 100).await.unwrap();
        assert_eq!(
            ids(&page.events),
            expected(|i| (5..20).contains(&i) && (i / 2) % 3 == 0),
            "{backend:?}"
        );
        assert!(page.next.is_none());
    }
}

#[test]
fn foreign_cursors_are_refused() {
    for bad in ["", "s", "s-1", "s0", "x12", "s1e3", "s99999999999999999999"] {
        assert!(
            matches!(Cursor::decode(bad), Err(AuditError::InvalidCursor)),
            "{bad}"
        );
    }
}
