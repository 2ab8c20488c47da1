//! Tests of the bundled standard libraries `ecommerce`, `cart` and `counter`
//! (lua-stdlib/*.lua). Each library is loaded both natively (`FUNCTION LOAD`) and into RX
//! (`RX.LOAD`) on the same server; the native registry is the portability check and the
//! reference for RX's replies.

mod common;

use common::stdlib::{
    call_function, field, fields, int_field, load_natively_and_into_rx, text_field,
};
use common::{wait_until, Conn, Reply, Server};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const ECOMMERCE: &str = include_str!("../lua-stdlib/ecommerce.lua");
const CART: &str = include_str!("../lua-stdlib/cart.lua");
const COUNTER: &str = include_str!("../lua-stdlib/counter.lua");

const LIBS: [(&str, &str); 3] = [
    ("ecommerce", ECOMMERCE),
    ("cart", CART),
    ("counter", COUNTER),
];

/// Functions flagged `no-writes`: called through FCALL_RO / RX.CALL_RO.
const READ_ONLY: [&str; 3] = ["ecommerce_product_stats", "cart_get", "counter_total"];

const NO: &[&str] = &[];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Eng {
    Native,
    Rx,
}

/// Server with all three libraries loaded in both registries, and a RESP3 connection.
fn setup() -> (Server, Conn) {
    let s = Server::start();
    let mut c = s.conn();
    load_natively_and_into_rx(&mut c, &LIBS);
    c.q(&["HELLO", "3"]).ok();
    (s, c)
}

fn call<K: AsRef<str>, A: AsRef<str>>(
    c: &mut Conn,
    e: Eng,
    f: &str,
    keys: &[K],
    args: &[A],
) -> Reply {
    let ro = READ_ONLY.contains(&f);
    let cmd = match (e, ro) {
        (Eng::Native, false) => "FCALL",
        (Eng::Native, true) => "FCALL_RO",
        (Eng::Rx, false) => "RX.CALL",
        (Eng::Rx, true) => "RX.CALL_RO",
    };
    call_function(c, cmd, f, keys, args)
}

/// Canonical form: map fields sorted by key (engines may order map fields differently).
fn canon(r: &Reply) -> Reply {
    match r {
        Reply::Map(pairs) => {
            let mut p: Vec<(Reply, Reply)> =
                pairs.iter().map(|(k, v)| (canon(k), canon(v))).collect();
            p.sort_by(|a, b| format!("{:?}", a.0).cmp(&format!("{:?}", b.0)));
            Reply::Map(p)
        }
        Reply::Array(v) => Reply::Array(v.iter().map(canon).collect()),
        other => other.clone(),
    }
}

fn key(tag: &str, name: &str) -> String {
    format!("{{{tag}}}:{name}")
}

fn purchase_keys(tag: &str, user: &str) -> Vec<String> {
    vec![
        key(tag, "stock:p1"),
        key(tag, "sold:p1"),
        key(tag, "order_seq"),
        key(tag, "orders"),
        key(tag, &format!("history:{user}")),
        key(tag, "stats:p1"),
    ]
}

fn cancel_keys(tag: &str) -> Vec<String> {
    vec![
        key(tag, "stock:p1"),
        key(tag, "sold:p1"),
        key(tag, "orders"),
        key(tag, "stats:p1"),
    ]
}

fn stats_keys(tag: &str) -> Vec<String> {
    vec![
        key(tag, "stock:p1"),
        key(tag, "sold:p1"),
        key(tag, "stats:p1"),
    ]
}

fn get_int(c: &mut Conn, k: &str) -> i64 {
    c.q(&["GET", k]).as_str().unwrap().parse().unwrap()
}

fn all_keys(c: &mut Conn) -> BTreeSet<String> {
    c.q(&["KEYS", "*"])
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect()
}

/// Dump of every key (type + content), to prove failed calls change nothing.
fn snapshot(c: &mut Conn) -> BTreeMap<String, Reply> {
    let mut m = BTreeMap::new();
    for k in all_keys(c) {
        let v = c.q(&["DUMP", &k]);
        let ttl = c.q(&["PTTL", &k]).as_int().unwrap() > 0;
        m.insert(k, Reply::Array(vec![v, Reply::Bool(ttl)]));
    }
    m
}

/// Runs one failing call on both engines: same exact error text, no key changed.
fn expect_err<K: AsRef<str>, A: AsRef<str>>(
    c: &mut Conn,
    f: &str,
    keys: &[K],
    args: &[A],
    want: &str,
) {
    for e in [Eng::Native, Eng::Rx] {
        let before = snapshot(c);
        let r = call(c, e, f, keys, args);
        assert_eq!(
            r.err_text(),
            Some(want),
            "{e:?} {f} {:?}",
            args.iter().map(|a| a.as_ref()).collect::<Vec<_>>()
        );
        assert_eq!(snapshot(c), before, "{e:?} {f}: a failed call changed keys");
    }
}

