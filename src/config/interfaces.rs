//! Interface specifications: how a job's `interfaces` list picks the IP that
//! is advertised to Consul (reference §9). Grammar, order of checks, address
//! ordering and error texts follow ContainerPilot 3.8, quirks included.

use std::error::Error;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Used when a job gives no `interfaces`.
const DEFAULT_SPECS: [&str; 2] = ["eth0:inet", "inet"];

/// A parsed interface specification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    /// `inet`: first non-loopback IPv4 on any interface.
    Inet,
    /// `inet6`: first non-loopback IPv6 on any interface.
    Inet6,
    /// `static:<IP>`: this address, without looking at interfaces.
    Static(IpAddr),
    /// `NAME`: first IPv4 on NAME.
    Name(String),
    /// `NAME:inet`: first IPv4 on NAME.
    NameInet(String),
    /// `NAME:inet6`: first IPv6 on NAME.
    NameInet6(String),
    /// `NAME[i]`: i-th address of NAME, IPv4 and IPv6 counted together.
    NameIndex(String, usize),
    /// CIDR: first address inside the network (loopback allowed). Holds the
    /// network address with host bits cleared.
    Cidr(IpAddr, u8),
}

/// Why a spec list could not be parsed or matched; the message is the one
/// 3.8 printed, possibly several lines joined with '\n'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError(pub String);

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for SpecError {}

/// One address of one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfaceAddr {
    pub name: String,
    pub ip: IpAddr,
}

impl fmt::Display for IfaceAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, canonical(self.ip))
    }
}

/// Parses one spec with 3.8's rules, checked in this order: `inet`, `inet6`,
/// `static:`, the name pattern, CIDR.
pub fn parse_spec(s: &str) -> Result<Spec, SpecError> {
    match s {
        "inet" => return Ok(Spec::Inet),
        "inet6" => return Ok(Spec::Inet6),
        _ => {}
    }
    if let Some(rest) = s.strip_prefix("static:") {
        if let Some(ip) = parse_static(s, rest)? {
            return Ok(Spec::Static(ip));
        }
    }
    if let Some(spec) = parse_named(s)? {
        return Ok(spec);
    }
    if let Some((net, prefix)) = parse_cidr(s) {
        return Ok(Spec::Cidr(net, prefix));
    }
    Err(SpecError(format!("Unable to parse interface spec: {s}")))
}

/// `Ok(None)` means "not a static spec after all": 3.8 only tries the IP when
/// the text is not an integer, so `static:5` falls through to the later rules
/// (and ends as "Unable to parse interface spec").
fn parse_static(spec: &str, rest: &str) -> Result<Option<IpAddr>, SpecError> {
    // 3.8 split after every "static:", so a second occurrence ends the IP
    // text (keeping the marker), which then never parses.
    let candidate = match rest.find("static:") {
        Some(i) => &rest[..i + "static:".len()],
        None => rest,
    };
    if candidate.parse::<i64>().is_ok() {
        return Ok(None);
    }
    match candidate.parse::<IpAddr>() {
        Ok(ip) => Ok(Some(canonical(ip))),
        // The message names "static:" rather than the bad IP; that is 3.8's text.
        Err(_) => Err(SpecError(format!(
            "Unable to parse static ip static: in {spec}"
        ))),
    }
}

/// Hand-written equivalent of 3.8's `^(\w+)(?:\[(\d+)\]|:(inet6?))?$`, with
/// `\w` and `\d` ASCII-only as in Go. Because `\w` excludes `-` and `.`,
/// interfaces such as `eth0.100` or `br-1234` cannot be named; that limit is
/// kept for compatibility (a CIDR spec reaches them).
fn parse_named(s: &str) -> Result<Option<Spec>, SpecError> {
    let name_len = s
        .bytes()
        .position(|b| !(b.is_ascii_alphanumeric() || b == b'_'))
        .unwrap_or(s.len());
    if name_len == 0 {
        return Ok(None);
    }
    let (name, suffix) = s.split_at(name_len);
    let name = name.to_string();
    let spec = match suffix {
        "" => Spec::Name(name),
        ":inet" => Spec::NameInet(name),
        ":inet6" => Spec::NameInet6(name),
        _ => match bracketed_digits(suffix) {
            Some(digits) => Spec::NameIndex(name, parse_index(digits, s)?),
            None => return Ok(None),
        },
    };
    Ok(Some(spec))
}

