//! The builtin functions. Each one that builds text or a list sizes the
//! result from its inputs and reserves it from the render's [`Budget`] before
//! allocating anything. Adding a function: its name in `FUNCS`, its arm in
//! `call_builtin` (the catalog functions of render jobs live in `catalog.rs`).

use super::budget::{check_elems, Budget, Overflow, Sink};
use super::exec::{truth, write_v, Scope, Value};
use super::fmt::{go_quote, sprintf};
use std::rc::Rc;

const FUNCS: &[&str] = &[
    "and",
    "default",
    "env",
    "eq",
    "ge",
    "gt",
    "html",
    "index",
    "join",
    "le",
    "len",
    "loop",
    "lt",
    "ne",
    "not",
    "or",
    "print",
    "printf",
    "println",
    "regexReplaceAll",
    "replaceAll",
    "slice",
    "split",
    "urlquery",
];

/// Whether `name` is a function templates may call; `catalog`: a render
/// job's template, which has the catalog functions too.
pub(super) fn is_defined(name: &str, catalog: bool) -> bool {
    FUNCS.contains(&name) || (catalog && super::catalog::FUNCS.contains(&name))
}

fn want_args(name: &str, args: &[Value], n: usize) -> Result<(), String> {
    if args.len() != n {
        return Err(format!(
            "wrong number of args for {name}: want {n} got {}",
            args.len()
        ));
    }
    Ok(())
}

fn want_min_args(name: &str, args: &[Value], n: usize) -> Result<(), String> {
    if args.len() < n {
        return Err(format!(
            "wrong number of args for {name}: want at least {n} got {}",
            args.len()
        ));
    }
    Ok(())
}

fn want_str<'v>(name: &str, v: &'v Value) -> Result<&'v str, String> {
    match v {
        Value::Str(s) => Ok(s),
        other => Err(format!(
            "error calling {name}: wrong type for value; expected string; got {}",
            other.type_name()
        )),
    }
}

/// Builds a string in a sink sized by the budget, then charges it.
fn build(
    budget: &mut Budget,
    f: impl FnOnce(&mut Sink) -> Result<(), Overflow>,
) -> Result<Value, String> {
    let mut sink = budget.sink();
    if f(&mut sink).is_err() {
        return Err(budget.over());
    }
    Ok(Value::Str(Rc::from(budget.charge(sink))))
}