#[test]
fn libraries_load_in_both_registries_with_the_same_listing() {
    let s = Server::start();
    let mut c = s.conn();
    load_natively_and_into_rx(&mut c, &LIBS);
    // Function names, descriptions and flags are the same in both listings.
    for (name, _) in LIBS {
        let funcs = |r: Reply| -> Vec<Reply> {
            let libs = r.as_array().unwrap().to_vec();
            assert_eq!(libs.len(), 1, "{name}");
            let mut fs: Vec<Reply> = field(&libs[0], "functions").as_array().unwrap().to_vec();
            fs.sort_by_key(|f| format!("{f:?}"));
            fs
        };
        let native = funcs(c.q(&["FUNCTION", "LIST", "LIBRARYNAME", name]));
        let rx = funcs(c.q(&["RX.LIST", "LIBRARYNAME", name]));
        assert_eq!(native, rx, "{name}");
        for f in &native {
            let fname = text_field(f, "name");
            assert!(fname.starts_with(&format!("{name}_")), "{fname}");
            let flags = field(f, "flags");
            let ro = READ_ONLY.contains(&fname.as_str());
            let want = if ro {
                vec![Reply::Status("no-writes".into())]
            } else {
                vec![]
            };
            assert_eq!(flags.as_array().unwrap().to_vec(), want, "{fname}");
            assert!(!text_field(f, "description").is_empty(), "{fname}");
        }
    }
    // Write functions are refused by the read-only call commands.
    let r = c.q(&["RX.CALL_RO", "counter_incr", "1", "k", "1", "5"]);
    assert!(r.is_error(), "{r:?}");
    let n = c.q(&["FCALL_RO", "counter_incr", "1", "k", "1", "5"]);
    assert_eq!(r, n);
}

#[test]
fn ecommerce_purchase_cancel_and_stats() {
    let (_s, mut c) = setup();
    for (e, t) in [(Eng::Rx, "r"), (Eng::Native, "n")] {
        c.q(&["SET", &key(t, "stock:p1"), "10"]).ok();
        let r = call(
            &mut c,
            e,
            "ecommerce_purchase",
            &purchase_keys(t, "alice"),
            &["alice", "p1", "3", "250"],
        )
        .ok();
        assert_eq!(
            fields(&r),
            ["order_id", "price", "product", "quantity", "sold", "stock", "total", "user"]
        );
        assert_eq!(int_field(&r, "order_id"), 1);
        assert_eq!(int_field(&r, "stock"), 7);
        assert_eq!(int_field(&r, "sold"), 3);
        assert_eq!(int_field(&r, "total"), 750);
        assert_eq!(int_field(&r, "price"), 250);
        assert_eq!(int_field(&r, "quantity"), 3);
        assert_eq!(text_field(&r, "user"), "alice");
        assert_eq!(text_field(&r, "product"), "p1");
        let r = call(
            &mut c,
            e,
            "ecommerce_purchase",
            &purchase_keys(t, "bob"),
            &["bob", "p1", "2", "250"],
        )
        .ok();
        assert_eq!(int_field(&r, "order_id"), 2);
        assert_eq!(int_field(&r, "stock"), 5);
        // Effects on keys.
        assert_eq!(get_int(&mut c, &key(t, "stock:p1")), 5);
        assert_eq!(get_int(&mut c, &key(t, "sold:p1")), 5);
        assert_eq!(get_int(&mut c, &key(t, "order_seq")), 2);
        assert_eq!(
            c.q(&["LRANGE", &key(t, "history:alice"), "0", "-1"]),
            Reply::Array(vec![Reply::Bulk(b"1".to_vec())])
        );
        assert_eq!(
            c.q(&["LRANGE", &key(t, "history:bob"), "0", "-1"]),
            Reply::Array(vec![Reply::Bulk(b"2".to_vec())])
        );
        let o = c.q(&["HGETALL", &key(t, "orders")]);
        assert_eq!(text_field(&o, "1:status"), "placed");
        assert_eq!(text_field(&o, "1:user"), "alice");
        assert_eq!(text_field(&o, "1:product"), "p1");
        assert_eq!(text_field(&o, "1:quantity"), "3");
        assert_eq!(text_field(&o, "1:price"), "250");
        assert_eq!(text_field(&o, "1:total"), "750");
        assert_eq!(text_field(&o, "1:cancelled_ms"), "0");
        assert!(text_field(&o, "1:created_ms").parse::<i64>().unwrap() > 1_600_000_000_000);
        assert_eq!(text_field(&o, "2:user"), "bob");
        let st = call(&mut c, e, "ecommerce_product_stats", &stats_keys(t), NO).ok();
        assert_eq!(
            fields(&st),
            ["cancelled", "orders", "revenue", "sold", "stock"]
        );
        assert_eq!(
            (
                int_field(&st, "stock"),
                int_field(&st, "sold"),
                int_field(&st, "orders"),
                int_field(&st, "cancelled"),
                int_field(&st, "revenue")
            ),
            (5, 5, 2, 0, 1250)
        );

        // Cancel restores stock exactly once.
        let r = call(&mut c, e, "ecommerce_cancel", &cancel_keys(t), &["1"]).ok();
        assert_eq!(
            fields(&r),
            ["order_id", "product", "quantity", "refund", "sold", "status", "stock", "user"]
        );
        assert_eq!(int_field(&r, "order_id"), 1);
        assert_eq!(text_field(&r, "status"), "cancelled");
        assert_eq!(int_field(&r, "quantity"), 3);
        assert_eq!(int_field(&r, "refund"), 750);
        assert_eq!(int_field(&r, "stock"), 8);
        assert_eq!(int_field(&r, "sold"), 2);
        let o = c.q(&["HGETALL", &key(t, "orders")]);
        assert_eq!(text_field(&o, "1:status"), "cancelled");
        assert!(text_field(&o, "1:cancelled_ms").parse::<i64>().unwrap() > 1_600_000_000_000);
        assert_eq!(text_field(&o, "2:status"), "placed");
        expect_err(
            &mut c,
            "ecommerce_cancel",
            &cancel_keys(t),
            &["1"],
            "ERR order already cancelled",
        );
        assert_eq!(get_int(&mut c, &key(t, "stock:p1")), 8);
        let st = call(&mut c, e, "ecommerce_product_stats", &stats_keys(t), NO).ok();
        assert_eq!(
            (
                int_field(&st, "stock"),
                int_field(&st, "sold"),
                int_field(&st, "orders"),
                int_field(&st, "cancelled"),
                int_field(&st, "revenue")
            ),
            (8, 2, 1, 1, 500)
        );
        // Buying exactly the remaining stock works; one more does not.
        let r = call(
            &mut c,
            e,
            "ecommerce_purchase",
            &purchase_keys(t, "alice"),
            &["alice", "p1", "8", "0"],
        )
        .ok();
        assert_eq!(
            (
                int_field(&r, "stock"),
                int_field(&r, "order_id"),
                int_field(&r, "total")
            ),
            (0, 3, 0)
        );
        expect_err(
            &mut c,
            "ecommerce_purchase",
            &purchase_keys(t, "alice"),
            &["alice", "p1", "1", "1"],
            "ERR insufficient stock",
        );
    }
}

