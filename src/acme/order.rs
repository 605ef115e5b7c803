//! One ACME order for one name, with instant-acme: new order, publish each authorization's
//! challenge (of the first type in `[acme] challenges` the CA offers), ready, wait for validation,
//! finalize with a fresh key's CSR, download the chain. Whatever was published is withdrawn,
//! however the order ends.

use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewOrder, OrderStatus, RetryPolicy,
};
use rcgen::{CertificateParams, DistinguishedName, KeyPair};

use super::vault::{Pending, StoredPair};
use crate::config::model::AcmeChallenge;

/// How long the CA gets to validate, and then to issue.
const VALIDATION_TIMEOUT: Duration = Duration::from_secs(60);
const ISSUE_TIMEOUT: Duration = Duration::from_secs(60);

/// Where challenges are put up for the listeners (and, in a fleet, for every instance).
#[async_trait::async_trait]
pub trait Publish: Send + Sync {
    async fn publish(&self, pending: &Pending) -> Result<(), String>;
    async fn withdraw(&self, pending: &Pending);
}

/// Orders a certificate for `name`. The error is the operator's explanation (the CA's problem
/// document where it sent one).
pub async fn order(
    account: &Account,
    name: &str,
    kinds: &[AcmeChallenge],
    publish: &dyn Publish,
) -> Result<StoredPair, String> {
    let identifiers = [Identifier::Dns(name.to_owned())];
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(|e| format!("new order: {e}"))?;
    let mut published = Vec::new();
    let prepared = prepare(&mut order, name, kinds, publish, &mut published).await;
    let ready = match prepared {
        Ok(()) => order
            .poll_ready(&retries(VALIDATION_TIMEOUT))
            .await
            .map_err(|e| format!("waiting for validation: {e}")),
        Err(e) => Err(e),
    };
    for pending in &published {
        publish.withdraw(pending).await;
    }
    match ready? {
        OrderStatus::Ready => {}
        OrderStatus::Invalid => return Err(invalid_reason(&mut order, name).await),
        other => {
            return Err(format!(
                "the order is {other:?} after validation, not ready"
            ))
        }
    }
    let key = KeyPair::generate().map_err(|e| format!("key: {e}"))?;
    let mut params =
        CertificateParams::new(vec![name.to_owned()]).map_err(|e| format!("CSR: {e}"))?;
    params.distinguished_name = DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .map_err(|e| format!("CSR: {e}"))?;
    order
        .finalize_csr(csr.der())
        .await
        .map_err(|e| format!("finalize: {e}"))?;
    let chain = order
        .poll_certificate(&retries(ISSUE_TIMEOUT))
        .await
        .map_err(|e| format!("downloading the certificate: {e}"))?;
    Ok(StoredPair {
        cert: chain,
        key: key.serialize_pem(),
    })
}

async fn prepare(
    order: &mut instant_acme::Order,
    name: &str,
    kinds: &[AcmeChallenge],
    publish: &dyn Publish,
    published: &mut Vec<Pending>,
) -> Result<(), String> {
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization.map_err(|e| format!("authorization: {e}"))?;
        match authorization.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => return Err(format!("the CA's authorization for {name} is {other:?}")),
        }
        let offered: Vec<ChallengeType> = authorization
            .challenges
            .iter()
            .map(|c| c.r#type.clone())
            .collect();
        let Some((kind, wire)) = kinds
            .iter()
            .map(|k| (*k, wire_type(*k)))
            .find(|(_, wire)| offered.contains(wire))
        else {
            let offered: Vec<String> = offered.iter().map(|t| format!("{t:?}")).collect();
            return Err(format!(
                "the CA offers none of the configured challenges for {name} (it offers {})",
                offered.join(", ")
            ));
        };
        let mut challenge = authorization
            .challenge(wire)
            .ok_or_else(|| format!("{} challenge vanished", kind.as_str()))?;
        let key_authorization = challenge.key_authorization();
        let pending = match kind {
            AcmeChallenge::Http01 => Pending::Http01 {
                token: challenge.token.clone(),
                key_authorization: key_authorization.as_str().to_owned(),
            },
            AcmeChallenge::TlsAlpn01 => Pending::TlsAlpn01 {
                name: name.to_owned(),
                digest: key_authorization.digest().as_ref().to_vec(),
            },
        };
        publish.publish(&pending).await?;
        published.push(pending);
        challenge
            .set_ready()
            .await
            .map_err(|e| format!("{} ready: {e}", kind.as_str()))?;
    }
    Ok(())
}

/// Why the CA found the order invalid: its challenge's error, where it says.
async fn invalid_reason(order: &mut instant_acme::Order, name: &str) -> String {
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authorization)) = authorizations.next().await {
        if let Ok(state) = authorization.refresh().await {
            if let Some(error) = state.challenges.iter().find_map(|c| c.error.as_ref()) {
                return format!("the CA could not validate {name}: {error}");
            }
        }
    }
    format!("the CA could not validate {name}")
}

fn wire_type(kind: AcmeChallenge) -> ChallengeType {
    match kind {
        AcmeChallenge::Http01 => ChallengeType::Http01,
        AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
    }
}

fn retries(timeout: Duration) -> RetryPolicy {
    RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .backoff(1.5)
        .timeout(timeout)
}
