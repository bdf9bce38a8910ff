//! DIMSE (PS3.7, PS3.8) for modalities and workstations: associations on
//! dicom-ul, our own command handling on top. One file per service:
//! [`echo`] (C-ECHO, PS3.4 Annex A), [`store`] (C-STORE SCP, Annex B),
//! [`find`] (C-FIND SCP, Annex C).
//!
//! Every association runs in its own task under a global bound; reads and
//! writes have timeouts, so a slow or dead peer only holds its own task.

pub mod association;
pub mod command;
pub mod echo;
pub mod find;
pub mod sop_classes;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dicom_ul::association::server::AccessControl;
use dicom_ul::pdu::{
    AssociationRJ, AssociationRJResult, AssociationRJServiceProviderPresentationReason,
    AssociationRJServiceUserReason, AssociationRJSource, Pdu, UserIdentity,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::index::Index;
use crate::ingest::Ingest;

/// What the services need from the rest of Phim.
#[derive(Debug, Clone)]
pub struct Services {
    pub ingest: Ingest,
    pub index: Arc<dyn Index>,
}

pub const VERIFICATION: &str = "1.2.840.10008.1.1";

/// What the DICOM listener needs.
#[derive(Debug, Clone)]
pub struct DimseConfig {
    pub listen: SocketAddr,
    pub ae_title: String,
    /// Calling AE titles allowed to associate (empty: any).
    pub allowed_callers: Vec<String>,
    pub max_associations: usize,
    /// ARTIM, read and write timeout.
    pub timeout: Duration,
    /// Largest P-DATA PDU we accept (strictly enforced).
    pub max_pdu_length: u32,
}

/// Who may associate: the called AE title must be ours, and the calling
/// one on the allow-list when there is one.
#[derive(Debug, Clone)]
struct Policy {
    allowed_callers: Arc<Vec<String>>,
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
        if !self.allowed_callers.is_empty()
            && !self
                .allowed_callers
                .iter()
                .any(|a| a == calling_ae_title.trim())
        {
            return Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized);
        }
        Ok(())
    }
}

/// Binds the DICOM port (so start-up fails early when it is taken).
pub async fn bind(config: &DimseConfig) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(config.listen).await
}

/// Accepts associations until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: DimseConfig,
    services: Services,
    shutdown: CancellationToken,
) {
    let limit = Arc::new(Semaphore::new(config.max_associations.max(1)));
    let config = Arc::new(config);
    let policy = Policy {
        allowed_callers: Arc::new(config.allowed_callers.clone()),
    };
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (mut socket, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "DICOM accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            // PS3.8 §9.3.4: reject, transient, local limit exceeded.
            tracing::warn!(%peer, "association rejected: too many associations");
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let rj = Pdu::AssociationRJ(AssociationRJ {
                    result: AssociationRJResult::Transient,
                    source: AssociationRJSource::ServiceProviderPresentation(
                        AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
                    ),
                });
                if dicom_ul::write_pdu(&mut buf, &rj).is_ok() {
                    let _ =
                        tokio::time::timeout(Duration::from_secs(5), socket.write_all(&buf)).await;
                }
            });
            continue;
        };
        let (config, services, policy) = (config.clone(), services.clone(), policy.clone());
        tokio::spawn(async move {
            association::run(socket, peer, &config, policy, &services).await;
            drop(permit);
        });
    }
    tracing::info!("DICOM listener stopped");
}
