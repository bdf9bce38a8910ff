//! PostgreSQL back end: the production index, shared by several `phim`
//! processes behind a load balancer.

use sqlx::any::AnyPoolOptions;

use super::sql::{Dialect, SqlIndex};
use super::IndexError;

pub(crate) async fn open(url: &str, migrate: bool) -> Result<SqlIndex, IndexError> {
    let pool = AnyPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect(url)
        .await?;
    if migrate {
        // sqlx takes an advisory lock, so concurrent start-ups migrate once.
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
    }
    let index = SqlIndex::new(pool, Dialect::Postgres);
    index.backfill().await?;
    Ok(index)
}
