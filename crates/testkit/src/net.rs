use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = StdListener::bind("127.0.0.1:0").expect("binding an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// A free loopback port of at most 55535 whose port + 10000 is free too: a
/// Redis Cluster node listens on both (its cluster bus on the second).
pub fn free_cluster_port() -> u16 {
    for _ in 0..1000 {
        let port = free_port();
        if port <= 55_535
            && StdListener::bind(("127.0.0.1", port + 10_000)).is_ok()
            && StdListener::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
    panic!("no free port pair (P, P + 10000) below 55536 for a cluster node")
}

/// A server that accepts TCP connections and never answers: the network
/// equivalent of a hung database or cache. Stops listening when dropped.
#[derive(Debug)]
pub struct Blackhole {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Blackhole {
    /// Starts listening on a free loopback port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the blackhole listener");
        let addr = listener.local_addr().expect("blackhole address");
        let held = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                // Keep the socket open and silent.
                held.lock().await.push(socket);
            }
        });
        Self { addr, task }
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.task.abort();
    }
}
