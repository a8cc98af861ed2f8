//! Reading manifests as `kubectl apply -f` does: YAML or JSON, several documents per file,
//! `List` kinds unpacked, directories read recursively, `-` for standard input (e.g. the
//! output of `kubectl kustomize` or `helm template`).
//!
//! Every object keeps where it came from (file and line), for the lines `check` prints. A
//! file that cannot be read as Kubernetes objects is an error naming the file and the line;
//! `check` exits 2 on it rather than passing manifests it did not read.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

/// One Kubernetes object of the input, and where it is.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// The file as the user named it (`<stdin>` for `-`).
    pub file: String,
    /// The line its document starts on (1-based); the items of a `List` share it.
    pub line: usize,
    pub object: Value,
}

impl Document {
    /// `apiVersion`, split into group (`""` for the core group) and version.
    pub fn group_version(&self) -> (&str, &str) {
        let api_version = self.object["apiVersion"].as_str().unwrap_or_default();
        api_version.rsplit_once('/').unwrap_or(("", api_version))
    }

    pub fn kind(&self) -> &str {
        self.object["kind"].as_str().unwrap_or_default()
    }

    /// `metadata.name`, else `metadata.generateName` (as the object will be named).
    pub fn name(&self) -> &str {
        let metadata = &self.object["metadata"];
        metadata["name"]
            .as_str()
            .or_else(|| metadata["generateName"].as_str())
            .unwrap_or_default()
    }

    pub fn namespace(&self) -> Option<&str> {
        self.object["metadata"]["namespace"]
            .as_str()
            .filter(|namespace| !namespace.is_empty())
    }
}

/// Why the input could not be read as Kubernetes objects.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ManifestError {
    #[error("{file}: cannot read it: {message}")]
    Unreadable { file: String, message: String },
    #[error(
        "{file}: binary content, not a YAML or JSON manifest; point -f at the rendered manifests"
    )]
    Binary { file: String },
    #[error("{file}:{line}: not valid YAML: {message}")]
    Yaml {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{file}:{line}: not valid JSON: {message}")]
    Json {
        file: String,
        line: usize,
        message: String,
    },
    #[error(
        "{file}:{line}: not a Kubernetes object ({what}); every document needs apiVersion and kind"
    )]
    NotAnObject {
        file: String,
        line: usize,
        what: String,
    },
}

/// What a directory held besides the manifests it read.
#[derive(Debug, Default, PartialEq)]
pub struct Input {
    pub documents: Vec<Document>,
    /// Text files in directories that were not read: not `.yaml`, `.yml` or `.json`, as
    /// `kubectl apply -R` skips them.
    pub skipped: Vec<String>,
}

/// The extensions read in a directory (`kubectl apply -R` reads the same).
const MANIFEST_EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// Reads every path (`-` is standard input) into objects, in order: a directory's files
/// sorted by name, recursively, hidden entries (`.git`) left out.
pub fn read_paths(paths: &[PathBuf]) -> Result<Input, ManifestError> {
    let mut input = Input::default();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut bytes = Vec::new();
            std::io::stdin().read_to_end(&mut bytes).map_err(|error| {
                ManifestError::Unreadable {
                    file: "<stdin>".into(),
                    message: error.to_string(),
                }
            })?;
            input.documents.extend(parse("<stdin>", &bytes)?);
        } else if path.is_dir() {
            read_dir(path, &mut input)?;
        } else {
            let file = path.display().to_string();
            input.documents.extend(parse(&file, &read(path)?)?);
        }
    }
    Ok(input)
}

fn read(path: &Path) -> Result<Vec<u8>, ManifestError> {
    fs::read(path).map_err(|error| ManifestError::Unreadable {
        file: path.display().to_string(),
        message: error.to_string(),
    })
}

