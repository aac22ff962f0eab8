//! Routing rules: what a notification becomes.
//!
//! A route takes the notifications of one NOTIFY channel (or the outbox rows of one
//! topic) and builds, from fields of their JSON payload, the Herald channels they go
//! to (`team:{team_id}`), their event type (`task.{op}`) and the data sent on (the
//! whole payload or a list of fields). Fields are dotted paths (`new.team_id`); a
//! path whose first part is not a key of the payload is looked up in the row of a
//! trigger payload (`new`, or `old` for a delete), so `{team_id}` works both for a
//! hand-written `pg_notify('tasks', json_build_object('team_id', ...))` and for the
//! payloads of `herald pg trigger`.
//!
//! Routing never guesses: a payload that is not JSON, lacks a field a channel or the
//! type needs, or builds an invalid channel name is skipped as a whole (counted by
//! reason), so an event never reaches a channel other than the one its rule names.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};

use super::{PostgresConfig, RouteConfig, trigger};
use crate::core::event::validate_type;
use crate::core::{ChannelName, NewEvent, Payload};
use crate::settings::ConfigError;
use crate::stats::SourceSkip;

/// A dotted path into a JSON payload: `team_id`, `new.team_id`, `new.tags.0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldPath {
    parts: Vec<String>,
    text: String,
}

impl FieldPath {
    /// Parses `a.b.c`: non-empty parts without white space or braces.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<String> = text.split('.').map(str::to_owned).collect();
        let bad = |p: &String| {
            p.is_empty()
                || p.chars()
                    .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '{' | '}'))
        };
        if text.is_empty() || parts.iter().any(bad) {
            return Err(format!(
                "{text:?} is not a field path such as `team_id` or `new.team_id`"
            ));
        }
        Ok(Self {
            parts,
            text: text.to_owned(),
        })
    }

    /// The path as written.
    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    /// The value at this path: from the top of the payload when its first part is a
    /// key there, otherwise from the row of a trigger payload (`new`, else `old`).
    pub(crate) fn resolve<'a>(&self, payload: &'a Value) -> Option<&'a Value> {
        let object = payload.as_object()?;
        let first = self.parts.first()?;
        let start = if object.contains_key(first) {
            payload
        } else {
            row_of(object)?
        };
        self.parts
            .iter()
            .try_fold(start, |value, part| match value {
                Value::Object(map) => map.get(part),
                Value::Array(items) => part.parse::<usize>().ok().and_then(|i| items.get(i)),
                _ => None,
            })
            .filter(|v| !v.is_null())
    }
}

/// The row of a trigger payload: `new`, or `old` when there is no new row (a delete).
fn row_of(object: &Map<String, Value>) -> Option<&Value> {
    ["new", "old"]
        .into_iter()
        .filter_map(|key| object.get(key))
        .find(|v| v.is_object())
}

/// The text a scalar stands for in a template; `None` for null, objects and lists.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Field(FieldPath),
}

/// Text with `{field}` holes filled from a payload; `{{` and `}}` stand for braces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    /// Parses a template such as `team:{team_id}`.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => return Err(format!("{text:?} has a `{{` without `}}`")),
                        }
                    }
                    if !literal.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut literal)));
                    }
                    pieces.push(Piece::Field(FieldPath::parse(&name)?));
                }
                '}' => return Err(format!("{text:?} has a `}}` without `{{`")),
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        if pieces.is_empty() {
            return Err("the template is empty".into());
        }
        Ok(Self { pieces })
    }

    /// The template filled from `payload`, or the first field that is missing (or
    /// null, an object or a list).
    pub(crate) fn render(&self, payload: &Value) -> Result<String, &FieldPath> {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Field(path) => {
                    let text = path.resolve(payload).and_then(scalar_text).ok_or(path)?;
                    out.push_str(&text);
                }
            }
        }
        Ok(out)
    }

    /// The template with every field replaced by `sample`, to check its fixed text.
    fn sample(&self, sample: &str) -> String {
        self.pieces
            .iter()
            .map(|p| match p {
                Piece::Text(t) => t.as_str(),
                Piece::Field(_) => sample,
            })
            .collect()
    }

    /// Whether the template has no field at all.
    fn is_fixed(&self) -> bool {
        self.pieces.iter().all(|p| matches!(p, Piece::Text(_)))
    }
}