/// Calls the builtin `name` (`and`/`or` are evaluated lazily by the executor).
pub(super) fn call_builtin(
    scope: &Scope,
    budget: &mut Budget,
    name: &str,
    args: Vec<Value>,
) -> Result<Value, String> {
    let fail = |msg: String| format!("error calling {name}: {msg}");
    match name {
        "default" => {
            want_args(name, &args, 2)?;
            if let Value::Str(s) = &args[1] {
                if !s.is_empty() {
                    return Ok(args[1].clone());
                }
            }
            match &args[0] {
                v @ Value::Str(_) => Ok(v.clone()),
                v => build(budget, |out| write_v(out, v)).map_err(fail),
            }
        }
        "env" => {
            want_args(name, &args, 1)?;
            let key = want_str(name, &args[0])?;
            Ok(scope
                .env
                .get(key)
                .map_or_else(|| Value::str(""), |v| Value::Str(Rc::clone(v))))
        }
        "split" => {
            want_args(name, &args, 2)?;
            let sep = want_str(name, &args[0])?;
            let s = want_str(name, &args[1])?.trim();
            split(budget, sep, s).map_err(fail)
        }
        "join" => {
            want_args(name, &args, 2)?;
            let sep = want_str(name, &args[0])?;
            match &args[1] {
                Value::List(l) => build(budget, |out| {
                    for (k, e) in l.iter().enumerate() {
                        if k > 0 {
                            out.push(sep)?;
                        }
                        write_v(out, e)?;
                    }
                    Ok(())
                })
                .map_err(fail),
                Value::Nil => Ok(Value::str("")),
                other => Err(fail(format!(
                    "wrong type for value; expected []string; got {}",
                    other.type_name()
                ))),
            }
        }
        "replaceAll" => {
            want_args(name, &args, 3)?;
            let from = want_str(name, &args[0])?;
            let to = want_str(name, &args[1])?;
            let s = want_str(name, &args[2])?;
            build(budget, |out| {
                let mut last = 0;
                for (i, m) in s.match_indices(from) {
                    out.push(&s[last..i])?;
                    out.push(to)?;
                    last = i + m.len();
                }
                out.push(&s[last..])
            })
            .map_err(fail)
        }
        "regexReplaceAll" => {
            want_args(name, &args, 3)?;
            let re = want_str(name, &args[0])?;
            let to = want_str(name, &args[1])?;
            let s = want_str(name, &args[2])?;
            let re = regex_lite::Regex::new(re).map_err(|e| {
                fail(format!(
                    "error parsing regexp: {}",
                    e.to_string().replace('\n', " ")
                ))
            })?;
            build(budget, |out| regex_replace_all(out, &re, to, s)).map_err(fail)
        }
        "loop" => loop_fn(budget, &args).map_err(fail),
        "eq" => {
            want_min_args(name, &args, 1)?;
            if args.len() == 1 {
                return Err(fail("missing argument for comparison".to_string()));
            }
            for b in &args[1..] {
                if values_eq(&args[0], b).map_err(fail)? {
                    return Ok(Value::Bool(true));
                }
            }
            Ok(Value::Bool(false))
        }
        "ne" => {
            want_args(name, &args, 2)?;
            Ok(Value::Bool(!values_eq(&args[0], &args[1]).map_err(fail)?))
        }
        "lt" | "le" | "gt" | "ge" => {
            want_args(name, &args, 2)?;
            let ord = values_cmp(&args[0], &args[1]).map_err(fail)?;
            let r = match (name, ord) {
                (_, None) => false,
                ("lt", Some(o)) => o.is_lt(),
                ("le", Some(o)) => o.is_le(),
                ("gt", Some(o)) => o.is_gt(),
                (_, Some(o)) => o.is_ge(),
            };
            Ok(Value::Bool(r))
        }
        "not" => {
            want_args(name, &args, 1)?;
            Ok(Value::Bool(!truth(&args[0])))
        }
        "len" => {
            want_args(name, &args, 1)?;
            let n = match &args[0] {
                Value::Str(s) => s.len(),
                Value::List(l) => l.len(),
                Value::Map(m) => m.len(),
                other => return Err(fail(format!("len of type {}", other.type_name()))),
            };
            Ok(Value::Int(n as i64))
        }
        "index" => {
            want_min_args(name, &args, 1)?;
            index_fn(&args).map_err(fail)
        }
        "slice" => {
            want_min_args(name, &args, 1)?;
            slice_fn(budget, &args).map_err(fail)
        }
        "print" => build(budget, |out| sprint(out, &args)).map_err(fail),
        "println" => build(budget, |out| {
            for (k, a) in args.iter().enumerate() {
                if k > 0 {
                    out.push(" ")?;
                }
                write_v(out, a)?;
            }
            out.push("\n")
        })
        .map_err(fail),
        "printf" => {
            want_min_args(name, &args, 1)?;
            let f = want_str(name, &args[0])?;
            build(budget, |out| sprintf(out, f, &args[1..])).map_err(fail)
        }
        "html" => {
            let s = sprint_single(budget, &args).map_err(fail)?;
            build(budget, |out| html_escape(out, &s)).map_err(fail)
        }
        "urlquery" => {
            let s = sprint_single(budget, &args).map_err(fail)?;
            build(budget, |out| query_escape(out, &s)).map_err(fail)
        }
        _ if super::catalog::FUNCS.contains(&name) => {
            super::catalog::call(scope.catalog, budget, name, &args).map_err(fail)
        }
        _ => Err(format!("function {} not defined", go_quote(name))),
    }
}

/// Go's `strings.Split` of a trimmed string: one element per character when
/// `sep` is empty; none for an empty string. Counted before it is built.
fn split(budget: &mut Budget, sep: &str, s: &str) -> Result<Value, String> {
    if s.is_empty() {
        return Ok(Value::list(Vec::new()));
    }
    let n = if sep.is_empty() {
        s.chars().count()
    } else {
        s.matches(sep).count() + 1
    };
    check_elems("split", n)?;
    budget.reserve_list(n, s.len())?;
    let parts: Vec<Value> = if sep.is_empty() {
        s.chars()
            .map(|c| Value::str(c.encode_utf8(&mut [0; 4])))
            .collect()
    } else {
        s.split(sep).map(Value::str).collect()
    };
    Ok(Value::list(parts))
}

