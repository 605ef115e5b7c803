//! Certificates for tests: a CA in a temp folder, certificates it signs written beside it, and
//! clients that trust it (or not) and resolve names to the gateway's loopback port.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tenantgate::tls::dev::{issue_leaf, write_pair, DevCa};
use tokio_rustls::TlsAcceptor;

use super::WAIT;

pub struct Pki {
    pub ca: DevCa,
    pub ca_path: PathBuf,
    dir: tempfile::TempDir,
}

/// One certificate's files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    /// The leaf certificate on disk now, DER: what a client should be served.
    pub fn leaf_der(&self) -> Vec<u8> {
        let pem = std::fs::read(&self.cert).expect("read cert");
        CertificateDer::pem_slice_iter(&pem)
            .next()
            .expect("a certificate")
            .expect("PEM")
            .to_vec()
    }
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = DevCa::new(name).expect("CA");
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca.cert_pem()).expect("write CA");
        Pki { ca, ca_path, dir }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Issues a certificate for `names` into `<stem>.pem` and `<stem>.key` (replacing them).
    pub fn issue(&self, stem: &str, names: &[&str]) -> CertFiles {
        let files = CertFiles {
            cert: self.dir.path().join(format!("{stem}.pem")),
            key: self.dir.path().join(format!("{stem}.key")),
        };
        let pair = issue_leaf(&self.ca, names).expect("issue");
        write_pair(&pair, &files.cert, &files.key).expect("write pair");
        files
    }

    /// A TLS acceptor serving `files`, for upstreams.
    pub fn acceptor(files: &CertFiles) -> TlsAcceptor {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
            .expect("cert")
            .map(|c| c.expect("PEM"))
            .collect();
        let key = PrivateKeyDer::from_pem_file(&files.key).expect("key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
        TlsAcceptor::from(Arc::new(config))
    }

    /// A client that trusts this CA only, sends `names` to `addr`, reports the server's
    /// certificate (`TlsInfo`) and never follows redirects.
    pub fn client(&self, addr: SocketAddr, names: &[&str]) -> reqwest::ClientBuilder {
        let ca = std::fs::read(&self.ca_path).expect("read CA");
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(WAIT)
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA PEM"))
            .tls_info(true);
        for name in names {
            builder = builder.resolve(name, addr);
        }
        builder
    }
}

/// The leaf certificate the server presented.
pub fn served_certificate(resp: &reqwest::Response) -> Vec<u8> {
    resp.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .expect("TLS info with the peer certificate")
        .to_vec()
}