/// What one route makes of one payload.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// An event to publish.
    Event(NewEvent),
    /// The route's `when` conditions do not hold: nothing to do.
    Filtered,
    /// The payload cannot be routed; why, and a description for the log that does
    /// not repeat the payload's values.
    Skipped(SourceSkip, String),
}

/// A compiled route.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    /// Its place in `postgres.routes`, for logs.
    pub(crate) index: usize,
    /// The NOTIFY channel or outbox topic it takes.
    pub(crate) notify: String,
    channels: Vec<(String, Template)>,
    optional_channels: Vec<(String, Template)>,
    kind: Option<Template>,
    fields: Option<Vec<FieldPath>>,
    when: Vec<(FieldPath, Vec<Value>)>,
    /// The query fetching a row that was too big to notify, if configured.
    pub(crate) fetch: Option<String>,
}

impl Route {
    /// Builds the event for `payload`.
    pub(crate) fn apply(&self, payload: &Value) -> Outcome {
        for (path, accepted) in &self.when {
            match path.resolve(payload) {
                Some(value) if accepted.contains(value) => {}
                _ => return Outcome::Filtered,
            }
        }
        let mut channels: Vec<ChannelName> = Vec::with_capacity(self.channels.len());
        let all = self
            .channels
            .iter()
            .map(|c| (c, true))
            .chain(self.optional_channels.iter().map(|c| (c, false)));
        for ((text, template), required) in all {
            let name = match template.render(payload) {
                Ok(name) => name,
                Err(_) if !required => continue,
                Err(path) => {
                    return Outcome::Skipped(
                        SourceSkip::MissingField,
                        format!(
                            "field `{}` for channel `{text}` is missing, null or not a scalar",
                            path.as_str()
                        ),
                    );
                }
            };
            match ChannelName::new(&name) {
                Ok(channel) => {
                    if !channels.contains(&channel) {
                        channels.push(channel);
                    }
                }
                Err(_) => {
                    return Outcome::Skipped(
                        SourceSkip::BadChannel,
                        format!("channel `{text}` filled from the payload is not a valid name"),
                    );
                }
            }
        }
        let kind = match &self.kind {
            None => None,
            Some(template) => match template.render(payload) {
                Ok(kind) => {
                    if validate_type(&kind).is_err() {
                        return Outcome::Skipped(
                            SourceSkip::InvalidEvent,
                            "the event type filled from the payload is not valid".into(),
                        );
                    }
                    Some(kind)
                }
                Err(path) => {
                    return Outcome::Skipped(
                        SourceSkip::MissingField,
                        format!(
                            "field `{}` for the event type is missing, null or not a scalar",
                            path.as_str()
                        ),
                    );
                }
            },
        };
        let data = match &self.fields {
            None => Payload::json(payload),
            Some(fields) => Payload::json(&project(payload, fields)),
        };
        let Ok(data) = data else {
            return Outcome::Skipped(SourceSkip::InvalidEvent, "unserialisable data".into());
        };
        let Some(first) = channels.first().cloned() else {
            return Outcome::Skipped(SourceSkip::BadChannel, "no channel".into());
        };
        let mut event = NewEvent::new(first, data);
        event.channels = channels;
        event.kind = kind;
        Outcome::Event(event)
    }
}

/// The listed fields of `payload`, each at the path it was listed with; missing
/// ones are left out.
fn project(payload: &Value, fields: &[FieldPath]) -> Value {
    let mut out = Map::new();
    for path in fields {
        if let Some(value) = path.resolve(payload) {
            insert_at(&mut out, &path.parts, value.clone());
        }
    }
    Value::Object(out)
}

