//! The Go `text/template` subset ContainerPilot renders its config file with.
//!
//! The whole file is one template named `config`; `.` is the environment as a
//! string map and missing keys render empty (Go's `missingkey=zero` on a
//! `map[string]string`). Parsing happens fully before execution, so errors in
//! branches that are never taken (undefined functions or variables, missing
//! `{{end}}`) are still reported, as Go does.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::rc::Rc;

/// Nesting of controls and parentheses; keeps recursion far from the stack limit.
const MAX_DEPTH: usize = 100;
/// Largest list `loop` may build.
const MAX_LOOP: i128 = 100_000;
/// Total `range` iterations per render, so no template can spin forever.
const MAX_STEPS: u64 = 1_000_000;
/// Largest rendered output or intermediate string.
const MAX_OUTPUT: usize = 64 << 20;
/// Go's fmt refuses widths and precisions above this.
const MAX_WIDTH: usize = 1_000_000;

/// A parse or execution error, positioned at the action that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub line: usize,
    pub col: usize,
    pub msg: String,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "template: config:{}:{}: {}",
            self.line, self.col, self.msg
        )
    }
}

impl std::error::Error for TemplateError {}

/// Render `src` with data `.` = the environment map (full values, SPEC §2.12: FOO=a=b renders a=b).
/// Missing keys render as "" (Go missingkey=zero on map[string]string).
pub fn render(src: &str, env: &HashMap<String, String>) -> Result<String, TemplateError> {
    let items = lex(src).map_err(|(off, msg)| error_at(src, off, msg))?;
    let nodes = Parser::new(src, items).parse_root()?;
    let env: Rc<BTreeMap<String, String>> =
        Rc::new(env.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
    let root = Value::Map(Rc::clone(&env));
    let mut exec = Exec {
        src,
        env,
        vars: vec![("$".to_string(), root.clone())],
        out: String::new(),
        steps: 0,
    };
    exec.exec_list(&nodes, &root)?;
    Ok(exec.out)
}

/// 1-based line and column (in characters) of byte offset `off`.
fn error_at(src: &str, off: usize, msg: impl Into<String>) -> TemplateError {
    let mut off = off.min(src.len());
    while !src.is_char_boundary(off) {
        off -= 1;
    }
    let before = &src[..off];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    TemplateError {
        line,
        col,
        msg: msg.into(),
    }
}

// ---------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, PartialEq)]
enum Tok {
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
struct Token {
    tok: Tok,
    /// Whitespace (or the delimiter) came right before it; a `.Field` chains
    /// onto the previous term only when this is false.
    spaced: bool,
}

#[derive(Debug)]
enum Item {
    Text(usize, String),
    Action(usize, Vec<Token>),
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_word_char(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

fn lex(src: &str) -> Result<Vec<Item>, (usize, String)> {
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

fn lex_quote(s: &str) -> Result<(Tok, usize), String> {
    let mut escaped = false;
    for (k, c) in s.char_indices().skip(1) {
        if c == '\n' {
            break;
        }
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            let body = unescape(&s[1..k]).ok_or_else(|| format!("invalid syntax: {}", &s[..=k]))?;
            return Ok((Tok::Str(body), k + 1));
        }
    }
    Err("unterminated quoted string".to_string())
}

fn lex_char(s: &str) -> Result<(Tok, usize), String> {
    let mut escaped = false;
    for (k, c) in s.char_indices().skip(1) {
        if c == '\n' {
            break;
        }
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '\'' {
            let body = unescape(&s[1..k]).unwrap_or_default();
            let mut chars = body.chars();
            return match (chars.next(), chars.next()) {
                (Some(ch), None) => Ok((Tok::Char(i64::from(u32::from(ch))), k + 1)),
                _ => Err(format!("malformed character constant: {}", &s[..=k])),
            };
        }
    }
    Err("unterminated character constant".to_string())
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

// ---------------------------------------------------------------------------
// Parse tree

#[derive(Debug)]
enum Node {
    Text(usize, String),
    Action(usize, Pipe),
    Cond(Cond),
    Range(Range),
    Break,
    Continue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CondKind {
    If,
    With,
}

impl CondKind {
    fn name(self) -> &'static str {
        match self {
            CondKind::If => "if",
            CondKind::With => "with",
        }
    }
}

#[derive(Debug)]
struct Branch {
    off: usize,
    pipe: Pipe,
    body: Vec<Node>,
}

/// An `if` or `with` with its `else if`/`else with` chain flattened, so long
/// chains cost no recursion.
#[derive(Debug)]
struct Cond {
    kind: CondKind,
    branches: Vec<Branch>,
    els: Vec<Node>,
}

#[derive(Debug)]
struct Range {
    off: usize,
    pipe: Pipe,
    body: Vec<Node>,
    els: Vec<Node>,
}

#[derive(Debug)]
struct Pipe {
    decl: Vec<String>,
    /// `=` instead of `:=`.
    assign: bool,
    cmds: Vec<Cmd>,
}

#[derive(Debug)]
struct Cmd {
    args: Vec<Arg>,
}

#[derive(Debug)]
enum Arg {
    Func(String),
    Dot,
    Field(Vec<String>),
    Var(String, Vec<String>),
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Nil,
    Pipe(Box<Pipe>),
    Chain(Box<Pipe>, Vec<String>),
}

impl Arg {
    fn describe(&self) -> String {
        match self {
            Arg::Func(n) => n.clone(),
            Arg::Dot => ".".to_string(),
            Arg::Field(f) => format!(".{}", f.join(".")),
            Arg::Var(n, f) if f.is_empty() => n.clone(),
            Arg::Var(n, f) => format!("{n}.{}", f.join(".")),
            Arg::Str(s) => go_quote(s),
            Arg::Int(i) => i.to_string(),
            Arg::Float(x) => format_float_v(*x),
            Arg::Bool(b) => b.to_string(),
            Arg::Nil => "nil".to_string(),
            Arg::Pipe(_) => "(pipeline)".to_string(),
            Arg::Chain(_, f) => format!("(pipeline).{}", f.join(".")),
        }
    }
}

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

const KEYWORDS: &[&str] = &[
    "block", "break", "continue", "define", "else", "end", "if", "range", "template", "with",
];

// ---------------------------------------------------------------------------
// Parser

/// The tokens of one action and a read position.
struct Cur {
    off: usize,
    toks: Vec<Token>,
    i: usize,
}

impl Cur {
    fn peek(&self) -> Option<&Token> {
        self.toks.get(self.i)
    }

    fn peek_tok(&self, k: usize) -> Option<&Tok> {
        self.toks.get(self.i + k).map(|t| &t.tok)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.i).map(|t| t.tok.clone());
        if t.is_some() {
            self.i += 1;
        }
        t
    }

    fn keyword(&self) -> Option<&str> {
        match self.peek_tok(0) {
            Some(Tok::Ident(s)) if KEYWORDS.contains(&s.as_str()) => Some(s.as_str()),
            _ => None,
        }
    }
}

enum Stop {
    End(usize),
    Else(usize, Option<Cur>),
    Eof,
}

struct Parser<'s> {
    src: &'s str,
    items: std::vec::IntoIter<Item>,
    vars: Vec<String>,
    depth: usize,
    range_depth: usize,
}

impl<'s> Parser<'s> {
    fn new(src: &'s str, items: Vec<Item>) -> Self {
        Parser {
            src,
            items: items.into_iter(),
            vars: vec!["$".to_string()],
            depth: 0,
            range_depth: 0,
        }
    }

    fn err(&self, off: usize, msg: impl Into<String>) -> TemplateError {
        error_at(self.src, off, msg)
    }

    fn parse_root(&mut self) -> Result<Vec<Node>, TemplateError> {
        let (nodes, stop) = self.parse_list()?;
        match stop {
            Stop::Eof => Ok(nodes),
            Stop::End(off) => Err(self.err(off, "unexpected {{end}}")),
            Stop::Else(off, _) => Err(self.err(off, "unexpected {{else}}")),
        }
    }

    /// Parses nodes until `{{end}}`, `{{else}}` or the end of input.
    fn parse_list(&mut self) -> Result<(Vec<Node>, Stop), TemplateError> {
        let mut nodes = Vec::new();
        loop {
            let (off, toks) = match self.items.next() {
                None => return Ok((nodes, Stop::Eof)),
                Some(Item::Text(off, s)) => {
                    nodes.push(Node::Text(off, s));
                    continue;
                }
                Some(Item::Action(off, toks)) => (off, toks),
            };
            let mut cur = Cur { off, toks, i: 0 };
            let kw = cur.keyword().map(str::to_string);
            if kw.is_some() {
                cur.i += 1;
            }
            match kw.as_deref() {
                Some("end") => {
                    self.expect_end(&cur, "end")?;
                    return Ok((nodes, Stop::End(off)));
                }
                Some("else") => {
                    if matches!(cur.keyword(), Some("if" | "with")) {
                        return Ok((nodes, Stop::Else(off, Some(cur))));
                    }
                    self.expect_end(&cur, "else")?;
                    return Ok((nodes, Stop::Else(off, None)));
                }
                Some("if") => nodes.push(self.parse_cond(cur, CondKind::If)?),
                Some("with") => nodes.push(self.parse_cond(cur, CondKind::With)?),
                Some("range") => nodes.push(self.parse_range(cur)?),
                Some(k @ ("break" | "continue")) => {
                    if self.range_depth == 0 {
                        return Err(self.err(off, format!("{{{{{k}}}}} outside {{{{range}}}}")));
                    }
                    self.expect_end(&cur, k)?;
                    nodes.push(if k == "break" {
                        Node::Break
                    } else {
                        Node::Continue
                    });
                }
                Some(k) => {
                    return Err(self.err(off, format!("{{{{{k}}}}} is not supported")));
                }
                None => {
                    let pipe = self.parse_pipeline(&mut cur, "command")?;
                    self.expect_end(&cur, "command")?;
                    nodes.push(Node::Action(off, pipe));
                }
            }
        }
    }

    fn expect_end(&self, cur: &Cur, ctx: &str) -> Result<(), TemplateError> {
        match cur.peek_tok(0) {
            None => Ok(()),
            Some(Tok::RParen) => Err(self.err(cur.off, "unexpected right paren")),
            Some(t) => Err(self.err(cur.off, format!("unexpected {t} in {ctx}"))),
        }
    }

    fn enter(&mut self, off: usize) -> Result<(), TemplateError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err(off, "max nesting depth exceeded"));
        }
        Ok(())
    }

    fn parse_cond(&mut self, first: Cur, kind: CondKind) -> Result<Node, TemplateError> {
        let open = first.off;
        self.enter(open)?;
        let mark = self.vars.len();
        let mut branches = Vec::new();
        let mut cur = first;
        let els = loop {
            let pipe = self.parse_pipeline(&mut cur, kind.name())?;
            self.expect_end(&cur, kind.name())?;
            let (body, stop) = self.parse_list()?;
            branches.push(Branch {
                off: cur.off,
                pipe,
                body,
            });
            match stop {
                Stop::End(_) => break Vec::new(),
                Stop::Eof => return Err(self.missing_end(open, kind.name())),
                Stop::Else(_, Some(mut next)) => {
                    let same = next.keyword() == Some(kind.name());
                    next.i += 1;
                    if same {
                        cur = next;
                        continue;
                    }
                    break self.parse_else_control(next, open, kind.name())?;
                }
                Stop::Else(_, None) => break self.parse_else_list(open, kind.name())?,
            }
        };
        self.vars.truncate(mark);
        self.depth -= 1;
        Ok(Node::Cond(Cond {
            kind,
            branches,
            els,
        }))
    }

    fn parse_range(&mut self, mut cur: Cur) -> Result<Node, TemplateError> {
        let open = cur.off;
        self.enter(open)?;
        let mark = self.vars.len();
        let pipe = self.parse_pipeline(&mut cur, "range")?;
        self.expect_end(&cur, "range")?;
        self.range_depth += 1;
        let parsed = self.parse_list();
        self.range_depth -= 1;
        let (body, stop) = parsed?;
        let els = match stop {
            Stop::End(_) => Vec::new(),
            Stop::Eof => return Err(self.missing_end(open, "range")),
            Stop::Else(_, Some(mut next)) => {
                next.i += 1;
                self.parse_else_control(next, open, "range")?
            }
            Stop::Else(_, None) => self.parse_else_list(open, "range")?,
        };
        self.vars.truncate(mark);
        self.depth -= 1;
        Ok(Node::Range(Range {
            off: open,
            pipe,
            body,
            els,
        }))
    }

    /// `{{else if ...}}` where the chain is of another kind: Go reads it as
    /// `{{else}}{{if ...}}`, so the nested control needs its own `{{end}}`.
    fn parse_else_control(
        &mut self,
        cur: Cur,
        open: usize,
        ctx: &str,
    ) -> Result<Vec<Node>, TemplateError> {
        let kind = match cur.toks.get(cur.i.wrapping_sub(1)).map(|t| &t.tok) {
            Some(Tok::Ident(k)) if k == "with" => CondKind::With,
            _ => CondKind::If,
        };
        let first = self.parse_cond(cur, kind)?;
        let mut els = vec![first];
        els.extend(self.parse_else_list(open, ctx)?);
        Ok(els)
    }

    fn parse_else_list(&mut self, open: usize, ctx: &str) -> Result<Vec<Node>, TemplateError> {
        let (list, stop) = self.parse_list()?;
        match stop {
            Stop::End(_) => Ok(list),
            Stop::Eof => Err(self.missing_end(open, ctx)),
            Stop::Else(off, _) => Err(self.err(
                off,
                format!("expected end; found {{{{else}}}} in {{{{{ctx}}}}}"),
            )),
        }
    }

    fn missing_end(&self, open: usize, ctx: &str) -> TemplateError {
        self.err(open, format!("missing {{{{end}}}} for {{{{{ctx}}}}}"))
    }

    fn parse_pipeline(&mut self, cur: &mut Cur, ctx: &str) -> Result<Pipe, TemplateError> {
        let mut decl = Vec::new();
        let mut assign = false;
        if let Some(Tok::Var(v1)) = cur.peek_tok(0) {
            let v1 = v1.clone();
            match (cur.peek_tok(1), cur.peek_tok(2), cur.peek_tok(3)) {
                (Some(Tok::Declare | Tok::Assign), _, _) => {
                    assign = cur.peek_tok(1) == Some(&Tok::Assign);
                    decl.push(v1);
                    cur.i += 2;
                }
                (Some(Tok::Comma), Some(Tok::Var(v2)), Some(Tok::Declare | Tok::Assign))
                    if ctx == "range" =>
                {
                    assign = cur.peek_tok(3) == Some(&Tok::Assign);
                    decl.push(v1);
                    decl.push(v2.clone());
                    cur.i += 4;
                }
                (Some(Tok::Comma), _, _) => {
                    return Err(self.err(cur.off, format!("too many declarations in {ctx}")));
                }
                _ => {}
            }
        }
        if assign {
            for v in &decl {
                if !self.vars.contains(v) {
                    return Err(self.err(cur.off, format!("undefined variable {}", go_quote(v))));
                }
            }
        }
        let mut cmds = Vec::new();
        loop {
            let cmd = self.parse_command(cur, ctx)?;
            cmds.push(cmd);
            if cur.peek_tok(0) == Some(&Tok::Pipe) {
                cur.i += 1;
                continue;
            }
            break;
        }
        for (k, cmd) in cmds.iter().enumerate().skip(1) {
            if matches!(
                cmd.args.first(),
                Some(
                    Arg::Dot | Arg::Nil | Arg::Bool(_) | Arg::Int(_) | Arg::Float(_) | Arg::Str(_)
                )
            ) {
                return Err(self.err(
                    cur.off,
                    format!("non executable command in pipeline stage {}", k + 1),
                ));
            }
        }
        if !assign {
            self.vars.extend(decl.iter().cloned());
        }
        Ok(Pipe { decl, assign, cmds })
    }

    fn parse_command(&mut self, cur: &mut Cur, ctx: &str) -> Result<Cmd, TemplateError> {
        let mut args = Vec::new();
        while !matches!(cur.peek_tok(0), None | Some(Tok::Pipe | Tok::RParen)) {
            args.push(self.parse_operand(cur)?);
        }
        if args.is_empty() {
            return Err(self.err(cur.off, format!("missing value for {ctx}")));
        }
        Ok(Cmd { args })
    }

    fn parse_operand(&mut self, cur: &mut Cur) -> Result<Arg, TemplateError> {
        let off = cur.off;
        let Some(tok) = cur.next() else {
            return Err(self.err(off, "missing value"));
        };
        let mut arg = match tok {
            Tok::Ident(name) if KEYWORDS.contains(&name.as_str()) => {
                return Err(self.err(off, format!("unexpected <{name}> in operand")));
            }
            Tok::Ident(name) => {
                if !FUNCS.contains(&name.as_str()) {
                    return Err(self.err(off, format!("function {} not defined", go_quote(&name))));
                }
                Arg::Func(name)
            }
            Tok::Field(name) => Arg::Field(vec![name]),
            Tok::Dot => Arg::Dot,
            Tok::Var(name) => {
                if !self.vars.contains(&name) {
                    return Err(self.err(off, format!("undefined variable {}", go_quote(&name))));
                }
                Arg::Var(name, Vec::new())
            }
            Tok::Str(s) => Arg::Str(s),
            Tok::Num(text) => parse_number(&text).map_err(|m| self.err(off, m))?,
            Tok::Char(c) => Arg::Int(c),
            Tok::Bool(b) => Arg::Bool(b),
            Tok::Nil => Arg::Nil,
            Tok::LParen => {
                self.enter(off)?;
                let pipe = self.parse_pipeline(cur, "parenthesized pipeline")?;
                self.depth -= 1;
                if cur.next() != Some(Tok::RParen) {
                    return Err(self.err(off, "unclosed left paren"));
                }
                Arg::Pipe(Box::new(pipe))
            }
            t => return Err(self.err(off, format!("unexpected {t} in operand"))),
        };
        while let Some(Token {
            tok: Tok::Field(name),
            spaced: false,
        }) = cur.peek()
        {
            let name = name.clone();
            cur.i += 1;
            arg = match arg {
                Arg::Field(mut f) => {
                    f.push(name);
                    Arg::Field(f)
                }
                Arg::Var(v, mut f) => {
                    f.push(name);
                    Arg::Var(v, f)
                }
                Arg::Pipe(p) => Arg::Chain(p, vec![name]),
                Arg::Chain(p, mut f) => {
                    f.push(name);
                    Arg::Chain(p, f)
                }
                other => {
                    return Err(self.err(
                        off,
                        format!("unexpected .{name} after {}", other.describe()),
                    ));
                }
            };
        }
        Ok(arg)
    }
}

