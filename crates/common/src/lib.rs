//! The helpers every Warden crate shares, in one place so that they cannot
//! drift apart:
//!
//! - [`hex`] and [`parse_hex`]: lowercase hex, as every digest, MAC and
//!   random id is written in storage, logs and the API;
//! - [`identifier`]: the one rule for caller ids, tool names, request ids
//!   and the like (not blank, at most so many characters, no control
//!   characters);
//! - [`within`]: a storage step bounded in time, so a paused or blackholed
//!   server fails a call with a timeout instead of hanging it;
//! - [`reveal_invisible`]: text an agent chose, made safe to show a person
//!   (bidi overrides and zero-width characters shown as escapes).
//!
//! Each domain crate maps [`InvalidIdentifier`] and [`TimedOut`] into its own
//! error enum, naming the field or operation.

use std::future::Future;
use std::time::Duration;

/// Lowercase hex of `bytes` (two digits a byte).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Parses exactly `N` bytes of hex (either case, `2 × N` digits, nothing
/// else); `None` for any other length or a non-hex character.
pub fn parse_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits = text.as_bytes();
    if digits.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let hi = char::from(pair[0]).to_digit(16)?;
        let lo = char::from(pair[1]).to_digit(16)?;
        *byte = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

/// Why a value is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidIdentifier {
    /// Empty, or only whitespace.
    #[error("must not be empty")]
    Empty,
    /// More characters than allowed.
    #[error("longer than {max} characters")]
    TooLong {
        /// The most characters allowed.
        max: usize,
    },
    /// A control character (newline, NUL, escape…): it could forge log
    /// lines or break a terminal.
    #[error("contains control characters")]
    ControlCharacter,
}

/// The most characters an identifier has unless a field says otherwise
/// (every identifier column is sized for it).
pub const MAX_IDENTIFIER_CHARS: usize = 255;

/// Checks an identifier (caller id, tool name, request id, role…): not
/// blank, at most `max_chars` characters, no control characters. Returns it
/// unchanged when valid.
pub fn identifier(value: &str, max_chars: usize) -> Result<&str, InvalidIdentifier> {
    if value.trim().is_empty() {
        return Err(InvalidIdentifier::Empty);
    }
    if value.chars().count() > max_chars {
        return Err(InvalidIdentifier::TooLong { max: max_chars });
    }
    if value.chars().any(char::is_control) {
        return Err(InvalidIdentifier::ControlCharacter);
    }
    Ok(value)
}

/// A storage step took longer than its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no answer within {after:?}")]
pub struct TimedOut {
    /// The bound that passed.
    pub after: Duration,
}

/// Runs `work` for at most `limit`; past it, the work is dropped (cancelled)
/// and the result is `E::from(TimedOut)`.
pub async fn within<T, E>(limit: Duration, work: impl Future<Output = Result<T, E>>) -> Result<T, E>
where
    E: From<TimedOut>,
{
    match tokio::time::timeout(limit, work).await {
        Ok(result) => result,
        Err(_) => Err(E::from(TimedOut { after: limit })),
    }
}

/// True for characters that change how text around them is shown without
/// being seen themselves: bidirectional overrides, embeddings and isolates,
/// zero-width and invisible formatting characters, the line and paragraph
/// separators, tag characters, and control characters.
pub fn is_invisible(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{0600}'..='\u{0605}' | '\u{06DD}' | '\u{070F}' | '\u{0890}' | '\u{0891}'
            | '\u{08E2}' | '\u{2800}'
            | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFFB}'
            | '\u{110BD}' | '\u{110CD}' | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}')
}

/// `text` with every [invisible](is_invisible) character replaced by a
/// visible `\u{…}` escape, so that what a person reads is what the text
/// holds, newlines aside (a right-to-left override cannot make `report\u{202E}fdp.sh` read
/// as `reporths.pdf`). Returns whether anything was replaced.
pub fn reveal_invisible(text: &str) -> (String, bool) {
    // Newlines stay: they are seen (pretty-printed JSON keeps its lines).
    let hidden = |c: char| c != '\n' && is_invisible(c);
    if !text.chars().any(hidden) {
        return (text.to_owned(), false);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if hidden(c) {
            out.push_str(&format!("\\u{{{:04X}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    (out, true)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hex_is_lowercase_two_digits_a_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
        assert_eq!(hex(&[]), "");
    }

    #[test]
    fn parse_hex_takes_exact_lengths_only() {
        assert_eq!(parse_hex::<2>("0fA0"), Some([0x0f, 0xa0]));
        assert_eq!(parse_hex::<2>("0fa"), None);
        assert_eq!(parse_hex::<2>("0fa0ff"), None);
        assert_eq!(parse_hex::<2>("0g00"), None);
        assert_eq!(parse_hex::<2>("+f00"), None);
        assert_eq!(parse_hex::<1>("é"), None);
    }

    proptest! {
        #[test]
        fn hex_round_trips(bytes in proptest::array::uniform32(any::<u8>())) {
            prop_assert_eq!(parse_hex::<32>(&hex(&bytes)), Some(bytes));
        }
    }

    #[test]
    fn identifiers() {
        assert_eq!(identifier("agent-1", 255), Ok("agent-1"));
        assert_eq!(identifier("", 255), Err(InvalidIdentifier::Empty));
        assert_eq!(identifier(" \t", 255), Err(InvalidIdentifier::Empty));
        assert_eq!(
            identifier("abc", 2),
            Err(InvalidIdentifier::TooLong { max: 2 })
        );
        // Characters, not bytes.
        assert_eq!(identifier("éé", 2), Ok("éé"));
        assert_eq!(
            identifier("a\nforged line", 255),
            Err(InvalidIdentifier::ControlCharacter)
        );
        assert_eq!(
            identifier("nul\0", 255),
            Err(InvalidIdentifier::ControlCharacter)
        );
    }

    #[test]
    fn invisible_characters_are_revealed() {
        assert_eq!(
            reveal_invisible("report\u{202E}fdp.sh"),
            ("report\\u{202E}fdp.sh".to_owned(), true)
        );
        assert_eq!(
            reveal_invisible("a\u{200B}b\u{2066}c\u{E0041}"),
            ("a\\u{200B}b\\u{2066}c\\u{E0041}".to_owned(), true)
        );
        // Plain text, other scripts and emoji are left alone; newlines too
        // (pretty-printed JSON keeps its lines).
        assert_eq!(
            reveal_invisible("drop table «users» — 表 🙂\n"),
            ("drop table «users» — 表 🙂\n".to_owned(), false)
        );
    }

    #[derive(Debug, PartialEq)]
    enum StepError {
        Timeout(Duration),
        Failed,
    }
    impl From<TimedOut> for StepError {
        fn from(t: TimedOut) -> Self {
            StepError::Timeout(t.after)
        }
    }

    #[tokio::test]
    async fn within_bounds_a_step() {
        let limit = Duration::from_millis(20);
        let hung = within::<(), StepError>(limit, std::future::pending()).await;
        assert_eq!(hung, Err(StepError::Timeout(limit)));
        let done = within::<u8, StepError>(limit, async { Ok(7) }).await;
        assert_eq!(done, Ok(7));
        let failed = within::<u8, StepError>(limit, async { Err(StepError::Failed) }).await;
        assert_eq!(failed, Err(StepError::Failed));
    }
}
