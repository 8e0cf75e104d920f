use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// A PostgreSQL server this test owns (initdb into a temporary directory, on a
/// free loopback port, trust auth, fsync off). It can be crashed (`kill`,
/// SIGKILL), paused (SIGSTOP) and restarted on the same port; it is killed on drop.
///
/// Needs the server binaries (`/usr/lib/postgresql/<version>/bin`); as root it
/// runs them as the `postgres` user, since PostgreSQL refuses to run as root.
#[derive(Debug)]
pub struct PrivatePostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    running: bool,
}

impl PrivatePostgres {
    /// Creates a cluster and starts it (takes a few seconds).
    pub async fn start() -> Self {
        let bin = server_bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("warden-pg-")
            .tempdir()
            .expect("temporary directory for PostgreSQL");
        let server = Self {
            bin,
            dir,
            port: crate::free_port(),
            running: false,
        };
        let data = server.data_dir();
        std::fs::create_dir(&data).expect("creating the data directory");
        if is_root() {
            run(Command::new("chmod").arg("755").arg(server.dir.path()));
            run(Command::new("chown")
                .arg("-R")
                .arg("postgres:postgres")
                .arg(server.dir.path()));
        }
        let initdb = server.bin.join("initdb");
        let out = server.as_postgres(
            &initdb,
            &[
                "-D",
                path_str(&data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut server = server;
        server.resume_after_stop().await;
        server
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn as_postgres(&self, program: &Path, args: &[&str]) -> Output {
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        cmd.args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", program.display()))
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The port (kept across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    fn pg_ctl(&self, args: &[&str]) -> Output {
        let pg_ctl = self.bin.join("pg_ctl");
        let data = self.data_dir();
        let mut all = vec!["-D", path_str(&data)];
        all.extend_from_slice(args);
        self.as_postgres(&pg_ctl, &all)
    }

    /// Crashes the server: SIGKILL (`kill -9`) to the postmaster and every
    /// backend at once, like the OOM killer. The next start runs crash recovery.
    pub fn kill(&mut self) {
        if self.running {
            self.signal_all("-KILL");
            // Wait until the port is free again so a restart can bind it.
            for _ in 0..100 {
                if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            self.running = false;
        }
    }

    /// Freezes the whole server (SIGSTOP to the postmaster and every backend):
    /// connections stay open and nothing answers, like a hung host.
    pub fn pause(&self) {
        self.signal_all("-STOP");
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) {
        self.signal_all("-CONT");
    }

    fn signal_all(&self, sig: &str) {
        let pid_file = self.data_dir().join("postmaster.pid");
        let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.lines().next().map(|l| l.trim().to_owned()))
        else {
            return;
        };
        let children = Command::new("pgrep")
            .args(["-P", &pid])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let mut pids: Vec<String> = children.split_whitespace().map(str::to_owned).collect();
        pids.push(pid);
        let _ = Command::new("kill").arg(sig).args(&pids).status();
    }

    /// Starts the server again on the same port and waits until it accepts
    /// connections.
    pub async fn resume_after_stop(&mut self) {
        if self.running {
            return;
        }
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            path_str(self.dir.path())
        );
        let log = self.dir.path().join("server.log");
        let out = self.pg_ctl(&[
            "-o",
            &options,
            "-l",
            path_str(&log),
            "-w",
            "-t",
            "60",
            "start",
        ]);
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        self.running = true;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.resume();
        self.kill();
    }
}

/// Whether this process runs as root (PostgreSQL and PgBouncer refuse to).
pub(crate) fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn run(cmd: &mut Command) {
    let status = cmd.status().expect("running a set-up command");
    assert!(status.success(), "{cmd:?} failed");
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

fn server_bin_dir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    dirs.retain(|d| d.join("initdb").exists());
    dirs.sort();
    dirs.pop().unwrap_or_else(|| {
        panic!(
            "PostgreSQL server binaries not found under /usr/lib/postgresql: \
             install them with `scripts/services.sh` (apt-get install postgresql)"
        )
    })
}
