//! A RESP2/RESP3 reader over one complete reply, as `RedisModule_CallReplyProto` hands it
//! over. It drives a visitor, so a reply turns into Lua values with no intermediate tree.
//! Reading the protocol (rather than the typed call-reply API) keeps the one distinction
//! that API loses: a status reply (`+OK`) versus a bulk string. Pure.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RespError;

pub trait RespVisitor {
    fn status(&mut self, s: &[u8]);
    fn error(&mut self, s: &[u8]);
    fn integer(&mut self, v: i64);
    fn bulk(&mut self, s: &[u8]);
    /// A RESP2 null bulk string or null array.
    fn null_resp2(&mut self);
    /// RESP3 `_`.
    fn null(&mut self);
    fn double(&mut self, v: f64);
    fn boolean(&mut self, v: bool);
    fn big_number(&mut self, s: &[u8]);
    fn verbatim(&mut self, format: &[u8], s: &[u8]);
    fn begin_array(&mut self, len: usize);
    /// Called after element `index` (1-based) of the innermost array was visited.
    fn array_element(&mut self, index: usize);
    fn end_array(&mut self) {}
    fn begin_map(&mut self, len: usize);
    /// Called after a key and its value were visited.
    fn map_entry(&mut self);
    fn end_map(&mut self);
    fn begin_set(&mut self, len: usize);
    /// Called after a member was visited.
    fn set_member(&mut self);
    fn end_set(&mut self);
}

/// The length of the one complete reply at the start of `buf`.
pub fn frame_len(buf: &[u8]) -> Result<usize, RespError> {
    visit(buf, &mut Skip)
}

/// Visits exactly one reply at the start of `buf`; returns the bytes consumed.
pub fn visit<V: RespVisitor>(buf: &[u8], visitor: &mut V) -> Result<usize, RespError> {
    let mut r = Reader { buf, pos: 0 };
    r.value(visitor)?;
    Ok(r.pos)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn line(&mut self) -> Result<&'a [u8], RespError> {
        let rest = self.buf.get(self.pos..).ok_or(RespError)?;
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or(RespError)?;
        self.pos += end + 2;
        Ok(&rest[..end])
    }

    fn int_line(&mut self) -> Result<i64, RespError> {
        parse_i64(self.line()?).ok_or(RespError)
    }

    fn len_line(&mut self) -> Result<Option<usize>, RespError> {
        let n = self.int_line()?;
        if n < 0 {
            return Ok(None);
        }
        usize::try_from(n).map(Some).map_err(|_| RespError)
    }

    fn blob(&mut self, len: usize) -> Result<&'a [u8], RespError> {
        let end = self.pos.checked_add(len).ok_or(RespError)?;
        let s = self.buf.get(self.pos..end).ok_or(RespError)?;
        if self.buf.get(end..end + 2) != Some(b"\r\n") {
            return Err(RespError);
        }
        self.pos = end + 2;
        Ok(s)
    }

    fn value<V: RespVisitor>(&mut self, v: &mut V) -> Result<(), RespError> {
        let kind = *self.buf.get(self.pos).ok_or(RespError)?;
        self.pos += 1;
        match kind {
            b'+' => v.status(self.line()?),
            b'-' => v.error(self.line()?),
            b':' => v.integer(self.int_line()?),
            b'$' => match self.len_line()? {
                None => v.null_resp2(),
                Some(n) => v.bulk(self.blob(n)?),
            },
            b'*' => match self.len_line()? {
                None => v.null_resp2(),
                Some(n) => {
                    v.begin_array(n);
                    for i in 1..=n {
                        self.value(v)?;
                        v.array_element(i);
                    }
                    v.end_array();
                }
            },
            b'_' => {
                self.line()?;
                v.null();
            }
            b',' => {
                let l = self.line()?;
                v.double(parse_double(l)?);
            }
            b'#' => {
                let l = self.line()?;
                v.boolean(l == b"t");
            }
            b'(' => v.big_number(self.line()?),
            b'=' => {
                let n = self.len_line()?.ok_or(RespError)?;
                let body = self.blob(n)?;
                if body.len() < 4 || body[3] != b':' {
                    return Err(RespError);
                }
                v.verbatim(&body[..3], &body[4..]);
            }
            b'%' => {
                let n = self.len_line()?.ok_or(RespError)?;
                v.begin_map(n);
                for _ in 0..n {
                    self.value(v)?;
                    self.value(v)?;
                    v.map_entry();
                }
                v.end_map();
            }
            b'~' => {
                let n = self.len_line()?.ok_or(RespError)?;
                v.begin_set(n);
                for _ in 0..n {
                    self.value(v)?;
                    v.set_member();
                }
                v.end_set();
            }
            b'|' => {
                // Attributes annotate the reply that follows; scripts never see them.
                let n = self.len_line()?.ok_or(RespError)?;
                let mut skip = Skip;
                for _ in 0..2 * n {
                    self.value(&mut skip)?;
                }
                self.value(v)?;
            }
            _ => return Err(RespError),
        }
        Ok(())
    }
}

