//! A small JSON5 parser that remembers where every value and key starts, so that
//! config errors can name a line. (The json5 crate drops positions.)
//!
//! Duplicate keys in one object: the last one wins, as in Go's decoder; the entry
//! keeps the place of the first occurrence, so an `Object` never holds a name twice.

use std::collections::HashMap;
use std::fmt;

/// Deeper nesting than this is an error instead of a risk to the stack.
pub const MAX_DEPTH: usize = 128;
/// More values than this in one document is an error instead of a risk to
/// memory (each costs some 40 bytes; a real config has hundreds).
pub const MAX_VALUES: usize = 1_000_000;

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Vec<Spanned>),
    Object(Vec<(Key, Spanned)>),
}

/// A value and the 1-based line/column of its first character.
#[derive(Clone, Debug, PartialEq)]
pub struct Spanned {
    pub value: Value,
    pub line: u32,
    pub col: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    pub name: String,
    pub line: u32,
    pub col: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: u32,
    pub col: u32,
    pub msg: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "parse error at line:col [{}:{}]: {}",
            self.line, self.col, self.msg
        )
    }
}

impl SyntaxError {
    /// The 3.8 report: the message, then the previous and the offending source
    /// line, each prefixed by a right-aligned 5-wide line number and ": ", then a
    /// caret under the offending column.
    pub fn render(&self, src: &str) -> String {
        let lines = source_lines(src);
        let idx = self.line.saturating_sub(1) as usize;
        let mut out = format!("{self}\n");
        if idx >= 1 {
            if let Some(prev) = lines.get(idx - 1) {
                out.push_str(&format!("{:5}: {}\n", self.line - 1, prev));
            }
        }
        let this = lines.get(idx).copied().unwrap_or("");
        let numbered = format!("{:5}: ", self.line);
        // Column 1 sits under the first character after the "NNNNN: " prefix.
        let dashes = numbered.len() - 1 + self.col.max(1) as usize;
        out.push_str(&format!("{numbered}{this}\n"));
        out.push_str(&"-".repeat(dashes));
        out.push('^');
        out
    }
}

fn is_line_terminator(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\u{2028}' | '\u{2029}')
}

/// Splits lines exactly as the parser counts them (`\n`, `\r\n`, `\r`, U+2028, U+2029).
fn source_lines(src: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut iter = src.char_indices().peekable();
    while let Some((i, c)) = iter.next() {
        if is_line_terminator(c) {
            lines.push(&src[start..i]);
            let mut end = i + c.len_utf8();
            if c == '\r' {
                if let Some(&(j, '\n')) = iter.peek() {
                    iter.next();
                    end = j + 1;
                }
            }
            start = end;
        }
    }
    lines.push(&src[start..]);
    lines
}

pub fn parse(src: &str) -> Result<Spanned, SyntaxError> {
    let mut p = Parser {
        chars: src.chars().collect(),
        pos: 0,
        line: 1,
        col: 1,
        values: 0,
    };
    p.skip_blank()?;
    if p.peek().is_none() {
        return Err(p.error_here("unexpected end of input: the config must be an object"));
    }
    let root = p.value(0)?;
    if !matches!(root.value, Value::Object(_)) {
        return Err(SyntaxError {
            line: root.line,
            col: root.col,
            msg: "the top-level value must be an object".to_string(),
        });
    }
    p.skip_blank()?;
    if let Some(c) = p.peek() {
        return Err(p.error_here(&format!(
            "invalid character {} after top-level value",
            show(c)
        )));
    }
    Ok(root)
}

