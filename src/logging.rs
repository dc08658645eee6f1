//! The daemon's logger: the three 3.8 formats (`default`, `text`, `json`), output to
//! stdout, stderr or a file that SIGUSR1 reopens. Written by hand because
//! simple_logger cannot produce logrus' shapes or carry `job`/`pid` fields.

use crate::config::types::{LogFormat, LogLevel, LogOutput, LoggingConfig};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

struct Sink {
    level: LogLevel,
    format: LogFormat,
    output: LogOutput,
    file: Option<File>,
    /// The last write to the log file failed (reported once).
    write_failed: bool,
}

static SINK: Mutex<Option<Sink>> = Mutex::new(None);
/// The sink's level rank, readable without the lock: `enabled` is asked on hot
/// paths (every bus event), and a disabled `log::debug!` must cost nothing.
static RANK: AtomicU8 = AtomicU8::new(1);

struct Facade;
static FACADE: Facade = Facade;

fn level_rank(l: LogLevel) -> u8 {
    match l {
        LogLevel::Debug => 0,
        LogLevel::Info => 1,
        LogLevel::Warn => 2,
        LogLevel::Error => 3,
        LogLevel::Fatal => 4,
        LogLevel::Panic => 5,
    }
}

fn from_log_level(l: log::Level) -> LogLevel {
    match l {
        log::Level::Error => LogLevel::Error,
        log::Level::Warn => LogLevel::Warn,
        log::Level::Info => LogLevel::Info,
        log::Level::Debug | log::Level::Trace => LogLevel::Debug,
    }
}

/// logrus' level names.
fn level_name(l: LogLevel) -> &'static str {
    match l {
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warning",
        LogLevel::Error => "error",
        LogLevel::Fatal => "fatal",
        LogLevel::Panic => "panic",
    }
}

impl log::Log for Facade {
    fn enabled(&self, m: &log::Metadata) -> bool {
        enabled(from_log_level(m.level()))
    }
    fn log(&self, r: &log::Record) {
        let ours = r.target().starts_with("containerpilot") || r.target().is_empty();
        if ours && self.enabled(r.metadata()) {
            emit(from_log_level(r.level()), None, None, &r.args().to_string());
        }
    }
    fn flush(&self) {}
}

/// Install the logger with default settings (INFO, default format, stdout). Safe to
/// call more than once.
pub fn init_default() {
    let _ = log::set_logger(&FACADE);
    if let Ok(mut g) = SINK.lock() {
        if g.is_none() {
            set_level(LogLevel::Info);
            *g = Some(Sink {
                level: LogLevel::Info,
                format: LogFormat::Default,
                output: LogOutput::Stdout,
                file: None,
                write_failed: false,
            });
        }
    }
}

#[derive(Debug)]
pub struct LogFileError {
    pub path: String,
    pub err: io::Error,
}

impl std::fmt::Display for LogFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Error initializing log file '{}': {}",
            self.path, self.err
        )
    }
}

impl std::error::Error for LogFileError {}

fn open_file(path: &std::path::Path) -> Result<File, LogFileError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|err| LogFileError {
            path: path.display().to_string(),
            err,
        })
}

/// Apply a loaded `logging` section.
pub fn configure(cfg: &LoggingConfig) -> Result<(), LogFileError> {
    init_default();
    let file = match &cfg.output {
        LogOutput::File(p) => Some(open_file(p)?),
        _ => None,
    };
    if let Ok(mut g) = SINK.lock() {
        set_level(cfg.level);
        *g = Some(Sink {
            level: cfg.level,
            format: cfg.format,
            output: cfg.output.clone(),
            file,
            write_failed: false,
        });
    }
    Ok(())
}

/// SIGUSR1: close and reopen the log file so rotation tools can move it away.
pub fn reopen() -> Result<(), LogFileError> {
    if let Ok(mut g) = SINK.lock() {
        if let Some(sink) = g.as_mut() {
            if let LogOutput::File(p) = &sink.output {
                sink.file = Some(open_file(p)?);
            }
        }
    }
    Ok(())
}