fn read_dir(dir: &Path, input: &mut Input) -> Result<(), ManifestError> {
    let unreadable = |error: std::io::Error| ManifestError::Unreadable {
        file: dir.display().to_string(),
        message: error.to_string(),
    };
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(unreadable)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(unreadable)?;
    entries.sort();
    for path in entries {
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        // Directories are followed, links to directories are not (as `kubectl -R`): a link
        // back up the tree would otherwise recurse until the stack runs out.
        let is_link = fs::symlink_metadata(&path)
            .map_err(unreadable)?
            .is_symlink();
        if path.is_dir() {
            if is_link {
                input.skipped.push(path.display().to_string());
            } else {
                read_dir(&path, input)?;
            }
            continue;
        }
        let file = path.display().to_string();
        let bytes = read(&path)?;
        let is_manifest = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| MANIFEST_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
        if is_manifest {
            input.documents.extend(parse(&file, &bytes)?);
        } else if is_binary(&bytes) {
            // A binary file among manifests (an archive, an image, a build output) means
            // -f does not point at the rendered manifests: say so rather than pass.
            return Err(ManifestError::Binary { file });
        } else {
            input.skipped.push(file);
        }
    }
    Ok(())
}

fn is_binary(bytes: &[u8]) -> bool {
    bytes.contains(&0) || std::str::from_utf8(bytes).is_err()
}

/// Parses one file's bytes: JSON when it starts with `{`, YAML otherwise (documents
/// separated by `---` lines, as kubectl splits them).
pub fn parse(file: &str, bytes: &[u8]) -> Result<Vec<Document>, ManifestError> {
    if is_binary(bytes) {
        return Err(ManifestError::Binary { file: file.into() });
    }
    // Checked above: the bytes are UTF-8.
    let text = std::str::from_utf8(bytes).unwrap_or_default();
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut documents = Vec::new();
    if text.trim_start().starts_with('{') {
        for (line, value) in json_values(file, text)? {
            unpack(file, line, value, &mut documents)?;
        }
    } else {
        for (line, chunk) in yaml_documents(text) {
            let value = yaml_value(file, line, chunk)?;
            if !value.is_null() {
                unpack(file, line, value, &mut documents)?;
            }
        }
    }
    Ok(documents)
}

/// Every JSON value of a stream of them (`kubectl get -o json` writes one), with its line.
fn json_values(file: &str, text: &str) -> Result<Vec<(usize, Value)>, ManifestError> {
    let mut values = Vec::new();
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    loop {
        let start = stream.byte_offset();
        let skipped = text[start..].len() - text[start..].trim_start().len();
        let line = line_at(text, start + skipped);
        match stream.next() {
            None => return Ok(values),
            Some(Ok(value)) => values.push((line, value)),
            Some(Err(error)) => {
                return Err(ManifestError::Json {
                    file: file.into(),
                    line: error.line(),
                    message: strip_position(&error.to_string()),
                });
            }
        }
    }
}

fn line_at(text: &str, offset: usize) -> usize {
    text[..offset].matches('\n').count() + 1
}

/// The documents of a YAML stream with the line each starts on. A separator is a line that
/// starts with `---` followed by nothing but blanks or a comment (kubectl's rule).
fn yaml_documents(text: &str) -> Vec<(usize, &str)> {
    let mut documents = Vec::new();
    let mut start = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        if let Some(rest) = line.strip_prefix("---") {
            let rest = rest.trim();
            if rest.is_empty() || rest.starts_with('#') {
                documents.push((start_line, &text[start..offset]));
                start = offset + line.len();
                start_line = index + 2;
            }
        }
        offset += line.len();
    }
    documents.push((start_line, &text[start..]));
    documents
}

fn yaml_value(file: &str, line: usize, chunk: &str) -> Result<Value, ManifestError> {
    match Value::deserialize(serde_yaml_ng::Deserializer::from_str(chunk)) {
        Ok(value) => Ok(value),
        Err(error) => {
            // The position within the whole file, as the user sees it: the chunk's line plus
            // where in the chunk the parser stopped.
            let at = error
                .location()
                .map_or(line, |location| line + location.line() - 1);
            Err(ManifestError::Yaml {
                file: file.into(),
                line: at,
                message: strip_position(&error.to_string()),
            })
        }
    }
}

