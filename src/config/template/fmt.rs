//! Go's `fmt` for the verbs configs use: `printf`'s verbs, flags, widths
//! and precisions, and Go's float and string formatting. Output goes into a
//! bounded [`Sink`]; a piece is sized before it is formatted.

use super::budget::{Overflow, Sink, MAX_WIDTH};
use super::exec::{format_v, write_v, Value};

#[derive(Debug, Default, Clone, Copy)]
struct Spec {
    minus: bool,
    plus: bool,
    sharp: bool,
    space: bool,
    zero: bool,
    width: Option<usize>,
    prec: Option<usize>,
}

/// Go's fmt.Sprintf for the verbs configs use; mismatches render inline the
/// way Go does (`%!d(string=x)`, `%!s(MISSING)`, `%!(EXTRA ...)`).
pub(super) fn sprintf(out: &mut Sink, format: &str, args: &[Value]) -> Result<(), Overflow> {
    let mut it = format.chars().peekable();
    let mut argi = 0;
    while let Some(c) = it.next() {
        if c != '%' {
            out.push_char(c)?;
            continue;
        }
        let mut spec = Spec::default();
        while let Some(&f) = it.peek() {
            match f {
                '-' => spec.minus = true,
                '+' => spec.plus = true,
                '#' => spec.sharp = true,
                ' ' => spec.space = true,
                '0' => spec.zero = true,
                _ => break,
            }
            it.next();
        }
        match read_num(&mut it, args, &mut argi) {
            Num::None => {}
            Num::Some(w) if w < 0 => {
                spec.minus = true;
                spec.width = Some(w.unsigned_abs() as usize);
            }
            Num::Some(w) => spec.width = Some(w as usize),
            Num::Bad => out.push("%!(BADWIDTH)")?,
        }
        if it.peek() == Some(&'.') {
            it.next();
            spec.prec = match read_num(&mut it, args, &mut argi) {
                Num::None => Some(0),
                Num::Some(p) if p >= 0 => Some(p as usize),
                Num::Some(_) => None,
                Num::Bad => {
                    out.push("%!(BADPREC)")?;
                    None
                }
            };
        }
        let Some(verb) = it.next() else {
            out.push("%!(NOVERB)")?;
            break;
        };
        if verb == '%' {
            out.push("%")?;
            continue;
        }
        match args.get(argi) {
            None => out.push(&format!("%!{verb}(MISSING)"))?,
            Some(a) => {
                argi += 1;
                fmt_arg(out, a, verb, &spec)?;
            }
        }
    }
    if argi < args.len() {
        out.push("%!(EXTRA ")?;
        for (k, a) in args[argi..].iter().enumerate() {
            if k > 0 {
                out.push(", ")?;
            }
            if !matches!(a, Value::Nil) {
                out.push(a.type_name())?;
                out.push("=")?;
            }
            write_v(out, a)?;
        }
        out.push(")")?;
    }
    Ok(())
}

enum Num {
    None,
    Some(i64),
    Bad,
}

/// A width or precision: digits, or `*` taking an int argument.
fn read_num(
    it: &mut std::iter::Peekable<std::str::Chars<'_>>,
    args: &[Value],
    argi: &mut usize,
) -> Num {
    if it.peek() == Some(&'*') {
        it.next();
        let v = args.get(*argi);
        *argi += 1;
        return match v {
            Some(Value::Int(n)) if n.unsigned_abs() <= MAX_WIDTH as u64 => Num::Some(*n),
            _ => Num::Bad,
        };
    }
    let mut n: Option<u64> = None;
    while let Some(d) = it.peek().and_then(|c| c.to_digit(10)) {
        it.next();
        n = Some(
            n.unwrap_or(0)
                .saturating_mul(10)
                .saturating_add(u64::from(d)),
        );
    }
    match n {
        None => Num::None,
        Some(n) if n > MAX_WIDTH as u64 => Num::Bad,
        Some(n) => Num::Some(n as i64),
    }
}

/// An upper bound on what one scalar argument formats to, so that nothing
/// is formatted that could not fit.
fn piece_bound(v: &Value, spec: &Spec) -> usize {
    let natural = match v {
        // %q escapes a byte as at most four.
        Value::Str(s) => s.len().saturating_mul(4).saturating_add(32),
        _ => 400 + spec.prec.unwrap_or(0),
    };
    natural.saturating_add(spec.width.unwrap_or(0))
}

