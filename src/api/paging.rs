//! The answer of a keyset-paginated resource's JSON page, shared by every such resource: the page
//! as a bare array or an envelope (`model::JsonPage`), the next page's `Link` header, and an
//! entity tag over both, so an unchanged page answers `If-None-Match` with 304.

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::conditional::EntityTag;
use crate::error::{ApiError, Result};
use crate::model::JsonPage;

/// One page of `path`, as asked by `query`.
#[derive(Debug)]
pub struct PageAnswer<'a, T> {
    /// The resource's path, for the `Link` header: `/history`.
    pub path: &'static str,
    /// The request's query string, whose filters the next page keeps.
    pub query: Option<&'a str>,
    pub envelope: bool,
    pub rows: Vec<T>,
    /// The encoded cursor of the next page; `None` on the last.
    pub next_cursor: Option<String>,
}

impl<T: Serialize> PageAnswer<'_, T> {
    /// The 200 with the page, or 304 when the request's `If-None-Match` names it. The tag covers
    /// the `Link` header too: a last page gains one when newer rows arrive.
    pub fn respond(self, request: &HeaderMap) -> Result<Response> {
        let link = self
            .next_cursor
            .as_deref()
            .map(|cursor| next_link(self.path, self.query, cursor));
        let page = JsonPage::new(self.rows, self.next_cursor, self.envelope);
        let body = serde_json::to_vec(&page)
            .map_err(|error| ApiError::internal(format!("encoding a page: {error}")))?;
        let tag = EntityTag::of([
            body.as_slice(),
            link.as_deref().unwrap_or_default().as_bytes(),
        ]);
        let mut response = if tag.is_matched_by(request) {
            tag.not_modified()
        } else {
            let mut response = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
            tag.apply(response.headers_mut());
            if let Some(link) = link.and_then(|link| HeaderValue::try_from(link).ok()) {
                response.headers_mut().insert(header::LINK, link);
            }
            response
        };
        // The same URL answers CSV or NDJSON when `Accept` asks for them.
        response
            .headers_mut()
            .append(header::VARY, HeaderValue::from_static("accept"));
        Ok(response)
    }
}

/// The same request with the cursor replaced, as an RFC 8288 link.
fn next_link(path: &str, query: Option<&str>, cursor: &str) -> String {
    let mut next = form_urlencoded::Serializer::new(String::new());
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if key != "cursor" {
            next.append_pair(&key, &value);
        }
    }
    next.append_pair("cursor", cursor);
    format!("<{path}?{}>; rel=\"next\"", next.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_link_keeps_filters_and_replaces_the_cursor() {
        let link = next_link("/history", Some("repo=rsyslog&cursor=old&limit=2"), "c2");
        assert_eq!(
            link,
            "</history?repo=rsyslog&limit=2&cursor=c2>; rel=\"next\""
        );
    }
}
