//! Thumbnails (PS3.18 §10.4.1.1.6) of series and studies, made after
//! ingest in the background and kept in the object store.
//!
//! Representative image: a series is shown by its middle instance in
//! instance-number order (the middle slice of a CT/MR stack shows anatomy;
//! the first is often an edge slice) and, for a multi-frame instance, its
//! middle frame; a study by its series with the most instances (the main
//! acquisition rather than a localizer), ties to the first.
//!
//! Ingest queues the series as a `thumbnail` job (debounced so a study
//! arriving instance by instance is rendered once it pauses); the job
//! runner (`crate::jobs`) of any server claims it with a lease, so several
//! servers share the work and a restarted server finishes what was queued. A thumbnail's
//! key carries the series' instance count: a series that grows gets a new
//! thumbnail and a missing one is rendered on demand.

use std::sync::Arc;

use bytes::Bytes;

use super::render::{self, Format, RenderParams, Viewport};
use super::source::Source;
use super::{Imaging, ImagingError};
use crate::dicom::Uid;
use crate::index::{ClaimedJob, Index, JobEnd, Scope, StoredInstance};
use crate::jobs::{retry_at, Handler};
use crate::store::{ObjectKey, Store};

/// The size made ahead of time (what the bundled viewer asks for).
pub(crate) const DEFAULT_SIZE: u32 = 128;
/// Attempts before a job that keeps failing is dead (the thumbnail is then
/// rendered on demand, with the error answered to the client).
pub(crate) const MAX_ATTEMPTS: i64 = 3;

#[derive(Clone, Debug)]
pub struct Thumbnails {
    pub index: Arc<dyn Index>,
    pub store: Store,
    pub imaging: Imaging,
}

/// The representative instance of a study's or series' instances (given
/// in series and instance-number order).
pub(crate) fn representative(instances: &[StoredInstance]) -> Option<(&StoredInstance, usize)> {
    let mut best: Option<(&str, usize, usize)> = None; // series, start, count
    let mut start = 0;
    for (i, inst) in instances.iter().enumerate() {
        let last = instances
            .get(i + 1)
            .is_none_or(|n| n.series_uid != inst.series_uid);
        if last {
            let count = i + 1 - start;
            if best.is_none_or(|(_, _, c)| count > c) {
                best = Some((&inst.series_uid, start, count));
            }
            start = i + 1;
        }
    }
    let (_, start, count) = best?;
    Some((&instances[start + count / 2], count))
}

impl Thumbnails {
    /// The thumbnail of a study or series scope, from the store when made
    /// before, else rendered now and kept.
    pub async fn get(&self, scope: &Scope, params: RenderParams) -> Result<Bytes, ImagingError> {
        let instances = self.index.instances(scope).await?;
        let (inst, count) = representative(&instances)
            .ok_or_else(|| ImagingError::NotFound("no instances in this study or series".into()))?;
        let series = Uid::parse(&inst.series_uid)
            .map_err(|e| ImagingError::Internal(format!("bad series UID in index: {e}")))?;
        let study = scope.study.clone();
        let (w, h) = params
            .viewport
            .map_or((DEFAULT_SIZE, DEFAULT_SIZE), |v| (v.width, v.height));
        let cacheable = params.window.is_none()
            && params.viewport.is_none_or(|v| v.region.is_none())
            && params.format != Format::Gif;
        let ext = match params.format {
            Format::Png => "png",
            _ => "jpg",
        };
        let version = format!("{count}-{}", inst.sha256.get(..12).unwrap_or(&inst.sha256));
        let key = ObjectKey::thumbnail(
            &study,
            &series,
            &version,
            &format!("{w}x{h}q{}.{ext}", params.quality),
        );
        if cacheable {
            match self.store.get_bytes(&key).await {
                Ok(b) => return Ok(b),
                Err(crate::store::StoreError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let inst_scope = Scope::of_instance(inst)
            .map_err(|e| ImagingError::Internal(format!("bad UID in index: {e}")))?;
        let bytes = self
            .render_instance(&inst_scope, None, params, (w, h))
            .await?;
        if cacheable {
            if let Err(e) = self.store.put_bytes(&key, bytes.clone()).await {
                tracing::warn!(key = key.as_str(), error = %e, "thumbnail not kept");
            }
        }
        Ok(bytes)
    }

    /// The thumbnail of one instance (its middle frame) or of one frame.
    pub(crate) async fn render_instance(
        &self,
        scope: &Scope,
        frame: Option<u32>,
        mut params: RenderParams,
        (w, h): (u32, u32),
    ) -> Result<Bytes, ImagingError> {
        let src = Source::open(self.index.as_ref(), &self.store, scope)
            .await?
            .ok_or_else(|| ImagingError::NotFound("no such instance".into()))?;
        let n = frame.unwrap_or(src.frame_count() / 2);
        params.viewport = Some(Viewport {
            width: w,
            height: h,
            region: params.viewport.and_then(|v| v.region),
        });
        let img = src.render(&self.store, &self.imaging, n, params).await?;
        let format = if params.format == Format::Gif {
            Format::Jpeg
        } else {
            params.format
        };
        let quality = params.quality;
        let bytes = self
            .imaging
            .run(move || render::encode(&[img], format, quality))
            .await?;
        Ok(Bytes::from(bytes))
    }
}

/// A `thumbnail` job: key the series UID, payload the study UID.
#[async_trait::async_trait]
impl Handler for Thumbnails {
    async fn run(&self, job: &ClaimedJob) -> JobEnd {
        let (Ok(study), Ok(series)) = (Uid::parse(&job.payload), Uid::parse(&job.key)) else {
            return JobEnd::Dead {
                error: "the job does not name a study and a series".to_owned(),
            };
        };
        let scope = Scope {
            study,
            series: Some(series),
            instance: None,
        };
        let params = RenderParams {
            quality: 80,
            ..RenderParams::default()
        };
        match self.get(&scope, params).await {
            Ok(_) => JobEnd::Done,
            Err(e) => JobEnd::Retry {
                at: retry_at(job.attempts, crate::index::now_ms()),
                error: e.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(series: &str, n: i64) -> StoredInstance {
        StoredInstance {
            study_uid: "1".into(),
            series_uid: series.into(),
            sop_uid: format!("{series}.{n}"),
            sop_class_uid: String::new(),
            instance_number: Some(n),
            transfer_syntax_uid: String::new(),
            object_key: String::new(),
            size: 0,
            sha256: String::new(),
        }
    }

    #[test]
    fn middle_of_the_largest_series() {
        let v = vec![
            inst("1.1", 1),
            inst("1.2", 1),
            inst("1.2", 2),
            inst("1.2", 3),
            inst("1.3", 1),
        ];
        let (r, count) = representative(&v).unwrap();
        assert_eq!((r.sop_uid.as_str(), count), ("1.2.2", 3));
        assert!(representative(&[]).is_none());
    }
}
