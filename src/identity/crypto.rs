//! Signature checks for `jsonwebtoken` through ring, the crypto pingora-rustls already links.
//!
//! jsonwebtoken's own RustCrypto backend took 137 µs per RS256 check (several whole proxied
//! requests); ring's takes a fraction of that. RSA, RSA-PSS, ECDSA and EdDSA verification go to ring;
//! HMAC and all signing (which the gateway never does on the request path) stay with RustCrypto, so
//! no second TLS stack (aws-lc) is linked.

use jsonwebtoken::crypto::{rust_crypto, CryptoProvider, JwkUtils, JwtVerifier};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::signature;
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};
use ring::signature::{self as sig, RsaPublicKeyComponents, UnparsedPublicKey};

static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: rust_crypto::DEFAULT_PROVIDER.signer_factory,
    verifier_factory: verifier,
    jwk_utils: JwkUtils {
        extract_rsa_public_key_components: rust_crypto::DEFAULT_PROVIDER
            .jwk_utils
            .extract_rsa_public_key_components,
        extract_ec_public_key_coordinates: rust_crypto::DEFAULT_PROVIDER
            .jwk_utils
            .extract_ec_public_key_coordinates,
        compute_digest: rust_crypto::DEFAULT_PROVIDER.jwk_utils.compute_digest,
    },
};

/// Makes ring's verification the process's. Called before any token is checked (a verifier's
/// construction calls it); a no-op after the first call. If some code used jsonwebtoken before it
/// ran, that code's choice (RustCrypto, the same results, slower) stays.
pub fn install() {
    let _ = PROVIDER.install_default();
}

/// What ring verifies a key with, by the token's algorithm; `None`: RustCrypto's (HMAC).
fn ring_algorithm(alg: Algorithm) -> Option<RingAlgorithm> {
    Some(match alg {
        Algorithm::RS256 => RingAlgorithm::Rsa(&sig::RSA_PKCS1_2048_8192_SHA256),
        Algorithm::RS384 => RingAlgorithm::Rsa(&sig::RSA_PKCS1_2048_8192_SHA384),
        Algorithm::RS512 => RingAlgorithm::Rsa(&sig::RSA_PKCS1_2048_8192_SHA512),
        Algorithm::PS256 => RingAlgorithm::Rsa(&sig::RSA_PSS_2048_8192_SHA256),
        Algorithm::PS384 => RingAlgorithm::Rsa(&sig::RSA_PSS_2048_8192_SHA384),
        Algorithm::PS512 => RingAlgorithm::Rsa(&sig::RSA_PSS_2048_8192_SHA512),
        Algorithm::ES256 => RingAlgorithm::Other(&sig::ECDSA_P256_SHA256_FIXED),
        Algorithm::ES384 => RingAlgorithm::Other(&sig::ECDSA_P384_SHA384_FIXED),
        Algorithm::EdDSA => RingAlgorithm::Other(&sig::ED25519),
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => return None,
    })
}

#[derive(Clone, Copy)]
enum RingAlgorithm {
    Rsa(&'static sig::RsaParameters),
    /// ECDSA and EdDSA: the key is the public point as jsonwebtoken holds it.
    Other(&'static dyn sig::VerificationAlgorithm),
}

fn verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    let Some(ring) = ring_algorithm(*alg) else {
        return (rust_crypto::DEFAULT_PROVIDER.verifier_factory)(alg, key);
    };
    if key.family() != alg.family() {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    Ok(Box::new(RingVerifier {
        alg: *alg,
        ring,
        key: key.clone(),
    }))
}

struct RingVerifier {
    alg: Algorithm,
    ring: RingAlgorithm,
    key: DecodingKey,
}

impl signature::Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        let checked = match (self.ring, self.key.kind()) {
            (RingAlgorithm::Rsa(params), DecodingKeyKind::SecretOrDer(der)) => {
                UnparsedPublicKey::new(params, der).verify(msg, signature)
            }
            (RingAlgorithm::Rsa(params), DecodingKeyKind::RsaModulusExponent { n, e }) => {
                RsaPublicKeyComponents { n, e }.verify(params, msg, signature)
            }
            (RingAlgorithm::Other(alg), DecodingKeyKind::SecretOrDer(point)) => {
                UnparsedPublicKey::new(alg, point).verify(msg, signature)
            }
            (RingAlgorithm::Other(_), DecodingKeyKind::RsaModulusExponent { .. }) => {
                return Err(signature::Error::new());
            }
        };
        checked.map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ED25519};
    use serde_json::json;

    const RSA_PRIVATE: &str = include_str!("../../tests/fixtures/jwt/rs256-test-only.key");
    const RSA_PUBLIC: &str = include_str!("../../tests/fixtures/jwt/rs256-test-only.pub.pem");

    fn keys(alg: Algorithm) -> (EncodingKey, DecodingKey) {
        match alg.family() {
            jsonwebtoken::AlgorithmFamily::Rsa => (
                EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
                DecodingKey::from_rsa_pem(RSA_PUBLIC.as_bytes()).unwrap(),
            ),
            jsonwebtoken::AlgorithmFamily::Ec => {
                let pair = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
                (
                    EncodingKey::from_ec_der(&pair.serialize_der()),
                    DecodingKey::from_ec_pem(pair.public_key_pem().as_bytes()).unwrap(),
                )
            }
            _ => {
                let pair = KeyPair::generate_for(&PKCS_ED25519).unwrap();
                (
                    EncodingKey::from_ed_der(&pair.serialize_der()),
                    DecodingKey::from_ed_pem(pair.public_key_pem().as_bytes()).unwrap(),
                )
            }
        }
    }

    /// Each family ring takes over verifies what RustCrypto signed, and refuses a changed signature.
    #[test]
    fn ring_verifies_rsa_ecdsa_and_eddsa_tokens() {
        install();
        let claims = json!({"sub": "u", "exp": 4_000_000_000u64});
        for alg in [
            Algorithm::RS256,
            Algorithm::PS256,
            Algorithm::ES256,
            Algorithm::EdDSA,
        ] {
            let (encoding, decoding) = keys(alg);
            let token = encode(&Header::new(alg), &claims, &encoding).unwrap();
            // Straight through this module's verifier, whatever the process default is.
            let check = |t: &str, key: &DecodingKey| {
                let (message, signature) = t.rsplit_once('.').unwrap();
                let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
                verifier(&alg, key).and_then(|v| {
                    signature::Verifier::verify(&*v, message.as_bytes(), &signature)
                        .map_err(|_| ErrorKind::InvalidSignature.into())
                })
            };
            assert!(check(&token, &decoding).is_ok(), "{alg:?}");
            let (head, signature) = token.rsplit_once('.').unwrap();
            let flipped = if signature.starts_with('A') { "B" } else { "A" };
            let forged = format!("{head}.{flipped}{}", &signature[1..]);
            assert!(
                check(&forged, &decoding).is_err(),
                "{alg:?} accepted a changed signature"
            );
            // An RSA key never verifies an ECDSA token, and so on.
            let other = keys(match alg.family() {
                jsonwebtoken::AlgorithmFamily::Rsa => Algorithm::ES256,
                _ => Algorithm::RS256,
            })
            .1;
            assert!(
                check(&token, &other).is_err(),
                "{alg:?} verified with another family's key"
            );
        }
    }
}