/// Go number literals: decimal, 0x/0o/0b and leading-0 octal ints, floats
/// when the text has a point or an exponent.
fn parse_number(text: &str) -> Result<Arg, String> {
    let bad = || format!("bad number syntax: {}", go_quote(text));
    let (neg, body) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let body_nu = body.replace('_', "");
    let lower = body_nu.to_ascii_lowercase();
    let radix = if lower.starts_with("0x") {
        Some((16, &body_nu[2..]))
    } else if lower.starts_with("0o") {
        Some((8, &body_nu[2..]))
    } else if lower.starts_with("0b") {
        Some((2, &body_nu[2..]))
    } else if body_nu.len() > 1
        && body_nu.starts_with('0')
        && body_nu.bytes().all(|c| c.is_ascii_digit())
    {
        Some((8, &body_nu[1..]))
    } else {
        None
    };
    if let Some((radix, digits)) = radix {
        let v = i64::from_str_radix(digits, radix).map_err(|_| bad())?;
        return Ok(Arg::Int(if neg { -v } else { v }));
    }
    if !body_nu
        .bytes()
        .next()
        .is_some_and(|c| c.is_ascii_digit() || c == b'.')
    {
        return Err(bad());
    }
    if body_nu.contains(['.', 'e', 'E']) {
        if !body_nu
            .bytes()
            .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-'))
        {
            return Err(bad());
        }
        let v: f64 = body_nu.parse().map_err(|_| bad())?;
        return Ok(Arg::Float(if neg { -v } else { v }));
    }
    if !body_nu.bytes().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let signed = if neg {
        format!("-{body_nu}")
    } else {
        body_nu.clone()
    };
    signed
        .parse::<i64>()
        .map(Arg::Int)
        .map_err(|_| format!("{text} overflows int"))
}

