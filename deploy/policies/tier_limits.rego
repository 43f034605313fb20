# Example policy: limits by tenant tier. Active tenants are allowed with the
# limits of their tier; suspended and unknown tenants are denied.
package keel.policy

tier_limits := {
	"basic": {"calls_per_minute": 60, "burst": 10, "max_duration_ms": 5000},
	"standard": {"calls_per_minute": 600, "burst": 100, "max_duration_ms": 30000},
	"enterprise": {"calls_per_minute": 6000, "burst": 1000, "max_duration_ms": 120000},
}

default decision := {"allow": false, "reason": "unknown tenant"}

decision := {"allow": false, "reason": "tenant is suspended"} if {
	input.facts.tenant.status == "suspended"
}

decision := {"allow": true, "reason": concat(" ", [input.facts.tenant.tier, "tier"]), "limits": tier_limits[input.facts.tenant.tier]} if {
	input.facts.tenant.status == "active"
}
