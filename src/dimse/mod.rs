//! DIMSE (PS3.7, PS3.8) for modalities and workstations: associations on
//! dicom-ul, our own command handling on top. One file per service:
//! [`echo`] (C-ECHO, PS3.4 Annex A), [`store`] (C-STORE SCP, Annex B),
//! [`find`] (C-FIND SCP, Annex C), [`retrieve`] (C-MOVE and C-GET SCP,
//! Annex C), [`commitment`] (Storage Commitment Push Model SCP, Annex J).
//!
//! Every association runs in its own task under a global bound; reads and
//! writes have timeouts, so a slow or dead peer only holds its own task.

pub(crate) mod association;
pub(crate) mod command;
pub(crate) mod commitment;
pub(crate) mod echo;
pub(crate) mod find;
pub(crate) mod job;
pub(crate) mod peer;
pub(crate) mod retrieve;
pub(crate) mod sop_classes;
pub(crate) mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dicom_ul::association::server::{AccessControl, Negotiation};
use dicom_ul::pdu::{
    AssociationRJ, AssociationRJResult, AssociationRJServiceProviderPresentationReason,
    AssociationRJServiceUserReason, AssociationRJSource, Pdu, RequestorRoles, UserIdentity,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::audit::Audit;
use crate::auth::Permissions;
use crate::index::Index;
use crate::ingest::Ingest;
use crate::store::Store;

/// What the services need from the rest of Phim.
#[derive(Debug, Clone)]
pub(crate) struct Services {
    pub ingest: Ingest,
    pub index: Arc<dyn Index>,
    pub store: Store,
    pub audit: Audit,
    /// The imaging pool (C-MOVE and C-GET transcode on it).
    pub imaging: crate::imaging::Imaging,
}

/// A known peer: what it may do here (the permission table of
/// `auth::policy`, by DIMSE service), and where we reach it (C-MOVE
/// destinations, storage commitment requesters that want their report on
/// a new association).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RemoteAe {
    pub(crate) title: String,
    /// host:port
    pub(crate) address: String,
    /// Services it may invoke (`:store,find,…`; all when none are named).
    pub(crate) permissions: Permissions,
    /// Only from these addresses (`from-host`: its host, resolved at
    /// start-up); empty: from anywhere.
    pub from: Vec<std::net::IpAddr>,
}

pub(crate) const VERIFICATION: &str = "1.2.840.10008.1.1";

/// What the DICOM listener needs.
#[derive(Debug, Clone)]
pub(crate) struct DimseConfig {
    pub(crate) listen: SocketAddr,
    pub(crate) ae_title: String,
    /// Calling AE titles allowed to associate (empty: any).
    pub(crate) allowed_callers: Vec<String>,
    pub(crate) max_associations: usize,
    /// ARTIM, read and write timeout.
    pub timeout: Duration,
    /// Largest P-DATA PDU we accept (strictly enforced).
    pub(crate) max_pdu_length: u32,
    /// Known remote AEs (C-MOVE destinations, commitment requesters).
    pub(crate) remote_aes: Vec<RemoteAe>,
    /// Instances one C-MOVE or C-GET may retrieve at most.
    pub(crate) max_retrieve: usize,
    /// Reject calling AE titles that are not in `remote_aes`.
    pub(crate) require_known_ae: bool,
}

impl DimseConfig {
    pub(crate) fn remote_ae(&self, title: &str) -> Option<&RemoteAe> {
        let title = title.trim();
        self.remote_aes.iter().find(|r| r.title == title)
    }
}

/// SCP/SCU role selection (PS3.7 D.3.3.4): a C-GET SCU takes the SCP role
/// for the storage classes it wants to receive; we accept the roles it
/// proposes for those, and answer nothing (default roles) for the rest.
#[derive(Debug, Clone, Copy)]
struct Roles;

impl Negotiation for Roles {
    fn negotiate_roles(
        &self,
        sop_class_uid: &str,
        scu_role: bool,
        scp_role: bool,
    ) -> Option<RequestorRoles> {
        let uid = sop_class_uid.trim_end_matches(['\0', ' ']);
        sop_classes::STORAGE_SOP_CLASSES
            .iter()
            .any(|(u, _)| *u == uid)
            .then_some(RequestorRoles {
                scu: scu_role,
                scp: scp_role,
            })
    }
}

/// Who may associate: the called AE title must be ours; the calling one
/// on the allow-list when there is one, a known remote AE when they are
/// required, and connecting from its own host when it is bound to it
/// (PS3.8 §7.1.1.9: rejected-permanent, calling AE title not recognized).
#[derive(Debug, Clone)]
struct Policy {
    config: Arc<DimseConfig>,
    peer: std::net::IpAddr,
}

