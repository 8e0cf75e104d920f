//! The approval contract, on PostgreSQL + Redis and on SQLite + the
//! in-process cache: every test runs once per backend pair.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Fixture, cache_key, issued, request};
use warden_approval::{
    Approval, ApprovalError, ApprovalRequest, ApprovalStatus, ApprovalToken, IssueOutcome,
    WaitOutcome,
};
use warden_cache::Ttl;

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod postgres_redis {
            $(#[tokio::test] async fn $name() { super::$name(super::common::postgres_redis().await).await; })*
        }
        mod sqlite_in_process {
            $(#[tokio::test] async fn $name() { super::$name(super::common::sqlite_in_process().await).await; })*
        }
    };
}

contract!(
    issue_then_check_on_the_cache_path,
    check_falls_back_to_the_database_when_the_cache_entry_is_gone,
    expiry_is_refused_on_both_paths,
    approve_then_deny_is_already_decided,
    decisions_are_visible_on_both_paths,
    the_cache_is_never_repopulated_with_a_fresh_ttl,
    a_pending_request_gets_no_second_approval,
    concurrent_issues_for_one_request_make_one_approval,
    malformed_and_unknown_tokens_are_not_found,
    concurrent_deciders_have_exactly_one_winner,
    wait_for_decision_wakes_on_a_decision,
    wait_for_decision_times_out_while_pending,
    expire_stale_marks_overdue_approvals,
    invalid_requests_are_refused,
);

async fn issue_then_check_on_the_cache_path(f: Fixture) {
    let token = issued(f.manager.issue(&request("r-1")).await.unwrap());
    let cached: Approval = f
        .cache
        .get_json(&cache_key(&token))
        .await
        .unwrap()
        .expect("written through");
    let checked = f.manager.check(token.expose()).await.unwrap();
    assert_eq!(checked, cached);
    assert_eq!(checked.status, ApprovalStatus::Pending);
    assert_eq!(
        checked.raw_args_hash,
        "ab".repeat(32),
        "bound to the exact call"
    );
    assert_eq!(checked.request_id, "r-1");
    assert!(checked.result.is_none());
}

async fn check_falls_back_to_the_database_when_the_cache_entry_is_gone(f: Fixture) {
    let token = issued(f.manager.issue(&request("r-1")).await.unwrap());
    let from_cache = f.manager.check(token.expose()).await.unwrap();
    assert!(f.cache.delete(&cache_key(&token)).await.unwrap());
    let from_db = f.manager.check(token.expose()).await.unwrap();
    assert_eq!(from_db, from_cache);
}

async fn expiry_is_refused_on_both_paths(f: Fixture) {
    let mut short = request("r-exp");
    short.ttl = Some(Duration::from_millis(300));
    let token = issued(f.manager.issue(&short).await.unwrap());
    let approval = f.manager.check(token.expose()).await.unwrap();
    // A stale cache copy that outlives the approval must not revive it.
    f.cache
        .set_json(&cache_key(&token), &approval, Ttl::from_secs(60).unwrap())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(
        matches!(
            f.manager.check(token.expose()).await,
            Err(ApprovalError::Expired)
        ),
        "cache path"
    );
    f.cache.delete(&cache_key(&token)).await.unwrap();
    assert!(
        matches!(
            f.manager.check(token.expose()).await,
            Err(ApprovalError::Expired)
        ),
        "database path"
    );
    assert!(matches!(
        f.manager.approve(token.expose(), "alice", None).await,
        Err(ApprovalError::Expired)
    ));
    assert!(matches!(
        f.manager.deny(token.expose(), "alice", None).await,
        Err(ApprovalError::Expired)
    ));
}

async fn approve_then_deny_is_already_decided(f: Fixture) {
    let token = issued(f.manager.issue(&request("r-1")).await.unwrap());
    let approved = f
        .manager
        .approve(token.expose(), "alice", Some("looks fine"))
        .await
        .unwrap();
    assert_eq!(approved.status, ApprovalStatus::Approved);
    let result = approved.result.unwrap();
    assert_eq!(
        (result.approver_id.as_deref(), result.note.as_deref()),
        (Some("alice"), Some("looks fine"))
    );
    let err = f
        .manager
        .deny(token.expose(), "mallory", None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ApprovalError::AlreadyDecided {
                status: ApprovalStatus::Approved
            }
        ),
        "{err:?}"
    );
    let err = f
        .manager
        .approve(token.expose(), "alice", None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ApprovalError::AlreadyDecided { .. }),
        "{err:?}"
    );
    let still = f.manager.check(token.expose()).await.unwrap();
    assert_eq!(still.result.unwrap().approver_id.as_deref(), Some("alice"));
}

