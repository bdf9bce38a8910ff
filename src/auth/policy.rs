//! The access policy, whole: which role may do what (the one permission
//! table), which permission each HTTP route needs, and which each DIMSE
//! service needs. The README's role table is this file's [`TABLE`].
//!
//! Deny by default: an HTTP path this file does not name under `/dicomweb`,
//! `/api`, `/fhir`, `/wado` or `/IHEInvokeImageDisplay` needs [`Permission::Administer`].

use axum::http::Method;

/// What a caller may be (PS3.15 leaves roles to the site; these are the
/// ones a hospital's PACS needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Everything, including deletion, keys and configuration.
    Admin,
    /// Reads everything, stores derived objects (reports, key images,
    /// presentation states, measurements).
    Radiologist,
    /// Reads only: the EMR and referring physicians.
    Clinician,
    /// Stores only (STOW-RS, C-STORE) and asks for storage commitment.
    Modality,
    /// Reads the audit trail only.
    Auditor,
}

impl Role {
    pub(crate) const ALL: [Role; 5] = [
        Role::Admin,
        Role::Radiologist,
        Role::Clinician,
        Role::Modality,
        Role::Auditor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Radiologist => "radiologist",
            Role::Clinician => "clinician",
            Role::Modality => "modality",
            Role::Auditor => "auditor",
        }
    }

    /// The role named `s` (case-insensitive), if it is one of ours.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing a caller may be allowed to do, on HTTP and DICOM alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Search: QIDO-RS, C-FIND, FHIR ImagingStudy, IID, study references,
    /// the change feed, EMR links (read).
    Query,
    /// Retrieve pixels and metadata: WADO-RS, WADO-URI, rendered,
    /// thumbnails, C-GET.
    Retrieve,
    /// Send studies to another DICOM node: C-MOVE.
    Move,
    /// Store any object: STOW-RS, C-STORE.
    Store,
    /// Store derived objects only (SR, KOS, presentation states, PDF
    /// reports): STOW-RS and C-STORE of [`is_derived_sop_class`] classes.
    StoreDerived,
    /// Storage commitment (PS3.4 Annex J).
    Commit,
    /// Set or remove a study's EMR link (the EMR's own record pointer,
    /// not image data).
    EmrLinkWrite,
    /// Make a share link for one study.
    Share,
    /// Read the audit trail.
    AuditRead,
    /// Keys, deliveries log, deletion, configuration.
    Administer,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Query => "query",
            Permission::Retrieve => "retrieve",
            Permission::Move => "move",
            Permission::Store => "store",
            Permission::StoreDerived => "store-derived",
            Permission::Commit => "commit",
            Permission::EmrLinkWrite => "emr-link-write",
            Permission::Share => "share",
            Permission::AuditRead => "audit-read",
            Permission::Administer => "administer",
        }
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The permission table: for each permission, the roles that have it.
pub(crate) const TABLE: &[(Permission, &[Role])] = &[
    (
        Permission::Query,
        &[Role::Admin, Role::Radiologist, Role::Clinician],
    ),
    (
        Permission::Retrieve,
        &[Role::Admin, Role::Radiologist, Role::Clinician],
    ),
    (Permission::Move, &[Role::Admin, Role::Radiologist]),
    (Permission::Store, &[Role::Admin, Role::Modality]),
    (
        Permission::StoreDerived,
        &[Role::Admin, Role::Radiologist, Role::Modality],
    ),
    (Permission::Commit, &[Role::Admin, Role::Modality]),
    (Permission::EmrLinkWrite, &[Role::Admin, Role::Clinician]),
    (
        Permission::Share,
        &[Role::Admin, Role::Radiologist, Role::Clinician],
    ),
    (Permission::AuditRead, &[Role::Admin, Role::Auditor]),
    (Permission::Administer, &[Role::Admin]),
];

/// Whether `role` has `permission` by [`TABLE`].
#[cfg(test)]
fn role_has(role: Role, permission: Permission) -> bool {
    TABLE
        .iter()
        .any(|(p, roles)| *p == permission && roles.contains(&role))
}

/// What an HTTP request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Anyone: `/healthz`, the viewer's files, the auth configuration,
    /// FHIR's CapabilityStatement.
    Public,
    /// Anyone when `/readyz` is configured public, else [`Permission::Administer`].
    Readiness,
    /// Anyone when `/metrics` is configured public (`--metrics-public`),
    /// else [`Permission::Administer`].
    Metrics,
    /// A caller with this permission.
    Needs(Permission),
    /// STOW-RS: [`Permission::Store`] or [`Permission::StoreDerived`]
    /// (the latter checked per instance against its SOP class).
    StoreAny,
}