fn fmt_arg(out: &mut Sink, v: &Value, verb: char, spec: &Spec) -> Result<(), Overflow> {
    match (verb, v) {
        ('T', _) => {}
        (_, Value::List(l)) => {
            out.push("[")?;
            for (k, e) in l.iter().enumerate() {
                if k > 0 {
                    out.push(" ")?;
                }
                fmt_arg(out, e, verb, spec)?;
            }
            return out.push("]");
        }
        (_, Value::Map(m)) => {
            out.push("map[")?;
            for (k, (key, x)) in m.iter().enumerate() {
                if k > 0 {
                    out.push(" ")?;
                }
                fmt_arg(out, &Value::str(key), verb, spec)?;
                out.push(":")?;
                fmt_arg(out, &Value::Str(x.clone()), verb, spec)?;
            }
            return out.push("]");
        }
        (_, Value::Record(r)) => {
            out.push("{")?;
            for (k, (_, x)) in r.fields.iter().enumerate() {
                if k > 0 {
                    out.push(" ")?;
                }
                fmt_arg(out, x, verb, spec)?;
            }
            return out.push("}");
        }
        (_, Value::Str(_) | Value::Int(_) | Value::Float(_) | Value::Bool(_) | Value::Nil) => {}
    }
    if piece_bound(v, spec) > out.room() {
        return Err(Overflow);
    }
    out.push(&fmt_scalar(v, verb, spec))
}

fn fmt_scalar(v: &Value, verb: char, spec: &Spec) -> String {
    if verb == 'T' {
        return pad(v.type_name().to_string(), spec);
    }
    match (verb, v) {
        ('v' | 's', Value::Str(s)) => {
            let s = match spec.prec {
                Some(p) => s.chars().take(p).collect(),
                None => s.to_string(),
            };
            pad(s, spec)
        }
        ('q', Value::Str(s)) => pad(go_quote(s), spec),
        ('x' | 'X', Value::Str(s)) => {
            let bytes = &s.as_bytes()[..spec.prec.unwrap_or(usize::MAX).min(s.len())];
            let mut hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            if verb == 'X' {
                hex = hex.to_uppercase();
            }
            pad(hex, spec)
        }
        ('v' | 'd', Value::Int(i)) => fmt_int(*i, 10, false, spec),
        ('x', Value::Int(i)) => fmt_int(*i, 16, false, spec),
        ('X', Value::Int(i)) => fmt_int(*i, 16, true, spec),
        ('o', Value::Int(i)) => fmt_int(*i, 8, false, spec),
        ('b', Value::Int(i)) => fmt_int(*i, 2, false, spec),
        ('c', Value::Int(i)) => {
            let c = u32::try_from(*i)
                .ok()
                .and_then(char::from_u32)
                .unwrap_or('\u{FFFD}');
            pad(c.to_string(), spec)
        }
        ('q', Value::Int(i)) => {
            let c = u32::try_from(*i)
                .ok()
                .and_then(char::from_u32)
                .unwrap_or('\u{FFFD}');
            let q = go_quote(&c.to_string());
            let inner = q[1..q.len() - 1].replace("\\\"", "\"").replace('\'', "\\'");
            pad(format!("'{inner}'"), spec)
        }
        ('v' | 'g' | 'G' | 'e' | 'E' | 'f' | 'F', Value::Float(f)) => fmt_float(*f, verb, spec),
        ('v' | 't', Value::Bool(b)) => pad(b.to_string(), spec),
        ('v', Value::Nil) => pad("<nil>".to_string(), spec),
        (_, Value::Nil) => format!("%!{verb}(<nil>)"),
        (_, v) => format!("%!{verb}({}={})", v.type_name(), format_v(v)),
    }
}

fn pad(s: String, spec: &Spec) -> String {
    let n = s.chars().count();
    match spec.width {
        Some(w) if w > n => {
            let fill = " ".repeat(w - n);
            if spec.minus {
                s + &fill
            } else {
                fill + &s
            }
        }
        _ => s,
    }
}

/// Pads a number, putting zero padding between its sign/prefix and digits.
fn pad_number(sign: &str, body: String, spec: &Spec, zero_ok: bool) -> String {
    let len = sign.chars().count() + body.chars().count();
    match spec.width {
        Some(w) if w > len && spec.zero && !spec.minus && zero_ok => {
            format!("{sign}{}{body}", "0".repeat(w - len))
        }
        _ => pad(format!("{sign}{body}"), spec),
    }
}

fn sign_of(neg: bool, spec: &Spec) -> &'static str {
    if neg {
        "-"
    } else if spec.plus {
        "+"
    } else if spec.space {
        " "
    } else {
        ""
    }
}

fn fmt_int(i: i64, base: u32, upper: bool, spec: &Spec) -> String {
    let mag = i.unsigned_abs();
    let mut digits = match base {
        16 if upper => format!("{mag:X}"),
        16 => format!("{mag:x}"),
        8 => format!("{mag:o}"),
        2 => format!("{mag:b}"),
        _ => mag.to_string(),
    };
    if let Some(p) = spec.prec {
        if p == 0 && mag == 0 {
            digits.clear();
        } else if digits.len() < p {
            digits = "0".repeat(p - digits.len()) + &digits;
        }
    }
    let prefix = match (spec.sharp, base) {
        (true, 16) if upper => "0X",
        (true, 16) => "0x",
        (true, 8) if !digits.starts_with('0') => "0",
        (true, 2) => "0b",
        _ => "",
    };
    let sign = format!("{}{prefix}", sign_of(i < 0, spec));
    pad_number(&sign, digits, spec, spec.prec.is_none())
}

