//! Where replies go: the engine converts a script's result into calls on a `ReplySink`,
//! the module glue implements it with the module API, and tests implement it with
//! `RespWriter`, which writes the bytes Redis would send. Pure.

pub trait ReplySink {
    fn simple(&mut self, s: &[u8]);
    /// `s` carries its code (`ERR ...`), without the leading `-`.
    fn error(&mut self, s: &[u8]);
    fn integer(&mut self, v: i64);
    fn bulk(&mut self, s: &[u8]);
    fn null(&mut self);
    fn array(&mut self, len: usize);
    /// `len` is the number of key/value pairs.
    fn map(&mut self, len: usize);
    fn set(&mut self, len: usize);
    fn double(&mut self, v: f64);
    fn boolean(&mut self, v: bool);
    fn big_number(&mut self, s: &[u8]);
    fn verbatim(&mut self, format: &[u8], s: &[u8]);
}

/// An unsigned number (a library version): an integer reply when it fits one, else its
/// decimal digits as a bulk string, never a negative number.
pub fn unsigned(out: &mut dyn ReplySink, v: u64) {
    match i64::try_from(v) {
        Ok(v) => out.integer(v),
        Err(_) => out.bulk(v.to_string().as_bytes()),
    }
}

/// Passes replies through and remembers whether the top-level reply was an error.
pub struct ErrorObserver<'a> {
    inner: &'a mut dyn ReplySink,
    started: bool,
    pub error: Option<String>,
}

impl<'a> ErrorObserver<'a> {
    pub fn new(inner: &'a mut dyn ReplySink) -> Self {
        ErrorObserver {
            inner,
            started: false,
            error: None,
        }
    }

    fn first(&mut self) -> bool {
        !std::mem::replace(&mut self.started, true)
    }
}

impl ReplySink for ErrorObserver<'_> {
    fn simple(&mut self, s: &[u8]) {
        self.first();
        self.inner.simple(s)
    }
    fn error(&mut self, s: &[u8]) {
        if self.first() {
            self.error = Some(String::from_utf8_lossy(s).into_owned());
        }
        self.inner.error(s)
    }
    fn integer(&mut self, v: i64) {
        self.first();
        self.inner.integer(v)
    }
    fn bulk(&mut self, s: &[u8]) {
        self.first();
        self.inner.bulk(s)
    }
    fn null(&mut self) {
        self.first();
        self.inner.null()
    }
    fn array(&mut self, len: usize) {
        self.first();
        self.inner.array(len)
    }
    fn map(&mut self, len: usize) {
        self.first();
        self.inner.map(len)
    }
    fn set(&mut self, len: usize) {
        self.first();
        self.inner.set(len)
    }
    fn double(&mut self, v: f64) {
        self.first();
        self.inner.double(v)
    }
    fn boolean(&mut self, v: bool) {
        self.first();
        self.inner.boolean(v)
    }
    fn big_number(&mut self, s: &[u8]) {
        self.first();
        self.inner.big_number(s)
    }
    fn verbatim(&mut self, f: &[u8], s: &[u8]) {
        self.first();
        self.inner.verbatim(f, s)
    }
}

/// Redis's own rule for status and error lines: CR and LF become spaces.
pub fn single_line(s: &[u8]) -> Vec<u8> {
    s.iter()
        .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b })
        .collect()
}

/// Formats a double the way Redis's `addReplyDouble` does (`%.17g`, and `inf`/`-inf`/`nan`).
pub fn format_double(v: f64) -> String {
    if v.is_nan() {
        "nan".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        }
    } else {
        crate::numfmt::format_g(v, 17)
    }
}

/// Writes replies as RESP bytes, for a client speaking `resp` (2 or 3).
pub struct RespWriter {
    pub out: Vec<u8>,
    pub resp: u8,
}

impl RespWriter {
    pub fn new(resp: u8) -> Self {
        RespWriter {
            out: Vec::new(),
            resp,
        }
    }

    fn line(&mut self, prefix: u8, body: &[u8]) {
        self.out.push(prefix);
        self.out.extend_from_slice(body);
        self.out.extend_from_slice(b"\r\n");
    }
}

