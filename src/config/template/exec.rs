//! Execution: walks the parse tree with `.` bound to the environment and
//! writes the output into a bounded buffer, counting every step.
//!
//! Values share their text (`Rc<str>`), so binding a variable, ranging over a
//! list or passing `.` around copies nothing; only builtins build new text,
//! and they pay for it from the render's [`Budget`].

use super::budget::{Budget, Limits, Overflow, Sink, MAX_STRING};
use super::catalog::CatalogData;
use super::fmt::format_float_v;
use super::funcs::call_builtin;
use super::parse::{Arg, Cmd, Cond, CondKind, Node, Pipe, Range};
use super::{error_at, TemplateError};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

/// The environment as the template sees it (`.`).
pub(super) type Env = BTreeMap<String, Rc<str>>;

#[derive(Debug, Clone)]
pub(super) enum Value {
    Str(Rc<str>),
    Int(i64),
    Float(f64),
    Bool(bool),
    List(Rc<Vec<Value>>),
    Map(Rc<Env>),
    /// A struct with fixed fields (a service instance for render jobs).
    Record(Rc<Record>),
    Nil,
}

/// What Go would show as a struct: named fields in a fixed order.
#[derive(Debug)]
pub(super) struct Record {
    pub(super) type_name: &'static str,
    pub(super) fields: Vec<(&'static str, Value)>,
}

impl Value {
    pub(super) fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::Int(_) => "int",
            Value::Float(_) => "float64",
            Value::Bool(_) => "bool",
            Value::List(_) => "[]interface {}",
            Value::Map(_) => "map[string]string",
            Value::Record(r) => r.type_name,
            Value::Nil => "<nil>",
        }
    }

    pub(super) fn list(v: Vec<Value>) -> Value {
        Value::List(Rc::new(v))
    }

    pub(super) fn str(s: &str) -> Value {
        Value::Str(Rc::from(s))
    }
}

/// Go's template truth: the zero value of any type is false.
pub(super) fn truth(v: &Value) -> bool {
    match v {
        Value::Str(s) => !s.is_empty(),
        Value::Int(i) => *i != 0,
        Value::Float(f) => *f != 0.0,
        Value::Bool(b) => *b,
        Value::List(l) => !l.is_empty(),
        Value::Map(m) => !m.is_empty(),
        Value::Record(_) => true,
        Value::Nil => false,
    }
}

/// Go's `%v`, written piece by piece so a large value cannot overrun `out`.
pub(super) fn write_v(out: &mut Sink, v: &Value) -> Result<(), Overflow> {
    match v {
        Value::Str(s) => out.push(s),
        Value::Int(i) => out.push(&i.to_string()),
        Value::Float(f) => out.push(&format_float_v(*f)),
        Value::Bool(b) => out.push(if *b { "true" } else { "false" }),
        Value::List(l) => {
            out.push("[")?;
            for (k, e) in l.iter().enumerate() {
                if k > 0 {
                    out.push(" ")?;
                }
                write_v(out, e)?;
            }
            out.push("]")
        }
        Value::Map(m) => {
            out.push("map[")?;
            for (k, (key, val)) in m.iter().enumerate() {
                if k > 0 {
                    out.push(" ")?;
                }
                out.push(key)?;
                out.push(":")?;
                out.push(val)?;
            }
            out.push("]")
        }
        Value::Record(r) => {
            out.push("{")?;
            for (k, (_, val)) in r.fields.iter().enumerate() {
                if k > 0 {
                    out.push(" ")?;
                }
                write_v(out, val)?;
            }
            out.push("}")
        }
        Value::Nil => out.push("<nil>"),
    }
}

/// Go's `%v` of a value known to be small (error messages).
pub(super) fn format_v(v: &Value) -> String {
    let mut out = Sink::new(MAX_STRING);
    match write_v(&mut out, v) {
        Ok(()) => out.into_string(),
        Err(Overflow) => format!("<{} too large to show>", v.type_name()),
    }
}

/// What the builtins may read besides their arguments.
pub(super) struct Scope<'d> {
    /// The environment (`env`, and `.` of the config template).
    pub(super) env: Rc<Env>,
    /// What the watches saw (render-job templates only).
    pub(super) catalog: Option<&'d CatalogData>,
}

/// Executes a parsed template over `env` (and `catalog` for a render job)
/// within `limits`.
pub(super) fn run(
    src: &str,
    nodes: &[Node],
    env: &HashMap<String, String>,
    catalog: Option<&CatalogData>,
    limits: Limits,
) -> Result<String, TemplateError> {
    let env: Rc<Env> = Rc::new(
        env.iter()
            .map(|(k, v)| (k.clone(), Rc::from(v.as_str())))
            .collect(),
    );
    let root = Value::Map(Rc::clone(&env));
    let mut exec = Exec {
        src,
        scope: Scope { env, catalog },
        vars: vec![("$".to_string(), root.clone())],
        out: Sink::new(limits.output),
        budget: Budget::new(limits),
    };
    exec.exec_list(nodes, &root)?;
    Ok(exec.out.into_string())
}

#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Normal,
    Break,
    Continue,
}

struct Exec<'s> {
    src: &'s str,
    scope: Scope<'s>,
    vars: Vec<(String, Value)>,
    out: Sink,
    budget: Budget,
}