async fn decisions_are_visible_on_both_paths(f: Fixture) {
    let token = issued(f.manager.issue(&request("r-1")).await.unwrap());
    f.manager.check(token.expose()).await.unwrap();
    f.manager
        .deny(token.expose(), "bob", Some("no"))
        .await
        .unwrap();
    let cached = f.manager.check(token.expose()).await.unwrap();
    assert_eq!(cached.status, ApprovalStatus::Denied);
    f.cache.delete(&cache_key(&token)).await.unwrap();
    let stored = f.manager.check(token.expose()).await.unwrap();
    assert_eq!(stored.status, ApprovalStatus::Denied);
    assert_eq!(stored.result.unwrap().approver_id.as_deref(), Some("bob"));
}

async fn the_cache_is_never_repopulated_with_a_fresh_ttl(f: Fixture) {
    let mut r = request("r-1");
    r.ttl = Some(Duration::from_secs(2));
    let token = issued(f.manager.issue(&r).await.unwrap());
    tokio::time::sleep(Duration::from_millis(600)).await;
    f.manager
        .approve(token.expose(), "alice", None)
        .await
        .unwrap();
    let left = f.cache.ttl(&cache_key(&token)).await.unwrap().unwrap();
    assert!(
        left <= Duration::from_millis(1_400),
        "TTL was refreshed: {left:?}"
    );

    let token = issued(f.manager.issue(&request("r-2")).await.unwrap());
    f.cache.delete(&cache_key(&token)).await.unwrap();
    f.manager
        .approve(token.expose(), "alice", None)
        .await
        .unwrap();
    assert_eq!(
        f.cache.ttl(&cache_key(&token)).await.unwrap(),
        None,
        "the decision must not recreate the entry"
    );
    assert_eq!(
        f.manager.check(token.expose()).await.unwrap().status,
        ApprovalStatus::Approved
    );
}

async fn a_pending_request_gets_no_second_approval(f: Fixture) {
    let first = f.manager.issue(&request("r-1")).await.unwrap();
    let IssueOutcome::Issued { id, .. } = first else {
        panic!("{first:?}")
    };
    match f.manager.issue(&request("r-1")).await.unwrap() {
        IssueOutcome::Existing {
            id: existing,
            status,
            ..
        } => {
            assert_eq!((existing, status), (id, ApprovalStatus::Pending));
        }
        other => panic!("a second approval was issued: {other:?}"),
    }
    // Once decided, the same request may be asked again.
    assert!(matches!(
        f.manager.issue(&request("r-2")).await.unwrap(),
        IssueOutcome::Issued { .. }
    ));
}

