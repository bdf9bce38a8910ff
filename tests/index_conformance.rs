#![allow(clippy::unwrap_used)]
//! One index suite, run against SQLite and PostgreSQL.

mod common;

use std::sync::Arc;

use phim::dicom::{tags, Uid};
use phim::index::{
    self, now_ms, Attributes, ChangeEvent, DeliveryOutcome, EmrLink, Index, IndexError, Insert,
    JobEnd, NewInstance, NewJob, Rejection, Scope, Value,
};
use phim::query::{attribute_by_keyword, parse_match, Filter, Level, Query};

fn instance(study: &str, series: &str, sop: &str) -> NewInstance {
    NewInstance {
        study_uid: study.into(),
        series_uid: series.into(),
        sop_uid: sop.into(),
        sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
        attributes: Attributes::default()
            .with_text(tags::PATIENT_ID, "PID-1")
            .with_text(tags::PATIENT_NAME, "Nguyễn^Văn An")
            .with_text(tags::STUDY_DATE, "20240102")
            .with_text(tags::ACCESSION_NUMBER, "ACC-1")
            .with_text(tags::MODALITY, "CT")
            .with_int(tags::SERIES_NUMBER, 1)
            .with_int(
                tags::INSTANCE_NUMBER,
                sop.rsplit('.')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0),
            ),
        transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
        object_key: format!("studies/{study}/series/{series}/instances/{sop}/0.dcm"),
        size: 1234,
        sha256: format!("sha-{sop}"),
        metadata: vec![1, 2, 3],
        ..Default::default()
    }
}

fn scope(study: &str, series: Option<&str>) -> Scope {
    Scope {
        study: Uid::parse(study).unwrap(),
        series: series.map(|s| Uid::parse(s).unwrap()),
        instance: None,
    }
}

fn all() -> Query {
    Query::new(Level::Study)
}

/// A query at `level` with QIDO-style (keyword, value) keys.
fn q(level: Level, keys: &[(&str, &str)]) -> Query {
    let mut query = Query::new(level);
    for (k, v) in keys {
        let attribute = attribute_by_keyword(k).unwrap();
        if let Some(matching) = parse_match(attribute, v, false).unwrap() {
            query.filters.push(Filter {
                attribute,
                matching,
            });
        }
    }
    query
}