fn bracketed_digits(suffix: &str) -> Option<&str> {
    let digits = suffix.strip_prefix('[')?.strip_suffix(']')?;
    let all_digits = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    all_digits.then_some(digits)
}

/// 3.8 read the index as a Go int, so only an int64 overflow is an error.
fn parse_index(digits: &str, spec: &str) -> Result<usize, SpecError> {
    digits
        .parse::<i64>()
        .ok()
        .and_then(|i| usize::try_from(i).ok())
        .ok_or_else(|| SpecError(format!("Unable to parse index {digits} in {spec}")))
}

/// Go `net.ParseCIDR`: "<ip>/<decimal prefix>", prefix within the written
/// address family. The network is returned with host bits cleared; an
/// IPv4-mapped IPv6 network becomes the IPv4 network it denotes.
fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, prefix) = s.split_once('/')?;
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let prefix: u32 = prefix.parse().ok()?;
    match addr.parse::<IpAddr>().ok()? {
        IpAddr::V4(ip) if prefix <= 32 => Some((IpAddr::V4(mask_v4(ip, prefix)), prefix as u8)),
        IpAddr::V6(ip) if prefix <= 128 => {
            let net = mask_v6(ip, prefix);
            // Go compares a mapped network as IPv4 with the last 32 mask bits.
            match net.to_ipv4_mapped() {
                Some(v4) => Some((IpAddr::V4(v4), (prefix - 96) as u8)),
                None => Some((IpAddr::V6(net), prefix as u8)),
            }
        }
        _ => None,
    }
}

fn mask_v4(ip: Ipv4Addr, prefix: u32) -> Ipv4Addr {
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    Ipv4Addr::from(u32::from(ip) & mask)
}

fn mask_v6(ip: Ipv6Addr, prefix: u32) -> Ipv6Addr {
    let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
    Ipv6Addr::from(u128::from(ip) & mask)
}

/// An address family mismatch never matches, as in Go's IPNet.Contains.
fn cidr_contains(net: IpAddr, prefix: u8, ip: IpAddr) -> bool {
    match (net, canonical(ip)) {
        (IpAddr::V4(net), IpAddr::V4(ip)) => mask_v4(ip, u32::from(prefix)) == net,
        (IpAddr::V6(net), IpAddr::V6(ip)) => mask_v6(ip, u32::from(prefix)) == net,
        _ => false,
    }
}

// Address text is read with std's parser, which, like current Go, rejects
// IPv4 octets with leading zeros ("010.0.0.1"); the Go that built 3.8 took them.

/// IPv4-mapped IPv6 addresses are IPv4 everywhere in 3.8 (family checks,
/// loopback, printing).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        IpAddr::V4(_) => ip,
    }
}

