//! Running a search: a [`crate::query::Query`] (the model) against the
//! index, its rows as DICOM JSON objects (PS3.18 Tables 6.7.1-2/-2a/-2b)
//! with `includefield` attributes read from the stored metadata; shared by
//! QIDO-RS (sent as JSON) and C-FIND (encoded as data sets). Above both
//! the index and the query model, which know nothing of it.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use crate::index::metadata::inflate as inflate_metadata;
use crate::index::{Attributes, Index, IndexError, InstanceRow, SeriesRow, StudyRow};
use crate::query::{attribute_by_keyword, Filter, Include, Kind, Level, Match, Query};

/// Runs a search; returns at most `q.limit` objects and whether more match.
/// `base` is the DICOMweb root for RetrieveURL (none for C-FIND).
pub(crate) async fn run(
    index: &dyn Index,
    q: &Query,
    base: Option<&str>,
) -> Result<(Vec<Map<String, Value>>, bool), IndexError> {
    let limit = q.limit as usize;
    let mut rows: Vec<(String, Obj)> = match q.level {
        Level::Study => index
            .search_studies(q)
            .await?
            .iter()
            .map(|r| (r.study_uid.clone(), study_json(base, r)))
            .collect(),
        Level::Series => index
            .search_series(q)
            .await?
            .iter()
            .map(|r| (r.series_uid.clone(), series_json(base, r)))
            .collect(),
        Level::Instance => index
            .search_instances(q)
            .await?
            .iter()
            .map(|r| (r.sop_uid.clone(), instance_json(base, r)))
            .collect(),
    };
    let more = rows.len() > limit;
    rows.truncate(limit);
    add_upper_levels(index, q, &mut rows).await?;
    enrich(index, q.level, &q.include, &mut rows).await?;
    Ok((rows.into_iter().map(|(_, o)| o.0).collect(), more))
}

/// A DICOM JSON object under construction (keys sort as tags).
#[derive(Default)]
struct Obj(Map<String, Value>);

impl Obj {
    fn put(&mut self, tag: &str, vr: &str, values: Vec<Value>) {
        let v = if values.is_empty() {
            json!({ "vr": vr })
        } else {
            json!({ "vr": vr, "Value": values })
        };
        self.0.insert(tag.to_owned(), v);
    }
    fn str(&mut self, tag: &str, vr: &str, v: Option<&str>) {
        self.put(tag, vr, v.iter().map(|s| json!(s)).collect())
    }
    fn pn(&mut self, tag: &str, v: Option<&str>) {
        let vals = v
            .iter()
            .map(|s| {
                let mut groups = Map::new();
                for (key, g) in ["Alphabetic", "Ideographic", "Phonetic"]
                    .iter()
                    .zip(s.split('='))
                {
                    if !g.is_empty() {
                        groups.insert((*key).to_owned(), json!(g));
                    }
                }
                Value::Object(groups)
            })
            .collect();
        self.put(tag, "PN", vals)
    }
    /// The first value of a UI attribute.
    fn uid(&self, tag: &str) -> Option<String> {
        self.0
            .get(tag)?
            .get("Value")?
            .get(0)?
            .as_str()
            .map(str::to_owned)
    }
    fn int(&mut self, tag: &str, vr: &str, v: Option<i64>) {
        self.put(tag, vr, v.iter().map(|n| json!(n)).collect())
    }
    /// Every copied attribute of `level`, present without a value when the
    /// row has none (PS3.18 Table 6.7.1-2: the attribute is returned).
    fn copied(&mut self, level: Level, values: &Attributes) {
        for a in crate::query::copied(level) {
            let tag = format!("{:08X}", a.tag);
            let t = a.dicom_tag();
            match a.kind {
                Kind::Integer => self.int(&tag, a.vr, values.int(t)),
                Kind::PersonName => self.pn(&tag, values.text(t)),
                _ => self.str(&tag, a.vr, values.text(t)),
            }
        }
    }
}

