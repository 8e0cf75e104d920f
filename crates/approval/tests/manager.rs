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
    a_decision_drops_the_cache_entry,
    no_cache_write_can_approve_or_decide_a_call,
    a_cache_entry_naming_another_approval_cannot_misdirect_a_decision,
    consume_runs_an_approved_call_once_for_its_exact_binding,
    a_retry_finds_and_consumes_its_approval_once_without_the_token,
    an_approved_call_not_run_within_its_window_expires,
    reissue_replaces_a_pending_approval_whose_token_was_lost,
    every_approval_action_records_exactly_one_admin_event,
    a_decision_whose_event_cannot_be_recorded_is_not_made,
    a_pending_request_gets_no_second_approval,
    concurrent_issues_for_one_request_make_one_approval,
    malformed_and_unknown_tokens_are_not_found,
    concurrent_deciders_have_exactly_one_winner,
    deciding_by_id_is_the_same_exactly_once_decision,
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

async fn a_decision_drops_the_cache_entry(f: Fixture) {
    let token = issued(f.manager.issue(&request("r-1")).await.unwrap());
    assert!(f.cache.ttl(&cache_key(&token)).await.unwrap().is_some());
    f.manager
        .approve(token.expose(), "alice", None)
        .await
        .unwrap();
    assert_eq!(
        f.cache.ttl(&cache_key(&token)).await.unwrap(),
        None,
        "only the database answers for a decided approval"
    );
    assert_eq!(
        f.manager.check(token.expose()).await.unwrap().status,
        ApprovalStatus::Approved
    );
}

/// Security review, item 1: anyone who can write the cache could flip a held
/// call to APPROVED (or DENIED) and announce it. Only the database may decide.
async fn no_cache_write_can_approve_or_decide_a_call(f: Fixture) {
    let token = issued(f.manager.issue(&request("r-forged")).await.unwrap());
    let genuine = f.manager.check(token.expose()).await.unwrap();
    for forged_status in [ApprovalStatus::Approved, ApprovalStatus::Denied] {
        let mut forged = genuine.clone();
        forged.status = forged_status;
        forged.result = Some(warden_approval::ApprovalResult {
            status: forged_status,
            approver_id: Some("mallory".into()),
            note: None,
            decided_at: chrono::Utc::now(),
        });
        forged.execute_by = Some(chrono::Utc::now() + chrono::Duration::hours(1));
        f.cache
            .set_json(&cache_key(&token), &forged, Ttl::from_secs(60).unwrap())
            .await
            .unwrap();
        // The forged entry is also "announced" on the decision channel.
        let _ = f
            .cache
            .publish("approval:decided", token.hash().as_bytes())
            .await;
        let checked = f.manager.check(token.expose()).await.unwrap();
        assert_eq!(checked.status, ApprovalStatus::Pending, "{forged_status}");
        assert_eq!(checked, genuine);
        match f
            .manager
            .wait_for_decision(token.expose(), Duration::from_millis(150))
            .await
            .unwrap()
        {
            WaitOutcome::TimedOut(a) => assert_eq!(a.status, ApprovalStatus::Pending),
            other => panic!("a cache write decided the call: {other:?}"),
        }
        let err = f
            .manager
            .consume(token.expose(), &request("r-forged").binding())
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                ApprovalError::NotApproved {
                    status: ApprovalStatus::Pending
                }
            ),
            "{err:?}"
        );
    }
    // The genuine decision still goes through, exactly once.
    f.manager.deny(token.expose(), "alice", None).await.unwrap();
    assert_eq!(
        f.manager.check(token.expose()).await.unwrap().status,
        ApprovalStatus::Denied
    );
}

