//! The parser: tokens become a tree of text, actions, conditionals and
//! ranges. Variables must be declared and functions defined before use, in
//! every branch, as in Go.

use super::budget::MAX_DEPTH;
use super::catalog::{ref_kind, CatalogRef};
use super::error_at;
use super::fmt::{format_float_v, go_quote};
use super::funcs;
use super::lex::{Item, Tok, Token};
use super::TemplateError;

#[derive(Debug)]
pub(super) enum Node {
    Text(usize, String),
    Action(usize, Pipe),
    Cond(Cond),
    Range(Range),
    Break,
    Continue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CondKind {
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
pub(super) struct Branch {
    pub(super) off: usize,
    pub(super) pipe: Pipe,
    pub(super) body: Vec<Node>,
}

/// An `if` or `with` with its `else if`/`else with` chain flattened, so long
/// chains cost no recursion.
#[derive(Debug)]
pub(super) struct Cond {
    pub(super) kind: CondKind,
    pub(super) branches: Vec<Branch>,
    pub(super) els: Vec<Node>,
}

#[derive(Debug)]
pub(super) struct Range {
    pub(super) off: usize,
    pub(super) pipe: Pipe,
    pub(super) body: Vec<Node>,
    pub(super) els: Vec<Node>,
}

#[derive(Debug)]
pub(super) struct Pipe {
    pub(super) decl: Vec<String>,
    /// `=` instead of `:=`.
    pub(super) assign: bool,
    pub(super) cmds: Vec<Cmd>,
}

#[derive(Debug)]
pub(super) struct Cmd {
    pub(super) args: Vec<Arg>,
}

#[derive(Debug)]
pub(super) enum Arg {
    Func(String),
    Dot,
    Field(Vec<String>),
    Var(String, Vec<String>),
    Str(std::rc::Rc<str>),
    Int(i64),
    Float(f64),
    Bool(bool),
    Nil,
    Pipe(Box<Pipe>),
    Chain(Box<Pipe>, Vec<String>),
}

impl Arg {
    pub(super) fn describe(&self) -> String {
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

const KEYWORDS: &[&str] = &[
    "block", "break", "continue", "define", "else", "end", "if", "range", "template", "with",
];

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

pub(super) struct Parser<'s> {
    src: &'s str,
    items: std::vec::IntoIter<Item>,
    vars: Vec<String>,
    depth: usize,
    range_depth: usize,
    /// A render job's template: the catalog functions exist.
    catalog: bool,
    /// The services and keys the template reads, in order of first use.
    pub(super) refs: Vec<CatalogRef>,
}

impl<'s> Parser<'s> {
    pub(super) fn new(src: &'s str, items: Vec<Item>, catalog: bool) -> Self {
        Parser {
            src,
            items: items.into_iter(),
            vars: vec!["$".to_string()],
            depth: 0,
            range_depth: 0,
            catalog,
            refs: Vec::new(),
        }
    }

    fn err(&self, off: usize, msg: impl Into<String>) -> TemplateError {
        error_at(self.src, off, msg)
    }

    pub(super) fn parse_root(&mut self) -> Result<Vec<Node>, TemplateError> {
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
        self.note_catalog_read(cur.off, &args)?;
        Ok(Cmd { args })
    }

    /// Remembers which service or key a catalog function reads; it must be
    /// named by a literal so the loader can check a watch provides it.
    fn note_catalog_read(&mut self, off: usize, args: &[Arg]) -> Result<(), TemplateError> {
        let Some(Arg::Func(func)) = args.first() else {
            return Ok(());
        };
        let Some(kind) = ref_kind(func) else {
            return Ok(());
        };
        let Some(Arg::Str(name)) = args.get(1) else {
            let what = match kind {
                super::catalog::RefKind::Service => "service name",
                super::catalog::RefKind::Key => "key path",
            };
            return Err(self.err(
                off,
                format!("{func} takes the {what} as a quoted string right after it"),
            ));
        };
        if !self
            .refs
            .iter()
            .any(|r| r.kind == kind && *r.name == **name)
        {
            let at = error_at(self.src, off, "");
            self.refs.push(CatalogRef {
                kind,
                name: name.to_string(),
                line: at.line,
                col: at.col,
            });
        }
        Ok(())
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
                if !funcs::is_defined(&name, self.catalog) {
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
            Tok::Str(s) => Arg::Str(s.into()),
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

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[test]
    fn nested_blocks() {
        let src = "{{ range $i := loop 3 }}{{ if eq $i 1 }}{{ with $.NAME }}<{{ . }}>{{ end }}{{ else }}{{ range loop $i 0 }}{{ . }}{{ end }}.{{ end }}{{ end }}";
        assert_eq!(r(src), ".<my-service>21.");
        renders(&[
            ("{{ range loop 0 }}x{{ else }}none{{ end }}", "none"),
            ("{{ range split \",\" .EMPTY }}x{{ else }}empty{{ end }}", "empty"),
            ("{{ range 3 }}{{ . }}{{ end }}", "012"),
            ("{{ range $k, $v := . }}{{ if eq $k \"COUNT\" \"NAME\" }}{{ $k }}={{ $v }} {{ end }}{{ end }}", "COUNT=3 NAME=my-service "),
            ("{{ range loop 5 }}{{ if eq . 3 }}{{ break }}{{ end }}{{ if eq . 1 }}{{ continue }}{{ end }}{{ . }}{{ end }}", "02"),
        ]);
    }

    #[test]
    fn error_positions() {
        let err = e("line one\n  {{ .NAME }} {{ if .N }}\nx");
        assert_eq!((err.line, err.col), (2, 15));
        assert_eq!(err.msg, "missing {{end}} for {{if}}");
        assert_eq!(
            err.to_string(),
            "template: config:2:15: missing {{end}} for {{if}}"
        );
        for (src, line, col, msg) in [
            ("ab\ncd {{ end }}", 2, 4, "unexpected {{end}}"),
            ("{{ .NAME }}\n\n    {{ .NAME", 3, 5, "unclosed action"),
            (
                "x\n{{ if true }}\n  {{ foo 1 }}\n{{ end }}",
                3,
                3,
                "function \"foo\" not defined",
            ),
            ("é{{ $x }}", 1, 2, "undefined variable \"$x\""),
            (
                "a\nb\n c {{ index (loop 2) 9 }}",
                3,
                4,
                "error calling index: index out of range: 9",
            ),
        ] {
            let err = e(src);
            assert_eq!(
                (err.line, err.col, err.msg.as_str()),
                (line, col, msg),
                "{src:?}"
            );
        }
        let err = e("{{ regexReplaceAll \"[\" \"\" \"\" }}");
        assert_eq!((err.line, err.col), (1, 1));
        let err = e("{{ range loop 2 }}\n{{ else }}{{ else }}{{ end }}");
        assert_eq!((err.line, err.col), (2, 11));
        let err = e("{{ else }}");
        assert_eq!(err.msg, "unexpected {{else}}");
    }

    #[test]
    fn parse_error_messages() {
        fails(&[
            ("{{ }}", "missing value for command"),
            ("{{ if }}{{ end }}", "missing value for if"),
            ("{{ (1 }}", "unclosed left paren"),
            ("{{ 1) }}", "unexpected right paren"),
            ("{{ \"abc }}", "unterminated quoted string"),
            ("{{ `abc }}", "unterminated raw quoted string"),
            ("{{ 1abc }}", "bad number syntax: \"1abc\""),
            ("{{ /* x */ }}", "unrecognized character in action: '/'"),
            ("{{/* x */ x }}", "comment ends before closing delimiter"),
            ("{{/* x ", "unclosed comment"),
            ("{{ break }}", "{{break}} outside {{range}}"),
            ("{{ define \"x\" }}{{ end }}", "{{define}} is not supported"),
            (
                "{{ .NAME | 1 }}",
                "non executable command in pipeline stage 2",
            ),
            ("{{ .NAME 1 }}", "can't give argument to non-function .NAME"),
            ("{{ nil }}", "nil is not a command"),
            ("{{ $x = 1 }}", "undefined variable \"$x\""),
            ("{{ .NAME.X }}", "can't evaluate field X in type string"),
            (
                "{{ range loop 2 }}{{ .NAME }}{{ end }}",
                "can't evaluate field NAME in type int",
            ),
            (
                "{{ range \"abc\" }}{{ end }}",
                "range can't iterate over abc",
            ),
            (
                "{{ if 1 }}{{ else }}{{ else }}{{ end }}",
                "expected end; found {{else}} in {{if}}",
            ),
            (
                "{{ 99999999999999999999 }}",
                "99999999999999999999 overflows int",
            ),
        ]);
    }
}