/// PS3.18 Table 6.7.1-2.
fn study_json(base: Option<&str>, r: &StudyRow) -> Obj {
    let mut j = Obj::default();
    j.copied(Level::Study, &r.attributes);
    j.put("00080005", "CS", vec![json!("ISO_IR 192")]);
    j.put("00080056", "CS", vec![json!("ONLINE")]);
    j.put(
        "00080061",
        "CS",
        r.modalities.iter().map(|m| json!(m)).collect(),
    );
    if let Some(base) = base {
        j.put(
            "00081190",
            "UR",
            vec![json!(format!("{base}/studies/{}", r.study_uid))],
        );
    }
    j.put("0020000D", "UI", vec![json!(r.study_uid)]);
    j.int("00201206", "IS", Some(r.num_series));
    j.int("00201208", "IS", Some(r.num_instances));
    j
}

/// PS3.18 Table 6.7.1-2a.
fn series_json(base: Option<&str>, r: &SeriesRow) -> Obj {
    let mut j = Obj::default();
    j.copied(Level::Series, &r.attributes);
    j.put("00080005", "CS", vec![json!("ISO_IR 192")]);
    if let Some(base) = base {
        let url = format!("{base}/studies/{}/series/{}", r.study_uid, r.series_uid);
        j.put("00081190", "UR", vec![json!(url)]);
    }
    j.put("0020000D", "UI", vec![json!(r.study_uid)]);
    j.put("0020000E", "UI", vec![json!(r.series_uid)]);
    j.int("00201209", "IS", Some(r.num_instances));
    j
}

/// PS3.18 Table 6.7.1-2b.
fn instance_json(base: Option<&str>, r: &InstanceRow) -> Obj {
    let mut j = Obj::default();
    j.copied(Level::Instance, &r.attributes);
    j.put("00080005", "CS", vec![json!("ISO_IR 192")]);
    j.put("00080016", "UI", vec![json!(r.sop_class_uid)]);
    j.put("00080018", "UI", vec![json!(r.sop_uid)]);
    j.put("00080056", "CS", vec![json!("ONLINE")]);
    if let Some(base) = base {
        j.put(
            "00081190",
            "UR",
            vec![json!(format!(
                "{base}/studies/{}/series/{}/instances/{}",
                r.study_uid, r.series_uid, r.sop_uid
            ))],
        );
    }
    j.put("00083002", "UI", vec![json!(r.transfer_syntax_uid)]);
    j.put("0020000D", "UI", vec![json!(r.study_uid)]);
    j.put("0020000E", "UI", vec![json!(r.series_uid)]);
    j.int("00280008", "IS", r.frames);
    j.int("00280010", "US", r.rows);
    j.int("00280011", "US", r.columns);
    j.int("00280100", "US", r.bits_allocated);
    j
}

/// PS3.18 §10.6.3.3.1, Tables 10.6.3-3 to -5: a search of all series
/// returns with each series its study's attributes; of a study's
/// instances, their series' attributes; of all instances, both. Where the
/// path fixes the study (or series), the client has those already and
/// they are not looked up.
async fn add_upper_levels(
    index: &dyn Index,
    q: &Query,
    rows: &mut [(String, Obj)],
) -> Result<(), IndexError> {
    if rows.is_empty() || q.level == Level::Study {
        return Ok(());
    }
    let fixed = |keyword: &str| {
        q.filters
            .iter()
            .any(|f| f.attribute.keyword == keyword && matches!(f.matching, Match::Single(_)))
    };
    if q.level == Level::Instance && !fixed("SeriesInstanceUID") {
        let uids = distinct(rows, "0020000E");
        let found = index
            .search_series(&list_query(Level::Series, "SeriesInstanceUID", &uids))
            .await?;
        let by_uid: HashMap<&str, Obj> = found
            .iter()
            .map(|r| (r.series_uid.as_str(), series_json(None, r)))
            .collect();
        merge_upper(rows, "0020000E", &by_uid);
    }
    if !fixed("StudyInstanceUID") {
        let uids = distinct(rows, "0020000D");
        let found = index
            .search_studies(&list_query(Level::Study, "StudyInstanceUID", &uids))
            .await?;
        let by_uid: HashMap<&str, Obj> = found
            .iter()
            .map(|r| (r.study_uid.as_str(), study_json(None, r)))
            .collect();
        merge_upper(rows, "0020000D", &by_uid);
    }
    Ok(())
}

/// The distinct UIDs under `tag` of the rows.
fn distinct(rows: &[(String, Obj)], tag: &str) -> Vec<String> {
    let mut uids: Vec<String> = rows.iter().filter_map(|(_, o)| o.uid(tag)).collect();
    uids.sort();
    uids.dedup();
    uids
}

