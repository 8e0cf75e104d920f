//! A private Redis Cluster for fault tests: 3 primaries + 3 replicas on free
//! loopback ports (`redis-server --cluster-enabled yes`, formed with
//! `redis-cli --cluster create`), a short node timeout so a killed primary's
//! replica is promoted within seconds. Killed on drop.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Six `redis-server` processes forming one cluster.
#[derive(Debug)]
pub struct PrivateRedisCluster {
    nodes: Vec<(u16, Option<Child>)>,
    _dir: tempfile::TempDir,
}

fn cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

impl PrivateRedisCluster {
    /// Starts the six nodes and forms the cluster (a few seconds).
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("warden-redis-cluster-")
            .tempdir()
            .expect("a directory for the cluster");
        let mut nodes = Vec::new();
        for _ in 0..6 {
            let port = crate::net::free_cluster_port();
            let node_dir = dir.path().join(port.to_string());
            std::fs::create_dir(&node_dir).expect("a node directory");
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
                .arg("--cluster-config-file")
                .arg(node_dir.join("nodes.conf"))
                .args(["--save", "", "--appendonly", "no"])
                // Replicas sync at once (the default waits 5 s), so a
                // primary killed early in a test has a replica to promote.
                .args(["--repl-diskless-sync-delay", "0"])
                .arg("--dir")
                .arg(&node_dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting redis-server (scripts/services.sh installs it)");
            nodes.push((port, Some(child)));
        }
        for (port, _) in &nodes {
            let deadline = Instant::now() + Duration::from_secs(10);
            while cli(*port, &["ping"]).trim() != "PONG" {
                assert!(Instant::now() < deadline, "node {port} did not start");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|(p, _)| format!("127.0.0.1:{p}"))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("running redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = Self { nodes, _dir: dir };
        cluster.wait_until_healthy(Duration::from_secs(20));
        cluster
    }

    /// `redis://127.0.0.1:P1,redis://127.0.0.1:P2,…` — every node, the form
    /// `REDIS_URL` takes for a cluster.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|(p, _)| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The port of the primary that serves `key` now.
    pub fn primary_for(&self, key: &str) -> u16 {
        let live = self.live_port();
        let slot: u16 = cli(live, &["cluster", "keyslot", key])
            .trim()
            .parse()
            .expect("a slot");
        for line in cli(live, &["cluster", "nodes"]).lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let port: u16 = fields[1]
                .split(['@', ':'])
                .nth(1)
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            for range in &fields[8..] {
                let (lo, hi) = match range.split_once('-') {
                    Some((a, b)) => (a.parse().unwrap_or(1), b.parse().unwrap_or(0)),
                    None => (range.parse().unwrap_or(1), range.parse().unwrap_or(0)),
                };
                if (lo..=hi).contains(&slot) {
                    return port;
                }
            }
        }
        panic!("no primary serves slot {slot}")
    }

    /// Kills (SIGKILL) the node on `port`: a crash, no failover handshake.
    pub fn kill(&mut self, port: u16) {
        if let Some((_, child)) = self.nodes.iter_mut().find(|(p, _)| *p == port)
            && let Some(mut c) = child.take()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until every live node says `cluster_state:ok` (after a kill:
    /// the replica was promoted) and every live replica is in sync with its
    /// primary.
    pub fn wait_until_healthy(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let healthy = self
                .nodes
                .iter()
                .filter(|(_, c)| c.is_some())
                .all(|(p, _)| {
                    let replication = cli(*p, &["info", "replication"]);
                    cli(*p, &["cluster", "info"]).contains("cluster_state:ok")
                        && (!replication.contains("role:slave")
                            || replication.contains("master_link_status:up"))
                });
            if healthy {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not become healthy"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn live_port(&self) -> u16 {
        self.nodes
            .iter()
            .find(|(_, c)| c.is_some())
            .map(|(p, _)| *p)
            .expect("a live node")
    }
}

impl Drop for PrivateRedisCluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.nodes {
            if let Some(c) = child.as_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