fn show(c: char) -> String {
    format!("{c:?}")
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
    line: u32,
    col: u32,
    /// Values parsed so far.
    values: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos + ahead).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        match c {
            // The '\n' of a "\r\n" pair ends the line, the '\r' is just a column.
            '\r' if self.peek() == Some('\n') => self.col += 1,
            _ if is_line_terminator(c) => {
                self.line += 1;
                self.col = 1;
            }
            _ => self.col += 1,
        }
        Some(c)
    }

    fn error_here(&self, msg: &str) -> SyntaxError {
        SyntaxError {
            line: self.line,
            col: self.col,
            msg: msg.to_string(),
        }
    }

    fn error_at(&self, (line, col): (u32, u32), msg: &str) -> SyntaxError {
        SyntaxError {
            line,
            col,
            msg: msg.to_string(),
        }
    }

    fn here(&self) -> (u32, u32) {
        (self.line, self.col)
    }

    /// Skips whitespace and comments.
    fn skip_blank(&mut self) -> Result<(), SyntaxError> {
        loop {
            match self.peek() {
                Some(c) if c.is_whitespace() || c == '\u{FEFF}' => {
                    self.bump();
                }
                Some('/') if self.peek_at(1) == Some('/') => {
                    while let Some(c) = self.peek() {
                        if is_line_terminator(c) {
                            break;
                        }
                        self.bump();
                    }
                }
                Some('/') if self.peek_at(1) == Some('*') => {
                    let start = self.here();
                    self.bump();
                    self.bump();
                    loop {
                        match self.bump() {
                            None => return Err(self.error_at(start, "unterminated block comment")),
                            Some('*') if self.peek() == Some('/') => {
                                self.bump();
                                break;
                            }
                            Some(_) => {}
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Spanned, SyntaxError> {
        let (line, col) = self.here();
        self.values += 1;
        if self.values > MAX_VALUES {
            return Err(self.error_here(&format!("more than {MAX_VALUES} values is not supported")));
        }
        let value = match self.peek() {
            None => return Err(self.error_here("unexpected end of input")),
            Some('{') => self.object(depth + 1)?,
            Some('[') => self.array(depth + 1)?,
            Some(q @ ('"' | '\'')) => Value::String(self.string(q)?),
            Some(c) if c.is_ascii_digit() || matches!(c, '-' | '+' | '.') => self.number()?,
            Some(c) if is_ident_start(c) => self.word()?,
            Some(c) => {
                return Err(self.error_here(&format!(
                    "invalid character {} looking for beginning of value",
                    show(c)
                )))
            }
        };
        Ok(Spanned { value, line, col })
    }

    fn enter(&self, depth: usize) -> Result<(), SyntaxError> {
        if depth > MAX_DEPTH {
            return Err(self.error_here(&format!(
                "nesting deeper than {MAX_DEPTH} levels is not supported"
            )));
        }
        Ok(())
    }

    fn object(&mut self, depth: usize) -> Result<Value, SyntaxError> {
        self.enter(depth)?;
        self.bump(); // '{'
        let mut entries: Vec<(Key, Spanned)> = Vec::new();
        // Name → slot, so that huge objects stay linear.
        let mut slots: HashMap<String, usize> = HashMap::new();
        loop {
            self.skip_blank()?;
            if self.peek() == Some('}') {
                self.bump();
                return Ok(Value::Object(entries));
            }
            let key = self.key()?;
            self.skip_blank()?;
            match self.peek() {
                Some(':') => {
                    self.bump();
                }
                Some(c) => {
                    return Err(self.error_here(&format!(
                        "invalid character {} after object key (expected ':')",
                        show(c)
                    )))
                }
                None => return Err(self.error_here("unexpected end of input")),
            }
            self.skip_blank()?;
            let val = self.value(depth)?;
            match slots.get(&key.name) {
                Some(&i) => {
                    if let Some(slot) = entries.get_mut(i) {
                        *slot = (key, val);
                    }
                }
                None => {
                    slots.insert(key.name.clone(), entries.len());
                    entries.push((key, val));
                }
            }
            self.skip_blank()?;
            match self.peek() {
                Some(',') => {
                    self.bump();
                }
                Some('}') => {
                    self.bump();
                    return Ok(Value::Object(entries));
                }
                Some(c) => {
                    return Err(self.error_here(&format!(
                        "invalid character {} after object key:value pair (expected ',' or '}}')",
                        show(c)
                    )))
                }
                None => return Err(self.error_here("unexpected end of input")),
            }
        }
    }

    fn key(&mut self) -> Result<Key, SyntaxError> {
        let (line, col) = self.here();
        let name = match self.peek() {
            Some(q @ ('"' | '\'')) => self.string(q)?,
            Some(c) if is_ident_start(c) || c == '\\' => self.identifier()?,
            Some(c) => {
                return Err(self.error_here(&format!(
                    "invalid character {} looking for beginning of object key",
                    show(c)
                )))
            }
            None => return Err(self.error_here("unexpected end of input")),
        };
        Ok(Key { name, line, col })
    }

    fn array(&mut self, depth: usize) -> Result<Value, SyntaxError> {
        self.enter(depth)?;
        self.bump(); // '['
        let mut items = Vec::new();
        loop {
            self.skip_blank()?;
            if self.peek() == Some(']') {
                self.bump();
                return Ok(Value::Array(items));
            }
            items.push(self.value(depth)?);
            self.skip_blank()?;
            match self.peek() {
                Some(',') => {
                    self.bump();
                }
                Some(']') => {
                    self.bump();
                    return Ok(Value::Array(items));
                }
                Some(c) => {
                    return Err(self.error_here(&format!(
                        "invalid character {} after array element (expected ',' or ']')",
                        show(c)
                    )))
                }
                None => return Err(self.error_here("unexpected end of input")),
            }
        }
    }

    /// An identifier name with optional `\uXXXX` escapes (JSON5 object keys).
    fn identifier(&mut self) -> Result<String, SyntaxError> {
        let mut out = String::new();
        loop {
            let at = self.here();
            let c = match self.peek() {
                Some('\\') => {
                    self.bump();
                    if self.peek() != Some('u') {
                        return Err(self.error_at(at, "invalid escape in identifier"));
                    }
                    self.bump();
                    let c = self.unicode_escape(at)?;
                    let ok = if out.is_empty() {
                        is_ident_start(c)
                    } else {
                        is_ident_part(c)
                    };
                    if !ok {
                        return Err(self.error_at(at, "invalid escaped character in identifier"));
                    }
                    c
                }
                Some(c)
                    if (out.is_empty() && is_ident_start(c))
                        || (!out.is_empty() && is_ident_part(c)) =>
                {
                    self.bump();
                    c
                }
                _ => return Ok(out),
            };
            out.push(c);
        }
    }

    /// A bare word in value position: a literal, or an error that says what went wrong.
    fn word(&mut self) -> Result<Value, SyntaxError> {
        let start = self.here();
        let word = self.identifier()?;
        match word.as_str() {
            "null" => Ok(Value::Null),
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            "Infinity" => Ok(Value::Number(f64::INFINITY)),
            "NaN" => Ok(Value::Number(f64::NAN)),
            _ => Err(self.error_at(
                start,
                &format!("invalid value '{word}' (strings must be quoted)"),
            )),
        }
    }

    fn number(&mut self) -> Result<Value, SyntaxError> {
        let start = self.here();
        let negative = match self.peek() {
            Some('-') => {
                self.bump();
                true
            }
            Some('+') => {
                self.bump();
                false
            }
            _ => false,
        };
        let magnitude = match self.peek() {
            Some('I') | Some('N') => {
                let at = self.here();
                let word = self.identifier()?;
                match word.as_str() {
                    "Infinity" => f64::INFINITY,
                    "NaN" => f64::NAN,
                    _ => return Err(self.error_at(at, &format!("invalid number '{word}'"))),
                }
            }
            Some('0') if matches!(self.peek_at(1), Some('x' | 'X')) => {
                self.bump();
                self.bump();
                let mut v = 0f64;
                let mut digits = 0;
                while let Some(d) = self.peek().and_then(|c| c.to_digit(16)) {
                    v = v * 16.0 + f64::from(d);
                    digits += 1;
                    self.bump();
                }
                if digits == 0 {
                    return Err(self.error_here("invalid hexadecimal number: no digits after 0x"));
                }
                v
            }
            _ => self.decimal(start)?,
        };
        if let Some(c) = self.peek() {
            if is_ident_part(c) {
                return Err(
                    self.error_here(&format!("invalid character {} in numeric literal", show(c)))
                );
            }
        }
        Ok(Value::Number(if negative { -magnitude } else { magnitude }))
    }

    fn digits(&mut self) -> String {
        let mut s = String::new();
        while let Some(c) = self.peek().filter(|c| c.is_ascii_digit()) {
            s.push(c);
            self.bump();
        }
        s
    }

    fn decimal(&mut self, start: (u32, u32)) -> Result<f64, SyntaxError> {
        let int_at = self.here();
        let int = self.digits();
        if int.len() > 1 && int.starts_with('0') {
            return Err(self.error_at(int_at, "invalid number: leading zeros are not allowed"));
        }
        let mut frac = String::new();
        if self.peek() == Some('.') {
            self.bump();
            frac = self.digits();
        }
        if int.is_empty() && frac.is_empty() {
            return Err(match self.peek() {
                Some(c) => self.error_here(&format!(
                    "invalid character {} looking for beginning of value",
                    show(c)
                )),
                None => self.error_here("unexpected end of input"),
            });
        }
        let mut exp = String::new();
        if matches!(self.peek(), Some('e' | 'E')) {
            self.bump();
            if let Some(sign @ ('+' | '-')) = self.peek() {
                exp.push(sign);
                self.bump();
            }
            let d = self.digits();
            if d.is_empty() {
                return Err(self.error_here("invalid number: exponent has no digits"));
            }
            exp.push_str(&d);
        }
        // Rebuilt in a form Rust's float parser always accepts ("5." and ".5" are JSON5).
        let text = format!(
            "{}.{}e{}",
            if int.is_empty() { "0" } else { &int },
            if frac.is_empty() { "0" } else { &frac },
            if exp.is_empty() { "0" } else { &exp }
        );
        text.parse::<f64>()
            .map_err(|_| self.error_at(start, "invalid number"))
    }

    fn string(&mut self, quote: char) -> Result<String, SyntaxError> {
        let start = self.here();
        self.bump();
        let mut out = String::new();
        loop {
            let at = self.here();
            match self.peek() {
                None => return Err(self.error_at(start, "unterminated string")),
                Some(c) if c == quote => {
                    self.bump();
                    return Ok(out);
                }
                Some('\n' | '\r') => {
                    return Err(self.error_here(
                        "newline in string (end the line with a backslash to continue it)",
                    ))
                }
                Some('\\') => {
                    self.bump();
                    if let Some(c) = self.escape(at)? {
                        out.push(c);
                    }
                }
                Some(c) => {
                    self.bump();
                    out.push(c);
                }
            }
        }
    }

    /// After a backslash inside a string; `None` for a line continuation.
    fn escape(&mut self, at: (u32, u32)) -> Result<Option<char>, SyntaxError> {
        let Some(c) = self.bump() else {
            return Err(self.error_at(at, "unterminated string"));
        };
        Ok(Some(match c {
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'v' => '\u{b}',
            '0' if self.peek().is_some_and(|d| d.is_ascii_digit()) => {
                return Err(self.error_at(at, "octal escape sequences are not allowed"))
            }
            '0' => '\0',
            '1'..='9' => return Err(self.error_at(at, "invalid escape sequence")),
            'x' => {
                let hi = self.hex_digit(at)?;
                let lo = self.hex_digit(at)?;
                char::from_u32(hi * 16 + lo).unwrap_or('\u{FFFD}')
            }
            'u' => self.unicode_escape(at)?,
            '\r' => {
                if self.peek() == Some('\n') {
                    self.bump();
                }
                return Ok(None);
            }
            '\n' | '\u{2028}' | '\u{2029}' => return Ok(None),
            other => other,
        }))
    }

    fn hex_digit(&mut self, at: (u32, u32)) -> Result<u32, SyntaxError> {
        match self.peek().and_then(|c| c.to_digit(16)) {
            Some(d) => {
                self.bump();
                Ok(d)
            }
            None => Err(self.error_at(at, "invalid hexadecimal escape sequence")),
        }
    }

    fn hex4(&mut self, at: (u32, u32)) -> Result<u32, SyntaxError> {
        let mut v = 0;
        for _ in 0..4 {
            v = v * 16 + self.hex_digit(at)?;
        }
        Ok(v)
    }

    /// After `\u`: four hex digits, joining a surrogate pair when one follows.
    fn unicode_escape(&mut self, at: (u32, u32)) -> Result<char, SyntaxError> {
        let first = self.hex4(at)?;
        if (0xD800..0xDC00).contains(&first)
            && self.peek() == Some('\\')
            && self.peek_at(1) == Some('u')
        {
            let save = (self.pos, self.line, self.col);
            self.bump();
            self.bump();
            let second = self.hex4(at)?;
            if (0xDC00..0xE000).contains(&second) {
                let cp = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
                return Ok(char::from_u32(cp).unwrap_or('\u{FFFD}'));
            }
            // Not a low surrogate: leave it to be read as its own escape.
            (self.pos, self.line, self.col) = save;
        }
        // A lone surrogate cannot live in a Rust string.
        Ok(char::from_u32(first).unwrap_or('\u{FFFD}'))
    }
}

fn is_ident_start(c: char) -> bool {
    c == '$' || c == '_' || c.is_alphabetic()
}

fn is_ident_part(c: char) -> bool {
    is_ident_start(c) || c.is_alphanumeric() || c == '\u{200C}' || c == '\u{200D}'
}

impl Spanned {
    /// Plain JSON for the DEBUG "loaded config" line. Integral numbers print
    /// without a fraction; NaN and infinities (not JSON) print as strings.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Number(n) => number_to_json(*n),
            Value::String(s) => J::String(s.clone()),
            Value::Array(items) => J::Array(items.iter().map(Spanned::to_json).collect()),
            Value::Object(entries) => {
                let mut map = serde_json::Map::new();
                for (k, v) in entries {
                    map.insert(k.name.clone(), v.to_json());
                }
                J::Object(map)
            }
        }
    }
}

fn number_to_json(n: f64) -> serde_json::Value {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if n.fract() == 0.0 && n.abs() <= EXACT {
        return serde_json::Value::from(n as i64);
    }
    match serde_json::Number::from_f64(n) {
        Some(num) => serde_json::Value::Number(num),
        None if n.is_nan() => serde_json::Value::String("NaN".into()),
        None if n > 0.0 => serde_json::Value::String("Infinity".into()),
        None => serde_json::Value::String("-Infinity".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(src: &str) -> Vec<(Key, Spanned)> {
        match parse(src) {
            Ok(Spanned {
                value: Value::Object(entries),
                ..
            }) => entries,
            other => panic!("not an object: {other:?}"),
        }
    }

    /// The value of key `k` in a one-level object.
    fn val(src: &str, k: &str) -> Value {
        obj(src)
            .into_iter()
            .find(|(key, _)| key.name == k)
            .map(|(_, v)| v.value)
            .unwrap_or_else(|| panic!("no key {k}"))
    }

    fn num(src: &str) -> f64 {
        match val(&format!("{{n: {src}}}"), "n") {
            Value::Number(n) => n,
            other => panic!("not a number: {other:?}"),
        }
    }

    fn string(src: &str) -> String {
        match val(&format!("{{s: {src}}}"), "s") {
            Value::String(s) => s,
            other => panic!("not a string: {other:?}"),
        }
    }

    fn err(src: &str) -> SyntaxError {
        match parse(src) {
            Err(e) => e,
            Ok(v) => panic!("parsed: {v:?}"),
        }
    }

    #[test]
    fn plain_json() {
        let v = parse(r#"{"a": 1, "b": [true, false, null], "c": {"d": "e"}}"#).unwrap();
        assert_eq!(
            v.to_json().to_string(),
            r#"{"a":1,"b":[true,false,null],"c":{"d":"e"}}"#
        );
    }

    #[test]
    fn comments_and_whitespace() {
        let src = "// leading\n{ /* inline */ a: 1, // tail\n /* multi\n line */ b: 2 }\n// end";
        let json = parse(src).unwrap().to_json();
        assert_eq!(json.to_string(), r#"{"a":1,"b":2}"#);
        // BOM and non-breaking space are whitespace too
        assert!(parse("\u{FEFF}{\u{A0}a: 1}").is_ok());
    }

    #[test]
    fn unquoted_and_quoted_keys() {
        let entries = obj("{a: 1, $b_2: 2, _c: 3, 'd e': 4, \"f\": 5, \\u0067h: 6, ünï: 7}");
        let names: Vec<&str> = entries.iter().map(|(k, _)| k.name.as_str()).collect();
        assert_eq!(names, ["a", "$b_2", "_c", "d e", "f", "gh", "ünï"]);
    }

    #[test]
    fn trailing_commas() {
        let v = parse("{a: [1, 2,], b: {c: 3,},}").unwrap();
        assert_eq!(v.to_json().to_string(), r#"{"a":[1,2],"b":{"c":3}}"#);
    }

    #[test]
    fn numbers() {
        assert_eq!(num("0x1F"), 31.0);
        assert_eq!(num("0XfF"), 255.0);
        assert_eq!(num("-0x10"), -16.0);
        assert_eq!(num(".5"), 0.5);
        assert_eq!(num("5."), 5.0);
        assert_eq!(num("+1.5"), 1.5);
        assert_eq!(num("-2"), -2.0);
        assert_eq!(num("1e3"), 1000.0);
        assert_eq!(num("2.5E-1"), 0.25);
        assert_eq!(num("0"), 0.0);
        assert_eq!(num("Infinity"), f64::INFINITY);
        assert_eq!(num("-Infinity"), f64::NEG_INFINITY);
        assert_eq!(num("+Infinity"), f64::INFINITY);
        assert!(num("NaN").is_nan());
        assert!(num("-NaN").is_nan());
    }

    #[test]
    fn strings_and_escapes() {
        assert_eq!(string("'single \"q\"'"), "single \"q\"");
        assert_eq!(string("\"double 'q'\""), "double 'q'");
        assert_eq!(string(r#""\b\f\n\r\t\v\0""#), "\u{8}\u{c}\n\r\t\u{b}\0");
        assert_eq!(string(r#"'\'\"\\\/'"#), "'\"\\/");
        assert_eq!(string(r#""\x41\u00e9\uD83D\uDE00""#), "Aé😀");
        assert_eq!(string(r#""\a\c""#), "ac");
        // line continuations: LF, CRLF, CR, U+2028
        assert_eq!(string("'multi\\\nline'"), "multiline");
        assert_eq!(string("'multi\\\r\nline'"), "multiline");
        assert_eq!(string("'multi\\\rline'"), "multiline");
        assert_eq!(string("'multi\\\u{2028}line'"), "multiline");
        // U+2028 may appear unescaped
        assert_eq!(string("'a\u{2028}b'"), "a\u{2028}b");
        // a lone surrogate becomes U+FFFD
        assert_eq!(string(r#""\uD800x""#), "\u{FFFD}x");
    }

    #[test]
    fn positions_are_one_based_first_chars() {
        let src = "{\n  name: \"app\",\n  port: -80,\n\tlist: [\n    1, 'x'\n  ]\n}";
        let root = parse(src).unwrap();
        assert_eq!((root.line, root.col), (1, 1));
        let entries = obj(src);
        let pos: Vec<(String, u32, u32, u32, u32)> = entries
            .iter()
            .map(|(k, v)| (k.name.clone(), k.line, k.col, v.line, v.col))
            .collect();
        assert_eq!(
            pos,
            [
                ("name".to_string(), 2, 3, 2, 9),
                ("port".to_string(), 3, 3, 3, 9),
                ("list".to_string(), 4, 2, 4, 8),
            ]
        );
        let Value::Array(items) = &entries[2].1.value else {
            panic!()
        };
        assert_eq!((items[1].line, items[1].col), (5, 8));
    }

    #[test]
    fn crlf_and_multiline_strings_count_lines() {
        let src = "{\r\n a: 'x\\\r\ny',\r\n b: 1\r\n}";
        let entries = obj(src);
        assert_eq!((entries[1].0.line, entries[1].0.col), (4, 2));
    }

    #[test]
    fn duplicate_keys_last_wins_in_first_place() {
        let entries = obj("{a: 1, b: 2, a: 3}");
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].0.name, "a");
        assert_eq!(entries[0].1.value, Value::Number(3.0));
        assert_eq!(entries[0].0.col, 14);
    }

    #[test]
    fn wide_objects_with_duplicates_stay_linear() {
        let mut src = String::from("{");
        for i in 0..50_000 {
            src.push_str(&format!("k{i}: {i}, k0: {i},"));
        }
        src.push('}');
        let entries = obj(&src);
        assert_eq!(entries.len(), 50_000);
        assert_eq!(entries[0].1.value, Value::Number(49_999.0));
    }

    #[test]
    fn syntax_errors_with_positions() {
        let cases: &[(&str, u32, u32, &str)] = &[
            (
                "<>",
                1,
                1,
                "invalid character '<' looking for beginning of value",
            ),
            (
                "",
                1,
                1,
                "unexpected end of input: the config must be an object",
            ),
            (
                "  \n",
                2,
                1,
                "unexpected end of input: the config must be an object",
            ),
            ("[1]", 1, 1, "the top-level value must be an object"),
            ("\n  'str'", 2, 3, "the top-level value must be an object"),
            (
                "{a: 1} x",
                1,
                8,
                "invalid character 'x' after top-level value",
            ),
            ("{a: 1", 1, 6, "unexpected end of input"),
            (
                "{a 1}",
                1,
                4,
                "invalid character '1' after object key (expected ':')",
            ),
            (
                "{a: 1 b: 2}",
                1,
                7,
                "invalid character 'b' after object key:value pair (expected ',' or '}')",
            ),
            (
                "{a: [1 2]}",
                1,
                8,
                "invalid character '2' after array element (expected ',' or ']')",
            ),
            (
                "{,}",
                1,
                2,
                "invalid character ',' looking for beginning of object key",
            ),
            (
                "{a: [,]}",
                1,
                6,
                "invalid character ',' looking for beginning of value",
            ),
            (
                "{a: 1,,}",
                1,
                7,
                "invalid character ',' looking for beginning of object key",
            ),
            (
                "{a: consul:8500}",
                1,
                5,
                "invalid value 'consul' (strings must be quoted)",
            ),
            ("{a: 'abc}", 1, 5, "unterminated string"),
            (
                "{a: 'ab\nc'}",
                1,
                8,
                "newline in string (end the line with a backslash to continue it)",
            ),
            ("{a: 5s}", 1, 6, "invalid character 's' in numeric literal"),
            (
                "{a: 01}",
                1,
                5,
                "invalid number: leading zeros are not allowed",
            ),
            (
                "{a: 0x}",
                1,
                7,
                "invalid hexadecimal number: no digits after 0x",
            ),
            ("{a: 1e}", 1, 7, "invalid number: exponent has no digits"),
            (
                "{a: -}",
                1,
                6,
                "invalid character '}' looking for beginning of value",
            ),
            (
                "{a: .}",
                1,
                6,
                "invalid character '}' looking for beginning of value",
            ),
            ("{a: -Inf}", 1, 6, "invalid number 'Inf'"),
            ("{a: '\\x4'}", 1, 6, "invalid hexadecimal escape sequence"),
            ("{a: '\\u12'}", 1, 6, "invalid hexadecimal escape sequence"),
            (
                "{a: '\\01'}",
                1,
                6,
                "octal escape sequences are not allowed",
            ),
            ("{a: '\\1'}", 1, 6, "invalid escape sequence"),
            ("{a: 1 /* open", 1, 7, "unterminated block comment"),
            (
                "{a: 1 / 2}",
                1,
                7,
                "invalid character '/' after object key:value pair (expected ',' or '}')",
            ),
            ("{\\x41: 1}", 1, 2, "invalid escape in identifier"),
            (
                "{\\u0031a: 1}",
                1,
                2,
                "invalid escaped character in identifier",
            ),
            (
                "{a: #}",
                1,
                5,
                "invalid character '#' looking for beginning of value",
            ),
            (
                "{\n    \"test\": ,\n    \"test2\": \"hello\"\n}",
                2,
                13,
                "invalid character ',' looking for beginning of value",
            ),
        ];
        for (src, line, col, msg) in cases {
            let e = err(src);
            assert_eq!(
                (e.line, e.col, e.msg.as_str()),
                (*line, *col, *msg),
                "source {src:?}"
            );
        }
    }

    #[test]
    fn value_count_limit() {
        let many = format!("{{a: [{}]}}", "0,".repeat(MAX_VALUES - 2));
        assert!(parse(&many).is_ok());
        let too_many = format!("{{a: [{}]}}", "0,".repeat(MAX_VALUES - 1));
        let e = parse(&too_many).expect_err("over the limit");
        assert_eq!(
            e.msg,
            format!("more than {MAX_VALUES} values is not supported")
        );
    }

    #[test]
    fn depth_limit() {
        let ok = format!(
            "{{a: {}{}}}",
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1)
        );
        assert!(parse(&ok).is_ok());
        let deep = format!("{{a: {}{}}}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        let e = err(&deep);
        assert_eq!((e.line, e.col), (1, 5 + MAX_DEPTH as u32 - 1));
        assert_eq!(e.msg, "nesting deeper than 128 levels is not supported");
        // far deeper input fails fast instead of overflowing the stack
        let e = err(&"{a:".repeat(100_000));
        assert_eq!(e.msg, "nesting deeper than 128 levels is not supported");
    }

    #[test]
    fn render_shows_previous_line_and_caret() {
        let src = "{\n  consul: \"consul:8500\",\n  jobs: [ { name: app } ]\n}\n";
        let e = err(src);
        assert_eq!(
            e.render(src),
            "parse error at line:col [3:19]: invalid value 'app' (strings must be quoted)\n\
             \x20   2:   consul: \"consul:8500\",\n\
             \x20   3:   jobs: [ { name: app } ]\n\
             -------------------------^"
        );
    }

    #[test]
    fn render_on_first_line_and_at_end_of_input() {
        let e = err("<>");
        assert_eq!(
            e.render("<>"),
            "parse error at line:col [1:1]: invalid character '<' looking for beginning of value\n\
             \x20   1: <>\n\
             -------^"
        );
        let src = "{\n  a: 1,\n";
        let e = err(src);
        assert_eq!((e.line, e.col), (3, 1));
        assert_eq!(
            e.render(src),
            "parse error at line:col [3:1]: unexpected end of input\n\
             \x20   2:   a: 1,\n\
             \x20   3: \n\
             -------^"
        );
        assert_eq!(
            e.to_string(),
            "parse error at line:col [3:1]: unexpected end of input"
        );
    }

    #[test]
    fn render_with_crlf_and_wide_line_numbers() {
        let mut src = "{\r\n".to_string();
        for _ in 0..99_999 {
            src.push_str("a: 1,\r\n");
        }
        src.push_str("b: ?}");
        let e = err(&src);
        assert_eq!((e.line, e.col), (100_001, 4));
        let out = e.render(&src);
        assert!(
            out.ends_with("100000: a: 1,\n100001: b: ?}\n-----------^"),
            "{out}"
        );
        // a "\r\n" pair is one line break; a lone '\r' also ends a line
        let e = err("{a: 1,\rb c}");
        assert_eq!((e.line, e.col), (2, 3));
    }

    #[test]
    fn to_json_numbers() {
        let v =
            parse("{a: 1.5, b: 3, c: -0, d: NaN, e: Infinity, f: -Infinity, g: 1e300, h: 0x10}")
                .unwrap();
        assert_eq!(
            v.to_json().to_string(),
            r#"{"a":1.5,"b":3,"c":0,"d":"NaN","e":"Infinity","f":"-Infinity","g":1e+300,"h":16}"#
        );
    }

    #[test]
    fn never_panics_on_garbage() {
        let samples = [
            "{",
            "}",
            "{'",
            "{\"\\",
            "{a:'\\u",
            "{a:0x",
            "{a:-",
            "{a:[",
            "{/",
            "{/*",
            "{a:1e+",
            "{\u{0}}",
            "{a:\u{2029}1}",
            "\u{FFFF}",
            "{a:'\\uD83D\\u'}",
            "{a: tru}",
        ];
        for s in samples {
            let _ = parse(s);
            if let Err(e) = parse(s) {
                let _ = e.render(s);
            }
        }
    }
}
