//! The HTTP door: one middleware around every route (see [`require`]).

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::limits::Slot;
use super::policy::{self, Access, Permission};
use super::Principal;
use crate::audit::{Action, Actor, Event, EventId, Outcome};
use crate::error::{ApiError, FhirError, JsonError};
use crate::state::AppState;

/// The answer refusing a request (boxed: a response is large).
type Refusal = Box<Response>;

/// Decides from the method and path what the request needs, checks the
/// caller's credentials, answers 401 (no or bad credentials, with
/// `WWW-Authenticate: Bearer`) or 403 (a caller without the right) before
/// any handler runs, applies the caller's limits, and records the access
/// in the audit trail. Handlers find the [`Principal`] in the request's
/// extensions.
pub(crate) async fn require(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let access = policy::http_access_with_query(req.method(), req.uri().path(), req.uri().query());
    if access == Access::Public {
        return next.run(req).await;
    }
    let path = req.uri().path().to_owned();
    let address = req
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let principal = match identify(&st, req.method(), req.uri(), req.headers(), address).await {
        Ok(p) => p,
        Err(refusal) => return *refusal,
    };
    if let Err(refusal) = authorize(&st, &mut req, access, &principal, &path) {
        return *refusal;
    }
    let slots = match limit(&st, req, access, &principal, &path) {
        Ok((r, slots)) => {
            req = r;
            slots
        }
        Err(refusal) => return *refusal,
    };
    let (method, uri) = (req.method().clone(), req.uri().clone());
    req.extensions_mut().insert(principal.clone());
    let response = next.run(req).await;
    if let Some(event) = access_event(access, &principal, &method, &uri, response.status()) {
        st.audit.record(event);
    }
    if slots.is_empty() {
        return response;
    }
    // The caller's places are held until the answer's body is sent (or
    // dropped by a client that went away): a stream counts while it runs.
    let (parts, body) = response.into_parts();
    Response::from_parts(
        parts,
        axum::body::Body::new(Holding {
            body,
            _slots: slots,
        }),
    )
}

/// A response body that holds the caller's [`Slot`]s until it is done.
struct Holding {
    body: axum::body::Body,
    _slots: Vec<Slot>,
}

