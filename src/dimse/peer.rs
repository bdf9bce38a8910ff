//! What the DIMSE services need to know of the association they serve.

use dicom_ul::pdu::PresentationContextNegotiated;

/// What the services need to know of the association.
pub(crate) struct Peer {
    /// What the calling AE may do (`--remote-ae …:store,find,…`).
    pub(crate) permissions: crate::auth::Permissions,
    pub(crate) address: std::net::IpAddr,
    pub(crate) calling_ae: String,
    pub(super) contexts: Vec<PresentationContextNegotiated>,
    /// Storage SOP classes for which the requestor took the SCP role.
    pub(super) scp_roles: Vec<String>,
    pub(super) max_pdu: u32,
}

impl Peer {
    /// The calling AE as the audit trail names it.
    pub(crate) fn actor(&self) -> crate::audit::Actor {
        crate::audit::Actor {
            method: crate::auth::Method::AeTitle.as_str().into(),
            name: self.calling_ae.clone(),
            roles: Vec::new(),
            address: Some(self.address.to_string()),
        }
    }

    pub(crate) fn presentation_contexts(&self) -> &[PresentationContextNegotiated] {
        &self.contexts
    }

    /// Largest PDU the requestor accepts.
    pub(crate) fn requestor_max_pdu_length(&self) -> u32 {
        self.max_pdu
    }

    /// Whether the requestor may act as SCP for `sop_class` (C-GET).
    pub(crate) fn is_scp_for(&self, sop_class: &str) -> bool {
        self.scp_roles.iter().any(|c| c == sop_class)
    }
}
