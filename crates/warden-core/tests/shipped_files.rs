//! Every task spec shipped in `examples/` parses and passes validation, so
//! that a shipped file never rots: `*.yaml` and `*.json` specs, and each line
//! of `*.jsonl` corpora (`{"task": …, "signals": …}`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use warden_core::TaskSpec;

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn every_example_spec_is_valid() {
    let mut all = Vec::new();
    files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples"), &mut all);
    let mut seen = 0;
    for path in all {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let text = std::fs::read_to_string(&path).unwrap();
        let origin = path.display().to_string();
        let specs: Vec<Result<TaskSpec, _>> = match ext {
            "yaml" | "yml" => vec![TaskSpec::from_yaml(&text, &origin)],
            "json" => vec![TaskSpec::from_json(&text, &origin)],
            "jsonl" => text
                .lines()
                .enumerate()
                .map(|(i, line)| {
                    let v: serde_json::Value = serde_json::from_str(line).unwrap();
                    TaskSpec::from_json(&v["task"].to_string(), &format!("{origin}:{}", i + 1))
                })
                .collect(),
            _ => continue,
        };
        for spec in specs {
            spec.and_then(TaskSpec::normalize).unwrap_or_else(|e| panic!("{e}"));
            seen += 1;
        }
    }
    assert!(seen >= 1003, "expected the example specs and the corpus, found {seen}");
}
