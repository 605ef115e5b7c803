//! A look at each ClientHello before Pingora's handshake (Pingora's `PreTlsProcess`): the one
//! place that can answer an ACME TLS-ALPN-01 challenge, whose handshake must agree on ALPN
//! `acme-tls/1` (which the HTTPS listener does not offer), and where a handshake may wait for a
//! certificate that is being ordered for its name.
//!
//! The bytes read are put back (`rewind`), so the handshake that follows sees the whole stream.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::listeners::PreTlsProcess;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::{Error, ErrorType, Result};
use rustls::server::{Acceptor, ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The ALPN protocol of a TLS-ALPN-01 validation (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// A ClientHello larger than this is left to the real handshake, unread further.
const MAX_HELLO_BYTES: usize = 32 * 1024;
/// A client that has not sent its ClientHello by then is dropped.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// What the gateway does with a ClientHello, apart from TLS.
#[async_trait]
pub trait BeforeHandshake: Send + Sync {
    /// The self-signed certificate that answers a pending TLS-ALPN-01 challenge for `name`.
    fn challenge_certificate(&self, name: &str) -> Option<Arc<CertifiedKey>>;

    /// Called with the server name of every other handshake; may wait, bounded, for a
    /// certificate for it.
    async fn server_name(&self, name: &str);
}

/// Pingora's pre-TLS callback over a `BeforeHandshake`.
pub struct ReadClientHello {
    hook: Arc<dyn BeforeHandshake>,
}

impl ReadClientHello {
    pub fn new(hook: Arc<dyn BeforeHandshake>) -> Self {
        ReadClientHello { hook }
    }
}

/// What a ClientHello asked for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Hello {
    pub server_name: Option<String>,
    pub acme_tls_alpn: bool,
}

#[async_trait]
impl PreTlsProcess for ReadClientHello {
    async fn process(&self, stream: &mut L4Stream) -> Result<()> {
        let (seen, hello) = match tokio::time::timeout(HELLO_TIMEOUT, read_hello(stream)).await {
            Ok(read) => read?,
            Err(_) => {
                return Err(Error::explain(
                    ErrorType::ReadTimedout,
                    "no ClientHello in 10 s",
                ))
            }
        };
        stream.rewind(&seen);
        let Some(hello) = hello else {
            return Ok(());
        };
        let Some(name) = hello.server_name else {
            return Ok(());
        };
        if hello.acme_tls_alpn {
            return match self.hook.challenge_certificate(&name) {
                Some(cert) => answer_challenge(stream, &name, cert).await,
                None => Err(Error::explain(
                    ErrorType::HandshakeError,
                    format!("acme-tls/1 for {name}, which has no pending TLS-ALPN-01 challenge"),
                )),
            };
        }
        self.hook.server_name(&name).await;
        Ok(())
    }
}

/// Reads until the ClientHello is whole. Returns every byte read and, when it parsed, what it
/// asked for (`None`: not TLS, or too large; the real handshake says so).
async fn read_hello(stream: &mut L4Stream) -> Result<(Vec<u8>, Option<Hello>)> {
    let mut acceptor = Acceptor::default();
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| Error::because(ErrorType::ReadError, "reading the ClientHello", e))?;
        if n == 0 {
            return Err(Error::explain(
                ErrorType::ConnectionClosed,
                "closed before its ClientHello",
            ));
        }
        let read = &chunk[..n];
        seen.extend_from_slice(read);
        if acceptor.read_tls(&mut &read[..]).is_err() {
            return Ok((seen, None));
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => {
                let hello = accepted.client_hello();
                let acme_tls_alpn = hello
                    .alpn()
                    .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
                let server_name = hello.server_name().map(str::to_owned);
                return Ok((
                    seen,
                    Some(Hello {
                        server_name,
                        acme_tls_alpn,
                    }),
                ));
            }
            Ok(None) if seen.len() < MAX_HELLO_BYTES => {}
            Ok(None) | Err(_) => return Ok((seen, None)),
        }
    }
}

/// The challenge certificate, whatever the hello (rustls's SNI resolver would check it as a
/// server certificate, and refuse its critical `acmeIdentifier` extension).
#[derive(Debug)]
struct Only(Arc<CertifiedKey>);

impl ResolvesServerCert for Only {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

/// Completes the handshake with the challenge certificate and ALPN `acme-tls/1`, then closes: a
/// validation connection carries no data. Returns an error so that Pingora drops the connection.
async fn answer_challenge(
    stream: &mut L4Stream,
    name: &str,
    cert: Arc<CertifiedKey>,
) -> Result<()> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::because(ErrorType::HandshakeError, "TLS-ALPN-01 config", e))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Only(cert)));
    config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let mut tls = acceptor
        .accept(stream)
        .await
        .map_err(|e| Error::because(ErrorType::HandshakeError, "TLS-ALPN-01 handshake", e))?;
    let _ = tls.shutdown().await;
    tracing::debug!(name, "answered a TLS-ALPN-01 challenge");
    Err(Error::explain(
        ErrorType::HandshakeError,
        format!("TLS-ALPN-01 challenge for {name} answered; connection closed"),
    ))
}