impl http_body::Body for Holding {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Who is calling: a share link in the URL (a viewer or an `<img>` cannot
/// send headers) or the `Authorization` header; refused credentials are a
/// 401 (or 503 when they cannot be checked now).
async fn identify(
    st: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &axum::http::HeaderMap,
    address: Option<std::net::IpAddr>,
) -> Result<Principal, Refusal> {
    let path = uri.path();
    let share_param = (!headers.contains_key(axum::http::header::AUTHORIZATION)
        && (method == Method::GET || method == Method::HEAD))
        .then(|| share_param(uri))
        .flatten();
    let authenticated = match &share_param {
        Some(token) => st.auth.share_link(token, address).await,
        None => st.auth.authenticate(headers, address).await,
    };
    match authenticated {
        Ok(p) => {
            if share_param.is_none() && st.auth.first_use(headers) {
                st.audit.record(
                    Event::new(
                        EventId::UserAuthentication,
                        Action::E,
                        Outcome::Success,
                        Actor::of(&p),
                    )
                    .event_type("Login"),
                );
            }
            Ok(p)
        }
        Err(e) => {
            let mut who = Principal::nobody(address);
            who.name = "unknown".into();
            st.audit.record(
                Event::new(
                    EventId::UserAuthentication,
                    Action::E,
                    Outcome::MinorFailure,
                    Actor::of(&who),
                )
                .event_type("Login")
                .detail(format!("{method} {path}: {e}")),
            );
            tracing::info!(%path, reason = %e, "credentials refused");
            let err = if matches!(e, super::AuthError::Unavailable) {
                ApiError::Unavailable(e.to_string())
            } else {
                ApiError::Unauthorized(e.to_string())
            };
            Err(Box::new(refuse(path, err)))
        }
    }
}

/// Whether the caller may make this request (by the policy table; a share
/// link also only within its study, whose searches it narrows).
fn authorize(
    st: &AppState,
    req: &mut Request,
    access: Access,
    principal: &Principal,
    path: &str,
) -> Result<(), Refusal> {
    let needed = match access {
        Access::Public => None,
        Access::Readiness if st.auth.config.readyz_public => None,
        Access::Readiness => Some(Permission::Administer),
        Access::Metrics if st.auth.config.metrics_public => None,
        Access::Metrics => Some(Permission::Administer),
        Access::Needs(p) => Some(p),
        Access::StoreAny if principal.may(Permission::StoreDerived) => None,
        Access::StoreAny => Some(Permission::Store),
    };
    if let Some(p) = needed.filter(|p| !principal.may(*p)) {
        if !principal.authenticated() {
            return Err(Box::new(refuse(
                path,
                ApiError::Unauthorized(
                    "authentication required: send Authorization: Bearer <access token or API key>"
                        .into(),
                ),
            )));
        }
        st.audit.record(Event::refused(
            Actor::of(principal),
            path_studies(path),
            format!("{} {path}: needs {p}", req.method()),
        ));
        tracing::info!(%path, permission = %p, method = principal.method.as_str(), "access refused");
        return Err(Box::new(refuse(
            path,
            ApiError::Forbidden(format!("{} may not {}", principal.describe(), describe(p))),
        )));
    }
    if let Some(claims) = &principal.share {
        match super::share::confine(claims, req.method(), req.uri()) {
            Ok(uri) => *req.uri_mut() = uri,
            Err(why) => {
                st.audit.record(Event::refused(
                    Actor::of(principal),
                    vec![claims.s.clone()],
                    format!("{} {path}: {why}", req.method()),
                ));
                return Err(Box::new(refuse(path, ApiError::Forbidden(why))));
            }
        }
    }
    Ok(())
}

/// The caller's limits: its request rate, its STOW requests at once (the
/// slot is held by the caller until the response is made) and its body
/// size (a body without a length is cut at the limit: the handler then
/// sees a read error).
fn limit(
    st: &AppState,
    req: Request,
    access: Access,
    principal: &Principal,
    path: &str,
) -> Result<(Request, Vec<Slot>), Refusal> {
    if let Err(retry_after) = st.auth.limits.admit(principal) {
        let why = format!(
            "{} is over its request rate; retry in {retry_after} s",
            principal.describe()
        );
        return Err(Box::new(too_many(path, why, retry_after)));
    }
    // Per identity: callers without one (a server without
    // authentication) are not counted together.
    let mut slots = Vec::new();
    if principal.authenticated() {
        let Some(slot) = st.auth.limits.request_slot(principal) else {
            let why = format!(
                "{} has as many requests running as allowed (--max-concurrent-requests); retry when one ends",
                principal.describe()
            );
            return Err(Box::new(too_many(path, why, 1)));
        };
        slots.push(slot);
        if access == Access::StoreAny {
            let Some(slot) = st.auth.limits.stow_slot(principal) else {
                let why = format!(
                    "{} has as many STOW requests running as allowed (--max-concurrent-stow); retry when one ends",
                    principal.describe()
                );
                return Err(Box::new(too_many(path, why, 1)));
            };
            slots.push(slot);
        }
    }
    let Some(max) = st.auth.limits.max_body(principal) else {
        return Ok((req, slots));
    };
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        let why = format!("{} may send at most {max} bytes", principal.describe());
        return Err(Box::new(refuse(path, ApiError::PayloadTooLarge(why))));
    }
    let (parts, body) = req.into_parts();
    let limited = http_body_util::Limited::new(body, usize::try_from(max).unwrap_or(usize::MAX));
    Ok((
        Request::from_parts(parts, axum::body::Body::new(limited)),
        slots,
    ))
}

/// The `share` query parameter, if any.
fn share_param(uri: &Uri) -> Option<String> {
    url::form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(k, _)| k == "share")
        .map(|(_, v)| v.into_owned())
}

/// What the audit trail says of an allowed request (STOW is recorded by
/// its handler, which knows what it stored).
fn access_event(
    access: Access,
    who: &Principal,
    method: &Method,
    uri: &Uri,
    status: StatusCode,
) -> Option<Event> {
    let (event, action) = match access {
        Access::Needs(Permission::Query) => (EventId::Query, Action::E),
        Access::Needs(Permission::Retrieve) => (EventId::InstancesTransferred, Action::R),
        Access::Needs(Permission::EmrLinkWrite) => (EventId::InstancesAccessed, Action::U),
        Access::Needs(Permission::Share) => (EventId::InstancesAccessed, Action::R),
        Access::Needs(Permission::AuditRead) => (EventId::AuditLogUsed, Action::R),
        _ => return None,
    };
    let outcome = if status.is_success() || status.is_redirection() {
        Outcome::Success
    } else if status.is_client_error() {
        Outcome::MinorFailure
    } else {
        Outcome::SeriousFailure
    };
    let query = uri.query().unwrap_or("");
    let mut studies = path_studies(uri.path());
    if studies.is_empty() {
        studies = query_studies(query);
    }
    // A search by patient names the patient even when nothing matched.
    let patient = query_patient(query);
    Some(
        Event::new(event, action, outcome, Actor::of(who))
            .studies(studies)
            .patient(patient)
            .detail(format!("{method} {uri}")),
    )
}