// ---------------------------------------------------------------------------
// Values

#[derive(Debug, Clone)]
enum Value {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    List(Rc<Vec<Value>>),
    Map(Rc<BTreeMap<String, String>>),
    Nil,
}

impl Value {
    fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::Int(_) => "int",
            Value::Float(_) => "float64",
            Value::Bool(_) => "bool",
            Value::List(_) => "[]interface {}",
            Value::Map(_) => "map[string]string",
            Value::Nil => "<nil>",
        }
    }

    fn list(v: Vec<Value>) -> Value {
        Value::List(Rc::new(v))
    }
}

/// Go's template truth: the zero value of any type is false.
fn truth(v: &Value) -> bool {
    match v {
        Value::Str(s) => !s.is_empty(),
        Value::Int(i) => *i != 0,
        Value::Float(f) => *f != 0.0,
        Value::Bool(b) => *b,
        Value::List(l) => !l.is_empty(),
        Value::Map(m) => !m.is_empty(),
        Value::Nil => false,
    }
}

/// Go's `%v`.
fn format_v(v: &Value) -> String {
    match v {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => format_float_v(*f),
        Value::Bool(b) => b.to_string(),
        Value::List(l) => {
            let parts: Vec<String> = l.iter().map(format_v).collect();
            format!("[{}]", parts.join(" "))
        }
        Value::Map(m) => {
            let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            format!("map[{}]", parts.join(" "))
        }
        Value::Nil => "<nil>".to_string(),
    }
}

fn format_float_v(f: f64) -> String {
    float_g(f, None)
}

// ---------------------------------------------------------------------------
// Execution

#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Normal,
    Break,
    Continue,
}

struct Exec<'s> {
    src: &'s str,
    env: Rc<BTreeMap<String, String>>,
    vars: Vec<(String, Value)>,
    out: String,
    steps: u64,
}