fn parse_double(l: &[u8]) -> Result<f64, RespError> {
    match l {
        b"inf" => Ok(f64::INFINITY),
        b"-inf" => Ok(f64::NEG_INFINITY),
        b"nan" | b"-nan" => Ok(f64::NAN),
        _ => std::str::from_utf8(l)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(RespError),
    }
}

/// A reply as an owned tree, for cold paths that need to look around (RESP2 shapes: maps
/// and sets arrive as flat lists).
#[derive(Debug, Clone, PartialEq)]
pub enum Tree {
    Str(Vec<u8>),
    Error(Vec<u8>),
    Int(i64),
    Null,
    List(Vec<Tree>),
}

impl Tree {
    /// In a flat key/value list, the value that follows `key`.
    pub fn field(&self, key: &[u8]) -> Option<&Tree> {
        match self {
            Tree::List(items) => items
                .chunks(2)
                .find(|kv| kv[0] == Tree::Str(key.to_vec()))
                .and_then(|kv| kv.get(1)),
            _ => None,
        }
    }
}

/// Reads one reply into a `Tree`.
pub fn parse_tree(buf: &[u8]) -> Result<Tree, RespError> {
    let mut b = TreeBuilder {
        stack: vec![Vec::new()],
    };
    visit(buf, &mut b)?;
    b.stack.pop().and_then(|mut top| top.pop()).ok_or(RespError)
}

struct TreeBuilder {
    stack: Vec<Vec<Tree>>,
}

impl TreeBuilder {
    fn push(&mut self, t: Tree) {
        if let Some(top) = self.stack.last_mut() {
            top.push(t);
        }
    }
    fn open(&mut self) {
        self.stack.push(Vec::new());
    }
    fn close(&mut self) {
        if self.stack.len() > 1 {
            let items = self.stack.pop().unwrap_or_default();
            self.push(Tree::List(items));
        }
    }
}

impl RespVisitor for TreeBuilder {
    fn status(&mut self, s: &[u8]) {
        self.push(Tree::Str(s.to_vec()))
    }
    fn error(&mut self, s: &[u8]) {
        self.push(Tree::Error(s.to_vec()))
    }
    fn integer(&mut self, v: i64) {
        self.push(Tree::Int(v))
    }
    fn bulk(&mut self, s: &[u8]) {
        self.push(Tree::Str(s.to_vec()))
    }
    fn null_resp2(&mut self) {
        self.push(Tree::Null)
    }
    fn null(&mut self) {
        self.push(Tree::Null)
    }
    fn double(&mut self, v: f64) {
        self.push(Tree::Str(v.to_string().into_bytes()))
    }
    fn boolean(&mut self, v: bool) {
        self.push(Tree::Int(v as i64))
    }
    fn big_number(&mut self, s: &[u8]) {
        self.push(Tree::Str(s.to_vec()))
    }
    fn verbatim(&mut self, _: &[u8], s: &[u8]) {
        self.push(Tree::Str(s.to_vec()))
    }
    fn begin_array(&mut self, _: usize) {
        self.open()
    }
    fn array_element(&mut self, _: usize) {}
    fn end_array(&mut self) {
        self.close()
    }
    fn begin_map(&mut self, _: usize) {
        self.open()
    }
    fn map_entry(&mut self) {}
    fn end_map(&mut self) {
        self.close()
    }
    fn begin_set(&mut self, _: usize) {
        self.open()
    }
    fn set_member(&mut self) {}
    fn end_set(&mut self) {
        self.close()
    }
}

struct Skip;

impl RespVisitor for Skip {
    fn status(&mut self, _: &[u8]) {}
    fn error(&mut self, _: &[u8]) {}
    fn integer(&mut self, _: i64) {}
    fn bulk(&mut self, _: &[u8]) {}
    fn null_resp2(&mut self) {}
    fn null(&mut self) {}
    fn double(&mut self, _: f64) {}
    fn boolean(&mut self, _: bool) {}
    fn big_number(&mut self, _: &[u8]) {}
    fn verbatim(&mut self, _: &[u8], _: &[u8]) {}
    fn begin_array(&mut self, _: usize) {}
    fn array_element(&mut self, _: usize) {}
    fn begin_map(&mut self, _: usize) {}
    fn map_entry(&mut self) {}
    fn end_map(&mut self) {}
    fn begin_set(&mut self, _: usize) {}
    fn set_member(&mut self) {}
    fn end_set(&mut self) {}
}

