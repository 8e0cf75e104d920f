//! Redaction: secrets in tool arguments are replaced before anything is
//! stored, by key name and by value pattern, and each replacement is recorded
//! as a [`RedactionFlag`] naming the JSON path and the reason.

use std::sync::{Arc, LazyLock};

use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::AuditError;
use crate::canonical::MAX_DEPTH;

/// The replacement for a value redacted because of its key.
pub const REDACTED: &str = "[REDACTED]";

/// One redaction: where (a JSON path such as `$.headers.authorization` or
/// `$.items[2]["odd key"]`) and why (`key:<name>`, `pattern:<kind>`,
/// `truncated`, `nul`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedactionFlag {
    /// JSON path of the redacted value.
    pub path: String,
    /// Why it was redacted.
    pub reason: String,
}

/// Key names (lowercased, with everything but letters and digits removed)
/// that hold secrets wherever they contain one of these.
const SECRET_KEY_PARTS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "apikey",
    "authorization",
    "cookie",
    "privatekey",
    "accesskey",
    "credential",
    "sessionid",
    "signingkey",
    "bearer",
    "connectionstring",
];

/// Key names that are secrets only when they are exactly this (after the same
/// normalization), or end with it in the case of `token`.
const SECRET_KEY_EXACT: &[&str] = &["pwd", "pass", "auth", "otp", "pin", "jwt", "dsn", "xauth"];

struct Pattern {
    kind: &'static str,
    regex: Regex,
    replacement: &'static str,
}

/// Credential-like names, as they appear in free text (`DB_PASSWORD=…`,
/// `client_secret: …`, `?access_token=…`, `AccountKey=…;`).
const CREDENTIAL_NAMES: &str = r"(?:password|passwd|passphrase|pwd|secret|token|api[_-]?key|access[_-]?key|account[_-]?key|shared[_-]?access[_-]?key|private[_-]?key|client[_-]?secret|auth|credentials?|sig|signature)";

static PATTERNS: LazyLock<Vec<Pattern>> = LazyLock::new(|| {
    let providers = crate::secret_formats::PROVIDER_FORMATS
        .iter()
        .map(|(_, regex)| format!("(?:{regex})"))
        .collect::<Vec<_>>()
        .join("|");
    let specs: Vec<(&'static str, String, &'static str)> = vec![
        (
            "private_key",
            r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?s:.*?)(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\z)".into(),
            "[REDACTED:private_key]",
        ),
        (
            "jwt",
            r"\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*".into(),
            "[REDACTED:jwt]",
        ),
        (
            "authorization",
            r#"(?i)\b((?:proxy-)?authorization\s*[:=]\s*"?(?:[A-Za-z][A-Za-z0-9_-]*\s+)?)[^\s"',;]+"#.into(),
            "${1}[REDACTED:authorization]",
        ),
        (
            "bearer",
            r"(?i)\bbearer\s+[A-Za-z0-9\-._~+/]{8,}=*".into(),
            "Bearer [REDACTED:bearer]",
        ),
        (
            "basic_auth",
            // Not prose ("Basic research"): base64 credentials are not all
            // lowercase letters.
            r"\b(?i:basic)\s+[a-z]*[A-Z0-9+/][A-Za-z0-9+/]{7,}={0,2}".into(),
            "Basic [REDACTED:basic_auth]",
        ),
        (
            "aws_access_key",
            r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA)[A-Z0-9]{16}\b".into(),
            "[REDACTED:aws_access_key]",
        ),
        (
            "aws_secret_key",
            r"(?i)\baws_?secret_?access_?key\b\s*[=:]\s*[A-Za-z0-9/+=]{40}".into(),
            "aws_secret_access_key=[REDACTED:aws_secret_key]",
        ),
        (
            "api_key",
            format!(r"\b(?:{providers})"),
            "[REDACTED:api_key]",
        ),
        (
            // Greedy to the last `@` of the token: a password may hold `/` or `@`.
            "url_password",
            r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/@]*:)[^\s]*@".into(),
            "${1}[REDACTED:url_password]@",
        ),
        (
            "netrc",
            r"(?i)\b(machine\s+\S+(?:\s+login\s+\S+)?\s+password\s+)\S+".into(),
            "${1}[REDACTED:netrc]",
        ),
        (
            // `--password hunter2`, `--api-key=…`, `-p` is too ambiguous.
            "cli_flag",
            format!(r#"(?i)(--(?:[a-z0-9]+-)*{CREDENTIAL_NAMES}(?:=|\s+))[^\s"']+"#),
            "${1}[REDACTED:cli_flag]",
        ),
        (
            // `name=value` / `name: value` for credential-like names with any
            // prefix (`DB_PASSWORD`, `client_secret`, `?access_token`,
            // `AccountKey`), values of any length.
            "secret_assignment",
            format!(r#"(?i)\b((?:[a-z0-9]+[_.-])*(?:[a-z0-9]*){CREDENTIAL_NAMES}\s*[=:]\s*"?)[^\s"',;&<>]+"#),
            "${1}[REDACTED:secret_assignment]",
        ),
    ];
    specs
        .into_iter()
        .filter_map(|(kind, pattern, replacement)| {
            match RegexBuilder::new(&pattern)
                .dfa_size_limit(32 << 20)
                .size_limit(32 << 20)
                .build()
            {
                Ok(regex) => Some(Pattern {
                    kind,
                    regex,
                    replacement,
                }),
                Err(e) => {
                    // A pattern is a compile-time constant; a bad one is caught by the tests.
                    tracing::error!(kind, error = %e, "redaction pattern does not compile");
                    None
                }
            }
        })
        .collect()
});

