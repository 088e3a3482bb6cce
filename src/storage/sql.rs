//! The little that lets one piece of SQL serve both engines.
//!
//! The community tables have the same columns on Postgres and SQLite, and the statements that
//! touch them one row at a time are plain SQL both understand (`ON CONFLICT … DO UPDATE`,
//! `$N` placeholders — sqlx binds SQLite's `$N` by number too). So `records` and `reads` write
//! each statement once, as a [`Statement`] of SQL text plus [`Param`]s, and run it through a
//! [`SqlConn`]; `postgres` and `sqlite` implement that trait in a few lines each. What really
//! differs between the engines (the bulk inserts, how a consistent read is begun) stays in the
//! engine files.

use std::borrow::Cow;

use super::StorageError;

/// One bind parameter. The three column types of the community schema, nullable or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Param<'a> {
    Text(Option<&'a str>),
    Int(Option<i64>),
    Bool(bool),
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(value: &'a str) -> Param<'a> {
        Param::Text(Some(value))
    }
}

impl<'a> From<&'a String> for Param<'a> {
    fn from(value: &'a String) -> Param<'a> {
        Param::Text(Some(value))
    }
}

impl<'a> From<&'a Option<String>> for Param<'a> {
    fn from(value: &'a Option<String>) -> Param<'a> {
        Param::Text(value.as_deref())
    }
}

/// Ids bind as their text.
macro_rules! id_params {
    ($($id:ty),*) => {$(
        impl<'a> From<&'a $id> for Param<'a> {
            fn from(value: &'a $id) -> Param<'a> {
                Param::Text(Some(value.as_str()))
            }
        }

        impl<'a> From<&'a Option<$id>> for Param<'a> {
            fn from(value: &'a Option<$id>) -> Param<'a> {
                Param::Text(value.as_deref())
            }
        }
    )*};
}

id_params!(
    crate::domain::ids::ServerId,
    crate::domain::ids::ChannelId,
    crate::domain::ids::MessageId,
    crate::domain::ids::UserUid
);

impl<'a> From<Option<&'a str>> for Param<'a> {
    fn from(value: Option<&'a str>) -> Param<'a> {
        Param::Text(value)
    }
}

impl From<i64> for Param<'_> {
    fn from(value: i64) -> Self {
        Param::Int(Some(value))
    }
}

impl From<Option<i64>> for Param<'_> {
    fn from(value: Option<i64>) -> Self {
        Param::Int(value)
    }
}

impl From<bool> for Param<'_> {
    fn from(value: bool) -> Self {
        Param::Bool(value)
    }
}

/// SQL text with `$1…$N` placeholders and the values for them, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Statement<'a> {
    pub(super) sql: Cow<'static, str>,
    pub(super) params: Vec<Param<'a>>,
}

impl<'a> Statement<'a> {
    pub(super) fn new(sql: &'static str, params: Vec<Param<'a>>) -> Statement<'a> {
        Statement {
            sql: Cow::Borrowed(sql),
            params,
        }
    }

    /// For SQL assembled at run time. The engines prepare it like any other statement; keep the
    /// number of distinct shapes small.
    pub(super) fn dynamic(sql: String, params: Vec<Param<'a>>) -> Statement<'a> {
        Statement {
            sql: Cow::Owned(sql),
            params,
        }
    }

    /// Appends `value` as the next parameter and returns its placeholder (`$N`).
    pub(super) fn push(&mut self, value: impl Into<Param<'a>>) -> String {
        self.params.push(value.into());
        format!("${}", self.params.len())
    }
}

/// Column access by position, over either engine's row type.
pub(super) trait SqlRow {
    fn text(&self, index: usize) -> Result<String, sqlx::Error>;
    fn opt_text(&self, index: usize) -> Result<Option<String>, sqlx::Error>;
    fn int(&self, index: usize) -> Result<i64, sqlx::Error>;
    fn opt_int(&self, index: usize) -> Result<Option<i64>, sqlx::Error>;
    fn boolean(&self, index: usize) -> Result<bool, sqlx::Error>;
}

/// A connection (or a transaction, through its `DerefMut`) that runs [`Statement`]s.
pub(super) trait SqlConn {
    type Row: SqlRow + Send;

    /// Returns the number of rows affected.
    async fn execute(&mut self, statement: &Statement<'_>) -> Result<u64, sqlx::Error>;

    async fn fetch_all(&mut self, statement: &Statement<'_>)
    -> Result<Vec<Self::Row>, sqlx::Error>;

    async fn fetch_optional(
        &mut self,
        statement: &Statement<'_>,
    ) -> Result<Option<Self::Row>, sqlx::Error>;
}

/// A stored value the domain types cannot hold (an unknown enum spelling, a negative size):
/// the database is not in a state this code wrote.
pub(super) fn corrupt(what: &str, detail: impl std::fmt::Display) -> StorageError {
    StorageError::Internal(format!("unreadable {what} in storage: {detail}"))
}
