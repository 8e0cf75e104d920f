//! A private PgBouncer in **transaction pooling** mode in front of the shared
//! test PostgreSQL: few server connections for many clients, so session
//! state (prepared statements, session advisory locks, `SET`) does not
//! survive between transactions — exactly what breaks data layers in
//! production.
//!
//! PgBouncer 1.21 or later is required: sqlx 0.9 (under sea-orm) always
//! uses *named* prepared statements (with its statement cache off it still
//! names them, and never closes them), which only PgBouncer's protocol-level
//! prepared-statement support (`max_prepared_statements`, 1.21+) carries
//! across transactions. Debian bookworm ships 1.18, so `scripts/services.sh`
//! builds Debian trixie's pgbouncer 1.24 source (checksum-pinned, from
//! Debian's archive) into `.cache/pgbouncer` when no recent one is installed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use url::Url;

/// A running PgBouncer (killed on drop).
#[derive(Debug)]
pub struct PgBouncer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl PgBouncer {
    /// Starts PgBouncer on a free loopback port, forwarding every database
    /// name to the server of `upstream_url` (host, port, user, password).
    /// `server_pool_size` server connections per database/user pair.
    pub fn start(upstream_url: &str, server_pool_size: u32) -> Self {
        let upstream = Url::parse(upstream_url).expect("the upstream PostgreSQL URL");
        let host = upstream.host_str().unwrap_or("127.0.0.1").to_owned();
        let upstream_port = upstream.port().unwrap_or(5432);
        let user = if upstream.username().is_empty() {
            "postgres".to_owned()
        } else {
            upstream.username().to_owned()
        };
        let password = upstream.password().unwrap_or("").to_owned();
        let dir = tempfile::Builder::new()
            .prefix("warden-pgbouncer-")
            .tempdir()
            .expect("a directory for PgBouncer");
        let port = crate::free_port();
        let path = |name: &str| dir.path().join(name).display().to_string();
        std::fs::write(
            dir.path().join("users.txt"),
            format!("\"{user}\" \"{password}\"\n"),
        )
        .expect("writing the PgBouncer auth file");
        std::fs::write(
            dir.path().join("pgbouncer.ini"),
            format!(
                "[databases]\n\
                 * = host={host} port={upstream_port} user={user}{pw}\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 auth_type = trust\n\
                 auth_file = {auth}\n\
                 pool_mode = transaction\n\
                 default_pool_size = {server_pool_size}\n\
                 min_pool_size = 0\n\
                 reserve_pool_size = 0\n\
                 max_client_conn = 500\n\
                 server_reset_query =\n\
                 max_prepared_statements = 500\n\
                 ignore_startup_parameters = extra_float_digits,options,search_path\n\
                 logfile = {log}\n\
                 pidfile = {pid}\n",
                pw = if password.is_empty() {
                    String::new()
                } else {
                    format!(" password={password}")
                },
                auth = path("users.txt"),
                log = path("pgbouncer.log"),
                pid = path("pgbouncer.pid"),
            ),
        )
        .expect("writing pgbouncer.ini");
        let binary = binary();
        // PgBouncer refuses to run as root: it runs as `postgres` then, from
        // a copy in its own directory (the checkout may not be readable by
        // that user).
        let binary = if crate::postgres::is_root() {
            let copy = dir.path().join("pgbouncer");
            std::fs::copy(&binary, &copy).expect("copying the PgBouncer binary");
            copy
        } else {
            binary
        };
        let mut cmd = if crate::postgres::is_root() {
            let _ = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status();
            let _ = Command::new("chmod").arg("755").arg(dir.path()).status();
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&binary);
            c
        } else {
            Command::new(&binary)
        };
        let child = cmd
            .arg(dir.path().join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting PgBouncer ({}): {e}; scripts/services.sh builds one",
                    binary.display()
                )
            });
        let bouncer = Self {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "PgBouncer did not listen on 127.0.0.1:{port}: {}",
                std::fs::read_to_string(bouncer._dir.path().join("pgbouncer.log"))
                    .unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        bouncer
    }

    /// `upstream_url` with PgBouncer's host and port instead.
    pub fn url_for(&self, upstream_url: &str) -> String {
        let mut url = Url::parse(upstream_url).expect("the upstream PostgreSQL URL");
        let _ = url.set_host(Some("127.0.0.1"));
        let _ = url.set_port(Some(self.port));
        url.to_string()
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        // Killing runuser does not reach PgBouncer (SIGKILL is never
        // forwarded): the pidfile names the process to kill.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Ok(pid) = std::fs::read_to_string(self._dir.path().join("pgbouncer.pid")) {
            let _ = Command::new("kill").arg("-9").arg(pid.trim()).status();
        }
    }
}

/// A PgBouncer of version 1.21 or later: `WARDEN_TEST_PGBOUNCER`, the one
/// `scripts/services.sh` built in `.cache/pgbouncer`, or one on the PATH.
fn binary() -> PathBuf {
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/pgbouncer/bin/pgbouncer");
    let candidates = std::env::var_os("WARDEN_TEST_PGBOUNCER")
        .map(PathBuf::from)
        .into_iter()
        .chain([
            built,
            PathBuf::from("/usr/sbin/pgbouncer"),
            PathBuf::from("/usr/bin/pgbouncer"),
        ]);
    let mut seen = Vec::new();
    for candidate in candidates {
        let Ok(out) = Command::new(&candidate).arg("--version").output() else {
            continue;
        };
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let version: Vec<u32> = text
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .split('.')
            .filter_map(|p| p.parse().ok())
            .collect();
        if version.as_slice() >= [1, 21].as_slice() {
            return candidate;
        }
        seen.push(format!(
            "{} ({})",
            candidate.display(),
            text.lines().next().unwrap_or("")
        ));
    }
    panic!(
        "no PgBouncer 1.21+ found (seen: {seen:?}); scripts/services.sh builds one into \
         .cache/pgbouncer (transaction pooling needs its prepared-statement support)"
    )
}
