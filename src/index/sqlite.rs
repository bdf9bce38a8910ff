//! SQLite back end: the embedded default, one file in the data folder.

use std::str::FromStr;

use sqlx::any::AnyPoolOptions;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor};

use super::sql::{Dialect, SqlIndex};
use super::IndexError;

pub async fn open(url: &str, migrate: bool) -> Result<SqlIndex, IndexError> {
    // Create the file and switch it to WAL once, with the native driver
    // (both settings persist in the database file).
    {
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
        let conn = opts.connect().await?;
        conn.close().await?;
    }
    let pool = AnyPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(std::time::Duration::from_secs(30))
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                // NORMAL is durable in WAL mode except for the last
                // transactions before a power loss; FULL keeps those too.
                // LIKE is case-sensitive, as in PostgreSQL (PS3.4 C.2.2.2.4).
                conn.execute(
                    "PRAGMA busy_timeout = 30000; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
                     PRAGMA case_sensitive_like = ON;",
                )
                .await?;
                Ok(())
            })
        })
        // A connection must go back to the pool outside any transaction.
        // After "database or disk is full" (SQLITE_FULL) a connection was
        // seen left inside one that sqlx no longer knew of: the next
        // `begin()` on it became a savepoint, its "commit" a RELEASE, and
        // instances acknowledged as stored were never committed (nor seen
        // by the other connections), while the open transaction held the
        // write lock ("database is locked" for everyone else). ROLLBACK
        // ends such a transaction; with none open it is a cheap error,
        // ignored.
        .after_release(|conn, _meta| {
            Box::pin(async move {
                let _ = conn.execute("ROLLBACK").await;
                Ok(true)
            })
        })
        .connect(url)
        .await?;
    if migrate {
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
    }
    let index = SqlIndex::new(pool, Dialect::Sqlite);
    index.backfill().await?;
    Ok(index)
}