impl Exec<'_> {
    fn err(&self, off: usize, msg: impl Into<String>) -> TemplateError {
        error_at(self.src, off, msg)
    }

    fn write(&mut self, off: usize, s: &str) -> Result<(), TemplateError> {
        if self.out.len() + s.len() > MAX_OUTPUT {
            return Err(self.err(off, format!("output exceeds {MAX_OUTPUT} bytes")));
        }
        self.out.push_str(s);
        Ok(())
    }

    fn exec_list(&mut self, nodes: &[Node], dot: &Value) -> Result<Flow, TemplateError> {
        for node in nodes {
            let flow = match node {
                Node::Text(off, s) => {
                    self.write(*off, s)?;
                    Flow::Normal
                }
                Node::Action(off, pipe) => {
                    let v = self
                        .eval_pipe(pipe, dot, true)
                        .map_err(|m| self.err(*off, m))?;
                    if pipe.decl.is_empty() {
                        let s = match v {
                            Value::Nil => "<no value>".to_string(),
                            v => format_v(&v),
                        };
                        self.write(*off, &s)?;
                    }
                    Flow::Normal
                }
                Node::Cond(c) => self.exec_cond(c, dot)?,
                Node::Range(r) => self.exec_range(r, dot)?,
                Node::Break => Flow::Break,
                Node::Continue => Flow::Continue,
            };
            if flow != Flow::Normal {
                return Ok(flow);
            }
        }
        Ok(Flow::Normal)
    }

    fn exec_cond(&mut self, c: &Cond, dot: &Value) -> Result<Flow, TemplateError> {
        let mark = self.vars.len();
        let mut chosen = None;
        for b in &c.branches {
            let v = self
                .eval_pipe(&b.pipe, dot, true)
                .map_err(|m| self.err(b.off, m))?;
            if truth(&v) {
                chosen = Some((b, v));
                break;
            }
        }
        let flow = match chosen {
            Some((b, v)) if c.kind == CondKind::With => self.exec_list(&b.body, &v),
            Some((b, _)) => self.exec_list(&b.body, dot),
            None => self.exec_list(&c.els, dot),
        };
        self.vars.truncate(mark);
        flow
    }

    fn exec_range(&mut self, r: &Range, dot: &Value) -> Result<Flow, TemplateError> {
        let val = self
            .eval_pipe(&r.pipe, dot, false)
            .map_err(|m| self.err(r.off, m))?;
        let mut pairs: Vec<(Value, Value)> = Vec::new();
        let (count, list, ints) = match &val {
            Value::List(l) => (l.len() as u64, Some(Rc::clone(l)), false),
            Value::Map(m) => {
                pairs = m
                    .iter()
                    .map(|(k, v)| (Value::Str(k.clone()), Value::Str(v.clone())))
                    .collect();
                (pairs.len() as u64, None, false)
            }
            Value::Int(n) => {
                if r.pipe.decl.len() > 1 {
                    return Err(self.err(r.off, "can't use two variables when ranging over an int"));
                }
                ((*n).max(0) as u64, None, true)
            }
            Value::Nil => (0, None, false),
            v => {
                return Err(self.err(r.off, format!("range can't iterate over {}", format_v(v))));
            }
        };
        if count == 0 {
            let mark = self.vars.len();
            let flow = self.exec_list(&r.els, dot);
            self.vars.truncate(mark);
            return flow;
        }
        let mark = self.vars.len();
        for k in 0..count {
            self.steps += 1;
            if self.steps > MAX_STEPS {
                return Err(self.err(r.off, format!("more than {MAX_STEPS} range iterations")));
            }
            let (key, elem) = if ints {
                (Value::Int(k as i64), Value::Int(k as i64))
            } else if let Some(l) = &list {
                let e = l.get(k as usize).cloned().unwrap_or(Value::Nil);
                (Value::Int(k as i64), e)
            } else {
                pairs
                    .get(k as usize)
                    .cloned()
                    .unwrap_or((Value::Nil, Value::Nil))
            };
            let bound: Vec<Value> = match r.pipe.decl.len() {
                0 => Vec::new(),
                1 => vec![elem.clone()],
                _ => vec![key, elem.clone()],
            };
            for (name, v) in r.pipe.decl.iter().zip(bound) {
                if r.pipe.assign {
                    self.set_var(name, v).map_err(|m| self.err(r.off, m))?;
                } else {
                    self.vars.push((name.clone(), v));
                }
            }
            let flow = self.exec_list(&r.body, &elem)?;
            self.vars.truncate(mark);
            if flow == Flow::Break {
                break;
            }
        }
        Ok(Flow::Normal)
    }

    fn set_var(&mut self, name: &str, v: Value) -> Result<(), String> {
        match self.vars.iter_mut().rev().find(|(n, _)| n == name) {
            Some(slot) => {
                slot.1 = v;
                Ok(())
            }
            None => Err(format!("undefined variable: {name}")),
        }
    }

    fn var(&self, name: &str) -> Result<Value, String> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| format!("undefined variable: {name}"))
    }

    /// Runs the commands of a pipeline; `declare` binds its variables (range
    /// binds its own per iteration).
    fn eval_pipe(&mut self, pipe: &Pipe, dot: &Value, declare: bool) -> Result<Value, String> {
        let mut val: Option<Value> = None;
        for cmd in &pipe.cmds {
            val = Some(self.eval_cmd(cmd, dot, val.take())?);
        }
        let val = val.unwrap_or(Value::Nil);
        if declare {
            for name in &pipe.decl {
                if pipe.assign {
                    self.set_var(name, val.clone())?;
                } else {
                    self.vars.push((name.clone(), val.clone()));
                }
            }
        }
        Ok(val)
    }

    fn eval_cmd(&mut self, cmd: &Cmd, dot: &Value, piped: Option<Value>) -> Result<Value, String> {
        let Some(first) = cmd.args.first() else {
            return Err("missing value for command".to_string());
        };
        match first {
            Arg::Func(name) => self.call(name, &cmd.args[1..], dot, piped),
            Arg::Nil => Err("nil is not a command".to_string()),
            other => {
                if cmd.args.len() > 1 || piped.is_some() {
                    return Err(format!(
                        "can't give argument to non-function {}",
                        other.describe()
                    ));
                }
                self.eval_arg(other, dot)
            }
        }
    }

    fn eval_arg(&mut self, arg: &Arg, dot: &Value) -> Result<Value, String> {
        match arg {
            Arg::Func(name) => self.call(name, &[], dot, None),
            Arg::Dot => Ok(dot.clone()),
            Arg::Field(chain) => walk(dot.clone(), chain),
            Arg::Var(name, chain) => walk(self.var(name)?, chain),
            Arg::Str(s) => Ok(Value::Str(s.clone())),
            Arg::Int(i) => Ok(Value::Int(*i)),
            Arg::Float(f) => Ok(Value::Float(*f)),
            Arg::Bool(b) => Ok(Value::Bool(*b)),
            Arg::Nil => Ok(Value::Nil),
            Arg::Pipe(p) => self.eval_pipe(p, dot, true),
            Arg::Chain(p, chain) => {
                let v = self.eval_pipe(p, dot, true)?;
                walk(v, chain)
            }
        }
    }

    fn call(
        &mut self,
        name: &str,
        args: &[Arg],
        dot: &Value,
        piped: Option<Value>,
    ) -> Result<Value, String> {
        if name == "and" || name == "or" {
            return self.and_or(name == "and", args, dot, piped);
        }
        let mut vals = Vec::with_capacity(args.len() + 1);
        for a in args {
            vals.push(self.eval_arg(a, dot)?);
        }
        vals.extend(piped);
        let v = call_builtin(&self.env, name, vals)?;
        if let Value::Str(s) = &v {
            if s.len() > MAX_OUTPUT {
                return Err(format!(
                    "error calling {name}: result exceeds {MAX_OUTPUT} bytes"
                ));
            }
        }
        Ok(v)
    }

    /// `and`/`or` stop at the deciding argument and return it (Go 1.18+).
    fn and_or(
        &mut self,
        is_and: bool,
        args: &[Arg],
        dot: &Value,
        piped: Option<Value>,
    ) -> Result<Value, String> {
        let total = args.len() + usize::from(piped.is_some());
        if total == 0 {
            let name = if is_and { "and" } else { "or" };
            return Err(format!(
                "wrong number of args for {name}: want at least 1 got 0"
            ));
        }
        let mut last = Value::Nil;
        for a in args {
            let v = self.eval_arg(a, dot)?;
            if truth(&v) != is_and {
                return Ok(v);
            }
            last = v;
        }
        Ok(piped.unwrap_or(last))
    }
}

fn walk(mut v: Value, chain: &[String]) -> Result<Value, String> {
    for field in chain {
        v = match v {
            Value::Map(m) => Value::Str(m.get(field).cloned().unwrap_or_default()),
            Value::Nil => return Err(format!("nil pointer evaluating interface {{}}.{field}")),
            other => {
                return Err(format!(
                    "can't evaluate field {field} in type {}",
                    other.type_name()
                ))
            }
        };
    }
    Ok(v)
}

