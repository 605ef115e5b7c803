//! The JSON bodies the admin API takes, decoded into the control plane's requests, and the read
//! of a body up to its bound. Numbers the document calls integers are taken as JSON writes them,
//! `50` or `50.0`.

use std::time::Duration;

use bytes::BytesMut;
use http::{Response, StatusCode};
use pingora::protocols::http::ServerSession;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

use super::views::json_error;
use crate::control::edit::ApiKeyEntry;
use crate::control::promotion::{
    PromotionRequest, DEFAULT_MAX_ERROR_RATE, DEFAULT_MIN_REQUESTS, DEFAULT_PAUSE,
};
use crate::control::transfer::OnConflict;
use crate::control::{ApplyRequest, ImportRequest, Refusal};

/// Request bodies are JSON objects, the largest a pushed tenant file with its keys; anything
/// larger is refused.
pub(super) const MAX_BODY: usize = 1024 * 1024;
/// `POST /apply` carries a whole routing file: 100,000 tenants are about 8 MiB of TOML.
pub(super) const MAX_APPLY_BODY: usize = 64 * 1024 * 1024;

/// A JSON number with no fraction: JSON Schema's `integer` is `50` and `50.0` alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Whole(u64);

impl<'de> Deserialize<'de> for Whole {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = serde_json::Number::deserialize(d)?;
        // 2^64 as f64: every whole f64 below it fits a u64.
        const END: f64 = 18_446_744_073_709_551_616.0;
        n.as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && (0.0..END).contains(f))
                    .map(|f| f as u64)
            })
            .map(Whole)
            .ok_or_else(|| D::Error::custom(format!("{n} is not a whole number of 0 or more")))
    }
}

/// The body of `POST /tenants`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportBody {
    fragment: String,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    on_conflict: Option<String>,
    #[serde(default)]
    with_keys: bool,
    #[serde(default)]
    dry_run: bool,
    expected_generation: Option<Whole>,
}

pub(super) fn import_request(body: &[u8]) -> Result<ImportRequest, Refusal> {
    let body: ImportBody = serde_json::from_slice(body).map_err(|e| {
        Refusal::BadRequest(format!(
            "expected {{\"fragment\": \"<TOML>\"}} with optional source, on_conflict, with_keys, dry_run, expected_generation: {e}"
        ))
    })?;
    let policy = body.on_conflict.as_deref().unwrap_or("fail");
    let on_conflict = OnConflict::parse(policy).ok_or_else(|| {
        Refusal::BadRequest(format!(
            "on_conflict {policy:?} is not one of {}",
            OnConflict::ALL.join(", ")
        ))
    })?;
    Ok(ImportRequest {
        fragment: body.fragment,
        source: body.source.unwrap_or_else(|| "tenant file".to_owned()),
        on_conflict,
        with_keys: body.with_keys,
        dry_run: body.dry_run,
        expected_generation: body.expected_generation.map(|w| w.0),
    })
}

/// The body of `POST /tenants/{id}/keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyBody {
    id: String,
    sha256: String,
    created: String,
    #[serde(default)]
    expires: Option<String>,
}

pub(super) fn key_entry(body: &[u8]) -> Result<ApiKeyEntry, Refusal> {
    let key: KeyBody = serde_json::from_slice(body).map_err(|e| {
        Refusal::BadRequest(format!(
            "expected {{\"id\": ..., \"sha256\": ..., \"created\": ...}} with optional expires: {e}"
        ))
    })?;
    Ok(ApiKeyEntry {
        id: key.id,
        sha256: key.sha256,
        created: key.created,
        expires: key.expires,
    })
}

/// The body of `POST /apply`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplyBody {
    config: String,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    prune: bool,
    #[serde(default)]
    dry_run: bool,
    expected_revision: Option<i64>,
}

pub(super) fn apply_request(body: &[u8]) -> Result<ApplyRequest, Refusal> {
    let body: ApplyBody = serde_json::from_slice(body).map_err(|e| {
        Refusal::BadRequest(format!(
            "expected {{\"config\": \"<TOML>\"}} with optional source, prune, dry_run, expected_revision: {e}"
        ))
    })?;
    Ok(ApplyRequest {
        text: body.config,
        source: body.source.unwrap_or_else(|| "routing file".to_owned()),
        prune: body.prune,
        dry_run: body.dry_run,
        expected_revision: body.expected_revision,
    })
}

/// The body of `POST /tenants/{id}/promote`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PromoteBody {
    pool: String,
    #[serde(default)]
    steps: Vec<Whole>,
    pause_ms: Option<Whole>,
    max_error_rate: Option<f64>,
    min_requests: Option<Whole>,
}

pub(super) fn promotion_request(body: &[u8]) -> Result<PromotionRequest, Refusal> {
    let body: PromoteBody = serde_json::from_slice(body)
        .map_err(|e| Refusal::BadRequest(format!("expected {{\"pool\": \"...\"}} with optional steps, pause_ms, max_error_rate, min_requests: {e}")))?;
    let steps = body
        .steps
        .iter()
        .map(|w| u8::try_from(w.0).ok())
        .collect::<Option<Vec<u8>>>()
        // The promotion checks 0 and 101 with the same words.
        .ok_or_else(|| Refusal::BadRequest("steps are percentages from 1 to 100".to_owned()))?;
    Ok(PromotionRequest {
        pool: body.pool,
        steps,
        pause: body
            .pause_ms
            .map_or(DEFAULT_PAUSE, |w| Duration::from_millis(w.0)),
        max_error_rate: body.max_error_rate.unwrap_or(DEFAULT_MAX_ERROR_RATE),
        min_requests: body.min_requests.map_or(DEFAULT_MIN_REQUESTS, |w| w.0),
    })
}

/// The request body, up to `MAX_BODY`, or the answer to give instead.
pub(super) async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, Response<Vec<u8>>> {
    read_body_up_to(session, MAX_BODY).await
}

/// The request body, up to `limit` bytes.
pub(super) async fn read_body_up_to(
    session: &mut ServerSession,
    limit: usize,
) -> Result<Vec<u8>, Response<Vec<u8>>> {
    let mut body = BytesMut::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(json_error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "body_too_large",
                        &format!("the request body is over {} MiB", limit / (1024 * 1024)),
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body.to_vec()),
            Err(_) => {
                return Err(json_error(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    "the request body could not be read",
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_may_be_written_with_a_zero_fraction() {
        let request = promotion_request(
            br#"{"pool": "p", "steps": [10, 50.0, 100], "pause_ms": 5.0, "min_requests": 3}"#,
        )
        .expect("whole numbers");
        assert_eq!(request.steps, [10, 50, 100]);
        assert_eq!(request.pause, Duration::from_millis(5));
        assert_eq!(request.min_requests, 3);
        for body in [
            r#"{"pool": "p", "steps": [50.5]}"#,
            r#"{"pool": "p", "steps": [-1]}"#,
            r#"{"pool": "p", "steps": [300]}"#,
            r#"{"pool": "p", "pause_ms": 1e300}"#,
            r#"{"pool": "p", "other": 1}"#,
        ] {
            assert!(promotion_request(body.as_bytes()).is_err(), "{body}");
        }
    }
}