impl ReplySink for RespWriter {
    fn simple(&mut self, s: &[u8]) {
        self.line(b'+', &single_line(s));
    }
    fn error(&mut self, s: &[u8]) {
        self.line(b'-', &single_line(s));
    }
    fn integer(&mut self, v: i64) {
        self.line(b':', v.to_string().as_bytes());
    }
    fn bulk(&mut self, s: &[u8]) {
        self.line(b'$', s.len().to_string().as_bytes());
        self.out.extend_from_slice(s);
        self.out.extend_from_slice(b"\r\n");
    }
    fn null(&mut self) {
        if self.resp == 3 {
            self.out.extend_from_slice(b"_\r\n")
        } else {
            self.out.extend_from_slice(b"$-1\r\n")
        }
    }
    fn array(&mut self, len: usize) {
        self.line(b'*', len.to_string().as_bytes());
    }
    fn map(&mut self, len: usize) {
        if self.resp == 3 {
            self.line(b'%', len.to_string().as_bytes())
        } else {
            self.array(len * 2)
        }
    }
    fn set(&mut self, len: usize) {
        if self.resp == 3 {
            self.line(b'~', len.to_string().as_bytes())
        } else {
            self.array(len)
        }
    }
    fn double(&mut self, v: f64) {
        let s = format_double(v);
        if self.resp == 3 {
            self.line(b',', s.as_bytes())
        } else {
            self.bulk(s.as_bytes())
        }
    }
    fn boolean(&mut self, v: bool) {
        if self.resp == 3 {
            self.out
                .extend_from_slice(if v { b"#t\r\n" } else { b"#f\r\n" })
        } else {
            self.integer(v as i64)
        }
    }
    fn big_number(&mut self, s: &[u8]) {
        if self.resp == 3 {
            self.line(b'(', s)
        } else {
            self.bulk(s)
        }
    }
    fn verbatim(&mut self, format: &[u8], s: &[u8]) {
        if self.resp == 3 {
            self.line(b'=', (s.len() + 4).to_string().as_bytes());
            self.out.extend_from_slice(format);
            self.out.push(b':');
            self.out.extend_from_slice(s);
            self.out.extend_from_slice(b"\r\n");
        } else {
            self.bulk(s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_never_negative() {
        let mut w = RespWriter::new(2);
        unsigned(&mut w, 7);
        unsigned(&mut w, i64::MAX as u64);
        unsigned(&mut w, u64::MAX);
        assert_eq!(
            w.out,
            b":7\r\n:9223372036854775807\r\n$20\r\n18446744073709551615\r\n"
        );
    }

    #[test]
    fn resp2_downgrades_like_redis() {
        let mut w = RespWriter::new(2);
        w.map(1);
        w.set(2);
        w.double(1.5);
        w.boolean(false);
        w.null();
        w.verbatim(b"txt", b"hi");
        assert_eq!(w.out, b"*2\r\n*2\r\n$3\r\n1.5\r\n:0\r\n$-1\r\n$2\r\nhi\r\n");
    }

    #[test]
    fn observer_sees_only_a_top_level_error() {
        let mut w = RespWriter::new(2);
        let mut o = ErrorObserver::new(&mut w);
        o.array(1);
        o.error(b"ERR nested");
        assert_eq!(o.error, None);
        let mut w = RespWriter::new(2);
        let mut o = ErrorObserver::new(&mut w);
        o.error(b"WRONGTYPE top");
        assert_eq!(o.error.as_deref(), Some("WRONGTYPE top"));
        assert_eq!(w.out, b"-WRONGTYPE top\r\n");
    }

    #[test]
    fn resp3_native_types() {
        let mut w = RespWriter::new(3);
        w.map(1);
        w.double(f64::INFINITY);
        w.boolean(true);
        w.null();
        w.verbatim(b"txt", b"hi");
        w.error(b"ERR a\r\nb");
        assert_eq!(
            w.out,
            b"%1\r\n,inf\r\n#t\r\n_\r\n=6\r\ntxt:hi\r\n-ERR a  b\r\n"
        );
    }
}