/// A RESP integer line: an optional `-`, then decimal digits that fit an i64.
/// A reply that is one integer or one bulk string: the commonest replies to a script's
/// commands, read without the general reader (`visit`), whose code is larger.
#[derive(Debug, PartialEq, Eq)]
pub enum Scalar<'a> {
    Integer(i64),
    Bulk(&'a [u8]),
}

/// `proto` as a `Scalar` when it is exactly one integer or one (non-null) bulk string;
/// `None` for anything else, odd input included: `visit` reads those as it always does.
pub fn scalar(proto: &[u8]) -> Option<Scalar<'_>> {
    let (&kind, rest) = proto.split_first()?;
    match kind {
        b':' => parse_i64(rest.strip_suffix(b"\r\n")?).map(Scalar::Integer),
        b'$' => {
            let cr = rest.iter().position(|&b| b == b'\r')?;
            let len = usize::try_from(parse_i64(&rest[..cr])?).ok()?;
            let body = rest[cr + 1..].strip_prefix(b"\n")?.strip_suffix(b"\r\n")?;
            (body.len() == len).then_some(Scalar::Bulk(body))
        }
        _ => None,
    }
}

fn parse_i64(line: &[u8]) -> Option<i64> {
    let (negative, digits) = match line.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, line),
    };
    if digits.is_empty() {
        return None;
    }
    // Accumulate negatively so i64::MIN fits.
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_sub(i64::from(d - b'0'))?;
    }
    if negative {
        Some(n)
    } else {
        n.checked_neg()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn integer_lines() {
        use super::parse_i64;
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-12"), Some(-12));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        for bad in [&b""[..], b"-", b"+1", b"1x", b" 1", b"1.0"] {
            assert_eq!(parse_i64(bad), None, "{bad:?}");
        }
    }

    use super::*;

    #[test]
    fn scalar_reads_exactly_one_integer_or_bulk_and_leaves_the_rest_to_visit() {
        assert_eq!(scalar(b":42\r\n"), Some(Scalar::Integer(42)));
        assert_eq!(
            scalar(b":-9223372036854775808\r\n"),
            Some(Scalar::Integer(i64::MIN))
        );
        assert_eq!(scalar(b"$3\r\nabc\r\n"), Some(Scalar::Bulk(b"abc")));
        assert_eq!(scalar(b"$0\r\n\r\n"), Some(Scalar::Bulk(b"")));
        assert_eq!(scalar(b"$4\r\na\r\nb\r\n"), Some(Scalar::Bulk(b"a\r\nb")));
        for odd in [
            &b""[..],
            b":",
            b":42",
            b":42\r\n:1\r\n",
            b":4x\r\n",
            b":9223372036854775808\r\n",
            b"$-1\r\n",
            b"$3\r\nab\r\n",
            b"$3\r\nabcd\r\n",
            b"$3\nabc\r\n",
            b"$3\r\nabc",
            b"+OK\r\n",
            b"*1\r\n:1\r\n",
        ] {
            assert_eq!(scalar(odd), None, "{odd:?}");
        }
    }

    /// Records events as a compact string, to assert on the visit order.
    #[derive(Default)]
    struct Trace(String);

    impl RespVisitor for Trace {
        fn status(&mut self, s: &[u8]) {
            self.0 += &format!("ok({}) ", String::from_utf8_lossy(s));
        }
        fn error(&mut self, s: &[u8]) {
            self.0 += &format!("err({}) ", String::from_utf8_lossy(s));
        }
        fn integer(&mut self, v: i64) {
            self.0 += &format!("int({v}) ");
        }
        fn bulk(&mut self, s: &[u8]) {
            self.0 += &format!("bulk({:?}) ", s);
        }
        fn null_resp2(&mut self) {
            self.0 += "nil2 ";
        }
        fn null(&mut self) {
            self.0 += "nil3 ";
        }
        fn double(&mut self, v: f64) {
            self.0 += &format!("dbl({v}) ");
        }
        fn boolean(&mut self, v: bool) {
            self.0 += &format!("bool({v}) ");
        }
        fn big_number(&mut self, s: &[u8]) {
            self.0 += &format!("big({}) ", String::from_utf8_lossy(s));
        }
        fn verbatim(&mut self, f: &[u8], s: &[u8]) {
            self.0 += &format!(
                "verb({},{}) ",
                String::from_utf8_lossy(f),
                String::from_utf8_lossy(s)
            );
        }
        fn begin_array(&mut self, n: usize) {
            self.0 += &format!("[{n} ");
        }
        fn array_element(&mut self, i: usize) {
            self.0 += &format!("@{i} ");
        }
        fn end_array(&mut self) {
            self.0 += "] ";
        }
        fn begin_map(&mut self, n: usize) {
            self.0 += &format!("{{{n} ");
        }
        fn map_entry(&mut self) {
            self.0 += "kv ";
        }
        fn end_map(&mut self) {
            self.0 += "} ";
        }
        fn begin_set(&mut self, n: usize) {
            self.0 += &format!("~{n} ");
        }
        fn set_member(&mut self) {
            self.0 += "m ";
        }
        fn end_set(&mut self) {
            self.0 += "~ ";
        }
    }

    fn trace(buf: &[u8]) -> (String, usize) {
        let mut t = Trace::default();
        let n = visit(buf, &mut t).unwrap();
        (t.0.trim_end().to_string(), n)
    }

    #[test]
    fn resp2_scalars_and_status_vs_bulk() {
        assert_eq!(trace(b"+OK\r\n").0, "ok(OK)");
        assert_eq!(trace(b"$2\r\nOK\r\n").0, "bulk([79, 75])");
        assert_eq!(trace(b"-WRONGTYPE x\r\n").0, "err(WRONGTYPE x)");
        assert_eq!(trace(b":-42\r\n").0, "int(-42)");
        assert_eq!(trace(b"$-1\r\n").0, "nil2");
        assert_eq!(trace(b"*-1\r\n").0, "nil2");
    }

    #[test]
    fn binary_bulk_with_crlf_inside() {
        assert_eq!(
            trace(b"$4\r\n\r\n\x00\xff\r\n"),
            ("bulk([13, 10, 0, 255])".into(), 10)
        );
    }

    #[test]
    fn nested_arrays() {
        assert_eq!(
            trace(b"*2\r\n:1\r\n*1\r\n$-1\r\n").0,
            "[2 int(1) @1 [1 nil2 @1 ] @2 ]"
        );
    }

    #[test]
    fn resp3_types() {
        assert_eq!(trace(b"%1\r\n+a\r\n:1\r\n").0, "{1 ok(a) int(1) kv }");
        assert_eq!(trace(b"~2\r\n:1\r\n:2\r\n").0, "~2 int(1) m int(2) m ~");
        assert_eq!(trace(b",1.5\r\n").0, "dbl(1.5)");
        assert_eq!(trace(b",-inf\r\n").0, "dbl(-inf)");
        assert_eq!(trace(b"#t\r\n").0, "bool(true)");
        assert_eq!(
            trace(b"(123456789012345678901234567890\r\n").0,
            "big(123456789012345678901234567890)"
        );
        assert_eq!(trace(b"=7\r\ntxt:abc\r\n").0, "verb(txt,abc)");
        assert_eq!(trace(b"_\r\n").0, "nil3");
        assert_eq!(trace(b"|1\r\n+k\r\n+v\r\n:5\r\n").0, "int(5)");
    }

    #[test]
    fn tree_of_a_function_list() {
        let t = parse_tree(
            b"*1\r\n*4\r\n$12\r\nlibrary_name\r\n$1\r\na\r\n$12\r\nlibrary_code\r\n$3\r\nx\ny\r\n",
        )
        .unwrap();
        let Tree::List(libs) = &t else {
            panic!("{t:?}")
        };
        assert_eq!(
            libs[0].field(b"library_code"),
            Some(&Tree::Str(b"x\ny".to_vec()))
        );
        assert_eq!(libs[0].field(b"nope"), None);
        assert_eq!(parse_tree(b"*0\r\n").unwrap(), Tree::List(vec![]));
        assert_eq!(parse_tree(b":5\r\n").unwrap(), Tree::Int(5));
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            b"$5\r\nab\r\n",
            b"*2\r\n:1\r\n",
            b"?x\r\n",
            b":x\r\n",
            b"=2\r\nab\r\n",
            b"$-5\r\n",
        ] {
            let mut t = Trace::default();
            let r = visit(bad, &mut t);
            if bad == b"$-5\r\n" {
                assert!(r.is_ok());
            } else {
                assert_eq!(r, Err(RespError), "{bad:?}");
            }
        }
    }
}
