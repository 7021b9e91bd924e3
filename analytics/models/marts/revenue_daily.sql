{#- Revenue and orders by day (of the conversion), channel (of the last session before it, the
    last-touch channel), signup cohort (week of the user's first `signup_event`, else of their
    first event), plan (the user's latest `plan` trait) and country (the conversion's
    context_location_country) where known; plus subscription starts and trial conversions. -#}
{% set users = source_relation('users') %}
{% set user_cols = source_columns(users) %}
with firsts as (
    select
        resolved_user_id as user_id,
        min(case when call_type = 'track' and event_name = '{{ var("signup_event") }}'
            then event_at end) as signed_up_at,
        min(event_at) as first_seen_at
    from {{ ref('events_resolved') }}
    group by resolved_user_id
),

conv as (
    select
        c.*,
        ca.channel
    from {{ ref('conversions') }} as c
    join {{ ref('conversions_attributed') }} as ca
        on ca.conversion_id = c.conversion_id and ca.touch_number = ca.touches
)

select
    conv.converted_at::date as day,
    conv.channel,
    date_trunc('week', coalesce(f.signed_up_at, f.first_seen_at))::date as signup_cohort,
    {% if 'plan' in user_cols %}u.plan::varchar{% else %}null::varchar{% endif %} as plan,
    conv.country,
    sum(case when conv.conversion_event = '{{ var("order_event") }}' then conv.revenue else 0 end)
        as order_revenue,
    sum(conv.revenue) as revenue,
    sum(case when conv.conversion_event = '{{ var("order_event") }}' then 1 else 0 end) as orders,
    sum(case when conv.conversion_event = '{{ var("subscription_event") }}' then 1 else 0 end)
        as subscription_starts,
    sum(case when conv.conversion_event = '{{ var("trial_conversion_event") }}' then 1 else 0 end)
        as trial_conversions
from conv
left join firsts as f on f.user_id = conv.user_id
{% if users is not none %}
left join {{ users }} as u on u.id = conv.user_id
{% endif %}
group by 1, 2, 3, 4, 5
