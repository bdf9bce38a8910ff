//! A stored instance as a source of frames: its index row, its pixel
//! description (from the metadata prepared at ingest) and its frame index.
//! A frame is fetched by range reads of the stored object; only deflated
//! objects (whose bytes are not addressable) are read whole, up to a limit.

use bytes::Bytes;
use serde_json::Value;

use super::codec;
use super::pixel::{LutRef, LutSource, PixelInfo, Presentation};
use super::render::Luts;
use super::ImagingError;
use crate::dicom::frames::{frame_index, FrameIndex};
use crate::dicom::scan::{inflated_dataset, scan_dataset, ScanLimits};
use crate::dicom::transfer_syntax::{DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_LE};
use crate::index::metadata::inflate as inflate_metadata;
use crate::index::{Index, Scope, StoredInstance};
use crate::store::{ObjectKey, Store};

/// Deflated objects are inflated in memory to find their frames.
const MAX_DEFLATED_OBJECT: i64 = 256 << 20;

#[derive(Debug)]
enum Frames {
    Stored(FrameIndex),
    /// The inflated data set and its frame index (offsets into it).
    Inflated(Bytes, FrameIndex),
}

#[derive(Debug)]
pub struct Source {
    pub inst: StoredInstance,
    pub key: ObjectKey,
    pub doc: Value,
    pub info: PixelInfo,
    frames: Frames,
}

impl Source {
    /// The instance named by `scope` (which must name one instance).
    /// `Ok(None)`: no such instance.
    pub async fn open(
        index: &dyn Index,
        store: &Store,
        scope: &Scope,
    ) -> Result<Option<Source>, ImagingError> {
        let Some((inst, encoded)) = index.instance_frames(scope).await? else {
            return Ok(None);
        };
        Self::with_row(index, store, scope, inst, encoded)
            .await
            .map(Some)
    }

    /// The instance whose index row (and encoded frame index) the caller
    /// already read.
    pub(crate) async fn with_row(
        index: &dyn Index,
        store: &Store,
        scope: &Scope,
        inst: StoredInstance,
        encoded: Option<Vec<u8>>,
    ) -> Result<Source, ImagingError> {
        let doc = index
            .metadata(scope)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| ImagingError::Internal("an indexed instance without metadata".into()))?;
        // Inflating and parsing the metadata (megabytes for enhanced
        // multi-frame objects) is CPU work: off the async workers.
        let (doc, info) = tokio::task::spawn_blocking(move || -> Result<_, ImagingError> {
            let json = inflate_metadata(&doc)
                .map_err(|e| ImagingError::Internal(format!("stored metadata unreadable: {e}")))?;
            let doc: Value = serde_json::from_str(&json)
                .map_err(|e| ImagingError::Internal(format!("stored metadata is not JSON: {e}")))?;
            let info = PixelInfo::from_json(&doc)?;
            Ok((doc, info))
        })
        .await
        .map_err(|e| ImagingError::Internal(e.to_string()))??;
        let key = ObjectKey::from_stored(&inst.object_key)
            .map_err(|e| ImagingError::Internal(format!("bad object key in index: {e}")))?;
        let ts = inst.transfer_syntax_uid.as_str();
        if !codec::can_decode(ts) {
            return Err(ImagingError::Unsupported(format!(
                "pixel data in transfer syntax {ts} is not decoded by this server"
            )));
        }
        let frames = if ts == DEFLATED_EXPLICIT_VR_LE {
            if inst.size > MAX_DEFLATED_OBJECT {
                return Err(ImagingError::Unsupported(
                    "deflated objects over 256 MiB are not decoded".into(),
                ));
            }
            let whole = store.get_bytes(&key).await?;
            let (data, index) = tokio::task::spawn_blocking(move || {
                let data = inflated_dataset(&whole).ok()?;
                let scanned = scan_dataset(&data, EXPLICIT_VR_LE, &ScanLimits::default()).ok()?;
                let index = frame_index(&scanned)?;
                Some((Bytes::from(data), index))
            })
            .await
            .map_err(|e| ImagingError::Internal(e.to_string()))?
            .ok_or_else(|| ImagingError::Corrupt("the deflated data set has no frames".into()))?;
            Frames::Inflated(data, index)
        } else {
            let index = encoded
                .as_deref()
                .and_then(FrameIndex::decode)
                .ok_or_else(|| {
                    ImagingError::NotFound("this instance has no frames that can be served".into())
                })?;
            Frames::Stored(index)
        };
        Ok(Source {
            inst,
            key,
            doc,
            info,
            frames,
        })
    }

    pub(crate) fn frame_count(&self) -> u32 {
        let n = match &self.frames {
            Frames::Stored(i) | Frames::Inflated(_, i) => i.frames(),
        };
        n.min(u64::from(u32::MAX)) as u32
    }

    /// The transfer syntax the frame bytes are in: inflated frames are
    /// Explicit VR Little Endian.
    pub(crate) fn frame_syntax(&self) -> &str {
        match &self.frames {
            Frames::Stored(_) => &self.inst.transfer_syntax_uid,
            Frames::Inflated(..) => EXPLICIT_VR_LE,
        }
    }

    /// The bytes of frame `n` (0-based) as stored (8-bit samples of
    /// big-endian OW words put back in order).
    pub async fn frame(&self, store: &Store, n: u32) -> Result<Vec<u8>, ImagingError> {
        let missing = || {
            ImagingError::NotFound(format!(
                "frame {} does not exist (the instance has {})",
                u64::from(n) + 1,
                self.frame_count()
            ))
        };
        match &self.frames {
            Frames::Stored(index) => {
                let ranges = index.ranges(u64::from(n)).ok_or_else(missing)?;
                let mut out = Vec::new();
                for (offset, len) in ranges {
                    out.extend_from_slice(&store.get_range(&self.key, offset..offset + len).await?);
                }
                Ok(index.unswap_words(u64::from(n), out))
            }
            Frames::Inflated(data, index) => {
                let ranges = index.ranges(u64::from(n)).ok_or_else(missing)?;
                let mut out = Vec::new();
                for (offset, len) in ranges {
                    let r = data
                        .get(offset as usize..(offset + len) as usize)
                        .ok_or_else(|| {
                            ImagingError::Corrupt("frame outside the data set".into())
                        })?;
                    out.extend_from_slice(r);
                }
                Ok(out)
            }
        }
    }

    /// The presentation of frame `n` with its LUT data fetched.
    pub async fn presentation(
        &self,
        store: &Store,
        n: u32,
    ) -> Result<(Presentation, Luts), ImagingError> {
        let pres = Presentation::from_json(&self.doc, n)?;
        let fetch = |l: Option<LutRef>| async move {
            let Some(l) = l else {
                return Ok::<_, ImagingError>(None);
            };
            let bytes = match &l.data {
                LutSource::Inline(b) => Bytes::from(b.clone()),
                LutSource::Bulk { offset, length } => {
                    if *length > 1 << 20 {
                        return Err(ImagingError::Corrupt("a LUT over 1 MiB".into()));
                    }
                    store.get_range(&self.key, *offset..offset + length).await?
                }
            };
            Ok(Some(l.resolve(&bytes)?))
        };
        let modality = fetch(pres.modality_lut.clone()).await?;
        let voi = fetch(pres.voi_lut.clone()).await?;
        let palette = match &pres.palette {
            Some([r, g, b]) => {
                let (r, g, b) = (
                    fetch(Some(r.clone())).await?,
                    fetch(Some(g.clone())).await?,
                    fetch(Some(b.clone())).await?,
                );
                r.zip(g).zip(b).map(|((r, g), b)| [r, g, b])
            }
            None => None,
        };
        Ok((
            pres,
            Luts {
                modality,
                voi,
                palette,
            },
        ))
    }
}

