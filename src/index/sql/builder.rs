//! The WHERE clauses of searches: QIDO/C-FIND matching (PS3.4 C.2.2.2)
//! as SQL conditions with bound parameters.

use super::super::Scope;
use crate::query::names::prefix_upper_bound;
use crate::query::{Kind, Level, Match, Query};

/// A bound parameter.
#[derive(Debug, Clone)]
pub(super) enum Arg {
    Text(String),
    Int(i64),
}

/// Builds `WHERE` conditions with numbered placeholders.
#[derive(Default)]
pub(super) struct Sql {
    pub(super) conds: Vec<String>,
    pub(super) args: Vec<Arg>,
}

impl Sql {
    pub(super) fn arg(&mut self, a: Arg) -> String {
        self.args.push(a);
        format!("${}", self.args.len())
    }

    pub(super) fn text(&mut self, v: &str) -> String {
        self.arg(Arg::Text(v.to_owned()))
    }

    pub(super) fn eq(&mut self, column: &str, value: Option<&str>) {
        if let Some(v) = value {
            let p = self.text(v);
            self.conds.push(format!("{column} = {p}"));
        }
    }

    pub(super) fn where_sql(&self) -> String {
        if self.conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.conds.join(" AND "))
        }
    }

    pub(super) fn bind<'q>(
        &'q self,
        mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
        for a in &self.args {
            q = match a {
                Arg::Text(t) => q.bind(t.as_str()),
                Arg::Int(i) => q.bind(*i),
            };
        }
        q
    }

    /// The SQL condition for one match on `column` (PS3.4 C.2.2.2).
    pub(super) fn condition(&mut self, column: &str, kind: Kind, m: &Match) -> String {
        let value = |s: &mut Sql, v: &str| -> String {
            if kind == Kind::Integer {
                s.arg(Arg::Int(v.parse().unwrap_or(i64::MIN)))
            } else {
                s.text(v)
            }
        };
        match m {
            Match::Single(v) => {
                let p = value(self, v);
                format!("{column} = {p}")
            }
            Match::List(vs) => {
                let ps: Vec<String> = vs.iter().map(|v| value(self, v)).collect();
                format!("{column} IN ({})", ps.join(", "))
            }
            Match::Wildcard(w) => {
                // A trailing '*' alone is a prefix: an index range in both
                // databases. Anything else is LIKE with escapes.
                // (`strip_suffix`, not a byte slice: the value may end in
                // a multi-byte character; found by the fuzz target.)
                let prefix = w.strip_suffix('*').filter(|b| !b.contains(['*', '?']));
                if let Some(body) = prefix {
                    let lo = self.text(body);
                    match prefix_upper_bound(body) {
                        Some(hi) => {
                            let hi = self.text(&hi);
                            format!("({column} >= {lo} AND {column} < {hi})")
                        }
                        None => format!("{column} >= {lo}"),
                    }
                } else {
                    let p = self.text(&like_pattern(w));
                    format!("{column} LIKE {p} ESCAPE '\\'")
                }
            }
            Match::Range(lo, hi) => {
                let mut parts = Vec::new();
                if let Some(lo) = lo {
                    let p = self.text(lo);
                    parts.push(format!("{column} >= {p}"));
                }
                if let Some(hi) = hi {
                    // Inclusive of everything that starts with `hi` (a TM of
                    // lower precision covers the whole hour or minute).
                    match (kind, prefix_upper_bound(hi)) {
                        (Kind::Time, Some(next)) => {
                            let p = self.text(&next);
                            parts.push(format!("{column} < {p}"));
                        }
                        _ => {
                            let p = self.text(hi);
                            parts.push(format!("{column} <= {p}"));
                        }
                    }
                }
                format!("({})", parts.join(" AND "))
            }
            Match::Fuzzy(words) => {
                // Only PatientName has a word table; other names fall back
                // to case-insensitive substring matching per word.
                let conds: Vec<String> = words
                    .iter()
                    .map(|w| {
                        let p = self.text(&format!("%{}%", like_escape(w)));
                        format!("lower({column}) LIKE {p} ESCAPE '\\'")
                    })
                    .collect();
                format!("({})", conds.join(" AND "))
            }
        }
    }
}

pub(super) fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// DICOM wildcards to a LIKE pattern.
pub(super) fn like_pattern(w: &str) -> String {
    like_escape(w).replace('*', "%").replace('?', "_")
}

pub(super) fn scope_filter(scope: &Scope) -> Sql {
    let mut f = Sql::default();
    f.eq("st.study_uid", Some(scope.study.as_str()));
    f.eq("se.series_uid", scope.series.as_ref().map(|u| u.as_str()));
    f.eq("i.sop_uid", scope.instance.as_ref().map(|u| u.as_str()));
    f
}

/// Studies whose name words match every fuzzy query word: one index range
/// on the word table per word, intersected. Returns the SQL (placeholders
/// numbered after `first_arg`) and its arguments.
pub(super) fn fuzzy_study_set(words: &[String], first_arg: usize) -> (String, Vec<Arg>) {
    let mut args = Vec::new();
    let mut p = |v: String| {
        args.push(Arg::Text(v));
        format!("${}", first_arg + args.len())
    };
    let sets: Vec<String> = words
        .iter()
        .map(|w| {
            let lo = p(w.clone());
            let cond = match prefix_upper_bound(w) {
                Some(hi) => format!("word >= {lo} AND word < {}", p(hi)),
                None => format!("word >= {lo}"),
            };
            format!("SELECT study_pk FROM study_name_words WHERE {cond}")
        })
        .collect();
    (sets.join(" INTERSECT "), args)
}

