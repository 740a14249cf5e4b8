//! The web console: server-rendered pages (minijinja templates under
//! `templates/console/`, embedded in the binary) and one script of evidex's own
//! (`console.js`) for live updates and forms, which talks to the same `/v1` API.
//!
//! Sign-in takes an API token and starts a session: a random id in an HttpOnly,
//! SameSite=Strict cookie without expiry (it ends with the browser session; the token
//! is never stored in the browser, a URL or local storage). [`sessions`] resolves it on
//! every request: console pages get the principal, and `/v1` calls from the console
//! are authenticated as that token, unsafe methods only with the session's CSRF token
//! in `x-csrf-token` (console forms carry it as a hidden field). Every page is sent
//! with a strict Content-Security-Policy: scripts and styles only from this origin, no
//! inline script or style, no eval.

pub(crate) mod pages;

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use minijinja::{Environment, Value as Jv};

use crate::service::Service;
use crate::store::{Principal, Role};

/// Set on a request by [`sessions`] (and removed from every incoming request first):
/// the token id a console session stands for.
pub const SESSION_PRINCIPAL: &str = "x-evidex-session-token";
/// The session cookie.
pub const COOKIE: &str = "evidex_session";

/// The Content-Security-Policy of every console page.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A signed-in console user.
#[derive(Debug, Clone)]
pub struct Session {
    /// Who.
    pub principal: Principal,
    /// The CSRF token of this session's forms and `/v1` calls.
    pub csrf: String,
}

/// Every console page and asset: method, path, roles (empty: none needed). The role
/// tests walk it like `api::ROUTES`.
pub const PAGES: &[(&str, &str, &[Role])] = &[
    ("GET", "/", &[]),
    ("GET", "/sign-in", &[]),
    ("POST", "/sign-in", &[]),
    ("POST", "/sign-out", &[]),
    ("GET", "/assets/console.js", &[]),
    ("GET", "/assets/console.css", &[]),
    ("GET", "/exports", pages::READ),
    ("GET", "/exports/new", pages::WRITE),
    ("GET", "/exports/{id}", pages::READ),
    ("GET", "/schedules", pages::READ),
    ("GET", "/schedules/{id}", pages::READ),
    ("GET", "/presets", pages::READ),
    ("GET", "/audit", pages::WRITE),
    ("GET", "/settings/delivery", pages::ADMIN),
    ("GET", "/settings/webhooks", pages::ADMIN),
    ("GET", "/settings/redaction", pages::ADMIN),
];

/// The console's routes (merged into the API router).
pub fn router() -> Router<Arc<Service>> {
    Router::new()
        .route("/", get(pages::home))
        .route("/sign-in", get(pages::sign_in_page).post(pages::sign_in))
        .route("/sign-out", post(pages::sign_out))
        .route("/assets/console.js", get(script))
        .route("/assets/console.css", get(style))
        .route("/exports", get(pages::exports))
        .route("/exports/new", get(pages::new_export))
        .route("/exports/{id}", get(pages::export_detail))
        .route("/schedules", get(pages::schedules))
        .route("/schedules/{id}", get(pages::schedule_detail))
        .route("/presets", get(pages::presets))
        .route("/audit", get(pages::audit))
        .route("/settings/delivery", get(pages::settings_delivery))
        .route("/settings/webhooks", get(pages::settings_webhooks))
        .route("/settings/redaction", get(pages::settings_redaction))
}

async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../../../templates/console/console.js"),
    )
}

