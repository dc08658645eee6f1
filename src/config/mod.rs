//! Loading a config: read the file, render it as a Go template over the
//! environment, parse JSON5, decode and validate into `types::Config`.

pub mod decode;
pub mod duration;
pub mod interfaces;
pub mod json5;
pub mod template;
pub mod types;

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

pub fn read(path: &str) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|err| LoadError::Read {
        path: path.to_string(),
        err,
    })
}

pub fn render(src: &str, env: &BTreeMap<String, String>) -> Result<String, LoadError> {
    let map: HashMap<String, String> = env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    template::render(src, &map).map_err(LoadError::Template)
}

/// Parse and validate already-rendered text.
pub fn parse_rendered(text: &str, env: &BTreeMap<String, String>) -> Result<Config, LoadError> {
    let root = json5::parse(text).map_err(|e| LoadError::Syntax(e.render(text)))?;
    let map: HashMap<String, String> = env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let resolve = |specs: &[String]| interfaces::resolve(specs).map_err(|e| e.to_string());
    let load_env = decode::LoadEnv {
        env: &map,
        resolve_ip: &resolve,
    };
    decode::decode(&root, &load_env).map_err(LoadError::Invalid)
}

/// The whole pipeline for a file path.
pub fn load(path: &str, env: &BTreeMap<String, String>) -> Result<Config, LoadError> {
    let src = read(path)?;
    let rendered = render(&src, env)?;
    parse_rendered(&rendered, env)
}
