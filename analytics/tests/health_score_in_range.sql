-- Health scores lie in 0-100 and the at-risk flag follows the threshold.
select account_id, day, health_score, at_risk
from {{ ref('account_health') }}
where health_score < 0 or health_score > 100
    or at_risk != (health_score < {{ var('health_at_risk_below') }})
