//! The lexer: template text becomes text items and actions, an action a list
//! of tokens. Trim markers (`{{-`, `-}}`) and comments are handled here.

use super::fmt::go_quote;
use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    /// Function name or keyword (`if`, `end`, ...).
    Ident(String),
    /// `.Name`
    Field(String),
    Dot,
    /// `$` or `$name`, including the `$`.
    Var(String),
    Str(String),
    /// Number text as written; validated by the parser so the error names it.
    Num(String),
    Char(i64),
    Bool(bool),
    Nil,
    LParen,
    RParen,
    Pipe,
    Comma,
    Declare,
    Assign,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Ident(s) => write!(f, "<{s}>"),
            Tok::Field(s) => write!(f, "<.{s}>"),
            Tok::Dot => f.write_str("<.>"),
            Tok::Var(s) => write!(f, "<{s}>"),
            Tok::Str(s) => write!(f, "{}", go_quote(s)),
            Tok::Num(s) => write!(f, "<{s}>"),
            Tok::Char(c) => write!(f, "<{c}>"),
            Tok::Bool(b) => write!(f, "<{b}>"),
            Tok::Nil => f.write_str("<nil>"),
            Tok::LParen => f.write_str("\"(\""),
            Tok::RParen => f.write_str("\")\""),
            Tok::Pipe => f.write_str("\"|\""),
            Tok::Comma => f.write_str("\",\""),
            Tok::Declare => f.write_str("\":=\""),
            Tok::Assign => f.write_str("\"=\""),
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct Token {
    pub(super) tok: Tok,
    /// Whitespace (or the delimiter) came right before it; a `.Field` chains
    /// onto the previous term only when this is false.
    pub(super) spaced: bool,
}

#[derive(Debug)]
pub(super) enum Item {
    Text(usize, String),
    Action(usize, Vec<Token>),
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_word_char(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

pub(super) fn lex(src: &str) -> Result<Vec<Item>, (usize, String)> {
    let mut items = Vec::new();
    let mut i = 0;
    let mut trim_next = false;
    loop {
        let open = src[i..].find("{{").map(|k| k + i);
        let mut text = &src[i..open.unwrap_or(src.len())];
        if trim_next {
            text = text.trim_start_matches(is_space);
        }
        let Some(open) = open else {
            if !text.is_empty() {
                items.push(Item::Text(i, text.to_string()));
            }
            return Ok(items);
        };
        let mut p = open + 2;
        let rest = &src[p..];
        if rest.starts_with('-') && rest[1..].starts_with(is_space) {
            text = text.trim_end_matches(is_space);
            p += 2;
        }
        if !text.is_empty() {
            items.push(Item::Text(i, text.to_string()));
        }
        if src[p..].starts_with("/*") {
            let Some(close) = src[p + 2..].find("*/") else {
                return Err((open, "unclosed comment".to_string()));
            };
            let q = p + 2 + close + 2;
            let after = &src[q..];
            if after.starts_with("}}") {
                i = q + 2;
                trim_next = false;
            } else if after.starts_with(is_space) && after[1..].starts_with("-}}") {
                i = q + 4;
                trim_next = true;
            } else {
                return Err((open, "comment ends before closing delimiter".to_string()));
            }
            continue;
        }
        let (toks, next, trim) = lex_action(src, p).map_err(|m| (open, m))?;
        items.push(Item::Action(open, toks));
        i = next;
        trim_next = trim;
    }
}

/// Lexes the inside of one action starting at `p`; returns its tokens, the
/// offset after the closing delimiter and whether that delimiter trims.
fn lex_action(src: &str, mut p: usize) -> Result<(Vec<Token>, usize, bool), String> {
    let mut toks = Vec::new();
    let mut spaced = true;
    loop {
        let rest = &src[p..];
        let Some(c) = rest.chars().next() else {
            return Err("unclosed action".to_string());
        };
        if rest.starts_with("}}") {
            return Ok((toks, p + 2, false));
        }
        if is_space(c) {
            let n = rest.len() - rest.trim_start_matches(is_space).len();
            p += n;
            if src[p..].starts_with("-}}") {
                return Ok((toks, p + 3, true));
            }
            spaced = true;
            continue;
        }
        let next = rest[c.len_utf8()..].chars().next();
        let (tok, len) = match c {
            '"' => lex_quote(rest)?,
            '`' => match rest[1..].find('`') {
                Some(k) => (Tok::Str(rest[1..1 + k].to_string()), k + 2),
                None => return Err("unterminated raw quoted string".to_string()),
            },
            '\'' => lex_char(rest)?,
            '(' => (Tok::LParen, 1),
            ')' => (Tok::RParen, 1),
            '|' => (Tok::Pipe, 1),
            ',' => (Tok::Comma, 1),
            '=' => (Tok::Assign, 1),
            ':' if next == Some('=') => (Tok::Declare, 2),
            ':' => return Err("expected :=".to_string()),
            '$' => {
                let n = word_len(&rest[1..]);
                (Tok::Var(rest[..1 + n].to_string()), 1 + n)
            }
            '.' if next.is_some_and(|d| d.is_ascii_digit()) => lex_number(rest),
            '.' if next.is_some_and(is_word_char) => {
                let n = word_len(&rest[1..]);
                (Tok::Field(rest[1..1 + n].to_string()), 1 + n)
            }
            '.' => (Tok::Dot, 1),
            '0'..='9' => lex_number(rest),
            '+' | '-' if starts_number(&rest[1..]) => lex_number(rest),
            c if is_word_char(c) => {
                let n = word_len(rest);
                let word = &rest[..n];
                let tok = match word {
                    "true" => Tok::Bool(true),
                    "false" => Tok::Bool(false),
                    "nil" => Tok::Nil,
                    _ => Tok::Ident(word.to_string()),
                };
                (tok, n)
            }
            c => return Err(format!("unrecognized character in action: {c:?}")),
        };
        toks.push(Token { tok, spaced });
        spaced = false;
        p += len;
    }
}

fn word_len(s: &str) -> usize {
    s.find(|c: char| !is_word_char(c)).unwrap_or(s.len())
}

fn starts_number(s: &str) -> bool {
    let mut it = s.chars();
    match it.next() {
        Some(d) if d.is_ascii_digit() => true,
        Some('.') => it.next().is_some_and(|d| d.is_ascii_digit()),
        _ => false,
    }
}

/// Takes the longest run that could be part of a number; the parser rejects
/// runs that are not one (`1abc`), like Go's "bad number syntax".
fn lex_number(s: &str) -> (Tok, usize) {
    let mut prev = ' ';
    let mut len = 0;
    for (k, c) in s.char_indices() {
        let sign_ok = (k == 0 || matches!(prev, 'e' | 'E' | 'p' | 'P')) && (c == '+' || c == '-');
        if !(sign_ok || c == '.' || is_word_char(c)) {
            break;
        }
        prev = c;
        len = k + c.len_utf8();
    }
    (Tok::Num(s[..len].to_string()), len)
}

/// Byte offset of the quote closing the literal that `s` opens, skipping
/// escaped characters; `None` when the line ends first.
fn closing_quote(s: &str, quote: char) -> Option<usize> {
    let mut escaped = false;
    for (k, c) in s.char_indices().skip(1) {
        if c == '\n' {
            break;
        }
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == quote {
            return Some(k);
        }
    }
    None
}

fn lex_quote(s: &str) -> Result<(Tok, usize), String> {
    let k = closing_quote(s, '"').ok_or("unterminated quoted string")?;
    let body = unescape(&s[1..k]).ok_or_else(|| format!("invalid syntax: {}", &s[..=k]))?;
    Ok((Tok::Str(body), k + 1))
}

fn lex_char(s: &str) -> Result<(Tok, usize), String> {
    let k = closing_quote(s, '\'').ok_or("unterminated character constant")?;
    let body = unescape(&s[1..k]).unwrap_or_default();
    let mut chars = body.chars();
    match (chars.next(), chars.next()) {
        (Some(ch), None) => Ok((Tok::Char(i64::from(u32::from(ch))), k + 1)),
        _ => Err(format!("malformed character constant: {}", &s[..=k])),
    }
}

/// Go string-literal escapes; `None` for an invalid one.
fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let e = it.next()?;
        let ch = match e {
            'a' => '\u{7}',
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'v' => '\u{b}',
            '\\' | '\'' | '"' => e,
            'x' => hex_char(&mut it, 2)?,
            'u' => hex_char(&mut it, 4)?,
            'U' => hex_char(&mut it, 8)?,
            '0'..='7' => {
                let mut v = e.to_digit(8)?;
                for _ in 0..2 {
                    v = v * 8 + it.next()?.to_digit(8)?;
                }
                if v > 255 {
                    return None;
                }
                char::from_u32(v)?
            }
            _ => return None,
        };
        out.push(ch);
    }
    Some(out)
}