fn fmt_float(f: f64, verb: char, spec: &Spec) -> String {
    if !f.is_finite() {
        let body = if f.is_nan() {
            "NaN"
        } else if f < 0.0 {
            "-Inf"
        } else {
            "+Inf"
        };
        let body = if f.is_nan() && (spec.plus || spec.space) {
            format!("{}NaN", if spec.plus { "+" } else { " " })
        } else if body == "+Inf" && !spec.plus {
            if spec.space {
                " Inf".to_string()
            } else {
                "+Inf".to_string()
            }
        } else {
            body.to_string()
        };
        return pad(body, spec);
    }
    let neg = f.is_sign_negative();
    let a = f.abs();
    let body = match verb {
        'e' | 'E' => {
            let s = float_e(a, spec.prec.unwrap_or(6));
            if verb == 'E' {
                s.to_uppercase()
            } else {
                s
            }
        }
        'f' | 'F' => format!("{:.*}", spec.prec.unwrap_or(6), a),
        'G' => float_g(a, spec.prec).to_uppercase(),
        _ => float_g(a, spec.prec),
    };
    pad_number(sign_of(neg, spec), body, spec, true)
}

/// Digits (no trailing zeros, at least one) and decimal exponent of a
/// non-negative finite float, shortest round-trip or rounded to `sig` digits.
fn float_digits(a: f64, sig: Option<usize>) -> (Vec<u8>, i32) {
    let s = match sig {
        Some(n) => format!("{:.*e}", n.max(1) - 1, a),
        None => format!("{a:e}"),
    };
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let mut digits: Vec<u8> = mant.bytes().filter(u8::is_ascii_digit).collect();
    while digits.len() > 1 && digits.last() == Some(&b'0') {
        digits.pop();
    }
    if digits.is_empty() {
        digits.push(b'0');
    }
    (digits, exp)
}

fn exp_suffix(exp: i32) -> String {
    let sign = if exp < 0 { '-' } else { '+' };
    format!("e{sign}{:02}", exp.unsigned_abs())
}

/// Go's `%.Ne` of a non-negative finite float.
fn float_e(a: f64, prec: usize) -> String {
    let s = format!("{:.*e}", prec, a);
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    format!("{mant}{}", exp_suffix(exp.parse().unwrap_or(0)))
}

/// Go's `%g`/`%v` (prec `None` = shortest) of a float; sign included.
pub(super) fn float_g(f: f64, prec: Option<usize>) -> String {
    if !f.is_finite() {
        return if f.is_nan() {
            "NaN".to_string()
        } else if f < 0.0 {
            "-Inf".to_string()
        } else {
            "+Inf".to_string()
        };
    }
    let sign = if f.is_sign_negative() { "-" } else { "" };
    let (digits, exp) = float_digits(f.abs(), prec);
    let nd = digits.len() as i64;
    let dp = i64::from(exp) + 1;
    let (mut p, eprec) = match prec {
        None => (nd, 6),
        Some(p) => {
            let p = p.max(1) as i64;
            let eprec = if p > nd && nd >= dp { nd } else { p };
            (p, eprec)
        }
    };
    let exp = i64::from(exp);
    let body = if exp < -4 || exp >= eprec {
        p = p.min(nd);
        let mut s = String::new();
        s.push(char::from(digits[0]));
        if p > 1 {
            s.push('.');
            for k in 1..p as usize {
                s.push(char::from(*digits.get(k).unwrap_or(&b'0')));
            }
        }
        s + &exp_suffix(exp as i32)
    } else {
        if p > dp {
            p = nd;
        }
        let decimals = (p - dp).max(0);
        let digit = |k: i64| -> char {
            if k >= 0 && k < nd {
                char::from(digits[k as usize])
            } else {
                '0'
            }
        };
        let mut s = String::new();
        if dp > 0 {
            for k in 0..dp {
                s.push(digit(k));
            }
        } else {
            s.push('0');
        }
        if decimals > 0 {
            s.push('.');
            for k in 0..decimals {
                s.push(digit(dp + k));
            }
        }
        s
    };
    format!("{sign}{body}")
}

/// Go's strconv.Quote.
pub(super) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `%v` of a float.
pub(super) fn format_float_v(f: f64) -> String {
    float_g(f, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_formatting_like_go() {
        assert_eq!(format_float_v(10.1), "10.1");
        assert_eq!(format_float_v(100000.0), "100000");
        assert_eq!(format_float_v(1234567.0), "1.234567e+06");
        assert_eq!(format_float_v(0.0001), "0.0001");
        assert_eq!(format_float_v(0.00001), "1e-05");
        assert_eq!(format_float_v(-2.5), "-2.5");
        assert_eq!(format_float_v(0.0), "0");
        assert_eq!(format_float_v(1e21), "1e+21");
        assert_eq!(float_g(100.0, Some(2)), "1e+02");
        assert_eq!(float_g(1.0, Some(3)), "1");
    }
}