/// Go's `Regexp.ReplaceAllString`: `$n`, `${n}`, `$name`, `${name}` expand to
/// the group (empty when it did not take part), `$$` is a `$`.
fn regex_replace_all(
    out: &mut Sink,
    re: &regex_lite::Regex,
    to: &str,
    s: &str,
) -> Result<(), Overflow> {
    let names: Vec<Option<&str>> = re.capture_names().collect();
    let mut last = 0;
    for caps in re.captures_iter(s) {
        let Some(whole) = caps.get(0) else {
            continue;
        };
        out.push(&s[last..whole.start()])?;
        let mut rest = to;
        while let Some(at) = rest.find('$') {
            out.push(&rest[..at])?;
            rest = &rest[at + 1..];
            if let Some(after) = rest.strip_prefix('$') {
                out.push("$")?;
                rest = after;
                continue;
            }
            let Some((name, after)) = group_ref(rest) else {
                out.push("$")?;
                continue;
            };
            rest = after;
            let group = match name.parse::<usize>() {
                Ok(i) if !(name.starts_with('0') && name.len() > 1) => caps.get(i),
                _ => names
                    .iter()
                    .position(|n| *n == Some(name))
                    .and_then(|i| caps.get(i)),
            };
            if let Some(g) = group {
                out.push(g.as_str())?;
            }
        }
        out.push(rest)?;
        last = whole.end();
    }
    out.push(&s[last..])
}

/// A group reference after `$`: `name` or `{name}` (letters, digits, `_`),
/// and what follows it; `None` when malformed (the `$` is then literal).
fn group_ref(s: &str) -> Option<(&str, &str)> {
    let (braced, body) = match s.strip_prefix('{') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let end = body
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(body.len());
    if end == 0 {
        return None;
    }
    let name = &body[..end];
    if braced {
        let after = body[end..].strip_prefix('}')?;
        return Some((name, after));
    }
    Some((name, &body[end..]))
}

/// ContainerPilot's `loop`: `loop N` is 0..N, `loop A B` counts from A toward
/// B (exclusive) in either direction.
fn loop_fn(budget: &mut Budget, args: &[Value]) -> Result<Value, String> {
    let (start, stop) = match args {
        [n] => (0, loop_int(n)?),
        [a, b] => (loop_int(a)?, loop_int(b)?),
        _ => {
            return Err(format!(
                "loop: wrong number of arguments, expected 1 or 2, but got {}",
                args.len()
            ))
        }
    };
    let len = (i128::from(stop) - i128::from(start)).unsigned_abs();
    check_elems("loop", usize::try_from(len).unwrap_or(usize::MAX))?;
    budget.reserve_list(len as usize, 0)?;
    let items: Vec<Value> = if stop >= start {
        (start..stop).map(Value::Int).collect()
    } else {
        ((stop + 1)..=start).rev().map(Value::Int).collect()
    };
    Ok(Value::list(items))
}

fn loop_int(v: &Value) -> Result<i64, String> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::Str(s) => s
            .parse::<i64>()
            .map_err(|_| format!("loop: invalid integer {}", go_quote(s))),
        other => Err(format!("loop: unsupported type {}", other.type_name())),
    }
}

fn values_eq(a: &Value, b: &Value) -> Result<bool, String> {
    match (a, b) {
        (Value::Str(x), Value::Str(y)) => Ok(x == y),
        (Value::Int(x), Value::Int(y)) => Ok(x == y),
        (Value::Float(x), Value::Float(y)) => Ok(x == y),
        (Value::Bool(x), Value::Bool(y)) => Ok(x == y),
        (Value::Nil, Value::Nil) => Ok(true),
        (Value::Nil, _) | (_, Value::Nil) => Ok(false),
        (Value::List(_) | Value::Map(_) | Value::Record(_), _)
        | (_, Value::List(_) | Value::Map(_) | Value::Record(_)) => Err(format!(
            "non-comparable types {}, {}",
            a.type_name(),
            b.type_name()
        )),
        _ => Err("incompatible types for comparison".to_string()),
    }
}

