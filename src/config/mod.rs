//! Loading a config, from `-config` to the [`Config`] the runtime runs:
//!
//! ```text
//!  read        the file, a file:// URL, or (2.x) inline JSON        read()
//!   │
//!  render      Go text/template over the environment                 template/
//!   │
//!  parse       JSON5 → values with source lines                      json5.rs
//!   │
//!  detect      2.x keys? ──yes──► translate 2.x onto the job model   v2/
//!   │ no                           (same reader, 2.x dialect)         │
//!  decode      3.x sections → typed config, validated per field       decode/
//!   │                                                                 │
//!   └──────────────► Config (types.rs) ◄──────────────────────────────┘
//! ```
//!
//! Both dialects read through one weakly-typed [`reader::Reader`] (key matching,
//! mapstructure's weak typing, errors with path and line); `-convert` writes a
//! translated 2.x config back out as 3.x text (`v2/convert.rs`). To add a field:
//! its type in `types.rs`, then its key and its read/validation in the section's
//! function in `decode/` (and in `v2/` only if 2.x had it).

pub mod decode;
pub mod duration;
pub mod interfaces;
pub mod json5;
pub mod reader;
pub mod template;
pub mod types;
pub mod v2;

use std::collections::{BTreeMap, HashMap};
use std::fmt;

pub use types::Config;

