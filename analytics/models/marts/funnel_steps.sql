{#- The onboarding funnel (var `funnel`, track events in order): per step, the users who did it
    after doing every earlier step in order, and the drop-off from the step before. -#}
{% set steps = var('funnel') %}
with
{% for step in steps %}
step_{{ loop.index }} as (
    select e.resolved_user_id as user_id, min(e.event_at) as reached_at
    from {{ ref('events_resolved') }} as e
    {% if not loop.first %}
    join step_{{ loop.index - 1 }} as prev
        on prev.user_id = e.resolved_user_id and e.event_at >= prev.reached_at
    {% endif %}
    where e.call_type = 'track' and e.event_name = '{{ step | replace("'", "''") }}'
    group by e.resolved_user_id
),
{% endfor %}
counts as (
{% for step in steps %}
    select
        {{ loop.index }} as step_number,
        '{{ step | replace("'", "''") }}'::varchar as step,
        (select count(*) from step_{{ loop.index }}) as users
    {{ 'union all' if not loop.last }}
{% endfor %}
)
select
    step_number,
    step,
    users,
    lag(users) over (order by step_number) - users as dropped_off,
    case when lag(users) over (order by step_number) > 0
        then round(users / lag(users) over (order by step_number), 4) end as step_conversion_rate,
    case when first_value(users) over (order by step_number) > 0
        then round(users / first_value(users) over (order by step_number), 4) end
        as overall_conversion_rate
from counts