async fn suite(ix: Arc<dyn Index>) {
    ix.ping().await.unwrap();

    // Insert and find.
    let a = instance("1.1", "1.1.1", "1.1.1.1");
    assert_eq!(ix.insert_instance(&a).await.unwrap(), Insert::Inserted);
    let found = ix.find_instance("1.1.1.1").await.unwrap().unwrap();
    assert_eq!(found.study_uid, "1.1");
    assert_eq!(found.sha256, "sha-1.1.1.1");
    assert!(ix.find_instance("9.9").await.unwrap().is_none());

    // A second insert of the same SOP Instance UID reports the first.
    let mut again = a.clone();
    again.sha256 = "other".into();
    match ix.insert_instance(&again).await.unwrap() {
        Insert::Exists(e) => assert_eq!(e.sha256, "sha-1.1.1.1"),
        other => panic!("expected Exists, got {other:?}"),
    }

    // A series UID reused under another study is a conflict.
    let stray = instance("1.2", "1.1.1", "1.2.1.1");
    assert!(matches!(
        ix.insert_instance(&stray).await,
        Err(IndexError::Conflict(_))
    ));
    assert!(
        ix.find_instance("1.2.1.1").await.unwrap().is_none(),
        "rolled back"
    );

    // More instances, another series with another modality.
    for n in 2..=5 {
        ix.insert_instance(&instance("1.1", "1.1.1", &format!("1.1.1.{n}")))
            .await
            .unwrap();
    }
    let mut mr = instance("1.1", "1.1.2", "1.1.2.1");
    mr.attributes.set_text(tags::MODALITY, Some("MR".into()));
    mr.attributes.set(tags::SERIES_NUMBER, Some(Value::Int(2)));
    ix.insert_instance(&mr).await.unwrap();

    // Scopes, in series then instance order.
    let study = ix.instances(&scope("1.1", None)).await.unwrap();
    assert_eq!(study.len(), 6);
    let sops: Vec<_> = study.iter().map(|i| i.sop_uid.as_str()).collect();
    assert_eq!(
        sops,
        ["1.1.1.1", "1.1.1.2", "1.1.1.3", "1.1.1.4", "1.1.1.5", "1.1.2.1"]
    );
    assert_eq!(
        ix.instances(&scope("1.1", Some("1.1.2")))
            .await
            .unwrap()
            .len(),
        1
    );
    // A series asked under the wrong study is not found.
    assert!(ix
        .instances(&scope("1.2", Some("1.1.1")))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        ix.metadata(&scope("1.1", Some("1.1.1"))).await.unwrap(),
        vec![vec![1, 2, 3]; 5]
    );

    // Study search with computed attributes.
    let studies = ix.search_studies(&all()).await.unwrap();
    assert_eq!(studies.len(), 1);
    let s = &studies[0];
    assert_eq!((s.num_series, s.num_instances), (2, 6));
    assert_eq!(s.modalities, ["CT", "MR"]);
    assert_eq!(s.attributes.text(tags::PATIENT_NAME), Some("Nguyễn^Văn An"));
    let by_pid = q(Level::Study, &[("PatientID", "PID-1")]);
    assert_eq!(ix.search_studies(&by_pid).await.unwrap().len(), 1);
    let none = q(Level::Study, &[("PatientID", "nobody")]);
    assert!(ix.search_studies(&none).await.unwrap().is_empty());
    let by_mod = q(Level::Study, &[("ModalitiesInStudy", "MR")]);
    assert_eq!(ix.search_studies(&by_mod).await.unwrap().len(), 1);
    let mr_series = q(Level::Series, &[("Modality", "MR")]);
    assert_eq!(ix.search_series(&mr_series).await.unwrap().len(), 1);

    // Instance search and paging.
    let mut page = q(Level::Instance, &[("StudyInstanceUID", "1.1")]);
    page.limit = 2;
    page.offset = 4;
    let rows = ix.search_instances(&page).await.unwrap();
    assert_eq!(
        rows.iter().map(|r| r.sop_uid.as_str()).collect::<Vec<_>>(),
        ["1.1.1.5", "1.1.2.1"]
    );

    // Replace only when the previous key still matches.
    let mut newer = a.clone();
    newer.sha256 = "sha-new".into();
    newer.object_key = "new-key".into();
    assert!(!ix.replace_instance(&newer, "not-the-key").await.unwrap());
    assert!(ix.replace_instance(&newer, &a.object_key).await.unwrap());
    assert_eq!(
        ix.find_instance("1.1.1.1")
            .await
            .unwrap()
            .unwrap()
            .object_key,
        "new-key"
    );

    // Concurrent ingest of one new study: every instance lands once.
    let mut tasks = Vec::new();
    for n in 1..=24 {
        let ix = ix.clone();
        tasks.push(tokio::spawn(async move {
            ix.insert_instance(&instance(
                "2.1",
                &format!("2.1.{}", n % 3),
                &format!("2.1.9.{n}"),
            ))
            .await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), Insert::Inserted);
    }
    let two = q(Level::Study, &[("StudyInstanceUID", "2.1")]);
    let s = ix.search_studies(&two).await.unwrap();
    assert_eq!((s[0].num_series, s[0].num_instances), (3, 24));

    // Patients without an ID are not merged across studies.
    let mut anon1 = instance("3.1", "3.1.1", "3.1.1.1");
    anon1.attributes.set(tags::PATIENT_ID, None);
    let mut anon2 = instance("3.2", "3.2.1", "3.2.1.1");
    anon2.attributes.set(tags::PATIENT_ID, None);
    ix.insert_instance(&anon1).await.unwrap();
    ix.insert_instance(&anon2).await.unwrap();
    assert_eq!(ix.search_studies(&all()).await.unwrap().len(), 4);

    paging(ix.clone()).await;
    matching(ix.clone()).await;
    emr_links(ix.clone()).await;
    change_feed(ix.clone()).await;
    job_queue(ix.clone()).await;
    trash(ix).await;
}

/// Every instance, a page at a time (what `phim verify` walks): each once,
/// in increasing positions.
async fn paging(ix: Arc<dyn Index>) {
    let (mut after, mut seen) = (0, Vec::new());
    loop {
        let page = ix.instance_page(after, 4).await.unwrap();
        assert!(page.len() <= 4);
        let Some((last, _)) = page.last() else { break };
        assert!(page.iter().all(|(p, _)| *p > after));
        after = *last;
        seen.extend(page.into_iter().map(|(_, i)| i.sop_uid));
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len());
    assert_eq!(seen.len(), 32, "{seen:?}");
}

/// Every matching type at every level (PS3.4 C.2.2.2), on a small archive.
async fn matching(ix: Arc<dyn Index>) {
    let mk = |study: &str, name: &str, date: &str, time: &str, modality: &str, acc: &str| {
        let mut r = instance(study, &format!("{study}.1"), &format!("{study}.1.1"));
        let a = &mut r.attributes;
        a.set_text(tags::PATIENT_NAME, Some(name.into()));
        a.set_text(tags::PATIENT_ID, Some(format!("P-{study}")));
        a.set_text(tags::STUDY_DATE, Some(date.into()));
        a.set_text(tags::STUDY_TIME, Some(time.into()));
        a.set_text(tags::MODALITY, Some(modality.into()));
        a.set_text(tags::ACCESSION_NUMBER, Some(acc.into()));
        a.set_text(tags::SERIES_DESCRIPTION, Some(format!("{modality} series")));
        r.sequence_values = vec![("00400275.00401001".into(), format!("RP-{acc}"))];
        r
    };
    for r in [
        mk("9.1", "Nguyễn^Văn An", "20230105", "083000", "CT", "A100"),
        mk("9.2", "NGUYEN^VAN BINH", "20240310", "101500", "MR", "A200"),
        mk(
            "9.3",
            "Smith^John=スミス^ジョン",
            "20240311",
            "230000",
            "US",
            "B300",
        ),
        mk("9.4", "Trần^Thị Bích", "20250101", "000500", "CT", "B400"),
    ] {
        assert_eq!(ix.insert_instance(&r).await.unwrap(), Insert::Inserted);
    }
    let uids = |rows: Vec<phim::index::StudyRow>| {
        let mut v: Vec<String> = rows
            .into_iter()
            .map(|r| r.study_uid)
            .filter(|u| u.starts_with("9."))
            .collect();
        v.sort();
        v
    };
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: &[Case] = &[
        (&[("PatientName", "nguyễn^văn an")], &["9.1"]), // case-insensitive
        (&[("PatientName", "Nguy*")], &["9.1", "9.2"]),  // wildcard, prefix
        (&[("PatientName", "*binh")], &["9.2"]),         // wildcard, suffix
        (&[("PatientName", "Tran*")], &[]),              // accent-sensitive without fuzzy
        (&[("PatientName", "Tr?n^*")], &["9.4"]),
        (&[("PatientName", "smith^john")], &["9.3"]), // alphabetic group
        (&[("StudyDate", "20240101-")], &["9.2", "9.3", "9.4"]), // open range
        (&[("StudyDate", "-20240310")], &["9.1", "9.2"]),
        (&[("StudyDate", "20240310-20240311")], &["9.2", "9.3"]),
        (&[("StudyDate", "20240311")], &["9.3"]),
        (
            &[("StudyDate", "20240310-20240311"), ("StudyTime", "10-12")],
            &["9.2"],
        ),
        (&[("StudyInstanceUID", "9.1,9.4")], &["9.1", "9.4"]), // UID list
        (&[("StudyInstanceUID", "9.1\\9.3")], &["9.1", "9.3"]),
        (&[("ModalitiesInStudy", "CT")], &["9.1", "9.4"]),
        (&[("ModalitiesInStudy", "US\\MR")], &["9.2", "9.3"]),
        (&[("AccessionNumber", "B*")], &["9.3", "9.4"]),
        (&[("AccessionNumber", "a100")], &[]), // text is case-sensitive
        (&[("SeriesDescription", "CT*")], &["9.1", "9.4"]), // series key at study level
        (&[("PatientID", ""), ("AccessionNumber", "A200")], &["9.2"]), // universal
    ];
    for (keys, want) in cases {
        let got = uids(ix.search_studies(&q(Level::Study, keys)).await.unwrap());
        assert_eq!(got, *want, "study query {keys:?}");
    }
    // Combined date-time range (PS3.4 C.2.2.2.5.1): from 2024-03-10 12:00
    // to 2025-01-01 00:10.
    let mut combined = q(
        Level::Study,
        &[
            ("StudyDate", "20240310-20250101"),
            ("StudyTime", "120000-0010"),
        ],
    );
    combined.combined_datetime = true;
    assert_eq!(
        uids(ix.search_studies(&combined).await.unwrap()),
        ["9.3", "9.4"]
    );

    // Fuzzy: accent- and order-insensitive word prefixes.
    for (query, want) in [
        ("nguyen van an", &["9.1"][..]),
        ("NGUYEN^VAN^AN", &["9.1"]),
        ("Văn An", &["9.1"]),
        ("nguyen", &["9.1", "9.2"]),
        ("bich tran", &["9.4"]),
        ("ジョン", &["9.3"]),
    ] {
        let a = attribute_by_keyword("PatientName").unwrap();
        let mut fq = Query::new(Level::Study);
        fq.filters.push(Filter {
            attribute: a,
            matching: parse_match(a, query, true).unwrap().unwrap(),
        });
        assert_eq!(
            uids(ix.search_studies(&fq).await.unwrap()),
            want,
            "fuzzy {query}"
        );
    }

    // Sequence matching.
    let mut sq = Query::new(Level::Study);
    sq.sequence_filters.push(phim::query::SequenceFilter {
        path: "00400275.00401001".into(),
        matching: phim::query::Match::Single("RP-B300".into()),
    });
    assert_eq!(uids(ix.search_studies(&sq).await.unwrap()), ["9.3"]);

    // Series and instance levels with upper-level keys.
    let series = ix
        .search_series(&q(
            Level::Series,
            &[("PatientName", "nguy*"), ("Modality", "MR")],
        ))
        .await
        .unwrap();
    assert_eq!(
        series
            .iter()
            .map(|s| s.series_uid.as_str())
            .collect::<Vec<_>>(),
        ["9.2.1", "1.1.2"]
    );
    let inst = ix
        .search_instances(&q(
            Level::Instance,
            &[
                ("StudyDate", "20250101"),
                ("SOPClassUID", "1.2.840.10008.5.1.4.1.1.2"),
            ],
        ))
        .await
        .unwrap();
    assert_eq!(
        inst.iter().map(|i| i.sop_uid.as_str()).collect::<Vec<_>>(),
        ["9.4.1.1"]
    );

    // Newest first, and limit + 1 rows to tell that more exist.
    let mut page = q(Level::Study, &[("StudyInstanceUID", "9.1,9.2,9.3,9.4")]);
    page.limit = 2;
    let rows = ix.search_studies(&page).await.unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| r.study_uid.as_str())
            .collect::<Vec<_>>(),
        ["9.4", "9.3", "9.2"]
    );

    // Representative metadata for includefield.
    let reps = ix
        .representatives(Level::Study, &["9.1".into(), "9.3".into()])
        .await
        .unwrap();
    assert_eq!(reps.len(), 2);
}