/// Drops the parser's own ` at line L column C` (relative to a document, not the file).
fn strip_position(message: &str) -> String {
    let mut out = message.to_owned();
    while let Some(at) = out.find(" at line ") {
        let rest = &out[at + " at line ".len()..];
        let digits = |s: &str| s.chars().take_while(char::is_ascii_digit).count();
        let line_len = digits(rest);
        let mut end = at + " at line ".len() + line_len;
        if let Some(column) = out[end..].strip_prefix(" column ") {
            end += " column ".len() + digits(column);
        }
        if line_len == 0 {
            break;
        }
        out.replace_range(at..end, "");
    }
    out
}

/// Adds `value` to `documents`: an object, or the items of a `List`.
fn unpack(
    file: &str,
    line: usize,
    value: Value,
    documents: &mut Vec<Document>,
) -> Result<(), ManifestError> {
    let not_an_object = |what: String| ManifestError::NotAnObject {
        file: file.into(),
        line,
        what,
    };
    let Value::Object(map) = &value else {
        return Err(not_an_object(format!("a {}", json_type(&value))));
    };
    let kind = match map.get("kind") {
        Some(Value::String(kind)) if !kind.is_empty() => kind.clone(),
        Some(_) => return Err(not_an_object("its kind is not a name".into())),
        None => return Err(not_an_object("it has no kind".into())),
    };
    match map.get("apiVersion") {
        Some(Value::String(version)) if !version.is_empty() => {}
        _ => return Err(not_an_object(format!("kind {kind} without apiVersion"))),
    }
    if kind.ends_with("List")
        && let Some(items) = map.get("items")
    {
        let Value::Array(items) = items else {
            return Err(not_an_object(format!("{kind} whose items are not a list")));
        };
        for item in items {
            unpack(file, line, item.clone(), documents)?;
        }
        return Ok(());
    }
    documents.push(Document {
        file: file.into(),
        line,
        object: value,
    });
    Ok(())
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(documents: &[Document]) -> Vec<(usize, String, String)> {
        documents
            .iter()
            .map(|d| (d.line, d.kind().to_owned(), d.name().to_owned()))
            .collect()
    }

    #[test]
    fn a_link_to_a_directory_is_skipped_not_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let claim = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: a}\n";
        std::fs::write(dir.path().join("claim.yaml"), claim).expect("write");
        // A link back up the tree: followed, it would recurse until the stack ran out.
        std::os::unix::fs::symlink(dir.path(), dir.path().join("loop")).expect("symlink");
        let input = read_paths(&[dir.path().to_path_buf()]).expect("reads");
        assert_eq!(
            names(&input.documents),
            [(1, "PersistentVolumeClaim".into(), "a".into())]
        );
        assert_eq!(
            input.skipped,
            [dir.path().join("loop").display().to_string()]
        );
    }

    #[test]
    fn yaml_documents_keep_their_lines_and_lists_are_unpacked() {
        let text = "\
# a comment before the first document
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: a, namespace: dev}
---
--- # an empty document is skipped
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: PersistentVolumeClaim
  metadata: {name: b}
- apiVersion: apps/v1
  kind: StatefulSet
  metadata: {name: web}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: '--- not a separator'
