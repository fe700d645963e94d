//! `GET /login`, `POST /login` and `POST /logout`: how a person's browser reads a server whose reads
//! need a token. The form takes a read-only token and keeps it in an HttpOnly, SameSite=Strict
//! cookie that the read routes' guard accepts in place of `Authorization` (writes never do).

use axum::body::Bytes;
use axum::extract::{FromRequest, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::{FAVICON, STYLE};
use crate::api::AppState;
use crate::auth::{self, SESSION_COOKIE};
use crate::error::{ApiError, Result};
use crate::model::FieldError;

/// The sign-in form; `next` is where to go afterwards (a path on this server).
pub async fn login_page(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let next = field(query.as_deref().unwrap_or_default().as_bytes(), "next");
    let signed_in = has_session_cookie(&headers);
    page(
        StatusCode::OK,
        &Form {
            next: local_path(next.as_deref()),
            reads_open: !state.tokens.reads_protected(),
            signed_in,
            problem: None,
        },
    )
}

/// Checks the form's `token`; a read-only one is kept in the sign-in cookie and the browser is
/// sent on to `next`. Anything else shows a browser the form again with the reason, and any
/// other client the same reason as problem+json.
pub async fn sign_in(State(state): State<AppState>, request: Request) -> Result<Response> {
    let https = auth::came_over_https(request.headers());
    let browser = auth::accepts_html(request.headers());
    let form = form_body(request, &state).await?;
    let next = local_path(field(&form, "next").as_deref());
    let token = field(&form, "token").unwrap_or_default();
    let token = token.trim();
    let refused = |status, problem| {
        let mut response = page(
            status,
            &Form {
                next: next.clone(),
                reads_open: !state.tokens.reads_protected(),
                signed_in: false,
                problem: Some(problem),
            },
        );
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"gitops-status-server\""),
            );
        }
        response
    };
    if token.is_empty() {
        if !browser {
            return Err(ApiError::InvalidForm(vec![FieldError::new(
                "token",
                "is required",
            )]));
        }
        return Ok(refused(StatusCode::BAD_REQUEST, "Enter a token."));
    }
    if let Err(problem) = state.tokens.check_sign_in(token) {
        if !browser {
            return Err(ApiError::Unauthorized(problem.to_owned()));
        }
        return Ok(refused(StatusCode::UNAUTHORIZED, problem));
    }
    let mut response = redirect(&next);
    response
        .headers_mut()
        .insert(header::SET_COOKIE, auth::session_cookie(token, https));
    Ok(response)
}

/// Forgets the sign-in cookie and shows the form.
pub async fn sign_out(headers: HeaderMap) -> Response {
    let mut response = redirect("/login");
    response.headers_mut().insert(
        header::SET_COOKIE,
        auth::cleared_session_cookie(auth::came_over_https(&headers)),
    );
    response
}

/// What the form shows.
struct Form {
    next: String,
    reads_open: bool,
    signed_in: bool,
    problem: Option<&'static str>,
}

/// The form's page. Not the status pages' layout: that one reloads itself, which would wipe a
/// token being typed.
fn page(status: StatusCode, form: &Form) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Sign in · gitops-status-server" }
                // Inline: the form is open, and /favicon.svg is a read like every other page.
                link rel="icon" type="image/svg+xml" href=(favicon_data_uri());
                style { (PreEscaped(STYLE)) (PreEscaped(LOGIN_STYLE)) }
            }
            body {
                header {
                    nav aria-label="Site" { a href="/" { "GitOps drift status" } }
                }
                main { (form_section(form)) }
            }
        }
    };
    let mut response = (status, markup).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    response
}

fn form_section(form: &Form) -> Markup {
    html! {
        h1 { "Sign in" }
        @if form.reads_open {
            p { "Reads are open on this server: " a href="/" { "the status page" } " needs no sign-in." }
        } @else {
            p {
                "This server shows its status only to holders of a read token. Ask its operator "
                "for a token whose only scope is " code { "read" } "."
            }
        }
        @if let Some(problem) = form.problem {
            p.problem role="alert" { (problem) }
        }
        form.login method="post" action="/login" {
            input type="hidden" name="next" value=(form.next);
            label {
                "Read token"
                input type="password" name="token" required autofocus autocomplete="current-password";
            }
            button type="submit" { "Sign in" }
        }
        p.muted {
            "Your browser keeps the token in a cookie that only this server receives, used for "
            "reading only, until you sign out or close the browser."
        }
        @if form.signed_in {
            form method="post" action="/logout" {
                button type="submit" { "Sign out" }
            }
        }
    }
}

const LOGIN_STYLE: &str = r#"
form.login { flex-direction: column; align-items: stretch; max-width: 28rem; }
form.login input { font: inherit; padding: 0.3rem 0.5rem; min-height: 2.2rem; }
.problem { border-left: 0.3rem solid #c62828; padding-left: 0.6rem; font-weight: 600; }
"#;

/// 303 to a path on this server.
fn redirect(to: &str) -> Response {
    let location = HeaderValue::from_str(to).unwrap_or(HeaderValue::from_static("/"));
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, location),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
    )
        .into_response()
}

/// `next` when it is a path on this server, else `/`: the form must not send a person elsewhere.
fn local_path(next: Option<&str>) -> String {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.starts_with("/\\")
                && path.bytes().all(|byte| byte.is_ascii_graphic()) =>
        {
            path.to_owned()
        }
        _ => "/".to_owned(),
    }
}

/// The urlencoded form body, or the problem for one that is not a form or over the body limit.
async fn form_body(request: Request, state: &AppState) -> Result<Vec<u8>> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if !content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .eq_ignore_ascii_case("application/x-www-form-urlencoded")
    {
        return Err(ApiError::UnsupportedMediaType(format!(
            "expected Content-Type: application/x-www-form-urlencoded, got {content_type:?}"
        )));
    }
    let body =
        Bytes::from_request(request, state)
            .await
            .map_err(|_| ApiError::PayloadTooLarge {
                limit: state.settings.body_limit,
            })?;
    Ok(body.to_vec())
}

/// The first value of `name` in an urlencoded form or query.
fn field(form: &[u8], name: &str) -> Option<String> {
    form_urlencoded::parse(form)
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

fn has_session_cookie(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .any(|pair| {
            pair.trim()
                .split_once('=')
                .is_some_and(|(name, value)| name == SESSION_COOKIE && !value.is_empty())
        })
}

/// The favicon as a `data:` URI.
fn favicon_data_uri() -> String {
    let encoded: String = form_urlencoded::byte_serialize(FAVICON.as_bytes()).collect();
    // byte_serialize writes spaces as `+`, which a data URI takes literally.
    format!("data:image/svg+xml,{}", encoded.replace('+', "%20"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed() {
        assert_eq!(local_path(Some("/target?repo=a%26b")), "/target?repo=a%26b");
        assert_eq!(local_path(Some("/docs/")), "/docs/");
        for outside in [
            None,
            Some(""),
            Some("https://evil.example/"),
            Some("//evil.example/"),
            Some("/\\evil.example"),
            Some("javascript:alert(1)"),
            Some("/a b"),
            Some("/\r\nSet-Cookie: x=y"),
        ] {
            assert_eq!(local_path(outside), "/", "{outside:?}");
        }
    }
}
