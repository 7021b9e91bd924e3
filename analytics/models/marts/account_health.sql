{#- Account health per account (group) and day, from the activity of the account's users (their
    latest group call), for every day on which the source has any activity from the account's
    first active day on. Over the `health_window_days` days ending on the day:
      recency   = max(0, 1 - days since the last activity / health_recency_horizon_days)
      frequency = min(1, events / health_frequency_target)
      breadth   = distinct features used / features known
      seats     = min(1, active users / health_seats_target)
      trend     = min(1, events / events of the window before / 2) (1 flat = 0.5; no events
                  before: 1 when active now, else 0)
    health_score = 100 * the `health_weights`-weighted mean of the five, rounded to 2 places;
    at_risk when the score is below `health_at_risk_below`. -#}
{% set w = var('health_weights') %}
{% set total = w.recency + w.frequency + w.breadth + w.seats + w.trend %}
{% set window = var('health_window_days') %}
with activity as (
    select
        ua.account_id,
        e.resolved_user_id as user_id,
        e.event_date,
        e.event_name,
        case when f.feature is not null then e.event_name end as feature
    from {{ ref('events_resolved') }} as e
    join {{ ref('user_accounts') }} as ua on ua.user_id = e.resolved_user_id
    left join {{ ref('features') }} as f
        on f.feature = e.event_name and e.call_type = 'track'
),

days as (
    select distinct event_date as day from {{ ref('events_resolved') }}
),

account_days as (
    select a.account_id, d.day
    from (select account_id, min(event_date) as first_day from activity group by account_id) as a
    join days as d on d.day >= a.first_day
),

measured as (
    select
        ad.account_id,
        ad.day,
        max(act.event_date) as last_active_day,
        sum(case when act.event_date > dateadd('day', -{{ window }}, ad.day) then 1 else 0 end)
            as events_in_window,
        sum(case when act.event_date <= dateadd('day', -{{ window }}, ad.day)
            and act.event_date > dateadd('day', -{{ 2 * window }}, ad.day) then 1 else 0 end)
            as events_prior_window,
        count(distinct case when act.event_date > dateadd('day', -{{ window }}, ad.day)
            then act.feature end) as features_used,
        count(distinct case when act.event_date > dateadd('day', -{{ window }}, ad.day)
            then act.user_id end) as active_seats
    from account_days as ad
    join activity as act on act.account_id = ad.account_id and act.event_date <= ad.day
    group by ad.account_id, ad.day
),

scored as (
    select
        m.*,
        datediff('day', m.last_active_day, m.day) as recency_days,
        greatest(0, 1 - datediff('day', m.last_active_day, m.day)
            / {{ var('health_recency_horizon_days') }}) as recency_score,
        least(1, m.events_in_window / {{ var('health_frequency_target') }}) as frequency_score,
        case when (select count(*) from {{ ref('features') }}) > 0
            then m.features_used / (select count(*) from {{ ref('features') }}) else 0 end
            as breadth_score,
        least(1, m.active_seats / {{ var('health_seats_target') }}) as seats_score,
        case
            when m.events_prior_window > 0
                then least(1, m.events_in_window / m.events_prior_window / 2)
            when m.events_in_window > 0 then 1
            else 0
        end as trend_score
    from measured as m
)

select
    account_id,
    day,
    last_active_day,
    recency_days,
    events_in_window,
    events_prior_window,
    features_used,
    active_seats,
    recency_score,
    frequency_score,
    breadth_score,
    seats_score,
    trend_score,
    round(100 * ({{ w.recency }} * recency_score + {{ w.frequency }} * frequency_score
        + {{ w.breadth }} * breadth_score + {{ w.seats }} * seats_score
        + {{ w.trend }} * trend_score) / {{ total }}, 2) as health_score,
    round(100 * ({{ w.recency }} * recency_score + {{ w.frequency }} * frequency_score
        + {{ w.breadth }} * breadth_score + {{ w.seats }} * seats_score
        + {{ w.trend }} * trend_score) / {{ total }}, 2) < {{ var('health_at_risk_below') }}
        as at_risk
from scored
