//! The Go `text/template` subset ContainerPilot renders its config file with,
//! laid out like Go's engine:
//!
//! | file        | job                                                         |
//! |-------------|-------------------------------------------------------------|
//! | `lex.rs`    | text and `{{ }}` actions → tokens (trim markers, comments)  |
//! | `parse.rs`  | tokens → parse tree; variables and functions checked here   |
//! | `exec.rs`   | walks the tree over the environment, writes the output      |
//! | `funcs.rs`  | the builtin functions (`split`, `join`, `loop`, `printf`...) |
//! | `fmt.rs`    | Go's `fmt` verbs and number formatting for `printf`/`%v`    |
//! | `budget.rs` | what one render may cost (bytes, list sizes, steps)         |
//! | `catalog.rs`| render jobs' `service`/`key` functions and what they read   |
//!
//! The whole file is one template named `config`; `.` is the environment as a
//! string map and missing keys render empty (Go's `missingkey=zero` on a
//! `map[string]string`). Parsing happens fully before execution, so errors in
//! branches that are never taken (undefined functions or variables, missing
//! `{{end}}`) are still reported, as Go does.
//!
//! The config is rendered by PID 1, at start-up and on every reload, so no
//! template may cost more than the budget: every builtin sizes its result from
//! its inputs and reserves it before allocating, and the output is written
//! into a bounded buffer. A template over budget is an error, never an abort.
//!
//! Render jobs use the same engine on their own template ([`render_catalog`]):
//! `.` is the environment there too, the catalog functions are defined, and
//! the tighter [`Limits::RENDER`] apply, because those renders run inside the
//! loop on every change of a watch.

mod budget;
mod catalog;
mod exec;
mod fmt;
mod funcs;
mod lex;
mod parse;

pub use budget::{
    Limits, MAX_ALLOC, MAX_DEPTH, MAX_ELEMS, MAX_ITERATIONS, MAX_STEPS, MAX_STRING,
    RENDER_MAX_SOURCE,
};
pub use catalog::{CatalogData, CatalogRef, RefKind, ServiceEntry};

use std::collections::HashMap;

/// A parse or execution error, positioned at the action that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub line: usize,
    pub col: usize,
    pub msg: String,
}

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
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
    let items = lex::lex(src).map_err(|(off, msg)| error_at(src, off, msg))?;
    let nodes = parse::Parser::new(src, items, false).parse_root()?;
    exec::run(src, &nodes, env, None, Limits::CONFIG)
}

/// Parses a render job's template: the services and keys it reads, or the
/// first syntax error.
pub fn catalog_refs(src: &str) -> Result<Vec<CatalogRef>, TemplateError> {
    parse_catalog(src).map(|(_, refs)| refs)
}

fn parse_catalog(src: &str) -> Result<(Vec<parse::Node>, Vec<CatalogRef>), TemplateError> {
    if src.len() > RENDER_MAX_SOURCE {
        let msg = format!("template is larger than {RENDER_MAX_SOURCE} bytes");
        return Err(TemplateError {
            line: 1,
            col: 1,
            msg,
        });
    }
    let items = lex::lex(src).map_err(|(off, msg)| error_at(src, off, msg))?;
    let mut parser = parse::Parser::new(src, items, true);
    let nodes = parser.parse_root()?;
    Ok((nodes, parser.refs))
}

/// Renders a render job's template over the environment and what its
/// watches saw, within [`Limits::RENDER`].
pub fn render_catalog(
    src: &str,
    env: &HashMap<String, String>,
    data: &CatalogData,
) -> Result<String, TemplateError> {
    let (nodes, _) = parse_catalog(src)?;
    exec::run(src, &nodes, env, Some(data), Limits::RENDER)
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

/// What the tests of every part render with.
#[cfg(test)]
mod testing {
    pub(super) use super::{render, TemplateError};
    pub(super) use std::collections::HashMap;

    pub(super) fn env_of(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    pub(super) fn r_env(src: &str, pairs: &[(&str, &str)]) -> String {
        match render(src, &env_of(pairs)) {
            Ok(s) => s,
            Err(e) => panic!("render({src:?}) failed: {e}"),
        }
    }

    pub(super) fn r(src: &str) -> String {
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

    pub(super) fn e(src: &str) -> TemplateError {
        match render(src, &env_of(&[("NAME", "x"), ("N", "3")])) {
            Ok(s) => panic!("render({src:?}) should fail, got {s:?}"),
            Err(e) => e,
        }
    }

    pub(super) fn err_msg(src: &str) -> String {
        e(src).msg
    }

    /// Each template renders to its text.
    pub(super) fn renders(cases: &[(&str, &str)]) {
        for (src, want) in cases {
            assert_eq!(r(src), *want, "rendering {src:?}");
        }
    }

    /// Each template fails with its message.
    pub(super) fn fails(cases: &[(&str, &str)]) {
        for (src, want) in cases {
            assert_eq!(err_msg(src), *want, "rendering {src:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fmt::go_quote;
    use super::testing::*;

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
}
