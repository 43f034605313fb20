# Example policy combining the three others, in order: critical risk band
# denied, unknown or suspended tenants denied, data residency, then the
# tenant tier's limits.
package keel.policy

allowed_regions := {
	"billing": {"eu-west", "eu-central"},
	"search": {"eu-west", "us-east", "ap-south"},
}

tier_limits := {
	"basic": {"calls_per_minute": 60, "burst": 10, "max_duration_ms": 5000},
	"standard": {"calls_per_minute": 600, "burst": 100, "max_duration_ms": 30000},
	"enterprise": {"calls_per_minute": 6000, "burst": 1000, "max_duration_ms": 120000},
}

decision := {"allow": false, "reason": "critical risk band is denied"} if {
	input.risk_band == "critical"
} else := {"allow": false, "reason": "unknown tenant"} if {
	input.facts.tenant == null
} else := {"allow": false, "reason": "tenant is suspended"} if {
	input.facts.tenant.status != "active"
} else := {"allow": false, "reason": "the tenant's home region is not among the engine's allowed regions"} if {
	not input.facts.tenant.home_region in allowed_regions[input.engine]
} else := {"allow": true, "reason": concat(" ", [input.facts.tenant.tier, "tier"]), "limits": tier_limits[input.facts.tenant.tier]}