async fn concurrent_issues_for_one_request_make_one_approval(f: Fixture) {
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let manager = f.manager.clone();
            tokio::spawn(async move { manager.issue(&request("r-race")).await.unwrap() })
        })
        .collect();
    let mut issued = 0;
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        match t.await.unwrap() {
            IssueOutcome::Issued { id, .. } => {
                issued += 1;
                ids.insert(id);
            }
            IssueOutcome::Existing { id, .. } => {
                ids.insert(id);
            }
        }
    }
    assert_eq!(issued, 1);
    assert_eq!(ids.len(), 1, "every caller sees the one approval");
    assert_eq!(
        f.manager
            .list(Some(ApprovalStatus::Pending), 100)
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn malformed_and_unknown_tokens_are_not_found(f: Fixture) {
    let unknown = ApprovalToken::generate().unwrap();
    for bad in [
        "",
        "short",
        "' OR '1'='1",
        &"A".repeat(10_000),
        "\0\0\0",
        unknown.expose(),
    ] {
        assert!(
            matches!(f.manager.check(bad).await, Err(ApprovalError::NotFound)),
            "{bad:.20}"
        );
        assert!(matches!(
            f.manager.approve(bad, "alice", None).await,
            Err(ApprovalError::NotFound)
        ));
        assert!(matches!(
            f.manager
                .wait_for_decision(bad, Duration::from_millis(10))
                .await,
            Err(ApprovalError::NotFound)
        ));
    }
}

async fn concurrent_deciders_have_exactly_one_winner(f: Fixture) {
    let token = issued(f.manager.issue(&request("r-1")).await.unwrap());
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let (manager, token) = (f.manager.clone(), token.expose().to_owned());
            tokio::spawn(async move {
                if i % 2 == 0 {
                    manager.approve(&token, &format!("a-{i}"), None).await
                } else {
                    manager.deny(&token, &format!("d-{i}"), None).await
                }
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(approval) => winners.push(approval),
            Err(ApprovalError::AlreadyDecided { .. }) => {}
            Err(other) => panic!("a loser got {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1);
    let stored = f.manager.check(token.expose()).await.unwrap();
    assert_eq!(stored.status, winners[0].status);
    assert_eq!(
        stored.result.unwrap().approver_id,
        winners[0].result.clone().unwrap().approver_id
    );
}

async fn wait_for_decision_wakes_on_a_decision(f: Fixture) {
    let token = issued(f.manager.issue(&request("r-1")).await.unwrap());
    let (manager, t) = (f.manager.clone(), token.expose().to_owned());
    let waiter =
        tokio::spawn(async move { manager.wait_for_decision(&t, Duration::from_secs(20)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    f.manager
        .approve(token.expose(), "alice", None)
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        WaitOutcome::Decided(a) => assert_eq!(a.status, ApprovalStatus::Approved),
        other => panic!("{other:?}"),
    }
}

async fn wait_for_decision_times_out_while_pending(f: Fixture) {
    let token = issued(f.manager.issue(&request("r-1")).await.unwrap());
    match f
        .manager
        .wait_for_decision(token.expose(), Duration::from_millis(200))
        .await
        .unwrap()
    {
        WaitOutcome::TimedOut(a) => assert_eq!(a.status, ApprovalStatus::Pending),
        other => panic!("{other:?}"),
    }
    let mut short = request("r-2");
    short.ttl = Some(Duration::from_millis(200));
    let token = issued(f.manager.issue(&short).await.unwrap());
    let err = f
        .manager
        .wait_for_decision(token.expose(), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ApprovalError::Expired),
        "expiry ends the wait as a refusal: {err:?}"
    );
}

async fn expire_stale_marks_overdue_approvals(f: Fixture) {
    for i in 0..7 {
        let mut r = request(&format!("old-{i}"));
        r.ttl = Some(Duration::from_millis(100));
        f.manager.issue(&r).await.unwrap();
    }
    let keep = issued(f.manager.issue(&request("fresh")).await.unwrap());
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(f.manager.expire_stale(3).await.unwrap(), 7);
    assert_eq!(f.manager.expire_stale(3).await.unwrap(), 0);
    assert_eq!(
        f.manager
            .list(Some(ApprovalStatus::Expired), 100)
            .await
            .unwrap()
            .len(),
        7
    );
    assert_eq!(
        f.manager.check(keep.expose()).await.unwrap().status,
        ApprovalStatus::Pending
    );
}

async fn invalid_requests_are_refused(f: Fixture) {
    type Mutation = Box<dyn Fn(&mut ApprovalRequest)>;
    let cases: Vec<(&str, Mutation)> = vec![
        ("request_id", Box::new(|r| r.request_id = String::new())),
        ("caller_id", Box::new(|r| r.caller_id = "x".repeat(300))),
        ("tool_name", Box::new(|r| r.tool_name = "bad\nname".into())),
        (
            "raw_args_hash",
            Box::new(|r| r.raw_args_hash = "not-a-hash".into()),
        ),
        ("ttl", Box::new(|r| r.ttl = Some(Duration::ZERO))),
    ];
    for (field, mutate) in cases {
        let mut r = request("r-bad");
        mutate(&mut r);
        match f.manager.issue(&r).await {
            Err(ApprovalError::InvalidField { field: got, .. }) => assert_eq!(got, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    assert!(
        f.manager.list(None, 10).await.unwrap().is_empty(),
        "nothing was stored"
    );
    let token = issued(f.manager.issue(&request("r-1")).await.unwrap());
    assert!(matches!(
        f.manager.approve(token.expose(), "", None).await,
        Err(ApprovalError::InvalidField {
            field: "approver_id",
            ..
        })
    ));
}
