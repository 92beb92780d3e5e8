//! Every task spec shipped in `examples/` parses and passes validation, so
//! that a shipped file never rots.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use warden_core::TaskSpec;

#[test]
fn every_example_spec_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let text = std::fs::read_to_string(&path).unwrap();
        let origin = path.display().to_string();
        let spec = match ext {
            "yaml" | "yml" => TaskSpec::from_yaml(&text, &origin),
            "json" => TaskSpec::from_json(&text, &origin),
            _ => continue,
        };
        spec.and_then(TaskSpec::normalize).unwrap_or_else(|e| panic!("{e}"));
        seen += 1;
    }
    assert!(seen >= 3, "expected the example specs, found {seen}");
}
