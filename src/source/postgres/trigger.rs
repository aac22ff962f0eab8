//! The SQL Herald needs in the database: the trigger that sends a table's changes
//! (`herald pg trigger`), the outbox table, and the query that fetches a row too big
//! to notify.
//!
//! A trigger sends each changed row as JSON:
//!
//! ```json
//! {"op": "update", "schema": "public", "table": "tasks",
//!  "new": {"id": 7, "team_id": 1, "title": "Ship it", "done": true},
//!  "old": {"id": 7, "team_id": 1, "title": "Ship it", "done": false}}
//! ```
//!
//! `op` is `insert`, `update` or `delete`; `new` is null for a delete, `old` for an
//! insert. With a column list only those columns are sent, and an update that
//! changes none of them sends nothing. A NOTIFY payload must stay under 8,000 bytes:
//! when a row is bigger, the trigger sends only its key (and the columns to keep)
//! with `"truncated": true`, and the hub fetches the row when a route says how.
//!
//! Names are taken as written (quoted in the SQL), so `Tasks` is the table created
//! as `"Tasks"`, not `tasks`.

use std::collections::HashSet;
use std::fmt::Write as _;

use tokio_postgres::NoTls;

/// The longest identifier PostgreSQL keeps, in bytes (`NAMEDATALEN - 1`).
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// NOTIFY refuses payloads of this many bytes or more.
pub const NOTIFY_PAYLOAD_LIMIT: usize = 8000;

/// Functions take at most 100 arguments: `jsonb_build_object` calls are split.
const PAIRS_PER_CALL: usize = 40;

/// Checks a column or table name: 1 to 63 bytes, no control characters.
pub fn check_identifier(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_IDENTIFIER_BYTES || name.chars().any(char::is_control) {
        return Err(format!(
            "{name:?} is not a name of 1 to {MAX_IDENTIFIER_BYTES} bytes without control characters"
        ));
    }
    Ok(())
}

/// An identifier quoted for SQL: `"name"`, with inner quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A string literal for SQL: `'text'`, with inner quotes doubled.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A table name, optionally with its schema: `tasks` or `app.tasks`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QualifiedName {
    /// The schema; without one the table is found by the `search_path`.
    pub schema: Option<String>,
    /// The table.
    pub name: String,
}

impl QualifiedName {
    /// Parses `table` or `schema.table`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split('.').collect();
        let (schema, name) = match parts.as_slice() {
            [name] => (None, *name),
            [schema, name] => (Some(*schema), *name),
            _ => {
                return Err(format!(
                    "{text:?} is not a table name such as `tasks` or `app.tasks`"
                ));
            }
        };
        if let Some(schema) = schema {
            check_identifier(schema)?;
        }
        check_identifier(name)?;
        Ok(Self {
            schema: schema.map(str::to_owned),
            name: name.to_owned(),
        })
    }

    /// The name quoted for SQL: `"app"."tasks"`.
    pub fn quoted(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{}.{}", quote_ident(schema), quote_ident(&self.name)),
            None => quote_ident(&self.name),
        }
    }

    /// Another object in the same schema, quoted: for functions next to a table.
    fn sibling(&self, name: &str) -> String {
        QualifiedName {
            schema: self.schema.clone(),
            name: name.to_owned(),
        }
        .quoted()
    }
}

impl std::fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// A name derived from others, cut to fit PostgreSQL's identifier length with a hash
/// of the whole so that two long names stay apart.
fn derived_name(name: &str) -> String {
    if name.len() <= MAX_IDENTIFIER_BYTES {
        return name.to_owned();
    }
    let mut cut = MAX_IDENTIFIER_BYTES - 9;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}_{:08x}", &name[..cut], fnv1a(name.as_bytes()))
}

/// FNV-1a, 32 bits: a stable hash for derived names and lock keys.
pub(crate) fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// A dollar-quoting tag that does not occur in `body`.
fn dollar_tag(body: &str) -> String {
    let mut tag = "$herald$".to_owned();
    let mut n = 0;
    while body.contains(&tag) {
        n += 1;
        tag = format!("$herald{n}$");
    }
    tag
}

