//! `numkeys` as FCALL and EVAL parse it.

use crate::error::{RxError, RxResult};

/// Parses numkeys the way FCALL does.
#[inline]
pub fn parse_numkeys(raw_numkeys: &[u8], available: usize) -> RxResult<usize> {
    // The common case, a single digit, without going through str parsing.
    if let [d @ b'0'..=b'9'] = raw_numkeys {
        let n = usize::from(d - b'0');
        if n > available {
            return Err(RxError::err(
                "Number of keys can't be greater than number of args",
            ));
        }
        return Ok(n);
    }
    let n: i64 = std::str::from_utf8(raw_numkeys)
        .ok()
        .filter(|s| {
            !(s.starts_with('+') || (s.len() > 1 && s.starts_with('0')) || s.starts_with("-0"))
        })
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| RxError::err("Bad number of keys provided"))?;
    if n > available as i64 {
        return Err(RxError::err(
            "Number of keys can't be greater than number of args",
        ));
    }
    if n < 0 {
        return Err(RxError::err("Number of keys can't be negative"));
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::parse_numkeys;

    #[test]
    fn numkeys_rules_match_fcall() {
        assert_eq!(parse_numkeys(b"2", 3).unwrap(), 2);
        assert_eq!(parse_numkeys(b"0", 0).unwrap(), 0);
        assert_eq!(
            parse_numkeys(b"-1", 3).unwrap_err().text(),
            "ERR Number of keys can't be negative"
        );
        assert_eq!(
            parse_numkeys(b"4", 3).unwrap_err().text(),
            "ERR Number of keys can't be greater than number of args"
        );
        assert_eq!(
            parse_numkeys(b"x", 3).unwrap_err().text(),
            "ERR Bad number of keys provided"
        );
        assert_eq!(
            parse_numkeys(b"1.5", 3).unwrap_err().text(),
            "ERR Bad number of keys provided"
        );
        assert_eq!(
            parse_numkeys(b"", 3).unwrap_err().text(),
            "ERR Bad number of keys provided"
        );
    }
}