impl Exec<'_> {
    fn err(&self, off: usize, msg: impl Into<String>) -> TemplateError {
        error_at(self.src, off, msg)
    }

    fn output_full(&self, off: usize) -> TemplateError {
        let max = self.budget.limits().output;
        self.err(off, format!("output exceeds {max} bytes"))
    }

    fn exec_list(&mut self, nodes: &[Node], dot: &Value) -> Result<Flow, TemplateError> {
        for node in nodes {
            let flow = match node {
                Node::Text(off, s) => {
                    self.out.push(s).map_err(|_| self.output_full(*off))?;
                    Flow::Normal
                }
                Node::Action(off, pipe) => {
                    let v = self
                        .budget
                        .step()
                        .and_then(|()| self.eval_pipe(pipe, dot, true))
                        .map_err(|m| self.err(*off, m))?;
                    if pipe.decl.is_empty() {
                        let written = match v {
                            Value::Nil => self.out.push("<no value>"),
                            v => write_v(&mut self.out, &v),
                        };
                        written.map_err(|_| self.output_full(*off))?;
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
                    .map(|(k, v)| (Value::str(k), Value::Str(Rc::clone(v))))
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
            self.budget.iteration().map_err(|m| self.err(r.off, m))?;
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
        self.budget.step()?;
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
            Arg::Str(s) => Ok(Value::Str(Rc::clone(s))),
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
        call_builtin(&self.scope, &mut self.budget, name, vals)
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
            Value::Map(m) => m
                .get(field)
                .map_or_else(|| Value::str(""), |s| Value::Str(Rc::clone(s))),
            Value::Record(r) => match r.fields.iter().find(|(n, _)| n == field) {
                Some((_, v)) => v.clone(),
                None => {
                    return Err(format!(
                        "can't evaluate field {field} in type {}",
                        r.type_name
                    ))
                }
            },
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

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[test]
    fn var_and_missing_var() {
        renders(&[
            ("name: {{.NAME}}", "name: my-service"),
            ("name: {{ .NONEXISTENT }}!", "name: !"),
            ("{{ .FOO }}", "a=b"),
        ]);
    }

    #[test]
    fn variables() {
        renders(&[
            ("{{ $x := .NAME }}{{ $x }}", "my-service"),
            ("{{ $x := 1 }}{{ $x = 2 }}{{ $x }}", "2"),
            ("{{ $.NAME }}", "my-service"),
            (
                "{{ $x := 0 }}{{ range loop 4 }}{{ $x = . }}{{ end }}{{ $x }}",
                "3",
            ),
            (
                "{{ range $i, $v := split \",\" .LIST }}{{ $i }}={{ $v }};{{ end }}",
                "0=a;1=b;2=c;",
            ),
            (
                "{{ range $v := split \",\" .LIST }}{{ $v }}{{ end }}",
                "abc",
            ),
            (
                "{{ range loop 2 }}{{ $.NAME }}{{ end }}",
                "my-servicemy-service",
            ),
            ("{{ if $x := .NAME }}{{ $x }}{{ end }}", "my-service"),
            ("{{ with $x := .EMPTY }}{{ else }}none{{ end }}", "none"),
        ]);
        // a variable declared in a block ends with the block
        assert_eq!(
            err_msg("{{ if true }}{{ $y := 1 }}{{ end }}{{ $y }}"),
            "undefined variable \"$y\""
        );
    }

    #[test]
    fn conditionals() {
        renders(&[
            ("{{ if .NAME }}yes{{ else }}no{{ end }}", "yes"),
            ("{{ if .EMPTY }}yes{{ else }}no{{ end }}", "no"),
            ("{{ if .MISSING }}yes{{ end }}", ""),
            ("{{ if 0 }}a{{ else if \"\" }}b{{ else if 0.0 }}c{{ else if false }}d{{ else }}e{{ end }}", "e"),
            ("{{ if eq .COUNT \"1\" }}one{{ else if eq .COUNT \"3\" }}three{{ else }}many{{ end }}", "three"),
            ("{{ if loop 0 }}a{{ else }}empty list{{ end }}", "empty list"),
            ("{{ if loop 1 }}non-empty{{ end }}", "non-empty"),
            ("{{ with .NAME }}[{{ . }}]{{ end }}", "[my-service]"),
            ("{{ with .EMPTY }}[{{ . }}]{{ else }}nothing{{ end }}", "nothing"),
            ("{{ with .EMPTY }}a{{ else with .NAME }}{{ . }}{{ end }}", "my-service"),
        ]);
        // else-if inside with is a nested if that needs its own end (Go)
        assert_eq!(
            r("{{ with .EMPTY }}a{{ else if .NAME }}b{{ end }}c{{ end }}"),
            "bc"
        );
    }

    #[test]
    fn pipelines_and_parens() {
        renders(&[
            ("{{ \"a\" | printf \"%s-%s\" \"b\" }}", "b-a"),
            ("{{ printf \"%s\" (printf \"%d\" (len .NAME)) }}", "10"),
            ("{{ (index (split \",\" .LIST) 1) }}", "b"),
            ("{{ .NAME | len | printf \"%03d\" }}", "010"),
            ("{{ (.) | len | lt 3 }}", "true"),
        ]);
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

    #[test]
    fn printing_dot_does_not_crash() {
        assert_eq!(r_env("{{ . }}", &[("A", "1"), ("B", "2")]), "map[A:1 B:2]");
        assert_eq!(r_env("{{ printf \"%v\" . }}", &[("A", "1")]), "map[A:1]");
    }
}