fn hex_char(it: &mut std::str::Chars<'_>, n: usize) -> Option<char> {
    let mut v: u32 = 0;
    for _ in 0..n {
        v = v * 16 + it.next()?.to_digit(16)?;
    }
    char::from_u32(v)
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[test]
    fn plain_text_and_literals() {
        renders(&[
            ("", ""),
            ("no actions } { }}", "no actions } { }}"),
            ("{{ \"a\\tb\\n\\\"q\\\"\\x41\\u00e9\" }}", "a\tb\n\"q\"Aé"),
            ("{{ `raw \\n {{ }}` }}", "raw \\n {{ }}"),
            (
                "{{ 42 }} {{ -7 }} {{ 0x1F }} {{ 010 }} {{ 'a' }}",
                "42 -7 31 8 97",
            ),
            (
                "{{ 10.1 }} {{ 1.0 }} {{ 1e6 }} {{ 0.000001 }} {{ 123456.5 }}",
                "10.1 1 1e+06 1e-06 123456.5",
            ),
            ("{{ true }} {{ false }}", "true false"),
            ("{{ \"}}\" }}", "}}"),
        ]);
    }

    #[test]
    fn trimming() {
        renders(&[
            ("a  \n\t {{- .NAME -}} \n\n  b", "amy-serviceb"),
            ("a {{- 1 }} b {{ 2 -}} c", "a1 b 2c"),
            ("{{-3}}", "-3"),
            ("x\n{{- /* comment */ -}}\ny", "xy"),
            ("x {{/* a\nmultiline comment */}} y", "x  y"),
            (
                "[\n  {{- range $i := loop 2 }}\n  {{ $i }},\n  {{- end }}\n]",
                "[\n  0,\n  1,\n]",
            ),
        ]);
    }
}
