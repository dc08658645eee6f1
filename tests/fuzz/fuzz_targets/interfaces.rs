//! Interface specifications and duration strings, one per input line.
//! Checked: no panic; `find_ip` fails whenever one spec does not parse; an address it
//! finds is either a `static:` one or one of the interfaces'; a non-negative duration
//! formats to a string that parses back to the same value.
#![no_main]

use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::Duration;

use containerpilot::config::duration;
use containerpilot::config::interfaces::{self, IfaceAddr, Spec};
use libfuzzer_sys::fuzz_target;

fn addrs() -> &'static [IfaceAddr] {
    static ADDRS: OnceLock<Vec<IfaceAddr>> = OnceLock::new();
    ADDRS.get_or_init(|| {
        let mut list: Vec<IfaceAddr> = [
            ("lo", "127.0.0.1"),
            ("lo", "::1"),
            ("eth0", "10.0.0.5"),
            ("eth0", "fe80::1"),
            ("eth1", "192.168.1.10"),
            ("eth1", "2001:db8::5"),
            ("eth1", "192.168.1.11"),
            ("docker0", "172.17.0.1"),
        ]
        .into_iter()
        .filter_map(|(name, ip)| {
            Some(IfaceAddr {
                name: name.to_string(),
                ip: ip.parse::<IpAddr>().ok()?,
            })
        })
        .collect();
        interfaces::sort_addrs(&mut list);
        list
    })
}

fn check_duration(line: &str) {
    let Ok(nanos) = duration::parse(line) else {
        return;
    };
    assert!(
        (i128::from(i64::MIN)..=i128::from(i64::MAX)).contains(&nanos),
        "{line:?} parsed outside Go's int64 range: {nanos}"
    );
    let Ok(unsigned) = u64::try_from(nanos) else {
        return;
    };
    let shown = duration::format(Duration::from_nanos(unsigned));
    match duration::parse(&shown) {
        Ok(back) => assert_eq!(back, nanos, "{line:?} -> {shown:?} -> {back}"),
        Err(e) => panic!("{line:?} -> {shown:?} does not parse: {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let specs: Vec<String> = src.split('\n').map(str::to_string).collect();
    let mut statics = Vec::new();
    let mut all_parse = true;
    for s in &specs {
        match interfaces::parse_spec(s) {
            Ok(Spec::Static(ip)) => statics.push(ip),
            Ok(_) => {}
            Err(e) => {
                all_parse = false;
                let _ = e.to_string();
            }
        }
        check_duration(s);
    }
    match interfaces::find_ip(&specs, addrs()) {
        Ok(ip) => {
            assert!(all_parse, "find_ip accepted a spec list with a bad spec");
            assert!(
                statics.contains(&ip) || addrs().iter().any(|a| a.ip == ip),
                "find_ip returned {ip}, which is neither static nor an interface address"
            );
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