fn values_cmp(a: &Value, b: &Value) -> Result<Option<std::cmp::Ordering>, String> {
    match (a, b) {
        (Value::Str(x), Value::Str(y)) => Ok(Some(x.cmp(y))),
        (Value::Int(x), Value::Int(y)) => Ok(Some(x.cmp(y))),
        (Value::Float(x), Value::Float(y)) => Ok(x.partial_cmp(y)),
        (
            Value::Str(_) | Value::Int(_) | Value::Float(_),
            Value::Str(_) | Value::Int(_) | Value::Float(_),
        ) => Err("incompatible types for comparison".to_string()),
        _ => Err("invalid type for comparison".to_string()),
    }
}

fn index_int(v: &Value, len: usize) -> Result<usize, String> {
    match v {
        Value::Int(i) if *i >= 0 && (*i as u64) < len as u64 => Ok(*i as usize),
        Value::Int(i) => Err(format!("index out of range: {i}")),
        other => Err(format!(
            "cannot index slice/array with type {}",
            other.type_name()
        )),
    }
}

fn index_fn(args: &[Value]) -> Result<Value, String> {
    let mut item = args[0].clone();
    for ix in &args[1..] {
        item = match &item {
            Value::List(l) => l[index_int(ix, l.len())?].clone(),
            Value::Str(s) => Value::Int(i64::from(s.as_bytes()[index_int(ix, s.len())?])),
            Value::Map(m) => match ix {
                Value::Str(k) => m
                    .get(&**k)
                    .map_or_else(|| Value::str(""), |v| Value::Str(Rc::clone(v))),
                other => {
                    return Err(format!(
                        "value has type {}; should be string",
                        other.type_name()
                    ))
                }
            },
            Value::Nil => return Err("index of untyped nil".to_string()),
            other => return Err(format!("can't index item of type {}", other.type_name())),
        };
    }
    Ok(item)
}

fn slice_fn(budget: &mut Budget, args: &[Value]) -> Result<Value, String> {
    let len = match &args[0] {
        Value::Str(s) => s.len(),
        Value::List(l) => l.len(),
        Value::Nil => return Err("slice of untyped nil".to_string()),
        other => return Err(format!("can't slice item of type {}", other.type_name())),
    };
    if args.len() > 4 || (args.len() == 4 && matches!(args[0], Value::Str(_))) {
        return Err("too many slice indexes".to_string());
    }
    let mut ix = [0, len, len];
    for (k, a) in args[1..].iter().enumerate() {
        ix[k] = match a {
            Value::Int(i) if *i >= 0 && (*i as u64) <= len as u64 => *i as usize,
            Value::Int(i) => return Err(format!("index out of range: {i}")),
            other => {
                return Err(format!(
                    "cannot index slice/array with type {}",
                    other.type_name()
                ))
            }
        };
    }
    if ix[0] > ix[1] || ix[1] > ix[2] {
        return Err(format!("invalid slice index: {} > {}", ix[0], ix[1]));
    }
    match &args[0] {
        Value::Str(s) => {
            let part = s
                .get(ix[0]..ix[1])
                .ok_or_else(|| "slice splits a UTF-8 character".to_string())?;
            budget.reserve(part.len())?;
            Ok(Value::str(part))
        }
        Value::List(l) => {
            budget.reserve_list(ix[1] - ix[0], 0)?;
            Ok(Value::list(l[ix[0]..ix[1]].to_vec()))
        }
        _ => Err("can't slice".to_string()),
    }
}

/// Go's fmt.Sprint: a space between operands when neither is a string.
fn sprint(out: &mut Sink, args: &[Value]) -> Result<(), Overflow> {
    for (k, a) in args.iter().enumerate() {
        if k > 0 && !matches!(a, Value::Str(_)) && !matches!(args[k - 1], Value::Str(_)) {
            out.push(" ")?;
        }
        write_v(out, a)?;
    }
    Ok(())
}

