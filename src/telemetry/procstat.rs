//! `process_*` metrics of the daemon itself, read from `/proc/self` at scrape
//! time. Implemented here because the prometheus crate's process collector
//! pulls in `procfs`; the parsing is small and keeps the dependency list short.

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, Metric, MetricFamily, MetricType};
use std::collections::HashMap;

const CPU: &str = "process_cpu_seconds_total";
const OPEN_FDS: &str = "process_open_fds";
const MAX_FDS: &str = "process_max_fds";
const VIRTUAL: &str = "process_virtual_memory_bytes";
const RESIDENT: &str = "process_resident_memory_bytes";
const START: &str = "process_start_time_seconds";

/// (name, help, type) of every metric this collector can produce.
const SPECS: [(&str, &str, MetricType); 6] = [
    (
        CPU,
        "Total user and system CPU time spent in seconds.",
        MetricType::COUNTER,
    ),
    (
        OPEN_FDS,
        "Number of open file descriptors.",
        MetricType::GAUGE,
    ),
    (
        MAX_FDS,
        "Maximum number of open file descriptors.",
        MetricType::GAUGE,
    ),
    (VIRTUAL, "Virtual memory size in bytes.", MetricType::GAUGE),
    (
        RESIDENT,
        "Resident memory size in bytes.",
        MetricType::GAUGE,
    ),
    (
        START,
        "Start time of the process since unix epoch in seconds.",
        MetricType::GAUGE,
    ),
];

/// One scrape's worth of process figures; a figure that could not be read is
/// `None` and its metric is left out rather than reported as 0.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcStat {
    pub cpu_seconds: Option<f64>,
    pub open_fds: Option<f64>,
    pub max_fds: Option<f64>,
    pub virtual_bytes: Option<f64>,
    pub resident_bytes: Option<f64>,
    pub start_time_seconds: Option<f64>,
}

impl ProcStat {
    /// Reads `/proc/self`. Never fails: unreadable parts stay `None`.
    pub fn read() -> ProcStat {
        let ticks = sysconf_or(libc::_SC_CLK_TCK, 100.0);
        let page = sysconf_or(libc::_SC_PAGESIZE, 4096.0);
        let btime = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| parse_btime(&s));
        let mut st = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .map(|s| parse_stat(&s, ticks, page, btime))
            .unwrap_or_default();
        st.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as f64);
        st.max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|s| parse_max_fds(&s));
        st
    }

    fn value(&self, name: &str) -> Option<f64> {
        match name {
            CPU => self.cpu_seconds,
            OPEN_FDS => self.open_fds,
            MAX_FDS => self.max_fds,
            VIRTUAL => self.virtual_bytes,
            RESIDENT => self.resident_bytes,
            START => self.start_time_seconds,
            _ => None,
        }
    }
}

fn sysconf_or(name: libc::c_int, fallback: f64) -> f64 {
    // SAFETY: sysconf only reads a configuration value; it has no memory effects.
    let v = unsafe { libc::sysconf(name) };
    if v > 0 {
        v as f64
    } else {
        fallback
    }
}

/// `btime` (boot time, seconds since the epoch) from `/proc/stat`.
pub fn parse_btime(proc_stat: &str) -> Option<f64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<f64>().ok())
}

/// Fields of `/proc/self/stat`. The command name may contain spaces and
/// parentheses, so fields are counted from the last `)`.
pub fn parse_stat(stat: &str, ticks: f64, page: f64, btime: Option<f64>) -> ProcStat {
    let rest = match stat.rfind(')') {
        Some(i) => &stat[i + 1..],
        None => return ProcStat::default(),
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Index 0 here is field 3 (state) of proc(5); field n is at n - 3.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok());
    let cpu = match (field(14), field(15)) {
        (Some(u), Some(s)) => Some((u + s) / ticks),
        _ => None,
    };
    let start = match (btime, field(22)) {
        (Some(b), Some(t)) => Some(b + t / ticks),
        _ => None,
    };
    ProcStat {
        cpu_seconds: cpu,
        virtual_bytes: field(23),
        resident_bytes: field(24).map(|p| p * page),
        start_time_seconds: start,
        ..ProcStat::default()
    }
}

/// Soft limit of "Max open files" in `/proc/self/limits`; `None` when unlimited.
pub fn parse_max_fds(limits: &str) -> Option<f64> {
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|soft| soft.parse::<f64>().ok())
}

