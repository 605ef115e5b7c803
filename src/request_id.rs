//! Request ids: the one value that ties a client's report, the gateway's access log and the backend's
//! logs together.
//!
//! A client-sent `X-Request-ID` is kept when it is short and made of characters that are safe in a log
//! line and a header (ids from an upstream proxy or a client SDK keep working); anything else is
//! replaced by a fresh UUIDv4.

use http::HeaderValue;

pub const REQUEST_ID_HEADER: &str = "x-request-id";
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Whether a client-sent id may be passed on: 1 to 128 of `A-Z a-z 0-9 - _ . ~ : / + =`.
pub fn is_valid_request_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-_.~:/+=".contains(&b))
}

/// A random UUIDv4 (`8-4-4-4-12` lowercase hex). Not for security: ids are not secrets.
pub fn new_request_id() -> HeaderValue {
    let bits = fastrand::u128(..);
    // Version 4, variant 10xx.
    let bits = (bits & !(0xf << 76)) | (0x4 << 76);
    let bits = (bits & !(0x3 << 62)) | (0x2 << 62);
    let mut out = [0u8; 36];
    let mut nibble = 32;
    for (i, slot) in out.iter_mut().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            *slot = b'-';
            continue;
        }
        nibble -= 1;
        let v = ((bits >> (nibble * 4)) & 0xf) as u8;
        *slot = if v < 10 { b'0' + v } else { b'a' + v - 10 };
    }
    // Hex digits and hyphens are always a valid header value.
    HeaderValue::from_bytes(&out)
        .unwrap_or_else(|_| HeaderValue::from_static("00000000-0000-4000-8000-000000000000"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_uuid_v4_and_distinct() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        let s = a.to_str().expect("ascii");
        assert_eq!(s.len(), 36);
        let parts: Vec<&str> = s.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'), "{s}");
        assert!(
            matches!(parts[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'),
            "{s}"
        );
        assert!(is_valid_request_id(s.as_bytes()));
    }

    #[test]
    fn client_ids_are_kept_only_when_safe() {
        for ok in [
            "abc",
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "req_1.2~x:y/z+w=",
            &"a".repeat(128),
        ] {
            assert!(is_valid_request_id(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            "has space",
            "quote\"",
            "semi;colon",
            "new\nline",
            "ünï",
            &"a".repeat(129),
        ] {
            assert!(!is_valid_request_id(bad.as_bytes()), "{bad:?}");
        }
    }
}
