//! The config pipeline after templating: JSON5 → (2.x detection/translation) → decode
//! and validation. Checked: no panic; syntax errors render; a parsed document
//! survives a round trip through plain JSON; a 2.x config's `-convert` output loads as
//! a 3.x config; a valid config's telemetry metrics can be registered.
#![no_main]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use containerpilot::config::decode::{self, LoadEnv};
use containerpilot::config::{json5, v2};
use containerpilot::telemetry::Metrics;
use libfuzzer_sys::fuzz_target;

fn resolve(_specs: &[String]) -> Result<IpAddr, String> {
    Ok(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// `-convert` output is meant to be loaded as a 3.x config as it is.
fn check_converted(text: &str, load_env: &LoadEnv) {
    let root = match json5::parse(text) {
        Ok(root) => root,
        Err(e) => panic!("-convert output is not JSON5: {e}\n{text}"),
    };
    if let Err(errs) = decode::decode(&root, load_env) {
        let msgs: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        panic!("-convert output does not validate: {msgs:?}\n{text}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let root = match json5::parse(src) {
        Ok(root) => root,
        Err(e) => {
            let shown = e.render(src);
            assert!(shown.contains(&e.msg), "rendered error lost its message");
            return;
        }
    };

    // JSON is JSON5, so the plain-JSON form must parse back to the same document.
    let json = root.to_json();
    let text = json.to_string();
    match json5::parse(&text) {
        Ok(again) => assert_eq!(again.to_json(), json, "JSON round trip changed {text}"),
        Err(e) => panic!("own JSON output rejected: {e}\n{text}"),
    }

    let env = HashMap::new();
    let load_env = LoadEnv {
        env: &env,
        resolve_ip: &resolve,
    };
    let is_v2 = match v2::is_v2(&root) {
        Ok(v) => v,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let result = if is_v2 {
        if let Ok(text) = v2::convert(&root, &load_env) {
            check_converted(&text, &load_env);
        }
        v2::translate(&root, &load_env, None)
    } else {
        decode::decode(&root, &load_env)
    };
    match result {
        Ok(cfg) => {
            if let Some(t) = &cfg.telemetry {
                if let Err(e) = Metrics::new(&t.metrics) {
                    let _ = e.to_string();
                }
            }
        }
        Err(errs) => {
            for e in errs {
                let _ = e.to_string();
            }
        }
    }
});
