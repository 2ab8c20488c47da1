//! The one error type that reaches command code, and the text each variant replies with.
//!
//! `RxError` deliberately does not implement `std::error::Error`: redis-module has a blanket
//! `From<E: Error> for RedisError` that would prefix every message with "ERR ".

use std::borrow::Cow;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RxError {
    /// A complete error reply, code included (e.g. `ERR ...`, `WRONGTYPE ...`, `NOPERM ...`).
    /// Bytes: an error can quote what a script holds (a compile error near a byte of any
    /// value), and the reply must carry it unchanged.
    Reply(Vec<u8>),
}

impl RxError {
    /// An `ERR`-coded error.
    pub fn err(msg: impl AsRef<str>) -> Self {
        RxError::Reply(format!("ERR {}", msg.as_ref()).into_bytes())
    }

    /// An error whose text already carries its code.
    pub fn coded(text: impl Into<String>) -> Self {
        RxError::Reply(text.into().into_bytes())
    }

    /// An error whose bytes already carry its code.
    pub fn coded_bytes(bytes: impl Into<Vec<u8>>) -> Self {
        RxError::Reply(bytes.into())
    }

    /// The reply's bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            RxError::Reply(b) => b,
        }
    }

    pub fn wrong_arity(command: &str) -> Self {
        Self::err(format!("wrong number of arguments for '{command}' command"))
    }

    /// The reply as text (bytes that are not UTF-8 shown as U+FFFD), for logs and checks.
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(self.bytes())
    }
}

impl fmt::Display for RxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

pub type RxResult<T> = Result<T, RxError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn err_prefixes_code_once() {
        assert_eq!(
            RxError::err("Function not found").text(),
            "ERR Function not found"
        );
        assert_eq!(RxError::coded("WRONGTYPE x").text(), "WRONGTYPE x");
        assert_eq!(
            RxError::wrong_arity("rx.call").text(),
            "ERR wrong number of arguments for 'rx.call' command"
        );
    }
}
