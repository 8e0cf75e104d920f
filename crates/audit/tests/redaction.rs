//! Redaction and canonical hashing, without a database.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};
use warden_audit::{
    AuditError, AuditEvent, Decision, MAX_DEPTH, REDACTED, RedactionFlag, Redactor, ToolCall,
    canonical_hash,
};

fn flags(redacted: &[RedactionFlag]) -> Vec<(String, String)> {
    redacted
        .iter()
        .map(|f| (f.path.clone(), f.reason.clone()))
        .collect()
}

fn pair(path: &str, reason: &str) -> (String, String) {
    (path.to_owned(), reason.to_owned())
}

#[test]
fn nested_secrets_are_redacted_with_exact_flags() {
    let args = json!({
        "query": "SELECT 1",
        "Password": "hunter2",
        "db": {"connection": {"API-KEY": "k-123", "host": "db"}, "replicas": [{"auth_token": "t1"}, {"port": 5432}]},
        "headers": {"Cookie": "session=abc", "Accept": "json"},
        "private_key": {"pem": "irrelevant, the whole value goes"},
        "max_tokens": 512,
        "odd key!": {"client_secret": "cs"},
    });
    let r = Redactor::default().redact(&args).unwrap();
    assert_eq!(
        r.value,
        json!({
            "query": "SELECT 1",
            "Password": REDACTED,
            "db": {"connection": {"API-KEY": REDACTED, "host": "db"}, "replicas": [{"auth_token": REDACTED}, {"port": 5432}]},
            "headers": {"Cookie": REDACTED, "Accept": "json"},
            "private_key": REDACTED,
            "max_tokens": 512,
            "odd key!": {"client_secret": REDACTED},
        })
    );
    let mut got = flags(&r.flags);
    got.sort();
    let mut want = vec![
        pair("$.Password", "key:password"),
        pair("$.db.connection[\"API-KEY\"]", "key:apikey"),
        pair("$.db.replicas[0].auth_token", "key:token"),
        pair("$.headers.Cookie", "key:cookie"),
        pair("$.private_key", "key:privatekey"),
        pair("$[\"odd key!\"].client_secret", "key:secret"),
    ];
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn secrets_inside_values_are_redacted_by_pattern() {
    let cases: [(&str, &str, &str); 10] = [
        (
            "curl -H 'Authorization: Bearer abcdEFGH1234.xyz'",
            "authorization",
            "abcdEFGH1234",
        ),
        (
            "Basic dXNlcjpwYXNzd29yZA==",
            "basic_auth",
            "dXNlcjpwYXNzd29yZA",
        ),
        (
            "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig_nature-123",
            "jwt",
            "eyJzdWIiOiIxIn0",
        ),
        (
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n-----END OPENSSH PRIVATE KEY-----",
            "private_key",
            "b3BlbnNzaC1rZXk",
        ),
        (
            "id AKIAIOSFODNN7EXAMPLE here",
            "aws_access_key",
            "AKIAIOSFODNN7EXAMPLE",
        ),
        (
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "aws_secret_key",
            "wJalrXUtnFEMI",
        ),
        (
            "OPENAI_API_KEY sk-proj-abcdefghijklmnopqrstuvwxyz123456",
            "api_key",
            "abcdefghijklmnopqrstuvwxyz",
        ),
        (
            "gh: ghp_0123456789abcdefghijABCDEFGHIJ012345",
            "api_key",
            "ghp_0123456789",
        ),
        (
            "redis://:sup3rs3cret@cache:6379/0",
            "url_password",
            "sup3rs3cret",
        ),
        (
            "run with password=Tr0ub4dor&3 now",
            "secret_assignment",
            "Tr0ub4dor",
        ),
    ];
    for (text, kind, secret) in cases {
        let r = Redactor::default()
            .redact(&json!({"text": text, "list": [text]}))
            .unwrap();
        let out = r.value.to_string();
        assert!(!out.contains(secret), "{kind}: {secret} survived in {out}");
        assert!(
            r.flags.contains(&RedactionFlag {
                path: "$.text".into(),
                reason: format!("pattern:{kind}")
            }),
            "{kind}: {:?}",
            r.flags
        );
        assert!(
            r.flags.iter().any(|f| f.path == "$.list[0]"),
            "{kind}: {:?}",
            r.flags
        );
    }
}

#[test]
fn ordinary_values_are_untouched() {
    let args = json!({"sql": "SELECT name FROM users WHERE id = 7", "n": 3, "ok": true, "tags": ["a", null]});
    let r = Redactor::default().redact(&args).unwrap();
    assert_eq!(r.value, args);
    assert!(r.flags.is_empty());
}

#[test]
fn extra_key_names_are_honoured() {
    let r = Redactor::default()
        .with_extra_keys(["ssn"])
        .redact(&json!({"patient": {"SSN": "123-45-6789"}}))
        .unwrap();
    assert_eq!(r.value, json!({"patient": {"SSN": REDACTED}}));
    assert_eq!(flags(&r.flags), [pair("$.patient.SSN", "key:custom")]);
}

#[test]
fn oversized_arguments_are_truncated_but_fully_hashed() {
    let big = json!({"blob": "x".repeat(100_000)});
    let redactor = Redactor::default().with_max_bytes(4096);
    let e = event(&big, &redactor);
    assert_eq!(e.sanitized_args()["_warden_truncated"], json!(true));
    assert!(e.sanitized_args().to_string().len() < 4096);
    assert_eq!(flags(e.redaction_flags()), [pair("$", "truncated")]);
    assert_eq!(e.raw_args_hash(), canonical_hash(&big).unwrap());
    let mut other = big.clone();
    other["blob"] = json!(format!("{}y", "x".repeat(99_999)));
    assert_ne!(
        e.raw_args_hash(),
        event(&other, &redactor).raw_args_hash(),
        "the hash covers the full args"
    );
}

#[test]
fn nul_characters_and_negative_zero_become_storable() {
    let r = Redactor::default()
        .redact(&json!({"a\u{0}b": "x\u{0}y", "z": -0.0}))
        .unwrap();
    assert_eq!(r.value, json!({"a\u{FFFD}b": "x\u{FFFD}y", "z": 0.0}));
    assert!(r.flags.iter().all(|f| f.reason == "nul"), "{:?}", r.flags);
}

#[test]
fn large_floats_take_the_form_postgres_returns() {
    let r = Redactor::default()
        .redact(&json!([
            8.29871215518813e16,
            1e16,
            -9.2e18,
            1.5,
            1e15,
            1e300,
            2e19
        ]))
        .unwrap();
    assert_eq!(
        r.value.to_string(),
        "[82987121551881296,10000000000000000,-9200000000000000000,1.5,1000000000000000.0,1e+300,2e+19]"
    );
}

#[test]
fn deep_nesting_is_a_typed_error() {
    let mut v = json!("leaf");
    for _ in 0..(MAX_DEPTH + 5) {
        v = json!({"k": v});
    }
    let call = call(&v);
    assert!(matches!(
        AuditEvent::record(&call, &Redactor::default()),
        Err(AuditError::TooDeep { .. })
    ));
}

#[test]
fn hash_ignores_key_order_and_whitespace_but_not_values() {
    let a: Value = serde_json::from_str(r#"{"x": 1, "y": {"b": [1, 2], "a": "s"}}"#).unwrap();
    let b: Value =
        serde_json::from_str("{ \"y\" : { \"a\":\"s\", \"b\":[1,2] },\n\t\"x\":1 }").unwrap();
    let c: Value = serde_json::from_str(r#"{"x": 1, "y": {"b": [2, 1], "a": "s"}}"#).unwrap();
    assert_eq!(canonical_hash(&a).unwrap(), canonical_hash(&b).unwrap());
    assert_ne!(canonical_hash(&a).unwrap(), canonical_hash(&c).unwrap());
}

#[test]
fn invalid_identifiers_are_refused() {
    for bad in ["", "has\nnewline", "nul\0", &"x".repeat(256)] {
        let args = json!({});
        let mut c = call(&args);
        c.request_id = bad;
        assert!(
            matches!(
                AuditEvent::record(&c, &Redactor::default()),
                Err(AuditError::InvalidField {
                    field: "request_id",
                    ..
                })
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn no_output_of_an_event_shows_raw_args() {
    let args = json!({"password": "p4ss-w0rd-123", "note": "Bearer zzzzyyyyxxxx1234"});
    let c = call(&args);
    assert!(!format!("{c:?}").contains("p4ss"));
    let e = AuditEvent::record(&c, &Redactor::default()).unwrap();
    let shown = format!("{e:?} {}", serde_json::to_string(&e).unwrap());
    assert!(
        !shown.contains("p4ss-w0rd-123") && !shown.contains("zzzzyyyyxxxx1234"),
        "{shown}"
    );
}

fn call(args: &Value) -> ToolCall<'_> {
    ToolCall {
        request_id: "r-1",
        caller_id: "c",
        api_key_id: None,
        method: "tools/call",
        tool_name: None,
        raw_args: args.into(),
        decision: Decision::Allow,
        reason: None,
        risk_labels: &[],
        status_code: None,
        latency_ms: None,
        timestamp: None,
    }
}

fn event(args: &Value, redactor: &Redactor) -> AuditEvent {
    AuditEvent::record(&call(args), redactor).unwrap()
}

fn rule(name: &str, regex: &str) -> warden_audit::ExtraPattern {
    warden_audit::ExtraPattern {
        name: name.into(),
        regex: regex.into(),
    }
}

/// Hardening, item 1: the site adds its own formats and key names; they
/// apply to values, object keys, embedded JSON and the event's reason.
#[test]
fn configured_patterns_and_key_names_are_redacted_everywhere() {
    let rules = warden_audit::RedactionRules {
        extra_key_names: vec!["tenant-seal".into()],
        extra_patterns: vec![rule("acme_token", r"\bacme_[0-9a-f]{24}\b")],
    };
    let redactor = Redactor::default().with_rules(&rules).unwrap();
    let token = "acme_0123456789abcdef01234567";
    let args = json!({
        "note": format!("use {token} for the upload"),
        "TenantSeal": "short",
        "nested": format!("{{\"inner\": \"{token}\"}}"),
        "plain": "nothing to see",
    });
    let r = redactor.redact(&args).unwrap();
    let text = r.value.to_string();
    assert!(!text.contains(token), "{text}");
    assert_eq!(r.value["note"], "use [REDACTED:acme_token] for the upload");
    assert_eq!(r.value["TenantSeal"], REDACTED);
    assert_eq!(r.value["plain"], "nothing to see");
    assert!(
        flags(&r.flags).contains(&pair("$.note", "pattern:custom_acme_token")),
        "{:?}",
        r.flags
    );
    assert!(flags(&r.flags).contains(&pair("$.TenantSeal", "key:custom")));
    // Without the rules the built-ins do not know the format.
    let plain = Redactor::default().redact(&args).unwrap();
    assert!(plain.value.to_string().contains(token));

    let event = AuditEvent::record(
        &ToolCall {
            request_id: "req-rules",
            caller_id: "agent",
            api_key_id: None,
            method: "tools/call",
            tool_name: Some("upload"),
            raw_args: warden_audit::RawArgs::Parsed(&args),
            decision: Decision::Deny,
            reason: Some(&format!("refused: {token} is revoked")),
            risk_labels: &[],
            status_code: None,
            latency_ms: None,
            timestamp: None,
        },
        &redactor,
    )
    .unwrap();
    assert_eq!(
        event.reason(),
        Some("refused: [REDACTED:acme_token] is revoked")
    );
}

/// A bad rule is refused with its name and the reason, before anything runs:
/// never a redactor that silently lacks it.
#[test]
fn bad_configured_patterns_are_refused_by_name() {
    let refuse =
        |rules: warden_audit::RedactionRules, name: &str, reason: &str| match Redactor::default()
            .with_rules(&rules)
        {
            Err(AuditError::RedactionRule { name: n, reason: r }) => {
                assert_eq!(n, name);
                assert!(r.contains(reason), "{r}");
            }
            other => panic!("expected a refusal naming {name}, got {other:?}"),
        };
    let patterns = |p: Vec<warden_audit::ExtraPattern>| warden_audit::RedactionRules {
        extra_key_names: vec![],
        extra_patterns: p,
    };
    refuse(
        patterns(vec![rule("broken", "acme_[0-9")]),
        "broken",
        "does not compile",
    );
    refuse(
        patterns(vec![rule("backref", r"(a)\1")]),
        "backref",
        "does not compile",
    );
    refuse(
        patterns(vec![rule("everything", "x*")]),
        "everything",
        "fewer than 4",
    );
    refuse(
        patterns(vec![rule("Bad Name", "abcd")]),
        "extra_patterns[0]",
        "name must be",
    );
    refuse(
        patterns(vec![rule("twice", "abcd"), rule("twice", "defg")]),
        "twice",
        "already defined",
    );
    refuse(
        patterns(vec![rule("long", &"a".repeat(1001))]),
        "long",
        "longer than 1000",
    );
    refuse(
        warden_audit::RedactionRules {
            extra_key_names: vec!["--".into()],
            extra_patterns: vec![],
        },
        "extra_key_names[0]",
        "letter or digit",
    );
}

/// Configured patterns stay linear-time: a multi-megabyte value with a
/// pattern built to blow up a backtracking engine finishes.
#[test]
fn configured_patterns_stay_linear_on_large_input() {
    let rules = warden_audit::RedactionRules {
        extra_key_names: vec![],
        extra_patterns: vec![rule("nested", r"(a+)+bbbb")],
    };
    let redactor = Redactor::default()
        .with_rules(&rules)
        .unwrap()
        .with_max_bytes(8 << 20);
    let big = "a".repeat(2 << 20);
    let r = redactor.redact(&json!({ "blob": big })).unwrap();
    assert_eq!(r.value["blob"].as_str().map(str::len), Some(2 << 20));
}

/// Review of issue 14: a secret used as an object key never reaches a
/// flag's path (the stored `redaction_flags`), itself or its children's.
#[test]
fn a_secret_used_as_a_key_never_reaches_a_flag_path() {
    let secret = format!("ghp_{}", "aB3dE6gH9kLmN0pQ2rS5tU8vW1xY4zA7bC0d");
    let args = json!({ secret.clone(): {"password": "x", "ok": 1}, "doc": format!("{{\"{secret}\": 1}}") });
    let r = Redactor::default().redact(&args).unwrap();
    let stored = format!("{} {:?}", r.value, r.flags);
    assert!(!stored.contains(&secret[4..]), "{stored}");
    assert!(!r.flags.is_empty());
}

fn rules(names: &[&str], patterns: &[(&str, &str)]) -> Redactor {
    Redactor::default()
        .with_rules(&warden_audit::RedactionRules {
            extra_key_names: names.iter().map(|n| (*n).to_owned()).collect(),
            extra_patterns: patterns.iter().map(|(n, r)| rule(n, r)).collect(),
        })
        .unwrap()
}

/// Configured key names are found in free text like the built-in names.
#[test]
fn configured_key_names_are_redacted_in_free_text() {
    let redactor = rules(&["tenant_seal"], &[]);
    for text in [
        "TENANT_SEAL=s3cr3tvalue ./run",
        "run --tenant-seal s3cr3tvalue now",
        "https://x.example/?tenantSeal=s3cr3tvalue&a=1",
        "tenant-seal: s3cr3tvalue",
    ] {
        let out = redactor.redact_text(text);
        assert!(!out.contains("s3cr3tvalue"), "{text} -> {out}");
        assert!(out.contains("[REDACTED:custom_key]"), "{out}");
    }
    assert_eq!(
        redactor.redact_text("the tenant is sealed"),
        "the tenant is sealed"
    );
}

/// A configured pattern that a built-in rule partly rewrote still hides
/// every piece of its match.
#[test]
fn a_configured_match_partly_rewritten_by_a_built_in_leaves_no_piece() {
    let session = "Q".repeat(8) + "w9e8r7t6y5u4i3o2p1a0s9d8";
    let redactor = rules(
        &[],
        &[("session", r"SESSION=[A-Za-z0-9]{32};sig=[0-9a-f]{64}")],
    );
    let text = format!(
        "curl -b 'SESSION={session};sig={}' https://x",
        "ab".repeat(32)
    );
    let out = redactor.redact_text(&text);
    assert!(!out.contains(&session), "{out}");
    assert!(!out.contains(&"ab".repeat(32)), "{out}");
}

/// A reason is redacted whole before it is cut to length: a secret across
/// the cut leaves no fragment.
#[test]
fn a_reason_is_redacted_before_it_is_cut() {
    let token = format!("ghp_{}", "aB3dE6gH9kLmN0pQ2rS5tU8vW1xY4zA7bC0d");
    for lead in 4070..4100 {
        let reason = format!("{} {token}", "x".repeat(lead));
        let event = AuditEvent::record(
            &ToolCall {
                request_id: "r-cut",
                caller_id: "agent",
                api_key_id: None,
                method: "tools/call",
                tool_name: None,
                raw_args: warden_audit::RawArgs::Parsed(&json!({})),
                decision: Decision::Deny,
                reason: Some(&reason),
                risk_labels: &[],
                status_code: None,
                latency_ms: None,
                timestamp: None,
            },
            &Redactor::default(),
        )
        .unwrap();
        let stored = event.reason().unwrap_or_default();
        assert!(
            !stored.contains("aB3dE6gH9k"),
            "lead {lead}: ...{}",
            &stored[stored.len().saturating_sub(40)..]
        );
    }
}

/// Patterns that can match (almost) nothing are refused: they would rewrite
/// ordinary text at every word boundary or character.
#[test]
fn patterns_with_tiny_matches_are_refused() {
    for (name, regex) in [
        ("boundary", r"\b(?:CORP-\d{6})?\b"),
        ("digit", "[0-9]"),
        ("optional", r"\b[A-Z0-9]{0,40}\b"),
        ("three", "abc"),
    ] {
        match Redactor::default().with_rules(&warden_audit::RedactionRules {
            extra_key_names: vec![],
            extra_patterns: vec![rule(name, regex)],
        }) {
            Err(AuditError::RedactionRule { name: n, reason }) => {
                assert_eq!(n, name);
                assert!(reason.contains("fewer than 4"), "{reason}");
            }
            other => panic!("{name}: expected a refusal, got {other:?}"),
        }
    }
}

/// Configured patterns also scan numbers and short keys.
#[test]
fn configured_patterns_scan_numbers_and_short_keys() {
    let redactor = rules(&[], &[("badge", r"\b9\d{7}\b")]);
    let r = redactor
        .redact(&json!({"badge": 91234567, "91234568": {"x": 1}, "other": 12345678}))
        .unwrap();
    let text = r.value.to_string();
    assert!(
        !text.contains("91234567") && !text.contains("91234568"),
        "{text}"
    );
    assert!(text.contains("12345678"), "{text}");
    assert!(
        !format!("{:?}", r.flags).contains("9123456"),
        "{:?}",
        r.flags
    );
}
