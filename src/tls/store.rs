//! Which certificate a handshake gets, by the name the client asked for (SNI).

use std::collections::HashMap;
use std::sync::Arc;

use foldhash::fast::RandomState;
use rustls::sign::CertifiedKey;

use super::certificate::ServingCertificate;

/// The certificates of one routing table, indexed by the names they serve. Built with the table and
/// swapped with it, so a reload changes routes and certificates at the same instant.
#[derive(Debug, Default)]
pub struct CertificateStore {
    exact: HashMap<Box<str>, Arc<CertifiedKey>, RandomState>,
    /// `*.example.com` under `example.com`: a wildcard covers exactly one label.
    wildcard: HashMap<Box<str>, Arc<CertifiedKey>, RandomState>,
    default: Option<Arc<CertifiedKey>>,
}

impl CertificateStore {
    /// Indexes `certificates` (each with whether it is the default). Validation has made sure no
    /// name is served twice; were one, the first would win.
    pub fn new<'a>(
        certificates: impl IntoIterator<Item = (&'a ServingCertificate, bool)>,
    ) -> CertificateStore {
        let mut store = CertificateStore::default();
        for (cert, is_default) in certificates {
            for name in &cert.names {
                let (map, key) = match name.strip_prefix("*.") {
                    Some(parent) => (&mut store.wildcard, parent),
                    None => (&mut store.exact, name.as_str()),
                };
                map.entry(Box::from(key))
                    .or_insert_with(|| Arc::clone(&cert.key));
            }
            if is_default && store.default.is_none() {
                store.default = Some(Arc::clone(&cert.key));
            }
        }
        store
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty() && self.default.is_none()
    }

    /// The certificate for `server_name` (lowercase, as rustls hands it over): an exact name first,
    /// then a wildcard one label up, then the default. `None` fails the handshake.
    pub fn select(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        self.select_with(server_name, |_| None)
    }

    /// As `select`, with `between` asked after the operators' files and before the default: where
    /// certificates issued at run time (ACME) come in, so a file always wins over them.
    pub fn select_with(
        &self,
        server_name: Option<&str>,
        between: impl FnOnce(&str) -> Option<Arc<CertifiedKey>>,
    ) -> Option<Arc<CertifiedKey>> {
        let Some(name) = server_name else {
            return self.default.clone();
        };
        if let Some(named) = self.named(name) {
            return Some(Arc::clone(named));
        }
        between(name).or_else(|| self.default.clone())
    }

    /// Whether a file certificate serves `name` itself (exactly or by wildcard), not as default.
    pub fn covers(&self, name: &str) -> bool {
        self.named(name).is_some()
    }

    fn named(&self, name: &str) -> Option<&Arc<CertifiedKey>> {
        self.exact.get(name).or_else(|| {
            let (_, parent) = name.split_once('.')?;
            self.wildcard.get(parent)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::certificate::load_pair;
    use crate::tls::dev::{issue_leaf, write_pair, DevCa};

    fn cert(ca: &DevCa, dir: &std::path::Path, names: &[&str]) -> ServingCertificate {
        let pair = issue_leaf(ca, names).unwrap();
        let (c, k) = (
            dir.join(format!("{}.pem", names[0])),
            dir.join(format!("{}.key", names[0])),
        );
        write_pair(&pair, &c, &k).unwrap();
        load_pair(&c, &k).unwrap()
    }

    #[test]
    fn exact_names_win_over_wildcards_and_the_default_catches_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::new("test").unwrap();
        let wildcard = cert(&ca, dir.path(), &["*.yourapp.test", "yourapp.test"]);
        let custom = cert(&ca, dir.path(), &["acme.yourapp.test", "shop.acme.test"]);
        let store = CertificateStore::new([(&wildcard, true), (&custom, false)]);
        let is = |name: Option<&str>, want: &ServingCertificate| {
            let got = store.select(name).expect("a certificate");
            assert!(Arc::ptr_eq(&got, &want.key), "{name:?}");
        };
        is(Some("acme.yourapp.test"), &custom);
        is(Some("shop.acme.test"), &custom);
        is(Some("globex.yourapp.test"), &wildcard);
        is(Some("yourapp.test"), &wildcard);
        // Two labels down is not covered by the wildcard: the default (also the wildcard here).
        is(Some("a.b.yourapp.test"), &wildcard);
        is(None, &wildcard);
    }

    #[test]
    fn without_a_default_an_unknown_name_gets_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::new("test").unwrap();
        let wildcard = cert(&ca, dir.path(), &["*.yourapp.test"]);
        let store = CertificateStore::new([(&wildcard, false)]);
        assert!(store.select(Some("acme.yourapp.test")).is_some());
        assert!(store.select(Some("a.b.yourapp.test")).is_none());
        assert!(store.select(Some("other.test")).is_none());
        assert!(store.select(None).is_none());
    }
}