/// The access an HTTP request needs, from its method and path alone (no
/// handler runs before this is decided).
pub(crate) fn http_access(method: &Method, path: &str) -> Access {
    let path = path.trim_end_matches('/');
    let read = method == Method::GET || method == Method::HEAD;
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    match segments.as_slice() {
        ["healthz"] => Access::Public,
        ["readyz"] => Access::Readiness,
        ["metrics"] if read => Access::Metrics,
        ["dicomweb", rest @ ..] => dicomweb_access(method, read, rest),
        // WADO-URI (PS3.18 §9).
        ["wado"] if read => Access::Needs(Permission::Retrieve),
        ["IHEInvokeImageDisplay"] if read => Access::Needs(Permission::Query),
        ["api", "auth", "config"] if read => Access::Public,
        ["api", rest @ ..] => api_access(method, read, rest),
        ["fhir", "metadata"] if read => Access::Public,
        ["fhir", "ImagingStudy", ..] if read => Access::Needs(Permission::Query),
        ["fhir", "AuditEvent", ..] if read => Access::Needs(Permission::AuditRead),
        ["fhir" | "wado" | "IHEInvokeImageDisplay", ..] => Access::Needs(Permission::Administer),
        // The web viewer's files (no patient data in them).
        _ if read => Access::Public,
        _ => Access::Needs(Permission::Administer),
    }
}

/// [`http_access`], and what a query string adds: study references that
/// carry a share link (`share_expires_in`) need [`Permission::Share`].
pub(crate) fn http_access_with_query(method: &Method, path: &str, query: Option<&str>) -> Access {
    let access = http_access(method, path);
    let asks_share = query.is_some_and(|q| {
        url::form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "share_expires_in")
    });
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    match segments.as_slice() {
        ["api", "studies", _, "references"] if asks_share => Access::Needs(Permission::Share),
        _ => access,
    }
}

fn dicomweb_access(method: &Method, read: bool, rest: &[&str]) -> Access {
    // QIDO-RS (§10.6) resources end in a collection name; WADO-RS (§10.4)
    // names one resource or a sub-resource of it.
    let qido = matches!(
        rest,
        ["studies"]
            | ["series"]
            | ["instances"]
            | ["studies", _, "series"]
            | ["studies", _, "instances"]
            | ["studies", _, "series", _, "instances"]
    );
    if read {
        return if qido {
            Access::Needs(Permission::Query)
        } else if rest.first() == Some(&"studies") {
            Access::Needs(Permission::Retrieve)
        } else {
            Access::Needs(Permission::Administer)
        };
    }
    match (method, rest) {
        // STOW-RS (§10.5).
        (&Method::POST, ["studies"] | ["studies", _]) => Access::StoreAny,
        // Deletion to the trash (`dicomweb::delete`): admins only.
        (
            &Method::DELETE,
            ["studies", _]
            | ["studies", _, "series", _]
            | ["studies", _, "series", _, "instances", _],
        ) => Access::Needs(Permission::Administer),
        _ => Access::Needs(Permission::Administer),
    }
}

fn api_access(method: &Method, read: bool, rest: &[&str]) -> Access {
    match (rest, read) {
        (["studies", _, "emr-link"], true) => Access::Needs(Permission::Query),
        (["studies", _, "emr-link"], false)
            if method == Method::PUT || method == Method::DELETE =>
        {
            Access::Needs(Permission::EmrLinkWrite)
        }
        (["emr-links"], true) => Access::Needs(Permission::Query),
        (["studies", _, "references"], true) => Access::Needs(Permission::Query),
        (["studies", _, "share"], false) if method == Method::POST => {
            Access::Needs(Permission::Share)
        }
        (["changes"], true) => Access::Needs(Permission::Query),
        (["audit", ..], true) => Access::Needs(Permission::AuditRead),
        _ => Access::Needs(Permission::Administer),
    }
}

/// The DIMSE services a remote AE may be granted (`--remote-ae
/// CT1=host:port:store,commit`).
pub(crate) const DIMSE_SERVICES: &[(&str, Permission)] = &[
    ("store", Permission::Store),
    ("find", Permission::Query),
    ("move", Permission::Move),
    ("get", Permission::Retrieve),
    ("commit", Permission::Commit),
];

