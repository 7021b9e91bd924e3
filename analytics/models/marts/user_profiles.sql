{#- One row per resolved user: the latest traits (the `users` table, each trait as trait_<name>),
    first and last seen, how many identifiers identity_map links to the user, event counts, and
    the current (latest day's) health of the user's account. -#}
{% set users = source_relation('users') %}
{% set skip = ['id', 'received_at', 'uuid_ts', 'loaded_at', '_unmapped', '_segflow_load_id'] %}
{% set traits = [] %}
{% for c in source_columns(users) if c not in skip %}{% do traits.append(c) %}{% endfor %}
{% set im = source_relation('identity_map') %}
with activity as (
    select
        resolved_user_id as user_id,
        min(event_at) as first_seen_at,
        max(event_at) as last_seen_at,
        count(*) as events,
        sum(case when call_type = 'page' then 1 else 0 end) as page_views,
        sum(case when call_type = 'screen' then 1 else 0 end) as screen_views,
        sum(case when call_type = 'track' then 1 else 0 end) as track_events
    from {{ ref('events_resolved') }}
    group by resolved_user_id
),

{% if im is not none %}
identities as (
    select canonical_user_id as user_id, count(*) as identities_linked
    from {{ im }}
    group by canonical_user_id
),
{% endif %}

latest_health as (
    select account_id, health_score, at_risk
    from {{ ref('account_health') }}
    qualify row_number() over (partition by account_id order by day desc) = 1
)

select
    a.user_id,
    a.first_seen_at,
    a.last_seen_at,
    {% if im is not none %}coalesce(i.identities_linked, 0){% else %}0{% endif %}
        as identities_linked,
    a.events,
    a.page_views,
    a.screen_views,
    a.track_events,
    ua.account_id,
    h.health_score as account_health_score,
    h.at_risk as account_at_risk
    {%- for t in traits %},
    u.{{ t }} as trait_{{ t }}
    {%- endfor %}
from activity as a
{% if im is not none %}
left join identities as i on i.user_id = a.user_id
{% endif %}
left join {{ ref('user_accounts') }} as ua on ua.user_id = a.user_id
left join latest_health as h on h.account_id = ua.account_id
{% if users is not none %}
left join {{ users }} as u on u.id = a.user_id
{% endif %}
