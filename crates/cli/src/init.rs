//! `nodeos init`: sets up an existing npm project for nodeos.
//!
//! It adds the `build`, `vm` and `deploy` npm scripts and a `"nodeos"` key
//! holding the usual settings at their defaults, and keeps build output out
//! of git. It edits package.json as npm does (same indentation, same key
//! order) and touches nothing else in it: members it leaves alone keep
//! their exact text. Running it again changes nothing. A script that
//! already exists with another command is kept unless `--force` is given;
//! an existing `"nodeos"` key is never changed (a warning says what in it
//! `nodeos build` would refuse).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use nodeos_image::Reporter;
use serde::de::{Deserializer as _, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::exit::{Exit, fail};
use crate::ui::Ui;

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// The npm project to set up (the directory holding package.json).
    #[arg(value_name = "PROJECT_DIR")]
    project: Option<PathBuf>,
    /// Replace `build`, `vm` and `deploy` scripts that run something else.
    #[arg(long)]
    force: bool,
}

/// The scripts `init` adds, by name.
const SCRIPTS: [(&str, &str); 3] = [
    ("build", "nodeos build"),
    ("vm", "nodeos run"),
    ("deploy", "nodeos deploy"),
];

/// The `"nodeos"` key `init` adds: the settings most projects change, at
/// their defaults. `$comment` is the JSON Schema keyword for comments; the
/// config reader ignores it.
const NODEOS_KEY: &str = r#"{
  "$comment": "How the appliance runs; every key is optional. Reference: docs/config.md of nodeos; node_modules/nodeos/schema.json lists every key.",
  "port": 3000,
  "ports": ["8080:3000"],
  "memory": 256,
  "cpus": 1,
  "restart": "always",
  "data": { "size": "1GiB" }
}"#;

/// Lines `init` wants in an existing `.gitignore`: the image directories,
/// data volumes and system disks `nodeos build` and `nodeos run` write.
const GITIGNORE: [&str; 3] = ["*.nodeos/", "*.data.img", "*.system.img"];

