#![allow(clippy::unwrap_used)]
//! One index suite, run against SQLite and PostgreSQL.

mod common;

use std::sync::Arc;

use phim::dicom::Uid;
use phim::index::{self, Index, IndexError, Insert, NewInstance, Query, Scope};

fn instance(study: &str, series: &str, sop: &str) -> NewInstance {
    NewInstance {
        study_uid: study.into(),
        series_uid: series.into(),
        sop_uid: sop.into(),
        sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
        patient_id: Some("PID-1".into()),
        patient_name: Some("Nguyễn^Văn An".into()),
        study_date: Some("20240102".into()),
        accession_number: Some("ACC-1".into()),
        modality: Some("CT".into()),
        series_number: Some(1),
        instance_number: Some(
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
    Query {
        limit: 100,
        ..Default::default()
    }
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
    mr.modality = Some("MR".into());
    mr.series_number = Some(2);
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
    assert_eq!(s.patient_name.as_deref(), Some("Nguyễn^Văn An"));
    let by_pid = Query {
        patient_id: Some("PID-1".into()),
        ..all()
    };
    assert_eq!(ix.search_studies(&by_pid).await.unwrap().len(), 1);
    let none = Query {
        patient_id: Some("nobody".into()),
        ..all()
    };
    assert!(ix.search_studies(&none).await.unwrap().is_empty());
    let by_mod = Query {
        modality: Some("MR".into()),
        ..all()
    };
    assert_eq!(ix.search_studies(&by_mod).await.unwrap().len(), 1);
    assert_eq!(ix.search_series(&by_mod).await.unwrap().len(), 1);

    // Instance search and paging.
    let page = Query {
        study_uid: Some(Uid::parse("1.1").unwrap()),
        limit: 2,
        offset: 4,
        ..all()
    };
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
    let q = Query {
        study_uid: Some(Uid::parse("2.1").unwrap()),
        ..all()
    };
    let s = ix.search_studies(&q).await.unwrap();
    assert_eq!((s[0].num_series, s[0].num_instances), (3, 24));

    // Patients without an ID are not merged across studies.
    let mut anon1 = instance("3.1", "3.1.1", "3.1.1.1");
    anon1.patient_id = None;
    let mut anon2 = instance("3.2", "3.2.1", "3.2.1.1");
    anon2.patient_id = None;
    ix.insert_instance(&anon1).await.unwrap();
    ix.insert_instance(&anon2).await.unwrap();
    assert_eq!(ix.search_studies(&all()).await.unwrap().len(), 4);
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
