//! Certificates and keys as operators hand them over (PEM files), checked before anything serves
//! them: a chain that does not parse, a key that is not the certificate's, or a certificate without
//! DNS names is refused with the file it came from, and whatever was served before stays.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::extensions::GeneralName;

/// A certificate ready to serve, with what operators need to know about it.
#[derive(Debug)]
pub struct ServingCertificate {
    pub key: Arc<CertifiedKey>,
    /// DNS names from subjectAltName, lowercase; a wildcard stays `*.example.com`.
    pub names: Vec<String>,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// SHA-256 of the leaf certificate, hex, as `openssl x509 -fingerprint -sha256` prints it
    /// (without colons): how operators tell which certificate is served.
    pub fingerprint: String,
    /// Of both files' bytes: a reload compares it with the files on disk to see that they changed.
    pub files_digest: u64,
    /// The issuer's common name (or its whole name, without one).
    pub issuer: String,
}

impl ServingCertificate {
    /// Whole days from `now` (Unix seconds) until expiry; negative once expired.
    pub fn days_left(&self, now: i64) -> i64 {
        (self.not_after - now).div_euclid(86_400)
    }
}

/// Which of the two files a problem is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PemFile {
    Cert,
    Key,
}

#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        file: PemFile,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: no certificate found (expected PEM \"-----BEGIN CERTIFICATE-----\" blocks, leaf first)", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: the PEM data is malformed: {message}", path.display())]
    BadPem {
        file: PemFile,
        path: PathBuf,
        message: String,
    },
    #[error("{}: the certificate cannot be parsed: {message}", path.display())]
    BadCertificate { path: PathBuf, message: String },
    #[error("{}: the certificate names no DNS host in subjectAltName (the names it serves come from there)", path.display())]
    NoNames { path: PathBuf },
    #[error("{}: no private key found (expected PEM \"PRIVATE KEY\", \"EC PRIVATE KEY\" or \"RSA PRIVATE KEY\")", path.display())]
    NoKey { path: PathBuf },
    #[error("{}: unsupported private key: {message}", path.display())]
    BadKey { path: PathBuf, message: String },
    #[error("{} is not the private key of {}", key.display(), cert.display())]
    Mismatch { cert: PathBuf, key: PathBuf },
}

impl CertificateError {
    /// The file to point the operator at.
    pub fn file(&self) -> PemFile {
        match self {
            CertificateError::Read { file, .. } | CertificateError::BadPem { file, .. } => *file,
            CertificateError::NoCertificate { .. }
            | CertificateError::BadCertificate { .. }
            | CertificateError::NoNames { .. } => PemFile::Cert,
            CertificateError::NoKey { .. }
            | CertificateError::BadKey { .. }
            | CertificateError::Mismatch { .. } => PemFile::Key,
        }
    }
}

/// Reads a certificate chain (leaf first) and its private key, and checks that they belong together.
pub fn load_pair(cert: &Path, key: &Path) -> Result<ServingCertificate, CertificateError> {
    let read = |file, path: &Path| {
        std::fs::read(path).map_err(|source| CertificateError::Read {
            file,
            path: path.to_path_buf(),
            source,
        })
    };
    let cert_pem = read(PemFile::Cert, cert)?;
    let key_pem = read(PemFile::Key, key)?;
    parse_pair(&cert_pem, &key_pem, cert, key)
}

/// `load_pair` for PEM already read: `cert` and `key` say where it came from, for errors.
pub fn parse_pair(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert: &Path,
    key: &Path,
) -> Result<ServingCertificate, CertificateError> {
    let files_digest = pair_digest(cert_pem, key_pem);
    let chain = parse_chain(cert_pem, cert)?;
    let leaf = chain
        .first()
        .ok_or_else(|| CertificateError::NoCertificate {
            path: cert.to_path_buf(),
        })?;
    let facts = leaf_facts(leaf, cert)?;

    let private = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => CertificateError::NoKey {
            path: key.to_path_buf(),
        },
        other => CertificateError::BadPem {
            file: PemFile::Key,
            path: key.to_path_buf(),
            message: other.to_string(),
        },
    })?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&private).map_err(|e| {
        CertificateError::BadKey {
            path: key.to_path_buf(),
            message: e.to_string(),
        }
    })?;
    let certified = CertifiedKey::new(chain, signer);
    match certified.keys_match() {
        // `Unknown`: the key type cannot show its public half; the handshake will tell.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err(CertificateError::Mismatch {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
            })
        }
    }
    Ok(ServingCertificate {
        key: Arc::new(certified),
        names: facts.names,
        not_before: facts.not_before,
        not_after: facts.not_after,
        fingerprint: facts.fingerprint,
        files_digest,
        issuer: facts.issuer,
    })
}

