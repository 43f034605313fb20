//! Dependencies and yanks.

use super::*;

// ---------------------------------------------------------------- dependencies and yanks

/// A manifest of `tier` depending on each (name, requirement).
fn manifest_depending(engine: &str, version: &str, tier: &str, dependencies: &[(&str, &str)]) -> Vec<u8> {
    let mut document = manifest_value(engine, version);
    document["tier"] = json!(tier);
    document["dependencies"] =
        json!(dependencies.iter().map(|(n, r)| json!({"name": n, "requirement": r})).collect::<Vec<_>>());
    json_bytes(&document)
}

/// Setup: trust and publisher, then each manifest published in order.
fn with_published(manifests: &[Vec<u8>]) -> Vec<Proposal> {
    let mut setup = trust_and_publisher();
    setup.extend(manifests.iter().map(|bytes| now(publish(bytes.clone(), PUBLISHER))));
    setup
}

pub(super) fn yank(engine: &str, version: &str) -> Command {
    Command::YankEngineVersion { engine: name(engine), version: version.parse().expect("fixture versions parse") }
}

pub(super) fn yanked(engine: &str, version: &str) -> EventKind {
    EventKind::EngineVersionYanked { engine: name(engine), version: version.to_owned() }
}

pub(super) fn version(text: &str) -> semver::Version {
    text.parse().expect("fixture versions parse")
}

#[test]
fn publish_resolves_each_dependency_to_the_highest_matching_version() {
    let setup = with_published(&[
        manifest_depending("base", "1.2.0", "core", &[]),
        manifest_depending("base", "1.4.1", "core", &[]),
        manifest_depending("base", "2.0.0", "core", &[]),
    ]);
    let Checked { state, result } = check(
        &setup,
        now(publish(manifest_depending("echo", "1.0.0", "standard", &[("base", "^1.2")]), PUBLISHER)),
        Expect::Events(vec![published("echo", "1.0.0")]),
    );
    let Outcome::EngineVersionPublished { version: record, .. } = applied(result).outcome else { panic!("outcome") };
    assert_eq!(record.resolved_dependencies, vec![(name("base"), version("1.4.1"))]);
    assert!(!record.is_yanked);
    let graph = state.registry().resolved_graph(&name("echo"), &version("1.0.0")).expect("published");
    assert_eq!(graph, vec![(name("echo"), version("1.0.0")), (name("base"), version("1.4.1"))]);
}

#[test]
fn publish_with_an_unresolvable_requirement_is_refused() {
    // Nothing published under the name, and nothing matching the requirement.
    check_publish(
        manifest_depending("echo", "1.0.0", "standard", &[("base", "^1")]),
        Expect::Rejected("DEPENDENCY_UNRESOLVABLE"),
    );
    let setup = with_published(&[manifest_depending("base", "2.0.0", "core", &[])]);
    let Checked { result, .. } = check(
        &setup,
        now(publish(manifest_depending("echo", "1.0.0", "standard", &[("base", "^1")]), PUBLISHER)),
        Expect::Rejected("DEPENDENCY_UNRESOLVABLE"),
    );
    assert_eq!(
        result.expect_err("rejected"),
        Rejection::DependencyUnresolvable { engine: "base".into(), requirement: "^1".into() }
    );
}

#[test]
fn publish_depending_on_a_less_trusted_tier_is_refused() {
    let setup = with_published(&[manifest_depending("base", "1.0.0", "experimental", &[])]);
    let Checked { result, .. } = check(
        &setup,
        now(publish(manifest_depending("echo", "1.0.0", "critical", &[("base", "^1")]), PUBLISHER)),
        Expect::Rejected("DEPENDENCY_TIER_VIOLATION"),
    );
    assert_eq!(
        result.expect_err("rejected"),
        Rejection::DependencyTierViolation {
            engine: "echo".into(),
            tier: "critical".into(),
            dependency: "base".into(),
            dependency_tier: "experimental".into(),
        }
    );
}

#[test]
fn publish_depending_on_the_same_or_a_more_trusted_tier_is_accepted() {
    let setup = with_published(&[
        manifest_depending("core-lib", "1.0.0", "core", &[]),
        manifest_depending("std-lib", "1.0.0", "standard", &[("core-lib", "^1")]),
    ]);
    check(
        &setup,
        now(publish(
            manifest_depending("echo", "1.0.0", "standard", &[("std-lib", "^1"), ("core-lib", "*")]),
            PUBLISHER,
        )),
        Expect::Events(vec![published("echo", "1.0.0")]),
    );
}

