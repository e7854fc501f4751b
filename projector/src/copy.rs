//! Rows in PostgreSQL's binary `COPY` format, for the rebuild's initial fill.
//!
//! A rebuild writes hundreds of thousands of new rows into empty tables; `COPY ... FROM STDIN
//! (FORMAT binary)` is the cheapest way in (no statement per row, no text parsing, heap pages
//! filled several rows at a time). Only the column types the read models use are encoded, the
//! same way sqlx encodes them as parameters, so a value written by `COPY` is bit for bit the one
//! the statement path writes.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use sqlx::PgConnection;

/// The fixed header of the binary format: signature, flags (none), header extension (none).
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// Rows for one table, built in memory and sent in one `COPY`.
pub struct CopyRows {
    buf: Vec<u8>,
    columns: i16,
    rows: usize,
}

impl CopyRows {
    pub fn new(columns: i16) -> Self {
        let mut buf = Vec::with_capacity(64 * 1024);
        buf.extend_from_slice(HEADER);
        CopyRows {
            buf,
            columns,
            rows: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Starts a row; exactly `columns` values must follow.
    pub fn row(&mut self) -> &mut Self {
        self.rows += 1;
        self.buf.extend_from_slice(&self.columns.to_be_bytes());
        self
    }

    fn value(&mut self, bytes: &[u8]) -> &mut Self {
        // A value is at most a few kilobytes (names, hashes): far below i32::MAX.
        let len = i32::try_from(bytes.len()).unwrap_or(i32::MAX);
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(bytes);
        self
    }

    pub fn null(&mut self) -> &mut Self {
        self.buf.extend_from_slice(&(-1i32).to_be_bytes());
        self
    }

    pub fn text(&mut self, v: &str) -> &mut Self {
        self.value(v.as_bytes())
    }

    pub fn opt_text(&mut self, v: Option<&str>) -> &mut Self {
        match v {
            Some(v) => self.text(v),
            None => self.null(),
        }
    }

    pub fn bigint(&mut self, v: i64) -> &mut Self {
        self.value(&v.to_be_bytes())
    }

    pub fn int(&mut self, v: i32) -> &mut Self {
        self.value(&v.to_be_bytes())
    }

    pub fn opt_int(&mut self, v: Option<i32>) -> &mut Self {
        match v {
            Some(v) => self.int(v),
            None => self.null(),
        }
    }

    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.value(&[u8::from(v)])
    }

    pub fn timestamptz(&mut self, v: DateTime<Utc>) -> &mut Self {
        self.value(&micros_since_2000(v.naive_utc()).to_be_bytes())
    }

    pub fn opt_timestamptz(&mut self, v: Option<DateTime<Utc>>) -> &mut Self {
        match v {
            Some(v) => self.timestamptz(v),
            None => self.null(),
        }
    }

    /// Sends the rows with `COPY table (columns) FROM STDIN`. `table` and `columns` are
    /// constants of the caller, never input. A row that breaks a unique index fails the whole
    /// `COPY` with that error (23505).
    pub async fn send(
        mut self,
        conn: &mut PgConnection,
        table: &str,
        columns: &str,
    ) -> Result<(), sqlx::Error> {
        if self.rows == 0 {
            return Ok(());
        }
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        let mut copy = conn
            .copy_in_raw(&format!(
                "COPY {table} ({columns}) FROM STDIN (FORMAT binary)"
            ))
            .await?;
        copy.send(self.buf).await?;
        copy.finish().await.map(drop)
    }
}

/// PostgreSQL's timestamps count microseconds from 2000-01-01 UTC; computed as sqlx does.
fn micros_since_2000(v: NaiveDateTime) -> i64 {
    let epoch = NaiveDate::from_ymd_opt(2000, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .unwrap_or_default();
    (v - epoch).num_microseconds().unwrap_or(i64::MAX)
}
