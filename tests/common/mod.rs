//! Shared set-up for the conformance suites: real PostgreSQL and a real
//! S3-compatible server, as started by `make test` (scripts/test.sh).
#![allow(dead_code, clippy::unwrap_used)]

use sqlx::{Connection, Executor, PgConnection};

/// The PostgreSQL server for tests. Missing configuration is a failure, not
/// a skip: a suite that silently passes without its database checks nothing.
pub fn pg_admin_url() -> String {
    std::env::var("PHIM_TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!("PHIM_TEST_DATABASE_URL is not set: run the suite with `make test`, which starts PostgreSQL and S3")
    })
}

/// A fresh, empty PostgreSQL database, dropped when the guard is dropped.
pub struct PgDatabase {
    pub url: String,
    admin: String,
    name: String,
}

impl PgDatabase {
    pub async fn create() -> PgDatabase {
        let admin = pg_admin_url();
        let name = format!("phim_t_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&admin)
            .await
            .expect("connect to test PostgreSQL");
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create test database");
        conn.close().await.ok();
        let mut url = url::Url::parse(&admin).expect("PHIM_TEST_DATABASE_URL is a URL");
        url.set_path(&format!("/{name}"));
        PgDatabase {
            url: url.to_string(),
            admin,
            name,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        // Best effort, on a thread of its own (we may be inside a runtime).
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    if let Ok(mut c) = PgConnection::connect(&admin).await {
                        let _ = c
                            .execute(
                                format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str(),
                            )
                            .await;
                    }
                });
            }
        })
        .join();
    }
}

/// The S3 endpoint and bucket for tests.
pub fn s3_settings() -> (String, String) {
    let endpoint = std::env::var("PHIM_TEST_S3_ENDPOINT").unwrap_or_else(|_| {
        panic!("PHIM_TEST_S3_ENDPOINT is not set: run the suite with `make test`, which starts PostgreSQL and S3")
    });
    let bucket = std::env::var("PHIM_TEST_S3_BUCKET").unwrap_or_else(|_| "phim-test".into());
    (endpoint, bucket)
}

/// A store on the test S3 server under a fresh key prefix.
pub fn s3_store() -> phim::store::Store {
    let (endpoint, bucket) = s3_settings();
    let prefix = format!("t-{}", uuid::Uuid::new_v4().simple());
    phim::store::Store::open(
        &phim::store::StoreLocation::S3 { bucket, prefix },
        &phim::store::S3Options {
            endpoint: Some(endpoint),
            region: Some(std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into())),
            allow_http: true,
            retry_timeout: None,
        },
    )
    .expect("open the test S3 store")
}
