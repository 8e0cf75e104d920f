//! A throwaway certificate authority for HTTPS tests, made with the
//! `openssl` command (installed by `scripts/services.sh`): a CA the test
//! trusts and a server certificate it signed for the names asked for.

use std::path::Path;
use std::process::Command;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A server certificate (signed by a fresh test CA) and its key, plus the
/// CA's certificate for the client to trust. Valid for two days.
pub struct TlsIdentity {
    /// The CA certificate, PEM.
    pub ca_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity").finish_non_exhaustive()
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl (scripts/services.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TlsIdentity {
    /// A new CA and a server certificate for `names` (`IP:127.0.0.1`,
    /// `DNS:localhost`, … as openssl's subjectAltName takes them).
    pub fn new(names: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("a directory for the test CA");
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=Warden test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(dir.path(), &ca);
        let mut csr = vec!["req"];
        csr.extend(ec);
        csr.extend([
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=warden-test-server",
        ]);
        openssl(dir.path(), &csr);
        std::fs::write(
            dir.path().join("server.ext"),
            format!(
                "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                 extendedKeyUsage=serverAuth\nsubjectAltName={}\n",
                names.join(",")
            ),
        )
        .expect("writing the extensions file");
        openssl(
            dir.path(),
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "server.ext",
            ],
        );
        let read = |name: &str| std::fs::read(dir.path().join(name)).expect("reading a PEM file");
        Self {
            ca_pem: read("ca.pem"),
            cert_pem: read("server.pem"),
            key_pem: read("server.key"),
            _dir: dir,
        }
    }

    pub(crate) fn chain(&self) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(&self.cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .expect("the server certificate")
    }

    pub(crate) fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(&self.key_pem).expect("the server key")
    }
}
