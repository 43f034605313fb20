//! Bounded replicated state: fat tenants fill `STATE_BYTES_MAX` and the next
//! one is refused with nothing changed; the charge `apply` keeps equals a
//! recount from a decoded snapshot (also when policy versions are evicted
//! and tenants shrink).

mod fixture;

use fixture::*;
use keel_kernel::command::Command;
use keel_kernel::limits::{DESCRIPTION_BYTES_MAX, ENABLED_ENGINES_PER_TENANT_MAX, NAME_BYTES_MAX, STATE_BYTES_MAX};
use keel_kernel::{KernelState, Rejection};
use std::collections::BTreeSet;

/// A tenant as large as the per-field limits allow (~260 KiB).
fn fat_tenant(tenant_id: &str) -> Command {
    let mut spec = tenant_spec(tenant_id, &"d".repeat(DESCRIPTION_BYTES_MAX));
    spec.enabled_engines = (0..ENABLED_ENGINES_PER_TENANT_MAX)
        .map(|index| name(&format!("{index:0>width$}", width = NAME_BYTES_MAX)))
        .collect::<BTreeSet<_>>();
    Command::CreateTenant { spec }
}

fn assert_recount(state: &KernelState) {
    let decoded = KernelState::decode_snapshot(&state.encode_snapshot()).expect("decodes");
    assert_eq!(decoded.charged_bytes(), state.charged_bytes(), "the charge kept by apply equals a recount");
    assert_eq!(&decoded, state);
}

#[test]
fn fat_tenants_fill_the_state_budget_and_the_next_is_refused_with_nothing_changed() {
    let mut state = KernelState::default();
    let mut revision = 0;
    let refused = loop {
        revision += 1;
        assert!(revision < 2_000, "the budget never filled");
        match state.apply(revision, &now(fat_tenant(&format!("t{revision}")))) {
            Ok(_) => {}
            Err(rejection) => break rejection,
        }
    };
    assert_eq!(label(&refused), "LIMIT_EXCEEDED STATE_BYTES_MAX");
    assert!(state.charged_bytes() <= STATE_BYTES_MAX);
    assert!(state.charged_bytes() > STATE_BYTES_MAX - 300 * 1024, "refused only when full");
    let digest = state.digest();
    assert!(state.apply(revision + 1, &now(fat_tenant("another"))).is_err());
    assert_eq!(state.digest(), digest, "a refused tenant changes nothing");
    assert_recount(&state);
    // Shrinking is always allowed, and frees room for a small tenant.
    let charged = state.charged_bytes();
    state.apply(revision + 2, &now(update_tenant("t1", "slim", None))).expect("a tenant may shrink");
    assert!(state.charged_bytes() < charged);
    state.apply(revision + 3, &now(create_tenant("small", "small"))).expect("room again");
}

#[test]
fn the_charge_follows_evicted_policy_versions_and_updated_tenants() {
    let mut state = KernelState::default();
    let mut revision = 0;
    let mut apply = |state: &mut KernelState, command: Command| {
        revision += 1;
        state.apply(revision, &now(command)).map(|_| ())
    };
    for version in 0..24 {
        let source = format!(
            "package keel.policy\n\ndecision := {{\"allow\": true, \"reason\": \"v{version}\"}}\n{}",
            "# padding\n".repeat(version * 10)
        );
        let command = Command::PutPolicy { name: name("main"), source, expected_version: None };
        apply(&mut state, command).expect("put");
        assert_recount(&state);
    }
    apply(&mut state, create_tenant("acme", "Acme")).expect("create");
    apply(&mut state, update_tenant("acme", &"A".repeat(1000), None)).expect("grow");
    assert_recount(&state);
    let refused: Result<(), Rejection> = apply(&mut state, create_tenant("acme", "again"));
    assert!(refused.is_err());
    assert_recount(&state);
}

#[test]
fn a_tenant_flood_stops_at_the_tenant_limit_with_nothing_changed() {
    use keel_kernel::limits::TENANTS_MAX;
    let mut state = KernelState::default();
    for index in 0..TENANTS_MAX {
        state.apply(index as u64 + 1, &now(create_tenant(&format!("t{index}"), "t"))).expect("under the limit");
    }
    let digest = state.digest();
    let refused =
        state.apply(TENANTS_MAX as u64 + 1, &now(create_tenant("one-more", "t"))).expect_err("over the limit");
    assert_eq!(label(&refused), "LIMIT_EXCEEDED TENANTS_MAX");
    assert_eq!(state.digest(), digest);
}
