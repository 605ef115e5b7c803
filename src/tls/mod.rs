//! TLS termination: certificates from operators' PEM files (`certificate`), the per-table index that
//! picks one by SNI (`store`), a development CA (`dev`), and the two hooks Pingora's rustls listener
//! takes: the certificate resolver and the handshake callback that keeps the client's SNI for the
//! request phases.
//!
//! Certificates live in the routing table, so they reload with it: a new table means new handshakes
//! get its certificates, while connections already open keep theirs.

pub mod certificate;
pub mod dev;
pub mod hello;
pub mod store;

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The certificate for a handshake's server name, from whatever holds the certificates in use (the
/// routing table, which hands this over so that TLS need not know it).
pub type SelectCertificate = Box<dyn Fn(Option<&str>) -> Option<Arc<CertifiedKey>> + Send + Sync>;

/// Chooses each handshake's certificate from the routing table in use at that moment.
pub struct SniResolver {
    select: SelectCertificate,
}

impl SniResolver {
    pub fn new(select: SelectCertificate) -> Self {
        SniResolver { select }
    }
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SniResolver").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name();
        let chosen = (self.select)(name);
        if chosen.is_none() {
            tracing::debug!(
                sni = name.unwrap_or("-"),
                "no certificate for this name; handshake refused"
            );
        }
        chosen
    }
}

/// The server name a TLS client asked for, kept with the connection: a request whose Host names
/// another tenant than this is misdirected (421).
#[derive(Debug)]
pub struct ClientServerName(pub Box<str>);

/// Pingora's post-handshake hook: stores the client's SNI in the connection's TLS digest.
pub struct KeepServerName;

#[async_trait]
impl TlsAccept for KeepServerName {
    async fn handshake_complete_callback(
        &self,
        tls: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        let name = tls.server_name()?;
        Some(Arc::new(ClientServerName(Box::from(name))))
    }
}