#[test]
fn ecommerce_validation_errors() {
    let (_s, mut c) = setup();
    let t = "v";
    c.q(&["SET", &key(t, "stock:p1"), "5"]).ok();
    let pk = purchase_keys(t, "u");
    let f = "ecommerce_purchase";
    expect_err(
        &mut c,
        f,
        &pk[..5],
        &["u", "p1", "1", "1"],
        "ERR wrong number of keys",
    );
    expect_err(
        &mut c,
        f,
        &pk,
        &["u", "p1", "1"],
        "ERR wrong number of arguments",
    );
    expect_err(
        &mut c,
        f,
        &pk,
        &["", "p1", "1", "1"],
        "ERR user must not be empty",
    );
    expect_err(
        &mut c,
        f,
        &pk,
        &["u", "", "1", "1"],
        "ERR product must not be empty",
    );
    for q in [
        "0",
        "-1",
        "1.5",
        "abc",
        "",
        "01",
        "+1",
        "1e3",
        "1234567890123456",
    ] {
        expect_err(
            &mut c,
            f,
            &pk,
            &["u", "p1", q, "1"],
            "ERR quantity must be a positive integer",
        );
    }
    for p in ["-1", "2.50", "x", "", "007"] {
        expect_err(
            &mut c,
            f,
            &pk,
            &["u", "p1", "1", p],
            "ERR price must be a non-negative integer",
        );
    }
    expect_err(
        &mut c,
        f,
        &pk,
        &["u", "p1", "999999999999999", "999999999999999"],
        "ERR total is too large",
    );
    expect_err(
        &mut c,
        f,
        &pk,
        &["u", "p1", "6", "1"],
        "ERR insufficient stock",
    );
    let missing = purchase_keys("other", "u");
    expect_err(
        &mut c,
        f,
        &missing,
        &["u", "p1", "1", "1"],
        "ERR product not found",
    );
    // Wrong types and non-integer values are refused before anything is written.
    c.q(&["SET", &key(t, "sold:p1"), "lots"]).ok();
    expect_err(
        &mut c,
        f,
        &pk,
        &["u", "p1", "1", "1"],
        "ERR value at key is not an integer",
    );
    c.q(&["DEL", &key(t, "sold:p1")]).ok();
    c.q(&["SET", &key(t, "history:u"), "x"]).ok();
    expect_err(
        &mut c,
        f,
        &pk,
        &["u", "p1", "1", "1"],
        "ERR key holds the wrong kind of value",
    );
    c.q(&["DEL", &key(t, "history:u")]).ok();
    c.q(&["HSET", &key(t, "orders"), "1:status", "placed"]).ok();
    expect_err(
        &mut c,
        f,
        &pk,
        &["u", "p1", "1", "1"],
        "ERR order id already exists",
    );
    c.q(&["DEL", &key(t, "orders")]).ok();
    c.q(&["HSET", &key(t, "stats:p1"), "revenue", "9007199254740990"])
        .ok();
    expect_err(
        &mut c,
        f,
        &pk,
        &["u", "p1", "1", "5"],
        "ERR total is too large",
    );
    c.q(&["DEL", &key(t, "stats:p1")]).ok();

    // Cancel.
    let ck = cancel_keys(t);
    let f = "ecommerce_cancel";
    expect_err(&mut c, f, &ck[..3], &["1"], "ERR wrong number of keys");
    expect_err(&mut c, f, &ck, NO, "ERR wrong number of arguments");
    for id in ["0", "x", "-1", ""] {
        expect_err(
            &mut c,
            f,
            &ck,
            &[id],
            "ERR order id must be a positive integer",
        );
    }
    expect_err(&mut c, f, &ck, &["1"], "ERR order not found");
    call(
        &mut c,
        Eng::Rx,
        "ecommerce_purchase",
        &pk,
        &["u", "p1", "1", "1"],
    )
    .ok();
    let mut wrong = ck.clone();
    wrong[0] = key(t, "stock:p2");
    expect_err(&mut c, f, &wrong, &["1"], "ERR keys do not match the order");
    c.q(&["HSET", &key(t, "orders"), "1:quantity", "many"]).ok();
    expect_err(&mut c, f, &ck, &["1"], "ERR order record is corrupt");

    // Stats.
    let f = "ecommerce_product_stats";
    let sk = stats_keys(t);
    expect_err(&mut c, f, &sk[..2], NO, "ERR wrong number of keys");
    expect_err(&mut c, f, &sk, &["x"], "ERR wrong number of arguments");
    expect_err(&mut c, f, &stats_keys("other"), NO, "ERR product not found");
    c.q(&["SET", &key(t, "stats:p1"), "x"]).ok();
    expect_err(&mut c, f, &sk, NO, "ERR key holds the wrong kind of value");
}