/// Site-specific redaction rules, as the policy file's `redaction:` section
/// states them: more key names to treat as secret, and more value patterns
/// (an internal token format, a partner's key shape). They add to the
/// built-in rules; they can never switch one off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedactionRules {
    /// Key names whose values are secret wherever a key contains one
    /// (compared like the built-ins: case-insensitive, punctuation ignored).
    #[serde(default)]
    pub extra_key_names: Vec<String>,
    /// Value patterns: each match is replaced by `[REDACTED:<name>]`.
    #[serde(default)]
    pub extra_patterns: Vec<ExtraPattern>,
}

/// The shortest match a configured pattern may have: a pattern that can
/// match less (or nothing at all, such as `\b`) would rewrite ordinary text
/// everywhere.
pub const MIN_PATTERN_MATCH_LEN: usize = 4;

/// One configured value pattern.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraPattern {
    /// Its name: 1 to 40 characters of `a-z`, `0-9` and `_`; it appears in
    /// redaction flags (`pattern:custom_<name>`) and in the replacement.
    pub name: String,
    /// A regular expression (the `regex` crate's syntax: linear time, no
    /// backreferences or look-around), at most 1,000 characters, whose every
    /// match is at least [`MIN_PATTERN_MATCH_LEN`] characters long.
    pub regex: String,
}

/// At most this many configured patterns.
pub const MAX_EXTRA_PATTERNS: usize = 200;
/// At most this many configured key names.
pub const MAX_EXTRA_KEY_NAMES: usize = 500;

/// Configured patterns, compiled once and shared by every clone: the
/// operator's value patterns, and free-text shapes (`NAME=value`,
/// `--name value`) of the configured key names.
#[derive(Debug, Default)]
struct ExtraPatterns {
    kinds: Vec<String>,
    replacements: Vec<String>,
    /// Whether the replacement keeps capture group 1 (the name before the
    /// value); false for operator patterns (their text is never expanded).
    expand: Vec<bool>,
    regexes: Vec<Regex>,
    set: Option<RegexSet>,
}