fn insert_at(out: &mut Map<String, Value>, path: &[String], value: Value) {
    match path {
        [] => {}
        [last] => {
            out.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let slot = out
                .entry(first.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(inner) = slot {
                insert_at(inner, rest, value);
            }
        }
    }
}

/// Whether a payload is the short form a trigger sends for a row too big to notify.
pub(crate) fn is_truncated(payload: &Value) -> bool {
    payload.get("truncated") == Some(&Value::Bool(true))
}

/// Every route, by the NOTIFY channel (or outbox topic) it takes.
#[derive(Debug, Clone)]
pub(crate) struct Router {
    routes: Vec<Route>,
    by_topic: HashMap<String, Vec<usize>>,
}

impl Router {
    /// Compiles `config.routes`; errors name the key (`postgres.routes[0].channels[1]`).
    pub(crate) fn new(config: &PostgresConfig) -> Result<Self, ConfigError> {
        let mut routes = Vec::with_capacity(config.routes.len());
        let mut by_topic: HashMap<String, Vec<usize>> = HashMap::new();
        for (index, route) in config.routes.iter().enumerate() {
            let compiled = compile(index, route)?;
            by_topic
                .entry(compiled.notify.clone())
                .or_default()
                .push(index);
            routes.push(compiled);
        }
        Ok(Self { routes, by_topic })
    }

    /// The distinct NOTIFY channels (or topics) routed, sorted.
    pub(crate) fn topics(&self) -> Vec<&str> {
        let mut topics: Vec<&str> = self.by_topic.keys().map(String::as_str).collect();
        topics.sort_unstable();
        topics
    }

    /// The routes taking `topic`, in configuration order.
    pub(crate) fn routes_for<'a>(&'a self, topic: &str) -> impl Iterator<Item = &'a Route> + 'a {
        self.by_topic
            .get(topic)
            .into_iter()
            .flatten()
            .filter_map(|&i| self.routes.get(i))
    }
}