fn cart_keys(t: &str, p: &str) -> Vec<String> {
    vec![key(t, "cart:alice"), key(t, &format!("stock:{p}"))]
}

#[test]
fn cart_add_remove_get_clear() {
    let (_s, mut c) = setup();
    for (e, t) in [(Eng::Rx, "r"), (Eng::Native, "n")] {
        let cart = key(t, "cart:alice");
        let prices = key(t, "prices");
        c.q(&["SET", &key(t, "stock:p1"), "5"]).ok();
        c.q(&["SET", &key(t, "stock:p2"), "3"]).ok();
        c.q(&["HSET", &prices, "p1", "100", "p2", "250"]).ok();
        let r = call(
            &mut c,
            e,
            "cart_add",
            &cart_keys(t, "p1"),
            &["p1", "2", "60"],
        )
        .ok();
        assert_eq!(fields(&r), ["items", "product", "quantity", "ttl"]);
        assert_eq!(
            (
                int_field(&r, "quantity"),
                int_field(&r, "items"),
                int_field(&r, "ttl")
            ),
            (2, 1, 60)
        );
        let r = call(
            &mut c,
            e,
            "cart_add",
            &cart_keys(t, "p1"),
            &["p1", "3", "60"],
        )
        .ok();
        assert_eq!((int_field(&r, "quantity"), int_field(&r, "items")), (5, 1));
        // The cart never holds more than the stock.
        expect_err(
            &mut c,
            "cart_add",
            &cart_keys(t, "p1"),
            &["p1", "1", "60"],
            "ERR insufficient stock",
        );
        c.q(&["EXPIRE", &cart, "10"]).ok();
        // Adding refreshes the TTL.
        let r = call(
            &mut c,
            e,
            "cart_add",
            &cart_keys(t, "p2"),
            &["p2", "1", "120"],
        )
        .ok();
        assert_eq!(
            (
                int_field(&r, "quantity"),
                int_field(&r, "items"),
                int_field(&r, "ttl")
            ),
            (1, 2, 120)
        );
        let ttl = c.q(&["TTL", &cart]).as_int().unwrap();
        assert!((119..=120).contains(&ttl), "{ttl}");
        assert_eq!(
            canon(&c.q(&["HGETALL", &cart])),
            canon(&Reply::Map(vec![
                (Reply::Bulk(b"p1".to_vec()), Reply::Bulk(b"5".to_vec())),
                (Reply::Bulk(b"p2".to_vec()), Reply::Bulk(b"1".to_vec())),
            ]))
        );
        let g = call(&mut c, e, "cart_get", &[cart.clone(), prices.clone()], NO).ok();
        assert_eq!(fields(&g), ["items", "lines", "quantity", "total", "ttl"]);
        assert_eq!(
            (
                int_field(&g, "lines"),
                int_field(&g, "quantity"),
                int_field(&g, "total")
            ),
            (2, 6, 750)
        );
        assert!((119..=120).contains(&int_field(&g, "ttl")));
        let items = field(&g, "items").as_array().unwrap().to_vec();
        assert_eq!(items.len(), 2);
        assert_eq!(text_field(&items[0], "product"), "p1");
        assert_eq!(
            (
                int_field(&items[0], "quantity"),
                int_field(&items[0], "price"),
                int_field(&items[0], "subtotal")
            ),
            (5, 100, 500)
        );
        assert_eq!(text_field(&items[1], "product"), "p2");
        assert_eq!(
            (
                int_field(&items[1], "quantity"),
                int_field(&items[1], "price"),
                int_field(&items[1], "subtotal")
            ),
            (1, 250, 250)
        );

        let r = call(
            &mut c,
            e,
            "cart_remove",
            std::slice::from_ref(&cart),
            &["p1", "2"],
        )
        .ok();
        assert_eq!(fields(&r), ["items", "product", "quantity", "removed"]);
        assert_eq!(
            (
                int_field(&r, "removed"),
                int_field(&r, "quantity"),
                int_field(&r, "items")
            ),
            (2, 3, 2)
        );
        let r = call(
            &mut c,
            e,
            "cart_remove",
            std::slice::from_ref(&cart),
            &["p2"],
        )
        .ok();
        assert_eq!(
            (
                int_field(&r, "removed"),
                int_field(&r, "quantity"),
                int_field(&r, "items")
            ),
            (1, 0, 1)
        );
        assert_eq!(c.q(&["HEXISTS", &cart, "p2"]), Reply::Int(0));
        let ttl = c.q(&["TTL", &cart]).as_int().unwrap();
        assert!((118..=120).contains(&ttl), "remove keeps the TTL: {ttl}");

        let r = call(&mut c, e, "cart_clear", std::slice::from_ref(&cart), NO).ok();
        assert_eq!(fields(&r), ["lines", "quantity"]);
        assert_eq!((int_field(&r, "lines"), int_field(&r, "quantity")), (1, 3));
        assert_eq!(c.q(&["EXISTS", &cart]), Reply::Int(0));
        let g = call(&mut c, e, "cart_get", &[cart.clone(), prices.clone()], NO).ok();
        assert_eq!(field(&g, "items"), Reply::Array(vec![]));
        assert_eq!(
            (
                int_field(&g, "lines"),
                int_field(&g, "quantity"),
                int_field(&g, "total"),
                int_field(&g, "ttl")
            ),
            (0, 0, 0, -2)
        );
        let r = call(&mut c, e, "cart_clear", std::slice::from_ref(&cart), NO).ok();
        assert_eq!((int_field(&r, "lines"), int_field(&r, "quantity")), (0, 0));
        // Removing the last unit deletes the cart key.
        call(
            &mut c,
            e,
            "cart_add",
            &cart_keys(t, "p1"),
            &["p1", "1", "60"],
        )
        .ok();
        call(
            &mut c,
            e,
            "cart_remove",
            std::slice::from_ref(&cart),
            &["p1", "1"],
        )
        .ok();
        assert_eq!(c.q(&["EXISTS", &cart]), Reply::Int(0));
    }
}