impl AccessControl for Policy {
    fn check_access(
        &self,
        this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        if called_ae_title.trim() != this_ae_title.trim() {
            return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
        }
        let calling = calling_ae_title.trim();
        let allowed = &self.config.allowed_callers;
        if !allowed.is_empty() && !allowed.iter().any(|a| a == calling) {
            return Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized);
        }
        match self.config.remote_ae(calling) {
            Some(ae) if !ae.from.is_empty() && !ae.from.contains(&self.peer) => {
                Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized)
            }
            None if self.config.require_known_ae => {
                Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized)
            }
            _ => Ok(()),
        }
    }
}

impl DimseConfig {
    /// What a calling AE may do: a known AE what it was granted, an
    /// unknown one (allowed only without `require_known_ae`) everything.
    pub(crate) fn permissions_of(&self, calling: &str) -> Permissions {
        match self.remote_ae(calling) {
            Some(ae) => ae.permissions,
            None => Permissions::all(),
        }
    }
}

/// Binds the DICOM port (so start-up fails early when it is taken).
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// The bound on associations at once, shared by the plain and the TLS
/// listener.
pub(crate) fn association_limit(config: &DimseConfig) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(config.max_associations.max(1)))
}

/// Accepts associations until `shutdown` is cancelled; with `tls`, each
/// connection is a DICOM TLS one (PS3.15 B.1).
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    config: Arc<DimseConfig>,
    services: Services,
    limit: Arc<Semaphore>,
    shutdown: CancellationToken,
) {
    let silent = Arc::new(Semaphore::new((config.max_associations * 8).max(256)));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (socket, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "DICOM accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        // A connection takes an association place only once it has sent
        // something: silent ones (port scans, a peer that connects and
        // waits) cannot fill the places of the modalities that talk.
        let Ok(waiting) = silent.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "connection closed: too many connections that send nothing");
            continue;
        };
        let policy = Policy {
            config: config.clone(),
            peer: peer.ip(),
        };
        let (config, services, tls, limit) =
            (config.clone(), services.clone(), tls.clone(), limit.clone());
        tokio::spawn(async move {
            let mut first = [0u8; 1];
            let wait = config.timeout.min(FIRST_PDU_WAIT);
            let spoke = tokio::time::timeout(wait, socket.peek(&mut first)).await;
            drop(waiting);
            if !matches!(spoke, Ok(Ok(n)) if n > 0) {
                tracing::info!(%peer, wait_s = wait.as_secs(), "connection closed: no A-ASSOCIATE-RQ");
                return;
            }
            let Ok(permit) = limit.try_acquire_owned() else {
                reject_busy(socket, peer).await;
                return;
            };
            association::run(socket, peer, &config, policy, &services, tls).await;
            drop(permit);
        });
    }
    // Associations in flight hold a place each: they are done when every
    // place is back (the caller bounds the wait, --shutdown-timeout).
    tracing::info!("DICOM listener stopped; waiting for associations in flight");
    let places = u32::try_from(config.max_associations.max(1)).unwrap_or(u32::MAX);
    let _ = limit.acquire_many(places).await;
    tracing::info!("DICOM associations finished");
}

/// How long a new connection may stay silent before its A-ASSOCIATE-RQ
/// (or TLS handshake) starts: at most --dicom-timeout (PS3.8 §9.1.5, ARTIM).
const FIRST_PDU_WAIT: Duration = Duration::from_secs(10);

/// PS3.8 §9.3.4: reject, transient, local limit exceeded.
async fn reject_busy(mut socket: tokio::net::TcpStream, peer: std::net::SocketAddr) {
    tracing::warn!(%peer, "association rejected: too many associations");
    let mut buf = Vec::new();
    let rj = Pdu::AssociationRJ(AssociationRJ {
        result: AssociationRJResult::Transient,
        source: AssociationRJSource::ServiceProviderPresentation(
            AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
        ),
    });
    if dicom_ul::write_pdu(&mut buf, &rj).is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(5), socket.write_all(&buf)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scp_role_only_for_storage_classes() {
        let ct = "1.2.840.10008.5.1.4.1.1.2";
        assert_eq!(
            Roles.negotiate_roles(ct, true, true),
            Some(RequestorRoles {
                scu: true,
                scp: true
            })
        );
        assert_eq!(
            Roles.negotiate_roles(&format!("{ct}\0"), false, true),
            Some(RequestorRoles {
                scu: false,
                scp: true
            })
        );
        assert_eq!(
            Roles.negotiate_roles(commitment::STORAGE_COMMITMENT, true, true),
            None
        );
    }
}