/// `jsonb_build_object('a', REC."a", ...)` for `columns` of the record `rec`, split
/// into several calls joined by `||` past the argument limit.
fn build_object(rec: &str, columns: &[String]) -> String {
    if columns.is_empty() {
        return "'{}'::jsonb".into();
    }
    columns
        .chunks(PAIRS_PER_CALL)
        .map(|chunk| {
            let pairs: Vec<String> = chunk
                .iter()
                .map(|c| format!("{}, {rec}.{}", quote_literal(c), quote_ident(c)))
                .collect();
            format!("jsonb_build_object({})", pairs.join(", "))
        })
        .collect::<Vec<_>>()
        .join(" || ")
}

/// The record of a row as JSON: all its columns, or the listed ones.
fn row_json(rec: &str, columns: Option<&[String]>) -> String {
    match columns {
        None => format!("to_jsonb({rec})"),
        Some(columns) => build_object(rec, columns),
    }
}

/// Where a trigger sends the changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// `pg_notify(channel, payload)`: immediate, lost while no hub listens.
    Notify,
    /// A row in the outbox table, in the same transaction as the change.
    Outbox {
        /// The outbox table.
        table: QualifiedName,
        /// The NOTIFY channel that wakes the hub when rows are added.
        wake: String,
    },
}

/// What `herald pg trigger` generates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerSpec {
    /// The table whose changes are sent.
    pub table: QualifiedName,
    /// The NOTIFY channel (or outbox topic) the routes take.
    pub notify: String,
    /// The columns sent; `None` sends every column.
    pub columns: Option<Vec<String>>,
    /// The key columns sent when the row is too big; `None`: `id` (the primary key
    /// when applied to a database).
    pub key: Option<Vec<String>>,
    /// Columns also kept when the row is too big, so routes can still use them.
    pub keep: Vec<String>,
    /// Where the changes go.
    pub delivery: Delivery,
}

/// Why the trigger could not be generated or installed.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// An argument is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// The database refused or could not be reached.
    #[error("{0}")]
    Database(String),
}

impl From<tokio_postgres::Error> for TriggerError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Database(super::describe(&e))
    }
}

impl TriggerSpec {
    /// Checks the names.
    pub fn check(&self) -> Result<(), TriggerError> {
        let invalid = TriggerError::Invalid;
        check_identifier(&self.notify).map_err(|m| invalid(format!("--notify: {m}")))?;
        if let Some(columns) = &self.columns {
            if columns.is_empty() {
                return Err(invalid("--columns: list at least one column".into()));
            }
            for c in columns {
                check_identifier(c).map_err(|m| invalid(format!("--columns: {m}")))?;
            }
        }
        if let Some(key) = &self.key {
            if key.is_empty() {
                return Err(invalid("--key: list at least one column".into()));
            }
            for c in key {
                check_identifier(c).map_err(|m| invalid(format!("--key: {m}")))?;
            }
        }
        for c in &self.keep {
            check_identifier(c).map_err(|m| invalid(format!("--keep: {m}")))?;
        }
        if let Delivery::Outbox { wake, .. } = &self.delivery {
            check_identifier(wake).map_err(|m| invalid(format!("--wake: {m}")))?;
        }
        Ok(())
    }

    fn key_columns(&self) -> Vec<String> {
        self.key.clone().unwrap_or_else(|| vec!["id".into()])
    }

    /// The name of the trigger and of its function.
    pub fn name(&self) -> String {
        match &self.delivery {
            Delivery::Notify => {
                derived_name(&format!("herald_{}_{}", self.table.name, self.notify))
            }
            Delivery::Outbox { .. } => derived_name(&format!(
                "herald_{}_{}_outbox",
                self.table.name, self.notify
            )),
        }
    }

