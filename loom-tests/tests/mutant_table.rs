//! mutants.sh's table against the library's mutant enum: every mutant has
//! a model that must kill it, and the table names no unknown mutant and no
//! missing model. (Not a loom model: a plain test, built with the suite.)
#![cfg(loom)]

use std::collections::BTreeSet;
use std::path::Path;

/// One row of mutants.sh: mutant, test binary, model, expected text, and
/// the directory of the binary's tests (loom's, or shuttle's for the
/// `SHUTTLE_MUTANTS` table).
struct Row {
    mutant: String,
    binary: String,
    model: String,
    tests: std::path::PathBuf,
}

/// Both tables' rows.
fn table() -> Vec<Row> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut rows = rows_of("\nMUTANTS=(", &dir.join("tests"));
    rows.extend(rows_of(
        "\nSHUTTLE_MUTANTS=(",
        &dir.join("../shuttle-tests/tests"),
    ));
    rows
}

/// The rows of the table that starts with `header`, whose models are in
/// `tests`.
fn rows_of(header: &str, tests: &Path) -> Vec<Row> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = std::fs::read_to_string(dir.join("mutants.sh")).expect("read mutants.sh");
    let start = script
        .find(header)
        .unwrap_or_else(|| panic!("mutants.sh has a {header:?} table"));
    let body = &script[start..script[start..].find("\n)").map(|e| start + e).unwrap()];
    body.lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix('"')?
                .strip_suffix('"')
                .map(str::to_owned)
        })
        .map(|l| {
            let mut f = l.split('|');
            let (mutant, model, expect) = (f.next().unwrap(), f.next(), f.next());
            let model = model.unwrap_or_else(|| panic!("row {l:?}: no model"));
            assert!(
                expect.is_some_and(|e| !e.is_empty()),
                "row {l:?}: no expected text"
            );
            let (binary, model) = model
                .split_once("::")
                .unwrap_or_else(|| panic!("row {l:?}: model is not binary::test"));
            Row {
                mutant: mutant.to_owned(),
                binary: binary.to_owned(),
                model: model.to_owned(),
                tests: tests.to_owned(),
            }
        })
        .collect()
}

#[test]
fn every_mutant_has_a_killing_model_and_every_row_a_mutant() {
    let rows = table();
    let known: BTreeSet<&str> = rcu_offload::model::mutants().into_iter().collect();
    let listed: BTreeSet<&str> = rows.iter().map(|r| r.mutant.as_str()).collect();
    let unlisted: Vec<_> = known.difference(&listed).collect();
    assert!(
        unlisted.is_empty(),
        "mutants with no model in mutants.sh: {unlisted:?}"
    );
    let unknown: Vec<_> = listed.difference(&known).collect();
    assert!(
        unknown.is_empty(),
        "mutants.sh names unknown mutants: {unknown:?}"
    );
}

#[test]
fn every_row_names_an_existing_model() {
    for r in table() {
        let file = r.tests.join(format!("{}.rs", r.binary));
        let src = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: model binary {}: {e}", r.mutant, file.display()));
        assert!(
            src.contains(&format!("fn {}()", r.model)),
            "{}: no model {} in {}",
            r.mutant,
            r.model,
            file.display()
        );
    }
}