impl ExtraPatterns {
    fn compile(patterns: &[ExtraPattern], key_names: &[String]) -> Result<Self, AuditError> {
        if patterns.len() > MAX_EXTRA_PATTERNS {
            return Err(AuditError::RedactionRule {
                name: format!("extra_patterns ({} rules)", patterns.len()),
                reason: format!("at most {MAX_EXTRA_PATTERNS} patterns"),
            });
        }
        let mut out = Self::default();
        for (i, p) in patterns.iter().enumerate() {
            let valid_name = !p.name.is_empty()
                && p.name.len() <= 40
                && p.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            let fail = |reason: String| {
                Err(AuditError::RedactionRule {
                    name: if valid_name {
                        p.name.clone()
                    } else {
                        format!("extra_patterns[{i}]")
                    },
                    reason,
                })
            };
            if !valid_name {
                return fail("name must be 1 to 40 characters of a-z, 0-9 and _".into());
            }
            if out.kinds.iter().any(|k| k == &format!("custom_{}", p.name)) {
                return fail("a pattern with this name is already defined".into());
            }
            if p.regex.len() > 1000 {
                return fail("pattern longer than 1000 characters".into());
            }
            let regex = match RegexBuilder::new(&p.regex)
                .size_limit(1 << 20)
                .dfa_size_limit(2 << 20)
                .build()
            {
                Ok(regex) => regex,
                Err(e) => return fail(format!("does not compile: {e}")),
            };
            let shortest = regex_syntax::parse(&p.regex)
                .ok()
                .and_then(|hir| hir.properties().minimum_len());
            if regex.is_match("") || shortest.is_none_or(|n| n < MIN_PATTERN_MATCH_LEN) {
                return fail(format!(
                    "can match fewer than {MIN_PATTERN_MATCH_LEN} characters (it would rewrite \
                     ordinary text everywhere)"
                ));
            }
            out.kinds.push(format!("custom_{}", p.name));
            out.replacements.push(format!("[REDACTED:{}]", p.name));
            out.expand.push(false);
            out.regexes.push(regex);
        }
        // The configured key names in free text, like the built-in names:
        // `TENANT_SEAL=…`, `tenant-seal: …`, `?tenantSeal=…`, `--tenant-seal …`.
        let names: Vec<String> = key_names
            .iter()
            .map(|name| {
                name.split(|c: char| !c.is_ascii_alphanumeric())
                    .filter(|part| !part.is_empty())
                    .map(regex::escape)
                    .collect::<Vec<_>>()
                    .join("[_.-]?")
            })
            .filter(|n| !n.is_empty())
            .collect();
        if !names.is_empty() {
            let names = names.join("|");
            for (kind, pattern) in [
                (
                    "custom_key_assignment",
                    format!(
                        r#"(?i)\b((?:[a-z0-9]+[_.-])*[a-z0-9]*(?:{names})\s*[=:]\s*"?)[^\s"',;&<>]+"#
                    ),
                ),
                (
                    "custom_key_flag",
                    format!(r#"(?i)(--(?:[a-z0-9]+-)*(?:{names})(?:=|\s+))[^\s"']+"#),
                ),
            ] {
                let regex = RegexBuilder::new(&pattern)
                    .size_limit(4 << 20)
                    .dfa_size_limit(8 << 20)
                    .build()
                    .map_err(|e| AuditError::RedactionRule {
                        name: "extra_key_names".into(),
                        reason: format!("together they are too large: {e}"),
                    })?;
                out.kinds.push(kind.to_owned());
                out.replacements
                    .push("${1}[REDACTED:custom_key]".to_owned());
                out.expand.push(true);
                out.regexes.push(regex);
            }
        }
        if !out.regexes.is_empty() {
            out.set = Some(
                RegexSetBuilder::new(out.regexes.iter().map(Regex::as_str))
                    .size_limit(8 << 20)
                    .dfa_size_limit(16 << 20)
                    .build()
                    .map_err(|e| AuditError::RedactionRule {
                        name: "extra_patterns".into(),
                        reason: format!("together they are too large: {e}"),
                    })?,
            );
        }
        Ok(out)
    }

    /// Replaces every match of every configured pattern. `original` is the
    /// text before the built-in rules ran, `current` after: a configured
    /// match the built-ins partly rewrote (so it no longer matches in
    /// `current`) still has each surviving piece of it (runs of letters and
    /// digits, 4 or more) replaced — never left half-hidden.
    fn apply(
        &self,
        original: &str,
        mut current: String,
        path: &str,
        flags: &mut Vec<RedactionFlag>,
    ) -> String {
        let Some(set) = &self.set else {
            return current;
        };
        for i in set.matches(original).into_iter() {
            let (Some(regex), Some(kind), Some(replacement), Some(expand)) = (
                self.regexes.get(i),
                self.kinds.get(i),
                self.replacements.get(i),
                self.expand.get(i),
            ) else {
                continue;
            };
            let secrets: Vec<&str> = if *expand {
                regex
                    .captures_iter(original)
                    .filter_map(|c| {
                        let all = c.get(0)?;
                        let name_end = c.get(1).map_or(all.start(), |g| g.end());
                        original.get(name_end..all.end())
                    })
                    .collect()
            } else {
                regex.find_iter(original).map(|m| m.as_str()).collect()
            };
            let mut hit = false;
            // A match the built-ins partly rewrote is no longer whole in
            // `current`: hide each surviving piece of it, before any label
            // of ours is inserted (a piece must not hit our own labels).
            let broken: Vec<&str> = secrets
                .iter()
                .copied()
                .filter(|s| !current.contains(*s))
                .collect();
            for secret in broken {
                for piece in secret
                    .split(|c: char| !c.is_alphanumeric())
                    .filter(|p| p.chars().count() >= 4)
                {
                    if current.contains(piece) {
                        current = current.replace(piece, "[REDACTED:custom]");
                        hit = true;
                    }
                }
            }
            if regex.is_match(&current) {
                current = if *expand {
                    regex
                        .replace_all(&current, replacement.as_str())
                        .into_owned()
                } else {
                    regex
                        .replace_all(&current, regex::NoExpand(replacement))
                        .into_owned()
                };
                hit = true;
            }
            if hit {
                flags.push(RedactionFlag {
                    path: path.to_owned(),
                    reason: format!("pattern:{kind}"),
                });
            }
        }
        current
    }

    /// Whether any configured pattern matches `text`.
    fn matches(&self, text: &str) -> bool {
        self.set.as_ref().is_some_and(|set| set.is_match(text))
    }
}

/// The redactor: which key names are secret (the built-in list plus extras),
/// which value patterns are (the built-in formats plus configured ones) and
/// the size cap on what is stored.
#[derive(Debug, Clone)]
pub struct Redactor {
    extra_keys: Vec<String>,
    extra_patterns: Arc<ExtraPatterns>,
    max_bytes: usize,
}

impl Default for Redactor {
    fn default() -> Self {
        Self {
            extra_keys: Vec::new(),
            extra_patterns: Arc::new(ExtraPatterns::default()),
            max_bytes: 64 * 1024,
        }
    }
}

/// The outcome of redacting one argument tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Redacted {
    /// The arguments with every secret replaced.
    pub value: Value,
    /// What was replaced, in document order.
    pub flags: Vec<RedactionFlag>,
}