/// Hardening, item 3: the one-statement decision names its row from the
/// cache; an entry pointing at another approval (or another call) must
/// neither decide that one nor record an event about it.
async fn a_cache_entry_naming_another_approval_cannot_misdirect_a_decision(f: Fixture) {
    // Two forgeries, each against its own approval: A's entry claims to be
    // B; C's entry carries a foreign call's arguments hash.
    let token_a = issued(f.manager.issue(&request("r-mis-a")).await.unwrap());
    let token_b = issued(f.manager.issue(&request("r-mis-b")).await.unwrap());
    let token_c = issued(f.manager.issue(&request("r-mis-c")).await.unwrap());
    let a = f.manager.check(token_a.expose()).await.unwrap();
    let b = f.manager.check(token_b.expose()).await.unwrap();
    let c = f.manager.check(token_c.expose()).await.unwrap();
    let mut wrong_args = c.clone();
    wrong_args.raw_args_hash = "0".repeat(64);
    for (token, forged) in [(&token_a, &b), (&token_c, &wrong_args)] {
        f.cache
            .set_json(&cache_key(token), forged, Ttl::from_secs(60).unwrap())
            .await
            .unwrap();
    }
    for (token, genuine) in [(&token_a, &a), (&token_c, &c)] {
        let decided = f
            .manager
            .approve(token.expose(), "alice", None)
            .await
            .unwrap();
        assert_eq!(decided.id, genuine.id);
        assert_eq!(decided.request_id, genuine.request_id);
        assert_eq!(decided.raw_args_hash, genuine.raw_args_hash);
    }
    assert_eq!(
        f.manager.check(token_b.expose()).await.unwrap().status,
        ApprovalStatus::Pending
    );
    let decisions: Vec<_> = admin_events(&f)
        .await
        .into_iter()
        .filter(|(action, _, _)| action == "approval.approve")
        .collect();
    assert_eq!(
        decisions,
        [
            (
                "approval.approve".to_owned(),
                "alice".to_owned(),
                "r-mis-a".to_owned()
            ),
            (
                "approval.approve".to_owned(),
                "alice".to_owned(),
                "r-mis-c".to_owned()
            )
        ]
    );
    let args_hashes =
        f.db.strings("SELECT raw_args_hash FROM audit_events WHERE method = 'approval.approve'")
            .await;
    assert_eq!(
        args_hashes,
        vec![a.raw_args_hash.clone(), c.raw_args_hash.clone()]
    );
    // B is still decided on its own, once.
    f.manager.deny(token_b.expose(), "bob", None).await.unwrap();
    assert!(matches!(
        f.manager.deny(token_b.expose(), "bob", None).await,
        Err(ApprovalError::AlreadyDecided { .. })
    ));
}

/// Security review, item 8: an approval is one-time and bound to the whole call.
/// The retry of a call whose hold ran out: it finds the approval issued for
/// exactly this call (no token), consumes it once among 16 concurrent
/// retries, and another caller, tool, arguments or policy version finds
/// nothing; a pending or denied approval is never used.
async fn a_retry_finds_and_consumes_its_approval_once_without_the_token(f: Fixture) {
    let held = request("r-retry");
    let token = issued(f.manager.issue(&held).await.unwrap());
    assert!(
        f.manager
            .consume_for_call(&held.binding())
            .await
            .unwrap()
            .is_none(),
        "a pending approval is not used"
    );
    f.manager
        .approve(token.expose(), "alice", None)
        .await
        .unwrap();
    type Change = fn(&mut warden_approval::CallBinding);
    let changes: [Change; 4] = [
        |b| b.caller_id = "agent-8".into(),
        |b| b.tool_name = "db.truncate".into(),
        |b| b.raw_args_hash = "cd".repeat(32),
        |b| b.policy_version = "relaxed".into(),
    ];
    for change in changes {
        let mut other = held.binding();
        change(&mut other);
        assert!(f.manager.consume_for_call(&other).await.unwrap().is_none());
    }
    let retries: Vec<_> = (0..16)
        .map(|_| {
            let (manager, binding) = (f.manager.clone(), held.binding());
            tokio::spawn(async move { manager.consume_for_call(&binding).await })
        })
        .collect();
    let mut ran = 0;
    for retry in retries {
        if retry.await.unwrap().unwrap().is_some() {
            ran += 1;
        }
    }
    assert_eq!(ran, 1, "one retry runs the approved call");
    let approval = f.manager.check(token.expose()).await.unwrap();
    assert_eq!(approval.status, ApprovalStatus::Executed);
    assert!(
        f.manager
            .consume_for_call(&held.binding())
            .await
            .unwrap()
            .is_none()
    );
    // A denied approval is never used.
    let denied = request("r-retry-denied");
    let token = issued(f.manager.issue(&denied).await.unwrap());
    f.manager.deny(token.expose(), "alice", None).await.unwrap();
    assert!(
        f.manager
            .consume_for_call(&denied.binding())
            .await
            .unwrap()
            .is_none()
    );
}

