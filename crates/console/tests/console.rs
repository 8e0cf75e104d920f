//! The approver console over HTTP, on PostgreSQL + Redis and on the embedded
//! default (SQLite + in-process cache): sign-in and roles, sessions, CSRF,
//! escaping, exactly-once decisions from two approvers, expiry.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::json;
use tower::ServiceExt as _;
use warden_approval::{ApprovalRequest, ApprovalStatus, IssueOutcome};
use warden_console::Console;
use warden_core::{Settings, Warden};
use warden_keys::NewKey;
use warden_testkit::{Backend, TestDatabase, TestRedis};

struct Env {
    _db: TestDatabase,
    _redis: Option<TestRedis>,
    _dir: tempfile::TempDir,
    storage: Warden,
    router: axum::Router,
}

async fn env(backend: Backend) -> Env {
    let db = TestDatabase::new(backend).await;
    let redis = match backend {
        Backend::Postgres => Some(TestRedis::new().await),
        Backend::Sqlite => None,
    };
    let dir = tempfile::tempdir().unwrap();
    let spill = dir.path().join("spill");
    let settings = Settings::from_lookup(|name| match name {
        "DATABASE_URL" => Some(db.url.clone()),
        "BCRYPT_COST" => Some("4".into()),
        "AUDIT_SPILL_PATH" => Some(spill.display().to_string()),
        "REDIS_URL" => redis.as_ref().map(|r| r.url.clone()),
        "CACHE_KEY_PREFIX" => redis.as_ref().map(|r| r.prefix.clone()),
        _ => None,
    })
    .unwrap();
    let storage = Warden::connect(&settings).await.unwrap();
    migration::run(storage.database(), migration::Command::Up(None))
        .await
        .unwrap();
    let router = Console::new(storage.clone(), warden_console::ConsoleOptions::default())
        .unwrap()
        .router();
    Env {
        _db: db,
        _redis: redis,
        _dir: dir,
        storage,
        router,
    }
}

impl Env {
    async fn key(&self, caller: &str, role: &str) -> String {
        self.key_in(caller, role, "development").await
    }

    async fn key_in(&self, caller: &str, role: &str, environment: &str) -> String {
        let created = self
            .storage
            .keys()
            .unwrap()
            .create(&NewKey {
                actor: "test",
                caller_id: caller,
                role,
                trust_level: 0,
                environment,
                expires_at: None,
            })
            .await
            .unwrap();
        created.plaintext.expose().to_owned()
    }

    async fn hold(&self, request_id: &str, ttl: Option<Duration>) -> uuid::Uuid {
        self.hold_with_token(request_id, ttl).await.0
    }

    async fn hold_with_token(
        &self,
        request_id: &str,
        ttl: Option<Duration>,
    ) -> (uuid::Uuid, String) {
        let outcome = self
            .storage
            .approvals()
            .issue(&ApprovalRequest {
                request_id: request_id.into(),
                caller_id: "agent-1".into(),
                tool_name: "db.drop_table".into(),
                sanitized_tool_call: json!({
                    "table": "<script>alert('x')</script>",
                    "where": "\"><img src=x onerror=alert(1)>",
                }),
                raw_args_hash: "cd".repeat(32),
                risk_labels: vec!["destructive".into()],
                policy_version: "v1".into(),
                ttl,
            })
            .await
            .unwrap();
        let IssueOutcome::Issued { id, token, .. } = outcome else {
            panic!("issued");
        };
        (id, token.expose().to_owned())
    }

    async fn send(&self, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
        self.send_to(&self.router, request).await
    }