/// A query for exactly the rows of `uids` at `level`.
fn list_query(level: Level, keyword: &str, uids: &[String]) -> Query {
    let mut q = Query::new(level);
    if let Some(attribute) = attribute_by_keyword(keyword) {
        q.filters.push(Filter {
            attribute,
            matching: Match::List(uids.to_vec()),
        });
    }
    q.limit = i64::try_from(uids.len()).unwrap_or(i64::MAX);
    q
}

/// Adds to each row the attributes of its upper-level object (found by the
/// UID under `tag`) that the row lacks, but not the upper level's
/// RetrieveURL.
fn merge_upper(rows: &mut [(String, Obj)], tag: &str, upper: &HashMap<&str, Obj>) {
    for (_, obj) in rows.iter_mut() {
        let Some(up) = obj.uid(tag).and_then(|u| upper.get(u.as_str())) else {
            continue;
        };
        for (key, value) in &up.0 {
            if key != "00081190" && !obj.0.contains_key(key) {
                obj.0.insert(key.clone(), value.clone());
            }
        }
    }
}

/// Whether `includefield=all` at a level returns a tag of the
/// representative instance: study level keeps patient and study
/// attributes, series level adds series attributes, instance level all.
fn level_allows(level: Level, tag: u32) -> bool {
    const INSTANCE_SPECIFIC: &[u32] = &[
        0x0008_0008,
        0x0008_0012,
        0x0008_0013,
        0x0008_0016,
        0x0008_0018,
        0x0008_0022,
        0x0008_0023,
        0x0008_0032,
        0x0008_0033,
        0x0020_0013,
        0x0020_0032,
        0x0020_0037,
        0x0020_1041,
    ];
    const SERIES_SPECIFIC: &[u32] = &[
        0x0008_0021,
        0x0008_0031,
        0x0008_0060,
        0x0008_103E,
        0x0020_000E,
        0x0020_0011,
        0x0020_0060,
        0x0020_0052,
        0x0018_0015,
        0x0018_1030,
        0x0018_5100,
        0x0040_0244,
        0x0040_0245,
        0x0040_0253,
        0x0040_0254,
        0x0040_0275,
    ];
    if level == Level::Instance {
        return true;
    }
    if INSTANCE_SPECIFIC.contains(&tag) {
        return false;
    }
    if SERIES_SPECIFIC.contains(&tag) {
        return level == Level::Series;
    }
    matches!(tag >> 16, 0x0008 | 0x0010 | 0x0020 | 0x0032)
}

/// Adds attributes of each result's representative instance that are not
/// in the row already (`includefield`, matching keys Phim does not index).
async fn enrich(
    index: &dyn Index,
    level: Level,
    include: &Include,
    rows: &mut [(String, Obj)],
) -> Result<(), IndexError> {
    if *include == Include::Default || rows.is_empty() {
        return Ok(());
    }
    let uids: Vec<String> = rows.iter().map(|(u, _)| u.clone()).collect();
    let docs = index.representatives(level, &uids).await?;
    let include = include.clone();
    let parsed: HashMap<String, Map<String, Value>> = tokio::task::spawn_blocking(move || {
        docs.into_iter()
            .filter_map(|(uid, doc)| {
                let text = inflate_metadata(&doc).ok()?;
                match serde_json::from_str::<Value>(&text).ok()? {
                    Value::Object(m) => Some((uid, m)),
                    _ => None,
                }
            })
            .collect()
    })
    .await
    .map_err(|e| IndexError::Unavailable(format!("metadata task failed: {e}")))?;
    for (uid, obj) in rows.iter_mut() {
        let Some(doc) = parsed.get(uid) else { continue };
        for (key, value) in doc {
            let Ok(tag) = u32::from_str_radix(key, 16) else {
                continue;
            };
            if obj.0.contains_key(key) || value.get("BulkDataURI").is_some() {
                continue;
            }
            let wanted = match &include {
                Include::All => level_allows(level, tag),
                Include::Tags(tags) => tags.contains(&tag),
                Include::Default => false,
            };
            if wanted {
                obj.0.insert(key.clone(), value.clone());
            }
        }
    }
    Ok(())
}
