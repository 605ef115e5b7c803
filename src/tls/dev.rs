//! A development CA and certificates signed by it, for local use only (`tenantgate certs dev` and
//! `tenantgate demo`): what an operator needs to try HTTPS on their machine without a public CA.
//! Never for production: the CA's key lies beside the certificates, unprotected.

use std::path::{Path, PathBuf};

use chrono::{Datelike, Duration, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Leaves live at most this long, the limit browsers accept for publicly trusted certificates.
const LEAF_DAYS: i64 = 397;
const CA_DAYS: i64 = 3650;

pub const CA_CERT_FILE: &str = "dev-ca.pem";
/// The name of the CA `tenantgate certs dev` makes: how `certs list` tells dev certificates.
pub const DEV_CA_NAME: &str = "tenantgate development CA";
pub const CA_KEY_FILE: &str = "dev-ca.key";

#[derive(Debug, thiserror::Error)]
pub enum DevCertError {
    #[error("cannot create the certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A CA that signs development certificates.
pub struct DevCa {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate (PEM, leaf then CA) and its private key (PKCS#8 PEM).
pub struct IssuedPair {
    pub cert_pem: String,
    pub key_pem: String,
}

impl DevCa {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Result<DevCa, DevCertError> {
        let params = ca_params(name)?;
        let key = KeyPair::generate()?;
        let cert_pem = params.self_signed(&key)?.pem();
        Ok(DevCa {
            cert_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA kept in `dir` (`dev-ca.pem`, `dev-ca.key`), made there first if it is not.
    pub fn open_or_create(dir: &Path) -> Result<(DevCa, bool), DevCertError> {
        let (cert_path, key_path) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
        if cert_path.exists() && key_path.exists() {
            let cert_pem = read(&cert_path)?;
            let key = KeyPair::from_pem(&read(&key_path)?)?;
            // What signs is the CA's name and key: the same name and key as the certificate on
            // disk make leaves that it verifies.
            let name = ca_name(&cert_pem).ok_or_else(|| DevCertError::Io {
                path: cert_path.clone(),
                source: std::io::Error::other("not a CA certificate with a common name"),
            })?;
            let issuer = Issuer::new(ca_params(&name)?, key);
            return Ok((DevCa { cert_pem, issuer }, false));
        }
        let ca = DevCa::new(DEV_CA_NAME)?;
        write(&cert_path, &ca.cert_pem, false)?;
        write(&key_path, &ca.issuer.key().serialize_pem(), true)?;
        Ok((ca, true))
    }

    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }
}

fn ca_params(name: &str) -> Result<CertificateParams, DevCertError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, CA_DAYS);
    Ok(params)
}

/// The common name of the first certificate in `pem`.
fn ca_name(pem: &str) -> Option<String> {
    use rustls_pki_types::pem::PemObject as _;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    let name = cert.subject().iter_common_name().next()?.as_str().ok()?;
    Some(name.to_owned())
}

/// A server certificate for `names` (DNS names, wildcards allowed), signed by `ca`.
pub fn issue_leaf(ca: &DevCa, names: &[&str]) -> Result<IssuedPair, DevCertError> {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
    if let Some(first) = names.first() {
        params.distinguished_name.push(DnType::CommonName, *first);
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    set_validity(&mut params, LEAF_DAYS);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca.issuer)?;
    Ok(IssuedPair {
        cert_pem: format!("{}{}", cert.pem(), ca.cert_pem),
        key_pem: key.serialize_pem(),
    })
}

/// Writes `pair` to `cert` and `key` (the key readable by its owner only).
pub fn write_pair(pair: &IssuedPair, cert: &Path, key: &Path) -> Result<(), DevCertError> {
    write(cert, &pair.cert_pem, false)?;
    write(key, &pair.key_pem, true)
}

fn set_validity(params: &mut CertificateParams, days: i64) {
    // From yesterday: a clock a little behind must not see a certificate from the future.
    let from = Utc::now().date_naive() - Duration::days(1);
    let to = from + Duration::days(days);
    let ymd = |d: chrono::NaiveDate| {
        rcgen::date_time_ymd(
            d.year(),
            u8::try_from(d.month()).unwrap_or(1),
            u8::try_from(d.day()).unwrap_or(1),
        )
    };
    params.not_before = ymd(from);
    params.not_after = ymd(to);
}

fn read(path: &Path) -> Result<String, DevCertError> {
    std::fs::read_to_string(path).map_err(|source| DevCertError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn write(path: &Path, text: &str, private: bool) -> Result<(), DevCertError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |source| DevCertError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)
}