/// Reads CA certificates (PEM, one or more) to verify upstreams with; returns them as DER.
pub fn load_ca_bundle(path: &Path) -> Result<(Vec<Vec<u8>>, u64), CertificateError> {
    let pem = std::fs::read(path).map_err(|source| CertificateError::Read {
        file: PemFile::Cert,
        path: path.to_path_buf(),
        source,
    })?;
    let chain = parse_chain(&pem, path)?;
    if chain.is_empty() {
        return Err(CertificateError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    for der in &chain {
        x509_parser::parse_x509_certificate(der).map_err(|e| CertificateError::BadCertificate {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    }
    Ok((
        chain.into_iter().map(|c| c.to_vec()).collect(),
        file_digest(&pem),
    ))
}

/// Whether `pem` holds at least one certificate that parses as PEM.
pub fn contains_certificate(pem: &[u8]) -> bool {
    CertificateDer::pem_slice_iter(pem).any(|c| c.is_ok())
}

/// The digest `ServingCertificate::files_digest` holds, for the bytes on disk now.
pub fn pair_digest(cert_pem: &[u8], key_pem: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    cert_pem.hash(&mut h);
    key_pem.hash(&mut h);
    h.finish()
}

pub fn file_digest(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

fn parse_chain(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, CertificateError> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertificateError::BadPem {
            file: PemFile::Cert,
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

struct LeafFacts {
    names: Vec<String>,
    not_before: i64,
    not_after: i64,
    fingerprint: String,
    issuer: String,
}

fn leaf_facts(leaf: &CertificateDer<'_>, path: &Path) -> Result<LeafFacts, CertificateError> {
    let bad = |message: String| CertificateError::BadCertificate {
        path: path.to_path_buf(),
        message,
    };
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf).map_err(|e| bad(e.to_string()))?;
    let san = parsed
        .subject_alternative_name()
        .map_err(|e| bad(format!("subjectAltName: {e}")))?;
    let names: Vec<String> = san
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(name) => Some(name.trim_end_matches('.').to_lowercase()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        return Err(CertificateError::NoNames {
            path: path.to_path_buf(),
        });
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, leaf);
    let fingerprint = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    let issuer = parsed
        .issuer()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map_or_else(|| parsed.issuer().to_string(), str::to_owned);
    Ok(LeafFacts {
        issuer,
        names,
        not_before: parsed.validity().not_before.timestamp(),
        not_after: parsed.validity().not_after.timestamp(),
        fingerprint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::dev::{issue_leaf, DevCa};

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_matching_pair_loads_with_its_names_and_dates() {
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::new("test CA").unwrap();
        let leaf = issue_leaf(&ca, &["*.yourapp.test", "yourapp.test"]).unwrap();
        let cert = write(dir.path(), "c.pem", &leaf.cert_pem);
        let key = write(dir.path(), "c.key", &leaf.key_pem);
        let loaded = load_pair(&cert, &key).unwrap();
        assert_eq!(loaded.names, ["*.yourapp.test", "yourapp.test"]);
        assert!(loaded.not_after > loaded.not_before);
        assert_eq!(loaded.fingerprint.len(), 64);
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::new("test CA").unwrap();
        let one = issue_leaf(&ca, &["one.test"]).unwrap();
        let two = issue_leaf(&ca, &["two.test"]).unwrap();
        let cert = write(dir.path(), "one.pem", &one.cert_pem);
        let key = write(dir.path(), "two.key", &two.key_pem);
        let err = load_pair(&cert, &key).unwrap_err();
        assert!(matches!(err, CertificateError::Mismatch { .. }), "{err}");
        assert_eq!(err.file(), PemFile::Key);
    }

    #[test]
    fn garbage_and_missing_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::new("test CA").unwrap();
        let leaf = issue_leaf(&ca, &["one.test"]).unwrap();
        let key = write(dir.path(), "k.pem", &leaf.key_pem);
        let junk = write(dir.path(), "junk.pem", "not a certificate\n");
        let err = load_pair(&junk, &key).unwrap_err();
        assert!(
            matches!(err, CertificateError::NoCertificate { .. }),
            "{err}"
        );
        let cert = write(dir.path(), "c.pem", &leaf.cert_pem);
        let err = load_pair(&cert, &dir.path().join("absent.key")).unwrap_err();
        assert_eq!(err.file(), PemFile::Key);
        assert!(err.to_string().contains("absent.key"), "{err}");
        let err = load_pair(&cert, &cert).unwrap_err();
        assert!(matches!(err, CertificateError::NoKey { .. }), "{err}");
    }
}