    /// Sends `request` to `router`, as from a browser on this machine (a
    /// loopback `Host` unless the request names one).
    async fn send_to(
        &self,
        router: &axum::Router,
        mut request: Request<Body>,
    ) -> (StatusCode, axum::http::HeaderMap, String) {
        if !request.headers().contains_key(header::HOST) {
            request
                .headers_mut()
                .insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        }
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    async fn get(
        &self,
        path: &str,
        cookie: Option<&str>,
    ) -> (StatusCode, axum::http::HeaderMap, String) {
        let mut request = Request::get(path);
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, cookie);
        }
        self.send(request.body(Body::empty()).unwrap()).await
    }

    async fn post(
        &self,
        path: &str,
        cookie: Option<&str>,
        form: &[(&str, &str)],
    ) -> (StatusCode, axum::http::HeaderMap, String) {
        let body: Vec<String> = form
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        let mut request =
            Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, cookie);
        }
        self.send(request.body(Body::from(body.join("&"))).unwrap())
            .await
    }

    /// Signs in with `key`; returns the session cookie (`name=value`).
    async fn sign_in(&self, key: &str) -> String {
        let (status, headers, body) = self.post("/sign-in", None, &[("key", key)]).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
        let set = headers[header::SET_COOKIE].to_str().unwrap().to_owned();
        for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(set.contains(attribute), "{set}");
        }
        set.split(';').next().unwrap().to_owned()
    }
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".into(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn csrf_of(page: &str) -> String {
    let start =
        page.find(r#"name="csrf" value=""#).expect("a CSRF field") + r#"name="csrf" value=""#.len();
    page[start..].split('"').next().unwrap().to_owned()
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres_redis {
            $(#[tokio::test] async fn $name() { super::$name(super::env(warden_testkit::Backend::Postgres).await).await; })*
        }
        mod sqlite_in_process {
            $(#[tokio::test] async fn $name() { super::$name(super::env(warden_testkit::Backend::Sqlite).await).await; })*
        }
    };
}

on_both_backends!(
    only_signed_in_approvers_get_in,
    an_approver_decides_once_with_csrf_and_the_page_is_inert,
    two_approvers_one_decision_the_loser_sees_who,
    expired_approvals_cannot_be_decided,
    sign_out_and_revocation_end_sessions,
    cross_site_posts_planted_cookies_and_own_calls_are_refused,
    history_for_approvers_keys_for_admins_only,
    the_inbox_hears_of_new_approvals_live,
    the_audit_view_shows_the_log_and_serves_proofs,
    hosts_origins_and_proxies_are_checked,
    live_streams_are_capped_and_end_with_their_session,
    invisible_characters_are_shown_not_obeyed,
);

fn sign_in_request(key: &str, peer: &str, forwarded_for: Option<&str>) -> Request<Body> {
    let mut request =
        Request::post("/sign-in").header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(chain) = forwarded_for {
        request = request.header("x-forwarded-for", chain);
    }
    let mut request = request
        .body(Body::from(format!("key={}", encode(key))))
        .unwrap();
    let peer: std::net::SocketAddr = peer.parse().unwrap();
    request
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(peer));
    request
}

