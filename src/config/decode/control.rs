//! `control` (the socket the subcommands talk to) and `logging`.

use crate::config::json5::Spanned;
use crate::config::reader::{Dialect, Reader, NUL_RULE};
use crate::config::types::{ControlConfig, LogFormat, LogLevel, LogOutput, LoggingConfig};
use std::path::PathBuf;

/// A file mode (control socket, render job's file): up to four octal
/// digits, at most 0777.
pub(super) fn parse_mode(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 4 || !s.chars().all(|c| matches!(c, '0'..='7')) {
        return None;
    }
    u32::from_str_radix(s, 8).ok().filter(|m| *m <= 0o777)
}

impl Reader<'_, '_> {
    pub(super) fn control(&mut self, v: &Spanned) -> ControlConfig {
        let mut cfg = ControlConfig::default();
        let Some(f) = self.fields(v, "control", &["socket", "mode"]) else {
            return cfg;
        };
        if let Some(socket) = self.string_field(&f, "socket") {
            if socket.is_empty() {
                self.err(&f.path("socket"), f.line_of("socket"), "must not be empty");
            } else if socket.contains('\0') {
                self.err(&f.path("socket"), f.line_of("socket"), NUL_RULE);
            } else {
                cfg.socket = PathBuf::from(socket);
            }
        }
        if let Some(mode) = self.string_field(&f, "mode") {
            match parse_mode(&mode) {
                Some(m) => cfg.mode = m,
                None => {
                    let msg = format!(
                        "invalid mode '{mode}': must be octal digits no greater than 0777, like \"0660\""
                    );
                    self.err(&f.path("mode"), f.line_of("mode"), msg);
                }
            }
        }
        cfg
    }

    /// `logging: {level, format, output}`. 2.x had no file output: any other
    /// `output` than stdout/stderr was an error there.
    pub(in crate::config) fn logging(&mut self, v: &Spanned) -> LoggingConfig {
        let mut cfg = LoggingConfig::default();
        let Some(f) = self.fields(v, "logging", &["level", "format", "output"]) else {
            return cfg;
        };
        if let Some(level) = self.text_field(&f, "level") {
            cfg.level = match level.to_lowercase().as_str() {
                "debug" => LogLevel::Debug,
                "info" => LogLevel::Info,
                "warn" | "warning" => LogLevel::Warn,
                "error" => LogLevel::Error,
                "fatal" => LogLevel::Fatal,
                "panic" => LogLevel::Panic,
                _ => {
                    let msg = format!(
                        "unknown log level '{level}' (use debug, info, warn, error, fatal or panic)"
                    );
                    self.err(&f.path("level"), f.line_of("level"), msg);
                    cfg.level
                }
            };
        }
        if let Some(format) = self.text_field(&f, "format") {
            cfg.format = match format.to_lowercase().as_str() {
                "default" => LogFormat::Default,
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => {
                    let msg = format!("unknown log format '{format}' (use default, text or json)");
                    self.err(&f.path("format"), f.line_of("format"), msg);
                    cfg.format
                }
            };
        }
        if let Some(output) = self.text_field(&f, "output") {
            cfg.output = match output.to_lowercase().as_str() {
                "stdout" => LogOutput::Stdout,
                "stderr" => LogOutput::Stderr,
                _ if self.dialect == Dialect::V3 => LogOutput::File(PathBuf::from(output)),
                _ => {
                    let msg = format!("unknown output type '{output}' (use stdout or stderr)");
                    self.err(&f.path("output"), f.line_of("output"), msg);
                    cfg.output
                }
            };
        }
        cfg
    }
}