// ---------------------------------------------------------------------------
// Functions

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

fn call_builtin(
    env: &BTreeMap<String, String>,
    name: &str,
    args: Vec<Value>,
) -> Result<Value, String> {
    let fail = |msg: String| format!("error calling {name}: {msg}");
    match name {
        "default" => {
            want_args(name, &args, 2)?;
            if let Value::Str(s) = &args[1] {
                if !s.is_empty() {
                    return Ok(Value::Str(s.clone()));
                }
            }
            Ok(Value::Str(format_v(&args[0])))
        }
        "env" => {
            want_args(name, &args, 1)?;
            let key = want_str(name, &args[0])?;
            Ok(Value::Str(env.get(key).cloned().unwrap_or_default()))
        }
        "split" => {
            want_args(name, &args, 2)?;
            let sep = want_str(name, &args[0])?;
            let s = want_str(name, &args[1])?.trim();
            let parts: Vec<Value> = if s.is_empty() {
                Vec::new()
            } else if sep.is_empty() {
                s.chars().map(|c| Value::Str(c.to_string())).collect()
            } else {
                s.split(sep).map(|p| Value::Str(p.to_string())).collect()
            };
            Ok(Value::list(parts))
        }
        "join" => {
            want_args(name, &args, 2)?;
            let sep = want_str(name, &args[0])?;
            match &args[1] {
                Value::List(l) => {
                    let parts: Vec<String> = l.iter().map(format_v).collect();
                    Ok(Value::Str(parts.join(sep)))
                }
                Value::Nil => Ok(Value::Str(String::new())),
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
            let growth = to.len().saturating_mul(s.len() + 1);
            if from.is_empty() && growth > MAX_OUTPUT {
                return Err(fail(format!("result exceeds {MAX_OUTPUT} bytes")));
            }
            Ok(Value::Str(s.replace(from, to)))
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
            Ok(Value::Str(re.replace_all(s, to).into_owned()))
        }
        "loop" => loop_fn(&args).map_err(fail),
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
            slice_fn(&args).map_err(fail)
        }
        "print" => Ok(Value::Str(sprint(&args))),
        "println" => {
            let parts: Vec<String> = args.iter().map(format_v).collect();
            Ok(Value::Str(format!("{}\n", parts.join(" "))))
        }
        "printf" => {
            want_min_args(name, &args, 1)?;
            let f = want_str(name, &args[0])?;
            Ok(Value::Str(sprintf(f, &args[1..])))
        }
        "html" => Ok(Value::Str(html_escape(&sprint_single(&args)))),
        "urlquery" => Ok(Value::Str(query_escape(&sprint_single(&args)))),
        _ => Err(format!("function {} not defined", go_quote(name))),
    }
}

