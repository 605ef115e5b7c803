//! A tenant's `maintenance` table: the page or redirect it answers while `status =
//! "maintenance"`. The page is read now, so a reload that cannot read it is refused whole.

use std::sync::Arc;

use http::HeaderValue;

use super::{is_web_url, Validator};
use crate::config::error::{ConfigError, KeyPath};
use crate::config::file::MaintenanceFile;
use crate::config::model::{
    MaintenanceAnswer, MaintenancePage, DEFAULT_MAINTENANCE_RETRY_AFTER_SECONDS,
};

/// A page larger than this is a mistake (a video, a folder of assets), not a maintenance notice.
const MAX_PAGE_BYTES: u64 = 1024 * 1024;
/// A day: a longer `Retry-After` is a suspension by another name.
const MAX_RETRY_AFTER_SECONDS: u32 = 86_400;

impl Validator {
    pub(super) fn maintenance(
        &mut self,
        at: &KeyPath,
        m: Option<&MaintenanceFile>,
    ) -> Arc<MaintenancePage> {
        let Some(m) = m else {
            return Arc::default();
        };
        let at = at.key("maintenance");
        let retry_after_seconds = m
            .retry_after_seconds
            .unwrap_or(DEFAULT_MAINTENANCE_RETRY_AFTER_SECONDS);
        if !(1..=MAX_RETRY_AFTER_SECONDS).contains(&retry_after_seconds) {
            self.errors.push(ConfigError::at_value(
                at.key("retry_after_seconds"),
                format!("must be from 1 to {MAX_RETRY_AFTER_SECONDS} (a day)"),
            ));
        }
        if m.content_type.is_some() && m.body_file.is_none() {
            self.errors.push(ConfigError::at_key(
                at.key("content_type"),
                "is the type of body_file; give body_file too",
            ));
        }
        let answer = match (&m.body_file, &m.redirect) {
            (Some(_), Some(_)) => {
                self.errors.push(ConfigError::at_key(
                    at.key("redirect"),
                    "give body_file or redirect, not both",
                ));
                MaintenanceAnswer::Json
            }
            (Some(file), None) => self.maintenance_page(&at, file, m.content_type.as_deref()),
            (None, Some(url)) => self.maintenance_redirect(&at, url),
            (None, None) => MaintenanceAnswer::Json,
        };
        Arc::new(MaintenancePage {
            retry_after_seconds,
            answer,
        })
    }

    fn maintenance_page(
        &mut self,
        at: &KeyPath,
        file: &str,
        content_type: Option<&str>,
    ) -> MaintenanceAnswer {
        let path = self.folder.join(file);
        let read = std::fs::metadata(&path).and_then(|meta| match meta.len() > MAX_PAGE_BYTES {
            true => Err(std::io::Error::other(format!(
                "is {} bytes; a maintenance page may be 1 MiB at most",
                meta.len()
            ))),
            false => std::fs::read(&path),
        });
        let body = match read {
            Ok(body) => body,
            Err(e) => {
                self.errors.push(ConfigError::at_value(
                    at.key("body_file"),
                    format!("cannot read {}: {e}", path.display()),
                ));
                return MaintenanceAnswer::Json;
            }
        };
        let guessed = match path.extension().and_then(|e| e.to_str()) {
            Some("html" | "htm") => "text/html; charset=utf-8",
            Some("json") => "application/json",
            _ => "text/plain; charset=utf-8",
        };
        let content_type = match HeaderValue::from_str(content_type.unwrap_or(guessed)) {
            Ok(v) => v,
            Err(_) => {
                self.errors.push(ConfigError::at_value(
                    at.key("content_type"),
                    "is not a valid header value",
                ));
                return MaintenanceAnswer::Json;
            }
        };
        MaintenanceAnswer::Page {
            body: body.into(),
            content_type,
            path,
        }
    }

    fn maintenance_redirect(&mut self, at: &KeyPath, url: &str) -> MaintenanceAnswer {
        let location = is_web_url(url)
            .then(|| HeaderValue::from_str(url).ok())
            .flatten();
        match location {
            Some(location) => MaintenanceAnswer::Redirect(location),
            None => {
                self.errors.push(ConfigError::at_value(
                    at.key("redirect"),
                    format!("{url:?} is not an absolute http:// or https:// URL"),
                ));
                MaintenanceAnswer::Json
            }
        }
    }
}