#[test]
fn cart_validation_errors() {
    let (_s, mut c) = setup();
    let t = "v";
    let cart = key(t, "cart:alice");
    let prices = key(t, "prices");
    c.q(&["SET", &key(t, "stock:p1"), "5"]).ok();
    let ak = cart_keys(t, "p1");
    let f = "cart_add";
    expect_err(
        &mut c,
        f,
        &ak[..1],
        &["p1", "1", "60"],
        "ERR wrong number of keys",
    );
    expect_err(
        &mut c,
        f,
        &ak,
        &["p1", "1"],
        "ERR wrong number of arguments",
    );
    expect_err(
        &mut c,
        f,
        &ak,
        &["", "1", "60"],
        "ERR product must not be empty",
    );
    for q in ["0", "-2", "x", "1.0", ""] {
        expect_err(
            &mut c,
            f,
            &ak,
            &["p1", q, "60"],
            "ERR quantity must be a positive integer",
        );
    }
    for ttl in ["0", "-1", "x", "1.5"] {
        expect_err(
            &mut c,
            f,
            &ak,
            &["p1", "1", ttl],
            "ERR ttl must be a positive integer",
        );
    }
    expect_err(&mut c, f, &ak, &["p1", "6", "60"], "ERR insufficient stock");
    expect_err(
        &mut c,
        f,
        &cart_keys(t, "nope"),
        &["nope", "1", "60"],
        "ERR product not found",
    );
    c.q(&["SET", &key(t, "stock:p3"), "x"]).ok();
    expect_err(
        &mut c,
        f,
        &cart_keys(t, "p3"),
        &["p3", "1", "60"],
        "ERR value at key is not an integer",
    );
    c.q(&["LPUSH", &key(t, "stock:p4"), "x"]).ok();
    expect_err(
        &mut c,
        f,
        &cart_keys(t, "p4"),
        &["p4", "1", "60"],
        "ERR key holds the wrong kind of value",
    );

    let f = "cart_remove";
    expect_err(&mut c, f, NO, &["p1"], "ERR wrong number of keys");
    expect_err(
        &mut c,
        f,
        std::slice::from_ref(&cart),
        NO,
        "ERR wrong number of arguments",
    );
    expect_err(
        &mut c,
        f,
        std::slice::from_ref(&cart),
        &["p1", "1", "2"],
        "ERR wrong number of arguments",
    );
    expect_err(
        &mut c,
        f,
        std::slice::from_ref(&cart),
        &["", "1"],
        "ERR product must not be empty",
    );
    expect_err(
        &mut c,
        f,
        std::slice::from_ref(&cart),
        &["p1", "0"],
        "ERR quantity must be a positive integer",
    );
    expect_err(
        &mut c,
        f,
        std::slice::from_ref(&cart),
        &["p1", "1"],
        "ERR product not in cart",
    );
    call(&mut c, Eng::Rx, "cart_add", &ak, &["p1", "2", "60"]).ok();
    expect_err(
        &mut c,
        f,
        std::slice::from_ref(&cart),
        &["p1", "3"],
        "ERR quantity exceeds the quantity in the cart",
    );

    let f = "cart_get";
    expect_err(
        &mut c,
        f,
        std::slice::from_ref(&cart),
        NO,
        "ERR wrong number of keys",
    );
    expect_err(
        &mut c,
        f,
        &[cart.clone(), prices.clone()],
        &["x"],
        "ERR wrong number of arguments",
    );
    expect_err(
        &mut c,
        f,
        &[cart.clone(), prices.clone()],
        NO,
        "ERR no price for a product in the cart",
    );
    c.q(&["HSET", &prices, "p1", "1.99"]).ok();
    expect_err(
        &mut c,
        f,
        &[cart.clone(), prices.clone()],
        NO,
        "ERR price is not a non-negative integer",
    );
    expect_err(
        &mut c,
        f,
        &[cart.clone(), key(t, "stock:p1")],
        NO,
        "ERR key holds the wrong kind of value",
    );

    let f = "cart_clear";
    expect_err(
        &mut c,
        f,
        &[cart.clone(), prices.clone()],
        NO,
        "ERR wrong number of keys",
    );
    expect_err(
        &mut c,
        f,
        std::slice::from_ref(&cart),
        &["x"],
        "ERR wrong number of arguments",
    );
    expect_err(
        &mut c,
        f,
        &[key(t, "stock:p1")],
        NO,
        "ERR key holds the wrong kind of value",
    );
    c.q(&["HSET", &cart, "p9", "lots"]).ok();
    expect_err(
        &mut c,
        f,
        std::slice::from_ref(&cart),
        NO,
        "ERR value at key is not an integer",
    );
}

fn shards(t: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| key(t, &format!("hits:{i}"))).collect()
}