impl Source {
    /// Decodes and renders frame `n` (0-based) on the imaging pool.
    pub async fn render(
        &self,
        store: &Store,
        imaging: &super::Imaging,
        n: u32,
        params: super::render::RenderParams,
    ) -> Result<image::DynamicImage, ImagingError> {
        let data = self.frame(store, n).await?;
        let (pres, luts) = self.presentation(store, n).await?;
        let info = self.info.clone();
        let ts = self.frame_syntax().to_owned();
        let img = imaging
            .run(move || {
                let frame = codec::decode(&info, &ts, &data)?;
                super::render::render(&frame, &info, &pres, &luts, &params)
            })
            .await
            .map_err(|e| self.frame_error(n, e))?;
        Ok(img)
    }

    /// A decoding failure of frame `n` (0-based), naming the frame and the
    /// instance: the client's message and the log then say which stored
    /// object is damaged.
    fn frame_error(&self, n: u32, e: ImagingError) -> ImagingError {
        use super::ImagingError::{Corrupt, Panicked};
        let at = |m: String| format!("frame {} of instance {}: {m}", n + 1, self.inst.sop_uid);
        match e {
            Corrupt(m) => Corrupt(at(m)),
            Panicked(m) => Panicked(at(m)),
            other => other,
        }
    }

    /// Decodes frame `n` on the imaging pool.
    pub async fn decode(
        &self,
        store: &Store,
        imaging: &super::Imaging,
        n: u32,
    ) -> Result<super::frame::Frame, ImagingError> {
        let data = self.frame(store, n).await?;
        let info = self.info.clone();
        let ts = self.frame_syntax().to_owned();
        imaging
            .run(move || codec::decode(&info, &ts, &data))
            .await
            .map_err(|e| self.frame_error(n, e))
    }
}

impl Source {
    /// Where frame 1's bytes start (in the object, or in the inflated data
    /// set of a deflated object): everything before is header.
    pub(crate) fn first_frame_offset(&self) -> u64 {
        match &self.frames {
            Frames::Stored(i) | Frames::Inflated(_, i) => i
                .ranges(0)
                .and_then(|r| r.first().map(|(o, _)| *o))
                .unwrap_or(0),
        }
    }

    /// The bytes before `end`, and whether they are a bare data set (the
    /// inflated data set of a deflated object) rather than a Part 10 file.
    pub(crate) async fn header_bytes(
        &self,
        store: &Store,
        end: u64,
    ) -> Result<(Vec<u8>, bool), ImagingError> {
        match &self.frames {
            Frames::Stored(_) => Ok((store.get_range(&self.key, 0..end).await?.to_vec(), false)),
            Frames::Inflated(data, _) => Ok((
                data.get(..end as usize)
                    .ok_or_else(|| ImagingError::Corrupt("frame outside the data set".into()))?
                    .to_vec(),
                true,
            )),
        }
    }
}
