//! The shape of the house, checked: no cycle between the library's top-level
//! modules nor between the files of one module (the restore executor and
//! its steps, say), and the layers stay in their order (config at the bottom, the
//! jobs layer above the parts, the CLI and the daemon above the jobs). A new
//! `use crate::…` that closes a loop fails here with the loop named.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The library's top-level modules, as `lib.rs` declares them.
fn library_modules() -> BTreeSet<String> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    lib.lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').trim().to_string())
        .collect()
}

/// The code of a file without comments and without its unit tests (tests may
/// reach anywhere).
fn code_of(text: &str) -> String {
    let body = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    body.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every top-level module a piece of code names through `crate::`.
fn referenced(code: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // use crate::{a::X, b, c::{..}}: the first name of each top-level item.
            let mut depth = 0;
            let mut item_start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_ascii_alphanumeric() || c == '_') => {
                        out.insert(ident(&group[j..]));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident(rest));
        }
    }
    out.retain(|m| modules.contains(m));
    out
}

fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let modules = library_modules();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(src()).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if !modules.contains(&top) {
            continue; // the binary's own files (main.rs, commands/) use `wpdr::`
        }
        let code = code_of(&std::fs::read_to_string(&f).unwrap());
        let entry = graph.entry(top.clone()).or_default();
        for m in referenced(&code, &modules) {
            if m != top {
                entry.insert(m);
            }
        }
    }
    graph
}

/// One cycle in the graph, if any, as `a -> b -> … -> a`.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(c) = visit(node, graph, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[test]
fn no_cycle_between_top_level_modules() {
    let graph = module_graph();
    if let Some(cycle) = find_cycle(&graph) {
        let edges: Vec<String> = graph
            .iter()
            .map(|(m, deps)| {
                format!(
                    "  {m} -> {}",
                    deps.iter().cloned().collect::<Vec<_>>().join(", ")
                )
            })
            .collect();
        panic!(
            "module cycle: {}\nthe graph:\n{}",
            cycle.join(" -> "),
            edges.join("\n")
        );
    }
}

/// Inside each module folder: which of its files (submodules) name which,
/// through `crate::<module>::<sub>` anywhere or `super::<sub>` in a file of
/// the folder itself. `mod.rs`, the folder's own namespace, is left out.
fn submodule_graphs() -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let mut out = BTreeMap::new();
    for top in library_modules() {
        let dir = src().join(&top);
        if !dir.is_dir() {
            continue;
        }
        let subs: BTreeSet<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| {
                let name = e.unwrap().file_name().to_string_lossy().to_string();
                name.trim_end_matches(".rs").to_string()
            })
            .filter(|n| n != "mod")
            .collect();
        let mut files = Vec::new();
        rust_files(&dir, &mut files);
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for f in files {
            let rel: Vec<String> = f
                .strip_prefix(&dir)
                .unwrap()
                .components()
                .map(|c| c.as_os_str().to_string_lossy().to_string())
                .collect();
            let me = rel[0].trim_end_matches(".rs").to_string();
            if me == "mod" {
                continue;
            }
            let code = code_of(&std::fs::read_to_string(&f).unwrap());
            // `crate::restore::steps` reads as `crate::steps` once the prefix is cut.
            let mut refs = referenced(&code.replace(&format!("crate::{top}::"), "crate::"), &subs);
            if rel.len() == 1 {
                refs.extend(referenced(&code.replace("super::", "crate::"), &subs));
            }
            let entry = graph.entry(me.clone()).or_default();
            for r in refs {
                if r != me {
                    entry.insert(r);
                }
            }
        }
        out.insert(top, graph);
    }
    out
}

#[test]
fn no_cycle_between_the_files_of_a_module() {
    for (top, graph) in submodule_graphs() {
        if let Some(cycle) = find_cycle(&graph) {
            panic!("cycle inside {top}/: {}", cycle.join(" -> "));
        }
    }
    // The restore executor and its steps meet only in the shared types.
    let restore = &submodule_graphs()["restore"];
    let steps = restore.get("steps").cloned().unwrap_or_default();
    assert!(
        !steps.contains("run"),
        "the steps must not reach into the executor: {steps:?}"
    );
    assert!(restore["run"].contains("steps") && restore["run"].contains("step"));
}

#[test]
fn layers_keep_their_order() {
    let graph = module_graph();
    let deps = |m: &str| graph.get(m).cloned().unwrap_or_default();
    let allowed = |m: &str, may: &[&str]| {
        let extra: Vec<String> = deps(m)
            .into_iter()
            .filter(|d| !may.contains(&d.as_str()))
            .collect();
        assert!(
            extra.is_empty(),
            "{m} imports {extra:?}, above its layer (it may use only {may:?})"
        );
    };
    // The ground floor.
    allowed("exit", &[]);
    allowed("secret", &[]);
    allowed("config", &["exit", "secret"]);
    allowed("trust", &["config", "exit", "secret"]);
    allowed("store", &["config", "exit", "secret", "trust"]);
    // Nothing below the jobs layer calls into it, the daemon or the CLI.
    for (m, d) in &graph {
        if ["jobs", "daemon", "cli", "fleet"].contains(&m.as_str()) {
            continue;
        }
        for top in ["jobs", "daemon", "cli", "fleet"] {
            assert!(
                !d.contains(top),
                "{m} imports {top}: the parts must not call the layers that drive them"
            );
        }
    }
}

#[test]
fn the_checker_sees_cycles_and_groups() {
    let modules: BTreeSet<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let refs = referenced(
        "use crate::{a::X, b::{Y, Z}};\nlet q = crate::c::f();",
        &modules,
    );
    assert_eq!(refs, modules);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    assert!(find_cycle(&g).is_none());
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(find_cycle(&g).unwrap(), vec!["a", "b", "c", "a"]);
    assert!(
        code_of("x // crate::b\n#[cfg(test)]\nmod tests { crate::c }")
            .find("crate::")
            .is_none()
    );
}
