//! Instances as one ZIP (`Accept: application/zip`, one of the bulk media
//! types of PS3.18 §8.7.3 for the Study, Series and Instance resources):
//! each stored object as it is, uncompressed, streamed in and out one at a
//! time (entries with data descriptors, Zip64 when the archive needs it),
//! so a study never sits whole in memory. Entries are named like a
//! patient's CD (`DICOM/ST000001/SE000001/IM000001`: PS3.11 File IDs of at
//! most eight upper-case characters per component, no extension).

use std::collections::HashMap;
use std::io;

use async_zip::base::write::ZipFileWriter;
use async_zip::{Compression, ZipEntryBuilder};
use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::io::AsyncWriteExt;
use futures::{stream, StreamExt};
use tokio_util::io::ReaderStream;

use super::stored_key;
use crate::dicom::dicomdir::Record;
use crate::index::{Scope, StoredInstance};
use crate::store::Store;

/// Bytes buffered between the ZIP writer and the response body.
const PIPE: usize = 256 * 1024;

/// The ZIP response for `instances` (in series and instance order). A
/// failure after the first byte ends the body with an error (the client
/// sees a broken transfer, never a short archive that looks whole).
pub(super) fn response(
    store: Store,
    scope: &Scope,
    instances: Vec<StoredInstance>,
    dicomdir: Option<Vec<u8>>,
) -> Response {
    let (writer, reader) = tokio::io::duplex(PIPE);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let study = scope.study.to_string();
    tokio::spawn(async move {
        let result = write(store, &instances, dicomdir, writer).await;
        if let Err(e) = &result {
            tracing::warn!(study, error = %e, "ZIP export ended early");
        }
        let _ = done_tx.send(result);
    });
    let end = stream::once(async move {
        match done_rx.await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(Err(e)),
            Err(_) => Some(Err(io::Error::other("the ZIP writer stopped"))),
        }
    })
    .filter_map(|r| async move { r });
    let name = match (&scope.series, &scope.instance) {
        (_, Some(i)) => format!("instance-{i}.zip"),
        (Some(s), None) => format!("series-{s}.zip"),
        (None, None) => format!("study-{}.zip", scope.study),
    };
    (
        [
            (header::CONTENT_TYPE, "application/zip".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        Body::from_stream(ReaderStream::new(reader).chain(end)),
    )
        .into_response()
}

/// The DICOMDIR of the archive (`?dicomdir=true`): a PATIENT, STUDY and
/// SERIES record per study and series and one record per instance, keyed
/// from the instances' metadata documents (`docs`, DICOM JSON by SOP
/// Instance UID).
pub(super) fn dicomdir(
    instances: &[StoredInstance],
    docs: &HashMap<String, serde_json::Value>,
) -> Vec<u8> {
    let none = serde_json::Value::Null;
    let doc = |sop: &str| docs.get(sop).unwrap_or(&none);
    let key = |d: &serde_json::Value, group, element, vr: &[u8; 2], tag: &str| {
        (group, element, *vr, first_value(d, tag).unwrap_or_default())
    };
    let mut patients: Vec<Record> = Vec::new();
    let mut study_of: Vec<(String, usize, usize)> = Vec::new();
    for (inst, id) in instances.iter().zip(file_ids(instances)) {
        let d = doc(&inst.sop_uid);
        let (p, s) = match study_of.iter().find(|(uid, _, _)| *uid == inst.study_uid) {
            Some(&(_, p, s)) => (p, s),
            None => {
                let pid = first_value(d, "00100020").unwrap_or_default();
                let p = match patients.iter().position(|r| r.keys[1].3 == pid) {
                    Some(p) => p,
                    None => {
                        patients.push(record(
                            "PATIENT",
                            vec![
                                key(d, 0x0010, 0x0010, b"PN", "00100010"),
                                (0x0010, 0x0020, *b"LO", pid),
                            ],
                        ));
                        patients.len() - 1
                    }
                };
                patients[p].children.push(record(
                    "STUDY",
                    vec![
                        key(d, 0x0008, 0x0020, b"DA", "00080020"),
                        key(d, 0x0008, 0x0030, b"TM", "00080030"),
                        key(d, 0x0008, 0x0050, b"SH", "00080050"),
                        key(d, 0x0008, 0x1030, b"LO", "00081030"),
                        (0x0020, 0x000D, *b"UI", inst.study_uid.clone()),
                        key(d, 0x0020, 0x0010, b"SH", "00200010"),
                    ],
                ));
                let s = patients[p].children.len() - 1;
                study_of.push((inst.study_uid.clone(), p, s));
                (p, s)
            }
        };
        let study = &mut patients[p].children[s];
        let same_series = study
            .children
            .last()
            .is_some_and(|se| se.keys[1].3 == inst.series_uid);
        if !same_series {
            study.children.push(record(
                "SERIES",
                vec![
                    key(d, 0x0008, 0x0060, b"CS", "00080060"),
                    (0x0020, 0x000E, *b"UI", inst.series_uid.clone()),
                    key(d, 0x0020, 0x0011, b"IS", "00200011"),
                ],
            ));
        }
        let (kind, dated) = leaf_kind(&inst.sop_class_uid);
        let mut keys = Vec::new();
        if dated {
            keys.push(key(d, 0x0008, 0x0023, b"DA", "00080023"));
            keys.push(key(d, 0x0008, 0x0033, b"TM", "00080033"));
        }
        keys.push(key(d, 0x0020, 0x0013, b"IS", "00200013"));
        let mut leaf = record(kind, keys);
        leaf.file = Some((
            id.split('/').map(str::to_owned).collect(),
            inst.sop_class_uid.clone(),
            inst.sop_uid.clone(),
            inst.transfer_syntax_uid.clone(),
        ));
        if let Some(series) = study.children.last_mut() {
            series.children.push(leaf);
        }
    }
    let uid = format!("2.25.{}", uuid::Uuid::new_v4().as_u128());
    crate::dicom::dicomdir::dicomdir(&patients, &uid)
}

fn record(kind: &'static str, keys: Vec<(u16, u16, [u8; 2], String)>) -> Record {
    Record {
        kind,
        file: None,
        keys,
        children: Vec::new(),
    }
}

/// The Directory Record Type of an instance (PS3.3 F.5) and whether its
/// record carries Content Date/Time (the non-image ones do).
fn leaf_kind(sop_class: &str) -> (&'static str, bool) {
    if sop_class == crate::ingest::rejection::KEY_OBJECT_SELECTION {
        ("KEY OBJECT DOC", true)
    } else if sop_class.starts_with("1.2.840.10008.5.1.4.1.1.88.") {
        ("SR DOCUMENT", true)
    } else if sop_class.starts_with("1.2.840.10008.5.1.4.1.1.11.") {
        ("PRESENTATION", true)
    } else if sop_class.starts_with("1.2.840.10008.5.1.4.1.1.104.") {
        ("ENCAP DOC", true)
    } else {
        ("IMAGE", false)
    }
}

/// The first value of an attribute of a DICOM JSON data set, as text
/// (a person name's alphabetic group).
fn first_value(doc: &serde_json::Value, tag: &str) -> Option<String> {
    match doc.get(tag)?.get("Value")?.get(0)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Object(pn) => pn.get("Alphabetic")?.as_str().map(str::to_owned),
        _ => None,
    }
}