pub fn enabled(level: LogLevel) -> bool {
    level_rank(level) >= RANK.load(Ordering::Relaxed)
}

/// Called with the sink's lock held, so `RANK` and the sink never disagree for
/// long; the `log` macros then skip disabled levels before formatting.
fn set_level(level: LogLevel) {
    RANK.store(level_rank(level), Ordering::Relaxed);
    log::set_max_level(match level {
        LogLevel::Debug => log::LevelFilter::Trace,
        LogLevel::Info => log::LevelFilter::Info,
        LogLevel::Warn => log::LevelFilter::Warn,
        LogLevel::Error | LogLevel::Fatal | LogLevel::Panic => log::LevelFilter::Error,
    });
}

/// Log one message with optional `job` and `pid` fields (job output, process events).
pub fn emit(level: LogLevel, job: Option<&str>, pid: Option<u32>, msg: &str) {
    emit_fields(level, job.map(|j| ("job", j)), pid, msg)
}

/// Like `emit` but for health-check output, whose field is `check` (not shown by
/// the default format, as in 3.8).
pub fn emit_check(level: LogLevel, check: &str, pid: Option<u32>, msg: &str) {
    emit_fields(level, Some(("check", check)), pid, msg)
}

fn emit_fields(level: LogLevel, field: Option<(&str, &str)>, pid: Option<u32>, msg: &str) {
    let Ok(mut g) = SINK.lock() else { return };
    let (fmt, min) = match g.as_ref() {
        Some(s) => (s.format, s.level),
        None => (LogFormat::Default, LogLevel::Info),
    };
    if level_rank(level) < level_rank(min) {
        return;
    }
    let line = format_line(fmt, &now_rfc3339nano(), level, field, pid, msg);
    match g.as_mut() {
        Some(Sink {
            file: Some(f),
            output: LogOutput::File(path),
            write_failed,
            ..
        }) => match f.write_all(line.as_bytes()) {
            // A full disk must not take PID 1 down; say so once, on stderr,
            // and again only after writing has worked in between.
            Err(e) if !*write_failed => {
                *write_failed = true;
                let _ = writeln!(
                    io::stderr(),
                    "containerpilot: cannot write to log file {}: {e} (further failures are not reported)",
                    path.display()
                );
            }
            Err(_) => {}
            Ok(()) => *write_failed = false,
        },
        Some(Sink {
            output: LogOutput::Stderr,
            ..
        }) => {
            let _ = io::stderr().write_all(line.as_bytes());
        }
        _ => {
            let _ = io::stdout().write_all(line.as_bytes());
        }
    }
}

/// One formatted line, newline included.
pub fn format_line(
    fmt: LogFormat,
    time: &str,
    level: LogLevel,
    field: Option<(&str, &str)>,
    pid: Option<u32>,
    msg: &str,
) -> String {
    match fmt {
        LogFormat::Default => {
            let mut s = String::with_capacity(msg.len() + 48);
            s.push_str(time);
            if let Some(("job", j)) = field {
                s.push(' ');
                s.push_str(j);
            }
            if let Some(p) = pid {
                s.push(' ');
                s.push_str(&p.to_string());
            }
            s.push(' ');
            s.push_str(msg);
            s.push('\n');
            s
        }
        LogFormat::Text => {
            // logrus: time, level, msg, then the fields in key order.
            let mut s = format!(
                "time={} level={} msg={}",
                text_value(time),
                level_name(level),
                text_value(msg)
            );
            let mut fields: Vec<(&str, String)> = Vec::new();
            if let Some((k, v)) = field {
                fields.push((k, v.to_string()));
            }
            if let Some(p) = pid {
                fields.push(("pid", p.to_string()));
            }
            fields.sort_by(|a, b| a.0.cmp(b.0));
            for (k, v) in fields {
                s.push(' ');
                s.push_str(k);
                s.push('=');
                s.push_str(&text_value(&v));
            }
            s.push('\n');
            s
        }
        LogFormat::Json => {
            // Go marshals the logrus map with sorted keys.
            let mut m: Vec<(&str, serde_json::Value)> = vec![
                ("level", level_name(level).into()),
                ("msg", msg.into()),
                ("time", time.into()),
            ];
            if let Some((k, v)) = field {
                m.push((k, v.into()));
            }
            if let Some(p) = pid {
                m.push(("pid", p.into()));
            }
            m.sort_by(|a, b| a.0.cmp(b.0));
            let mut obj = serde_json::Map::new();
            for (k, v) in m {
                obj.insert(k.to_string(), v);
            }
            let mut s = serde_json::Value::Object(obj).to_string();
            s.push('\n');
            s
        }
    }
}

