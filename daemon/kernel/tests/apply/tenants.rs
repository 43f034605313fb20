//! Tenants, and time from the leader's stamp.

use super::*;

// ---------------------------------------------------------------- tenants

#[test]
fn tenant_create_stores_it() {
    let Checked { state, result } = check(
        &[],
        now(create_tenant("acme", "Acme Corp")),
        Expect::Events(vec![EventKind::TenantCreated { tenant_id: name("acme") }]),
    );
    let Outcome::TenantWritten { tenant } = applied(result).outcome else { panic!("wrong outcome") };
    assert_eq!(tenant.spec, tenant_spec("acme", "Acme Corp"));
    assert_eq!((tenant.create_revision, tenant.update_revision, tenant.etag()), (1, 1, "r1".to_owned()));
    assert_eq!((tenant.create_time_ms, tenant.update_time_ms), (T0_MS, T0_MS));
    assert_eq!(state.tenants().get(&name("acme")), Some(&tenant));
}

#[test]
fn tenant_create_of_an_existing_id_is_refused() {
    let setup = [now(create_tenant("acme", "Acme Corp"))];
    check(&setup, now(create_tenant("acme", "Acme Corp")), Expect::Rejected("TENANT_ALREADY_EXISTS"));
    check(&setup, now(create_tenant("acme", "Other")), Expect::Rejected("TENANT_ALREADY_EXISTS"));
}

#[test]
fn tenant_create_with_an_empty_display_name_is_refused() {
    check(&[], now(create_tenant("acme", "")), Expect::Rejected("FIELD_REQUIRED tenant.display_name"));
}

#[test]
fn tenant_create_with_a_display_name_over_the_limit_is_refused() {
    let over = "n".repeat(DESCRIPTION_BYTES_MAX + 1);
    check(&[], now(create_tenant("acme", &over)), Expect::Rejected("LIMIT_EXCEEDED DESCRIPTION_BYTES_MAX"));
}

#[test]
fn tenant_create_with_too_many_enabled_engines_is_refused() {
    let mut spec = tenant_spec("acme", "Acme Corp");
    spec.enabled_engines = (0..=ENABLED_ENGINES_PER_TENANT_MAX).map(|i| name(&format!("e{i}"))).collect();
    check(&[], now(Command::CreateTenant { spec }), Expect::Rejected("LIMIT_EXCEEDED ENABLED_ENGINES_PER_TENANT_MAX"));
}

#[test]
fn tenant_update_replaces_its_fields() {
    let setup = [now(create_tenant("acme", "Acme Corp"))];
    let Checked { result, .. } = check(
        &setup,
        at(T0_MS + 7, update_tenant("acme", "Acme Inc", None)),
        Expect::Events(vec![EventKind::TenantUpdated { tenant_id: name("acme") }]),
    );
    let Outcome::TenantWritten { tenant } = applied(result).outcome else { panic!("wrong outcome") };
    assert_eq!(tenant.spec.display_name, "Acme Inc");
    assert_eq!((tenant.create_revision, tenant.update_revision, tenant.etag()), (1, 2, "r2".to_owned()));
    assert_eq!((tenant.create_time_ms, tenant.update_time_ms), (T0_MS, T0_MS + 7));
}

#[test]
fn tenant_update_of_a_missing_tenant_is_refused() {
    check(&[], now(update_tenant("acme", "Acme Corp", None)), Expect::Rejected("TENANT_NOT_FOUND"));
    let setup = [now(create_tenant("acme", "Acme Corp"))];
    check(&setup, now(update_tenant("other", "Other", None)), Expect::Rejected("TENANT_NOT_FOUND"));
}

#[test]
fn tenant_update_with_the_current_etag_applies() {
    let setup = [now(create_tenant("acme", "Acme Corp")), now(update_tenant("acme", "Acme Inc", None))];
    check(
        &setup,
        now(update_tenant("acme", "Acme Ltd", Some("r2"))),
        Expect::Events(vec![EventKind::TenantUpdated { tenant_id: name("acme") }]),
    );
}

#[test]
fn tenant_update_with_a_stale_etag_is_refused() {
    let setup = [now(create_tenant("acme", "Acme Corp")), now(update_tenant("acme", "Acme Inc", None))];
    for stale in ["r1", "r3", "", "2"] {
        check(&setup, now(update_tenant("acme", "Acme Ltd", Some(stale))), Expect::Rejected("ETAG_MISMATCH"));
    }
}

#[test]
fn tenant_update_with_an_empty_display_name_is_refused() {
    let setup = [now(create_tenant("acme", "Acme Corp"))];
    check(&setup, now(update_tenant("acme", "", Some("r1"))), Expect::Rejected("FIELD_REQUIRED tenant.display_name"));
}

// ---------------------------------------------------------------- leader time

#[test]
fn an_earlier_leader_time_uses_the_previous_time() {
    let setup = [at(T0_MS, create_tenant("acme", "Acme Corp"))];
    let Checked { state, result } = check(
        &setup,
        at(T0_MS - 60_000, create_tenant("globex", "Globex")),
        Expect::Events(vec![EventKind::TenantCreated { tenant_id: name("globex") }]),
    );
    let Outcome::TenantWritten { tenant } = applied(result).outcome else { panic!("wrong outcome") };
    assert_eq!(tenant.create_time_ms, T0_MS);
    assert_eq!(state.clock_ms(), T0_MS);
}

#[test]
fn a_later_leader_time_moves_the_clock() {
    let setup = [at(T0_MS, create_tenant("acme", "Acme Corp"))];
    let Checked { state, .. } = check(
        &setup,
        at(T0_MS + 1, create_tenant("globex", "Globex")),
        Expect::Events(vec![EventKind::TenantCreated { tenant_id: name("globex") }]),
    );
    assert_eq!(state.clock_ms(), T0_MS + 1);
}

#[test]
fn key_validity_is_judged_at_the_monotonic_time() {
    // The root expires at T0 + 10. The tenant entry moved the clock to T0 + 20,
    // so a later entry stamped T0 (a leader with a slow clock) still sees the
    // root as expired.
    let root = with_window(root_spec(ROOT), 0, Some(T0_MS + 10));
    let setup = [
        at(T0_MS, Command::BootstrapTrust { root_keys: vec![root], api_token_keys: vec![] }),
        at(T0_MS + 20, create_tenant("acme", "Acme")),
    ];
    check(&setup, at(T0_MS, add_key(publisher_spec(PUBLISHER), &[ROOT])), Expect::Rejected("KEY_EXPIRED"));
}

#[test]
fn rejected_and_idempotent_entries_do_not_move_the_clock() {
    let setup = [at(T0_MS, create_tenant("acme", "Acme Corp")), at(T0_MS, bootstrap(&[ROOT]))];
    let Checked { state, .. } =
        check(&setup, at(T0_MS + 5, create_tenant("acme", "Again")), Expect::Rejected("TENANT_ALREADY_EXISTS"));
    assert_eq!(state.clock_ms(), T0_MS);
    let Checked { state, .. } = check(&setup, at(T0_MS + 5, bootstrap(&[ROOT])), Expect::NoChange);
    assert_eq!(state.clock_ms(), T0_MS);
}