fn uid(s: &str) -> Uid {
    Uid::parse(s).unwrap()
}

/// EMR record links: set, replace, read in batches, delete; unknown studies.
async fn emr_links(ix: Arc<dyn Index>) {
    let first = EmrLink {
        record_id: "R-1".into(),
        url: "https://emr.example/r/1".into(),
    };
    let second = EmrLink {
        record_id: "R-2 Nguyễn".into(),
        url: "https://emr.example/r/2?x=1".into(),
    };
    assert!(ix.put_emr_link(&uid("1.1"), &first).await.unwrap());
    assert!(
        !ix.put_emr_link(&uid("8.8"), &first).await.unwrap(),
        "unknown study"
    );
    assert!(
        ix.put_emr_link(&uid("1.1"), &second).await.unwrap(),
        "replaced"
    );
    assert!(ix.put_emr_link(&uid("2.1"), &first).await.unwrap());
    let mut got = ix
        .emr_links(&[uid("1.1"), uid("2.1"), uid("3.1"), uid("8.8")])
        .await
        .unwrap();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        [
            ("1.1".to_string(), second.clone()),
            ("2.1".to_string(), first)
        ]
    );
    assert!(ix.emr_links(&[]).await.unwrap().is_empty());
    assert!(ix.delete_emr_link(&uid("2.1")).await.unwrap());
    assert!(
        !ix.delete_emr_link(&uid("2.1")).await.unwrap(),
        "already gone"
    );
    assert!(!ix.delete_emr_link(&uid("8.8")).await.unwrap());
    assert_eq!(
        ix.emr_links(&[uid("1.1"), uid("2.1")]).await.unwrap(),
        [("1.1".to_string(), second)]
    );

    // Counting ignores the page.
    let mut page = all();
    page.limit = 1;
    page.offset = 3;
    assert_eq!(ix.count_studies(&page).await.unwrap(), 8);
    let by_pid = q(Level::Study, &[("PatientID", "P-9.2")]);
    assert_eq!(ix.count_studies(&by_pid).await.unwrap(), 1);
}