/// logrus quotes a value unless every char is alphanumeric or one of `-._/@^+`.
fn text_value(v: &str) -> String {
    let plain = !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._/@^+".contains(c));
    if plain {
        v.to_string()
    } else {
        serde_json::Value::from(v).to_string()
    }
}

/// Current UTC time as Go's RFC3339Nano (fraction with trailing zeros trimmed).
pub fn now_rfc3339nano() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339nano(d.as_secs() as i64, d.subsec_nanos())
}

pub fn rfc3339nano(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let mut s = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        y,
        m,
        d,
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    );
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339nano_trims_trailing_zeros() {
        assert_eq!(rfc3339nano(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339nano(1_700_000_000, 120_000_000),
            "2023-11-14T22:13:20.12Z"
        );
        assert_eq!(
            rfc3339nano(951_782_400, 1),
            "2000-02-29T00:00:00.000000001Z"
        );
        assert_eq!(rfc3339nano(4_102_444_799, 0), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn default_format_shows_job_and_pid_only_when_set() {
        let t = "2023-11-14T22:13:20.12Z";
        assert_eq!(
            format_line(LogFormat::Default, t, LogLevel::Info, None, None, "hello"),
            "2023-11-14T22:13:20.12Z hello\n"
        );
        assert_eq!(
            format_line(
                LogFormat::Default,
                t,
                LogLevel::Info,
                Some(("job", "app")),
                Some(42),
                "hi there"
            ),
            "2023-11-14T22:13:20.12Z app 42 hi there\n"
        );
        // Health-check output carries `check`, which the default format leaves out.
        assert_eq!(
            format_line(
                LogFormat::Default,
                t,
                LogLevel::Info,
                Some(("check", "check.app")),
                Some(7),
                "ok"
            ),
            "2023-11-14T22:13:20.12Z 7 ok\n"
        );
    }

    #[test]
    fn text_format_is_logrus_shaped() {
        let t = "2023-11-14T22:13:20.12Z";
        assert_eq!(
            format_line(
                LogFormat::Text,
                t,
                LogLevel::Warn,
                Some(("job", "app")),
                Some(12),
                "disk full"
            ),
            "time=\"2023-11-14T22:13:20.12Z\" level=warning msg=\"disk full\" job=app pid=12\n"
        );
        assert_eq!(
            format_line(LogFormat::Text, t, LogLevel::Info, None, None, "ok"),
            "time=\"2023-11-14T22:13:20.12Z\" level=info msg=ok\n"
        );
    }

    #[test]
    fn json_format_has_sorted_keys() {
        let t = "2023-11-14T22:13:20.12Z";
        assert_eq!(
            format_line(LogFormat::Json, t, LogLevel::Error, Some(("job", "db")), Some(3), "x \"y\""),
            "{\"job\":\"db\",\"level\":\"error\",\"msg\":\"x \\\"y\\\"\",\"pid\":3,\"time\":\"2023-11-14T22:13:20.12Z\"}\n"
        );
    }
}
