//! What the binary does for each command line: pick a subcommand or run the daemon,
//! and map every outcome to an exit code (0 ok, 1 config/runtime error, 2 usage).

use crate::cli::{self, Command};
use crate::config::{self, LoadError};
use std::collections::BTreeMap;
use std::io::Write;

pub fn main(args: Vec<String>) -> i32 {
    let cli = match cli::parse(&args, std::env::var("CONTAINERPILOT").ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("containerpilot: {e} (see -help)");
            return 2;
        }
    };
    let mut env = process_env();
    match cli.command {
        Command::Help => {
            eprint!("{}", cli::USAGE);
            2
        }
        Command::Version => {
            println!("Version: {}\nGitHash: {}", crate::VERSION, crate::GIT_HASH);
            0
        }
        Command::Template { out } => template(cli.config.as_deref(), out.as_deref(), &env),
        Command::Validate => validate(cli.config.as_deref(), cli.strict, &env),
        Command::Graph => graph(cli.config.as_deref(), &env),
        Command::Convert => convert(cli.config.as_deref(), &env),
        Command::Run => {
            // Until the loop's handlers are installed, a SIGTERM would kill us with
            // the default action (or, as PID 1, be dropped): hold signals pending.
            crate::runtime::block_signals();
            env.insert("CONTAINERPILOT_PID".into(), std::process::id().to_string());
            let app = config::MainApp {
                args: cli.app,
                name: cli.main_name,
                prefer_v2: false,
                strict: cli.strict,
            };
            run(cli.config.as_deref(), env, app)
        }
        other => subcommand(cli.config.as_deref(), other, &env),
    }
}

/// The socket subcommands read the config (as 3.8 did) to find `control.socket`;
/// only the `control` section has to be valid.
fn subcommand(path: Option<&str>, cmd: Command, env: &BTreeMap<String, String>) -> i32 {
    use crate::control::client;
    let control = match config_path(path).and_then(|p| config::load_control(p, env)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("containerpilot: {}", e.to_string().replace('\n', "; "));
            return 1;
        }
    };
    let sock = control.socket.as_path();
    let res = match cmd {
        Command::Ping => client::ping(sock),
        Command::Reload => client::reload(sock),
        Command::Maintenance(on) => client::maintenance(sock, on),
        Command::PutEnv(p) => client::putenv(sock, &p),
        Command::PutMetric(p) => client::putmetric(sock, &p),
        Command::Signal { job, signal } => client::signal(sock, &job, &signal),
        Command::Status { json } => client::status(sock).map(|v| {
            if json {
                serde_json::to_string_pretty(&v).unwrap_or_default()
            } else {
                crate::telemetry::status_table(&v)
            }
        }),
        _ => Ok(String::new()),
    };
    match res {
        Ok(out) => {
            if !out.is_empty() {
                println!("{}", out.trim_end());
            }
            0
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

/// Our environment as a map; values that are not UTF-8 are carried lossily.
pub fn process_env() -> BTreeMap<String, String> {
    std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect()
}

fn config_path(path: Option<&str>) -> Result<&str, LoadError> {
    path.ok_or(LoadError::NoConfig)
}

fn template(path: Option<&str>, out: Option<&str>, env: &BTreeMap<String, String>) -> i32 {
    let rendered = match config_path(path)
        .and_then(config::read)
        .and_then(|src| config::render(&src, env))
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("containerpilot: {e}");
            return 1;
        }
    };
    match out {
        None | Some("") | Some("-") => {
            let mut so = std::io::stdout();
            if let Err(e) = so.write_all(rendered.as_bytes()).and_then(|_| so.flush()) {
                eprintln!("containerpilot: could not write config file: {e}");
                return 1;
            }
            0
        }
        Some(p) => {
            use std::os::unix::fs::OpenOptionsExt;
            let res = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o644)
                .open(p)
                .and_then(|mut f| f.write_all(rendered.as_bytes()));
            match res {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("containerpilot: could not write config file {p:?}: {e}");
                    1
                }
            }
        }
    }
}

fn validate(path: Option<&str>, strict: bool, env: &BTreeMap<String, String>) -> i32 {
    let path = match config_path(path) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("containerpilot: {e}");
            return 1;
        }
    };
    let app = config::MainApp {
        strict,
        ..Default::default()
    };
    match config::load_with(path, env, &app) {
        Ok(cfg) => {
            for w in &cfg.warnings {
                eprintln!("{path}: warning: {w}");
            }
            let catalog = match &cfg.consul {
                Some(c) => format!("consul at {}://{}", c.scheme, c.address),
                None => "none".to_string(),
            };
            let telemetry = match &cfg.telemetry {
                Some(t) => format!("port {}", t.port),
                None => "off".to_string(),
            };
            println!(
                "{path}: OK: {} jobs, {} watches, catalog: {catalog}, telemetry: {telemetry}",
                cfg.jobs.len(),
                cfg.watches.len()
            );
            0
        }
        Err(e) => {
            eprintln!("{path}: {} error(s):", e.count());
            for line in e.to_string().lines() {
                eprintln!("{line}");
            }
            1
        }
    }
}

/// `-graph`: the dependency graph of a valid config, as DOT on stdout.
fn graph(path: Option<&str>, env: &BTreeMap<String, String>) -> i32 {
    match config_path(path).and_then(|p| config::load(p, env)) {
        Ok(cfg) => {
            print!("{}", crate::graph::dot(&cfg));
            0
        }
        Err(e) => {
            eprintln!(
                "containerpilot: {}",
                e.to_string().replace('\n', "\ncontainerpilot: ")
            );
            1
        }
    }
}

fn convert(path: Option<&str>, env: &BTreeMap<String, String>) -> i32 {
    match config_path(path).and_then(|p| config::convert(p, env)) {
        Ok(text) => {
            print!("{text}");
            0
        }
        Err(e) => {
            eprintln!("containerpilot: {e}");
            1
        }
    }
}

fn run(path: Option<&str>, env: BTreeMap<String, String>, app: config::MainApp) -> i32 {
    crate::logging::init_default();
    let path = match config_path(path) {
        Ok(p) => p.to_string(),
        Err(e) => {
            eprintln!("containerpilot: {e}");
            return 1;
        }
    };
    let cfg = match config::load_with(&path, &env, &app) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("containerpilot: {e}");
            return 1;
        }
    };
    if let Err(e) = crate::logging::configure(&cfg.logging) {
        eprintln!("containerpilot: {e}");
        return 1;
    }
    for w in &cfg.warnings {
        log::warn!("{path}: {w}");
    }
    if crate::logging::enabled(crate::config::types::LogLevel::Debug) {
        log::debug!("loaded config: {cfg:?}");
    }
    match crate::runtime::Runtime::new(cfg, env, path, app) {
        Ok(rt) => rt.run(),
        Err(e) => {
            log::error!("{e}");
            1
        }
    }
}
