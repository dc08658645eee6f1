//! Command-line flags with the rules of Go's `flag` package, which ContainerPilot 3
//! scripts rely on: `-flag`, `--flag`, `-flag=v`, `-flag v`; boolean flags only take
//! a value through `=`; parsing stops at the first positional argument or `--`.
//!
//! lexopt is not used: it reads `-config` as a cluster of short flags, and Go's
//! single-dash long flags are the whole point of this parser.

use std::fmt;

/// What the user asked for, after applying 3.8's subcommand precedence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Version,
    Template {
        out: Option<String>,
    },
    Validate,
    /// Print the job/watch dependency graph in Graphviz DOT.
    Graph,
    /// Print a 2.x config as an equivalent 3.x config.
    Convert,
    Reload,
    /// `true` = enable; any other non-empty value disables (3.8).
    Maintenance(bool),
    /// `(key, Some(value))` sets, `(key, None)` unsets (SPEC §2.5).
    PutEnv(Vec<(String, Option<String>)>),
    PutMetric(Vec<(String, String)>),
    Ping,
    Status {
        json: bool,
    },
    Signal {
        job: String,
        signal: String,
    },
    Run,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cli {
    /// `-config`, or the `CONTAINERPILOT` environment variable when the flag is empty.
    pub config: Option<String>,
    pub command: Command,
    /// Arguments after the flags: the main application of shim mode.
    pub app: Vec<String>,
    /// `-main-name`: the job name of that application (default `app`).
    pub main_name: Option<String>,
    /// `-strict`: config warnings (a repeated job name) are errors, for
    /// `-validate` and for the daemon (start-up and reloads).
    pub strict: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

pub const USAGE: &str = "Usage of containerpilot:
  -config string
        file path to JSON5 configuration file (defaults to $CONTAINERPILOT)
  -template
        render template and quit
  -out string
        file path where to save rendered JSON config file (\"-\" or empty = stdout)
  -validate (alias -check)
        load, render and validate the config, print every error and warning found
  -strict
        treat config warnings (a repeated job name) as errors, with -validate or
        when running
  -graph
        print the job and watch dependency graph (Graphviz DOT) and quit
  -version
        show version identifier and quit
  -reload
        reload a ContainerPilot process through its control socket
  -maintenance string
        toggle maintenance mode through the control socket (\"enable\" or \"disable\")
  -putenv key=value
        update environ of a ContainerPilot process (repeatable; \"key\" alone unsets)
  -putmetric key=value
        update metrics of a ContainerPilot process (repeatable)
  -ping
        check that the ContainerPilot control socket answers
  -status
        print the status of jobs, services and watches (add -json for JSON)
  -json
        with -status: print JSON instead of a table
  -signal job=SIGNAL
        send a signal to a job's running process through the control socket
  -convert
        print a ContainerPilot 2.x config as an equivalent 3.x config
  -main-name string
        job name of the trailing application in shim mode (default \"app\")

Arguments after the flags (or after --) are the main application: it runs as a
job, and when it exits the daemon stops and exits with its exit code.
";

#[derive(Default)]
struct Raw {
    config: Option<String>,
    template: bool,
    out: Option<String>,
    version: bool,
    validate: bool,
    graph: bool,
    help: bool,
    reload: bool,
    maintenance: Option<String>,
    putenv: Vec<(String, Option<String>)>,
    putmetric: Vec<(String, String)>,
    ping: bool,
    status: bool,
    json: bool,
    signal: Option<String>,
    main_name: Option<String>,
    convert: bool,
    strict: bool,
}

fn parse_bool(flag: &str, v: &str) -> Result<bool, UsageError> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(UsageError(format!(
            "invalid boolean value {v:?} for -{flag}: parse error"
        ))),
    }
}

fn split_kv(flag: &str, v: &str) -> Result<(String, String), UsageError> {
    match v.split_once('=') {
        Some((k, val)) if !k.is_empty() => Ok((k.to_string(), val.to_string())),
        _ => Err(UsageError(format!(
            "invalid value {v:?} for flag -{flag}: flag value '{v}' was not in the format 'key=val'"
        ))),
    }
}

/// Parse `args` (without the program name). `env_config` is `$CONTAINERPILOT`.
pub fn parse(args: &[String], env_config: Option<String>) -> Result<Cli, UsageError> {
    let mut raw = Raw::default();
    let mut i = 0;
    let mut app_from = args.len();
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" {
            app_from = i;
            break;
        }
        let Some(stripped) = arg.strip_prefix('-') else {
            // Go stops at the first positional argument; the rest is the application.
            app_from = i - 1;
            break;
        };
        if stripped.is_empty() {
            app_from = i - 1;
            break;
        }
        let body = stripped.strip_prefix('-').unwrap_or(stripped);
        if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
            return Err(UsageError(format!("bad flag syntax: {arg}")));
        }
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let bool_flag = |v: Option<String>| -> Result<bool, UsageError> {
            match v {
                None => Ok(true),
                Some(v) => parse_bool(name, &v),
            }
        };
        let mut take_value = |inline: Option<String>| -> Result<String, UsageError> {
            if let Some(v) = inline {
                return Ok(v);
            }
            match args.get(i) {
                Some(v) => {
                    i += 1;
                    Ok(v.clone())
                }
                None => Err(UsageError(format!("flag needs an argument: -{name}"))),
            }
        };
        match name {
            "config" => raw.config = Some(take_value(inline)?),
            "out" => raw.out = Some(take_value(inline)?),
            "maintenance" => raw.maintenance = Some(take_value(inline)?),
            "signal" => raw.signal = Some(take_value(inline)?),
            "main-name" => raw.main_name = Some(take_value(inline)?),
            "convert" => raw.convert = bool_flag(inline)?,
            "putenv" => {
                let v = take_value(inline)?;
                match v.split_once('=') {
                    Some(_) => {
                        let (k, val) = split_kv(name, &v)?;
                        raw.putenv.push((k, Some(val)));
                    }
                    None if !v.is_empty() => raw.putenv.push((v, None)),
                    None => {
                        return Err(UsageError(
                            "invalid value \"\" for flag -putenv: a key is required".into(),
                        ))
                    }
                }
            }
            "putmetric" => {
                let v = take_value(inline)?;
                raw.putmetric.push(split_kv(name, &v)?);
            }
            "template" => raw.template = bool_flag(inline)?,
            "version" => raw.version = bool_flag(inline)?,
            "validate" | "check" => raw.validate = bool_flag(inline)?,
            "graph" => raw.graph = bool_flag(inline)?,
            "help" | "h" => raw.help = bool_flag(inline)?,
            "reload" => raw.reload = bool_flag(inline)?,
            "ping" => raw.ping = bool_flag(inline)?,
            "status" => raw.status = bool_flag(inline)?,
            "json" => raw.json = bool_flag(inline)?,
            "strict" => raw.strict = bool_flag(inline)?,
            _ => {
                return Err(UsageError(format!(
                    "flag provided but not defined: -{name}"
                )))
            }
        }
    }

    let config = match raw.config {
        Some(c) if !c.is_empty() => Some(c),
        _ => env_config.filter(|c| !c.is_empty()),
    };
    // Precedence of reference §1.2, with our additions placed after 3.8's own.
    let command = if raw.help {
        Command::Help
    } else if raw.version {
        Command::Version
    } else if raw.template {
        Command::Template { out: raw.out }
    } else if raw.validate {
        Command::Validate
    } else if raw.graph {
        Command::Graph
    } else if raw.convert {
        Command::Convert
    } else if raw.reload {
        Command::Reload
    } else if let Some(m) = raw.maintenance.filter(|m| !m.is_empty()) {
        // 3.8 took any other word as "disable"; a typo must not end maintenance.
        match m.as_str() {
            "enable" => Command::Maintenance(true),
            "disable" => Command::Maintenance(false),
            _ => {
                return Err(UsageError(format!(
                    "invalid value {m:?} for flag -maintenance: expected \"enable\" or \"disable\""
                )))
            }
        }
    } else if !raw.putenv.is_empty() {
        Command::PutEnv(raw.putenv)
    } else if !raw.putmetric.is_empty() {
        Command::PutMetric(raw.putmetric)
    } else if raw.ping {
        Command::Ping
    } else if raw.status {
        Command::Status { json: raw.json }
    } else if let Some(s) = raw.signal {
        let (job, signal) = s.split_once('=').ok_or_else(|| {
            UsageError(format!(
                "invalid value {s:?} for flag -signal: expected job=SIGNAL"
            ))
        })?;
        if job.is_empty() || signal.is_empty() {
            return Err(UsageError(format!(
                "invalid value {s:?} for flag -signal: expected job=SIGNAL"
            )));
        }
        Command::Signal {
            job: job.to_string(),
            signal: signal.to_string(),
        }
    } else {
        Command::Run
    };
    let app = args.get(app_from..).map(|a| a.to_vec()).unwrap_or_default();
    if let Some(n) = &raw.main_name {
        if n.is_empty() {
            return Err(UsageError(
                "invalid value \"\" for flag -main-name: a job name is required".into(),
            ));
        }
    }
    Ok(Cli {
        config,
        command,
        app,
        main_name: raw.main_name,
        strict: raw.strict,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Cli, UsageError> {
        let v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse(&v, None)
    }

    #[test]
    fn config_flag_in_every_go_form() {
        for args in [
            &["-config", "x.json5"][..],
            &["--config", "x.json5"],
            &["-config=x.json5"],
            &["--config=x.json5"],
        ] {
            let cli = p(args).unwrap();
            assert_eq!(cli.config.as_deref(), Some("x.json5"), "{args:?}");
            assert_eq!(cli.command, Command::Run);
        }
    }

    #[test]
    fn env_fallback_only_when_flag_empty() {
        let cli = parse(&[], Some("/etc/cp.json5".into())).unwrap();
        assert_eq!(cli.config.as_deref(), Some("/etc/cp.json5"));
        let cli = parse(&["-config=".into()], Some("/e".into())).unwrap();
        assert_eq!(cli.config.as_deref(), Some("/e"));
        let cli = parse(&["-config".into(), "/f".into()], Some("/e".into())).unwrap();
        assert_eq!(cli.config.as_deref(), Some("/f"));
    }

    #[test]
    fn strict_goes_with_validate_or_run() {
        let cli = p(&["-validate", "-strict", "-config", "x"]).unwrap();
        assert_eq!(cli.command, Command::Validate);
        assert!(cli.strict);
        let cli = p(&["--strict=false", "-check"]).unwrap();
        assert!(!cli.strict);
        let cli = p(&["-strict", "-config", "x"]).unwrap();
        assert_eq!(cli.command, Command::Run);
        assert!(cli.strict);
        assert!(!p(&["-validate"]).unwrap().strict);
    }

    #[test]
    fn boolean_flags_take_value_only_with_equals() {
        assert_eq!(p(&["-ping"]).unwrap().command, Command::Ping);
        assert_eq!(p(&["-ping=true"]).unwrap().command, Command::Ping);
        assert_eq!(p(&["-ping=false"]).unwrap().command, Command::Run);
        // "-ping true": `true` is a positional argument and stops parsing.
        assert_eq!(
            p(&["-ping", "true", "-version"]).unwrap().command,
            Command::Ping
        );
        let e = p(&["-ping=maybe"]).unwrap_err();
        assert!(e.0.contains("-ping"), "{e}");
    }

    #[test]
    fn precedence_follows_3_8() {
        assert_eq!(p(&["-ping", "-version"]).unwrap().command, Command::Version);
        assert_eq!(
            p(&["-ping", "-reload", "-template"]).unwrap().command,
            Command::Template { out: None }
        );
        assert_eq!(
            p(&[
                "-putmetric",
                "a=1",
                "-putenv",
                "b=2",
                "-maintenance",
                "enable"
            ])
            .unwrap()
            .command,
            Command::Maintenance(true)
        );
        assert_eq!(
            p(&["-putmetric", "a=1", "-putenv", "b=2"]).unwrap().command,
            Command::PutEnv(vec![("b".into(), Some("2".into()))])
        );
        assert_eq!(
            p(&["-maintenance", "disable"]).unwrap().command,
            Command::Maintenance(false)
        );
        let e = p(&["-maintenance", "off"]).unwrap_err();
        assert!(
            e.0.contains("-maintenance") && e.0.contains("\"off\""),
            "{e}"
        );
        assert_eq!(p(&["-check"]).unwrap().command, Command::Validate);
        assert_eq!(p(&["-graph"]).unwrap().command, Command::Graph);
    }

    #[test]
    fn repeatable_kv_split_on_first_equals() {
        let cli = p(&["-putenv", "K=P1=P2", "-putenv=B=", "-putenv", "GONE"]).unwrap();
        assert_eq!(
            cli.command,
            Command::PutEnv(vec![
                ("K".into(), Some("P1=P2".into())),
                ("B".into(), Some("".into())),
                ("GONE".into(), None)
            ])
        );
        let cli = p(&["-putmetric", "m=42", "--putmetric=n=1.5"]).unwrap();
        assert_eq!(
            cli.command,
            Command::PutMetric(vec![("m".into(), "42".into()), ("n".into(), "1.5".into())])
        );
        let e = p(&["-putmetric", "novalue"]).unwrap_err();
        assert!(e.0.contains("not in the format 'key=val'"), "{e}");
    }

    #[test]
    fn usage_errors_name_the_flag() {
        let e = p(&["-bogus"]).unwrap_err();
        assert_eq!(e.0, "flag provided but not defined: -bogus");
        let e = p(&["-config"]).unwrap_err();
        assert_eq!(e.0, "flag needs an argument: -config");
        let e = p(&["---config"]).unwrap_err();
        assert!(e.0.contains("bad flag syntax"));
        let e = p(&["-signal", "nojob"]).unwrap_err();
        assert!(e.0.contains("-signal"));
    }

    #[test]
    fn positional_stops_parsing_and_starts_the_application() {
        let cli = p(&["app", "-config", "x"]).unwrap();
        assert_eq!(cli.config, None);
        assert_eq!(cli.app, ["app", "-config", "x"]);
        let cli = p(&["-config", "x", "--", "-ping"]).unwrap();
        assert_eq!(cli.command, Command::Run);
        assert_eq!(cli.app, ["-ping"]);
        let cli = p(&[
            "-config",
            "x",
            "-main-name",
            "web",
            "nginx",
            "-g",
            "daemon off;",
        ])
        .unwrap();
        assert_eq!(cli.app, ["nginx", "-g", "daemon off;"]);
        assert_eq!(cli.main_name.as_deref(), Some("web"));
        assert!(p(&["-config", "x"]).unwrap().app.is_empty());
    }

    #[test]
    fn status_and_signal() {
        assert_eq!(
            p(&["-status", "-json"]).unwrap().command,
            Command::Status { json: true }
        );
        assert_eq!(
            p(&["-signal", "app=SIGHUP"]).unwrap().command,
            Command::Signal {
                job: "app".into(),
                signal: "SIGHUP".into()
            }
        );
    }
}