async fn style() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("../../../templates/console/console.css"),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The value of cookie `name` in `headers`.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Resolves the session cookie of every request (see the module documentation).
pub async fn sessions(State(s): State<Arc<Service>>, mut req: Request, next: Next) -> Response {
    req.headers_mut().remove(SESSION_PRINCIPAL);
    req.extensions_mut().remove::<Session>();
    let has_bearer = req.headers().contains_key(header::AUTHORIZATION);
    if let Some(id) = cookie(req.headers(), COOKIE).filter(|_| !has_bearer) {
        match s.store.session(&id, s.now_ms()) {
            Ok(Some((principal, csrf))) => {
                let api = req.uri().path().starts_with("/v1/");
                let safe = matches!(*req.method(), Method::GET | Method::HEAD);
                let csrf_ok = req
                    .headers()
                    .get("x-csrf-token")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v == csrf);
                if api && !safe && !csrf_ok {
                    return (
                        StatusCode::FORBIDDEN,
                        axum::Json(serde_json::json!({"error": {"code": "forbidden",
                            "message": "a console request needs its x-csrf-token header"}})),
                    )
                        .into_response();
                }
                if let Ok(v) = HeaderValue::from_str(&principal.token_id) {
                    req.headers_mut().insert(SESSION_PRINCIPAL, v);
                }
                req.extensions_mut().insert(Session { principal, csrf });
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("console session: {e:#}"),
        }
    }
    let mut res = next.run(req).await;
    // The console's pages run its script and link to each other: they get their own
    // policy. Every other response keeps the API's stricter defaults
    // (`api::security_headers`).
    let page = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/html"));
    if page {
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
    }
    res
}

/// The templates, parsed once.
fn templates() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        for (name, src) in [
            (
                "base.html",
                include_str!("../../../templates/console/base.html"),
            ),
            (
                "sign_in.html",
                include_str!("../../../templates/console/sign_in.html"),
            ),
            (
                "exports.html",
                include_str!("../../../templates/console/exports.html"),
            ),
            (
                "export_new.html",
                include_str!("../../../templates/console/export_new.html"),
            ),
            (
                "export_detail.html",
                include_str!("../../../templates/console/export_detail.html"),
            ),
            (
                "schedules.html",
                include_str!("../../../templates/console/schedules.html"),
            ),
            (
                "schedule_fields.html",
                include_str!("../../../templates/console/schedule_fields.html"),
            ),
            (
                "schedule_detail.html",
                include_str!("../../../templates/console/schedule_detail.html"),
            ),
            (
                "presets.html",
                include_str!("../../../templates/console/presets.html"),
            ),
            (
                "audit.html",
                include_str!("../../../templates/console/audit.html"),
            ),
            (
                "settings_delivery.html",
                include_str!("../../../templates/console/settings_delivery.html"),
            ),
            (
                "settings_webhooks.html",
                include_str!("../../../templates/console/settings_webhooks.html"),
            ),
            (
                "settings_redaction.html",
                include_str!("../../../templates/console/settings_redaction.html"),
            ),
            (
                "message.html",
                include_str!("../../../templates/console/message.html"),
            ),
        ] {
            env.add_template(name, src)
                .unwrap_or_else(|e| panic!("console template {name}: {e}"));
        }
        env
    })
}

/// Renders `template` with `ctx` (plus `session`: the user, role and CSRF token).
pub fn render(template: &str, session: Option<&Session>, ctx: Jv, status: StatusCode) -> Response {
    let user = session.map(|s| {
        minijinja::context! {
            name => s.principal.name.clone(),
            role => s.principal.role.as_str(),
            csrf => s.csrf.clone(),
            admin => s.principal.role == Role::Admin,
            write => matches!(s.principal.role, Role::Admin | Role::Compliance),
        }
    });
    let full = minijinja::context! { user => user, ..ctx };
    match templates()
        .get_template(template)
        .and_then(|t| t.render(full))
    {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!("console template {template}: {e:#}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    }
}

/// The session, or a redirect to the sign-in page; a role outside `allowed` gets a
/// 403 page saying so.
#[allow(
    clippy::result_large_err,
    reason = "the error is the response to send, built once per request"
)]
pub fn require(
    session: Option<&Session>,
    allowed: &[Role],
    path: &str,
) -> Result<Session, Response> {
    let Some(s) = session else {
        let to = format!(
            "/sign-in?next={}",
            url::form_urlencoded::byte_serialize(path.as_bytes()).collect::<String>()
        );
        return Err(Redirect::to(&to).into_response());
    };
    if !allowed.is_empty() && !allowed.contains(&s.principal.role) {
        let names: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
        return Err(render(
            "message.html",
            Some(s),
            minijinja::context! {
                title => "Not allowed",
                message => format!("The {} role may not open this page; it needs {}.", s.principal.role.as_str(), names.join(" or ")),
            },
            StatusCode::FORBIDDEN,
        ));
    }
    Ok(s.clone())
}
