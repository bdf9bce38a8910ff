//! The copied attributes ([`crate::query::Stored::Copied`]) as SQL columns:
//! one list, from [`crate::query::ATTRIBUTES`], for the inserts, the
//! updates, the selects and the reading back of rows, so that an attribute
//! added to the table needs nothing here.

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, Row};

use super::super::{Attributes, Value};
use crate::query::{copied, Attribute, Kind, Level};

type AnyQuery<'q> = Query<'q, Any, AnyArguments<'q>>;

/// The copied attributes stored in `level`'s table.
pub(super) fn of(level: Level) -> Vec<&'static Attribute> {
    copied(level).collect()
}

/// `a, b, c` (bare column names, for an INSERT's column list).
pub(super) fn names(attrs: &[&'static Attribute]) -> String {
    attrs
        .iter()
        .map(|a| a.column_name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `st.a, st.b` (with their table alias, for a SELECT).
pub(super) fn qualified(attrs: &[&'static Attribute]) -> String {
    attrs
        .iter()
        .map(|a| a.column)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `$first, $first+1, …`, one placeholder per attribute.
pub(super) fn placeholders(attrs: &[&'static Attribute], first: usize) -> String {
    (0..attrs.len())
        .map(|k| format!("${}", first + k))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `a = $first, b = $first+1, …` (for an UPDATE).
pub(super) fn assignments(attrs: &[&'static Attribute], first: usize) -> String {
    attrs
        .iter()
        .enumerate()
        .map(|(k, a)| format!("{} = ${}", a.column_name(), first + k))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Binds the values of `attrs` in order: integers as integers, the rest as
/// text, absent ones as NULL of their type.
pub(super) fn bind<'q>(
    mut q: AnyQuery<'q>,
    attrs: &[&'static Attribute],
    values: &'q Attributes,
) -> AnyQuery<'q> {
    for a in attrs {
        let v = values.get(a.dicom_tag());
        q = if a.kind == Kind::Integer {
            q.bind(match v {
                Some(Value::Int(n)) => Some(*n),
                _ => None,
            })
        } else {
            q.bind(match v {
                Some(Value::Text(s)) => Some(s.as_str()),
                _ => None,
            })
        };
    }
    q
}

/// Reads `attrs` back from a row, by column name.
pub(super) fn read(r: &AnyRow, attrs: &[&'static Attribute]) -> Result<Attributes, sqlx::Error> {
    let mut out = Attributes::default();
    for a in attrs {
        let value = if a.kind == Kind::Integer {
            r.try_get::<Option<i64>, _>(a.column_name())?
                .map(Value::Int)
        } else {
            r.try_get::<Option<String>, _>(a.column_name())?
                .map(Value::Text)
        };
        out.set(a.dicom_tag(), value);
    }
    Ok(out)
}