#[test]
fn counter_incr_sharded_incr_and_total() {
    let (_s, mut c) = setup();
    for (e, t) in [(Eng::Rx, "r"), (Eng::Native, "n")] {
        let k = key(t, "views");
        let r = call(
            &mut c,
            e,
            "counter_incr",
            std::slice::from_ref(&k),
            &["3", "10"],
        )
        .ok();
        assert_eq!(fields(&r), ["max", "remaining", "value"]);
        assert_eq!(
            (
                int_field(&r, "value"),
                int_field(&r, "max"),
                int_field(&r, "remaining")
            ),
            (3, 10, 7)
        );
        let r = call(
            &mut c,
            e,
            "counter_incr",
            std::slice::from_ref(&k),
            &["7", "10"],
        )
        .ok();
        assert_eq!(
            (int_field(&r, "value"), int_field(&r, "remaining")),
            (10, 0)
        );
        // Refused past the maximum, not capped: the value stays.
        expect_err(
            &mut c,
            "counter_incr",
            std::slice::from_ref(&k),
            &["1", "10"],
            "ERR counter would exceed its maximum",
        );
        assert_eq!(get_int(&mut c, &k), 10);
        let r = call(
            &mut c,
            e,
            "counter_incr",
            std::slice::from_ref(&k),
            &["1", "11"],
        )
        .ok();
        assert_eq!(int_field(&r, "value"), 11);

        // Sharded: the same client id always lands on the same shard.
        let sk = shards(t, 4);
        let mut expected = [0i64; 4];
        for i in 0..40 {
            let id = format!("client-{}", i % 10);
            let r = call(&mut c, e, "counter_sharded_incr", &sk, &[id.as_str(), "2"]).ok();
            assert_eq!(fields(&r), ["shard", "shards", "value"]);
            assert_eq!(int_field(&r, "shards"), 4);
            let shard = int_field(&r, "shard");
            assert!((1..=4).contains(&shard));
            expected[shard as usize - 1] += 2;
            assert_eq!(int_field(&r, "value"), expected[shard as usize - 1]);
            let again = call(&mut c, e, "counter_sharded_incr", &sk, &[id.as_str(), "1"]).ok();
            assert_eq!(int_field(&again, "shard"), shard, "{id}");
            expected[shard as usize - 1] += 1;
        }
        assert!(
            expected.iter().filter(|v| **v > 0).count() >= 2,
            "spread: {expected:?}"
        );
        let tot = call(&mut c, e, "counter_total", &sk, NO).ok();
        assert_eq!(fields(&tot), ["shards", "total", "values"]);
        assert_eq!(int_field(&tot, "total"), 120);
        assert_eq!(int_field(&tot, "shards"), 4);
        assert_eq!(
            field(&tot, "values"),
            Reply::Array(expected.iter().map(|v| Reply::Int(*v)).collect())
        );
        for (i, k) in sk.iter().enumerate() {
            let v = c.q(&["GET", k]);
            let v = v.as_str().map(|s| s.parse::<i64>().unwrap()).unwrap_or(0);
            assert_eq!(v, expected[i]);
        }
        // Shard choice: first 8 hex digits of sha1(client id), modulo N, plus one.
        let tot = call(&mut c, e, "counter_total", &shards("empty", 3), NO).ok();
        assert_eq!(int_field(&tot, "total"), 0);
    }
    // Both engines choose the same shards.
    assert_eq!(
        canon(&call(&mut c, Eng::Rx, "counter_total", &shards("r", 4), NO)),
        canon(&call(
            &mut c,
            Eng::Native,
            "counter_total",
            &shards("n", 4),
            NO
        ))
    );
}

#[test]
fn counter_validation_errors() {
    let (_s, mut c) = setup();
    let k = key("v", "c");
    let f = "counter_incr";
    expect_err(&mut c, f, NO, &["1", "5"], "ERR wrong number of keys");
    expect_err(
        &mut c,
        f,
        &[k.clone(), k.clone()],
        &["1", "5"],
        "ERR wrong number of keys",
    );
    expect_err(
        &mut c,
        f,
        std::slice::from_ref(&k),
        &["1"],
        "ERR wrong number of arguments",
    );
    for i in ["0", "-1", "x", "1.5"] {
        expect_err(
            &mut c,
            f,
            std::slice::from_ref(&k),
            &[i, "5"],
            "ERR increment must be a positive integer",
        );
    }
    for m in ["-1", "x", "1e9", ""] {
        expect_err(
            &mut c,
            f,
            std::slice::from_ref(&k),
            &["1", m],
            "ERR maximum must be a non-negative integer",
        );
    }
    expect_err(
        &mut c,
        f,
        std::slice::from_ref(&k),
        &["1", "0"],
        "ERR counter would exceed its maximum",
    );
    c.q(&["SET", &k, "abc"]).ok();
    expect_err(
        &mut c,
        f,
        std::slice::from_ref(&k),
        &["1", "5"],
        "ERR value at key is not an integer",
    );
    c.q(&["DEL", &k]).ok();
    c.q(&["SADD", &k, "x"]).ok();
    expect_err(
        &mut c,
        f,
        std::slice::from_ref(&k),
        &["1", "5"],
        "ERR key holds the wrong kind of value",
    );

    let sk = shards("v", 2);
    let f = "counter_sharded_incr";
    expect_err(&mut c, f, NO, &["id", "1"], "ERR wrong number of keys");
    expect_err(&mut c, f, &sk, &["id"], "ERR wrong number of arguments");
    expect_err(
        &mut c,
        f,
        &sk,
        &["", "1"],
        "ERR client id must not be empty",
    );
    expect_err(
        &mut c,
        f,
        &sk,
        &["id", "0"],
        "ERR increment must be a positive integer",
    );
    c.q(&["SET", &sk[0], "999999999999999"]).ok();
    c.q(&["SET", &sk[1], "999999999999999"]).ok();
    expect_err(&mut c, f, &sk, &["id", "1"], "ERR counter would overflow");
    c.q(&["SET", &sk[1], "1.5"]).ok();
    c.q(&["SET", &sk[0], "1.5"]).ok();
    expect_err(
        &mut c,
        f,
        &sk,
        &["id", "1"],
        "ERR value at key is not an integer",
    );

    let f = "counter_total";
    expect_err(&mut c, f, NO, NO, "ERR wrong number of keys");
    expect_err(&mut c, f, &sk, &["x"], "ERR wrong number of arguments");
    expect_err(&mut c, f, &sk, NO, "ERR value at key is not an integer");
    c.q(&["DEL", &sk[0], &sk[1]]).ok();
    c.q(&["HSET", &sk[1], "a", "1"]).ok();
    expect_err(&mut c, f, &sk, NO, "ERR key holds the wrong kind of value");
}