/// 16-byte form used for ordering: IPv4 as IPv4-mapped IPv6.
fn sort_key(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Stable sort by interface name (bytes), then by the 16-byte form of the
/// IP, so `::1` comes before `127.0.0.1` and IPv4 before most IPv6. The
/// order decides which address wins, e.g. which address a CIDR picks.
pub fn sort_addrs(addrs: &mut [IfaceAddr]) {
    addrs.sort_by(|a, b| {
        a.name
            .as_bytes()
            .cmp(b.name.as_bytes())
            .then_with(|| sort_key(a.ip).cmp(&sort_key(b.ip)))
    });
}

/// All addresses of all interfaces (getifaddrs), sorted by interface name (bytes) then by the 16-byte form of the IP
/// (IPv4 as IPv4-mapped IPv6, so ::1 sorts before 127.0.0.1). IPv4-mapped IPv6 addresses count as IPv4.
pub fn system_addrs() -> Result<Vec<IfaceAddr>, SpecError> {
    let list = nix::ifaddrs::getifaddrs()
        .map_err(|e| SpecError(format!("unable to list network interfaces: {e}")))?;
    let mut addrs = Vec::new();
    for entry in list {
        let Some(sockaddr) = entry.address else {
            continue;
        };
        let ip = if let Some(v4) = sockaddr.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = sockaddr.as_sockaddr_in6() {
            IpAddr::V6(v6.ip())
        } else {
            // link-layer entries carry no IP
            continue;
        };
        addrs.push(IfaceAddr {
            name: device_name(&entry.interface_name).to_string(),
            ip: canonical(ip),
        });
    }
    sort_addrs(&mut addrs);
    Ok(addrs)
}

/// getifaddrs names IPv4 addresses by their label ("eth0:1" for an alias),
/// while 3.8 grouped every address under its device. Linux forbids ':' in
/// device names, so whatever precedes it is the device.
fn device_name(label: &str) -> &str {
    label.split(':').next().unwrap_or(label)
}

/// Pure matching: parse all specs first (any bad spec fails, errors joined with newlines), then try specs in order
/// against `addrs` (already sorted); first hit wins; `inet`/`inet6` skip loopback; CIDR does not.
/// No hit -> "none of the interface specifications were able to match\nSpecifications: [..]\nInterfaces IPs: [name:ip ..]"
pub fn find_ip(specs: &[String], addrs: &[IfaceAddr]) -> Result<IpAddr, SpecError> {
    let parsed = parse_all(specs)?;
    match_specs(&parsed, specs, addrs)
}

/// specs empty -> default ["eth0:inet", "inet"]; uses system_addrs().
pub fn resolve(specs: &[String]) -> Result<IpAddr, SpecError> {
    let defaults: Vec<String>;
    let specs = if specs.is_empty() {
        defaults = DEFAULT_SPECS.iter().map(|s| s.to_string()).collect();
        &defaults
    } else {
        specs
    };
    // Spec errors are reported before the interfaces are even read, as in 3.8.
    let parsed = parse_all(specs)?;
    let addrs = system_addrs()?;
    match_specs(&parsed, specs, &addrs)
}

fn parse_all(specs: &[String]) -> Result<Vec<Spec>, SpecError> {
    let mut parsed = Vec::with_capacity(specs.len());
    let mut errors = Vec::new();
    for raw in specs {
        match parse_spec(raw) {
            Ok(spec) => parsed.push(spec),
            Err(e) => errors.push(e.0),
        }
    }
    if errors.is_empty() {
        Ok(parsed)
    } else {
        Err(SpecError(errors.join("\n")))
    }
}

fn match_specs(parsed: &[Spec], raw: &[String], addrs: &[IfaceAddr]) -> Result<IpAddr, SpecError> {
    for spec in parsed {
        if let Spec::Static(ip) = spec {
            return Ok(*ip);
        }
        // Position of each address within its interface; relies on the
        // list being grouped by name, which sorting guarantees.
        let mut index = 0usize;
        let mut current: Option<&str> = None;
        for addr in addrs {
            if current == Some(addr.name.as_str()) {
                index += 1;
            } else {
                index = 0;
                current = Some(addr.name.as_str());
            }
            if spec_matches(spec, index, addr) {
                return Ok(canonical(addr.ip));
            }
        }
    }
    Err(no_match(raw, addrs))
}

fn spec_matches(spec: &Spec, index: usize, addr: &IfaceAddr) -> bool {
    let ip = canonical(addr.ip);
    match spec {
        Spec::Inet => ip.is_ipv4() && !ip.is_loopback(),
        Spec::Inet6 => ip.is_ipv6() && !ip.is_loopback(),
        Spec::Static(_) => false,
        Spec::Name(name) | Spec::NameInet(name) => addr.name == *name && ip.is_ipv4(),
        Spec::NameInet6(name) => addr.name == *name && ip.is_ipv6(),
        Spec::NameIndex(name, i) => addr.name == *name && index == *i,
        Spec::Cidr(net, prefix) => cidr_contains(*net, *prefix, ip),
    }
}

/// 3.8 dumped its internal spec structs here; the spec strings as written
/// carry the same information readably.
fn no_match(raw: &[String], addrs: &[IfaceAddr]) -> SpecError {
    let ips: Vec<String> = addrs.iter().map(IfaceAddr::to_string).collect();
    SpecError(format!(
        "none of the interface specifications were able to match\nSpecifications: [{}]\nInterfaces IPs: [{}]",
        raw.join(" "),
        ips.join(" ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect(s)
    }

    fn addr(name: &str, a: &str) -> IfaceAddr {
        IfaceAddr {
            name: name.to_string(),
            ip: ip(a),
        }
    }

    fn strings(specs: &[&str]) -> Vec<String> {
        specs.iter().map(|s| s.to_string()).collect()
    }

    /// Already in sorted order (checked by `sort_is_deterministic`).
    fn test_addrs() -> Vec<IfaceAddr> {
        vec![
            addr("eth0", "10.2.0.1"),
            addr("eth0", "192.168.1.100"),
            addr("eth1", "10.0.0.100"),
            addr("eth1", "10.0.0.200"),
            addr("eth2", "10.1.0.200"),
            addr("eth2", "fdc6:238c:c4bc::1"),
            addr("lo", "::1"),
            addr("lo", "127.0.0.1"),
            addr("static:192.168.1.100", "192.168.1.100"),
        ]
    }

    #[test]
    fn parse_errors() {
        let cases = [
            ("", "Unable to parse interface spec: "),
            ("!", "Unable to parse interface spec: !"),
            ("10.1.1.1", "Unable to parse interface spec: 10.1.1.1"),
            ("eth0:inet5", "Unable to parse interface spec: eth0:inet5"),
            ("eth0[-1]", "Unable to parse interface spec: eth0[-1]"),
            ("eth0[]", "Unable to parse interface spec: eth0[]"),
            ("eth0[1", "Unable to parse interface spec: eth0[1"),
            ("eth0.100", "Unable to parse interface spec: eth0.100"),
            ("br-1234", "Unable to parse interface spec: br-1234"),
            ("eth0:inet ", "Unable to parse interface spec: eth0:inet "),
            (" eth0", "Unable to parse interface spec:  eth0"),
            (
                "static:abcdef",
                "Unable to parse static ip static: in static:abcdef",
            ),
            ("static:", "Unable to parse static ip static: in static:"),
            (
                "static:1.2.3.4static:",
                "Unable to parse static ip static: in static:1.2.3.4static:",
            ),
            ("static:5", "Unable to parse interface spec: static:5"),
            ("static:-12", "Unable to parse interface spec: static:-12"),
            (
                "static:99999999999999999999",
                "Unable to parse static ip static: in static:99999999999999999999",
            ),
            (
                "eth0[99999999999999999999]",
                "Unable to parse index 99999999999999999999 in eth0[99999999999999999999]",
            ),
            ("10.0.0.0/33", "Unable to parse interface spec: 10.0.0.0/33"),
            ("fdc6::/129", "Unable to parse interface spec: fdc6::/129"),
            ("10.0.0.0/", "Unable to parse interface spec: 10.0.0.0/"),
            ("10.0.0.0/+8", "Unable to parse interface spec: 10.0.0.0/+8"),
            ("10.0.0/8", "Unable to parse interface spec: 10.0.0/8"),
        ];
        for (input, want) in cases {
            let err = parse_spec(input).expect_err(input);
            assert_eq!(err.to_string(), want, "spec {input:?}");
        }
    }

    #[test]
    fn parse_valid() {
        let name = |s: &str| s.to_string();
        let cases = [
            ("eth0", Spec::Name(name("eth0"))),
            ("eth0:inet", Spec::NameInet(name("eth0"))),
            ("eth0:inet6", Spec::NameInet6(name("eth0"))),
            ("eth0[1]", Spec::NameIndex(name("eth0"), 1)),
            ("eth0[2]", Spec::NameIndex(name("eth0"), 2)),
            ("eth0[007]", Spec::NameIndex(name("eth0"), 7)),
            ("Wlan_0", Spec::Name(name("Wlan_0"))),
            ("inet", Spec::Inet),
            ("inet6", Spec::Inet6),
            ("inet:inet6", Spec::NameInet6(name("inet"))),
            ("static", Spec::Name(name("static"))),
            ("static:192.168.1.100", Spec::Static(ip("192.168.1.100"))),
            ("static:fdc6::1", Spec::Static(ip("fdc6::1"))),
            ("static:::ffff:10.0.0.1", Spec::Static(ip("10.0.0.1"))),
            ("10.0.0.0/16", Spec::Cidr(ip("10.0.0.0"), 16)),
            ("10.1.2.3/16", Spec::Cidr(ip("10.1.0.0"), 16)),
            ("10.1.2.3/032", Spec::Cidr(ip("10.1.2.3"), 32)),
            ("0.0.0.0/0", Spec::Cidr(ip("0.0.0.0"), 0)),
            (
                "fdc6:238c:c4bc::/48",
                Spec::Cidr(ip("fdc6:238c:c4bc::"), 48),
            ),
            ("::ffff:10.9.0.0/104", Spec::Cidr(ip("10.0.0.0"), 8)),
            ("::ffff:10.9.0.0/64", Spec::Cidr(ip("::"), 64)),
        ];
        for (input, want) in cases {
            assert_eq!(parse_spec(input), Ok(want), "spec {input:?}");
        }
    }

    #[test]
    fn matching_table() {
        let addrs = test_addrs();
        let cases: &[(&[&str], &str)] = &[
            (&["lo"], "127.0.0.1"),
            (&["lo:inet6"], "::1"),
            (&["lo[0]"], "::1"),
            (&["lo[1]"], "127.0.0.1"),
            (&["static:192.168.1.100"], "192.168.1.100"),
            (&["eth0"], "10.2.0.1"),
            (&["eth0:inet"], "10.2.0.1"),
            (&["eth0[0]"], "10.2.0.1"),
            (&["eth0[1]"], "192.168.1.100"),
            (&["eth2[1]"], "fdc6:238c:c4bc::1"),
            (&["eth2:inet6"], "fdc6:238c:c4bc::1"),
            (&["10.0.0.0/16"], "10.0.0.100"),
            (&["10.1.0.0/16"], "10.1.0.200"),
            (&["10.0.0.0/8"], "10.2.0.1"),
            (&["127.0.0.0/8"], "127.0.0.1"),
            (&["::1/128"], "::1"),
            (&["fdc6:238c:c4bc::/48"], "fdc6:238c:c4bc::1"),
            (&["inet"], "10.2.0.1"),
            (&["inet6"], "fdc6:238c:c4bc::1"),
            (
                &["eth3", "fdc6:238c:c4bc::/48", "inet", "inet6"],
                "fdc6:238c:c4bc::1",
            ),
            (
                &[
                    "eth3",
                    "10.0.0.0/16",
                    "inet",
                    "inet6",
                    "fdc6:238c:c4bc::/48",
                ],
                "10.0.0.100",
            ),
            (&["eth0:inet6", "static:1.2.3.4", "inet"], "1.2.3.4"),
            (&["inet", "static:1.2.3.4"], "10.2.0.1"),
        ];
        for (specs, want) in cases {
            assert_eq!(
                find_ip(&strings(specs), &addrs),
                Ok(ip(want)),
                "specs {specs:?}"
            );
        }
    }

    #[test]
    fn no_match_lists_specs_and_addresses() {
        let addrs = vec![addr("eth0", "10.2.0.1"), addr("lo", "127.0.0.1")];
        let err = find_ip(&strings(&["eth0:inet6", "eth0[2]"]), &addrs).expect_err("no match");
        assert_eq!(
            err.to_string(),
            "none of the interface specifications were able to match\n\
             Specifications: [eth0:inet6 eth0[2]]\n\
             Interfaces IPs: [eth0:10.2.0.1 lo:127.0.0.1]"
        );
        let err = find_ip(&strings(&["inet"]), &[]).expect_err("empty list");
        assert_eq!(
            err.to_string(),
            "none of the interface specifications were able to match\n\
             Specifications: [inet]\nInterfaces IPs: []"
        );
    }

    #[test]
    fn inet_never_picks_loopback() {
        let loopback = vec![
            addr("lo", "::1"),
            addr("lo", "127.0.0.1"),
            addr("lo", "127.0.0.2"),
            addr("lo", "::ffff:127.0.0.3"),
        ];
        for spec in ["inet", "inet6"] {
            assert!(find_ip(&strings(&[spec]), &loopback).is_err(), "{spec}");
        }
        assert_eq!(find_ip(&strings(&["lo"]), &loopback), Ok(ip("127.0.0.1")));
    }

    #[test]
    fn mapped_ipv6_counts_as_ipv4() {
        let addrs = vec![addr("eth0", "::ffff:10.0.0.5"), addr("eth0", "fd00::5")];
        assert_eq!(find_ip(&strings(&["inet"]), &addrs), Ok(ip("10.0.0.5")));
        assert_eq!(find_ip(&strings(&["eth0"]), &addrs), Ok(ip("10.0.0.5")));
        assert_eq!(
            find_ip(&strings(&["eth0:inet6"]), &addrs),
            Ok(ip("fd00::5"))
        );
        assert_eq!(
            find_ip(&strings(&["10.0.0.0/24"]), &addrs),
            Ok(ip("10.0.0.5"))
        );
        assert!(find_ip(&strings(&["::ffff:0:0/96", "::/0"]), &addrs[..1]).is_ok());
        assert_eq!(
            find_ip(&strings(&["::/0"]), &addrs),
            Ok(ip("fd00::5")),
            "an IPv6 network never contains an IPv4 address"
        );
        assert_eq!(addrs[0].to_string(), "eth0:10.0.0.5");
    }

    #[test]
    fn bad_specs_fail_whole_list() {
        let err = find_ip(&strings(&["lo", "!", "eth0:inet5", "inet"]), &test_addrs())
            .expect_err("bad specs");
        assert_eq!(
            err.to_string(),
            "Unable to parse interface spec: !\nUnable to parse interface spec: eth0:inet5"
        );
        assert!(resolve(&strings(&["static:1.2.3.4", "eth0.100"])).is_err());
    }

    #[test]
    fn sort_is_deterministic() {
        let sorted = test_addrs();
        let mut shuffled = sorted.clone();
        shuffled.reverse();
        shuffled.swap(0, 4);
        shuffled.swap(2, 7);
        sort_addrs(&mut shuffled);
        assert_eq!(shuffled, sorted);

        let mut mixed = vec![
            addr("eth0", "fe80::1"),
            addr("eth0", "10.0.0.1"),
            addr("eth0", "::2"),
            addr("Eth0", "10.0.0.9"),
            addr("eth0", "9.0.0.1"),
        ];
        sort_addrs(&mut mixed);
        let order: Vec<String> = mixed.iter().map(IfaceAddr::to_string).collect();
        assert_eq!(
            order,
            [
                "Eth0:10.0.0.9",
                "eth0:::2",
                "eth0:9.0.0.1",
                "eth0:10.0.0.1",
                "eth0:fe80::1"
            ]
        );
    }

    #[test]
    fn alias_labels_group_under_device() {
        assert_eq!(device_name("eth0:1"), "eth0");
        assert_eq!(device_name("eth0"), "eth0");
    }

    #[test]
    fn real_machine() {
        assert_eq!(resolve(&strings(&["lo"])), Ok(ip("127.0.0.1")));
        assert_eq!(
            resolve(&strings(&["static:192.168.1.1"])),
            Ok(ip("192.168.1.1"))
        );
        assert!(resolve(&strings(&["interfacedoesnotexist"])).is_err());
        let addrs = system_addrs().expect("getifaddrs");
        let mut resorted = addrs.clone();
        sort_addrs(&mut resorted);
        assert_eq!(addrs, resorted);
        assert!(addrs.contains(&addr("lo", "127.0.0.1")));
    }
}