    /// The SQL that installs (or replaces) the trigger; with an outbox, the outbox
    /// table too (if it does not exist).
    pub fn install_sql(&self) -> String {
        let name = self.name();
        let function = self.table.sibling(&name);
        let columns = self.columns.as_deref();
        let table_text = self.table.to_string();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "-- Herald: every INSERT, UPDATE and DELETE on {table_text} sent {}.",
            match &self.delivery {
                Delivery::Notify => format!("to NOTIFY channel {:?}", self.notify),
                Delivery::Outbox { table, .. } =>
                    format!("to outbox {table} as topic {:?}", self.notify),
            }
        );
        if self.key.is_none() && matches!(self.delivery, Delivery::Notify) {
            let _ = writeln!(
                out,
                "-- Rows too big to notify are sent as their key, assumed to be `id` (see --key)."
            );
        }
        if let Delivery::Outbox { table, wake } = &self.delivery {
            out.push_str(&outbox_table_sql(table, wake));
        }
        let mut body = String::new();
        let _ = writeln!(body, "DECLARE");
        let _ = writeln!(body, "  new_row jsonb;");
        let _ = writeln!(body, "  old_row jsonb;");
        if matches!(self.delivery, Delivery::Notify) {
            let _ = writeln!(body, "  payload text;");
        }
        let _ = writeln!(body, "BEGIN");
        let _ = writeln!(body, "  IF TG_OP <> 'DELETE' THEN");
        let _ = writeln!(body, "    new_row := {};", row_json("NEW", columns));
        let _ = writeln!(body, "  END IF;");
        let _ = writeln!(body, "  IF TG_OP <> 'INSERT' THEN");
        let _ = writeln!(body, "    old_row := {};", row_json("OLD", columns));
        let _ = writeln!(body, "  END IF;");
        let _ = writeln!(body, "  IF TG_OP = 'UPDATE' AND new_row = old_row THEN");
        let _ = writeln!(body, "    RETURN NULL; -- none of the sent columns changed");
        let _ = writeln!(body, "  END IF;");
        let envelope = |extra: &str| {
            format!(
                "jsonb_build_object('op', lower(TG_OP), 'schema', TG_TABLE_SCHEMA, 'table', TG_TABLE_NAME, 'new', new_row, 'old', old_row{extra})"
            )
        };
        match &self.delivery {
            Delivery::Notify => {
                let mut short: Vec<String> = self.key_columns();
                for c in &self.keep {
                    if !short.contains(c) {
                        short.push(c.clone());
                    }
                }
                let limit = NOTIFY_PAYLOAD_LIMIT;
                let notify = quote_literal(&self.notify);
                let _ = writeln!(body, "  payload := {}::text;", envelope(""));
                let _ = writeln!(body, "  IF octet_length(payload) >= {limit} THEN");
                let _ = writeln!(
                    body,
                    "    -- Too big for NOTIFY: the key and the kept columns; the hub may fetch the row."
                );
                let _ = writeln!(body, "    new_row := NULL;");
                let _ = writeln!(body, "    old_row := NULL;");
                let _ = writeln!(body, "    IF TG_OP <> 'DELETE' THEN");
                let _ = writeln!(body, "      new_row := {};", build_object("NEW", &short));
                let _ = writeln!(body, "    END IF;");
                let _ = writeln!(body, "    IF TG_OP <> 'INSERT' THEN");
                let _ = writeln!(body, "      old_row := {};", build_object("OLD", &short));
                let _ = writeln!(body, "    END IF;");
                let _ = writeln!(
                    body,
                    "    payload := {}::text;",
                    envelope(", 'truncated', true")
                );
                let _ = writeln!(body, "  END IF;");
                let _ = writeln!(body, "  IF octet_length(payload) >= {limit} THEN");
                let _ = writeln!(
                    body,
                    "    -- Even the key is too big: say so rather than fail the transaction."
                );
                let _ = writeln!(
                    body,
                    "    payload := jsonb_build_object('op', lower(TG_OP), 'schema', TG_TABLE_SCHEMA, 'table', TG_TABLE_NAME, 'truncated', true)::text;"
                );
                let _ = writeln!(body, "  END IF;");
                let _ = writeln!(body, "  PERFORM pg_notify({notify}, payload);");
            }
            Delivery::Outbox { table, .. } => {
                let _ = writeln!(
                    body,
                    "  INSERT INTO {} (topic, payload) VALUES ({}, {});",
                    table.quoted(),
                    quote_literal(&self.notify),
                    envelope("")
                );
            }
        }
        let _ = writeln!(body, "  RETURN NULL;");
        let _ = write!(body, "END");
        let tag = dollar_tag(&body);
        let _ = writeln!(
            out,
            "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger\nLANGUAGE plpgsql AS {tag}\n{body}\n{tag};"
        );
        let _ = writeln!(
            out,
            "DROP TRIGGER IF EXISTS {name} ON {table};\nCREATE TRIGGER {name} AFTER INSERT OR UPDATE OR DELETE ON {table}\n  FOR EACH ROW EXECUTE FUNCTION {function}();",
            name = quote_ident(&name),
            table = self.table.quoted(),
        );
        out
    }

    /// The SQL that removes the trigger and its function (not the outbox table).
    pub fn drop_sql(&self) -> String {
        let name = self.name();
        format!(
            "DROP TRIGGER IF EXISTS {} ON {};\nDROP FUNCTION IF EXISTS {}();\n",
            quote_ident(&name),
            self.table.quoted(),
            self.table.sibling(&name)
        )
    }

    /// Installs the trigger (or with `drop`, removes it) in the database at `url`,
    /// after checking that the table and the columns exist; without `--key`, the
    /// table's primary key is used, and an outbox table named without its schema is
    /// taken in the connection's current schema. Returns the SQL that was run.
    pub async fn apply(mut self, url: &str, drop: bool) -> Result<String, TriggerError> {
        self.check()?;
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| TriggerError::Invalid(format!("the connection URL is not valid: {e}")))?;
        let (client, connection) = config.connect(NoTls).await?;
        let driver = tokio::spawn(connection);
        let result = async {
            if drop {
                let sql = self.drop_sql();
                client.batch_execute(&sql).await?;
                return Ok(sql);
            }
            let oid: Option<u32> = client
                .query_one(
                    "SELECT to_regclass($1)::oid",
                    &[&self.table.quoted()],
                )
                .await?
                .get(0);
            let oid = oid.ok_or_else(|| {
                TriggerError::Invalid(format!("there is no table {}", self.table))
            })?;
            let existing: HashSet<String> = client
                .query(
                    "SELECT attname::text FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped",
                    &[&oid],
                )
                .await?
                .iter()
                .map(|row| row.get(0))
                .collect();
            if self.key.is_none() {
                let key: Vec<String> = client
                    .query(
                        "SELECT a.attname::text FROM pg_index i \
                         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey::int2[]) \
                         WHERE i.indrelid = $1 AND i.indisprimary \
                         ORDER BY array_position(i.indkey::int2[], a.attnum)",
                        &[&oid],
                    )
                    .await?
                    .iter()
                    .map(|row| row.get(0))
                    .collect();
                if key.is_empty() && matches!(self.delivery, Delivery::Notify) {
                    return Err(TriggerError::Invalid(format!(
                        "{} has no primary key: name the key columns with --key",
                        self.table
                    )));
                }
                self.key = Some(key);
            }
            let named = self
                .columns
                .iter()
                .flatten()
                .map(|c| ("--columns", c))
                .chain(self.key.iter().flatten().map(|c| ("--key", c)))
                .chain(self.keep.iter().map(|c| ("--keep", c)));
            for (flag, column) in named {
                if !existing.contains(column) {
                    return Err(TriggerError::Invalid(format!(
                        "{flag}: {} has no column {column:?}",
                        self.table
                    )));
                }
            }
            if let Delivery::Outbox { table, .. } = &mut self.delivery
                && table.schema.is_none()
            {
                // The function runs with the search_path of whichever session
                // changes the table: name the outbox table's schema.
                let schema: String = client
                    .query_one("SELECT current_schema()::text", &[])
                    .await?
                    .try_get(0)?;
                table.schema = Some(schema);
            }
            let sql = self.install_sql();
            client.batch_execute(&sql).await?;
            Ok(sql)
        }
        .await;
        drop_client(client, driver).await;
        result
    }
}