impl Redactor {
    /// Also treat keys containing any of `keys` (compared like the built-ins:
    /// case-insensitive, ignoring `-`, `_` and other punctuation) as secret.
    pub fn with_extra_keys<I, S>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.extra_keys.extend(
            keys.into_iter()
                .map(|k| normalize(k.as_ref()))
                .filter(|k| !k.is_empty()),
        );
        self
    }

    /// Adds the configured `rules` (see [`RedactionRules`]) to the built-in
    /// ones. Every rule is validated first: a pattern that does not compile,
    /// can match fewer than [`MIN_PATTERN_MATCH_LEN`] characters, is too
    /// long, or has a bad or repeated name is [`AuditError::RedactionRule`]
    /// naming it; nothing is half-applied. The rules' key names add to those
    /// of [`with_extra_keys`](Self::with_extra_keys); their patterns replace
    /// the patterns of an earlier `with_rules`.
    pub fn with_rules(self, rules: &RedactionRules) -> Result<Self, AuditError> {
        if rules.extra_key_names.len() > MAX_EXTRA_KEY_NAMES {
            return Err(AuditError::RedactionRule {
                name: "extra_key_names".into(),
                reason: format!("at most {MAX_EXTRA_KEY_NAMES} names"),
            });
        }
        if let Some((i, _)) = rules
            .extra_key_names
            .iter()
            .enumerate()
            .find(|(_, k)| normalize(k).is_empty())
        {
            return Err(AuditError::RedactionRule {
                name: format!("extra_key_names[{i}]"),
                reason: "needs at least one letter or digit".into(),
            });
        }
        let patterns = ExtraPatterns::compile(&rules.extra_patterns, &rules.extra_key_names)?;
        let mut redactor = self.with_extra_keys(&rules.extra_key_names);
        redactor.extra_patterns = Arc::new(patterns);
        Ok(redactor)
    }

    /// Redacts free text (a reason, a note) with every value pattern,
    /// built-in and configured.
    pub fn redact_text(&self, text: &str) -> String {
        self.redact_string(text, "$", &mut Vec::new())
    }

    fn redact_string(&self, s: &str, path: &str, flags: &mut Vec<RedactionFlag>) -> String {
        let built_in = redact_string(s, path, flags);
        self.extra_patterns.apply(s, built_in, path, flags)
    }

    /// Stored arguments larger than `max_bytes` (canonical JSON) are replaced
    /// by a truncated preview, flagged `truncated`.
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes.max(256);
        self
    }

    /// The size cap.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Redacts `args`. Also makes the result storable everywhere: NUL
    /// characters (refused by PostgreSQL) become U+FFFD, flagged `nul`, and
    /// `-0.0` becomes `0.0` (PostgreSQL's numeric has no negative zero).
    pub fn redact(&self, args: &Value) -> Result<Redacted, AuditError> {
        let mut flags = Vec::new();
        let value = self.walk(args, &mut String::from("$"), 0, &mut flags)?;
        let canonical = crate::canonical::canonical_json(&value)?;
        if canonical.len() > self.max_bytes {
            let preview_len = floor_char_boundary(&canonical, 1024.min(self.max_bytes / 2));
            let preview = String::from_utf8_lossy(&canonical[..preview_len]).into_owned();
            let mut truncated = Map::new();
            truncated.insert("_warden_truncated".into(), Value::Bool(true));
            truncated.insert("original_bytes".into(), Value::from(canonical.len()));
            truncated.insert("preview".into(), Value::String(preview));
            flags.push(RedactionFlag {
                path: "$".into(),
                reason: "truncated".into(),
            });
            return Ok(Redacted {
                value: Value::Object(truncated),
                flags,
            });
        }
        Ok(Redacted { value, flags })
    }

    fn is_secret_key(&self, key: &str) -> Option<&'static str> {
        let n = normalize(key);
        if n.is_empty() {
            return None;
        }
        if let Some(part) = SECRET_KEY_PARTS.iter().find(|p| n.contains(*p)) {
            return Some(part);
        }
        if n.ends_with("token") {
            return Some("token");
        }
        if let Some(exact) = SECRET_KEY_EXACT.iter().find(|e| n == **e) {
            return Some(exact);
        }
        // Environment-style names: `STRIPE_KEY`, `DB_PASS`, `SMTP_PWD`.
        let env_style = key
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if env_style
            && ["_KEY", "_PASS", "_PWD", "_SECRET", "_TOKEN"]
                .iter()
                .any(|s| key.ends_with(s))
        {
            return Some("env_secret");
        }
        if self
            .extra_keys
            .iter()
            .any(|extra| n.contains(extra.as_str()))
        {
            return Some("custom");
        }
        None
    }

    fn walk(
        &self,
        value: &Value,
        path: &mut String,
        depth: usize,
        flags: &mut Vec<RedactionFlag>,
    ) -> Result<Value, AuditError> {
        if depth > MAX_DEPTH {
            return Err(AuditError::TooDeep { limit: MAX_DEPTH });
        }
        Ok(match value {
            Value::Object(map) => {
                // A name/value pair (`{"name": "DB_PASSWORD", "value": …}`,
                // the shape of environment and header lists): the value is
                // secret when the name is.
                let pair_secret = ["name", "key", "header", "Name", "Key", "Header"]
                    .iter()
                    .filter_map(|field| map.get(*field).and_then(Value::as_str))
                    .find_map(|name| self.is_secret_key(name));
                let mut out = Map::new();
                for (key, child) in map {
                    let len = path.len();
                    // Keys are text too: a secret used as a key is redacted
                    // (short identifiers cannot hold a built-in token: only
                    // the configured patterns scan them). The key is cleaned
                    // before it becomes part of any path: a flag must never
                    // carry the secret it flags.
                    let mut key_flags = Vec::new();
                    let clean_key = strip_nul(key, "", &mut key_flags);
                    let clean_key = if clean_key.len() >= 16 {
                        self.redact_string(&clean_key, "", &mut key_flags)
                    } else if self.extra_patterns.matches(&clean_key) {
                        self.extra_patterns
                            .apply(&clean_key, clean_key.clone(), "", &mut key_flags)
                    } else {
                        clean_key
                    };
                    push_key(path, &clean_key);
                    flags.extend(key_flags.into_iter().map(|f| RedactionFlag {
                        path: path.clone(),
                        reason: f.reason,
                    }));
                    let is_pair_value = matches!(key.as_str(), "value" | "Value");
                    let rule = self
                        .is_secret_key(key)
                        .or(pair_secret.filter(|_| is_pair_value));
                    let redacted = if let Some(rule) = rule {
                        flags.push(RedactionFlag {
                            path: path.clone(),
                            reason: format!("key:{rule}"),
                        });
                        Value::String(REDACTED.into())
                    } else {
                        self.walk(child, path, depth + 1, flags)?
                    };
                    out.insert(clean_key, redacted);
                    path.truncate(len);
                }
                Value::Object(out)
            }
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    out.push(self.walk(item, path, depth + 1, flags)?);
                    path.truncate(len);
                }
                Value::Array(out)
            }
            Value::String(s) => match embedded_json(s) {
                // A JSON document inside a string is redacted as a document.
                Some(inner) => {
                    let len = path.len();
                    path.push_str("<json>");
                    let mut inner_flags = Vec::new();
                    let walked = self.walk(&inner, path, depth + 1, &mut inner_flags);
                    path.truncate(len);
                    match walked {
                        Ok(walked) => {
                            flags.extend(inner_flags);
                            Value::String(walked.to_string())
                        }
                        // Too deep to walk: redacted as text instead.
                        Err(_) => Value::String(self.redact_string(s, path, flags)),
                    }
                }
                None => Value::String(self.redact_string(s, path, flags)),
            },
            // A number is scanned by the configured patterns only (an
            // employee PIN, a card number): a match stores redacted text.
            Value::Number(n) if self.extra_patterns.matches(&n.to_string()) => {
                let text = n.to_string();
                Value::String(self.extra_patterns.apply(&text, text.clone(), path, flags))
            }
            Value::Number(n) => storable_number(n).unwrap_or_else(|| value.clone()),
            Value::Bool(_) | Value::Null => value.clone(),
        })
    }
}