";
        let documents = parse("all.yaml", text.as_bytes()).expect("parses");
        assert_eq!(
            names(&documents),
            [
                (1, "PersistentVolumeClaim".into(), "a".into()),
                (7, "PersistentVolumeClaim".into(), "b".into()),
                (7, "StatefulSet".into(), "web".into()),
                (17, "ConfigMap".into(), "--- not a separator".into()),
            ]
        );
        assert_eq!(documents[0].namespace(), Some("dev"));
        assert_eq!(documents[1].namespace(), None);
        assert_eq!(documents[2].group_version(), ("apps", "v1"));
        assert_eq!(documents[0].group_version(), ("", "v1"));
    }

    #[test]
    fn json_streams_and_lists_are_read() {
        let text = r#"
{"apiVersion": "v1", "kind": "PersistentVolumeClaimList", "items": [
  {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"generateName": "c-"}}]}
{"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "d"}}
"#;
        let documents = parse("x.json", text.as_bytes()).expect("parses");
        assert_eq!(
            names(&documents),
            [
                (2, "PersistentVolumeClaim".into(), "c-".into()),
                (4, "PersistentVolumeClaim".into(), "d".into()),
            ]
        );
    }

    #[test]
    fn what_is_not_a_kubernetes_object_is_an_error_naming_file_and_line() {
        let cases: [(&str, &[u8], &str); 7] = [
            (
                "notes.txt",
                b"just some words\n",
                "notes.txt:1: not a Kubernetes object (a string); every document needs apiVersion and kind",
            ),
            (
                "plain.yaml",
                b"apiVersion: v1\nkind: PersistentVolumeClaim\n---\nreplicas: 3\n",
                "plain.yaml:4: not a Kubernetes object (it has no kind); every document needs apiVersion and kind",
            ),
            (
                "noversion.yaml",
                b"kind: PersistentVolumeClaim\nmetadata: {name: a}\n",
                "noversion.yaml:1: not a Kubernetes object (kind PersistentVolumeClaim without apiVersion); every document needs apiVersion and kind",
            ),
            (
                "broken.yaml",
                b"apiVersion: v1\nkind: Pod\n---\napiVersion: v1\nkind: [unclosed\n",
                "broken.yaml:6: not valid YAML: did not find expected ',' or ']', while parsing a flow sequence",
            ),
            (
                "broken.json",
                b"{\"apiVersion\": \"v1\",\n \"kind\": }\n",
                "broken.json:2: not valid JSON: expected value",
            ),
            (
                "disk.img",
                b"\x7fELF\x02\x01\x01\x00\x00",
                "disk.img: binary content, not a YAML or JSON manifest; point -f at the rendered manifests",
            ),
            (
                "latin1.yaml",
                b"kind: Caf\xe9\n",
                "latin1.yaml: binary content, not a YAML or JSON manifest; point -f at the rendered manifests",
            ),
        ];
        for (file, bytes, expected) in cases {
            let error = parse(file, bytes).expect_err(file);
            assert_eq!(error.to_string(), expected, "{file}");
        }
    }

    #[test]
    fn directories_are_read_recursively_in_order_and_binary_files_refused() {
        let dir = std::env::temp_dir().join(format!("pcg-manifests-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("b/nested")).expect("dirs");
        fs::create_dir_all(dir.join(".git")).expect("dirs");
        let claim = |name: &str| {
            format!("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}}}\n")
        };
        fs::write(dir.join("a.yaml"), claim("a")).expect("write");
        fs::write(dir.join("b/nested/c.yml"), claim("c")).expect("write");
        fs::write(
            dir.join("b/d.JSON"),
            r#"{"apiVersion":"v1","kind":"Secret"}"#,
        )
        .expect("write");
        fs::write(dir.join("README.md"), "# not a manifest\n").expect("write");
        fs::write(dir.join(".git/index"), b"\0\0binary").expect("write");
        let input = read_paths(std::slice::from_ref(&dir)).expect("reads");
        let files: Vec<String> = input
            .documents
            .iter()
            .map(|d| {
                d.file
                    .strip_prefix(&dir.display().to_string())
                    .unwrap_or("?")
                    .to_owned()
            })
            .collect();
        assert_eq!(files, ["/a.yaml", "/b/d.JSON", "/b/nested/c.yml"]);
        assert_eq!(input.skipped, [dir.join("README.md").display().to_string()]);

        fs::write(dir.join("b/chart.tgz"), b"\x1f\x8b\x08\x00\x00").expect("write");
        let error = read_paths(std::slice::from_ref(&dir)).expect_err("binary");
        assert_eq!(
            error,
            ManifestError::Binary {
                file: dir.join("b/chart.tgz").display().to_string()
            }
        );
        let missing = read_paths(&[dir.join("nope.yaml")]).expect_err("missing");
        assert_eq!(
            missing.to_string(),
            format!(
                "{}: cannot read it: No such file or directory (os error 2)",
                dir.join("nope.yaml").display()
            )
        );
        let _ = fs::remove_dir_all(&dir);
    }
}