fn compile(index: usize, route: &RouteConfig) -> Result<Route, ConfigError> {
    let key = |rest: &str| format!("postgres.routes[{index}].{rest}");
    let notify = route.notify.as_str();
    if notify.is_empty() || notify.len() > trigger::MAX_IDENTIFIER_BYTES || notify.contains('\0') {
        return Err(ConfigError::new(
            key("notify"),
            format!(
                "must be a NOTIFY channel name of 1 to {} bytes",
                trigger::MAX_IDENTIFIER_BYTES
            ),
        ));
    }
    if route.channels.is_empty() {
        return Err(ConfigError::new(
            key("channels"),
            "must name at least one channel, e.g. [\"team:{team_id}\"]",
        ));
    }
    let channel = |list: &str, i: usize, text: &String| {
        let key = key(&format!("{list}[{i}]"));
        let template = Template::parse(text).map_err(|m| ConfigError::new(&key, m))?;
        ChannelName::new(&template.sample("1")).map_err(|e| {
            ConfigError::new(
                &key,
                format!(
                    "{text:?} does not make a valid channel (checked with each field as 1): {e}"
                ),
            )
        })?;
        Ok::<_, ConfigError>((text.clone(), template))
    };
    let channels = route
        .channels
        .iter()
        .enumerate()
        .map(|(i, t)| channel("channels", i, t))
        .collect::<Result<Vec<_>, _>>()?;
    let optional_channels = route
        .optional_channels
        .iter()
        .enumerate()
        .map(|(i, t)| channel("optional_channels", i, t))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some((i, _)) = optional_channels
        .iter()
        .enumerate()
        .find(|(_, (_, t))| t.is_fixed())
    {
        return Err(ConfigError::new(
            key(&format!("optional_channels[{i}]")),
            "has no field: a fixed channel belongs in `channels`",
        ));
    }
    let kind = match &route.kind {
        None => None,
        Some(text) => {
            let template = Template::parse(text).map_err(|m| ConfigError::new(key("type"), m))?;
            validate_type(&template.sample("x")).map_err(|e| {
                ConfigError::new(
                    key("type"),
                    format!(
                        "{text:?} does not make a valid type (checked with each field as x): {e}"
                    ),
                )
            })?;
            Some(template)
        }
    };
    let fields = match &route.fields {
        None => None,
        Some(list) => {
            if list.is_empty() {
                return Err(ConfigError::new(
                    key("fields"),
                    "is empty: list the fields to send, or leave `fields` out to send the whole payload",
                ));
            }
            Some(
                list.iter()
                    .enumerate()
                    .map(|(i, f)| {
                        FieldPath::parse(f)
                            .map_err(|m| ConfigError::new(key(&format!("fields[{i}]")), m))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            )
        }
    };
    let when = compile_when(&route.when, &key)?;
    let fetch = match &route.fetch {
        None => None,
        Some(fetch) => {
            let table = trigger::QualifiedName::parse(&fetch.table)
                .map_err(|m| ConfigError::new(key("fetch.table"), m))?;
            if fetch.key.is_empty() {
                return Err(ConfigError::new(
                    key("fetch.key"),
                    "must name the key column(s), e.g. [\"id\"]",
                ));
            }
            for (i, column) in fetch.key.iter().enumerate() {
                trigger::check_identifier(column)
                    .map_err(|m| ConfigError::new(key(&format!("fetch.key[{i}]")), m))?;
            }
            if let Some(columns) = &fetch.columns {
                if columns.is_empty() {
                    return Err(ConfigError::new(
                        key("fetch.columns"),
                        "is empty: list the columns to fetch, or leave it out for all",
                    ));
                }
                for (i, column) in columns.iter().enumerate() {
                    trigger::check_identifier(column)
                        .map_err(|m| ConfigError::new(key(&format!("fetch.columns[{i}]")), m))?;
                }
            }
            Some(trigger::fetch_sql(
                &table,
                &fetch.key,
                fetch.columns.as_deref(),
            ))
        }
    };
    Ok(Route {
        index,
        notify: route.notify.clone(),
        channels,
        optional_channels,
        kind,
        fields,
        when,
        fetch,
    })
}

fn compile_when(
    when: &BTreeMap<String, Value>,
    key: &impl Fn(&str) -> String,
) -> Result<Vec<(FieldPath, Vec<Value>)>, ConfigError> {
    let mut out = Vec::with_capacity(when.len());
    for (path, expected) in when {
        let here = key(&format!("when.{path}"));
        let path = FieldPath::parse(path).map_err(|m| ConfigError::new(&here, m))?;
        let accepted = match expected {
            Value::Array(items) => items.clone(),
            other => vec![other.clone()],
        };
        if accepted.is_empty()
            || accepted
                .iter()
                .any(|v| !matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_)))
        {
            return Err(ConfigError::new(
                here,
                "must be a string, a number, a boolean, or a list of them",
            ));
        }
        out.push((path, accepted));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::source::postgres::FetchConfig;

    fn route(change: impl FnOnce(&mut RouteConfig)) -> Result<Route, ConfigError> {
        let mut config = RouteConfig {
            notify: "tasks".into(),
            channels: vec!["team:{team_id}".into()],
            ..RouteConfig::default()
        };
        change(&mut config);
        compile(0, &config)
    }

    fn event(outcome: Outcome) -> NewEvent {
        match outcome {
            Outcome::Event(e) => e,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    fn skipped(outcome: Outcome) -> SourceSkip {
        match outcome {
            Outcome::Skipped(why, _) => why,
            other => panic!("expected a skip, got {other:?}"),
        }
    }

    fn names(e: &NewEvent) -> Vec<&str> {
        e.channels.iter().map(ChannelName::as_str).collect()
    }

    #[test]
    fn paths_look_in_the_row_of_trigger_payloads() {
        let insert = json!({"op": "insert", "table": "tasks", "new": {"id": 7, "team_id": 1, "tags": ["a"]}, "old": null});
        let delete =
            json!({"op": "delete", "table": "tasks", "new": null, "old": {"id": 7, "team_id": 2}});
        let flat = json!({"team_id": "x", "new": 3});
        let path = |p: &str| FieldPath::parse(p).unwrap();
        assert_eq!(path("team_id").resolve(&insert), Some(&json!(1)));
        assert_eq!(path("team_id").resolve(&delete), Some(&json!(2)));
        assert_eq!(path("op").resolve(&delete), Some(&json!("delete")));
        assert_eq!(path("new.tags.0").resolve(&insert), Some(&json!("a")));
        assert_eq!(path("new.team_id").resolve(&delete), None);
        assert_eq!(path("old.team_id").resolve(&insert), None);
        assert_eq!(path("team_id").resolve(&flat), Some(&json!("x")));
        assert_eq!(path("nothing").resolve(&flat), None);
        assert_eq!(path("team_id").resolve(&json!([1])), None);
        for bad in ["", "a..b", "a b", ".a", "a{"] {
            assert!(FieldPath::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn templates_fill_scalars_and_refuse_the_rest() {
        let t = Template::parse("team:{team_id}/{{x}}").unwrap();
        assert_eq!(t.render(&json!({"team_id": 4})).unwrap(), "team:4/{x}");
        assert_eq!(t.render(&json!({"team_id": "a"})).unwrap(), "team:a/{x}");
        assert_eq!(
            t.render(&json!({"team_id": true})).unwrap(),
            "team:true/{x}"
        );
        for missing in [
            json!({}),
            json!({"team_id": null}),
            json!({"team_id": {"a": 1}}),
            json!({"team_id": [1]}),
        ] {
            assert_eq!(t.render(&missing).unwrap_err().as_str(), "team_id");
        }
        for bad in ["team:{", "team:}", "{}", "", "{a b}"] {
            assert!(Template::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_route_builds_channels_type_and_fields() {
        let r = route(|r| {
            r.channels = vec!["team:{team_id}".into(), "tasks".into()];
            r.optional_channels = vec!["team:{old.team_id}".into()];
            r.kind = Some("task.{op}".into());
            r.fields = Some(vec![
                "op".into(),
                "id".into(),
                "new.title".into(),
                "old.title".into(),
            ]);
        })
        .unwrap();
        let insert = json!({"op": "insert", "new": {"id": 7, "team_id": 1, "title": "a", "secret": "s"}, "old": null});
        let e = event(r.apply(&insert));
        assert_eq!(names(&e), ["team:1", "tasks"]);
        assert_eq!(e.kind.as_deref(), Some("task.insert"));
        assert_eq!(
            e.data.as_str(),
            r#"{"id":7,"new":{"title":"a"},"op":"insert"}"#
        );

        // A task moving from team 1 to team 2 reaches both teams, once each.
        let moved = json!({"op": "update", "new": {"id": 7, "team_id": 2, "title": "b"}, "old": {"id": 7, "team_id": 1, "title": "a"}});
        let e = event(r.apply(&moved));
        assert_eq!(names(&e), ["team:2", "tasks", "team:1"]);
        let same =
            json!({"op": "update", "new": {"id": 7, "team_id": 2}, "old": {"id": 7, "team_id": 2}});
        assert_eq!(names(&event(r.apply(&same))), ["team:2", "tasks"]);
    }

    #[test]
    fn unroutable_payloads_are_skipped_by_reason() {
        let r = route(|r| r.kind = Some("{kind}".into())).unwrap();
        assert_eq!(
            skipped(r.apply(&json!({"kind": "k"}))),
            SourceSkip::MissingField
        );
        assert_eq!(skipped(r.apply(&json!("text"))), SourceSkip::MissingField);
        assert_eq!(
            skipped(r.apply(&json!({"team_id": 1}))),
            SourceSkip::MissingField
        );
        for bad in ["a b", "x,y", "*", "1\n2"] {
            assert_eq!(
                skipped(r.apply(&json!({"team_id": bad, "kind": "k"}))),
                SourceSkip::BadChannel,
                "{bad:?}"
            );
        }
        assert_eq!(
            skipped(r.apply(&json!({"team_id": 1, "kind": "reset"}))),
            SourceSkip::InvalidEvent
        );
        assert_eq!(
            skipped(r.apply(&json!({"team_id": 1, "kind": "a b"}))),
            SourceSkip::InvalidEvent
        );
        // A value cannot take the event into a reserved name.
        let any = route(|r| r.channels = vec!["{target}".into()]).unwrap();
        assert_eq!(
            skipped(any.apply(&json!({"target": "$broadcast"}))),
            SourceSkip::BadChannel
        );
        assert_eq!(
            skipped(any.apply(&json!({"target": "user:"}))),
            SourceSkip::BadChannel
        );
    }

    #[test]
    fn when_filters_and_whole_payloads() {
        let r = route(|r| {
            r.when.insert("op".into(), json!(["insert", "update"]));
            r.when.insert("new.done".into(), json!(true));
        })
        .unwrap();
        let base = json!({"op": "insert", "new": {"team_id": 1, "done": true}});
        let e = event(r.apply(&base));
        assert_eq!(e.kind, None);
        assert_eq!(
            serde_json::from_str::<Value>(e.data.as_str()).unwrap(),
            base
        );
        assert!(matches!(
            r.apply(&json!({"op": "delete", "old": {"team_id": 1, "done": true}})),
            Outcome::Filtered
        ));
        assert!(matches!(
            r.apply(&json!({"op": "insert", "new": {"team_id": 1, "done": false}})),
            Outcome::Filtered
        ));
    }

    #[test]
    fn configuration_errors_name_the_key() {
        let key = |change: fn(&mut RouteConfig)| route(change).unwrap_err().key;
        assert_eq!(key(|r| r.channels = vec![]), "postgres.routes[0].channels");
        assert_eq!(
            key(|r| r.channels = vec!["ok".into(), "team {id}".into()]),
            "postgres.routes[0].channels[1]"
        );
        assert_eq!(
            key(|r| r.channels = vec!["$x:{id}".into()]),
            "postgres.routes[0].channels[0]"
        );
        assert_eq!(
            key(|r| r.channels = vec!["team:{id".into()]),
            "postgres.routes[0].channels[0]"
        );
        assert_eq!(
            key(|r| r.optional_channels = vec!["fixed".into()]),
            "postgres.routes[0].optional_channels[0]"
        );
        assert_eq!(
            key(|r| r.kind = Some("bad type".into())),
            "postgres.routes[0].type"
        );
        assert_eq!(
            key(|r| r.kind = Some("reset".into())),
            "postgres.routes[0].type"
        );
        assert_eq!(
            key(|r| r.fields = Some(vec![])),
            "postgres.routes[0].fields"
        );
        assert_eq!(
            key(|r| r.fields = Some(vec!["a".into(), "b..c".into()])),
            "postgres.routes[0].fields[1]"
        );
        assert_eq!(
            key(|r| r.notify = String::new()),
            "postgres.routes[0].notify"
        );
        assert_eq!(
            key(|r| {
                r.when.insert("op".into(), json!({"a": 1}));
            }),
            "postgres.routes[0].when.op"
        );
        assert_eq!(
            key(|r| {
                r.fetch = Some(FetchConfig {
                    table: "a.b.c".into(),
                    ..FetchConfig::default()
                })
            }),
            "postgres.routes[0].fetch.table"
        );
        assert_eq!(
            key(|r| {
                r.fetch = Some(FetchConfig {
                    table: "tasks".into(),
                    key: vec![],
                    columns: None,
                })
            }),
            "postgres.routes[0].fetch.key"
        );
    }
}