/// The form PostgreSQL's `numeric` gives a float back in, when it differs:
/// no negative zero, and floats of 1e16 or more (always integral; serde_json
/// writes them with an exponent) come back as integers when they fit one.
fn storable_number(n: &serde_json::Number) -> Option<Value> {
    if n.is_i64() || n.is_u64() {
        return None;
    }
    let f = n.as_f64()?;
    if f == 0.0 && f.is_sign_negative() {
        return Some(Value::from(0.0));
    }
    if f.abs() >= 1e16 {
        // Exact: every f64 this large is an integer, and the range is checked.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        if (0.0..18_446_744_073_709_551_616.0).contains(&f) {
            return Some(Value::from(f as u64));
        } else if (-9_223_372_036_854_775_808.0..0.0).contains(&f) {
            return Some(Value::from(f as i64));
        }
    }
    None
}

/// Every pattern in one set: one pass tells which (if any) match, so a
/// value without secrets costs a single scan.
static PATTERN_SET: LazyLock<Option<RegexSet>> = LazyLock::new(|| {
    RegexSetBuilder::new(PATTERNS.iter().map(|p| p.regex.as_str()))
        // Room for the lazy DFA of the provider alternation: without it the
        // engine falls back to slower matching on every value.
        .dfa_size_limit(64 << 20)
        .size_limit(64 << 20)
        .build()
        .ok()
});

