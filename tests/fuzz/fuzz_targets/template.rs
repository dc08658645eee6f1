//! The Go-template engine applied to config text. Checked: no panic, no runaway
//! output, and that text without any action renders to itself.
#![no_main]

use std::collections::HashMap;
use std::sync::OnceLock;

use containerpilot::config::template;
use libfuzzer_sys::fuzz_target;

fn env() -> &'static HashMap<String, String> {
    static ENV: OnceLock<HashMap<String, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        [
            ("HOST", "localhost"),
            ("PORT", "8080"),
            ("EMPTY", ""),
            ("LIST", "a,b,c"),
            ("EQ", "a=b"),
            ("NUM", "-12.5"),
            ("CONSUL", "consul:8500"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    match template::render(src, env()) {
        Ok(out) => {
            if !src.contains("{{") {
                assert_eq!(out, src, "text without actions must render unchanged");
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
