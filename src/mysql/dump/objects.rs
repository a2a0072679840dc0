//! Schema objects: views (ordered after what they read), routines,
//! triggers and events, with DEFINER clauses removed.

use super::discovery::skipped_by;
use super::put_compressed;
use crate::catalog::{SchemaObject, SkippedObject};
use crate::mysql::sql::quote_ident;
use crate::mysql::{query_err, MysqlError};
use crate::store::{Store, Written};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};

/// Removes `DEFINER=user@host` so objects can be created on a server that lacks that account.
pub(crate) fn strip_definer(stmt: &str) -> String {
    let Some(at) = stmt.find("DEFINER=") else {
        return stmt.to_string();
    };
    let bytes = stmt.as_bytes();
    let mut i = at + "DEFINER=".len();
    let mut part = 0;
    while part < 2 && i < bytes.len() {
        if bytes[i] == b'`' || bytes[i] == b'\'' {
            let q = bytes[i];
            i += 1;
            while i < bytes.len() {
                if bytes[i] == q {
                    if i + 1 < bytes.len() && bytes[i + 1] == q {
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                i += 1;
            }
        } else {
            while i < bytes.len() && bytes[i] != b'@' && !bytes[i].is_ascii_whitespace() {
                i += 1;
            }
        }
        part += 1;
        if part == 1 && i < bytes.len() && bytes[i] == b'@' {
            i += 1;
        } else {
            break;
        }
    }
    let rest = stmt[i..].trim_start();
    format!("{}{}", &stmt[..at], rest)
}

/// Orders views so that a view comes after the views it selects from.
fn order_views(mut views: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut ordered = Vec::new();
    while !views.is_empty() {
        let names: Vec<String> = views.iter().map(|v| v.0.clone()).collect();
        let ready = views.iter().position(|(name, def)| {
            !names
                .iter()
                .any(|other| other != name && def.contains(&quote_ident(other)))
        });
        // A cycle cannot exist between views; if the heuristic finds one, keep the order.
        let i = ready.unwrap_or(0);
        ordered.push(views.remove(i));
    }
    ordered
}

/// The `DEFINER=...` clause's account, as written (`root`@`localhost`).
fn definer_of(stmt: &str) -> Option<String> {
    let stripped = strip_definer(stmt);
    let at = stmt.find("DEFINER=")?;
    let removed = stmt.len().checked_sub(stripped.len())?;
    let clause = stmt.get(at..at + removed)?;
    Some(clause.trim_start_matches("DEFINER=").trim().to_string())
}

/// What removing the DEFINER changes: objects that run in their definer's
/// security context (triggers, events, and views and routines without `SQL
/// SECURITY INVOKER`) run with the privileges of the account that restores them.
pub(crate) fn definer_change(kind: &str, create: &str) -> Option<String> {
    let definer = definer_of(create)?;
    let invoker = create.to_ascii_uppercase().contains("SQL SECURITY INVOKER");
    let runs_as_definer = matches!(kind, "TRIGGER" | "EVENT" | "trigger" | "event") || !invoker;
    runs_as_definer.then(|| {
        format!(
            "DEFINER {definer} removed: it runs with the privileges of the account that restores it, not {definer}'s"
        )
    })
}

/// A routine, trigger or event recreated as its source made it.
struct ObjectBlock {
    text: String,
    changes: Vec<String>,
}

/// `SHOW CREATE <kind>` of a routine, trigger or event as a `;;`-delimited
/// block that recreates it under the `sql_mode`, character set and (events)
/// time zone it was created with. `body_column` is where the statement is in
/// the SHOW output; an event's time zone is the column before it, the
/// character set and collation the two after it.
async fn object_block(
    conn: &mut Conn,
    kind: &str,
    name: &str,
    body_column: usize,
) -> Result<Option<ObjectBlock>, MysqlError> {
    let show = format!("SHOW CREATE {kind} {}", quote_ident(name));
    let row: Option<Row> = conn
        .query_first(&show)
        .await
        .map_err(|e| query_err(&show, e))?;
    let Some(row) = row else { return Ok(None) };
    let text_at = |i: usize| row.get::<Option<String>, _>(i).flatten();
    let sql_mode = text_at(1).unwrap_or_default();
    let Some(create) = text_at(body_column) else {
        return Err(MysqlError::Privilege {
            user: String::new(),
            detail: format!("{show} returned no body; the backup user needs SELECT on mysql.proc (or to be the object's definer), or name it in database.skip"),
        });
    };
    let mut changes: Vec<String> = definer_change(kind, &create).into_iter().collect();
    let mut session = format!("SET SESSION sql_mode='{sql_mode}'");
    if kind == "EVENT" {
        if let Some(tz) = text_at(2) {
            session.push_str(&format!(", time_zone='{}'", tz.replace('\'', "''")));
        }
    }
    // The text here is UTF-8 (the connection's utf8mb4); it is sent as the
    // object's own client character set when those bytes mean the same there.
    let charset = text_at(body_column + 1);
    let collation = text_at(body_column + 2);
    if let (Some(charset), Some(collation)) = (charset, collation) {
        let utf8 = charset.to_ascii_lowercase().starts_with("utf8");
        if utf8 || create.is_ascii() {
            session.push_str(&format!(
                ", character_set_client={charset}, collation_connection={collation}"
            ));
        } else {
            changes.push(format!(
                "created with character_set_client utf8mb4, not {charset}: its text is not ASCII and was read as UTF-8"
            ));
        }
    }
    Ok(Some(ObjectBlock {
        text: format!(
            "{session} ;;\nDROP {kind} IF EXISTS {} ;;\n{} ;;\n",
            quote_ident(name),
            strip_definer(&create)
        ),
        changes,
    }))
}

/// Keeps what `database.skip` does not name; what it names goes to `skipped`.
fn unless_skipped<T>(
    items: Vec<T>,
    name: impl Fn(&T) -> &str,
    kind: impl Fn(&T) -> String,
    skip: &[String],
    skipped: &mut Vec<SkippedObject>,
) -> Vec<T> {
    items
        .into_iter()
        .filter(|item| match skipped_by(skip, name(item)) {
            Some(pattern) => {
                skipped.push(SkippedObject {
                    kind: kind(item),
                    name: name(item).to_string(),
                    reason: format!("database.skip names it ('{pattern}')"),
                });
                false
            }
            None => true,
        })
        .collect()
}

/// The set's schema objects, their artifacts, and those `skip` left out.
pub(super) async fn dump_objects(
    conn: &mut Conn,
    db: &str,
    store: &Store,
    set_key: &str,
    level: i32,
    skip: &[String],
) -> Result<(Vec<SchemaObject>, Vec<Written>, Vec<SkippedObject>), MysqlError> {
    let mut skipped = Vec::new();
    let mut objects = Vec::new();
    let mut written = Vec::new();
    let header = "/*!40101 SET NAMES utf8mb4 */;\nDELIMITER ;;\n";

    // Routines first: views and triggers may call them.
    let routines: Vec<(String, String)> = conn
        .exec(
            "SELECT ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ? ORDER BY ROUTINE_TYPE, ROUTINE_NAME",
            (db,),
        )
        .await
        .map_err(|e| query_err("listing routines", e))?;
    let views: Vec<String> = conn
        .exec(
            "SELECT TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME",
            (db,),
        )
        .await
        .map_err(|e| query_err("listing views", e))?;
    let triggers: Vec<String> = conn
        .exec(
            "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ? ORDER BY EVENT_OBJECT_TABLE, ACTION_ORDER",
            (db,),
        )
        .await
        .map_err(|e| query_err("listing triggers", e))?;
    let events: Vec<String> = conn
        .exec(
            "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ? ORDER BY EVENT_NAME",
            (db,),
        )
        .await
        .map_err(|e| query_err("listing events", e))?;

    let routines = unless_skipped(
        routines,
        |r| r.0.as_str(),
        |r| r.1.to_ascii_lowercase(),
        skip,
        &mut skipped,
    );
    let views = unless_skipped(views, |v| v.as_str(), |_| "view".into(), skip, &mut skipped);
    let triggers = unless_skipped(
        triggers,
        |t| t.as_str(),
        |_| "trigger".into(),
        skip,
        &mut skipped,
    );
    let events = unless_skipped(
        events,
        |e| e.as_str(),
        |_| "event".into(),
        skip,
        &mut skipped,
    );

    let mut routine_text = String::from(header);
    for (name, kind) in &routines {
        if let Some(block) = object_block(conn, kind, name, 2).await? {
            routine_text.push_str(&block.text);
            objects.push((
                kind.to_ascii_lowercase(),
                name.clone(),
                "db/3-routines.sql.zst",
                block.changes,
            ));
        }
    }

    let mut view_defs = Vec::new();
    let mut view_changes: Vec<(String, Option<String>)> = Vec::new();
    for name in &views {
        let show = format!("SHOW CREATE VIEW {}", quote_ident(name));
        let row: Option<Row> = conn
            .query_first(&show)
            .await
            .map_err(|e| query_err(&show, e))?;
        if let Some(def) = row.and_then(|r| r.get::<String, _>(1)) {
            let change = definer_change("view", &def);
            view_changes.push((name.clone(), change));
            view_defs.push((name.clone(), strip_definer(&def)));
        }
    }
    let mut view_text = String::from(header);
    for (name, def) in order_views(view_defs) {
        view_text.push_str(&format!(
            "DROP TABLE IF EXISTS {q} ;;\nDROP VIEW IF EXISTS {q} ;;\n{def} ;;\n",
            q = quote_ident(&name)
        ));
        let changes = view_changes
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, c)| c.clone())
            .into_iter()
            .collect();
        objects.push(("view".into(), name, "db/4-views.sql.zst", changes));
    }

    let mut trigger_text = String::from(header);
    for name in &triggers {
        if let Some(block) = object_block(conn, "TRIGGER", name, 2).await? {
            trigger_text.push_str(&block.text);
            objects.push((
                "trigger".into(),
                name.clone(),
                "db/5-triggers.sql.zst",
                block.changes,
            ));
        }
    }

    let mut event_text = String::from(header);
    for name in &events {
        if let Some(block) = object_block(conn, "EVENT", name, 3).await? {
            event_text.push_str(&block.text);
            objects.push((
                "event".into(),
                name.clone(),
                "db/6-events.sql.zst",
                block.changes,
            ));
        }
    }

    for (path, text, count) in [
        ("db/3-routines.sql.zst", routine_text, routines.len()),
        ("db/4-views.sql.zst", view_text, views.len()),
        ("db/5-triggers.sql.zst", trigger_text, triggers.len()),
        ("db/6-events.sql.zst", event_text, events.len()),
    ] {
        if count > 0 {
            let text = format!("{text}DELIMITER ;\n");
            written.push(put_compressed(store, set_key, path, text.as_bytes(), level).await?);
        }
    }
    let objects = objects
        .into_iter()
        .map(|(kind, name, artifact, changes)| SchemaObject {
            kind,
            name,
            artifact: artifact.to_string(),
            changes,
        })
        .collect();
    Ok((objects, written, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_definers() {
        assert_eq!(
            strip_definer("CREATE ALGORITHM=UNDEFINED DEFINER=`root`@`localhost` SQL SECURITY DEFINER VIEW `v` AS select 1"),
            "CREATE ALGORITHM=UNDEFINED SQL SECURITY DEFINER VIEW `v` AS select 1"
        );
        assert_eq!(
            strip_definer(
                "CREATE DEFINER=`we``ird`@`%` TRIGGER t BEFORE INSERT ON x FOR EACH ROW SET @a=1"
            ),
            "CREATE TRIGGER t BEFORE INSERT ON x FOR EACH ROW SET @a=1"
        );
        assert_eq!(
            strip_definer("CREATE VIEW v AS select 1"),
            "CREATE VIEW v AS select 1"
        );
    }

    #[test]
    fn definer_removal_is_reported_where_it_changes_privileges() {
        let view = "CREATE ALGORITHM=UNDEFINED DEFINER=`shop`@`%` SQL SECURITY DEFINER VIEW `v` AS select 1";
        let change = definer_change("view", view).unwrap();
        assert!(change.contains("`shop`@`%`"), "{change}");
        let invoker = "CREATE DEFINER=`shop`@`%` SQL SECURITY INVOKER VIEW `v` AS select 1";
        assert_eq!(definer_change("view", invoker), None);
        // A trigger always runs as its definer, whatever its text says.
        let trigger =
            "CREATE DEFINER=`root`@`localhost` TRIGGER t BEFORE INSERT ON x FOR EACH ROW SET @a=1";
        assert!(definer_change("TRIGGER", trigger).is_some());
        assert_eq!(definer_change("view", "CREATE VIEW v AS select 1"), None);
    }

    #[test]
    fn views_are_ordered_after_their_dependencies() {
        let v = order_views(vec![
            ("b".into(), "CREATE VIEW `b` AS select * from `a`".into()),
            ("a".into(), "CREATE VIEW `a` AS select * from `t`".into()),
        ]);
        assert_eq!(v[0].0, "a");
    }
}
