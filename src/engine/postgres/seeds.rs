//! Seeds for PostgreSQL: types inferred by [`seed_csv`](crate::engine::seed_csv) and named as
//! dbt-postgres names them, rows sent with `COPY ... FROM STDIN` in CSV format.

use crate::adapter::names::quote_ident;
use crate::engine::seed_csv::{Inferred, SeedData};
use futures::SinkExt;

/// dbt-postgres' type for an inferred column (`bigint` past 32 bits, where dbt-postgres fails).
pub fn type_name(t: Inferred) -> &'static str {
    match t {
        Inferred::Integer => "integer",
        Inferred::BigInt => "bigint",
        Inferred::Number => "float8",
        Inferred::Date => "date",
        Inferred::Timestamp => "timestamp without time zone",
        Inferred::Boolean => "boolean",
        Inferred::Empty | Inferred::Text => "text",
    }
}

/// Sends the rows with `COPY ... FROM STDIN`; returns the rows loaded.
pub async fn copy_in(client: &tokio_postgres::Transaction<'_>, target: &str, data: &SeedData) -> Result<u64, tokio_postgres::Error> {
    let cols = data.columns.iter().map(|(c, _)| quote_ident(c, '"')).collect::<Vec<_>>().join(", ");
    let statement = format!("copy {target} ({cols}) from stdin with (format csv, header true)");
    let sink = client.copy_in::<_, bytes::Bytes>(&statement).await?;
    futures::pin_mut!(sink);
    for chunk in data.csv.chunks(1 << 20) {
        sink.send(bytes::Bytes::copy_from_slice(chunk)).await?;
    }
    sink.as_mut().finish().await
}