fn redact_string(s: &str, path: &str, flags: &mut Vec<RedactionFlag>) -> String {
    let mut current = strip_nul(s, path, flags);
    let candidates: Vec<usize> = match PATTERN_SET.as_ref() {
        Some(set) => set.matches(&current).into_iter().collect(),
        None => (0..PATTERNS.len()).collect(),
    };
    for pattern in candidates.into_iter().filter_map(|i| PATTERNS.get(i)) {
        if pattern.regex.is_match(&current) {
            current = pattern
                .regex
                .replace_all(&current, pattern.replacement)
                .into_owned();
            flags.push(RedactionFlag {
                path: path.to_owned(),
                reason: format!("pattern:{}", pattern.kind),
            });
        }
    }
    current
}

/// The JSON object or array a string holds, if it holds one (at most 1 MiB).
fn embedded_json(s: &str) -> Option<Value> {
    let t = s.trim();
    if t.len() > 1024 * 1024
        || !((t.starts_with('{') && t.ends_with('}')) || (t.starts_with('[') && t.ends_with(']')))
    {
        return None;
    }
    serde_json::from_str::<Value>(t)
        .ok()
        .filter(|v| v.is_object() || v.is_array())
}

fn strip_nul(s: &str, path: &str, flags: &mut Vec<RedactionFlag>) -> String {
    if s.contains('\0') {
        flags.push(RedactionFlag {
            path: path.to_owned(),
            reason: "nul".into(),
        });
        s.replace('\0', "\u{FFFD}")
    } else {
        s.to_owned()
    }
}

fn normalize(key: &str) -> String {
    key.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn push_key(path: &mut String, key: &str) {
    let simple = !key.is_empty()
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !key.starts_with(|c: char| c.is_ascii_digit());
    if simple {
        path.push('.');
        path.push_str(key);
    } else {
        path.push('[');
        path.push_str(&serde_json::to_string(key).unwrap_or_default());
        path.push(']');
    }
}

fn floor_char_boundary(bytes: &[u8], mut at: usize) -> usize {
    at = at.min(bytes.len());
    while at > 0 && bytes.get(at).is_some_and(|b| (b & 0xC0) == 0x80) {
        at -= 1;
    }
    at
}
