{#- Each conversion credited to the sessions of its user that started within
    `attribution_lookback_days` before it (the session holding the conversion included), one
    row per conversion and session, under four models: first touch and last touch (all revenue
    to the earliest / latest session), linear (equal shares) and time decay (shares weighted
    0.5 ^ (age of the session in days / `time_decay_half_life_days`)). Each model's credits of
    one conversion sum to its revenue. -#}
with touches as (
    select
        c.conversion_id,
        c.conversion_event,
        c.user_id,
        c.converted_at,
        c.revenue,
        s.session_id,
        s.session_start,
        s.channel,
        s.utm_source,
        s.utm_medium,
        s.utm_campaign,
        row_number() over (
            partition by c.conversion_id order by s.session_start, s.session_id
        ) as touch_number,
        row_number() over (
            partition by c.conversion_id order by s.session_start desc, s.session_id desc
        ) as touch_from_last,
        count(*) over (partition by c.conversion_id) as touches,
        power(
            0.5,
            datediff('second', s.session_start, c.converted_at)
                / (86400.0 * {{ var('time_decay_half_life_days') }})
        ) as decay_weight
    from {{ ref('conversions') }} as c
    join {{ ref('sessions') }} as s
        on s.user_id = c.user_id
        and s.session_start <= c.converted_at
        and s.session_start >= dateadd('day', -{{ var('attribution_lookback_days') }}, c.converted_at)
)

select
    conversion_id,
    conversion_event,
    user_id,
    converted_at,
    revenue,
    session_id,
    session_start,
    channel,
    utm_source,
    utm_medium,
    utm_campaign,
    touch_number,
    touches,
    case when touch_number = 1 then revenue else 0 end as credit_first_touch,
    case when touch_from_last = 1 then revenue else 0 end as credit_last_touch,
    revenue / touches as credit_linear,
    revenue * decay_weight / sum(decay_weight) over (partition by conversion_id)
        as credit_time_decay
from touches
