//! JWKS documents (RFC 7517): reading them, and keeping the keys of a `jwks_url` fresh.
//!
//! A `jwks_file` is read with the config and reloads with it (the watcher follows the file). A
//! `jwks_url` is fetched in the background: at start, every `jwks_refresh_seconds`, and soon after a
//! token names a `kid` nobody knows (the issuer may have rotated its keys). Requests only read the
//! last good set; a failed fetch keeps it.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::config::model::JwtKey;

/// The verification keys of a JWKS document. Encryption keys (`"use": "enc"`) are skipped; a key
/// without `alg` is bound to the usual algorithm of its type (RS256, ES256/ES384, EdDSA, HS256).
pub fn parse_jwks(bytes: &[u8], origin: &str) -> Result<Vec<JwtKey>, String> {
    let set: JwkSet =
        serde_json::from_slice(bytes).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys = Vec::with_capacity(set.keys.len());
    for (i, jwk) in set.keys.iter().enumerate() {
        if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
            continue;
        }
        let named = jwk
            .common
            .key_algorithm
            .map(|a| Algorithm::from_str(&format!("{a:?}")));
        let alg = match (named, &jwk.algorithm) {
            (Some(Ok(alg)), _) => alg,
            (Some(Err(_)), _) => continue,
            (None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
            (None, AlgorithmParameters::EllipticCurve(p)) => match p.curve {
                EllipticCurve::P256 => Algorithm::ES256,
                EllipticCurve::P384 => Algorithm::ES384,
                _ => continue,
            },
            (None, AlgorithmParameters::OctetKeyPair(_)) => Algorithm::EdDSA,
            (None, AlgorithmParameters::OctetKey(_)) => Algorithm::HS256,
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("keys[{i}]: {e}"))?;
        let mut digest = DefaultHasher::new();
        format!("{jwk:?}").hash(&mut digest);
        keys.push(JwtKey {
            kid: jwk.common.key_id.clone(),
            alg,
            origin: origin.to_owned(),
            digest: digest.finish(),
            key: Arc::new(key),
        });
    }
    Ok(keys)
}

/// The keys of one `jwks_url`, shared by every routing table that names the same URL (so a reload
/// does not drop them) and by the background refresher.
pub struct RemoteKeys {
    url: String,
    refresh: Duration,
    keys: ArcSwap<Vec<JwtKey>>,
    /// A token named an unknown `kid`: fetch again without waiting for `refresh`.
    wanted: AtomicBool,
    /// Unix seconds of the last fetch attempt and the last success (0: never).
    attempted: AtomicI64,
    fetched: AtomicI64,
    /// Bumped whenever the key set changes: tokens cached with an older generation are verified
    /// again (a key that left the JWKS verifies nothing more).
    generation: AtomicU64,
}

/// However often unknown kids arrive, the URL is fetched at most this often.
pub const MIN_REFETCH: Duration = Duration::from_secs(5);

