-- The churn-risk audience: every user of an account whose latest health score is below the
-- at-risk threshold (account_health.at_risk), with the account's health as traits. Sent as
-- identify calls by `segflow reverse-etl` (see churn_risk.sh); only new or changed rows go out.
-- Reads the models of the `web` source: change web_analytics for another source.
select
    p.user_id,
    p.account_id,
    p.account_health_score,
    p.account_at_risk as churn_risk,
    h.recency_days as account_recency_days,
    h.active_seats as account_active_seats,
    h.day as account_health_day
from web_analytics.user_profiles as p
join web_analytics.account_health as h
    on h.account_id = p.account_id
qualify row_number() over (partition by p.user_id order by h.day desc) = 1
