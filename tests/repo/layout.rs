//! Facts about the code's shape that ARCHITECTURE.md states: the modules
//! of `src/` depend on each other in one direction only, and the HTTP
//! server cannot reach the pool or the datasource.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::support::root;

/// The top-level module a source file belongs to (`collectors/pg_x.rs` →
/// `collectors`), or `None` for the crate root and the binary.
fn module_of(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    (!matches!(name.as_str(), "lib" | "main")).then_some(name)
}

/// The text of a file without its `#[cfg(test)]` modules (tests may reach
/// across, production code may not) and without comments.
fn production_code(text: &str) -> String {
    let code = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    code.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Which top-level modules each module's production code names through
/// `crate::` paths or `use crate::{…}` lists.
fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let src = root().join("src");
    let mut modules: BTreeSet<String> = BTreeSet::new();
    let mut files = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(&src).unwrap().to_path_buf();
                if let Some(m) = module_of(&rel) {
                    modules.insert(m);
                }
                files.push((rel, path));
            }
        }
    }
    let mut deps: BTreeMap<String, BTreeSet<String>> = modules.iter().map(|m| (m.clone(), BTreeSet::new())).collect();
    for (rel, path) in files {
        let Some(from) = module_of(&rel) else { continue };
        let code = production_code(&std::fs::read_to_string(&path).unwrap());
        let mut named = BTreeSet::new();
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            if let Some(list) = rest.strip_prefix('{') {
                let list = &list[..list.find('}').unwrap_or(list.len())];
                named.extend(
                    list.split(',')
                        .map(|p| p.trim().split("::").next().unwrap_or("").to_string()),
                );
            } else {
                named.insert(
                    rest.split(|c: char| !c.is_alphanumeric() && c != '_')
                        .next()
                        .unwrap_or("")
                        .to_string(),
                );
            }
        }
        for to in named {
            if to != from && modules.contains(&to) {
                deps.get_mut(&from).unwrap().insert(to);
            }
        }
    }
    deps
}

/// A cycle in `deps`, if there is one.
fn cycle(deps: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        m: &str,
        deps: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == m) {
            let mut c = path[at..].to_vec();
            c.push(m.to_string());
            return Some(c);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_string());
        for to in &deps[m] {
            if let Some(c) = visit(to, deps, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    deps.keys().find_map(|m| visit(m, deps, &mut Vec::new(), &mut done))
}

#[test]
fn the_modules_depend_on_each_other_in_one_direction_only() {
    let deps = dependencies();
    // The checker sees the edges that exist: a few the layering relies on.
    for (from, to) in [
        ("db", "config"),
        ("collectors", "db"),
        ("scheduler", "collectors"),
        ("http", "state"),
    ] {
        assert!(deps[from].contains(to), "{from} → {to} not found: {deps:?}");
    }
    if let Some(c) = cycle(&deps) {
        panic!("import cycle among src/ modules: {}\n{deps:#?}", c.join(" → "));
    }
    // And it finds a cycle when there is one.
    let mut with_cycle = deps.clone();
    with_cycle.get_mut("config").unwrap().insert("http".into());
    assert!(cycle(&with_cycle).is_some());
}

#[test]
fn the_http_server_cannot_reach_the_pool_or_the_datasource() {
    let deps = dependencies();
    for m in ["http", "state", "health", "snapshot"] {
        assert!(!deps[m].contains("db"), "{m} uses db: {:?}", deps[m]);
        assert!(!deps[m].contains("app"), "{m} uses app: {:?}", deps[m]);
    }
    let http = std::fs::read_to_string(root().join("src/http.rs")).unwrap();
    for forbidden in ["Datasource", "Db", "Pool", "Config "] {
        assert!(
            !production_code(&http).contains(forbidden),
            "src/http.rs names {forbidden}"
        );
    }
}
