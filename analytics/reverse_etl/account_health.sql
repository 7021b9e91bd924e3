-- Account health back into Segment as group traits: one group call per account with its
-- latest health (score 0-100, at-risk flag, recency, active seats, trend). Segment's group call
-- names a member, so each row carries one user of the account (the first by user id). Sent by
-- `segflow reverse-etl --reverse-etl-call group` (see account_health.sh); only new or changed
-- rows go out. Reads the models of the `web` source: change web_analytics for another source.
select
    h.account_id as group_id,
    m.user_id,
    h.health_score,
    h.at_risk,
    h.recency_days,
    h.active_seats,
    h.features_used,
    h.trend_score,
    h.day as health_day
from web_analytics.account_health as h
join (
    select account_id, min(user_id) as user_id
    from web_analytics.user_accounts
    group by account_id
) as m
    on m.account_id = h.account_id
qualify row_number() over (partition by h.account_id order by h.day desc) = 1