/// The one string argument of `html`/`urlquery`, or its operands printed.
fn sprint_single(budget: &mut Budget, args: &[Value]) -> Result<Rc<str>, String> {
    match args {
        [Value::Str(s)] => Ok(Rc::clone(s)),
        _ => match build(budget, |out| sprint(out, args))? {
            Value::Str(s) => Ok(s),
            _ => Ok(Rc::from("")),
        },
    }
}

fn html_escape(out: &mut Sink, s: &str) -> Result<(), Overflow> {
    for c in s.chars() {
        match c {
            '&' => out.push("&amp;")?,
            '\'' => out.push("&#39;")?,
            '<' => out.push("&lt;")?,
            '>' => out.push("&gt;")?,
            '"' => out.push("&#34;")?,
            '\0' => out.push_char('\u{FFFD}')?,
            c => out.push_char(c)?,
        }
    }
    Ok(())
}

fn query_escape(out: &mut Sink, s: &str) -> Result<(), Overflow> {
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push_char(char::from(b))?
            }
            b' ' => out.push("+")?,
            b => out.push(&format!("%{b:02X}"))?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[test]
    fn loop_forms() {
        renders(&[
            ("{{ loop 5 }}", "[0 1 2 3 4]"),
            ("{{ loop 2 5 }}", "[2 3 4]"),
            ("{{ loop 5 1 }}", "[5 4 3 2]"),
            ("{{ loop \"2\" \"5\" }}", "[2 3 4]"),
            ("{{ loop .COUNT }}", "[0 1 2]"),
            ("{{ loop 0 }}", "[]"),
            ("{{ loop 3 3 }}", "[]"),
            ("{{ loop -2 }}", "[0 -1]"),
            ("{{ range $i := loop 2 5 }}{{ $i }},{{ end }}", "2,3,4,"),
            ("{{ range loop 3 }}<{{ . }}>{{ end }}", "<0><1><2>"),
        ]);
    }

    #[test]
    fn loop_errors() {
        fails(&[
            (
                "{{ loop 1 2 3 }}",
                "error calling loop: loop: wrong number of arguments, expected 1 or 2, but got 3",
            ),
            (
                "{{ loop }}",
                "error calling loop: loop: wrong number of arguments, expected 1 or 2, but got 0",
            ),
            (
                "{{ loop \"x\" }}",
                "error calling loop: loop: invalid integer \"x\"",
            ),
            (
                "{{ loop 1.5 }}",
                "error calling loop: loop: unsupported type float64",
            ),
        ]);
        assert!(err_msg("{{ loop 0 100001 }}").contains("more than the limit"));
    }

    #[test]
    fn env_function() {
        renders(&[
            ("{{ env \"NAME\" }}", "my-service"),
            ("{{ env \"FOO\" }}", "a=b"),
            ("[{{ env \"NOPE\" }}]", "[]"),
        ]);
        assert_eq!(
            err_msg("{{ env 5 }}"),
            "error calling env: wrong type for value; expected string; got int"
        );
    }

    #[test]
    fn default_function() {
        renders(&[
            ("{{ .NONEXISTENT | default \"default\" }}", "default"),
            ("{{ .NAME | default \"default\" }}", "my-service"),
            ("{{ .EMPTY | default 10 }}", "10"),
            ("{{ .NONEXISTENT | default 10.1 }}", "10.1"),
            ("{{ default \"x\" .NAME }}", "my-service"),
            ("{{ default \"x\" 5 }}", "x"),
            ("{{ default true .EMPTY }}", "true"),
        ]);
        assert_eq!(
            err_msg("{{ default \"x\" }}"),
            "wrong number of args for default: want 2 got 1"
        );
    }

    #[test]
    fn split_join_replace_regex() {
        renders(&[
            ("{{ .LIST | split \",\" | join \".\" }}", "a.b.c"),
            ("{{ split \",\" .LIST }}", "[a b c]"),
            ("{{ len (split \",\" .EMPTY) }}", "0"),
            ("[{{ split \",\" .EMPTY | join \"-\" }}]", "[]"),
            ("{{ join \"-\" (loop 3) }}", "0-1-2"),
            ("{{ .NAME | replaceAll \"-\" \"_\" }}", "my_service"),
            ("{{ replaceAll \"x\" \"y\" \"axbxc\" }}", "aybyc"),
            (
                "{{ .NAME | regexReplaceAll \"^([a-z]+)-([a-z]+)$\" \"$2-$1\" }}",
                "service-my",
            ),
            (
                "{{ regexReplaceAll \"[0-9]+\" \"<${0}>\" \"a1b22\" }}",
                "a<1>b<22>",
            ),
            (
                "{{ regexReplaceAll `(\\w+)@(\\w+)` \"${2}_$1\" \"me@host\" }}",
                "host_me",
            ),
        ]);
        let msg = err_msg("{{ regexReplaceAll \"(\" \"x\" \"y\" }}");
        assert!(
            msg.starts_with("error calling regexReplaceAll: error parsing regexp:"),
            "{msg}"
        );
        assert_eq!(
            err_msg("{{ join \",\" \"abc\" }}"),
            "error calling join: wrong type for value; expected []string; got string"
        );
    }

    #[test]
    fn comparisons_and_logic() {
        renders(&[
            (
                "{{ eq 1 1 }} {{ eq 1 2 }} {{ eq \"a\" \"b\" \"a\" }} {{ ne \"a\" \"b\" }}",
                "true false true true",
            ),
            (
                "{{ lt 1 2 }} {{ le 2 2 }} {{ gt \"b\" \"a\" }} {{ ge 1.5 2.5 }}",
                "true true true false",
            ),
            (
                "{{ and 1 0 2 }} {{ and 1 2 }} {{ or 0 \"\" }} {{ or 0 \"x\" 3 }}",
                "0 2  x",
            ),
            ("{{ not 0 }} {{ not .NAME }}", "true false"),
        ]);
        // and/or stop at the deciding argument: the bad call is never made
        renders(&[
            ("{{ or .NAME (loop 1 2 3) }}", "my-service"),
            ("{{ and .EMPTY (loop 1 2 3) }}", ""),
            ("{{ .NAME | and 1 }}", "my-service"),
        ]);
        fails(&[
            (
                "{{ eq 1 \"1\" }}",
                "error calling eq: incompatible types for comparison",
            ),
            (
                "{{ lt true false }}",
                "error calling lt: invalid type for comparison",
            ),
            (
                "{{ eq 1 }}",
                "error calling eq: missing argument for comparison",
            ),
            ("{{ not }}", "wrong number of args for not: want 1 got 0"),
        ]);
    }

    #[test]
    fn len_index_slice() {
        renders(&[
            (
                "{{ len .NAME }} {{ len (loop 4) }} {{ len .MISSING }}",
                "10 4 0",
            ),
            (
                "{{ index (loop 5 10) 2 }} {{ index . \"COUNT\" }} [{{ index . \"NOPE\" }}]",
                "7 3 []",
            ),
            ("{{ index \"abc\" 1 }}", "98"),
            (
                "{{ slice \"abcdef\" 1 3 }} {{ slice (loop 5) 2 }}",
                "bc [2 3 4]",
            ),
        ]);
        fails(&[
            (
                "{{ index (loop 3) 5 }}",
                "error calling index: index out of range: 5",
            ),
            (
                "{{ index (loop 3) -1 }}",
                "error calling index: index out of range: -1",
            ),
            ("{{ len 3 }}", "error calling len: len of type int"),
        ]);
    }

    #[test]
    fn print_functions() {
        renders(&[
            ("{{ print \"a\" 1 2 \"b\" true false }}", "a1 2btrue false"),
            ("{{ println \"a\" 1 }}", "a 1\n"),
            (
                "{{ printf \"%s|%d|%v|%q|%%\" \"x\" 42 (loop 2) \"q\\\"\" }}",
                "x|42|[0 1]|\"q\\\"\"|%",
            ),
            (
                "{{ printf \"%5s|%-5s|%05d|%x|%X|%o\" \"ab\" \"cd\" -42 255 255 8 }}",
                "   ab|cd   |-0042|ff|FF|10",
            ),
            (
                "{{ printf \"%.2f|%f|%8.3f|%e|%g|%.3g\" 3.14159 1.5 2.0 1234.5678 0.5 1234.5678 }}",
                "3.14|1.500000|   2.000|1.234568e+03|0.5|1.23e+03",
            ),
            (
                "{{ printf \"%v %v %t %.3s %+d\" 10.1 true false \"abcdef\" 5 }}",
                "10.1 true false abc +5",
            ),
            ("{{ printf \"%d %s\" \"x\" }}", "%!d(string=x) %!s(MISSING)"),
            ("{{ printf \"%d\" 1 2 }}", "1%!(EXTRA int=2)"),
            (
                "{{ printf \"%x\" \"hi\" }} {{ printf \"%*d\" 4 7 }} {{ printf \"%T\" 1.5 }}",
                "6869    7 float64",
            ),
            (
                "{{ html \"<a href='x'>&</a>\" }} {{ urlquery \"a b&c\" }}",
                "&lt;a href=&#39;x&#39;&gt;&amp;&lt;/a&gt; a+b%26c",
            ),
        ]);
    }

    /// Inputs that would need gigabytes are refused before anything is built.
    #[test]
    fn bombs_are_errors_within_budget() {
        let big = "(printf \"%0100000d\" 0)";
        let cases = [
            (
                format!("/* {{{{join {big} (split \"\" {big})}}}} */"),
                "error calling join: result exceeds 16777216 bytes",
            ),
            (
                format!("{{{{ replaceAll \"\" {big} {big} }}}}"),
                "error calling replaceAll: result exceeds 16777216 bytes",
            ),
            (
                format!("{{{{ regexReplaceAll \"\" {big} {big} }}}}"),
                "error calling regexReplaceAll: result exceeds 16777216 bytes",
            ),
            (
                format!(
                    "{{{{ regexReplaceAll \"0{{100}}\" \"{}\" (printf \"%s%s%s\" {big} {big} {big}) }}}}",
                    "$0".repeat(200)
                ),
                "error calling regexReplaceAll: result exceeds 16777216 bytes",
            ),
            (
                "{{ split \"\" (printf \"%0200000d\" 0) }}".to_string(),
                "error calling split: split: 200000 elements is more than the limit of 100000",
            ),
            (
                "{{ loop -100000000 100000000 }}".to_string(),
                "error calling loop: loop: 200000000 elements is more than the limit of 100000",
            ),
            (
                "{{ printf \"%1000000v\" (loop 100000) }}".to_string(),
                "error calling printf: result exceeds 16777216 bytes",
            ),
            (
                format!(
                    "{{{{ $a := printf \"%01000000d\" 0 }}}}{}",
                    "{{ $a = printf \"%s%s\" $a $a }}".repeat(5)
                ),
                "error calling printf: result exceeds 16777216 bytes",
            ),
            (
                "{{ range loop 100 }}{{ $x := printf \"%01000000d\" 0 }}{{ end }}".to_string(),
                "error calling printf: the values this template builds exceed 67108864 bytes",
            ),
            (
                "{{ printf \"%01000000d\" 0 | replaceAll \"0\" \"<\" | html | html | html | html | html }}"
                    .to_string(),
                "error calling html: result exceeds 16777216 bytes",
            ),
            (
                "{{ join \"\" (split \",\" (printf \"%099999d\" 0 | replaceAll \"0\" \",\")) | len }}".to_string(),
                "",
            ),
        ];
        for (src, want) in cases {
            match render(&src, &env_of(&[])) {
                Err(e) => assert_eq!(e.msg, want, "{src}"),
                Ok(out) => assert!(want.is_empty(), "{src} rendered {} bytes", out.len()),
            }
        }
    }

    #[test]
    fn evaluation_steps_are_bounded() {
        let body = "{{ $x := 1 }}".repeat(12);
        let src = format!(
            "{{{{ range loop 100000 }}}}{{{{ range loop 9 }}}}{body}{{{{ end }}}}{{{{ end }}}}"
        );
        match render(&src, &env_of(&[])) {
            Err(e) => assert_eq!(e.msg, "more than 10000000 evaluation steps"),
            Ok(out) => panic!("rendered {} bytes", out.len()),
        }
        // what a real config does stays far below every limit
        let src = "{{ range $i := loop 1000 }}{{ printf \"%05d\" $i | replaceAll \"0\" \"o\" }},{{ end }}";
        assert_eq!(r(src).len(), 6000);
    }
}