impl RemoteKeys {
    pub fn new(url: &str, refresh: Duration) -> RemoteKeys {
        RemoteKeys {
            url: url.to_owned(),
            refresh,
            keys: ArcSwap::from_pointee(Vec::new()),
            wanted: AtomicBool::new(false),
            attempted: AtomicI64::new(0),
            fetched: AtomicI64::new(0),
            generation: AtomicU64::new(0),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn refresh(&self) -> Duration {
        self.refresh
    }

    pub fn keys(&self) -> arc_swap::Guard<Arc<Vec<JwtKey>>> {
        self.keys.load()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Swaps in a new key set; a set that differs from the one in use moves the generation on.
    pub fn replace_keys(&self, keys: Vec<JwtKey>) {
        let changed = **self.keys.load() != keys;
        self.keys.store(Arc::new(keys));
        if changed {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    pub fn want_refresh(&self) {
        self.wanted.store(true, Ordering::Relaxed);
    }

    /// Unix seconds of the last successful fetch, if any.
    pub fn fetched_at(&self) -> Option<i64> {
        Some(self.fetched.load(Ordering::Relaxed)).filter(|&t| t > 0)
    }

    /// Whether a fetch is due at `now` (Unix seconds): never fetched, `refresh` elapsed, or an
    /// unknown kid seen — but never twice within `MIN_REFETCH`, so bad tokens cannot make the
    /// gateway hammer the issuer.
    pub fn due(&self, now: i64) -> bool {
        let attempted = self.attempted.load(Ordering::Relaxed);
        if attempted == 0 {
            return true;
        }
        let since = now.saturating_sub(attempted);
        let fetched = self.fetched.load(Ordering::Relaxed);
        let stale = fetched == 0 || now.saturating_sub(fetched) >= self.refresh.as_secs() as i64;
        let wanted = self.wanted.load(Ordering::Relaxed) || stale;
        wanted && since >= MIN_REFETCH.as_secs() as i64
    }

    /// Fetches the document and swaps its keys in; on failure, keeps the keys it had.
    pub async fn fetch(&self, client: &reqwest::Client, now: i64) -> Result<usize, String> {
        self.attempted.store(now, Ordering::Relaxed);
        self.wanted.store(false, Ordering::Relaxed);
        let response = client
            .get(&self.url)
            .send()
            .await
            .map_err(|e| format!("fetching {}: {e}", self.url))?;
        if !response.status().is_success() {
            return Err(format!(
                "fetching {}: status {}",
                self.url,
                response.status()
            ));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("reading {}: {e}", self.url))?;
        let keys = parse_jwks(&body, "jwks_url")?;
        let count = keys.len();
        self.replace_keys(keys);
        self.fetched.store(now, Ordering::Relaxed);
        Ok(count)
    }
}

/// How often the refresher looks whether a fetch is due.
const TICK: Duration = Duration::from_secs(1);
/// A JWKS endpoint that does not answer in this time is tried again later.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The background task that keeps the current table's `jwks_url` keys fresh. `current` gives the
/// keys of the table in use (a reload may change or remove the URL).
pub struct JwksRefresher<F> {
    current: F,
}

impl<F: Fn() -> Option<Arc<RemoteKeys>> + Send + Sync> JwksRefresher<F> {
    pub fn new(current: F) -> Self {
        JwksRefresher { current }
    }

    async fn tick(&self, client: &reqwest::Client) {
        let Some(remote) = (self.current)() else {
            return;
        };
        let now = chrono::Utc::now().timestamp();
        if !remote.due(now) {
            return;
        }
        match remote.fetch(client, now).await {
            Ok(count) => tracing::info!(url = remote.url(), keys = count, "JWKS fetched"),
            Err(error) => {
                tracing::warn!(url = remote.url(), %error, "JWKS fetch failed; keeping the keys we had")
            }
        }
    }
}

#[async_trait::async_trait]
impl<F: Fn() -> Option<Arc<RemoteKeys>> + Send + Sync>
    pingora::services::background::BackgroundService for JwksRefresher<F>
{
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let client = match reqwest::Client::builder().timeout(FETCH_TIMEOUT).build() {
            Ok(c) => c,
            Err(error) => {
                tracing::error!(%error, "cannot build the JWKS client; jwks_url keys will not be fetched");
                return;
            }
        };
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => self.tick(&client).await,
                _ = shutdown.changed() => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verification_keys_are_read_and_encryption_keys_skipped() {
        let doc = br#"{"keys": [
            {"kty": "oct", "kid": "h1", "k": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"},
            {"kty": "oct", "kid": "h2", "alg": "HS512", "k": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"},
            {"kty": "oct", "kid": "e1", "use": "enc", "k": "MDEy"},
            {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
        ]}"#;
        let keys = parse_jwks(doc, "jwks_file").unwrap();
        let got: Vec<_> = keys.iter().map(|k| (k.kid.as_deref(), k.alg)).collect();
        assert_eq!(
            got,
            [
                (Some("h1"), Algorithm::HS256),
                (Some("h2"), Algorithm::HS512),
                (Some("ed"), Algorithm::EdDSA)
            ]
        );
        assert!(parse_jwks(b"{}", "x").is_err());
        assert!(parse_jwks(b"not json", "x").is_err());
    }

    #[test]
    fn fetches_are_spaced_out() {
        let r = RemoteKeys::new("http://127.0.0.1:1/jwks", Duration::from_secs(300));
        assert!(r.due(1000));
        r.attempted.store(1000, Ordering::Relaxed);
        r.fetched.store(1000, Ordering::Relaxed);
        assert!(!r.due(1001));
        r.want_refresh();
        assert!(!r.due(1002), "within MIN_REFETCH");
        assert!(r.due(1005));
        r.wanted.store(false, Ordering::Relaxed);
        assert!(!r.due(1200));
        assert!(r.due(1300), "refresh elapsed");
    }
}
