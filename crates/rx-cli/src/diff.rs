//! A line diff of the deployed code against a file, in unified format (`rx diff`). Pure.
//! Longest common subsequence over lines; libraries are small enough for its
//! quadratic table, and past 4,000 x 4,000 lines it prints the two sides whole instead.

const MAX_CELLS: usize = 16_000_000;
const CONTEXT: usize = 3;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Same,
    Removed,
    Added,
}

fn ops<'a>(old: &[&'a str], new: &[&'a str]) -> Vec<(Op, &'a str)> {
    let (n, m) = (old.len(), new.len());
    if n.saturating_mul(m) > MAX_CELLS {
        let mut v: Vec<_> = old.iter().map(|l| (Op::Removed, *l)).collect();
        v.extend(new.iter().map(|l| (Op::Added, *l)));
        return v;
    }
    // lcs[i][j]: the longest common subsequence of old[i..] and new[j..].
    let mut lcs = vec![0u32; (n + 1) * (m + 1)];
    let at = |i: usize, j: usize| i * (m + 1) + j;
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[at(i, j)] = if old[i] == new[j] {
                lcs[at(i + 1, j + 1)] + 1
            } else {
                lcs[at(i + 1, j)].max(lcs[at(i, j + 1)])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < n || j < m {
        if i < n && j < m && old[i] == new[j] {
            out.push((Op::Same, old[i]));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[at(i, j + 1)] > lcs[at(i + 1, j)]) {
            out.push((Op::Added, new[j]));
            j += 1;
        } else {
            out.push((Op::Removed, old[i]));
            i += 1;
        }
    }
    out
}

/// `old` against `new` with three lines of context around each change, or "" when equal.
pub fn unified(old: &str, new: &str, old_name: &str, new_name: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    let ops = ops(&a, &b);
    if ops.iter().all(|(op, _)| *op == Op::Same) {
        return String::new();
    }
    let mut out = format!("--- {old_name}\n+++ {new_name}\n");
    let changed: Vec<usize> = (0..ops.len()).filter(|&k| ops[k].0 != Op::Same).collect();
    let mut k = 0;
    while k < changed.len() {
        // One hunk: changes no more than 2 * CONTEXT same lines apart.
        let start = changed[k].saturating_sub(CONTEXT);
        let mut end = changed[k];
        while k + 1 < changed.len() && changed[k + 1] - end <= 2 * CONTEXT {
            k += 1;
            end = changed[k];
        }
        let end = (end + CONTEXT + 1).min(ops.len());
        let old_start = ops[..start]
            .iter()
            .filter(|(op, _)| *op != Op::Added)
            .count();
        let new_start = ops[..start]
            .iter()
            .filter(|(op, _)| *op != Op::Removed)
            .count();
        let old_len = ops[start..end]
            .iter()
            .filter(|(op, _)| *op != Op::Added)
            .count();
        let new_len = ops[start..end]
            .iter()
            .filter(|(op, _)| *op != Op::Removed)
            .count();
        out += &format!(
            "@@ -{},{} +{},{} @@\n",
            old_start + 1,
            old_len,
            new_start + 1,
            new_len
        );
        for (op, line) in &ops[start..end] {
            let mark = match op {
                Op::Same => ' ',
                Op::Removed => '-',
                Op::Added => '+',
            };
            out += &format!("{mark}{line}\n");
        }
        k += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_texts_have_no_diff() {
        assert_eq!(unified("a\nb\n", "a\nb\n", "x", "y"), "");
    }

    #[test]
    fn a_changed_line_with_context() {
        let old = "1\n2\n3\n4\n5\n6\n7\n8\n";
        let new = "1\n2\n3\n4\nfive\n6\n7\n8\n";
        assert_eq!(
            unified(old, new, "deployed/a", "a.lua"),
            "--- deployed/a\n+++ a.lua\n@@ -2,7 +2,7 @@\n 2\n 3\n 4\n-5\n+five\n 6\n 7\n 8\n"
        );
    }

    #[test]
    fn from_nothing_everything_is_added() {
        assert_eq!(
            unified("", "x\ny\n", "a", "b"),
            "--- a\n+++ b\n@@ -1,0 +1,2 @@\n+x\n+y\n"
        );
    }
}