/// The change feed: stable studies announced once (also by concurrent
/// detectors), again when they grow; webhook deliveries claimed once.
async fn change_feed(ix: Arc<dyn Index>) {
    let hooks = vec!["http://127.0.0.1:9/hook".to_string()];
    // Four detectors at once: every study is announced by exactly one.
    let now = now_ms() + 1;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (ix, hooks) = (ix.clone(), hooks.clone());
        tasks.push(tokio::spawn(async move {
            ix.announce_stable_studies(now, 0, &hooks, 3).await.unwrap()
        }));
    }
    let mut announced: Vec<ChangeEvent> = Vec::new();
    for t in tasks {
        announced.extend(t.await.unwrap());
    }
    announced.sort_by_key(|e| e.seq);
    let mut studies: Vec<&str> = announced.iter().map(|e| e.study_uid.as_str()).collect();
    studies.sort();
    assert_eq!(
        studies,
        ["1.1", "2.1", "3.1", "3.2", "9.1", "9.2", "9.3", "9.4"]
    );
    let count = |uid: &str| {
        announced
            .iter()
            .find(|e| e.study_uid == uid)
            .map(|e| e.num_instances)
    };
    assert_eq!((count("1.1"), count("2.1")), (Some(6), Some(24)));
    let e = announced.iter().find(|e| e.study_uid == "9.3").unwrap();
    assert_eq!(
        (
            e.event_type.as_str(),
            e.accession_number.as_deref(),
            e.patient_id.as_deref()
        ),
        ("study.stable", Some("B300"), Some("P-9.3"))
    );

    // The feed, in order, paged by seq.
    let feed = ix.changes(0, 100).await.unwrap();
    assert_eq!(feed, announced);
    assert!(feed.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(ix.changes(feed[2].seq, 2).await.unwrap(), feed[3..5]);
    let last = feed[feed.len() - 1].seq;
    assert!(ix.changes(last, 10).await.unwrap().is_empty());

    // Nothing new: nothing announced.
    let none = ix.announce_stable_studies(now_ms() + 1, 0, &hooks, 3).await;
    assert!(none.unwrap().is_empty());

    // A study that grows is announced again once it is quiet.
    ix.insert_instance(&instance("1.1", "1.1.1", "1.1.1.9"))
        .await
        .unwrap();
    let early = ix
        .announce_stable_studies(now_ms(), 3_600_000, &hooks, 3)
        .await;
    assert!(early.unwrap().is_empty(), "not quiet for an hour yet");
    let again = ix
        .announce_stable_studies(now_ms() + 1, 0, &hooks, 3)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].study_uid.as_str(), again[0].num_instances),
        ("1.1", 7)
    );
    assert!(again[0].seq > last);

    // One pending delivery per event and URL.
    let log = ix.deliveries(1000).await.unwrap();
    assert_eq!(log.len(), 9);
    assert!(log.iter().all(|d| d.status == "pending" && d.attempts == 0));

    // Each delivery has its `webhook` job, due now; concurrent claims by
    // three servers take each once.
    let t = now_ms() + 10; // after the detector's `now_ms() + 1` above
    let mut tasks = Vec::new();
    for n in 0..3 {
        let ix = ix.clone();
        tasks.push(tokio::spawn(async move {
            let owner = format!("server-{n}");
            ix.claim_jobs(&["webhook"], &owner, t, 60_000, 100)
                .await
                .unwrap()
        }));
    }
    let mut claimed = Vec::new();
    for task in tasks {
        claimed.extend(task.await.unwrap());
    }
    let mut ids: Vec<&str> = claimed.iter().map(|j| j.key.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!((claimed.len(), ids.len()), (9, 9));
    assert!(claimed
        .iter()
        .all(|j| j.attempts == 1 && j.max_attempts == 3));
    let delivery_ids: Vec<i64> = log.iter().map(|d| d.id).collect();
    for j in &claimed {
        let id: i64 = j.key.parse().unwrap();
        assert!(delivery_ids.contains(&id));
    }

    // The delivery behind a job: its URL and event.
    let job = &claimed[0];
    let d = ix
        .delivery(job.key.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.url, hooks[0]);
    assert!(announced.iter().chain(&again).any(|e| *e == d.event));
    ix.record_delivery(
        d.id,
        &DeliveryOutcome::Retry {
            status: Some(500),
            error: "HTTP 500".into(),
            next_attempt_ms: t + 1000,
        },
        t,
    )
    .await
    .unwrap();
    ix.record_delivery(d.id, &DeliveryOutcome::Delivered { status: 204 }, t + 1100)
        .await
        .unwrap();
    assert!(
        ix.delivery(d.id).await.unwrap().is_none(),
        "delivered: nothing left to attempt"
    );
    let gave_up = ix
        .delivery(claimed[1].key.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    for n in 0..3 {
        ix.record_delivery(
            gave_up.id,
            &DeliveryOutcome::GaveUp {
                status: None,
                error: "connection refused".into(),
            },
            t + 1200 + n,
        )
        .await
        .unwrap();
    }
    // Given up is not the end: an admin may retry its job.
    assert_eq!(
        ix.delivery(gave_up.id).await.unwrap().unwrap().id,
        gave_up.id
    );

    let log = ix.deliveries(1000).await.unwrap();
    let row = |id: i64| log.iter().find(|r| r.id == id).unwrap();
    let ok = row(d.id);
    assert_eq!(
        (
            ok.status.as_str(),
            ok.attempts,
            ok.last_status,
            ok.last_error.as_deref()
        ),
        ("delivered", 2, Some(204), Some("HTTP 500"))
    );
    assert_eq!(ok.delivered_ms, Some(t + 1100));
    let failed = row(gave_up.id);
    assert_eq!(
        (
            failed.status.as_str(),
            failed.attempts,
            failed.last_error.as_deref()
        ),
        ("failed", 3, Some("connection refused"))
    );
    assert!(log.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    // The webhook jobs are left to the job-queue suite's clean-up.
    for j in &claimed {
        ix.end_job(j, &JobEnd::Done, t + 1300).await.unwrap();
    }
}

fn job<'a>(kind: &'a str, key: &'a str, run_at: i64, max_attempts: i64) -> NewJob<'a> {
    NewJob {
        kind,
        key,
        payload: "p",
        run_at,
        max_attempts,
    }
}

/// The job queue every background job of every server shares.
async fn job_queue(ix: Arc<dyn Index>) {
    let t = now_ms() + 100_000; // later than anything queued before
    let claim_kinds = |kinds: &'static [&'static str], owner: &'static str, at: i64, limit: i64| {
        let ix = ix.clone();
        async move { ix.claim_jobs(kinds, owner, at, 1000, limit).await.unwrap() }
    };
    let claim =
        |owner: &'static str, at: i64, limit: i64| claim_kinds(&["a", "b"], owner, at, limit);
    for k in 0..20 {
        let key = format!("k{k}");
        ix.enqueue_job(&job("a", &key, t, 3), t).await.unwrap();
    }
    ix.enqueue_job(&job("other", "x", t, 3), t).await.unwrap();
    assert!(claim("s1", t - 1, 100).await.is_empty(), "not due yet");

    // Four servers claiming at once take each job once; a kind without a
    // handler is never claimed.
    let mut tasks = Vec::new();
    for owner in ["s1", "s2", "s3", "s4"] {
        let ix = ix.clone();
        tasks.push(tokio::spawn(async move {
            // Batches of 3 until nothing is left.
            let mut got = Vec::new();
            loop {
                let batch = ix.claim_jobs(&["a", "b"], owner, t, 1000, 3).await.unwrap();
                if batch.is_empty() {
                    return got;
                }
                got.extend(batch);
            }
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let mut keys: Vec<String> = all.iter().map(|j| j.key.clone()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!((all.len(), keys.len()), (20, 20));
    assert!(all
        .iter()
        .all(|j| j.kind == "a" && j.attempts == 1 && j.payload == "p"));

    // Done, retried, dead.
    assert!(ix.end_job(&all[0], &JobEnd::Done, t).await.unwrap());
    assert!(
        !ix.end_job(&all[0], &JobEnd::Done, t).await.unwrap(),
        "once"
    );
    let retry = JobEnd::Retry {
        at: t + 500,
        error: "busy".into(),
    };
    assert!(ix.end_job(&all[1], &retry, t).await.unwrap());
    let dead = JobEnd::Dead {
        error: "bad input".into(),
    };
    assert!(ix.end_job(&all[2], &dead, t).await.unwrap());

    // Queued again while it runs: the running claim's outcome no longer
    // applies, and the job stays queued with its new payload.
    ix.enqueue_job(&job("a", &all[3].key, t + 200, 3), t)
        .await
        .unwrap();
    assert!(!ix.end_job(&all[3], &JobEnd::Done, t).await.unwrap());

    // Renewed leases hold; the others run out at t + 1000 and are taken
    // over (attempt 2), along with the retry and the re-queued job.
    let owner_of_4 = all[4].owner.clone();
    ix.renew_jobs(&owner_of_4, t, t + 5000).await.unwrap();
    let taken = claim("s9", t + 1000, 100).await;
    let renewed = all[4..].iter().filter(|j| j.owner == owner_of_4).count();
    // 20 claimed - done - dead - renewed ones; the retry and the re-queued
    // job are due again too (the retry at attempt 2, the re-queued at 1).
    assert_eq!(taken.len(), 20 - 2 - renewed);
    let by_key = |k: &str| taken.iter().find(|j| j.key == k).unwrap();
    assert_eq!(by_key(&all[1].key).attempts, 2);
    assert_eq!(by_key(&all[3].key).attempts, 1);
    assert!(
        taken.iter().all(|j| j.key != all[2].key),
        "dead is not claimed"
    );

    // A lease that runs out on the last attempt makes the job dead.
    ix.enqueue_job(&job("b", "crash", t, 1), t).await.unwrap();
    let crash = claim_kinds(&["b"], "s5", t + 2000, 100).await;
    assert_eq!(crash.len(), 1);
    assert!(claim_kinds(&["b"], "s6", t + 10_000, 100)
        .await
        .iter()
        .all(|j| j.key != "crash"));

    // Counts, the dead letters, and an admin's retry.
    let counts = ix.job_counts(t + 10_000).await.unwrap();
    let count = |kind: &str, state: &str| {
        counts
            .iter()
            .find(|c| c.kind == kind && c.state == state)
            .map_or(0, |c| c.count)
    };
    assert_eq!(count("a", "dead"), 1);
    assert_eq!(count("b", "dead"), 1);
    assert_eq!(count("other", "queued"), 1);
    let dead_rows = ix.jobs(Some("dead"), None, 100).await.unwrap();
    assert_eq!(dead_rows.len(), 2);
    let crashed = dead_rows.iter().find(|r| r.key == "crash").unwrap();
    assert!(crashed
        .last_error
        .as_deref()
        .unwrap()
        .contains("lease ran out"));
    let bad = dead_rows.iter().find(|r| r.key == all[2].key).unwrap();
    assert_eq!(bad.last_error.as_deref(), Some("bad input"));
    assert!(ix.retry_job(bad.id, t + 10_000).await.unwrap());
    assert!(
        !ix.retry_job(bad.id, t + 10_000).await.unwrap(),
        "no longer dead"
    );
    let again = claim("s7", t + 10_000, 100).await;
    assert!(again.iter().any(|j| j.key == all[2].key && j.attempts == 1));

    // A server shutting down releases its leases: due at once, the
    // attempt not counted.
    assert!(ix.release_jobs("s7", t + 10_001).await.unwrap() >= 1);
    let after = claim("s8", t + 10_001, 100).await;
    assert!(after.iter().any(|j| j.key == all[2].key && j.attempts == 1));

    // Periodic jobs: ensured once, rescheduled with attempts reset.
    let p = job("b", "", t + 20_000, 5);
    ix.ensure_job(&p, t).await.unwrap();
    ix.ensure_job(&job("b", "", t + 99_000, 5), t)
        .await
        .unwrap();
    let run = claim_kinds(&["b"], "s1", t + 20_000, 100).await;
    let periodic = run
        .iter()
        .find(|j| j.kind == "b" && j.key.is_empty())
        .unwrap();
    let next = JobEnd::Reschedule {
        at: t + 30_000,
        error: None,
    };
    assert!(ix.end_job(periodic, &next, t + 20_000).await.unwrap());
    let listed = ix.jobs(Some("queued"), Some("b"), 10).await.unwrap();
    assert_eq!(
        (listed.len(), listed[0].run_at, listed[0].attempts),
        (1, t + 30_000, 0)
    );
    assert!(ix.remove_job("b", "").await.unwrap());
    assert!(!ix.remove_job("b", "").await.unwrap());

    // Clean up: nothing queued is left for other suites.
    for k in ["a", "b", "other"] {
        for r in ix.jobs(None, Some(k), 1000).await.unwrap() {
            ix.remove_job(k, &r.key).await.unwrap();
        }
    }
    assert!(ix
        .jobs(None, None, 10)
        .await
        .unwrap()
        .iter()
        .all(|r| r.kind == "webhook" || r.kind == "thumbnail"));
}

/// The trash: deletion in one transaction, counts, listing, an object
/// taken back out by the insert that indexes it, purge claims, and an
/// insert refused while its object is being purged.
async fn trash(ix: Arc<dyn Index>) {
    let study = "8.1";
    let mut mr = instance(study, "8.1.2", "8.1.2.1");
    mr.attributes
        .set(tags::MODALITY, Some(Value::Text("MR".into())));
    for rec in [
        instance(study, "8.1.1", "8.1.1.1"),
        instance(study, "8.1.1", "8.1.1.2"),
        mr,
    ] {
        assert_eq!(ix.insert_instance(&rec).await.unwrap(), Insert::Inserted);
    }
    assert!(ix
        .trash(&scope("8.9", None), "admin", 1, 2)
        .await
        .unwrap()
        .is_none());

    let one = Scope {
        instance: Some(Uid::parse("8.1.1.1").unwrap()),
        ..scope(study, Some("8.1.1"))
    };
    let t = ix.trash(&one, "admin", 1000, 5000).await.unwrap().unwrap();
    assert_eq!((t.instances, t.bytes, t.study_removed), (1, 1234, false));
    assert_eq!(t.patient_id.as_deref(), Some("PID-1"));
    assert!(ix.find_instance("8.1.1.1").await.unwrap().is_none());
    assert_eq!(ix.instances(&scope(study, None)).await.unwrap().len(), 2);

    let t = ix
        .trash(&scope(study, Some("8.1.2")), "admin", 1500, 6000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((t.instances, t.study_removed), (1, false));
    let series = ix
        .search_series(&q(Level::Series, &[("StudyInstanceUID", study)]))
        .await
        .unwrap();
    assert_eq!(series.len(), 1, "the emptied series is gone");
    let row = &ix
        .search_studies(&q(Level::Study, &[("StudyInstanceUID", study)]))
        .await
        .unwrap()[0];
    assert_eq!(row.num_instances, 1);

    let t = ix
        .trash(&scope(study, None), "admin", 2000, 6000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((t.instances, t.study_removed), (1, true));
    assert!(ix
        .search_studies(&q(Level::Study, &[("StudyInstanceUID", study)]))
        .await
        .unwrap()
        .is_empty());
    assert!(ix.study_known(study).await.unwrap(), "in the trash");
    let listed: Vec<_> = ix
        .trash_list()
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.study_uid == study)
        .collect();
    assert_eq!(listed.len(), 1);
    let l = &listed[0];
    assert_eq!((l.instances, l.bytes), (3, 3 * 1234));
    assert_eq!((l.deleted_at_ms, l.purge_after_ms), (2000, 5000));
    assert_eq!(l.deleted_by, "admin");
    assert_eq!(l.patient_id.as_deref(), Some("PID-1"));
    let mut modalities: Vec<_> = l.modalities.as_deref().unwrap().split(',').collect();
    modalities.sort();
    assert_eq!(modalities, ["CT", "MR"]);
    assert_eq!(ix.trashed_objects(study).await.unwrap().len(), 3);

    // Indexed again (a restore, or the instance sent again): out of the trash.
    let back = instance(study, "8.1.1", "8.1.1.2");
    assert_eq!(ix.insert_instance(&back).await.unwrap(), Insert::Inserted);
    let left = ix.trashed_objects(study).await.unwrap();
    assert_eq!(left.len(), 2);
    assert!(left.iter().all(|o| o.sop_uid != "8.1.1.2"));
    assert!(!ix.trashed_keys().await.unwrap().contains(&back.object_key));

    // Purge claims take what is due, once marked.
    assert!(ix.claim_purge(4000, None, 10).await.unwrap().is_empty());
    let due = ix.claim_purge(5500, None, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].sop_uid, "8.1.1.1");
    assert_eq!(
        ix.trashed_objects(study).await.unwrap().len(),
        1,
        "purging is not restorable"
    );
    // An object being purged is not indexed onto.
    let purging = instance(study, "8.1.1", "8.1.1.1");
    assert!(matches!(
        ix.insert_instance(&purging).await,
        Err(IndexError::Conflict(_))
    ));
    assert!(ix.find_instance("8.1.1.1").await.unwrap().is_none());
    // A purge that stopped half-way claims its rows again.
    assert_eq!(ix.claim_purge(5500, None, 10).await.unwrap().len(), 1);
    ix.purged(&[due[0].pk]).await.unwrap();
    assert!(!ix
        .trashed_keys()
        .await
        .unwrap()
        .contains(&purging.object_key));
    assert_eq!(
        ix.insert_instance(&purging).await.unwrap(),
        Insert::Inserted
    );

    // One study's claims; then nothing of the study is left anywhere.
    assert!(ix
        .claim_purge(i64::MAX, Some("7.7"), 10)
        .await
        .unwrap()
        .is_empty());
    ix.trash(&scope(study, None), "admin", 7000, 7000)
        .await
        .unwrap()
        .unwrap();
    let rest = ix.claim_purge(i64::MAX, Some(study), 10).await.unwrap();
    assert_eq!(rest.len(), 3);
    ix.purged(&rest.iter().map(|o| o.pk).collect::<Vec<_>>())
        .await
        .unwrap();
    assert!(!ix.study_known(study).await.unwrap());
    assert!(ix.trash_list().await.unwrap().is_empty());

    // An IOCM rejection records every UID it lists (refused from then on)
    // and trashes those stored; recording it again changes nothing.
    ix.insert_instance(&instance("8.2", "8.2.1", "8.2.1.1"))
        .await
        .unwrap();
    let refs: Vec<(String, String, String)> = ["8.2.1.1", "8.2.1.2"]
        .iter()
        .map(|sop| ("8.2".into(), "8.2.1".into(), (*sop).into()))
        .collect();
    let note = Rejection {
        note_uid: "8.2.9.1",
        code: "113001",
        meaning: "Rejected for Quality Reasons",
        references: &refs,
    };
    assert_eq!(ix.reject(&note, 1, 2).await.unwrap(), 1);
    assert_eq!(ix.reject(&note, 1, 2).await.unwrap(), 0);
    assert!(ix.find_instance("8.2.1.1").await.unwrap().is_none());
    let why = ix.rejection("8.2.1.2").await.unwrap().unwrap();
    assert!(why.contains("113001") && why.contains("8.2.9.1"), "{why}");
    assert!(ix.rejection("8.2.1.9").await.unwrap().is_none());
    let rest = ix.claim_purge(i64::MAX, Some("8.2"), 10).await.unwrap();
    assert_eq!(rest.len(), 1);
    ix.purged(&[rest[0].pk]).await.unwrap();
}

#[tokio::test]
async fn sqlite_index() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("index.db").display());
    let ix = index::open(&url, true).await.unwrap();
    suite(ix).await;
    // Migrations are idempotent.
    index::open(&url, true).await.unwrap();
}

#[tokio::test]
async fn postgres_index() {
    let db = common::PgDatabase::create().await;
    let ix = index::open(&db.url, true).await.unwrap();
    suite(ix).await;
    index::open(&db.url, true).await.unwrap();
}
