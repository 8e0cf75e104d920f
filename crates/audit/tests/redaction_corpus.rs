//! A corpus of secret formats (built from providers' published shapes, with
//! synthetic values) and of look-alikes that must stay intact: every
//! positive loses its secret, every negative survives unchanged.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};
use warden_audit::Redactor;

fn rep(unit: &str, n: usize) -> String {
    unit.repeat(n)
}

/// (what, text in which `secret` appears).
fn positives() -> Vec<(&'static str, String, String)> {
    let hex32 = rep("a1b2c3d4", 4);
    let hex40 = rep("0f1e2d3c4b", 4);
    let hex64 = rep("89abcdef", 8);
    let alnum = |n: usize| rep("aB3dE6gH9k", n.div_ceil(10))[..n].to_owned();
    let mut cases: Vec<(&'static str, String)> = vec![
        ("openai", format!("sk-proj-{}", alnum(40))),
        ("anthropic", format!("sk-ant-api03-{}", alnum(40))),
        ("github classic", format!("ghp_{}", alnum(36))),
        ("github oauth", format!("gho_{}", alnum(36))),
        ("github fine-grained", format!("github_pat_{}", alnum(60))),
        ("gitlab pat", format!("glpat-{}", alnum(20))),
        ("gitlab deploy", format!("gldt-{}", alnum(24))),
        ("gitlab runner", format!("glrt-{}", alnum(24))),
        ("slack bot", format!("xoxb-{}-{}", "1234567890", alnum(24))),
        ("slack user", format!("xoxp-{}-{}", "1234567890", alnum(24))),
        ("slack app", format!("xapp-1-{}", alnum(30))),
        (
            "slack webhook",
            format!("https://hooks.slack.com/services/T0000/B0000/{}", alnum(24)),
        ),
        (
            "discord webhook",
            format!("https://discord.com/api/webhooks/123456789/{}", alnum(60)),
        ),
        ("google api", format!("AIza{}", alnum(35))),
        ("google oauth secret", format!("GOCSPX-{}", alnum(28))),
        ("google oauth token", format!("ya29.{}", alnum(60))),
        ("stripe secret", format!("sk_live_{}", alnum(24))),
        ("stripe restricted", format!("rk_live_{}", alnum(24))),
        ("stripe webhook", format!("whsec_{}", alnum(32))),
        ("sendgrid", format!("SG.{}.{}", alnum(22), alnum(43))),
        ("twilio", format!("SK{hex32}")),
        ("mailgun", format!("key-{hex32}")),
        ("mailchimp", format!("{hex32}-us21")),
        ("brevo", format!("xkeysib-{hex64}-{}", alnum(16))),
        ("resend", format!("re_{}_{}", alnum(8), alnum(24))),
        ("npm", format!("npm_{}", alnum(36))),
        ("pypi", format!("pypi-AgEIcHlwaS5vcmc{}", alnum(70))),
        ("rubygems", format!("rubygems_{}", rep("abc123", 8))),
        ("docker hub", format!("dckr_pat_{}", alnum(27))),
        ("hugging face", format!("hf_{}", alnum(34))),
        ("shopify", format!("shpat_{hex32}")),
        ("shopify secret", format!("shpss_{hex32}")),
        ("square", format!("sq0atp-{}", alnum(22))),
        ("square secret", format!("sq0csp-{}", alnum(43))),
        ("atlassian", format!("ATATT3{}", alnum(60))),
        ("bitbucket", format!("ATBB{}", alnum(32))),
        ("digitalocean", format!("dop_v1_{hex64}")),
        ("heroku", format!("HRKU-{}", alnum(36))),
        ("linear", format!("lin_api_{}", alnum(40))),
        ("notion", format!("ntn_{}", alnum(46))),
        (
            "postman",
            format!(
                "PMAK-{}-{}",
                rep("abcdef", 4),
                rep("0123456789abcdef01", 2)[..34].to_owned()
            ),
        ),
        ("databricks", format!("dapi{hex32}")),
        ("doppler", format!("dp.pt.{}", alnum(43))),
        ("grafana cloud", format!("glc_{}", alnum(40))),
        ("new relic", format!("NRAK-{}", rep("ABC123XYZ", 3))),
        ("sentry", format!("sntryu_{hex64}")),
        ("figma", format!("figd_{}", alnum(43))),
        ("vault", format!("hvs.{}", alnum(90))),
        ("pulumi", format!("pul-{hex40}")),
        (
            "age",
            format!("AGE-SECRET-KEY-1{}", rep("QPZRY9X8GF", 6)[..58].to_owned()),
        ),
        ("telegram bot", format!("123456789:AA{}", alnum(33))),
        ("airtable", format!("pat{}.{hex64}", alnum(14))),
        ("alibaba", format!("LTAI{}", alnum(20))),
        ("tencent", format!("AKID{}", alnum(32))),
        ("planetscale", format!("pscale_tkn_{}", alnum(43))),
        ("supabase", format!("sbp_{hex40}")),
        ("replicate", format!("r8_{}", alnum(37))),
        ("groq", format!("gsk_{}", alnum(52))),
        ("perplexity", format!("pplx-{}", alnum(48))),
        ("buildkite", format!("bkua_{hex40}")),
        (
            "tailscale",
            format!("tskey-auth-{}-{}", alnum(10), alnum(30)),
        ),
        ("pinecone", format!("pcsk_{}", alnum(60))),
        ("langsmith", format!("lsv2_pt_{hex32}_{}", &hex40[..10])),
        ("aws access key", "AKIAIOSFODNN7EXAMPLE".to_owned()),
        ("warden key", format!("wdn_prod_{}", alnum(40))),
        (
            "jwt",
            format!("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.{}", alnum(43)),
        ),
    ];
    let mut out: Vec<(&'static str, String, String)> = cases
        .drain(..)
        .flat_map(|(what, secret)| {
            [
                (what, format!("use {secret} for the call"), secret.clone()),
                (what, secret.clone(), secret),
            ]
        })
        .collect();
    // Generic forms: the secret is the value after a credential-like name.
    let generic: Vec<(&'static str, &str, &str)> = vec![
        ("env password", "DB_PASSWORD=hunter2", "hunter2"),
        ("env token", "export GITHUB_TOKEN=abc", "abc"),
        ("client secret", "client_secret=s3cr3t", "s3cr3t"),
        (
            "query token",
            "https://api.example.com/v1?access_token=qwerty&x=1",
            "qwerty",
        ),
        (
            "query signature",
            "https://x.blob.core.windows.net/c/b?sv=2020&sig=Zm9vYmFy%3D",
            "Zm9vYmFy",
        ),
        (
            "connection string",
            "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=Zm9vYmFyYmF6cXV4;EndpointSuffix=core.windows.net",
            "Zm9vYmFyYmF6cXV4",
        ),
        (
            "shared access key",
            "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=root;SharedAccessKey=YmFyYmF6cXV4",
            "YmFyYmF6cXV4",
        ),
        (
            "sql connection",
            "Server=db;Database=app;User Id=sa;Password=P@ss1;",
            "P@ss1",
        ),
        ("short value", "password: abc", "abc"),
        ("yaml", "api_key: k-123", "k-123"),
        (
            "netrc",
            "machine api.example.com login bob password n3trcs3cret",
            "n3trcs3cret",
        ),
        ("cli flag", "mysql --password s3cretpw -h db", "s3cretpw"),
        ("cli flag equals", "tool --api-key=abcdef123", "abcdef123"),
        (
            "auth token scheme",
            "Authorization: Token 0123456789abcdef",
            "0123456789abcdef",
        ),
        (
            "auth digest",
            "Authorization: Digest username=\"u\", response=\"6629fae49393a05397450978507c4ef1\"",
            "username",
        ),
        (
            "auth apikey scheme",
            "authorization: ApiKey c2VjcmV0a2V5",
            "c2VjcmV0a2V5",
        ),
        (
            "url password with slash",
            "postgres://app:pa/ss@db:5432/app",
            "pa/ss",
        ),
        (
            "url password with at",
            "https://user:p@ss@host/path",
            "p@ss",
        ),
        (
            "pgp",
            "-----BEGIN PGP PRIVATE KEY BLOCK-----\nlQOYBF\n-----END PGP PRIVATE KEY BLOCK-----",
            "lQOYBF",
        ),
        (
            "rsa",
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----",
            "MIIEow",
        ),
        ("passphrase", "passphrase=correct-horse", "correct-horse"),
        (
            "private key assignment",
            "private_key: 0xdeadbeefcafe",
            "0xdeadbeefcafe",
        ),
        ("credentials", "credentials=user:pw", "user:pw"),
        ("pwd", "PWD=abc12", "abc12"),
    ];
    out.extend(
        generic
            .into_iter()
            .map(|(what, text, secret)| (what, text.to_owned(), secret.to_owned())),
    );
    out
}

/// Text that must survive unchanged.
fn negatives() -> Vec<String> {
    [
        "commit 3f786850e387550fdab836ed7e6dc881de23001b",
        "uuid 123e4567-e89b-12d3-a456-426614174000",
        "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "max_tokens=512",
        "max_tokens: 1024",
        "please reset your password via the link",
        "the token bucket refills every second",
        "an API key is required for this endpoint",
        "Use a strong password.",
        "tokens used: 1200",
        "author: Jane Doe",
        "design=minimal",
        "config=default",
        "key=value pairs are common",
        "primary key violation on users",
        "monkey business",
        "https://example.com/path?page=2&sort=asc",
        "https://user@example.com/path",
        "postgres://app@db:5432/app",
        "SELECT * FROM users WHERE id = 7",
        "Basic research shows",
        "bearer of bad news",
        "sk-short",
        "ghp_short",
        "AKIA-not-a-key",
        "status: ok",
        "sig figs: 3",
        "retry after 30s",
        "version 1.2.3",
        "email bob@example.com",
        "path /var/lib/warden/checkpoint.txt",
        "temperature=0.7",
        "top_p: 0.9",
        "model: gpt-4o",
        "The quick brown fox jumps over the lazy dog",
        "2026-11-25T20:13:51Z",
        "192.168.0.1:8080",
        "Content-Type: application/json",
        "Accept: */*",
        "user-agent: curl/8.0",
        "x-request-id: 1234",
        "count=42",
        "limit: 100",
        "AccountName=acct",
        "token_type=bearer_header_name_only",
        "machine learning model",
        "hash=md5",
        "id: 01a2147d-3f7c-7253-986a-89ed7c640d78",
        "README.md",
        "a_b_c=d",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

fn redacted(text: &str) -> String {
    let out = Redactor::default().redact(&json!({"text": text})).unwrap();
    match &out.value["text"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[test]
fn every_positive_loses_its_secret() {
    let cases = positives();
    assert!(cases.len() >= 150, "{} positive cases", cases.len());
    let mut leaks = Vec::new();
    for (what, text, secret) in &cases {
        let out = redacted(text);
        if out.contains(secret.as_str()) {
            leaks.push(format!("{what}: {out}"));
        }
    }
    assert!(
        leaks.is_empty(),
        "{} leaked:\n{}",
        leaks.len(),
        leaks.join("\n")
    );
}

#[test]
fn every_negative_survives_intact() {
    let cases = negatives();
    assert!(cases.len() >= 50, "{} negative cases", cases.len());
    let changed: Vec<String> = cases
        .iter()
        .filter_map(|text| {
            let out = redacted(text);
            (out != *text).then(|| format!("{text:?} -> {out:?}"))
        })
        .collect();
    assert!(
        changed.is_empty(),
        "false positives:\n{}",
        changed.join("\n")
    );
}

/// Structure: name/value lists, secrets used as keys, JSON inside strings,
/// environment-style names, and the event's free-text reason.
#[test]
fn structural_shapes_are_redacted() {
    let env_list = json!({"env": [
        {"name": "DB_PASSWORD", "value": "pw-in-env-list"},
        {"name": "LOG_LEVEL", "value": "debug"}
    ]});
    let out = Redactor::default()
        .redact(&env_list)
        .unwrap()
        .value
        .to_string();
    assert!(
        !out.contains("pw-in-env-list") && out.contains("debug"),
        "{out}"
    );

    let headers = json!({"headers": [{"key": "X-Api-Key", "value": "hdr-secret-1"}]});
    let out = Redactor::default()
        .redact(&headers)
        .unwrap()
        .value
        .to_string();
    assert!(!out.contains("hdr-secret-1"), "{out}");

    let keyed = json!({format!("ghp_{}", "aB3dE6gH9k".repeat(4)): true});
    let out = Redactor::default()
        .redact(&keyed)
        .unwrap()
        .value
        .to_string();
    assert!(!out.contains("ghp_aB3dE6gH9k"), "{out}");

    let nested = json!({"body": "{\"user\": \"bob\", \"password\": \"json-in-string\"}"});
    let out = Redactor::default()
        .redact(&nested)
        .unwrap()
        .value
        .to_string();
    assert!(
        !out.contains("json-in-string") && out.contains("bob"),
        "{out}"
    );

    let env =
        json!({"STRIPE_KEY": "env-style-key", "SMTP_PASS": "env-style-pass", "LOG_LEVEL": "info"});
    let out = Redactor::default().redact(&env).unwrap().value.to_string();
    assert!(
        !out.contains("env-style-key") && !out.contains("env-style-pass") && out.contains("info"),
        "{out}"
    );

    let event = warden_audit::AuditEvent::record(
        &warden_audit::ToolCall {
            request_id: "r",
            caller_id: "c",
            api_key_id: None,
            method: "tools/call",
            tool_name: None,
            raw_args: (&json!({})).into(),
            decision: warden_audit::Decision::Deny,
            reason: Some("refused: DB_PASSWORD=reason-secret was in the args"),
            risk_labels: &[],
            status_code: None,
            latency_ms: None,
            timestamp: None,
        },
        &Redactor::default(),
    )
    .unwrap();
    assert!(!event.reason().unwrap_or_default().contains("reason-secret"));
}

/// A multi-megabyte string of near-misses is redacted (the regex crate
/// guarantees linear time; the benchmark measures the cost).
#[test]
fn multi_megabyte_near_misses_are_redacted() {
    let text = "password sk- ghp_ AKIA token: x ".repeat(100_000);
    let out = redacted(&text);
    assert!(!out.contains("token: x "), "{}", &out[..200]);
}