async fn consume_runs_an_approved_call_once_for_its_exact_binding(f: Fixture) {
    let held = request("r-run");
    let token = issued(f.manager.issue(&held).await.unwrap());
    assert!(matches!(
        f.manager.consume(token.expose(), &held.binding()).await,
        Err(ApprovalError::NotApproved {
            status: ApprovalStatus::Pending
        })
    ));
    let approved = f
        .manager
        .approve(token.expose(), "alice", None)
        .await
        .unwrap();
    let execute_by = approved.execute_by.expect("an approval carries its window");
    assert!(execute_by > approved.result.unwrap().decided_at);
    type Change = fn(&mut warden_approval::CallBinding);
    let changes: [(&str, Change); 4] = [
        ("caller_id", |b| b.caller_id = "agent-8".into()),
        ("tool_name", |b| b.tool_name = "db.truncate".into()),
        ("raw_args_hash", |b| b.raw_args_hash = "cd".repeat(32)),
        ("policy_version", |b| b.policy_version = "relaxed".into()),
    ];
    for (field, change) in changes {
        let mut other = held.binding();
        change(&mut other);
        match f.manager.consume(token.expose(), &other).await {
            Err(ApprovalError::BindingMismatch { field: got }) => assert_eq!(got, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    // Upper-case hex is the same hash.
    let mut same = held.binding();
    same.raw_args_hash = same.raw_args_hash.to_ascii_uppercase();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (m, t, b) = (f.manager.clone(), token.expose().to_owned(), same.clone());
            tokio::spawn(async move { m.consume(&t, &b).await })
        })
        .collect();
    let mut ran = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(a) => {
                ran += 1;
                assert_eq!(a.status, ApprovalStatus::Executed);
                assert!(a.executed_at.is_some());
            }
            Err(ApprovalError::AlreadyExecuted) => {}
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(ran, 1, "one approval runs one call once");
    let after = f.manager.check(token.expose()).await.unwrap();
    assert_eq!(after.status, ApprovalStatus::Executed);
    assert!(!after.is_approved());
    assert_eq!(
        after.result.unwrap().status,
        ApprovalStatus::Approved,
        "the decision stays on record"
    );
    assert!(matches!(
        f.manager.approve(token.expose(), "bob", None).await,
        Err(ApprovalError::AlreadyDecided { .. })
    ));
}

/// Issue 20, item 3: an APPROVED approval must be used within its execution
/// window; past it, it is EXPIRED on every path.
async fn an_approved_call_not_run_within_its_window_expires(f: Fixture) {
    let manager = f
        .manager
        .clone()
        .with_execution_window(Duration::from_secs(1));
    let held = request("r-late");
    let token = issued(manager.issue(&held).await.unwrap());
    manager
        .approve(token.expose(), "alice", None)
        .await
        .unwrap();
    assert!(manager.check(token.expose()).await.unwrap().is_approved());
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    assert!(matches!(
        manager.check(token.expose()).await,
        Err(ApprovalError::Expired)
    ));
    assert!(matches!(
        manager
            .wait_for_decision(token.expose(), Duration::from_secs(1))
            .await,
        Err(ApprovalError::Expired)
    ));
    assert!(matches!(
        manager.consume(token.expose(), &held.binding()).await,
        Err(ApprovalError::Expired)
    ));
    // The expiry time itself is the limit for an undecided approval.
    let mut short = request("r-short");
    short.ttl = Some(Duration::from_millis(300));
    let token = issued(manager.issue(&short).await.unwrap());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(matches!(
        manager.approve(token.expose(), "alice", None).await,
        Err(ApprovalError::Expired)
    ));
}

/// Security review, item 10: an `issue` whose answer was lost (a timeout after
/// its commit) must not block the request until expiry.
async fn reissue_replaces_a_pending_approval_whose_token_was_lost(f: Fixture) {
    let held = request("r-lost");
    let lost = issued(f.manager.issue(&held).await.unwrap());
    assert!(matches!(
        f.manager.issue(&held).await.unwrap(),
        IssueOutcome::Existing { .. }
    ));
    let mut other_call = held.clone();
    other_call.raw_args_hash = "cd".repeat(32);
    assert!(matches!(
        f.manager.reissue(&other_call).await,
        Err(ApprovalError::BindingMismatch {
            field: "raw_args_hash"
        })
    ));
    let fresh = issued(f.manager.reissue(&held).await.unwrap());
    assert!(matches!(
        f.manager.check(lost.expose()).await,
        Err(ApprovalError::Expired)
    ));
    assert!(matches!(
        f.manager.approve(lost.expose(), "alice", None).await,
        Err(ApprovalError::Expired)
    ));
    f.manager
        .approve(fresh.expose(), "alice", None)
        .await
        .unwrap();
    f.manager
        .consume(fresh.expose(), &held.binding())
        .await
        .unwrap();
    // With nothing pending, reissue is an ordinary issue.
    issued(f.manager.reissue(&request("r-new")).await.unwrap());
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
    // The request id held for another call is not this call's approval.
    let mut other = request("r-1");
    other.caller_id = "agent-8".into();
    assert!(matches!(
        f.manager.issue(&other).await,
        Err(ApprovalError::BindingMismatch { field: "caller_id" })
    ));
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

/// The console decides by id for a signed-in approver: one winner among
/// deciders by id and by token together, the loser told who won, the
/// decision recorded and visible on every path; unknown ids are not found,
/// expired approvals cannot be decided.
async fn deciding_by_id_is_the_same_exactly_once_decision(f: Fixture) {
    let token = issued(f.manager.issue(&request("r-id")).await.unwrap());
    let id = f.manager.check(token.expose()).await.unwrap().id;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (manager, token) = (f.manager.clone(), token.expose().to_owned());
            tokio::spawn(async move {
                match i % 3 {
                    0 => {
                        manager
                            .approve_by_id(id, &format!("console-{i}"), Some("ok"))
                            .await
                    }
                    1 => manager.deny_by_id(id, &format!("console-{i}"), None).await,
                    _ => manager.approve(&token, &format!("token-{i}"), None).await,
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
    assert_eq!(winners.len(), 1, "exactly one decision");
    let winner = winners.remove(0);
    let stored = f.manager.get(id).await.unwrap();
    assert_eq!(stored.status, winner.status);
    assert_eq!(stored.result, winner.result);
    assert_eq!(
        f.manager.check(token.expose()).await.unwrap().status,
        winner.status
    );
    // A later decider by id is refused and can read who decided.
    let late = f.manager.approve_by_id(id, "late", None).await.unwrap_err();
    assert!(
        matches!(late, ApprovalError::AlreadyDecided { .. }),
        "{late:?}"
    );
    // Recorded: one decision event, by the winner.
    let decisions: Vec<_> = admin_events(&f)
        .await
        .into_iter()
        .filter(|(method, _, _)| method == "approval.approve" || method == "approval.deny")
        .collect();
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    assert_eq!(
        Some(decisions[0].1.clone()),
        winner.result.as_ref().and_then(|r| r.approver_id.clone())
    );

    assert!(matches!(
        f.manager
            .approve_by_id(uuid::Uuid::now_v7(), "x", None)
            .await,
        Err(ApprovalError::NotFound)
    ));
    // Nobody decides their own held call.
    let token = issued(f.manager.issue(&request("r-own")).await.unwrap());
    let own = f.manager.check(token.expose()).await.unwrap();
    for decided in [
        f.manager.approve_by_id(own.id, &own.caller_id, None).await,
        f.manager.deny_by_id(own.id, &own.caller_id, None).await,
    ] {
        assert!(
            matches!(decided, Err(ApprovalError::OwnCall)),
            "{decided:?}"
        );
    }
    assert_eq!(
        f.manager.get(own.id).await.unwrap().status,
        ApprovalStatus::Pending
    );
    let mut short = request("r-id-expired");
    short.ttl = Some(Duration::from_millis(300));
    let token = issued(f.manager.issue(&short).await.unwrap());
    let id = f.manager.check(token.expose()).await.unwrap().id;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(matches!(
        f.manager.approve_by_id(id, "too-late", None).await,
        Err(ApprovalError::Expired)
    ));
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
        (
            "policy_version",
            Box::new(|r| r.policy_version = String::new()),
        ),
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

/// The admin events in the trail, oldest first: (action, actor, request id).
async fn admin_events(f: &Fixture) -> Vec<(String, String, String)> {
    // `strings` sorts its rows: lead with the id (UUIDv7, time-ordered as
    // text and as hex) to keep them in the order they were recorded.
    let id = if f.redis.is_some() {
        "id::text"
    } else {
        "lower(hex(id))"
    };
    f.db.strings(&format!(
        "SELECT {id} || '|' || method || '|' || caller_id || '|' || request_id \
         FROM audit_events WHERE kind = 'admin'"
    ))
    .await
    .into_iter()
    .map(|row| {
        let mut parts = row.splitn(4, '|').skip(1).map(str::to_owned);
        (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        )
    })
    .collect()
}

/// Admin actions in the trail (issue 13): one event per change, with its
/// actor and the held call's request id; refused actions record none.
async fn every_approval_action_records_exactly_one_admin_event(f: Fixture) {
    let held = request("r-story");
    let token = issued(f.manager.issue(&held).await.unwrap());
    // A duplicate issue changes nothing and records nothing.
    f.manager.issue(&held).await.unwrap();
    f.manager
        .approve(token.expose(), "alice", Some("ok"))
        .await
        .unwrap();
    assert!(f.manager.deny(token.expose(), "bob", None).await.is_err());
    f.manager
        .consume(token.expose(), &held.binding())
        .await
        .unwrap();
    assert!(
        f.manager
            .consume(token.expose(), &held.binding())
            .await
            .is_err()
    );
    let denied = issued(f.manager.issue(&request("r-denied")).await.unwrap());
    f.manager
        .deny(denied.expose(), "carol", None)
        .await
        .unwrap();
    let mut short = request("r-late");
    short.ttl = Some(Duration::from_millis(100));
    f.manager.issue(&short).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(f.manager.expire_stale(10).await.unwrap(), 1);
    assert_eq!(f.manager.expire_stale(10).await.unwrap(), 0);
    let events = admin_events(&f).await;
    let expected = [
        ("approval.issue", "agent-7", "r-story"),
        ("approval.approve", "alice", "r-story"),
        ("approval.consume", "agent-7", "r-story"),
        ("approval.issue", "agent-7", "r-denied"),
        ("approval.deny", "carol", "r-denied"),
        ("approval.issue", "agent-7", "r-late"),
        ("approval.expire", "warden", "r-late"),
    ];
    let got: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect();
    assert_eq!(got, expected);
    // The events are leaves like any other: integrated, signed, verified.
    warden_audit::Integrator::new(f.db.db.clone(), warden_audit::IntegratorConfig::default())
        .integrate_all()
        .await
        .unwrap();
    let verdict = warden_audit::verify(&f.db.db, &warden_audit::VerifyOptions::default())
        .await
        .unwrap();
    assert!(verdict.is_valid(), "{verdict:?}");
}

/// Atomicity (issue 13): when the decision's audit event cannot be written,
/// the decision is not made either.
async fn a_decision_whose_event_cannot_be_recorded_is_not_made(f: Fixture) {
    let token = issued(f.manager.issue(&request("r-atomic")).await.unwrap());
    let postgres = f.redis.is_some();
    if postgres {
        f.db.execute(
            "CREATE FUNCTION refuse_admin() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'audit trail unavailable'; END $$",
        )
        .await;
        f.db.execute(
            "CREATE TRIGGER refuse_admin BEFORE INSERT ON audit_events FOR EACH ROW \
             WHEN (NEW.kind = 'admin') EXECUTE FUNCTION refuse_admin()",
        )
        .await;
    } else {
        f.db.execute(
            "CREATE TRIGGER refuse_admin BEFORE INSERT ON audit_events \
             WHEN NEW.kind = 'admin' BEGIN SELECT RAISE(ABORT, 'audit trail unavailable'); END",
        )
        .await;
    }
    let err = f
        .manager
        .approve(token.expose(), "alice", None)
        .await
        .unwrap_err();
    assert!(matches!(err, ApprovalError::AuditTrail { .. }), "{err:?}");
    // Read the database itself (a shared cache would say PENDING anyway).
    let stored =
        f.db.strings("SELECT status FROM approval_requests WHERE request_id = 'r-atomic'")
            .await;
    assert_eq!(
        stored,
        ["PENDING"],
        "the decision was stored without its event"
    );
    assert!(f.manager.issue(&request("r-atomic-2")).await.is_err());
    assert!(
        f.db.strings("SELECT id FROM approval_requests WHERE request_id = 'r-atomic-2'")
            .await
            .is_empty(),
        "an approval was issued without its event"
    );
    f.db.execute(if postgres {
        "DROP TRIGGER refuse_admin ON audit_events"
    } else {
        "DROP TRIGGER refuse_admin"
    })
    .await;
    f.manager
        .approve(token.expose(), "alice", None)
        .await
        .unwrap();
    let actions: Vec<String> = admin_events(&f).await.into_iter().map(|e| e.0).collect();
    assert_eq!(actions, ["approval.issue", "approval.approve"]);
}
