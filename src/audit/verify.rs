//! `phim audit verify`: walks the audit chain and names the first row
//! that was changed, inserted or removed behind Phim's back.

use crate::index::audit_log::{chain_hash, GENESIS};
use crate::index::Index;

/// What the walk found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every row links to the one before; `rows` rows, last `last_seq`.
    Intact { rows: u64, last_seq: i64 },
    /// The chain breaks at row `seq`.
    Broken { seq: i64, why: String },
}

pub async fn verify(index: &dyn Index) -> Result<Verdict, String> {
    let (mut prev, mut expected, mut rows) = (GENESIS.to_owned(), 1i64, 0u64);
    loop {
        let page = index
            .audit_rows(expected - 1, 1000)
            .await
            .map_err(|e| e.to_string())?;
        if page.is_empty() {
            return Ok(Verdict::Intact {
                rows,
                last_seq: expected - 1,
            });
        }
        for row in page {
            if row.seq != expected {
                return Ok(Verdict::Broken {
                    seq: expected,
                    why: format!("row {expected} is missing (next is {})", row.seq),
                });
            }
            if row.prev_hash != prev {
                return Ok(Verdict::Broken {
                    seq: row.seq,
                    why: "its previous-row hash does not match the row before it".into(),
                });
            }
            let hash = chain_hash(&prev, row.seq, row.record.time_ms, &row.record.body);
            if hash != row.hash {
                return Ok(Verdict::Broken {
                    seq: row.seq,
                    why: "its content does not match its hash (changed after it was written)"
                        .into(),
                });
            }
            if !columns_match_body(&row.record) {
                return Ok(Verdict::Broken {
                    seq: row.seq,
                    why: "its search columns differ from its hashed content".into(),
                });
            }
            prev = row.hash;
            expected += 1;
            rows += 1;
        }
    }
}

/// The searchable columns are copies of fields of the hashed body: a
/// change to them alone must show too.
fn columns_match_body(r: &crate::index::AuditRecord) -> bool {
    let Ok(body) = serde_json::from_str::<serde_json::Value>(&r.body) else {
        return false;
    };
    let studies: Vec<&str> = body["studies"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let event = serde_json::from_value::<super::EventId>(body["event"].clone());
    let outcome = serde_json::from_value::<super::Outcome>(body["outcome"].clone());
    event.is_ok_and(|e| i64::from(e.code()) == r.event_id)
        && outcome.is_ok_and(|o| o as i64 == r.outcome)
        && body["patient_id"].as_str() == r.patient_id.as_deref()
        && body["actor"]["name"].as_str() == Some(r.actor.as_str())
        && studies.join(",") == r.study_uids
        && body["time_ms"].as_i64() == Some(r.time_ms)
}
