//! `[acme]`: the CA that certificates for custom domains come from, and the limits on ordering.

use std::path::Path;
use std::time::Duration;

use super::Validator;
use crate::config::error::{ConfigError, KeyPath};
use crate::config::file::{AcmeFile, StringOrList};
use crate::config::model::{
    AcmeChallenge, AcmeSettings, GatewaySettings, DEFAULT_ACME_MAX_PER_HOUR,
    DEFAULT_ACME_MAX_PER_TENANT_PER_DAY, DEFAULT_ACME_RETRY_AFTER_SECONDS,
    DEFAULT_ON_DEMAND_WAIT_MS, DEFAULT_RENEW_BEFORE_DAYS, LETS_ENCRYPT_DIRECTORY,
};

/// A handshake that waits longer than this for an on-demand order has usually been given up by
/// its client.
const MAX_ON_DEMAND_WAIT_MS: u64 = 30_000;

impl Validator {
    pub(super) fn acme(
        &mut self,
        a: Option<&AcmeFile>,
        gateway: &GatewaySettings,
        folder: &Path,
    ) -> Option<AcmeSettings> {
        let a = a?;
        let at = KeyPath::root().key("acme");
        let before = self.errors.len();
        let directory = a
            .directory
            .clone()
            .unwrap_or_else(|| LETS_ENCRYPT_DIRECTORY.to_owned());
        if !directory.starts_with("https://") || directory.len() <= "https://".len() {
            self.errors.push(ConfigError::at_value(
                at.key("directory"),
                format!("{directory:?}: an ACME directory is an https:// URL (Let's Encrypt: {LETS_ENCRYPT_DIRECTORY})"),
            ));
        }
        let directory_ca = a.directory_ca.as_ref().and_then(|label| {
            let path = folder.join(label);
            match std::fs::read(&path) {
                Ok(pem) if crate::tls::certificate::contains_certificate(&pem) => {
                    Some((label.clone(), path))
                }
                Ok(_) => {
                    self.errors.push(ConfigError::at_value(
                        at.key("directory_ca"),
                        format!("{}: no PEM certificate in it", path.display()),
                    ));
                    None
                }
                Err(e) => {
                    self.errors.push(ConfigError::at_value(
                        at.key("directory_ca"),
                        format!("cannot read {}: {e}", path.display()),
                    ));
                    None
                }
            }
        });
        let contact = match &a.contact {
            None => Vec::new(),
            Some(StringOrList::One(c)) => vec![c.clone()],
            Some(StringOrList::Many(list)) => list.clone(),
        };
        for (i, c) in contact.iter().enumerate() {
            let ok = c
                .strip_prefix("mailto:")
                .is_some_and(|address| address.contains('@') && !address.contains(' '));
            if !ok {
                let key = match &a.contact {
                    Some(StringOrList::Many(_)) => at.key("contact").index(i),
                    _ => at.key("contact"),
                };
                self.errors.push(ConfigError::at_value(
                    key,
                    format!("{c:?}: a contact is \"mailto:ops@example.com\""),
                ));
            }
        }
        if gateway.https_listen.is_none() {
            self.errors.push(ConfigError::at_key(
                at.clone(),
                "ACME certificates are served on the HTTPS listener: set [gateway] https_listen",
            ));
        }
        let challenges = self.acme_challenges(a, &at, gateway);
        let renew_days = a.renew_before_days.unwrap_or(DEFAULT_RENEW_BEFORE_DAYS);
        if !(1..=365).contains(&renew_days) {
            self.errors.push(ConfigError::at_value(
                at.key("renew_before_days"),
                format!("{renew_days}: use 1 to 365 (days before expiry)"),
            ));
        }
        let wait_ms = a.on_demand_wait_ms.unwrap_or(DEFAULT_ON_DEMAND_WAIT_MS);
        if wait_ms > MAX_ON_DEMAND_WAIT_MS {
            self.errors.push(ConfigError::at_value(
                at.key("on_demand_wait_ms"),
                format!("{wait_ms} ms: a handshake waits at most {MAX_ON_DEMAND_WAIT_MS} ms"),
            ));
        }
        let mut at_least_one = |key: &str, value: Option<u32>, default: u32| {
            let n = value.unwrap_or(default);
            if n == 0 {
                self.errors.push(ConfigError::at_value(
                    at.key(key),
                    "0 would never order a certificate: use 1 or more, or remove [acme]",
                ));
            }
            n
        };
        let max_per_hour = at_least_one("max_per_hour", a.max_per_hour, DEFAULT_ACME_MAX_PER_HOUR);
        let max_per_tenant_per_day = at_least_one(
            "max_per_tenant_per_day",
            a.max_per_tenant_per_day,
            DEFAULT_ACME_MAX_PER_TENANT_PER_DAY,
        );
        let retry = a
            .retry_after_seconds
            .unwrap_or(DEFAULT_ACME_RETRY_AFTER_SECONDS);
        if retry == 0 {
            self.errors.push(ConfigError::at_value(
                at.key("retry_after_seconds"),
                "0 would hammer the CA after a failure: use 1 or more",
            ));
        }
        let state_dir = match a.state_dir.as_deref() {
            Some(dir) if dir.trim().is_empty() => {
                self.errors.push(ConfigError::at_value(
                    at.key("state_dir"),
                    "is empty: give a folder, or leave the key out for `acme` beside the config",
                ));
                folder.join("acme")
            }
            Some(dir) => folder.join(dir),
            None => folder.join("acme"),
        };
        (self.errors.len() == before).then(|| AcmeSettings {
            directory,
            directory_ca,
            contact,
            challenges,
            renew_before: Duration::from_secs(u64::from(renew_days) * 86_400),
            on_demand: a.on_demand.unwrap_or(false),
            on_demand_wait: Duration::from_millis(wait_ms),
            max_per_hour,
            max_per_tenant_per_day,
            state_dir,
            retry_after: Duration::from_secs(retry),
        })
    }

    fn acme_challenges(
        &mut self,
        a: &AcmeFile,
        at: &KeyPath,
        gateway: &GatewaySettings,
    ) -> Vec<AcmeChallenge> {
        let Some(names) = &a.challenges else {
            let mut both = vec![AcmeChallenge::Http01];
            if gateway.https_listen.is_some() {
                both.push(AcmeChallenge::TlsAlpn01);
            }
            return both;
        };
        let at = at.key("challenges");
        if names.is_empty() {
            self.errors.push(ConfigError::at_value(
                at.clone(),
                "is empty: list \"http-01\", \"tls-alpn-01\" or both",
            ));
        }
        let mut out = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let kind = match name.as_str() {
                "http-01" => AcmeChallenge::Http01,
                "tls-alpn-01" => AcmeChallenge::TlsAlpn01,
                other => {
                    self.errors.push(ConfigError::at_value(
                        at.index(i),
                        format!("{other:?}: the challenges are \"http-01\" and \"tls-alpn-01\""),
                    ));
                    continue;
                }
            };
            if out.contains(&kind) {
                self.errors.push(ConfigError::at_value(
                    at.index(i),
                    format!("{name:?} is listed twice"),
                ));
            } else {
                out.push(kind);
            }
        }
        out
    }
}