async fn drop_client(
    client: tokio_postgres::Client,
    driver: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
) {
    drop(client);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), driver).await;
}

/// The name of the outbox wake trigger and function for `table`.
fn wake_name(table: &QualifiedName) -> String {
    derived_name(&format!("{}_wake", table.name))
}

/// The SQL that creates the outbox table (if it does not exist), its index of rows
/// to publish, and the statement trigger that wakes the hub on NOTIFY channel `wake`.
pub fn outbox_table_sql(table: &QualifiedName, wake: &str) -> String {
    let t = table.quoted();
    let wake_fn = table.sibling(&wake_name(table));
    let pending = quote_ident(&derived_name(&format!("{}_pending", table.name)));
    let body = format!(
        "BEGIN\n  PERFORM pg_notify({}, '');\n  RETURN NULL;\nEND",
        quote_literal(wake)
    );
    let tag = dollar_tag(&body);
    format!(
        "CREATE TABLE IF NOT EXISTS {t} (\n  id bigserial PRIMARY KEY,\n  topic text NOT NULL,\n  payload jsonb NOT NULL,\n  created_at timestamptz NOT NULL DEFAULT now(),\n  published_at timestamptz\n);\n\
         CREATE INDEX IF NOT EXISTS {pending} ON {t} (id) WHERE published_at IS NULL;\n\
         CREATE OR REPLACE FUNCTION {wake_fn}() RETURNS trigger\nLANGUAGE plpgsql AS {tag}\n{body}\n{tag};\n\
         DROP TRIGGER IF EXISTS {name} ON {t};\n\
         CREATE TRIGGER {name} AFTER INSERT ON {t}\n  FOR EACH STATEMENT EXECUTE FUNCTION {wake_fn}();\n",
        name = quote_ident(&wake_name(table)),
    )
}

