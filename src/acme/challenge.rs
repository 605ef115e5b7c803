//! Pending challenges, as the listeners answer them: HTTP-01 tokens (the proxy answers
//! `/.well-known/acme-challenge/<token>` before tenant routing) and TLS-ALPN-01 certificates (the
//! pre-TLS hook answers `acme-tls/1`). Read without a lock on the request path; written by the
//! orders (and, in a fleet, by the store's watch: any instance can answer any challenge).

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rcgen::{CertificateParams, CustomExtension, KeyPair};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Where HTTP-01 tokens are asked for (RFC 8555 §8.3).
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

#[derive(Default)]
pub struct Challenges {
    /// Token → key authorization.
    http: ArcSwap<HashMap<Box<str>, Arc<str>>>,
    /// Name → the self-signed certificate that carries the key authorization's digest.
    tls_alpn: ArcSwap<HashMap<Box<str>, Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for Challenges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Challenges")
            .field("http", &self.http.load().len())
            .field("tls_alpn", &self.tls_alpn.load().len())
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot make the TLS-ALPN-01 certificate for {name}: {message}")]
pub struct ChallengeCertError {
    name: String,
    message: String,
}

impl Challenges {
    /// The key authorization to answer for the path of a request, when it asks for a pending
    /// token. `None` for any other path: it goes to the tenant as usual.
    pub fn http_answer(&self, path: &str) -> Option<Arc<str>> {
        let token = path.strip_prefix(HTTP01_PREFIX)?;
        self.http.load().get(token).cloned()
    }

    pub fn add_http(&self, token: &str, key_authorization: &str) {
        let answer: Arc<str> = Arc::from(key_authorization);
        self.http.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.insert(Box::from(token), Arc::clone(&answer));
            map
        });
    }

    pub fn remove_http(&self, token: &str) {
        self.http.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.remove(token);
            map
        });
    }

    pub fn tls_alpn(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.tls_alpn.load().get(name).cloned()
    }

    /// Makes the challenge certificate for `name` from the key authorization's SHA-256 digest.
    pub fn add_tls_alpn(&self, name: &str, digest: &[u8]) -> Result<(), ChallengeCertError> {
        let cert = Arc::new(challenge_certificate(name, digest)?);
        self.tls_alpn.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.insert(Box::from(name), Arc::clone(&cert));
            map
        });
        Ok(())
    }

    pub fn remove_tls_alpn(&self, name: &str) {
        self.tls_alpn.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.remove(name);
            map
        });
    }
}

/// RFC 8737: a certificate for `name` alone with the critical `acmeIdentifier` extension.
fn challenge_certificate(name: &str, digest: &[u8]) -> Result<CertifiedKey, ChallengeCertError> {
    let fail = |message: String| ChallengeCertError {
        name: name.to_owned(),
        message,
    };
    let mut params =
        CertificateParams::new(vec![name.to_owned()]).map_err(|e| fail(e.to_string()))?;
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(digest)];
    let key = KeyPair::generate().map_err(|e| fail(e.to_string()))?;
    let cert = params.self_signed(&key).map_err(|e| fail(e.to_string()))?;
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signer = rustls::crypto::ring::sign::any_supported_type(&private)
        .map_err(|e| fail(e.to_string()))?;
    Ok(CertifiedKey::new(
        vec![CertificateDer::from(cert.der().to_vec())],
        signer,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pending_tokens_under_the_well_known_path_are_answered() {
        let challenges = Challenges::default();
        challenges.add_http("tok123", "tok123.thumb");
        assert_eq!(
            challenges
                .http_answer("/.well-known/acme-challenge/tok123")
                .as_deref(),
            Some("tok123.thumb")
        );
        assert!(challenges
            .http_answer("/.well-known/acme-challenge/other")
            .is_none());
        assert!(challenges.http_answer("/tok123").is_none());
        challenges.remove_http("tok123");
        assert!(challenges
            .http_answer("/.well-known/acme-challenge/tok123")
            .is_none());
    }

    #[test]
    fn the_tls_alpn_certificate_names_the_domain_and_carries_the_digest() {
        let challenges = Challenges::default();
        let digest = [7u8; 32];
        challenges
            .add_tls_alpn("shop.example.test", &digest)
            .unwrap();
        let cert = challenges.tls_alpn("shop.example.test").unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert.cert[0]).unwrap();
        let san = parsed.subject_alternative_name().unwrap().unwrap();
        assert_eq!(san.value.general_names.len(), 1);
        // id-pe-acmeIdentifier, critical, an OCTET STRING of the digest.
        let ext = parsed
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .unwrap();
        assert!(ext.critical);
        assert_eq!(&ext.value[2..], &digest);
        challenges.remove_tls_alpn("shop.example.test");
        assert!(challenges.tls_alpn("shop.example.test").is_none());
    }
}
