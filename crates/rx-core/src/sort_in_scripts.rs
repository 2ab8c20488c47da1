//! `SORT ... BY <constant>` on a set, called from a script. `BY` a pattern without `*`
//! means "do not sort", and a set's order is not deterministic, so the servers sort the
//! elements (as if `ALPHA` without `BY`) when a script asks, keeping replicas and the AOF
//! in step (sort.c, "Force ALPHA sorting"). `RedisModule_Call` does not mark its client as
//! a script, so RX rewrites such a call into the command the server runs in its place.
//! Pure: the caller checks that the key holds a set.

/// For `SORT`/`SORT_RO` with at least one constant `BY` pattern and no `STORE` (`STORE`
/// makes the server sort anyway), the arguments (after the command name) the server would
/// run for a script: every `BY <pattern>` pair dropped and `ALPHA` added. A constant `BY`
/// means "do not sort" even when another `BY` has a `*` pattern (sort.c never clears it),
/// so those are dropped too; but a cluster node refuses a `*` pattern before that
/// (`cluster`: leave the command as typed for the server's own error). `None` for any other
/// command, or when the options would not parse (the server then gives its own error).
#[inline]
pub fn forced_alpha_args<'a>(
    name: &[u8],
    args: &[&'a [u8]],
    cluster: bool,
) -> Option<Vec<&'a [u8]>> {
    let read_only = if name.eq_ignore_ascii_case(b"sort") {
        false
    } else if name.eq_ignore_ascii_case(b"sort_ro") {
        true
    } else {
        return None;
    };
    let (&key, options) = args.split_first()?;
    let mut kept: Vec<&'a [u8]> = Vec::with_capacity(args.len() + 1);
    kept.push(key);
    let mut constant_by = false;
    let mut j = 0;
    // The option loop of sortCommandGeneric, as far as it decides which arguments are
    // options and which are their values.
    while j < options.len() {
        let option = options[j];
        let left = options.len() - j - 1;
        let is = |word: &[u8]| option.eq_ignore_ascii_case(word);
        if is(b"asc") || is(b"desc") || is(b"alpha") {
            kept.push(option);
        } else if is(b"limit") && left >= 2 {
            kept.extend_from_slice(&options[j..j + 3]);
            j += 2;
        } else if is(b"store") && !read_only && left >= 1 {
            return None;
        } else if is(b"by") && left >= 1 {
            if !options[j + 1].contains(&b'*') {
                constant_by = true;
            } else if cluster {
                return None;
            }
            j += 1;
        } else if is(b"get") && left >= 1 {
            kept.extend_from_slice(&options[j..j + 2]);
            j += 1;
        } else {
            return None;
        }
        j += 1;
    }
    if !constant_by {
        return None;
    }
    kept.push(b"ALPHA");
    Some(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(name: &str, args: &[&str]) -> Option<Vec<String>> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        forced_alpha_args(name.as_bytes(), &args, false).map(|v| {
            v.iter()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
    }

    #[test]
    fn constant_by_becomes_alpha() {
        assert_eq!(
            rewrite("SORT", &["s", "BY", "nosort"]),
            Some(vec!["s".into(), "ALPHA".into()])
        );
        assert_eq!(
            rewrite(
                "sort_ro",
                &["s", "by", "x", "LIMIT", "0", "2", "GET", "#", "DESC"]
            ),
            Some(
                ["s", "LIMIT", "0", "2", "GET", "#", "DESC", "ALPHA"]
                    .map(String::from)
                    .to_vec()
            )
        );
        // Several constant BYs: all dropped.
        assert_eq!(
            rewrite("Sort", &["s", "BY", "a", "BY", "b"]),
            Some(vec!["s".into(), "ALPHA".into()])
        );
        // A constant BY with a pattern BY, in either order: still not sorted by weights.
        for args in [["s", "BY", "x", "BY", "w_*"], ["s", "BY", "w_*", "BY", "x"]] {
            assert_eq!(
                rewrite("SORT", &args),
                Some(vec!["s".into(), "ALPHA".into()])
            );
        }
        // On a cluster node the pattern is refused first: left as typed.
        let args: Vec<&[u8]> = [&b"s"[..], b"BY", b"x", b"BY", b"w_*"].to_vec();
        assert_eq!(forced_alpha_args(b"SORT", &args, true), None);
    }

    #[test]
    fn everything_else_is_left_as_typed() {
        assert_eq!(rewrite("SORT", &["s"]), None);
        assert_eq!(rewrite("SORT", &["s", "ALPHA"]), None);
        assert_eq!(rewrite("SORT", &["s", "BY", "w_*"]), None);
        assert_eq!(rewrite("SORT", &["s", "BY", "x", "STORE", "d"]), None);
        assert_eq!(rewrite("SORT", &["s", "BY"]), None);
        assert_eq!(rewrite("SORT", &["s", "BY", "x", "LIMIT", "0"]), None);
        assert_eq!(rewrite("SORT", &["s", "BY", "x", "bogus"]), None);
        assert_eq!(rewrite("SORT", &[]), None);
        assert_eq!(rewrite("GET", &["s", "BY", "x"]), None);
        // SORT_RO has no STORE: the server's syntax error stands.
        assert_eq!(rewrite("SORT_RO", &["s", "BY", "x", "STORE", "d"]), None);
    }
}