/// The Study Instance UID a path names (`…/studies/{uid}…`, FHIR
/// `ImagingStudy/{uid}`, `/api/studies/{uid}/…`).
fn path_studies(path: &str) -> Vec<String> {
    let mut seg = path.split('/');
    while let Some(s) = seg.next() {
        if s == "studies" || s == "ImagingStudy" {
            if let Some(uid) = seg.next().filter(|u| crate::dicom::Uid::parse(u).is_ok()) {
                return vec![uid.to_owned()];
            }
        }
    }
    Vec::new()
}

/// Study UIDs named in a query string (`StudyInstanceUID=`, `studyUID=`).
fn query_studies(query: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if k.eq_ignore_ascii_case("StudyInstanceUID") || k == "studyUID" || k == "0020000D" {
            out.extend(
                v.split([',', '\\'])
                    .filter(|u| crate::dicom::Uid::parse(u).is_ok())
                    .map(str::to_owned),
            );
        }
    }
    out.truncate(100);
    out
}

/// The Patient ID a search names (`PatientID=`, `00100020=`, FHIR and
/// IID `patient`/`patientID`), when it names exactly one.
fn query_patient(query: &str) -> Option<String> {
    let mut found = url::form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| {
            matches!(
                k.as_ref(),
                "PatientID" | "00100020" | "patientID" | "patient"
            )
        })
        .map(|(_, v)| v.strip_prefix("Patient/").unwrap_or(&v).to_owned())
        .filter(|v| !v.is_empty() && !v.contains(['*', '?', ',', '\\']));
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

fn describe(p: Permission) -> &'static str {
    match p {
        Permission::Query => "search the archive",
        Permission::Retrieve => "retrieve images or metadata",
        Permission::Move => "send studies to another DICOM node",
        Permission::Store => "store instances",
        Permission::StoreDerived => "store derived objects",
        Permission::Commit => "request storage commitment",
        Permission::EmrLinkWrite => "change EMR links",
        Permission::Share => "make share links",
        Permission::AuditRead => "read the audit trail",
        Permission::Administer => "use this administrative resource",
    }
}

fn too_many(path: &str, message: String, retry_after: u64) -> Response {
    let mut r = refuse(
        path,
        ApiError::TooManyRequests {
            message,
            retry_after,
        },
    );
    if let Ok(v) = axum::http::HeaderValue::from_str(&retry_after.to_string()) {
        r.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
    }
    r
}

/// A refusal in the form of the API it happens on.
fn refuse(path: &str, err: ApiError) -> Response {
    if path.starts_with("/api/") {
        JsonError(err).into_response()
    } else if path.starts_with("/fhir/") {
        FhirError(err).into_response()
    } else {
        err.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn studies_from_paths_and_queries() {
        assert_eq!(
            path_studies("/dicomweb/studies/1.2.3/series/4.5"),
            ["1.2.3"]
        );
        assert_eq!(path_studies("/fhir/ImagingStudy/1.2"), ["1.2"]);
        assert!(path_studies("/dicomweb/studies").is_empty());
        assert!(path_studies("/dicomweb/studies/x<y").is_empty());
        assert_eq!(
            query_studies("StudyInstanceUID=1.2,1.3&x=1"),
            ["1.2", "1.3"]
        );
        assert_eq!(query_studies("requestType=STUDY&studyUID=1.9"), ["1.9"]);
        assert_eq!(query_patient("PatientID=P1&limit=5").as_deref(), Some("P1"));
        assert_eq!(query_patient("patient=Patient/P2").as_deref(), Some("P2"));
        assert_eq!(query_patient("PatientID=P*"), None);
        assert_eq!(query_patient("PatientID=A&PatientID=B"), None);
    }
}