/// Collector registered in the telemetry registry so that user metrics with a
/// `process_*` name collide at registration instead of being exposed twice.
pub struct ProcessCollector {
    descs: Vec<Desc>,
}

impl ProcessCollector {
    pub fn new() -> ProcessCollector {
        let descs = SPECS
            .iter()
            .filter_map(|(name, help, _)| {
                Desc::new(name.to_string(), help.to_string(), vec![], HashMap::new()).ok()
            })
            .collect();
        ProcessCollector { descs }
    }
}

impl Default for ProcessCollector {
    fn default() -> Self {
        ProcessCollector::new()
    }
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        families(&ProcStat::read())
    }
}

fn families(st: &ProcStat) -> Vec<MetricFamily> {
    SPECS
        .iter()
        .filter_map(|(name, help, kind)| {
            let v = st.value(name)?;
            let mut m = Metric::default();
            if *kind == MetricType::COUNTER {
                let mut c = Counter::default();
                c.set_value(v);
                m.set_counter(c);
            } else {
                let mut g = Gauge::default();
                g.set_value(v);
                m.set_gauge(g);
            }
            let mut mf = MetricFamily::default();
            mf.set_name(name.to_string());
            mf.set_help(help.to_string());
            mf.set_field_type(*kind);
            mf.set_metric(vec![m]);
            Some(mf)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (my (odd) cmd) S 1 4242 4242 0 -1 4194560 500 0 0 0 \
                        150 50 0 0 20 0 1 0 1000 12345678 300 18446744073709551615";

    #[test]
    fn stat_fields_counted_from_last_paren() {
        let st = parse_stat(STAT, 100.0, 4096.0, Some(1_700_000_000.0));
        assert_eq!(st.cpu_seconds, Some(2.0));
        assert_eq!(st.virtual_bytes, Some(12_345_678.0));
        assert_eq!(st.resident_bytes, Some(300.0 * 4096.0));
        assert_eq!(st.start_time_seconds, Some(1_700_000_010.0));
    }

    #[test]
    fn stat_without_btime_or_garbage() {
        let st = parse_stat(STAT, 100.0, 4096.0, None);
        assert_eq!(st.start_time_seconds, None);
        assert_eq!(
            parse_stat("garbage", 100.0, 4096.0, None),
            ProcStat::default()
        );
        assert_eq!(
            parse_stat("1 (x) S 1", 100.0, 4096.0, None).cpu_seconds,
            None
        );
    }

    #[test]
    fn btime_and_limits() {
        let stat = "cpu  1 2 3\nintr 5\nbtime 1700000000\nprocesses 9\n";
        assert_eq!(parse_btime(stat), Some(1_700_000_000.0));
        assert_eq!(parse_btime("cpu 1\n"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max processes             63704                63704                processes\n\
                      Max open files            1024                 1048576              files\n";
        assert_eq!(parse_max_fds(limits), Some(1024.0));
        assert_eq!(
            parse_max_fds(
                "Max open files            unlimited            unlimited            files\n"
            ),
            None
        );
    }

    #[test]
    fn reads_own_process() {
        let st = ProcStat::read();
        assert!(st.resident_bytes.unwrap_or(0.0) > 0.0);
        assert!(st.virtual_bytes.unwrap_or(0.0) > 0.0);
        assert!(st.open_fds.unwrap_or(0.0) > 0.0);
        assert!(st.max_fds.unwrap_or(0.0) > 0.0);
        assert!(st.cpu_seconds.is_some());
        // Started after 2020-01-01 and not in the future.
        let start = st.start_time_seconds.unwrap_or(0.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        assert!(
            start > 1_577_836_800.0 && start <= now + 1.0,
            "start {start}"
        );
    }

    #[test]
    fn collector_describes_all_six() {
        let c = ProcessCollector::new();
        assert_eq!(c.desc().len(), 6);
        assert_eq!(c.collect().len(), families(&ProcStat::read()).len());
        let only_rss = ProcStat {
            resident_bytes: Some(8192.0),
            ..ProcStat::default()
        };
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&families(&only_rss))
            .unwrap();
        assert_eq!(
            text,
            "# HELP process_resident_memory_bytes Resident memory size in bytes.\n\
             # TYPE process_resident_memory_bytes gauge\n\
             process_resident_memory_bytes 8192\n"
        );
    }
}
