{#- Feature adoption and weekly retention cohorts: per feature and cohort week (the week of
    each user's first use; weeks start on Monday, Snowflake's default WEEK_START), the cohort's
    size, its average hours from signup (the user's first `signup_event`) to first use, and for
    each later week with activity how many of the cohort used the feature again. Week number 0
    is the adoption week itself: its retained_users equal its cohort_users. -#}
with uses as (
    select
        e.event_name as feature,
        e.resolved_user_id as user_id,
        e.event_at
    from {{ ref('events_resolved') }} as e
    join {{ ref('features') }} as f on f.feature = e.event_name
    where e.call_type = 'track'
),

first_use as (
    select
        feature,
        user_id,
        min(event_at) as first_used_at,
        date_trunc('week', min(event_at))::date as cohort_week
    from uses
    group by feature, user_id
),

signups as (
    select resolved_user_id as user_id, min(event_at) as signed_up_at
    from {{ ref('events_resolved') }}
    where call_type = 'track' and event_name = '{{ var("signup_event") }}'
    group by resolved_user_id
),

cohorts as (
    select
        fu.feature,
        fu.cohort_week,
        count(*) as cohort_users,
        round(avg(
            case when s.signed_up_at <= fu.first_used_at
                then datediff('second', s.signed_up_at, fu.first_used_at) / 3600.0 end
        ), 4) as avg_hours_signup_to_first_use
    from first_use as fu
    left join signups as s on s.user_id = fu.user_id
    group by fu.feature, fu.cohort_week
),

active_weeks as (
    select distinct
        u.feature,
        u.user_id,
        fu.cohort_week,
        date_trunc('week', u.event_at)::date as active_week
    from uses as u
    join first_use as fu on fu.feature = u.feature and fu.user_id = u.user_id
),

retention as (
    select
        feature,
        cohort_week,
        (datediff('day', cohort_week, active_week) / 7)::integer as week_number,
        count(*) as retained_users
    from active_weeks
    group by feature, cohort_week, (datediff('day', cohort_week, active_week) / 7)::integer
)

select
    c.feature,
    c.cohort_week,
    r.week_number,
    c.cohort_users,
    r.retained_users,
    round(r.retained_users / c.cohort_users, 4) as retention_rate,
    c.avg_hours_signup_to_first_use
from cohorts as c
join retention as r on r.feature = c.feature and r.cohort_week = c.cohort_week