/// DNS rebinding, a public URL's origin and host, HSTS and `__Host-`
/// cookies behind https, and the sign-in limit keyed by the real client.
async fn hosts_origins_and_proxies_are_checked(e: Env) {
    // Without a public URL: loopback names and IP literals only.
    for host in ["127.0.0.1:8080", "localhost:8080", "[::1]:8080", "10.1.2.3"] {
        let request = Request::get("/sign-in")
            .header(header::HOST, host)
            .body(Body::empty())
            .unwrap();
        assert_eq!(e.send(request).await.0, StatusCode::OK, "{host}");
    }
    let rebound = Request::get("/sign-in")
        .header(header::HOST, "rebind.evil.example:8080")
        .body(Body::empty())
        .unwrap();
    assert_eq!(e.send(rebound).await.0, StatusCode::MISDIRECTED_REQUEST);

    // Behind a TLS proxy at a public URL, with a trusted proxy address.
    let behind = Console::new(
        e.storage.clone(),
        warden_console::ConsoleOptions {
            public_url: Some("https://Approvals.Example/".into()),
            trusted_proxies: vec!["10.0.0.1".parse().unwrap()],
        },
    )
    .unwrap()
    .router();
    let key = e.key("alice", "approver").await;
    let post = |host: &str, origin: &str| {
        Request::post("/sign-in")
            .header(header::HOST, host)
            .header(header::ORIGIN, origin)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("key={}", encode(&key))))
            .unwrap()
    };
    let (status, headers, _) = e
        .send_to(
            &behind,
            post("approvals.example", "https://approvals.example"),
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let cookie = headers[header::SET_COOKIE].to_str().unwrap();
    assert!(
        cookie.starts_with("__Host-warden_session=") && cookie.contains("Secure"),
        "{cookie}"
    );
    assert!(headers.contains_key(header::STRICT_TRANSPORT_SECURITY));
    // Another scheme, another host, or a Host the proxy did not send.
    for (host, origin, expected) in [
        (
            "approvals.example",
            "http://approvals.example",
            StatusCode::FORBIDDEN,
        ),
        (
            "approvals.example",
            "https://evil.example",
            StatusCode::FORBIDDEN,
        ),
        ("approvals.example", "null", StatusCode::FORBIDDEN),
        (
            "evil.example",
            "https://evil.example",
            StatusCode::MISDIRECTED_REQUEST,
        ),
    ] {
        let (status, headers, _) = e.send_to(&behind, post(host, origin)).await;
        assert_eq!(status, expected, "{host} {origin}");
        assert!(headers.get(header::SET_COOKIE).is_none());
    }

    // The sign-in limit counts the client named by the trusted proxy, not
    // the proxy; an untrusted peer's X-Forwarded-For is ignored; an
    // IPv4-mapped IPv6 peer is its IPv4 address.
    for _ in 0..10 {
        let request = sign_in_request("wdn_bad", "10.0.0.1:4000", Some("203.0.113.7, 10.0.0.1"));
        assert_eq!(
            e.send_to(&behind, request).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    let limited = sign_in_request("wdn_bad", "10.0.0.1:4000", Some("203.0.113.7"));
    assert_eq!(
        e.send_to(&behind, limited).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    let other_client = sign_in_request("wdn_bad", "10.0.0.1:4000", Some("198.51.100.9"));
    assert_eq!(
        e.send_to(&behind, other_client).await.0,
        StatusCode::UNAUTHORIZED
    );
    // The same client written with a port is the same client.
    let with_port = sign_in_request("wdn_bad", "10.0.0.1:4000", Some("203.0.113.7:51234"));
    assert_eq!(
        e.send_to(&behind, with_port).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    // An entry that is no address is its own bucket, not the proxy's.
    let garbage = sign_in_request("wdn_bad", "10.0.0.1:4000", Some("unknown"));
    assert_eq!(
        e.send_to(&behind, garbage).await.0,
        StatusCode::UNAUTHORIZED
    );
    let spoofing = sign_in_request("wdn_bad", "192.0.2.50:4000", Some("203.0.113.7"));
    assert_eq!(
        e.send_to(&behind, spoofing).await.0,
        StatusCode::UNAUTHORIZED
    );
    for _ in 0..9 {
        let request = sign_in_request("wdn_bad", "192.0.2.51:4000", None);
        e.send_to(&behind, request).await;
    }
    let mapped = sign_in_request("wdn_bad", "[::ffff:192.0.2.51]:4000", None);
    assert_eq!(e.send_to(&behind, mapped).await.0, StatusCode::UNAUTHORIZED);
    let mapped = sign_in_request("wdn_bad", "[::ffff:192.0.2.51]:4000", None);
    assert_eq!(
        e.send_to(&behind, mapped).await.0,
        StatusCode::TOO_MANY_REQUESTS,
        "the mapped address shares its IPv4 budget"
    );
}

async fn open_stream(e: &Env, cookie: &str) -> axum::response::Response {
    e.router
        .clone()
        .oneshot(
            Request::get("/events")
                .header(header::HOST, "127.0.0.1:8080")
                .header(header::COOKIE, cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap()
}

/// One approver holds at most MAX_STREAMS_PER_APPROVER live streams; a
/// stream ends when its session does, even with no inbox change.
async fn live_streams_are_capped_and_end_with_their_session(e: Env) {
    use futures_util::StreamExt as _;
    let cookie = e.sign_in(&e.key("alice", "approver").await).await;
    let mut open = Vec::new();
    for _ in 0..warden_console::MAX_STREAMS_PER_APPROVER {
        let response = open_stream(&e, &cookie).await;
        assert_eq!(response.status(), StatusCode::OK);
        open.push(response);
    }
    assert_eq!(
        open_stream(&e, &cookie).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // Closing one frees its slot.
    drop(open.pop());
    let last = open_stream(&e, &cookie).await;
    assert_eq!(last.status(), StatusCode::OK);
    drop(open);
    // Signing out ends the stream within the re-check interval, though no
    // approval changes.
    let page = e.get("/inbox", Some(&cookie)).await.2;
    let csrf = csrf_of(&page);
    e.post("/sign-out", Some(&cookie), &[("csrf", &csrf)]).await;
    let mut body = last.into_body().into_data_stream();
    let ended = tokio::time::timeout(
        warden_console::SESSION_RECHECK + Duration::from_secs(10),
        async {
            while let Some(chunk) = body.next().await {
                if chunk.is_err() {
                    break;
                }
            }
        },
    )
    .await;
    assert!(ended.is_ok(), "the stream outlived its session");
}

/// Bidi overrides and zero-width characters in what an agent chose are shown
/// as escapes, with a warning, never obeyed.
async fn invisible_characters_are_shown_not_obeyed(e: Env) {
    let outcome = e
        .storage
        .approvals()
        .issue(&ApprovalRequest {
            request_id: "r-bidi".into(),
            caller_id: "agent\u{200B}-1".into(),
            tool_name: "fs.delete".into(),
            sanitized_tool_call: json!({"path": "/srv/report\u{202E}fdp.sh"}),
            raw_args_hash: "ef".repeat(32),
            risk_labels: vec!["destructive".into()],
            policy_version: "v1".into(),
            ttl: None,
        })
        .await
        .unwrap();
    let IssueOutcome::Issued { id, .. } = outcome else {
        panic!("issued");
    };
    let cookie = e.sign_in(&e.key("alice", "approver").await).await;
    let page = e.get(&format!("/approvals/{id}"), Some(&cookie)).await.2;
    assert!(
        !page.contains('\u{202E}') && !page.contains('\u{200B}'),
        "{page}"
    );
    assert!(page.contains(r"/srv/report\u{202E}fdp.sh"), "{page}");
    assert!(page.contains(r"agent\u{200B}-1"), "{page}");
    assert!(page.contains(r#"id="hidden-characters""#), "{page}");
    let inbox = e.get("/inbox", Some(&cookie)).await.2;
    assert!(!inbox.contains('\u{200B}'), "{inbox}");
    // Plain calls carry no warning.
    let plain = e.hold("r-plain", None).await;
    let page = e.get(&format!("/approvals/{plain}"), Some(&cookie)).await.2;
    assert!(!page.contains(r#"id="hidden-characters""#));
}

async fn history_for_approvers_keys_for_admins_only(e: Env) {
    let id = e.hold("r-1", None).await;
    let alice_key = e.key("alice", "approver").await;
    let alice = e.sign_in(&alice_key).await;
    let page = e.get(&format!("/approvals/{id}"), Some(&alice)).await.2;
    assert!(
        !page.contains(r#"id="nav-keys""#),
        "no keys link for an approver"
    );
    let form = [
        ("csrf", csrf_of(&page)),
        ("decision", "deny".into()),
        ("note", "not <b>today</b>".into()),
    ];
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        e.post(&format!("/approvals/{id}/decide"), Some(&alice), &form)
            .await
            .0,
        StatusCode::SEE_OTHER
    );
    let (status, _, history) = e.get("/history", Some(&alice)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        history.contains("DENIED") && history.contains("alice"),
        "{history}"
    );
    assert!(
        history.contains("not &lt;b&gt;today&lt;/b&gt;") || history.contains("&#60;b&#62;"),
        "{history}"
    );
    assert!(!history.contains("<b>today"), "{history}");
    assert_eq!(e.get("/keys", Some(&alice)).await.0, StatusCode::FORBIDDEN);

    let bob = e.sign_in(&e.key("bob", "admin").await).await;
    let (status, _, keys) = e.get("/keys", Some(&bob)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(keys.contains(r#"data-caller="alice""#) && keys.contains(r#"id="nav-keys""#));
    let prefix = alice_key.split('_').take(3).collect::<Vec<_>>().join("_");
    assert!(keys.contains(&prefix), "the key's public prefix is shown");
    assert!(
        !keys.contains(&alice_key) && !keys.contains("$2"),
        "never a key or its hash"
    );
    let csrf = csrf_of(&keys);
    // Without the CSRF token, or without the typed confirmation: nothing.
    let (status, _, _) = e
        .post(
            "/keys/revoke",
            Some(&bob),
            &[("caller", "alice"), ("confirm", "alice")],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, body) = e
        .post(
            "/keys/revoke",
            Some(&bob),
            &[("csrf", &csrf), ("caller", "alice"), ("confirm", "alic")],
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        e.get("/inbox", Some(&alice)).await.0,
        StatusCode::OK,
        "still signed in"
    );
    let (status, _, _) = e
        .post(
            "/keys/revoke",
            Some(&bob),
            &[("csrf", &csrf), ("caller", "alice"), ("confirm", "alice")],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let info = e
        .storage
        .keys()
        .unwrap()
        .find_by_caller("alice")
        .await
        .unwrap()
        .unwrap();
    assert!(info.revoked_at.is_some());
    assert_eq!(
        e.get("/inbox", Some(&alice)).await.0,
        StatusCode::SEE_OTHER,
        "her session ended"
    );
    // An approver cannot revoke, even with a valid form.
    let carol = e.sign_in(&e.key("carol", "approver").await).await;
    let carol_page = e.get("/inbox", Some(&carol)).await.2;
    let (status, _, _) = e
        .post(
            "/keys/revoke",
            Some(&carol),
            &[
                ("csrf", &csrf_of(&carol_page)),
                ("caller", "bob"),
                ("confirm", "bob"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

async fn cross_site_posts_planted_cookies_and_own_calls_are_refused(e: Env) {
    let approver = e.key("alice", "approver").await;
    // A sign-in or decision posted from another site is refused before any handler.
    for (name, value) in [
        ("origin", "https://evil.example"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let request = Request::post("/sign-in")
            .header(name, value)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("key={}", encode(&approver))))
            .unwrap();
        let (status, headers, _) = e.send(request).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{name}: {value}");
        assert!(headers.get(header::SET_COOKIE).is_none());
    }
    // The same origin is fine.
    let request = Request::post("/sign-in")
        .header(header::ORIGIN, "http://127.0.0.1:8080")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!("key={}", encode(&approver))))
        .unwrap();
    let (status, headers, _) = e.send(request).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let cookie = headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(e.get("/inbox", Some(&cookie)).await.0, StatusCode::OK);
    // A second cookie of the same name (planted from a parent domain) is no
    // session, never a choice between the two.
    let planted = format!("{}={}", warden_console::SESSION_COOKIE, "ab".repeat(32));
    let both = format!("{planted}; {cookie}");
    assert_eq!(e.get("/inbox", Some(&both)).await.0, StatusCode::SEE_OTHER);
    // A key of another environment does not sign in.
    let other = e.key_in("carol", "approver", "production").await;
    let (status, _, _) = e.post("/sign-in", None, &[("key", &other)]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Nobody decides their own held call: the held call's caller holds an
    // approver key too.
    let id = e.hold("r-own", None).await;
    let own = e.sign_in(&e.key("agent-1", "approver").await).await;
    let page = e.get(&format!("/approvals/{id}"), Some(&own)).await.2;
    let (status, _, _) = e
        .post(
            &format!("/approvals/{id}/decide"),
            Some(&own),
            &[("csrf", &csrf_of(&page)), ("decision", "approve")],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        e.storage.approvals().get(id).await.unwrap().status,
        ApprovalStatus::Pending
    );
    // Unknown paths get the security headers too.
    let (status, headers, _) = e.get("/no-such-page", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(headers.contains_key(header::CONTENT_SECURITY_POLICY));
}

async fn only_signed_in_approvers_get_in(e: Env) {
    let (status, headers, _) = e.get("/inbox", None).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/sign-in");
    let (status, headers, page) = e.get("/sign-in", None).await;
    assert_eq!(status, StatusCode::OK);
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    // The one script is the binary's own, never inline.
    assert_eq!(
        page.matches("<script").count(),
        page.matches(r#"<script src="/static/console.js"></script>"#)
            .count(),
        "only the console's own script: {page}"
    );
    // A wrong key, and a real key whose role may not approve.
    let (status, _, page) = e
        .post(
            "/sign-in",
            None,
            &[("key", "wdn_development_000000000000_nope")],
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{page}");
    let developer = e.key("dev-1", "developer").await;
    let (status, headers, _) = e.post("/sign-in", None, &[("key", &developer)]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(headers.get(header::SET_COOKIE).is_none());
    // A forged cookie is no session.
    let forged = format!("{}={}", warden_console::SESSION_COOKIE, "ab".repeat(32));
    assert_eq!(
        e.get("/inbox", Some(&forged)).await.0,
        StatusCode::SEE_OTHER
    );
    // An approver gets in and sees what waits.
    e.hold("r-1", None).await;
    let approver = e.key("alice", "approver").await;
    let cookie = e.sign_in(&approver).await;
    let (status, _, page) = e.get("/inbox", Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("db.drop_table") && page.contains("agent-1") && page.contains("destructive")
    );
    assert!(page.contains("alice"));
    // POSTs without a session are refused outright.
    let id = e.hold("r-2", None).await;
    let (status, _, _) = e
        .post(
            &format!("/approvals/{id}/decide"),
            None,
            &[("decision", "approve")],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

async fn an_approver_decides_once_with_csrf_and_the_page_is_inert(e: Env) {
    let (id, token) = e.hold_with_token("r-1", None).await;
    // The gateway holding the call waits for the person's decision.
    let gateway = e.storage.approvals();
    let waiter = tokio::spawn(async move {
        gateway
            .wait_for_decision(&token, Duration::from_secs(30))
            .await
    });
    let cookie = e.sign_in(&e.key("alice", "approver").await).await;
    let (status, _, page) = e.get(&format!("/approvals/{id}"), Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK);
    // Hostile arguments are shown, escaped, never as markup.
    assert!(!page.contains("<script>alert"), "{page}");
    assert!(!page.contains("<img src=x"), "{page}");
    assert!(
        page.contains("&lt;script&gt;") || page.contains("&#60;script&#62;"),
        "{page}"
    );
    assert!(page.contains(&"cd".repeat(32)), "the args hash is shown");
    let csrf = csrf_of(&page);
    let decide = format!("/approvals/{id}/decide");
    for bad in ["", "0000", &"f".repeat(64)] {
        let (status, _, _) = e
            .post(
                &decide,
                Some(&cookie),
                &[("csrf", bad), ("decision", "approve")],
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "CSRF {bad:?}");
    }
    assert_eq!(
        e.storage.approvals().get(id).await.unwrap().status,
        ApprovalStatus::Pending,
        "nothing decided without the token"
    );
    let (status, headers, _) = e
        .post(
            &decide,
            Some(&cookie),
            &[
                ("csrf", &csrf),
                ("decision", "approve"),
                ("note", "looks right"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        headers[header::LOCATION],
        format!("/approvals/{id}").as_str()
    );
    let approval = e.storage.approvals().get(id).await.unwrap();
    assert_eq!(approval.status, ApprovalStatus::Approved);
    let result = approval.result.unwrap();
    assert_eq!(result.approver_id.as_deref(), Some("alice"));
    assert_eq!(result.note.as_deref(), Some("looks right"));
    // The gateway waiting on it gets the decision, with who and why.
    let warden_approval::WaitOutcome::Decided(seen) = waiter.await.unwrap().unwrap() else {
        panic!("the gateway's wait timed out");
    };
    assert_eq!(seen.status, ApprovalStatus::Approved);
    let seen = seen.result.unwrap();
    assert_eq!(seen.approver_id.as_deref(), Some("alice"));
    assert_eq!(seen.note.as_deref(), Some("looks right"));
    let (_, _, page) = e.get(&format!("/approvals/{id}"), Some(&cookie)).await;
    assert!(page.contains("APPROVED by alice"), "{page}");
    assert!(!page.contains(r#"id="approve""#), "no buttons once decided");
}

async fn two_approvers_one_decision_the_loser_sees_who(e: Env) {
    let id = e.hold("r-1", None).await;
    let alice = e.sign_in(&e.key("alice", "approver").await).await;
    let bob = e.sign_in(&e.key("bob", "admin").await).await;
    let page_a = e.get(&format!("/approvals/{id}"), Some(&alice)).await.2;
    let page_b = e.get(&format!("/approvals/{id}"), Some(&bob)).await.2;
    let decide = format!("/approvals/{id}/decide");
    let (csrf_a, csrf_b) = (csrf_of(&page_a), csrf_of(&page_b));
    let form_a = [("csrf", csrf_a.as_str()), ("decision", "approve")];
    let form_b = [("csrf", csrf_b.as_str()), ("decision", "deny")];
    let (a, b) = tokio::join!(
        e.post(&decide, Some(&alice), &form_a),
        e.post(&decide, Some(&bob), &form_b),
    );
    let statuses = [a.0, b.0];
    assert!(statuses.contains(&StatusCode::SEE_OTHER), "{statuses:?}");
    assert!(statuses.contains(&StatusCode::CONFLICT), "{statuses:?}");
    let loser = if a.0 == StatusCode::CONFLICT {
        &a.2
    } else {
        &b.2
    };
    let winner = if a.0 == StatusCode::SEE_OTHER {
        "alice"
    } else {
        "bob"
    };
    assert!(loser.contains("Someone decided this call first"), "{loser}");
    assert!(loser.contains(&format!("by {winner}")), "{loser}");
    // A session's CSRF token is its own.
    let other = e.hold("r-2", None).await;
    let (status, _, _) = e
        .post(
            &format!("/approvals/{other}/decide"),
            Some(&bob),
            &[("csrf", &csrf_of(&page_a)), ("decision", "approve")],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

async fn expired_approvals_cannot_be_decided(e: Env) {
    let id = e.hold("r-1", Some(Duration::from_millis(300))).await;
    let cookie = e.sign_in(&e.key("alice", "approver").await).await;
    let page = e.get(&format!("/approvals/{id}"), Some(&cookie)).await.2;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, _, body) = e
        .post(
            &format!("/approvals/{id}/decide"),
            Some(&cookie),
            &[("csrf", &csrf_of(&page)), ("decision", "approve")],
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body.contains("expired"), "{body}");
    let (_, _, inbox) = e.get("/inbox", Some(&cookie)).await;
    assert!(
        !inbox.contains(&id.to_string()),
        "an expired approval leaves the inbox"
    );
}

async fn sign_out_and_revocation_end_sessions(e: Env) {
    let cookie = e.sign_in(&e.key("alice", "approver").await).await;
    let page = e.get("/inbox", Some(&cookie)).await.2;
    let (status, headers, _) = e
        .post("/sign-out", Some(&cookie), &[("csrf", &csrf_of(&page))])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(
        headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_eq!(
        e.get("/inbox", Some(&cookie)).await.0,
        StatusCode::SEE_OTHER,
        "signed out"
    );
    // Revoking the key ends its other sessions.
    let bob_key = e.key("bob", "approver").await;
    let bob = e.sign_in(&bob_key).await;
    assert_eq!(e.get("/inbox", Some(&bob)).await.0, StatusCode::OK);
    e.storage
        .keys()
        .unwrap()
        .revoke("bob", "test")
        .await
        .unwrap();
    assert_eq!(
        e.get("/inbox", Some(&bob)).await.0,
        StatusCode::SEE_OTHER,
        "revoked"
    );
}

/// The server closes a connection whose headers do not arrive in time
/// (slowloris), keeps serving others, and stops on shutdown.
#[tokio::test]
async fn slow_header_connections_are_closed_and_others_served() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let e = env(Backend::Sqlite).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(warden_console::serve(
        listener,
        e.router.clone(),
        warden_console::ServeLimits {
            header_timeout: Duration::from_millis(300),
            max_connections: 4,
            max_connections_per_peer: 4,
            ..warden_console::ServeLimits::default()
        },
        async {
            let _ = stopped.await;
        },
    ));
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /sign-in HTTP/1.1\r\nhost: localhost\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read(&mut buf))
        .await
        .expect("the slow connection is closed, not kept");
    // Closed (EOF or reset), or answered with an error status and closed.
    if let Ok(n) = read
        && n > 0
    {
        let head = String::from_utf8_lossy(&buf[..n]);
        assert!(!head.starts_with("HTTP/1.1 200"), "{head}");
    }
    // Others are served, with the peer's address known to the handlers.
    let mut fine = tokio::net::TcpStream::connect(addr).await.unwrap();
    fine.write_all(b"GET /sign-in HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    fine.read_to_end(&mut reply).await.unwrap();
    assert!(String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 200"));
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("the server stops")
        .unwrap()
        .unwrap();
}

/// One client address cannot hold more than its share of connections:
/// over it, a connection is closed on arrival; others are still served.
#[tokio::test]
async fn one_client_cannot_hold_every_connection() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let e = env(Backend::Sqlite).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(warden_console::serve(
        listener,
        e.router.clone(),
        warden_console::ServeLimits {
            header_timeout: Duration::from_secs(20),
            max_connections: 16,
            max_connections_per_peer: 2,
            ..warden_console::ServeLimits::default()
        },
        async {
            let _ = stopped.await;
        },
    ));
    // Two idle connections: this address's share.
    let first = tokio::net::TcpStream::connect(addr).await.unwrap();
    let second = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = third
        .write_all(b"GET /sign-in HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await;
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
        .await
        .expect("closed on arrival, not kept waiting");
    assert!(matches!(read, Ok(0) | Err(_)), "the third was served");
    // Freeing one lets the next in.
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fourth = tokio::net::TcpStream::connect(addr).await.unwrap();
    fourth
        .write_all(b"GET /sign-in HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    fourth.read_to_end(&mut reply).await.unwrap();
    assert!(String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 200"));
    stop.send(()).unwrap();
    drop(second);
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("the server stops")
        .unwrap()
        .unwrap();
}

/// A client that sends requests but never reads the answers cannot keep
/// its connection: once a write has stalled past the limit it is cut, and
/// its slot serves the next client.
#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let e = env(Backend::Sqlite).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(warden_console::serve(
        listener,
        e.router.clone(),
        warden_console::ServeLimits {
            max_connections_per_peer: 1,
            write_stall_timeout: Duration::from_secs(1),
            ..warden_console::ServeLimits::default()
        },
        async {
            let _ = stopped.await;
        },
    ));
    // Thousands of pipelined requests, no reading: the server's writes
    // fill both sockets' buffers and stall.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let greedy = socket.connect(addr).await.unwrap();
    let (greedy_read, mut greedy_write) = greedy.into_split();
    let writer = tokio::spawn(async move {
        let request = b"GET /static/console.js HTTP/1.1\r\nhost: localhost\r\n\r\n";
        for _ in 0..20_000 {
            if greedy_write.write_all(request).await.is_err() {
                break;
            }
        }
        greedy_write
    });
    // The greedy client's slot frees once its stall passes the limit.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut next = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = next
            .write_all(b"GET /sign-in HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            .await;
        let mut reply = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), next.read_to_end(&mut reply)).await;
        if String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stalled connection kept its slot"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    writer.abort();
    drop(greedy_read);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("the server stops")
        .unwrap()
        .unwrap();
}

async fn the_inbox_hears_of_new_approvals_live(e: Env) {
    use futures_util::StreamExt as _;
    assert_eq!(
        e.get("/events", None).await.0,
        StatusCode::FORBIDDEN,
        "signed-in only"
    );
    let cookie = e.sign_in(&e.key("alice", "approver").await).await;
    let (_, _, inbox) = e.get("/inbox", Some(&cookie)).await;
    assert!(inbox.contains(r#"<section id="live-inbox">"#));
    assert!(inbox.contains(r#"<script src="/static/console.js"></script>"#));
    let (status, headers, script) = e.get("/static/console.js", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert!(script.contains("EventSource(\"/events\")"));
    let response = e
        .router
        .clone()
        .oneshot(
            Request::get("/events")
                .header(header::HOST, "127.0.0.1:8080")
                .header(header::COOKIE, &cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = response.into_body().into_data_stream();
    // The subscription exists once the response does; hold a call.
    let id = e.hold("r-live", None).await;
    let mut seen = String::new();
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = body.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if seen.contains(&id.to_string()) {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(found, "no live event for the new approval: {seen:?}");
    assert!(seen.contains("event: changed"), "{seen}");
}

async fn the_audit_view_shows_the_log_and_serves_proofs(e: Env) {
    use warden_audit::{CheckpointSigner, InclusionBundle, Integrator, IntegratorConfig};
    assert_eq!(e.get("/audit", None).await.0, StatusCode::SEE_OTHER);
    e.hold("r-audit", None).await;
    let (_, signer) = CheckpointSigner::generate("console.test/audit").unwrap();
    let integrator = Integrator::new(
        e.storage.database().clone(),
        IntegratorConfig {
            origin: "console.test/audit".into(),
            signer: Some(signer.clone()),
            ..IntegratorConfig::default()
        },
    );
    integrator.integrate_all().await.unwrap();
    let cookie = e.sign_in(&e.key("alice", "approver").await).await;
    let (status, _, page) = e.get("/audit", Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("approval.issue"), "{page}");
    assert!(page.contains("signed in checkpoint"), "{page}");
    assert!(page.contains("/audit/proof?request_id=r-audit"), "{page}");
    // Filters: only tool calls (none here), and a hostile caller filter stays text.
    let (_, _, tool_calls) = e.get("/audit?kind=tool_call", Some(&cookie)).await;
    assert!(!tool_calls.contains("approval.issue"), "{tool_calls}");
    let (status, _, hostile) = e
        .get(
            "/audit?caller=%22%3E%3Cscript%3Ealert(1)%3C%2Fscript%3E",
            Some(&cookie),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!hostile.contains("<script>alert"), "{hostile}");
    // The proof downloads and checks with the log's public key alone.
    let (status, headers, proof) = e
        .get("/audit/proof?request_id=r-audit", Some(&cookie))
        .await;
    assert_eq!(status, StatusCode::OK, "{proof}");
    assert!(
        headers[header::CONTENT_DISPOSITION]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
    let (bundle, checkpoint) =
        InclusionBundle::verify_json(&proof, &signer.verifier().unwrap()).unwrap();
    assert_eq!(bundle.event.request_id, "r-audit");
    assert!(checkpoint.size >= 1);
    assert_eq!(
        e.get("/audit/proof?request_id=no-such-request", Some(&cookie))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
}