#[test]
fn publish_closing_a_cycle_over_engine_names_is_refused() {
    // a@1 has no dependencies, b@1 depends on a; a@2 depending on b would make a -> b -> a.
    let setup = with_published(&[
        manifest_depending("a", "1.0.0", "core", &[]),
        manifest_depending("b", "1.0.0", "core", &[("a", "^1")]),
    ]);
    let Checked { result, .. } = check(
        &setup,
        now(publish(manifest_depending("a", "2.0.0", "core", &[("b", "^1")]), PUBLISHER)),
        Expect::Rejected("DEPENDENCY_CYCLE"),
    );
    assert_eq!(
        result.expect_err("rejected"),
        Rejection::DependencyCycle { path: vec!["a".into(), "b".into(), "a".into()] }
    );
}

#[test]
fn a_yanked_version_is_not_resolvable_for_new_dependants() {
    let setup = {
        let mut setup = with_published(&[
            manifest_depending("base", "1.0.0", "core", &[]),
            manifest_depending("base", "1.1.0", "core", &[]),
        ]);
        setup.push(now(yank("base", "1.1.0")));
        setup
    };
    // The highest unyanked match is chosen...
    let Checked { result, .. } = check(
        &setup,
        now(publish(manifest_depending("echo", "1.0.0", "core", &[("base", "^1")]), PUBLISHER)),
        Expect::Events(vec![published("echo", "1.0.0")]),
    );
    let Outcome::EngineVersionPublished { version: record, .. } = applied(result).outcome else { panic!("outcome") };
    assert_eq!(record.resolved_dependencies, vec![(name("base"), version("1.0.0"))]);
    // ...and a requirement only the yanked version matches does not resolve.
    check(
        &setup,
        now(publish(manifest_depending("echo", "1.0.0", "core", &[("base", "=1.1.0")]), PUBLISHER)),
        Expect::Rejected("DEPENDENCY_UNRESOLVABLE"),
    );
}

#[test]
fn yank_marks_the_version_and_keeps_it_readable() {
    let setup = with_published(&[manifest_depending("base", "1.0.0", "core", &[])]);
    let Checked { state, result } =
        check(&setup, now(yank("base", "1.0.0")), Expect::Events(vec![yanked("base", "1.0.0")]));
    let Outcome::EngineVersionYanked { version: record, created } = applied(result).outcome else { panic!("outcome") };
    assert!(created && record.is_yanked);
    assert_eq!(state.registry().get(&name("base"), Some(&version("1.0.0"))), Some(&*record));
}

#[test]
fn yank_again_is_idempotent() {
    let mut setup = with_published(&[manifest_depending("base", "1.0.0", "core", &[])]);
    setup.push(now(yank("base", "1.0.0")));
    check(&setup, now(yank("base", "1.0.0")), Expect::NoChange);
}

#[test]
fn yank_of_an_unknown_version_is_refused() {
    let setup = with_published(&[manifest_depending("base", "1.0.0", "core", &[])]);
    check(&setup, now(yank("base", "1.0.1")), Expect::Rejected("ENGINE_VERSION_NOT_FOUND"));
    check(&setup, now(yank("other", "1.0.0")), Expect::Rejected("ENGINE_VERSION_NOT_FOUND"));
}

#[test]
fn dependants_are_transitive_and_include_yanked_versions() {
    let mut setup = with_published(&[
        manifest_depending("base", "1.0.0", "core", &[]),
        manifest_depending("mid", "1.0.0", "core", &[("base", "^1")]),
        manifest_depending("top", "1.0.0", "standard", &[("mid", "^1")]),
        manifest_depending("lone", "1.0.0", "standard", &[]),
    ]);
    setup.push(now(yank("top", "1.0.0")));
    let Checked { state, .. } = check(
        &setup,
        now(publish(manifest_depending("side", "1.0.0", "standard", &[("base", "^1")]), PUBLISHER)),
        Expect::Events(vec![published("side", "1.0.0")]),
    );
    let names = |list: &[&str]| list.iter().map(|n| name(n)).collect::<std::collections::BTreeSet<_>>();
    assert_eq!(state.registry().dependants(&name("base")), names(&["mid", "side", "top"]));
    assert_eq!(state.registry().dependants(&name("mid")), names(&["top"]));
    assert_eq!(state.registry().dependants(&name("lone")), names(&[]));
    let graph = state.registry().resolved_graph(&name("top"), &version("1.0.0")).expect("published");
    assert_eq!(
        graph,
        vec![(name("top"), version("1.0.0")), (name("base"), version("1.0.0")), (name("mid"), version("1.0.0"))]
    );
    assert_eq!(state.registry().resolved_graph(&name("top"), &version("9.0.0")), None);
}