/// One call of a scenario: function, key names (without tag), arguments.
type Step = (&'static str, Vec<&'static str>, Vec<&'static str>);

fn scenario() -> Vec<Step> {
    let pk = vec![
        "stock:p1",
        "sold:p1",
        "order_seq",
        "orders",
        "history:alice",
        "stats:p1",
    ];
    let ck = vec!["stock:p1", "sold:p1", "orders", "stats:p1"];
    let sk = vec!["stock:p1", "sold:p1", "stats:p1"];
    let sh = vec!["hits:0", "hits:1", "hits:2"];
    vec![
        ("ecommerce_product_stats", sk.clone(), vec![]),
        (
            "ecommerce_purchase",
            pk.clone(),
            vec!["alice", "p1", "2", "199"],
        ),
        (
            "ecommerce_purchase",
            pk.clone(),
            vec!["alice", "p1", "20", "199"],
        ),
        (
            "ecommerce_purchase",
            pk.clone(),
            vec!["alice", "p1", "x", "199"],
        ),
        (
            "ecommerce_purchase",
            pk.clone(),
            vec!["alice", "p1", "1", "5"],
        ),
        ("ecommerce_cancel", ck.clone(), vec!["1"]),
        ("ecommerce_cancel", ck.clone(), vec!["1"]),
        ("ecommerce_cancel", ck.clone(), vec!["7"]),
        ("ecommerce_product_stats", sk.clone(), vec![]),
        (
            "cart_add",
            vec!["cart:alice", "stock:p1"],
            vec!["p1", "4", "100"],
        ),
        (
            "cart_add",
            vec!["cart:alice", "stock:p2"],
            vec!["p2", "1", "100"],
        ),
        (
            "cart_add",
            vec!["cart:alice", "stock:p2"],
            vec!["p2", "9", "100"],
        ),
        (
            "cart_add",
            vec!["cart:alice", "stock:p2"],
            vec!["p2", "-1", "100"],
        ),
        ("cart_get", vec!["cart:alice", "prices"], vec![]),
        ("cart_remove", vec!["cart:alice"], vec!["p1", "1"]),
        ("cart_remove", vec!["cart:alice"], vec!["p3"]),
        ("cart_get", vec!["cart:alice", "prices"], vec![]),
        ("cart_clear", vec!["cart:alice"], vec![]),
        ("cart_get", vec!["cart:alice", "prices"], vec![]),
        ("counter_incr", vec!["views"], vec!["5", "6"]),
        ("counter_incr", vec!["views"], vec!["5", "6"]),
        ("counter_incr", vec!["views"], vec!["1", "6"]),
        ("counter_sharded_incr", sh.clone(), vec!["alice", "1"]),
        ("counter_sharded_incr", sh.clone(), vec!["bob", "2"]),
        ("counter_sharded_incr", sh.clone(), vec!["carol", "3"]),
        ("counter_sharded_incr", sh.clone(), vec!["dave", "4"]),
        ("counter_total", sh.clone(), vec![]),
    ]
}

fn seed(c: &mut Conn, t: &str) {
    c.q(&["SET", &key(t, "stock:p1"), "10"]).ok();
    c.q(&["SET", &key(t, "stock:p2"), "3"]).ok();
    c.q(&["HSET", &key(t, "prices"), "p1", "199", "p2", "1000"])
        .ok();
}

/// Runs the scenario with every key under `{tag}`; returns the replies and the keys passed.
fn run_scenario(c: &mut Conn, e: Eng, tag: &str) -> (Vec<Reply>, BTreeSet<String>) {
    let mut passed = BTreeSet::new();
    let mut out = Vec::new();
    for (f, names, args) in scenario() {
        let keys: Vec<String> = names.iter().map(|n| key(tag, n)).collect();
        passed.extend(keys.iter().cloned());
        out.push(call(c, e, f, &keys, &args));
    }
    (out, passed)
}

#[test]
fn fcall_and_rx_call_give_identical_replies() {
    let (_s, mut c) = setup();
    seed(&mut c, "n");
    seed(&mut c, "r");
    let (native, _) = run_scenario(&mut c, Eng::Native, "n");
    let (rx, _) = run_scenario(&mut c, Eng::Rx, "r");
    let steps = scenario();
    assert_eq!(native.len(), rx.len());
    let mut errors = 0;
    for (i, (n, r)) in native.iter().zip(rx.iter()).enumerate() {
        assert_eq!(canon(n), canon(r), "step {i}: {:?}", steps[i]);
        if n.is_error() {
            errors += 1;
        }
    }
    assert_eq!(errors, 8, "the scenario exercises errors too: {native:?}");
    // The data left behind is the same too (order timestamps aside).
    for name in [
        "stock:p1",
        "sold:p1",
        "order_seq",
        "views",
        "hits:0",
        "hits:1",
        "hits:2",
    ] {
        assert_eq!(
            c.q(&["GET", &key("n", name)]),
            c.q(&["GET", &key("r", name)]),
            "{name}"
        );
    }
    {
        let name = "history:alice";
        assert_eq!(
            c.q(&["LRANGE", &key("n", name), "0", "-1"]),
            c.q(&["LRANGE", &key("r", name), "0", "-1"])
        );
    }
    assert_eq!(
        canon(&c.q(&["HGETALL", &key("n", "stats:p1")])),
        canon(&c.q(&["HGETALL", &key("r", "stats:p1")]))
    );
    // RESP2 clients get the same fields as a flat field/value array.
    let mut c2 = _s.conn();
    for e in [Eng::Native, Eng::Rx] {
        let tag = if e == Eng::Native { "n" } else { "r" };
        let r = call(&mut c2, e, "ecommerce_product_stats", &stats_keys(tag), NO);
        let arr = r.as_array().expect("RESP2 flat array").to_vec();
        assert_eq!(arr.len(), 10);
        assert_eq!(int_field(&r, "stock"), 9);
        assert_eq!(int_field(&r, "revenue"), 5);
    }
}

#[test]
fn concurrent_purchases_never_oversell() {
    let (s, mut c) = setup();
    let t = "shop";
    c.q(&["SET", &key(t, "stock:p1"), "100"]).ok();
    let port = s.port();
    let handles: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                let mut c = Conn::connect(port);
                let user = format!("u{i}");
                let keys = purchase_keys("shop", &user);
                let mut ok = 0;
                for _ in 0..50 {
                    let r = call(
                        &mut c,
                        Eng::Rx,
                        "ecommerce_purchase",
                        &keys,
                        &[user.as_str(), "p1", "1", "3"],
                    );
                    match r.err_text() {
                        None => ok += 1,
                        Some(e) => assert_eq!(e, "ERR insufficient stock"),
                    }
                    // stock + sold is constant at every moment.
                    let st = call(
                        &mut c,
                        Eng::Rx,
                        "ecommerce_product_stats",
                        &stats_keys("shop"),
                        NO,
                    )
                    .ok();
                    assert_eq!(int_field(&st, "stock") + int_field(&st, "sold"), 100);
                    assert!(int_field(&st, "stock") >= 0);
                }
                ok
            })
        })
        .collect();
    let ok: i64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(ok, 100);
    let st = call(
        &mut c,
        Eng::Rx,
        "ecommerce_product_stats",
        &stats_keys(t),
        NO,
    )
    .ok();
    assert_eq!(
        (
            int_field(&st, "stock"),
            int_field(&st, "sold"),
            int_field(&st, "orders"),
            int_field(&st, "revenue")
        ),
        (0, 100, 100, 300)
    );
    assert_eq!(get_int(&mut c, &key(t, "order_seq")), 100);
    let mut history = 0;
    for i in 0..8 {
        history += c
            .q(&["LLEN", &key(t, &format!("history:u{i}"))])
            .as_int()
            .unwrap();
    }
    assert_eq!(history, 100);
}

