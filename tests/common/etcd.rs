//! Real etcd servers for the integration tests: one member or a loopback cluster,
//! each on free ports with its own data directory under a temp dir, killed on drop.
//! Reads go through `etcdctl` (what an operator would see) or the JSON gateway
//! (for fast polling).

use super::{free_port, wait_until, TempDir};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Whether `etcd` and `etcdctl` are installed; prints why a test is skipped.
pub fn available(test: &str) -> bool {
    for bin in ["etcd", "etcdctl"] {
        let found = Command::new(bin)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            println!("SKIPPED {test}: `{bin}` is not installed (Debian: etcd-server, etcd-client)");
            return false;
        }
    }
    true
}

pub struct Member {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub data: PathBuf,
    child: Option<Child>,
}

impl Member {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }
}

pub struct Etcd {
    pub members: Vec<Member>,
    dir: TempDir,
    cluster: String,
    /// `user:password` for etcdctl once auth is enabled.
    pub auth: Option<String>,
}

impl Etcd {
    pub fn single() -> Etcd {
        Etcd::cluster(1)
    }

    /// `n` members on loopback, started together, ready when each answers.
    pub fn cluster(n: usize) -> Etcd {
        let dir = TempDir::new("etcd");
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                data: dir.path(&format!("m{i}.data")),
                child: None,
            })
            .collect();
        let cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let mut etcd = Etcd {
            members,
            dir,
            cluster,
            auth: None,
        };
        for i in 0..n {
            etcd.spawn(i);
        }
        for i in 0..n {
            etcd.wait_ready(i);
        }
        etcd
    }

    fn spawn(&mut self, i: usize) {
        let m = &self.members[i];
        let log = std::fs::File::create(self.dir.path(&format!("{}.log", m.name)))
            .expect("etcd log file");
        let child = Command::new("etcd")
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data)
            .args(["--listen-client-urls", &m.url()])
            .args(["--advertise-client-urls", &m.url()])
            .args(["--listen-peer-urls", &m.peer_url()])
            .args(["--initial-advertise-peer-urls", &m.peer_url()])
            .args(["--initial-cluster", &self.cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "cp-test"])
            // fast elections keep the cluster tests short
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-level", "error"])
            .env_remove("ETCDCTL_API")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.members[i].child = Some(child);
    }

    fn wait_ready(&self, i: usize) {
        let url = self.members[i].url();
        let ok = wait_until(Duration::from_secs(20), || {
            gateway(&url, "/v3/kv/range", &json!({"key": "AA=="})).is_ok()
        });
        assert!(ok, "etcd {} never became ready:\n{}", url, self.log(i));
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path(&format!("{}.log", self.members[i].name)))
            .unwrap_or_default()
    }

    pub fn url(&self, i: usize) -> String {
        self.members[i].url()
    }

    /// Every member's URL, as a JSON5 array literal for a config.
    pub fn endpoints_json(&self) -> String {
        let list: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{:?}", m.url()))
            .collect();
        format!("[{}]", list.join(", "))
    }

    /// SIGKILL one member (a crash, not a clean leave).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start a killed member again on the same ports; `wipe` gives it an empty
    /// data directory (a fresh single-member cluster only).
    pub fn restart(&mut self, i: usize, wipe: bool) {
        if wipe {
            let _ = std::fs::remove_dir_all(&self.members[i].data);
        }
        self.spawn(i);
        self.wait_ready(i);
    }

    /// A member that is up, for reads.
    fn live(&self) -> String {
        self.members
            .iter()
            .find(|m| m.child.is_some())
            .map(|m| m.url())
            .expect("no etcd member running")
    }

    /// `etcdctl` (v3 API) against a live member; returns stdout, panics on failure.
    pub fn etcdctl(&self, args: &[&str]) -> String {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.live(), "--command-timeout", "5s"])
            .args(self.auth.iter().flat_map(|a| ["--user", a.as_str()]))
            .args(args)
            .output()
            .expect("run etcdctl");
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Turn on authentication with a `root` user (etcd wants root to exist first).
    pub fn enable_auth(&mut self, password: &str) {
        self.etcdctl(&["user", "add", &format!("root:{password}")]);
        self.etcdctl(&["auth", "enable"]);
        self.auth = Some(format!("root:{password}"));
    }

    /// Keys and values under `prefix`, as `etcdctl get --prefix` prints them.
    pub fn get_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        let text = self.etcdctl(&["get", "--prefix", prefix]);
        let lines: Vec<&str> = text.lines().collect();
        lines
            .chunks(2)
            .map(|kv| (kv[0].to_string(), kv.get(1).unwrap_or(&"").to_string()))
            .collect()
    }

    /// The lease of `key` as `etcdctl lease timetolive --keys` reports it.
    pub fn lease_of(&self, key: &str) -> Option<Lease> {
        let got: Value = serde_json::from_str(&self.etcdctl(&["get", key, "-w", "json"])).ok()?;
        let id = got.pointer("/kvs/0/lease")?.as_u64().filter(|l| *l != 0)?;
        let hex = format!("{id:x}");
        let ttl: Value = serde_json::from_str(&self.etcdctl(&[
            "lease",
            "timetolive",
            &hex,
            "--keys",
            "-w",
            "json",
        ]))
        .ok()?;
        let keys = ttl["keys"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .filter_map(|k| containerpilot::catalog::base64::decode(k).ok())
                    .map(|k| String::from_utf8_lossy(&k).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        Some(Lease {
            id: hex,
            granted: ttl["granted-ttl"].as_i64().unwrap_or(0),
            remaining: ttl["ttl"].as_i64().unwrap_or(0),
            keys,
        })
    }

    /// Hex IDs of every live lease.
    pub fn leases(&self) -> Vec<String> {
        self.etcdctl(&["lease", "list"])
            .lines()
            .skip(1)
            .map(str::to_string)
            .collect()
    }

    /// The value of `key` through the gateway of member `i`; `Err` when that
    /// member cannot answer.
    pub fn value_at(&self, i: usize, key: &str) -> Result<Option<Value>, String> {
        let enc = containerpilot::catalog::base64::encode(key.as_bytes());
        let got = gateway(&self.url(i), "/v3/kv/range", &json!({ "key": enc }))?;
        let Some(v) = got.pointer("/kvs/0/value").and_then(Value::as_str) else {
            return Ok(None);
        };
        let raw = containerpilot::catalog::base64::decode(v)?;
        serde_json::from_slice(&raw)
            .map(Some)
            .map_err(|e| e.to_string())
    }

    /// The value of `key` from the first live member.
    pub fn value(&self, key: &str) -> Option<Value> {
        let i = self.members.iter().position(|m| m.child.is_some())?;
        self.value_at(i, key).ok().flatten()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

#[derive(Debug)]
pub struct Lease {
    pub id: String,
    pub granted: i64,
    pub remaining: i64,
    pub keys: Vec<String>,
}

/// One POST to the JSON gateway.
pub fn gateway(base: &str, path: &str, body: &Value) -> Result<Value, String> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(3))
        .build();
    let resp = agent
        .post(&format!("{base}{path}"))
        .send_string(&body.to_string())
        .map_err(|e| e.to_string())?;
    let text = resp.into_string().map_err(|e| e.to_string())?;
    serde_json::Deserializer::from_str(&text)
        .into_iter::<Value>()
        .next()
        .ok_or_else(|| "empty answer".to_string())?
        .map_err(|e| e.to_string())
}