/// SOP classes that a reading physician makes rather than a modality
/// (PS3.4 Annex B): structured reports (`1.2.840.10008.5.1.4.1.1.88.*`,
/// including Key Object Selection `…88.59`), presentation states
/// (`…1.1.11.*`) and encapsulated documents (`…1.1.104.*`).
pub(crate) fn is_derived_sop_class(uid: &str) -> bool {
    let uid = uid.trim_end_matches(['\0', ' ']);
    [
        "1.2.840.10008.5.1.4.1.1.88.",
        "1.2.840.10008.5.1.4.1.1.11.",
        "1.2.840.10008.5.1.4.1.1.104.",
    ]
    .iter()
    .any(|p| uid.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_permission_is_in_the_table_once() {
        for (i, (p, roles)) in TABLE.iter().enumerate() {
            assert!(roles.contains(&Role::Admin), "{p}: admin has everything");
            assert!(TABLE[i + 1..].iter().all(|(q, _)| q != p), "{p} twice");
        }
        assert!(role_has(Role::Modality, Permission::Store));
        assert!(!role_has(Role::Modality, Permission::Query));
        assert!(!role_has(Role::Clinician, Permission::Store));
        assert!(!role_has(Role::Auditor, Permission::Retrieve));
        assert!(role_has(Role::Radiologist, Permission::StoreDerived));
        assert!(!role_has(Role::Radiologist, Permission::Store));
    }

    #[test]
    fn routes_need_what_the_readme_says() {
        let g = Method::GET;
        let cases = [
            (&g, "/healthz", Access::Public),
            (&g, "/", Access::Public),
            (&g, "/study/1.2.3", Access::Public),
            (&g, "/assets/index.js", Access::Public),
            (&g, "/api/auth/config", Access::Public),
            (&g, "/fhir/metadata", Access::Public),
            (&g, "/readyz", Access::Readiness),
            (&g, "/dicomweb/studies", Access::Needs(Permission::Query)),
            (&g, "/dicomweb/studies/", Access::Needs(Permission::Query)),
            (&g, "/dicomweb/series", Access::Needs(Permission::Query)),
            (
                &g,
                "/dicomweb/studies/1.2/series/1.3/instances",
                Access::Needs(Permission::Query),
            ),
            (
                &g,
                "/dicomweb/studies/1.2",
                Access::Needs(Permission::Retrieve),
            ),
            (
                &g,
                "/dicomweb/studies/1.2/metadata",
                Access::Needs(Permission::Retrieve),
            ),
            (
                &g,
                "/dicomweb/studies/1.2/thumbnail",
                Access::Needs(Permission::Retrieve),
            ),
            (
                &g,
                "/dicomweb/studies/1.2/series/1.3/instances/1.4/frames/1",
                Access::Needs(Permission::Retrieve),
            ),
            (
                &g,
                "/dicomweb/nonsense",
                Access::Needs(Permission::Administer),
            ),
            (&Method::POST, "/dicomweb/studies", Access::StoreAny),
            (&Method::POST, "/dicomweb/studies/1.2", Access::StoreAny),
            (
                &Method::POST,
                "/dicomweb/studies/1.2/series",
                Access::Needs(Permission::Administer),
            ),
            (
                &Method::DELETE,
                "/dicomweb/studies/1.2",
                Access::Needs(Permission::Administer),
            ),
            (
                &Method::DELETE,
                "/dicomweb/studies/1.2/series/1.3/instances/1.4",
                Access::Needs(Permission::Administer),
            ),
            (&g, "/wado", Access::Needs(Permission::Retrieve)),
            (
                &g,
                "/IHEInvokeImageDisplay",
                Access::Needs(Permission::Query),
            ),
            (
                &g,
                "/api/studies/1.2/emr-link",
                Access::Needs(Permission::Query),
            ),
            (
                &Method::PUT,
                "/api/studies/1.2/emr-link",
                Access::Needs(Permission::EmrLinkWrite),
            ),
            (
                &Method::DELETE,
                "/api/studies/1.2/emr-link",
                Access::Needs(Permission::EmrLinkWrite),
            ),
            (&g, "/api/emr-links", Access::Needs(Permission::Query)),
            (&g, "/api/changes", Access::Needs(Permission::Query)),
            (
                &g,
                "/api/webhooks/deliveries",
                Access::Needs(Permission::Administer),
            ),
            (&g, "/api/jobs", Access::Needs(Permission::Administer)),
            (
                &Method::POST,
                "/api/jobs/7/retry",
                Access::Needs(Permission::Administer),
            ),
            (&g, "/api/unknown", Access::Needs(Permission::Administer)),
            (&g, "/fhir/ImagingStudy", Access::Needs(Permission::Query)),
            (
                &g,
                "/fhir/ImagingStudy/1.2",
                Access::Needs(Permission::Query),
            ),
            (&g, "/fhir/AuditEvent", Access::Needs(Permission::AuditRead)),
            (&g, "/fhir/Patient", Access::Needs(Permission::Administer)),
            (&Method::POST, "/", Access::Needs(Permission::Administer)),
        ];
        for (m, p, want) in cases {
            assert_eq!(http_access(m, p), want, "{m} {p}");
        }
    }

    #[test]
    fn references_with_a_share_link_need_share() {
        let g = Method::GET;
        let p = "/api/studies/1.2/references";
        assert_eq!(
            http_access_with_query(&g, p, None),
            Access::Needs(Permission::Query)
        );
        assert_eq!(
            http_access_with_query(&g, p, Some("share_expires_in=60")),
            Access::Needs(Permission::Share)
        );
        assert_eq!(
            http_access_with_query(&g, "/dicomweb/studies", Some("share_expires_in=60")),
            Access::Needs(Permission::Query)
        );
    }

    #[test]
    fn derived_classes() {
        assert!(is_derived_sop_class("1.2.840.10008.5.1.4.1.1.88.59"));
        assert!(is_derived_sop_class("1.2.840.10008.5.1.4.1.1.88.22\0"));
        assert!(is_derived_sop_class("1.2.840.10008.5.1.4.1.1.11.1"));
        assert!(is_derived_sop_class("1.2.840.10008.5.1.4.1.1.104.1"));
        assert!(!is_derived_sop_class("1.2.840.10008.5.1.4.1.1.2"));
        assert!(!is_derived_sop_class("1.2.840.10008.5.1.4.1.1.881"));
    }
}
