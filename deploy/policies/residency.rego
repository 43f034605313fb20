# Example policy: data residency. A call is allowed only when the tenant's
# home region (from its replicated record, input.facts.tenant) is among the
# regions the engine may process data in. Engines missing from the table run
# nowhere; unknown tenants are denied.
package keel.policy

# Allowed regions per engine. They live in the policy, so they are versioned
# and replicated with it (engine manifests carry no region field).
allowed_regions := {
	"billing": {"eu-west", "eu-central"},
	"search": {"eu-west", "us-east", "ap-south"},
}

default decision := {"allow": false, "reason": "the tenant's home region is not among the engine's allowed regions"}

decision := {"allow": false, "reason": "unknown tenant"} if {
	input.facts.tenant == null
}

decision := {"allow": true, "reason": "data stays in an allowed region"} if {
	input.facts.tenant.home_region in allowed_regions[input.engine]
}
