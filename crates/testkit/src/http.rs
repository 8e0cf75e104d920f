use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// One HTTP request an [`HttpSink`] received.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    /// `POST`, `GET`, …
    pub method: String,
    /// The request path.
    pub path: String,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl ReceivedRequest {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A tiny HTTP/1.1 server on a free loopback port that records every request
/// and answers `500` to the first `fail_first` of them, `200` afterwards.
/// [`HttpSink::start_tls`] serves HTTPS instead.
#[derive(Debug)]
pub struct HttpSink {
    port: u16,
    scheme: &'static str,
    rx: mpsc::UnboundedReceiver<ReceivedRequest>,
    /// TLS handshakes that failed (the client refused the certificate, …).
    failed_handshakes: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl HttpSink {
    /// Starts listening (plain HTTP).
    pub async fn start(fail_first: usize) -> Self {
        Self::listen(fail_first, None).await
    }

    /// Starts listening for HTTPS with `identity`'s certificate and key.
    pub async fn start_tls(fail_first: usize, identity: &crate::TlsIdentity) -> Self {
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(identity.chain(), identity.key())
        .expect("the test certificate and key");
        Self::listen(
            fail_first,
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
        )
        .await
    }

    async fn listen(fail_first: usize, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the HTTP sink");
        let port = listener.local_addr().expect("sink address").port();
        let (tx, rx) = mpsc::unbounded_channel();
        let seen = Arc::new(AtomicUsize::new(0));
        let failed_handshakes = Arc::new(AtomicUsize::new(0));
        let scheme = if tls.is_some() { "https" } else { "http" };
        let failed = failed_handshakes.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (tx, seen, tls, failed) =
                    (tx.clone(), seen.clone(), tls.clone(), failed.clone());
                tokio::spawn(async move {
                    match tls {
                        None => serve(socket, fail_first, &seen, &tx).await,
                        Some(acceptor) => match acceptor.accept(socket).await {
                            Ok(stream) => serve(stream, fail_first, &seen, &tx).await,
                            Err(_) => {
                                failed.fetch_add(1, Ordering::SeqCst);
                            }
                        },
                    }
                });
            }
        });
        Self {
            port,
            scheme,
            rx,
            failed_handshakes,
            task,
        }
    }

    /// `http://127.0.0.1:PORT/hook` (or `https://`).
    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}/hook", self.scheme, self.port)
    }

    /// `http://127.0.0.1:PORT` (or `https://`), without a path.
    pub fn origin(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.port)
    }

    /// The same URL with `host` instead of 127.0.0.1 (`localhost`, …).
    pub fn url_with_host(&self, host: &str) -> String {
        format!("{}://{host}:{}/hook", self.scheme, self.port)
    }

    /// How many TLS handshakes failed so far.
    pub fn failed_handshakes(&self) -> usize {
        self.failed_handshakes.load(Ordering::SeqCst)
    }

    /// The next request received, waiting up to `timeout`.
    pub async fn next(&mut self, timeout: std::time::Duration) -> Option<ReceivedRequest> {
        tokio::time::timeout(timeout, self.rx.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for HttpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut socket: S,
    fail_first: usize,
    seen: &AtomicUsize,
    tx: &mpsc::UnboundedSender<ReceivedRequest>,
) {
    let Some(request) = read_request(&mut socket).await else {
        return;
    };
    let n = seen.fetch_add(1, Ordering::SeqCst);
    let status = if n < fail_first {
        "500 Internal Server Error"
    } else {
        "200 OK"
    };
    let reply = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    let _ = socket.write_all(reply.as_bytes()).await;
    let _ = socket.shutdown().await;
    let _ = tx.send(request);
}

async fn read_request<S: AsyncRead + Unpin>(socket: &mut S) -> Option<ReceivedRequest> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        if buf.len() > 1 << 20 {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let path = request_line.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[header_end..].to_vec();
    while body.len() < length {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(ReceivedRequest {
        method,
        path,
        headers,
        body,
    })
}
