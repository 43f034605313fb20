# Example policy: calls in the critical risk band are denied; every other
# call is allowed, without limits.
package keel.policy

default decision := {"allow": true, "reason": "risk band accepted"}

decision := {"allow": false, "reason": "critical risk band is denied"} if {
	input.risk_band == "critical"
}
