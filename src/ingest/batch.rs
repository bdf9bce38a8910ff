//! The instances of one request going through the pipeline together (the
//! parts of a STOW-RS body): started as each is spooled, at most
//! `2 × --ingest-concurrency` spooled and waiting at once, so that the
//! caller reads the next part only when there is room; each result is
//! handed back as it finishes, with its part number (request order).

use tokio::task::JoinSet;

use super::{Ingest, IngestError, IngestFailure, Spool, Stored};
use crate::dicom::Uid;

/// The outcome of one part.
pub(crate) type PartResult = Result<Stored, IngestFailure>;

pub(crate) struct Batch {
    ingest: Ingest,
    /// The study the request names (STOW-RS `POST /studies/{study}`).
    study: Option<Uid>,
    /// The caller may store derived objects only (checked per instance).
    derived_only: bool,
    tasks: JoinSet<(usize, PartResult)>,
    max_in_flight: usize,
}

impl Batch {
    pub(crate) fn new(ingest: &Ingest, study: Option<Uid>, derived_only: bool) -> Batch {
        Batch {
            ingest: ingest.clone(),
            study,
            derived_only,
            tasks: JoinSet::new(),
            max_in_flight: ingest.config().concurrency.max(1) * 2,
        }
    }

    pub(crate) fn ingest(&self) -> &Ingest {
        &self.ingest
    }

    /// Starts the pipeline on part `part`.
    pub(crate) fn start(&mut self, part: usize, spool: Spool) {
        let ingest = self.ingest.clone();
        let study = self.study.clone();
        let derived_only = self.derived_only;
        self.tasks.spawn(async move {
            let result = ingest.ingest_as(spool, study.as_ref(), derived_only).await;
            (part, result)
        });
    }

    /// Waits until another part may be started, handing over every result
    /// finished meanwhile.
    pub(crate) async fn make_room(
        &mut self,
        done: &mut impl FnMut(usize, PartResult),
    ) -> Result<(), IngestError> {
        while self.tasks.len() >= self.max_in_flight {
            if let Some(joined) = self.tasks.join_next().await {
                let (i, r) = joined.map_err(task_failed)?;
                done(i, r);
            }
        }
        while let Some(joined) = self.tasks.try_join_next() {
            let (i, r) = joined.map_err(task_failed)?;
            done(i, r);
        }
        Ok(())
    }

    /// Waits for every part started, handing over their results.
    pub(crate) async fn finish(
        mut self,
        done: &mut impl FnMut(usize, PartResult),
    ) -> Result<(), IngestError> {
        while let Some(joined) = self.tasks.join_next().await {
            let (i, r) = joined.map_err(task_failed)?;
            done(i, r);
        }
        Ok(())
    }
}

fn task_failed(e: tokio::task::JoinError) -> IngestError {
    IngestError::Internal(format!("ingest task failed: {e}"))
}