pub fn run(args: InitArgs, ui: &Ui) -> anyhow::Result<Exit> {
    let dir = crate::project_dir(args.project);
    let path = dir.join("package.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(fail(
                Exit::Project,
                format!(
                    "no package.json in {}; run `npm init` there first",
                    dir.display()
                ),
            ));
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let plan = plan(&text, args.force).map_err(|problem| {
        fail(
            Exit::Project,
            format!(
                "{}: {problem}; fix it and run `nodeos init` again",
                path.display()
            ),
        )
    })?;
    for change in &plan.changes {
        ui.note(change);
    }
    for kept in &plan.kept {
        ui.warn(kept);
    }
    // Kept as it is, but said now rather than by the first build.
    if let Some(existing) = &plan.existing_nodeos
        && let Err(e) = nodeos_image::config::parse(Some(existing), &dir)
    {
        ui.warn(&format!(
            "{}: {}: {}; {}; `nodeos build` refuses it as it is",
            path.display(),
            e.key,
            e.problem,
            e.help
        ));
    }
    if let Some(new) = &plan.text {
        write_atomic(&path, new.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let ignored = update_gitignore(&dir)?;
    if let Some(added) = &ignored {
        ui.note(&format!("added {added} to .gitignore"));
    }
    if plan.text.is_none() && ignored.is_none() {
        ui.note("nothing to do: the project is already set up for nodeos");
    } else {
        ui.note("next: `npm run build` builds the image, `npm run vm` boots it");
    }
    if !plan.has_nodeos_dependency {
        ui.note("nodeos is not in devDependencies: `npm install --save-dev nodeos` pins it for everyone who builds the project");
    }
    Ok(Exit::Success)
}

/// What `init` would do to a package.json.
#[derive(Debug)]
struct Plan {
    /// The new text, if anything changes.
    text: Option<String>,
    /// What changes, for people.
    changes: Vec<String>,
    /// Scripts kept because they run something else (no `--force`).
    kept: Vec<String>,
    /// Whether `nodeos` is already a (dev) dependency.
    has_nodeos_dependency: bool,
    /// The `"nodeos"` key package.json has already, left as it is.
    existing_nodeos: Option<Value>,
}

/// Plans the edit of package.json `text`. The error is the problem, for
/// a message naming the file. A byte-order mark and CRLF line ends are
/// kept, as npm keeps them.
fn plan(text: &str, force: bool) -> Result<Plan, String> {
    let (bom, text) = match text.strip_prefix('\u{feff}') {
        Some(rest) => ("\u{feff}", rest),
        None => ("", text),
    };
    let mut members = top_level_members(text)?;
    let indent = detect_indent(text);
    let mut changes = Vec::new();
    let mut kept = Vec::new();

    let scripts_at = members.iter().position(|(k, _)| k == "scripts");
    let mut scripts: Vec<(String, Value)> = match scripts_at {
        None => Vec::new(),
        Some(i) => match serde_json::from_str::<Value>(members[i].1.get()) {
            Ok(Value::Object(_)) => top_level_members(members[i].1.get())?
                .into_iter()
                .map(|(k, raw)| {
                    let value = serde_json::from_str(raw.get()).expect("parsed once already");
                    (k, value)
                })
                .collect(),
            _ => return Err("\"scripts\" must be an object".to_owned()),
        },
    };
    let mut scripts_changed = false;
    for (name, command) in SCRIPTS {
        match scripts.iter_mut().find(|(k, _)| k == name) {
            Some((_, value)) if value == command => {}
            Some((_, value)) if force => {
                changes.push(format!(
                    "replaced script \"{name}\" ({}) with \"{command}\"",
                    value
                ));
                *value = Value::from(command);
                scripts_changed = true;
            }
            Some((_, value)) => kept.push(format!(
                "kept script \"{name}\": {value} (pass --force to replace it with \"{command}\")"
            )),
            None => {
                changes.push(format!("added script \"{name}\": \"{command}\""));
                scripts.push((name.to_owned(), Value::from(command)));
                scripts_changed = true;
            }
        }
    }
    if scripts_changed {
        let raw = raw_object(&scripts, &indent, 1);
        match scripts_at {
            Some(i) => members[i].1 = raw,
            None => members.push(("scripts".to_owned(), raw)),
        }
    }

    let existing_nodeos = members
        .iter()
        .find(|(k, _)| k == "nodeos")
        .map(|(_, raw)| serde_json::from_str(raw.get()).expect("parsed once already"));
    let nodeos_added = existing_nodeos.is_none();
    if nodeos_added {
        let value: Vec<(String, Value)> = top_level_members(NODEOS_KEY)?
            .into_iter()
            .map(|(k, raw)| (k, serde_json::from_str(raw.get()).expect("valid")))
            .collect();
        members.push(("nodeos".to_owned(), raw_object(&value, &indent, 1)));
        changes
            .push("added the \"nodeos\" key with the usual settings at their defaults".to_owned());
    }

    let has_nodeos_dependency = ["devDependencies", "dependencies"].iter().any(|key| {
        members.iter().any(|(k, raw)| {
            k == key
                && serde_json::from_str::<Value>(raw.get())
                    .is_ok_and(|deps| deps.get("nodeos").is_some())
        })
    });
    let text = (scripts_changed || nodeos_added).then(|| {
        let newline = if text.ends_with('\n') { "\n" } else { "" };
        let rendered = format!("{bom}{}{newline}", render(&members, &indent));
        if text.contains("\r\n") {
            rendered.replace("\r\n", "\n").replace('\n', "\r\n")
        } else {
            rendered
        }
    });
    Ok(Plan {
        text,
        changes,
        kept,
        has_nodeos_dependency,
        existing_nodeos,
    })
}

/// The members of the JSON object `text`, in order, each value as its
/// exact text.
fn top_level_members(text: &str) -> Result<Vec<(String, Box<RawValue>)>, String> {
    struct Members;
    impl<'de> Visitor<'de> for Members {
        type Value = Vec<(String, Box<RawValue>)>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut members = Vec::new();
            while let Some(entry) = map.next_entry::<String, Box<RawValue>>()? {
                members.push(entry);
            }
            Ok(members)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let members = de
        .deserialize_map(Members)
        .and_then(|members| de.end().map(|()| members))
        .map_err(|e| {
            if e.classify() == serde_json::error::Category::Data {
                "the top level must be an object".to_owned()
            } else {
                format!("not valid JSON ({e})")
            }
        })?;
    Ok(members)
}

/// The indentation of the first indented line (npm keeps a file's own);
/// two spaces when there is none.
fn detect_indent(text: &str) -> String {
    text.lines()
        .skip(1)
        .find_map(|line| {
            let indent: String = line
                .chars()
                .take_while(|c| *c == ' ' || *c == '\t')
                .collect();
            (!indent.is_empty()).then_some(indent)
        })
        .unwrap_or_else(|| "  ".to_owned())
}

/// `members` as an object nested `depth` levels deep, indented by `indent`.
fn raw_object(members: &[(String, Value)], indent: &str, depth: usize) -> Box<RawValue> {
    let raw: Vec<(String, Box<RawValue>)> = members
        .iter()
        .map(|(k, v)| (k.clone(), pretty(v, indent, depth + 1)))
        .collect();
    RawValue::from_string(render_at(&raw, indent, depth)).expect("rendered JSON is valid")
}

/// `value` pretty-printed with `indent`, nested `depth` levels deep. Short
/// arrays and objects of scalars stay on one line, as people write them.
fn pretty(value: &Value, indent: &str, depth: usize) -> Box<RawValue> {
    let text = match value {
        Value::Object(map) if map.values().any(|v| v.is_object() || v.is_array()) => {
            let members: Vec<(String, Value)> =
                map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            return raw_object(&members, indent, depth);
        }
        Value::Object(map) if map.is_empty() => "{}".to_owned(),
        Value::Object(map) => {
            let inner: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {v}", Value::from(k.as_str())))
                .collect();
            format!("{{ {} }}", inner.join(", "))
        }
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(Value::to_string).collect();
            format!("[{}]", inner.join(", "))
        }
        scalar => scalar.to_string(),
    };
    RawValue::from_string(text).expect("rendered JSON is valid")
}

fn render(members: &[(String, Box<RawValue>)], indent: &str) -> String {
    render_at(members, indent, 0)
}

/// An object whose members' values are raw text, nested `depth` deep.
fn render_at(members: &[(String, Box<RawValue>)], indent: &str, depth: usize) -> String {
    if members.is_empty() {
        return "{}".to_owned();
    }
    let inner = indent.repeat(depth + 1);
    let mut out = String::from("{\n");
    for (i, (key, value)) in members.iter().enumerate() {
        let comma = if i + 1 < members.len() { "," } else { "" };
        let _ = writeln!(
            out,
            "{inner}{}: {}{comma}",
            Value::from(key.as_str()),
            value.get()
        );
    }
    out.push_str(&indent.repeat(depth));
    out.push('}');
    out
}

/// Adds [`GITIGNORE`]'s missing lines to `dir/.gitignore`, which is
/// created only inside a git work tree (`.git` in `dir` or above it).
/// Returns what was added, if anything.
fn update_gitignore(dir: &Path) -> anyhow::Result<Option<String>> {
    let path = dir.join(".gitignore");
    let existing = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
            if !absolute.ancestors().any(|d| d.join(".git").exists()) {
                return Ok(None);
            }
            String::new()
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let have: Vec<&str> = existing.lines().map(str::trim).collect();
    let missing: Vec<&str> = GITIGNORE
        .into_iter()
        .filter(|line| !have.contains(line))
        .collect();
    if missing.is_empty() {
        return Ok(None);
    }
    let mut text = existing.clone();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str("# nodeos build output, data volumes and system disks\n");
    for line in &missing {
        text.push_str(line);
        text.push('\n');
    }
    write_atomic(&path, text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(Some(missing.join(", ")))
}

/// Replaces `path` by `bytes` through a temporary file beside it, keeping
/// its permissions: a failure leaves the old file whole.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".nodeos-init-")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    if let Ok(meta) = std::fs::metadata(path) {
        tmp.as_file().set_permissions(meta.permissions())?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACKAGE: &str = r#"{
    "name": "api",
    "version": "1.0.0",
    "main": "server.js",
    "scripts": {
        "start": "node server.js",
        "test": "node --test"
    },
    "dependencies": {"express": "^4.21.0"}
}
"#;

    #[test]
    fn adds_scripts_and_the_key_keeping_order_indent_and_untouched_text() {
        let plan = plan(PACKAGE, false).unwrap();
        let text = plan.text.unwrap();
        assert!(text.starts_with("{\n    \"name\": \"api\",\n"), "{text}");
        // Untouched members keep their exact text, even compact objects.
        assert!(
            text.contains(r#"    "dependencies": {"express": "^4.21.0"},"#),
            "{text}"
        );
        assert!(text.contains(
            "    \"scripts\": {\n        \"start\": \"node server.js\",\n        \"test\": \"node --test\",\n        \"build\": \"nodeos build\",\n        \"vm\": \"nodeos run\",\n        \"deploy\": \"nodeos deploy\"\n    },"
        ), "{text}");
        assert!(
            text.contains("        \"ports\": [\"8080:3000\"],\n"),
            "{text}"
        );
        assert!(
            text.contains("        \"data\": { \"size\": \"1GiB\" }\n    }\n}\n"),
            "{text}"
        );
        assert_eq!(plan.changes.len(), 4, "{:?}", plan.changes);
        assert!(plan.kept.is_empty());
        assert!(!plan.has_nodeos_dependency);
        // The result is what `nodeos build` accepts.
        let value: Value = serde_json::from_str(&text).unwrap();
        nodeos_image::config::parse(value.get("nodeos"), Path::new(".")).unwrap();
        // A second run changes nothing.
        let again = super::plan(&text, false).unwrap();
        assert!(again.text.is_none() && again.changes.is_empty() && again.kept.is_empty());
    }

    #[test]
    fn other_scripts_are_kept_without_force_and_replaced_with_it() {
        let package =
            r#"{"name":"a","version":"1.0.0","scripts":{"build":"tsc"},"nodeos":{"port":8080}}"#;
        let plan1 = plan(package, false).unwrap();
        assert_eq!(plan1.kept.len(), 1, "{:?}", plan1.kept);
        assert!(
            plan1.kept[0].contains(r#""build": "tsc""#),
            "{:?}",
            plan1.kept
        );
        let text = plan1.text.unwrap();
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["scripts"]["build"], "tsc");
        assert_eq!(value["scripts"]["vm"], "nodeos run");
        // An existing "nodeos" key is never changed; no trailing newline
        // stays none.
        assert_eq!(value["nodeos"], serde_json::json!({"port": 8080}));
        assert!(!text.ends_with('\n'));
        let forced = plan(package, true).unwrap();
        let value: Value = serde_json::from_str(&forced.text.unwrap()).unwrap();
        assert_eq!(value["scripts"]["build"], "nodeos build");
    }

    #[test]
    fn broken_package_json_is_refused_with_the_reason() {
        assert!(plan("{", false).unwrap_err().starts_with("not valid JSON"));
        assert_eq!(
            plan("[]", false).unwrap_err(),
            "the top level must be an object"
        );
        assert_eq!(
            plan(r#"{"name":"a","scripts":"x"}"#, false).unwrap_err(),
            "\"scripts\" must be an object"
        );
    }

    #[test]
    fn a_byte_order_mark_and_crlf_line_ends_are_kept() {
        let package = "\u{feff}{\r\n  \"name\": \"a\",\r\n  \"version\": \"1.0.0\"\r\n}\r\n";
        let text = plan(package, false).unwrap().text.unwrap();
        assert!(text.starts_with("\u{feff}{\r\n  \"name\""), "{text:?}");
        assert!(!text.replace("\r\n", "").contains('\n'), "{text:?}");
        assert!(text.ends_with("}\r\n"));
        assert!(plan(&text, false).unwrap().text.is_none());
    }

    #[test]
    fn indentation_is_detected() {
        assert_eq!(detect_indent("{\n\t\"a\": 1\n}"), "\t");
        assert_eq!(detect_indent("{\"a\":1}"), "  ");
        let dev = r#"{"name":"a","version":"1","devDependencies":{"nodeos":"^0.1.0"}}"#;
        assert!(plan(dev, false).unwrap().has_nodeos_dependency);
    }
}