/// ContainerPilot's `loop`: `loop N` is 0..N, `loop A B` counts from A toward
/// B (exclusive) in either direction.
fn loop_fn(args: &[Value]) -> Result<Value, String> {
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
    let len = (i128::from(stop) - i128::from(start)).abs();
    if len > MAX_LOOP {
        return Err(format!(
            "loop: {len} elements is more than the limit of {MAX_LOOP}"
        ));
    }
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
        (Value::List(_) | Value::Map(_), _) | (_, Value::List(_) | Value::Map(_)) => Err(format!(
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
                Value::Str(k) => Value::Str(m.get(k).cloned().unwrap_or_default()),
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

fn slice_fn(args: &[Value]) -> Result<Value, String> {
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
        Value::Str(s) => s
            .get(ix[0]..ix[1])
            .map(|p| Value::Str(p.to_string()))
            .ok_or_else(|| "slice splits a UTF-8 character".to_string()),
        Value::List(l) => Ok(Value::list(l[ix[0]..ix[1]].to_vec())),
        _ => Err("can't slice".to_string()),
    }
}

/// Go's fmt.Sprint: a space between operands when neither is a string.
fn sprint(args: &[Value]) -> String {
    let mut out = String::new();
    for (k, a) in args.iter().enumerate() {
        if k > 0 && !matches!(a, Value::Str(_)) && !matches!(args[k - 1], Value::Str(_)) {
            out.push(' ');
        }
        out.push_str(&format_v(a));
    }
    out
}

fn sprint_single(args: &[Value]) -> String {
    match args {
        [Value::Str(s)] => s.clone(),
        _ => sprint(args),
    }
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '\'' => out.push_str("&#39;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&#34;"),
            '\0' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

// ---------------------------------------------------------------------------
// printf

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
fn sprintf(format: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut it = format.chars().peekable();
    let mut argi = 0;
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
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
            Num::Bad => out.push_str("%!(BADWIDTH)"),
        }
        if it.peek() == Some(&'.') {
            it.next();
            spec.prec = match read_num(&mut it, args, &mut argi) {
                Num::None => Some(0),
                Num::Some(p) if p >= 0 => Some(p as usize),
                Num::Some(_) => None,
                Num::Bad => {
                    out.push_str("%!(BADPREC)");
                    None
                }
            };
        }
        let Some(verb) = it.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        match args.get(argi) {
            None => out.push_str(&format!("%!{verb}(MISSING)")),
            Some(a) => {
                argi += 1;
                out.push_str(&fmt_arg(a, verb, &spec));
            }
        }
    }
    if argi < args.len() {
        let extra: Vec<String> = args[argi..]
            .iter()
            .map(|a| match a {
                Value::Nil => "<nil>".to_string(),
                a => format!("{}={}", a.type_name(), format_v(a)),
            })
            .collect();
        out.push_str(&format!("%!(EXTRA {})", extra.join(", ")));
    }
    out
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

fn fmt_arg(v: &Value, verb: char, spec: &Spec) -> String {
    if verb == 'T' {
        return pad(v.type_name().to_string(), spec);
    }
    match (verb, v) {
        (_, Value::List(l)) => {
            let parts: Vec<String> = l.iter().map(|e| fmt_arg(e, verb, spec)).collect();
            format!("[{}]", parts.join(" "))
        }
        (_, Value::Map(m)) => {
            let parts: Vec<String> = m
                .iter()
                .map(|(k, x)| {
                    format!(
                        "{}:{}",
                        fmt_arg(&Value::Str(k.clone()), verb, spec),
                        fmt_arg(&Value::Str(x.clone()), verb, spec)
                    )
                })
                .collect();
            format!("map[{}]", parts.join(" "))
        }
        ('v' | 's', Value::Str(s)) => {
            let s = match spec.prec {
                Some(p) => s.chars().take(p).collect(),
                None => s.clone(),
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
fn float_g(f: f64, prec: Option<usize>) -> String {
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
fn go_quote(s: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn r_env(src: &str, pairs: &[(&str, &str)]) -> String {
        match render(src, &env_of(pairs)) {
            Ok(s) => s,
            Err(e) => panic!("render({src:?}) failed: {e}"),
        }
    }

    fn r(src: &str) -> String {
        r_env(
            src,
            &[
                ("NAME", "my-service"),
                ("LIST", " a,b,c "),
                ("COUNT", "3"),
                ("EMPTY", ""),
                ("CONSUL", "consul:8500"),
                ("FOO", "a=b"),
            ],
        )
    }

    fn e(src: &str) -> TemplateError {
        match render(src, &env_of(&[("NAME", "x"), ("N", "3")])) {
            Ok(s) => panic!("render({src:?}) should fail, got {s:?}"),
            Err(e) => e,
        }
    }

    fn err_msg(src: &str) -> String {
        e(src).msg
    }

    // --- Appendix B: config/template/template_test.go ---

    #[test]
    fn var_and_missing_var() {
        assert_eq!(r("name: {{.NAME}}"), "name: my-service");
        assert_eq!(r("name: {{ .NONEXISTENT }}!"), "name: !");
        assert_eq!(r("{{ .FOO }}"), "a=b");
    }

    #[test]
    fn loop_forms() {
        assert_eq!(r("{{ loop 5 }}"), "[0 1 2 3 4]");
        assert_eq!(r("{{ loop 2 5 }}"), "[2 3 4]");
        assert_eq!(r("{{ loop 5 1 }}"), "[5 4 3 2]");
        assert_eq!(r("{{ loop \"2\" \"5\" }}"), "[2 3 4]");
        assert_eq!(r("{{ loop .COUNT }}"), "[0 1 2]");
        assert_eq!(r("{{ loop 0 }}"), "[]");
        assert_eq!(r("{{ loop 3 3 }}"), "[]");
        assert_eq!(r("{{ loop -2 }}"), "[0 -1]");
        assert_eq!(r("{{ range $i := loop 2 5 }}{{ $i }},{{ end }}"), "2,3,4,");
        assert_eq!(r("{{ range loop 3 }}<{{ . }}>{{ end }}"), "<0><1><2>");
    }

    #[test]
    fn loop_errors() {
        assert_eq!(
            err_msg("{{ loop 1 2 3 }}"),
            "error calling loop: loop: wrong number of arguments, expected 1 or 2, but got 3"
        );
        assert_eq!(
            err_msg("{{ loop }}"),
            "error calling loop: loop: wrong number of arguments, expected 1 or 2, but got 0"
        );
        assert_eq!(
            err_msg("{{ loop \"x\" }}"),
            "error calling loop: loop: invalid integer \"x\""
        );
        assert_eq!(
            err_msg("{{ loop 1.5 }}"),
            "error calling loop: loop: unsupported type float64"
        );
        assert!(err_msg("{{ loop 0 100001 }}").contains("more than the limit"));
    }

    #[test]
    fn env_function() {
        assert_eq!(r("{{ env \"NAME\" }}"), "my-service");
        assert_eq!(r("{{ env \"FOO\" }}"), "a=b");
        assert_eq!(r("[{{ env \"NOPE\" }}]"), "[]");
        assert_eq!(
            err_msg("{{ env 5 }}"),
            "error calling env: wrong type for value; expected string; got int"
        );
    }

    #[test]
    fn default_function() {
        assert_eq!(r("{{ .NONEXISTENT | default \"default\" }}"), "default");
        assert_eq!(r("{{ .NAME | default \"default\" }}"), "my-service");
        assert_eq!(r("{{ .EMPTY | default 10 }}"), "10");
        assert_eq!(r("{{ .NONEXISTENT | default 10.1 }}"), "10.1");
        assert_eq!(r("{{ default \"x\" .NAME }}"), "my-service");
        assert_eq!(r("{{ default \"x\" 5 }}"), "x");
        assert_eq!(r("{{ default true .EMPTY }}"), "true");
        assert_eq!(
            err_msg("{{ default \"x\" }}"),
            "wrong number of args for default: want 2 got 1"
        );
    }

    #[test]
    fn split_join_replace_regex() {
        assert_eq!(r("{{ .LIST | split \",\" | join \".\" }}"), "a.b.c");
        assert_eq!(r("{{ split \",\" .LIST }}"), "[a b c]");
        assert_eq!(r("{{ len (split \",\" .EMPTY) }}"), "0");
        assert_eq!(r("[{{ split \",\" .EMPTY | join \"-\" }}]"), "[]");
        assert_eq!(r("{{ join \"-\" (loop 3) }}"), "0-1-2");
        assert_eq!(r("{{ .NAME | replaceAll \"-\" \"_\" }}"), "my_service");
        assert_eq!(r("{{ replaceAll \"x\" \"y\" \"axbxc\" }}"), "aybyc");
        assert_eq!(
            r("{{ .NAME | regexReplaceAll \"^([a-z]+)-([a-z]+)$\" \"$2-$1\" }}"),
            "service-my"
        );
        assert_eq!(
            r("{{ regexReplaceAll \"[0-9]+\" \"<${0}>\" \"a1b22\" }}"),
            "a<1>b<22>"
        );
        assert_eq!(
            r("{{ regexReplaceAll `(\\w+)@(\\w+)` \"${2}_$1\" \"me@host\" }}"),
            "host_me"
        );
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

    // --- actions, literals, pipelines ---

    #[test]
    fn plain_text_and_literals() {
        assert_eq!(r(""), "");
        assert_eq!(r("no actions } { }}"), "no actions } { }}");
        assert_eq!(
            r("{{ \"a\\tb\\n\\\"q\\\"\\x41\\u00e9\" }}"),
            "a\tb\n\"q\"Aé"
        );
        assert_eq!(r("{{ `raw \\n {{ }}` }}"), "raw \\n {{ }}");
        assert_eq!(
            r("{{ 42 }} {{ -7 }} {{ 0x1F }} {{ 010 }} {{ 'a' }}"),
            "42 -7 31 8 97"
        );
        assert_eq!(
            r("{{ 10.1 }} {{ 1.0 }} {{ 1e6 }} {{ 0.000001 }} {{ 123456.5 }}"),
            "10.1 1 1e+06 1e-06 123456.5"
        );
        assert_eq!(r("{{ true }} {{ false }}"), "true false");
        assert_eq!(r("{{ \"}}\" }}"), "}}");
    }

    #[test]
    fn pipelines_and_parens() {
        assert_eq!(r("{{ \"a\" | printf \"%s-%s\" \"b\" }}"), "b-a");
        assert_eq!(r("{{ printf \"%s\" (printf \"%d\" (len .NAME)) }}"), "10");
        assert_eq!(r("{{ (index (split \",\" .LIST) 1) }}"), "b");
        assert_eq!(r("{{ .NAME | len | printf \"%03d\" }}"), "010");
        assert_eq!(r("{{ (.) | len | lt 3 }}"), "true");
    }

    #[test]
    fn trimming() {
        assert_eq!(r("a  \n\t {{- .NAME -}} \n\n  b"), "amy-serviceb");
        assert_eq!(r("a {{- 1 }} b {{ 2 -}} c"), "a1 b 2c");
        assert_eq!(r("{{-3}}"), "-3");
        assert_eq!(r("x\n{{- /* comment */ -}}\ny"), "xy");
        assert_eq!(r("x {{/* a\nmultiline comment */}} y"), "x  y");
        assert_eq!(
            r("[\n  {{- range $i := loop 2 }}\n  {{ $i }},\n  {{- end }}\n]"),
            "[\n  0,\n  1,\n]"
        );
    }

    #[test]
    fn variables() {
        assert_eq!(r("{{ $x := .NAME }}{{ $x }}"), "my-service");
        assert_eq!(r("{{ $x := 1 }}{{ $x = 2 }}{{ $x }}"), "2");
        assert_eq!(r("{{ $.NAME }}"), "my-service");
        assert_eq!(
            r("{{ $x := 0 }}{{ range loop 4 }}{{ $x = . }}{{ end }}{{ $x }}"),
            "3"
        );
        assert_eq!(
            r("{{ range $i, $v := split \",\" .LIST }}{{ $i }}={{ $v }};{{ end }}"),
            "0=a;1=b;2=c;"
        );
        assert_eq!(
            r("{{ range $v := split \",\" .LIST }}{{ $v }}{{ end }}"),
            "abc"
        );
        assert_eq!(
            r("{{ range loop 2 }}{{ $.NAME }}{{ end }}"),
            "my-servicemy-service"
        );
        assert_eq!(r("{{ if $x := .NAME }}{{ $x }}{{ end }}"), "my-service");
        assert_eq!(r("{{ with $x := .EMPTY }}{{ else }}none{{ end }}"), "none");
        // a variable declared in a block ends with the block
        assert_eq!(
            err_msg("{{ if true }}{{ $y := 1 }}{{ end }}{{ $y }}"),
            "undefined variable \"$y\""
        );
    }

    #[test]
    fn conditionals() {
        assert_eq!(r("{{ if .NAME }}yes{{ else }}no{{ end }}"), "yes");
        assert_eq!(r("{{ if .EMPTY }}yes{{ else }}no{{ end }}"), "no");
        assert_eq!(r("{{ if .MISSING }}yes{{ end }}"), "");
        assert_eq!(r("{{ if 0 }}a{{ else if \"\" }}b{{ else if 0.0 }}c{{ else if false }}d{{ else }}e{{ end }}"), "e");
        assert_eq!(r("{{ if eq .COUNT \"1\" }}one{{ else if eq .COUNT \"3\" }}three{{ else }}many{{ end }}"), "three");
        assert_eq!(
            r("{{ if loop 0 }}a{{ else }}empty list{{ end }}"),
            "empty list"
        );
        assert_eq!(r("{{ if loop 1 }}non-empty{{ end }}"), "non-empty");
        assert_eq!(r("{{ with .NAME }}[{{ . }}]{{ end }}"), "[my-service]");
        assert_eq!(
            r("{{ with .EMPTY }}[{{ . }}]{{ else }}nothing{{ end }}"),
            "nothing"
        );
        assert_eq!(
            r("{{ with .EMPTY }}a{{ else with .NAME }}{{ . }}{{ end }}"),
            "my-service"
        );
        // else-if inside with is a nested if that needs its own end (Go)
        assert_eq!(
            r("{{ with .EMPTY }}a{{ else if .NAME }}b{{ end }}c{{ end }}"),
            "bc"
        );
    }

    #[test]
    fn nested_blocks() {
        let src = "{{ range $i := loop 3 }}{{ if eq $i 1 }}{{ with $.NAME }}<{{ . }}>{{ end }}{{ else }}{{ range loop $i 0 }}{{ . }}{{ end }}.{{ end }}{{ end }}";
        assert_eq!(r(src), ".<my-service>21.");
        assert_eq!(r("{{ range loop 0 }}x{{ else }}none{{ end }}"), "none");
        assert_eq!(
            r("{{ range split \",\" .EMPTY }}x{{ else }}empty{{ end }}"),
            "empty"
        );
        assert_eq!(r("{{ range 3 }}{{ . }}{{ end }}"), "012");
        assert_eq!(r("{{ range $k, $v := . }}{{ if eq $k \"COUNT\" \"NAME\" }}{{ $k }}={{ $v }} {{ end }}{{ end }}"), "COUNT=3 NAME=my-service ");
        assert_eq!(r("{{ range loop 5 }}{{ if eq . 3 }}{{ break }}{{ end }}{{ if eq . 1 }}{{ continue }}{{ end }}{{ . }}{{ end }}"), "02");
    }

    #[test]
    fn comparisons_and_logic() {
        assert_eq!(
            r("{{ eq 1 1 }} {{ eq 1 2 }} {{ eq \"a\" \"b\" \"a\" }} {{ ne \"a\" \"b\" }}"),
            "true false true true"
        );
        assert_eq!(
            r("{{ lt 1 2 }} {{ le 2 2 }} {{ gt \"b\" \"a\" }} {{ ge 1.5 2.5 }}"),
            "true true true false"
        );
        assert_eq!(
            r("{{ and 1 0 2 }} {{ and 1 2 }} {{ or 0 \"\" }} {{ or 0 \"x\" 3 }}"),
            "0 2  x"
        );
        assert_eq!(r("{{ not 0 }} {{ not .NAME }}"), "true false");
        // and/or stop at the deciding argument: the bad call is never made
        assert_eq!(r("{{ or .NAME (loop 1 2 3) }}"), "my-service");
        assert_eq!(r("{{ and .EMPTY (loop 1 2 3) }}"), "");
        assert_eq!(r("{{ .NAME | and 1 }}"), "my-service");
        assert_eq!(
            err_msg("{{ eq 1 \"1\" }}"),
            "error calling eq: incompatible types for comparison"
        );
        assert_eq!(
            err_msg("{{ lt true false }}"),
            "error calling lt: invalid type for comparison"
        );
        assert_eq!(
            err_msg("{{ eq 1 }}"),
            "error calling eq: missing argument for comparison"
        );
        assert_eq!(
            err_msg("{{ not }}"),
            "wrong number of args for not: want 1 got 0"
        );
    }

    #[test]
    fn len_index_slice() {
        assert_eq!(
            r("{{ len .NAME }} {{ len (loop 4) }} {{ len .MISSING }}"),
            "10 4 0"
        );
        assert_eq!(
            r("{{ index (loop 5 10) 2 }} {{ index . \"COUNT\" }} [{{ index . \"NOPE\" }}]"),
            "7 3 []"
        );
        assert_eq!(r("{{ index \"abc\" 1 }}"), "98");
        assert_eq!(
            r("{{ slice \"abcdef\" 1 3 }} {{ slice (loop 5) 2 }}"),
            "bc [2 3 4]"
        );
        assert_eq!(
            err_msg("{{ index (loop 3) 5 }}"),
            "error calling index: index out of range: 5"
        );
        assert_eq!(
            err_msg("{{ index (loop 3) -1 }}"),
            "error calling index: index out of range: -1"
        );
        assert_eq!(err_msg("{{ len 3 }}"), "error calling len: len of type int");
    }

    #[test]
    fn print_functions() {
        assert_eq!(
            r("{{ print \"a\" 1 2 \"b\" true false }}"),
            "a1 2btrue false"
        );
        assert_eq!(r("{{ println \"a\" 1 }}"), "a 1\n");
        assert_eq!(
            r("{{ printf \"%s|%d|%v|%q|%%\" \"x\" 42 (loop 2) \"q\\\"\" }}"),
            "x|42|[0 1]|\"q\\\"\"|%"
        );
        assert_eq!(
            r("{{ printf \"%5s|%-5s|%05d|%x|%X|%o\" \"ab\" \"cd\" -42 255 255 8 }}"),
            "   ab|cd   |-0042|ff|FF|10"
        );
        assert_eq!(
            r("{{ printf \"%.2f|%f|%8.3f|%e|%g|%.3g\" 3.14159 1.5 2.0 1234.5678 0.5 1234.5678 }}"),
            "3.14|1.500000|   2.000|1.234568e+03|0.5|1.23e+03"
        );
        assert_eq!(
            r("{{ printf \"%v %v %t %.3s %+d\" 10.1 true false \"abcdef\" 5 }}"),
            "10.1 true false abc +5"
        );
        assert_eq!(
            r("{{ printf \"%d %s\" \"x\" }}"),
            "%!d(string=x) %!s(MISSING)"
        );
        assert_eq!(r("{{ printf \"%d\" 1 2 }}"), "1%!(EXTRA int=2)");
        assert_eq!(
            r("{{ printf \"%x\" \"hi\" }} {{ printf \"%*d\" 4 7 }} {{ printf \"%T\" 1.5 }}"),
            "6869    7 float64"
        );
        assert_eq!(
            r("{{ html \"<a href='x'>&</a>\" }} {{ urlquery \"a b&c\" }}"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&lt;/a&gt; a+b%26c"
        );
    }

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

    // --- errors and positions ---

    #[test]
    fn error_positions() {
        let err = e("line one\n  {{ .NAME }} {{ if .N }}\nx");
        assert_eq!((err.line, err.col), (2, 15));
        assert_eq!(err.msg, "missing {{end}} for {{if}}");
        assert_eq!(
            err.to_string(),
            "template: config:2:15: missing {{end}} for {{if}}"
        );

        let err = e("ab\ncd {{ end }}");
        assert_eq!(
            (err.line, err.col, err.msg.as_str()),
            (2, 4, "unexpected {{end}}")
        );

        let err = e("{{ .NAME }}\n\n    {{ .NAME");
        assert_eq!(
            (err.line, err.col, err.msg.as_str()),
            (3, 5, "unclosed action")
        );

        let err = e("x\n{{ if true }}\n  {{ foo 1 }}\n{{ end }}");
        assert_eq!(
            (err.line, err.col, err.msg.as_str()),
            (3, 3, "function \"foo\" not defined")
        );

        let err = e("é{{ $x }}");
        assert_eq!(
            (err.line, err.col, err.msg.as_str()),
            (1, 2, "undefined variable \"$x\"")
        );

        let err = e("a\nb\n c {{ index (loop 2) 9 }}");
        assert_eq!((err.line, err.col), (3, 4));
        assert_eq!(err.msg, "error calling index: index out of range: 9");

        let err = e("{{ regexReplaceAll \"[\" \"\" \"\" }}");
        assert_eq!((err.line, err.col), (1, 1));

        let err = e("{{ range loop 2 }}\n{{ else }}{{ else }}{{ end }}");
        assert_eq!((err.line, err.col), (2, 11));

        let err = e("{{ else }}");
        assert_eq!(err.msg, "unexpected {{else}}");
    }

    #[test]
    fn parse_error_messages() {
        assert_eq!(err_msg("{{ }}"), "missing value for command");
        assert_eq!(err_msg("{{ if }}{{ end }}"), "missing value for if");
        assert_eq!(err_msg("{{ (1 }}"), "unclosed left paren");
        assert_eq!(err_msg("{{ 1) }}"), "unexpected right paren");
        assert_eq!(err_msg("{{ \"abc }}"), "unterminated quoted string");
        assert_eq!(err_msg("{{ `abc }}"), "unterminated raw quoted string");
        assert_eq!(err_msg("{{ 1abc }}"), "bad number syntax: \"1abc\"");
        assert_eq!(
            err_msg("{{ /* x */ }}"),
            "unrecognized character in action: '/'"
        );
        assert_eq!(
            err_msg("{{/* x */ x }}"),
            "comment ends before closing delimiter"
        );
        assert_eq!(err_msg("{{/* x "), "unclosed comment");
        assert_eq!(err_msg("{{ break }}"), "{{break}} outside {{range}}");
        assert_eq!(
            err_msg("{{ define \"x\" }}{{ end }}"),
            "{{define}} is not supported"
        );
        assert_eq!(
            err_msg("{{ .NAME | 1 }}"),
            "non executable command in pipeline stage 2"
        );
        assert_eq!(
            err_msg("{{ .NAME 1 }}"),
            "can't give argument to non-function .NAME"
        );
        assert_eq!(err_msg("{{ nil }}"), "nil is not a command");
        assert_eq!(err_msg("{{ $x = 1 }}"), "undefined variable \"$x\"");
        assert_eq!(
            err_msg("{{ .NAME.X }}"),
            "can't evaluate field X in type string"
        );
        assert_eq!(
            err_msg("{{ range loop 2 }}{{ .NAME }}{{ end }}"),
            "can't evaluate field NAME in type int"
        );
        assert_eq!(
            err_msg("{{ range \"abc\" }}{{ end }}"),
            "range can't iterate over abc"
        );
        assert_eq!(
            err_msg("{{ if 1 }}{{ else }}{{ else }}{{ end }}"),
            "expected end; found {{else}} in {{if}}"
        );
        assert_eq!(
            err_msg("{{ 99999999999999999999 }}"),
            "99999999999999999999 overflows int"
        );
    }

    #[test]
    fn limits_are_errors_not_hangs() {
        let deep = format!("{}1{}", "(".repeat(500), ")".repeat(500));
        assert_eq!(
            err_msg(&format!("{{{{ {deep} }}}}")),
            "max nesting depth exceeded"
        );
        let ifs = "{{ if 1 }}".repeat(500);
        assert_eq!(err_msg(&ifs), "max nesting depth exceeded");
        assert!(err_msg("{{ range 100000000000 }}{{ end }}").contains("range iterations"));
        assert!(
            err_msg("{{ range loop 100000 }}{{ range loop 100000 }}{{ end }}{{ end }}")
                .contains("range iterations")
        );
        let chain = format!(
            "{{{{ if 0 }}}}{}{{{{ else }}}}ok{{{{ end }}}}",
            "{{ else if 0 }}".repeat(5000)
        );
        assert_eq!(r(&chain), "ok");
    }

    const FUZZ_N: usize = 20000;

    #[test]
    fn malformed_templates_never_panic() {
        let pieces = [
            "{{",
            "}}",
            "{{-",
            "-}}",
            " ",
            "\n",
            "if",
            "else",
            "end",
            "range",
            "with",
            "$x",
            ":=",
            "=",
            "$",
            ".",
            ".NAME",
            "(",
            ")",
            "|",
            ",",
            "\"",
            "`",
            "'",
            "1",
            "-",
            "1.5e",
            "0x",
            "loop",
            "printf",
            "\"%",
            "/*",
            "*/",
            "index",
            "nil",
            "break",
            "é",
            "\\",
            "{{ else if",
            "{{ end }}",
        ];
        let mut seed: u64 = 0x9e3779b97f4a7c15;
        let env = env_of(&[("NAME", "x")]);
        for _ in 0..FUZZ_N {
            let mut src = String::new();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let n = (seed % 12) as usize + 1;
            let mut s2 = seed;
            for _ in 0..n {
                s2 = s2
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                src.push_str(pieces[(s2 >> 33) as usize % pieces.len()]);
            }
            let _ = render(&src, &env);
        }
        // every prefix of a realistic template
        let real = realistic_template();
        for (k, _) in real.char_indices() {
            let _ = render(&real[..k], &env);
        }
        for f in [
            "%",
            "%-",
            "%.",
            "%*",
            "%.*d",
            "%!",
            "%[1]d",
            "%999999999d",
            "%-+# 0 12.3v",
        ] {
            let _ = render(&format!("{{{{ printf {} 1 }}}}", go_quote(f)), &env);
        }
    }

    fn realistic_template() -> String {
        r#"{
  {{ if .CONSUL }}consul: "{{ .CONSUL }}",{{ end }}
  logging: { level: "{{ .LOG_LEVEL | default "INFO" }}" },
  jobs: [
    {{- range $i := loop (.COUNT | default "2") }}
    {
      name: "worker-{{ $i }}",
      exec: ["/bin/worker", "--id={{ $i }}", "--name={{ $.NAME | replaceAll "-" "_" }}"],
      {{- if eq $i 0 }}
      health: { exec: "check", interval: 10, ttl: 25 },
      {{- end }}
    },
    {{- end }}
  ],
  {{- with .PEERS }}
  watches: [
    {{- range split "," . }}
    { name: "{{ . }}", interval: 3 },
    {{- end }}
  ],
  {{- end }}
}"#
        .to_string()
    }

    #[test]
    fn realistic_containerpilot_config() {
        let out = r_env(
            &realistic_template(),
            &[
                ("CONSUL", "consul:8500"),
                ("NAME", "my-app"),
                ("PEERS", "db,cache"),
            ],
        );
        let want = r#"{
  consul: "consul:8500",
  logging: { level: "INFO" },
  jobs: [
    {
      name: "worker-0",
      exec: ["/bin/worker", "--id=0", "--name=my_app"],
      health: { exec: "check", interval: 10, ttl: 25 },
    },
    {
      name: "worker-1",
      exec: ["/bin/worker", "--id=1", "--name=my_app"],
    },
  ],
  watches: [
    { name: "db", interval: 3 },
    { name: "cache", interval: 3 },
  ],
}"#;
        assert_eq!(out, want);

        let out = r_env(
            &realistic_template(),
            &[("COUNT", "1"), ("LOG_LEVEL", "DEBUG")],
        );
        let want = r#"{
  
  logging: { level: "DEBUG" },
  jobs: [
    {
      name: "worker-0",
      exec: ["/bin/worker", "--id=0", "--name="],
      health: { exec: "check", interval: 10, ttl: 25 },
    },
  ],
}"#;
        assert_eq!(out, want);
    }

    #[test]
    fn printing_dot_does_not_crash() {
        assert_eq!(r_env("{{ . }}", &[("A", "1"), ("B", "2")]), "map[A:1 B:2]");
        assert_eq!(r_env("{{ printf \"%v\" . }}", &[("A", "1")]), "map[A:1]");
    }
}