/// The File ID (PS3.10 §8.5) of each instance: study, series and instance
/// numbered in order.
pub(super) fn file_ids(instances: &[StoredInstance]) -> Vec<String> {
    let (mut studies, mut series) = (Vec::<&str>::new(), Vec::<&str>::new());
    let mut in_series = 0;
    instances
        .iter()
        .map(|inst| {
            if !studies.contains(&inst.study_uid.as_str()) {
                studies.push(&inst.study_uid);
            }
            if series.last() != Some(&inst.series_uid.as_str()) {
                series.push(&inst.series_uid);
                in_series = 0;
            }
            in_series += 1;
            format!(
                "DICOM/ST{:06}/SE{:06}/IM{:06}",
                studies.len(),
                series.len(),
                in_series
            )
        })
        .collect()
}

async fn write(
    store: Store,
    instances: &[StoredInstance],
    dicomdir: Option<Vec<u8>>,
    pipe: tokio::io::DuplexStream,
) -> io::Result<()> {
    let mut zip = ZipFileWriter::with_tokio(pipe);
    if let Some(dir) = dicomdir {
        let entry = ZipEntryBuilder::new("DICOMDIR".to_owned().into(), Compression::Stored);
        zip.write_entry_whole(entry, &dir)
            .await
            .map_err(io::Error::other)?;
    }
    for (inst, name) in instances.iter().zip(file_ids(instances)) {
        let key = stored_key(inst).map_err(io::Error::other)?;
        let mut body = store.get_stream(&key).await.map_err(io::Error::other)?;
        let entry = ZipEntryBuilder::new(name.into(), Compression::Stored);
        let mut out = zip
            .write_entry_stream(entry)
            .await
            .map_err(io::Error::other)?;
        while let Some(chunk) = body.next().await {
            out.write_all(&chunk.map_err(io::Error::other)?).await?;
        }
        out.close().await.map_err(io::Error::other)?;
    }
    zip.close().await.map_err(io::Error::other)?;
    Ok(())
}
