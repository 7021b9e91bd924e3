{#- Sessions: a resolved user's page, screen and track activity, split where the user was
    inactive for more than `session_timeout_minutes`. -#}
with ordered as (
    select
        e.*,
        lag(event_at) over (partition by resolved_user_id order by event_at, event_id) as prev_at
    from {{ ref('events_resolved') }} as e
),

numbered as (
    select
        ordered.*,
        sum(
            case
                when prev_at is null
                    or datediff('second', prev_at, event_at) > {{ var('session_timeout_minutes') }} * 60
                    then 1
                else 0
            end
        ) over (
            partition by resolved_user_id order by event_at, event_id
            rows between unbounded preceding and current row
        ) as session_number
    from ordered
),

marked as (
    select
        numbered.*,
        row_number() over (
            partition by resolved_user_id, session_number
            order by case when call_type = 'page' then 0 else 1 end, event_at, event_id
        ) as page_first,
        row_number() over (
            partition by resolved_user_id, session_number
            order by case when call_type = 'page' then 0 else 1 end, event_at desc, event_id desc
        ) as page_last,
        row_number() over (
            partition by resolved_user_id, session_number
            order by case when utm_source is not null or utm_medium is not null
                or utm_campaign is not null then 0 else 1 end, event_at, event_id
        ) as utm_first,
        row_number() over (
            partition by resolved_user_id, session_number
            order by case when page_referrer is not null then 0 else 1 end, event_at, event_id
        ) as referrer_first
    from numbered
)

select
    md5(resolved_user_id || '|' || session_number::varchar) as session_id,
    resolved_user_id as user_id,
    session_number,
    min(event_at) as session_start,
    max(event_at) as session_end,
    datediff('second', min(event_at), max(event_at)) as duration_seconds,
    count(*) as event_count,
    sum(case when call_type = 'page' then 1 else 0 end) as page_views,
    sum(case when call_type = 'screen' then 1 else 0 end) as screen_views,
    sum(case when call_type = 'track' then 1 else 0 end) as track_events,
    max(case when page_first = 1 and call_type = 'page' then page_path end) as landing_page,
    max(case when page_last = 1 and call_type = 'page' then page_path end) as exit_page,
    max(case when utm_first = 1 then utm_source end) as utm_source,
    max(case when utm_first = 1 then utm_medium end) as utm_medium,
    max(case when utm_first = 1 then utm_campaign end) as utm_campaign,
    max(case when referrer_first = 1 then page_referrer end) as referrer,
    coalesce(
        max(case when utm_first = 1 then lower(utm_source) end),
        case when max(page_referrer) is not null then 'referral' end,
        'direct'
    ) as channel
from marked
group by resolved_user_id, session_number