#[test]
fn functions_touch_only_the_keys_they_are_given() {
    let (_s, mut c) = setup();
    for e in [Eng::Native, Eng::Rx] {
        c.q(&["FLUSHALL"]).ok();
        seed(&mut c, "t");
        let (replies, passed) = run_scenario(&mut c, e, "t");
        assert!(replies.iter().filter(|r| !r.is_error()).count() >= 15);
        let present = all_keys(&mut c);
        assert!(!present.is_empty());
        for k in &present {
            assert!(passed.contains(k), "{e:?}: key {k} was not passed in KEYS");
            assert!(k.starts_with("{t}:"), "{k}");
        }
    }
}

#[test]
fn functions_run_in_cluster_mode_with_one_hash_tag() {
    let s = Server::start_with(&["--cluster-enabled", "yes"], &[]);
    let mut c = s.conn();
    c.q(&["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]).ok();
    wait_until("cluster state ok", Duration::from_secs(10), || {
        let info = c.q(&["CLUSTER", "INFO"]);
        String::from_utf8_lossy(info.as_bytes().unwrap()).contains("cluster_state:ok")
    });
    load_natively_and_into_rx(&mut c, &LIBS);
    c.q(&["HELLO", "3"]).ok();
    seed(&mut c, "n");
    seed(&mut c, "r");
    let (native, _) = run_scenario(&mut c, Eng::Native, "n");
    let (rx, _) = run_scenario(&mut c, Eng::Rx, "r");
    for (i, (n, r)) in native.iter().zip(rx.iter()).enumerate() {
        assert_eq!(canon(n), canon(r), "step {i}");
        if let Some(e) = r.err_text() {
            assert!(e.starts_with("ERR "), "step {i}: {e}");
        }
    }
    // Keys spread over two hash tags are refused by the cluster, before the function runs.
    let mixed = [
        key("a", "stock:p1"),
        key("b", "sold:p1"),
        key("a", "stats:p1"),
    ];
    let n = call(&mut c, Eng::Native, "ecommerce_product_stats", &mixed, NO);
    let r = call(&mut c, Eng::Rx, "ecommerce_product_stats", &mixed, NO);
    assert!(n.err_text().unwrap().starts_with("CROSSSLOT"), "{n:?}");
    assert_eq!(r, n);
}