#[derive(Debug)]
pub enum LoadError {
    /// No `-config` and no `CONTAINERPILOT`.
    NoConfig,
    Read {
        path: String,
        err: std::io::Error,
    },
    Template(template::TemplateError),
    Syntax(String),
    Invalid(Vec<decode::ConfigError>),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::NoConfig => f.write_str("-config flag is required"),
            LoadError::Read { path, err } => {
                write!(f, "could not read config file {path:?}: {err}")
            }
            LoadError::Template(e) => write!(f, "could not apply template to config: {e}"),
            LoadError::Syntax(s) => f.write_str(s),
            LoadError::Invalid(errs) => {
                for (i, e) in errs.iter().enumerate() {
                    if i > 0 {
                        f.write_str("\n")?;
                    }
                    write!(f, "{e}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for LoadError {}

impl LoadError {
    /// How many distinct problems this error reports (for `-validate`).
    pub fn count(&self) -> usize {
        match self {
            LoadError::Invalid(v) => v.len(),
            _ => 1,
        }
    }
}

/// The config text for `-config`: a path, a `file://` URL, or (2.x) the JSON
/// itself inline.
pub fn read(path: &str) -> Result<String, LoadError> {
    if path.trim_start().starts_with('{') {
        return Ok(path.to_string());
    }
    let file = path.strip_prefix("file://").unwrap_or(path);
    read_bounded(file).map_err(|err| LoadError::Read {
        path: file.to_string(),
        err,
    })
}

/// A config larger than a rendered one may be is refused before it is read.
fn read_bounded(file: &str) -> std::io::Result<String> {
    use std::io::Read;
    let limit = template::MAX_STRING as u64;
    let mut text = String::new();
    std::fs::File::open(file)?
        .take(limit + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > limit {
        let msg = format!("larger than {limit} bytes");
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, msg));
    }
    Ok(text)
}

pub fn render(src: &str, env: &BTreeMap<String, String>) -> Result<String, LoadError> {
    let map: HashMap<String, String> = env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    template::render(src, &map).map_err(LoadError::Template)
}

/// The trailing application of shim mode.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MainApp {
    /// Arguments as given; each is rendered as a template when loading.
    pub args: Vec<String>,
    /// Job name for a 3.x config (default `app`).
    pub name: Option<String>,
    /// The running config is 2.x: a file with only keys both generations share
    /// (`consul`, `logging`, ...) is read as 2.x too (a SIGHUP reload in 2.x mode).
    pub prefer_v2: bool,
    /// `-strict`: warnings (a repeated job name) are errors.
    pub strict: bool,
}

/// Keys only a 3.x config can have.
const V3_ONLY_KEYS: [&str; 3] = ["jobs", "watches", "control"];

fn has_v3_only_keys(root: &json5::Spanned) -> bool {
    match &root.value {
        json5::Value::Object(entries) => entries
            .iter()
            .any(|(k, _)| V3_ONLY_KEYS.contains(&k.name.as_str())),
        _ => false,
    }
}

fn with_env<T>(env: &BTreeMap<String, String>, f: impl FnOnce(&decode::LoadEnv) -> T) -> T {
    let map: HashMap<String, String> = env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let resolve = |specs: &[String]| interfaces::resolve(specs).map_err(|e| e.to_string());
    let load_env = decode::LoadEnv {
        env: &map,
        resolve_ip: &resolve,
    };
    f(&load_env)
}

/// Parse and validate already-rendered text (no application).
pub fn parse_rendered(text: &str, env: &BTreeMap<String, String>) -> Result<Config, LoadError> {
    parse_rendered_with(text, env, &MainApp::default())
}

fn parse_rendered_with(
    text: &str,
    env: &BTreeMap<String, String>,
    app: &MainApp,
) -> Result<Config, LoadError> {
    let root = json5::parse(text).map_err(|e| LoadError::Syntax(e.render(text)))?;
    let args = app
        .args
        .iter()
        .map(|a| render(a, env))
        .collect::<Result<Vec<_>, _>>()?;
    let main = (!args.is_empty()).then_some(args.as_slice());
    let is_v2 = v2::is_v2(&root).map_err(|e| LoadError::Invalid(vec![e]))?
        || (app.prefer_v2 && !has_v3_only_keys(&root));
    let cfg = with_env(env, |load_env| {
        if is_v2 {
            return v2::translate(&root, load_env, main).map_err(LoadError::Invalid);
        }
        let mut cfg = decode::decode(&root, load_env).map_err(LoadError::Invalid)?;
        if let Some(args) = main {
            add_main_job(&mut cfg, args, app.name.as_deref().unwrap_or("app"))?;
        }
        check_dependencies(&root, &cfg)?;
        Ok(cfg)
    })?;
    if app.strict && !cfg.warnings.is_empty() {
        return Err(LoadError::Invalid(cfg.warnings));
    }
    Ok(cfg)
}

/// Sources that name nothing and jobs that wait on each other forever are
/// config errors (issue 19): a typo must not hang a container silently.
fn check_dependencies(root: &json5::Spanned, cfg: &Config) -> Result<(), LoadError> {
    let errors: Vec<decode::ConfigError> = crate::graph::check(cfg)
        .into_iter()
        .map(|p| {
            let (path, line) = decode::source_site(root, p.line, &p.job);
            decode::ConfigError {
                path,
                line: Some(line),
                msg: p.msg,
            }
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(LoadError::Invalid(errors))
    }
}

/// A 3.x config with a trailing application (our extension, 3.x issue #526): the
/// application is a job whose exit ends the container with its exit code.
fn add_main_job(cfg: &mut Config, args: &[String], name: &str) -> Result<(), LoadError> {
    match cfg.jobs.iter_mut().find(|j| j.name == name) {
        // `-convert` output keeps the 2.x application as an exec-less job; the
        // trailing arguments fill it in.
        Some(j) if j.exec.is_none() => {
            j.exec = Some(args.to_vec());
            j.raw = true;
        }
        Some(_) => {
            return Err(LoadError::Invalid(vec![decode::ConfigError {
                path: "jobs".into(),
                line: None,
                msg: format!(
                    "a job named '{name}' already exists; choose another name for the application with -main-name"
                ),
            }]))
        }
        None => cfg.jobs.push(types::JobConfig {
            raw: true,
            ..types::JobConfig::new(name, Some(args.to_vec()))
        }),
    }
    cfg.exit_policy = Some(types::ExitPolicy {
        main: name.to_string(),
        pre_start: None,
        post_stop: None,
    });
    Ok(())
}

/// The whole pipeline for a file path.
pub fn load(path: &str, env: &BTreeMap<String, String>) -> Result<Config, LoadError> {
    load_with(path, env, &MainApp::default())
}

/// The whole pipeline, with the shim-mode application.
pub fn load_with(
    path: &str,
    env: &BTreeMap<String, String>,
    app: &MainApp,
) -> Result<Config, LoadError> {
    let src = read(path)?;
    let rendered = render(&src, env)?;
    parse_rendered_with(&rendered, env, app)
}

/// What the socket subcommands (`-ping`, `-putenv`, ...) need: the `control`
/// section of the rendered file (defaults when it has none, as a 2.x config
/// never does). The rest of the file may be invalid: a daemon running an
/// older version of it must still be reachable.
pub fn load_control(
    path: &str,
    env: &BTreeMap<String, String>,
) -> Result<types::ControlConfig, LoadError> {
    let src = read(path)?;
    let rendered = render(&src, env)?;
    let root = json5::parse(&rendered).map_err(|e| LoadError::Syntax(e.render(&rendered)))?;
    with_env(env, |load_env| {
        decode::decode_control(&root, load_env).map_err(LoadError::Invalid)
    })
}

/// `-convert`: the 3.x JSON5 text for a 2.x config.
pub fn convert(path: &str, env: &BTreeMap<String, String>) -> Result<String, LoadError> {
    let src = read(path)?;
    let rendered = render(&src, env)?;
    let root = json5::parse(&rendered).map_err(|e| LoadError::Syntax(e.render(&rendered)))?;
    if !v2::is_v2(&root).map_err(|e| LoadError::Invalid(vec![e]))? {
        return Err(LoadError::Invalid(vec![decode::ConfigError {
            path: String::new(),
            line: None,
            msg: "not a ContainerPilot 2.x config (it is already 3.x)".into(),
        }]));
    }
    with_env(env, |load_env| {
        v2::convert(&root, load_env).map_err(LoadError::Invalid)
    })
}
