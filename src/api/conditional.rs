//! Conditional GETs (RFC 9110 §13): entity tags, and `If-None-Match` answered with an empty 304,
//! so a dashboard that polls an answer it already holds downloads nothing.
//!
//! Tags are weak (`W/"..."`): a tag names the content, and the compression layer may send that
//! content gzip-encoded or not under the same tag, which a strong tag would forbid.
//! `If-None-Match` compares weakly anyway, so clients lose nothing.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// Revalidate on every use: a stored answer may be reused only after a 304.
const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");

/// A weak entity tag: 128 bits of SHA-256 over what determines the answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EntityTag {
    /// The opaque part: 32 hex digits.
    opaque: String,
}

impl EntityTag {
    /// The tag of the content made of `parts`, each hashed with its length so that no two
    /// different sequences of parts share a tag.
    pub fn of<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut hasher = Sha256::new();
        for part in parts {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        Self::from_hasher(hasher)
    }

    /// The tag of whatever was fed to `hasher`.
    pub fn from_hasher(hasher: Sha256) -> Self {
        Self {
            opaque: hex::encode(&hasher.finalize()[..16]),
        }
    }

    /// `W/"..."`, as the `ETag` header carries it.
    pub fn header_value(&self) -> HeaderValue {
        HeaderValue::try_from(format!("W/\"{}\"", self.opaque))
            .unwrap_or_else(|_| HeaderValue::from_static("W/\"\""))
    }

    /// Whether the request's `If-None-Match` is `*` or lists this tag, weak or strong.
    pub fn is_matched_by(&self, request: &HeaderMap) -> bool {
        request
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|field| field.to_str().ok())
            .any(|field| field.trim() == "*" || listed_tags(field).any(|tag| tag == self.opaque))
    }

    /// Adds what a tagged answer carries, 200 or 304 alike: the tag, `Cache-Control: no-cache`
    /// (store it, but ask before reusing it) and `Vary: Accept-Encoding`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(header::ETAG, self.header_value());
        headers.insert(header::CACHE_CONTROL, NO_CACHE);
        headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    }

    /// The empty 304 for a client that holds the answer this tag names.
    pub fn not_modified(&self) -> Response {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        self.apply(response.headers_mut());
        response
    }
}

/// The opaque parts of the tags an `If-None-Match` field lists (`W/"a", "b"`), in order; a
/// malformed remainder ends the list.
fn listed_tags(field: &str) -> impl Iterator<Item = &str> {
    let mut rest = field;
    std::iter::from_fn(move || {
        let tag = rest.trim_start_matches([' ', '\t', ',']);
        let tag = tag.strip_prefix("W/").unwrap_or(tag).strip_prefix('"')?;
        let (opaque, after) = tag.split_once('"')?;
        rest = after;
        Some(opaque)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(fields: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for field in fields {
            headers.append(header::IF_NONE_MATCH, HeaderValue::from_str(field).unwrap());
        }
        headers
    }

    #[test]
    fn the_tag_is_weak_and_names_its_parts() {
        let tag = EntityTag::of([b"body".as_slice(), b"link"]);
        let value = tag.header_value();
        let value = value.to_str().unwrap();
        assert!(value.starts_with("W/\"") && value.ends_with('"'), "{value}");
        assert_eq!(value.len(), 2 + 1 + 32 + 1);
        assert_eq!(tag, EntityTag::of([b"body".as_slice(), b"link"]));
        assert_ne!(tag, EntityTag::of([b"bodyl".as_slice(), b"ink"]));
        assert_ne!(tag, EntityTag::of([b"bodylink".as_slice()]));
    }

    #[test]
    fn if_none_match_compares_weakly_over_lists_and_star() {
        let tag = EntityTag::of([b"x".as_slice()]);
        let opaque = tag.opaque.clone();
        for matching in [
            vec![format!("W/\"{opaque}\"")],
            vec![format!("\"{opaque}\"")],
            vec![format!("\"other\", W/\"{opaque}\"")],
            vec![format!("W/\"a,b\" ,\t\"{opaque}\"")],
            vec!["\"other\"".to_owned(), format!("W/\"{opaque}\"")],
            vec!["*".to_owned()],
            vec![" * ".to_owned()],
        ] {
            let fields: Vec<&str> = matching.iter().map(String::as_str).collect();
            assert!(tag.is_matched_by(&request(&fields)), "{fields:?}");
        }
        for missing in [
            vec![],
            vec!["\"other\"".to_owned()],
            vec![format!("W/{opaque}")],
            vec![format!("\"{opaque}")],
            vec![format!("garbage, \"{opaque}\"")],
            vec![format!("w/\"{}\"", opaque.to_uppercase())],
            vec!["*, \"other\"".to_owned()],
        ] {
            let fields: Vec<&str> = missing.iter().map(String::as_str).collect();
            assert!(!tag.is_matched_by(&request(&fields)), "{fields:?}");
        }
    }

    #[test]
    fn not_modified_is_empty_and_carries_the_validators() {
        let tag = EntityTag::of([b"x".as_slice()]);
        let response = tag.not_modified();
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(response.headers()[header::ETAG], tag.header_value());
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-cache");
        assert_eq!(response.headers()[header::VARY], "accept-encoding");
        assert!(!response.headers().contains_key(header::CONTENT_TYPE));
    }
}