/// Fuzzy candidate sets up to this size are resolved first and passed as
/// keys: planners misjudge the size of an intersection and would scan
/// every study to join a few hundred.
pub(super) const FUZZY_INLINE_MAX: usize = 20_000;

/// StudyDate and StudyTime ranges as one date-time range (PS3.4
/// C.2.2.2.5.1), when the query has both as ranges; whether it had.
fn combined_datetime(q: &Query, sql: &mut Sql) -> bool {
    let date = q
        .filters
        .iter()
        .find(|f| f.attribute.keyword == "StudyDate");
    let time = q
        .filters
        .iter()
        .find(|f| f.attribute.keyword == "StudyTime");
    match (date.map(|f| &f.matching), time.map(|f| &f.matching)) {
        (Some(Match::Range(dlo, dhi)), Some(Match::Range(tlo, thi))) => {
            // PS3.4 C.2.2.2.5.1: one range over date and time together.
            let mut parts = Vec::new();
            if let Some(d) = dlo {
                let (d1, d2) = (sql.text(d), sql.text(d));
                let t = tlo.as_deref().unwrap_or("");
                let t = sql.text(t);
                parts.push(format!(
                    "(st.study_date > {d1} OR (st.study_date = {d2} AND COALESCE(st.study_time, '') >= {t}))"
                ));
            }
            if let Some(d) = dhi {
                let (d1, d2) = (sql.text(d), sql.text(d));
                let t = thi
                    .as_deref()
                    .and_then(prefix_upper_bound)
                    .unwrap_or_else(|| "999999".into());
                let t = sql.text(&t);
                parts.push(format!(
                    "(st.study_date < {d1} OR (st.study_date = {d2} AND COALESCE(st.study_time, '') < {t}))"
                ));
            }
            if !parts.is_empty() {
                sql.conds.push(parts.join(" AND "));
            }
            true
        }
        _ => false,
    }
}

/// Patient Name: fuzzy words through the name-word table (or the study
/// keys resolved from it beforehand), else its match key.
fn patient_name_condition(sql: &mut Sql, m: &Match, fuzzy_studies: Option<&[i64]>) -> String {
    match m {
        Match::Fuzzy(words) => match fuzzy_studies {
            // Resolved beforehand: the matching studies by key.
            Some([]) => "1 = 0".into(),
            Some(pks) => {
                let list: Vec<String> = pks.iter().map(i64::to_string).collect();
                format!("st.pk IN ({})", list.join(","))
            }
            None => {
                let (set, args) = fuzzy_study_set(words, sql.args.len());
                sql.args.extend(args);
                format!("st.pk IN ({set})")
            }
        },
        m => sql.condition("st.patient_name_key", Kind::PersonName, m),
    }
}

/// The WHERE conditions of a search at `q.level` (aliases st, se, i).
pub(super) fn search_conditions(q: &Query, fuzzy_studies: Option<&[i64]>) -> Sql {
    let mut sql = Sql::default();
    let combined = q.combined_datetime && combined_datetime(q, &mut sql);

    for f in &q.filters {
        let a = f.attribute;
        if combined && (a.keyword == "StudyDate" || a.keyword == "StudyTime") {
            continue;
        }
        if a.keyword == "ModalitiesInStudy" {
            let c = sql.condition("m.modality", a.kind, &f.matching);
            sql.conds.push(format!(
                "EXISTS (SELECT 1 FROM series m WHERE m.study_pk = st.pk AND {c})"
            ));
            continue;
        }
        if a.keyword == "PatientName" {
            let c = patient_name_condition(&mut sql, &f.matching, fuzzy_studies);
            sql.conds.push(c);
            continue;
        }
        let column = if a.kind == Kind::PersonName {
            format!("lower({})", a.column)
        } else {
            a.column.to_owned()
        };
        let c = sql.condition(&column, a.kind, &f.matching);
        // A key below the query level matches when any child matches
        // (relational matching, as users expect from QIDO).
        let c = match (q.level, a.level) {
            (Level::Study, Level::Series) => {
                format!("EXISTS (SELECT 1 FROM series se WHERE se.study_pk = st.pk AND {c})")
            }
            (Level::Study, Level::Instance) => format!(
                "EXISTS (SELECT 1 FROM series se JOIN instances i ON i.series_pk = se.pk \
                 WHERE se.study_pk = st.pk AND {c})"
            ),
            (Level::Series, Level::Instance) => {
                format!("EXISTS (SELECT 1 FROM instances i WHERE i.series_pk = se.pk AND {c})")
            }
            _ => c,
        };
        sql.conds.push(c);
    }

    for sf in &q.sequence_filters {
        let path = sql.text(&sf.path);
        let c = sql.condition("q.value", Kind::Text, &sf.matching);
        let link = match q.level {
            Level::Study => "q.study_pk = st.pk",
            Level::Series => "q.series_pk = se.pk",
            Level::Instance => "q.instance_pk = i.pk",
        };
        sql.conds.push(format!(
            "EXISTS (SELECT 1 FROM sequence_items q WHERE {link} AND q.path = {path} AND {c})"
        ));
    }
    sql
}