/// The query checking that the outbox table and its wake trigger exist: one row,
/// `true` when both do. `$1` is the quoted table name.
pub(crate) fn outbox_exists_sql(table: &QualifiedName) -> String {
    format!(
        "SELECT to_regclass($1) IS NOT NULL AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass($1) AND tgname = {})",
        quote_literal(&wake_name(table))
    )
}

/// The query fetching one row of `table` by its key, as JSON; `$1` is a JSON object
/// holding (at least) the key columns, converted to the table's column types.
pub(crate) fn fetch_sql(
    table: &QualifiedName,
    key: &[String],
    columns: Option<&[String]>,
) -> String {
    let t = table.quoted();
    let select = match columns {
        None => "t.*".to_owned(),
        Some(columns) => columns
            .iter()
            .map(|c| format!("t.{}", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(", "),
    };
    let matches = key
        .iter()
        .map(|c| format!("t.{q} = k.{q}", q = quote_ident(c)))
        .collect::<Vec<_>>()
        .join(" AND ");
    format!(
        "SELECT row_to_json(r) FROM (SELECT {select} FROM {t} AS t, json_populate_record(NULL::{t}, $1::json) AS k WHERE {matches}) AS r"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TriggerSpec {
        TriggerSpec {
            table: QualifiedName::parse("app.tasks").unwrap(),
            notify: "tasks".into(),
            columns: None,
            key: None,
            keep: vec![],
            delivery: Delivery::Notify,
        }
    }

    #[test]
    fn names_are_parsed_and_quoted() {
        let q = QualifiedName::parse("tasks").unwrap();
        assert_eq!(q.quoted(), "\"tasks\"");
        let q = QualifiedName::parse("My App.Ta\"sks").unwrap();
        assert_eq!(q.quoted(), "\"My App\".\"Ta\"\"sks\"");
        assert_eq!(q.to_string(), "My App.Ta\"sks");
        assert!(QualifiedName::parse("a.b.c").is_err());
        assert!(QualifiedName::parse("").is_err());
        assert!(QualifiedName::parse(".t").is_err());
        assert!(QualifiedName::parse(&"x".repeat(64)).is_err());
        assert_eq!(quote_literal("it's"), "'it''s'");
        let long = derived_name(&"n".repeat(100));
        assert_eq!(long.len(), MAX_IDENTIFIER_BYTES);
        assert_ne!(long, derived_name(&"n".repeat(101)));
    }

    #[test]
    fn the_notify_trigger_sends_the_row_and_falls_back_to_the_key() {
        let sql = spec().install_sql();
        assert!(sql.contains("new_row := to_jsonb(NEW);"), "{sql}");
        assert!(
            sql.contains("PERFORM pg_notify('tasks', payload);"),
            "{sql}"
        );
        assert!(sql.contains("octet_length(payload) >= 8000"), "{sql}");
        assert!(
            sql.contains("new_row := jsonb_build_object('id', NEW.\"id\");"),
            "{sql}"
        );
        assert!(sql.contains("'truncated', true"), "{sql}");
        assert!(
            sql.contains("CREATE OR REPLACE FUNCTION \"app\".\"herald_tasks_tasks\"()"),
            "{sql}"
        );
        assert!(sql.contains("ON \"app\".\"tasks\""), "{sql}");
        assert!(sql.contains("assumed to be `id`"), "{sql}");

        let mut s = spec();
        s.columns = Some(vec!["id".into(), "team_id".into(), "title".into()]);
        s.key = Some(vec!["id".into()]);
        s.keep = vec!["team_id".into()];
        let sql = s.install_sql();
        assert!(sql.contains("new_row := jsonb_build_object('id', NEW.\"id\", 'team_id', NEW.\"team_id\", 'title', NEW.\"title\");"), "{sql}");
        assert!(
            sql.contains(
                "new_row := jsonb_build_object('id', NEW.\"id\", 'team_id', NEW.\"team_id\");"
            ),
            "{sql}"
        );
        assert!(!sql.contains("to_jsonb"), "{sql}");
        assert!(!sql.contains("assumed"), "{sql}");
    }

    #[test]
    fn wide_column_lists_are_split_and_odd_names_quoted() {
        let mut s = spec();
        s.columns = Some((0..100).map(|i| format!("c{i}")).collect());
        s.notify = "it's".into();
        let sql = s.install_sql();
        assert_eq!(sql.matches("jsonb_build_object('c0'").count(), 2, "{sql}");
        assert!(sql.contains(" || jsonb_build_object('c40'"), "{sql}");
        assert!(sql.contains("pg_notify('it''s', payload)"), "{sql}");
        s.columns = Some(vec!["$herald$".into()]);
        let sql = s.install_sql();
        assert!(sql.contains("AS $herald1$"), "{sql}");
    }

    #[test]
    fn the_outbox_trigger_writes_rows_and_the_table_wakes_the_hub() {
        let mut s = spec();
        s.delivery = Delivery::Outbox {
            table: QualifiedName::parse("herald_outbox").unwrap(),
            wake: "herald_outbox".into(),
        };
        let sql = s.install_sql();
        assert!(
            sql.contains("CREATE TABLE IF NOT EXISTS \"herald_outbox\""),
            "{sql}"
        );
        assert!(sql.contains("INSERT INTO \"herald_outbox\" (topic, payload) VALUES ('tasks', jsonb_build_object("), "{sql}");
        assert!(
            sql.contains("PERFORM pg_notify('herald_outbox', '');"),
            "{sql}"
        );
        assert!(sql.contains("FOR EACH STATEMENT"), "{sql}");
        assert!(!sql.contains("octet_length"), "{sql}");
        assert_ne!(s.name(), spec().name());
        let drop = s.drop_sql();
        assert!(
            drop.contains(
                "DROP TRIGGER IF EXISTS \"herald_tasks_tasks_outbox\" ON \"app\".\"tasks\""
            ),
            "{drop}"
        );
    }

    #[test]
    fn bad_arguments_are_refused() {
        let mut s = spec();
        s.columns = Some(vec![]);
        assert!(s.check().is_err());
        let mut s = spec();
        s.notify = String::new();
        assert!(s.check().is_err());
        let mut s = spec();
        s.key = Some(vec!["a\nb".into()]);
        assert!(s.check().is_err());
        assert!(spec().check().is_ok());
    }

    #[test]
    fn the_fetch_query_matches_by_key_with_the_table_types() {
        let t = QualifiedName::parse("tasks").unwrap();
        let sql = fetch_sql(&t, &["id".into()], Some(&["id".into(), "title".into()]));
        assert_eq!(
            sql,
            "SELECT row_to_json(r) FROM (SELECT t.\"id\", t.\"title\" FROM \"tasks\" AS t, json_populate_record(NULL::\"tasks\", $1::json) AS k WHERE t.\"id\" = k.\"id\") AS r"
        );
    }
}
