use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use deadpool_redis::redis::{self, AsyncCommands};

/// A key prefix of its own on the shared Redis. Every key under it is deleted
/// when this value is dropped.
#[derive(Debug)]
pub struct TestRedis {
    /// URL of the shared Redis.
    pub url: String,
    /// This test's unique prefix, ending with `:`.
    pub prefix: String,
}

impl TestRedis {
    /// Checks that the shared Redis answers and hands out a fresh prefix.
    /// With `WARDEN_TEST_VIA_REDIS_CLUSTER=1` the shared Redis is the test
    /// Redis Cluster (`WARDEN_TEST_REDIS_CLUSTER_URL`, the comma-separated
    /// node list `scripts/redis-cluster.sh` prints): the test command runs
    /// the cache, approval and key suites a second time that way.
    pub async fn new() -> Self {
        let cluster = std::env::var("WARDEN_TEST_VIA_REDIS_CLUSTER").is_ok_and(|v| v == "1");
        let url = if cluster {
            std::env::var("WARDEN_TEST_REDIS_CLUSTER_URL").unwrap_or_else(|_| {
                panic!(
                    "WARDEN_TEST_VIA_REDIS_CLUSTER=1 needs WARDEN_TEST_REDIS_CLUSTER_URL: \
                     start the test cluster with `scripts/redis-cluster.sh` (it prints the URL)"
                )
            })
        } else {
            std::env::var("WARDEN_TEST_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
        };
        if cluster {
            // A "cluster" run against a standalone server would prove nothing.
            let first = url.split(',').next().unwrap_or_default().to_owned();
            let info: Result<String, _> = async {
                let client = redis::Client::open(first.as_str())?;
                let mut conn = client.get_multiplexed_async_connection().await?;
                redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async(&mut conn)
                    .await
            }
            .await;
            match info {
                Ok(info) if info.contains("cluster_state:ok") => {}
                other => panic!(
                    "WARDEN_TEST_REDIS_CLUSTER_URL does not name a healthy Redis Cluster \
                     ({other:?}); start one with scripts/redis-cluster.sh"
                ),
            }
        }
        if let Err(e) = ping(&url).await {
            panic!(
                "Redis is not reachable at {url} ({e}).\n\
                 Start it with `scripts/services.sh` (installs and starts PostgreSQL and Redis), \
                 or `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no`, \
                 or point WARDEN_TEST_REDIS_URL at a running Redis."
            );
        }
        let prefix = format!("wt:{}:", uuid::Uuid::new_v4().simple());
        Self { url, prefix }
    }

    /// Keys currently stored under this test's prefix, sorted.
    pub async fn keys(&self) -> Vec<String> {
        scan_prefix(&self.url, &self.prefix)
            .await
            .unwrap_or_else(|e| panic!("SCAN on the test Redis failed: {e}"))
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let (url, prefix) = (self.url.clone(), self.prefix.clone());
        crate::block_on_side_thread(async move {
            let Ok(keys) = scan_prefix(&url, &prefix).await else {
                return;
            };
            if keys.is_empty() {
                return;
            }
            if url.contains(',') {
                // One DEL per key: keys of other slots cannot share a DEL.
                if let Ok(client) = redis::cluster::ClusterClient::new(url.split(','))
                    && let Ok(mut conn) = client.get_async_connection().await
                {
                    for key in keys {
                        let _: Result<i64, _> = conn.del(key).await;
                    }
                }
            } else if let Ok(client) = redis::Client::open(url.as_str())
                && let Ok(mut conn) = client.get_multiplexed_async_connection().await
            {
                let _: Result<i64, _> = conn.del(keys).await;
            }
        });
    }
}

async fn ping(url: &str) -> Result<(), redis::RedisError> {
    if url.contains(',') {
        let client = redis::cluster::ClusterClient::builder(url.split(','))
            .connection_timeout(Duration::from_secs(3))
            .response_timeout(Duration::from_secs(3))
            .build()?;
        let mut conn = client.get_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
        return Ok(());
    }
    let client = redis::Client::open(url)?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(3)))
        .set_response_timeout(Some(Duration::from_secs(3)));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    redis::cmd("PING").query_async::<String>(&mut conn).await?;
    Ok(())
}

/// Every key under `prefix`: on a cluster, the union over every node (a
/// replica repeats its primary's keys).
async fn scan_prefix(url: &str, prefix: &str) -> Result<Vec<String>, redis::RedisError> {
    let mut keys = Vec::new();
    for node in url.split(',') {
        keys.extend(scan_node(node, prefix).await?);
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

async fn scan_node(url: &str, prefix: &str) -> Result<Vec<String>, redis::RedisError> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    keys.sort();
    Ok(keys)
}

/// A `redis-server` process this test owns, on a free loopback port, with no
/// persistence. It can be stopped (SIGKILL), paused (SIGSTOP) and restarted on
/// the same port; it is killed when this value is dropped.
#[derive(Debug)]
pub struct PrivateRedis {
    port: u16,
    password: Option<String>,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl PrivateRedis {
    /// Starts a server without a password.
    pub async fn start() -> Self {
        Self::start_with_password(None).await
    }

    /// Starts a server that requires `password` (`requirepass`).
    pub async fn start_with_password(password: Option<&str>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("warden-redis-")
            .tempdir()
            .expect("temporary directory for redis-server");
        let mut server = Self {
            port: crate::free_port(),
            password: password.map(str::to_owned),
            child: None,
            dir,
        };
        server.restart().await;
        server
    }

    /// `redis://[:password@]127.0.0.1:port` for this server.
    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// The port the server listens on (kept across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server at once (SIGKILL), like a crash.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .arg(sig)
                .arg(child.id().to_string())
                .status()
                .expect("running kill");
            assert!(status.success(), "kill {sig} failed");
        }
    }

    /// (Re)starts the server on its port and waits until it answers PING.
    pub async fn restart(&mut self) {
        self.stop();
        let mut cmd = Command::new(redis_server_binary());
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(p) = &self.password {
            cmd.arg("--requirepass").arg(p);
        }
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "starting redis-server failed ({e}): install it with `scripts/services.sh` \
                 (apt-get install redis-server)"
            )
        });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match ping(&self.url()).await {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => {
                    panic!(
                        "private redis-server on port {} never answered: {e}",
                        self.port
                    )
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.resume();
        self.stop();
    }
}

fn redis_server_binary() -> PathBuf {
    for candidate in ["/usr/bin/redis-server", "/usr/local/bin/redis-server"] {
        let path = PathBuf::from(candidate);
        if path.exists() {
            return path;
        }
    }
    PathBuf::from("redis-server")
}
