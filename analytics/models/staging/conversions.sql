-- depends_on: {{ ref('events_resolved') }}
{#- Conversion events (var `conversion_events`) with their revenue (`revenue`, else `total`,
    else `value`; 0 when none) and resolved user, read from their per-event tables. -#}
{% set parts = [] %}
{% for ev in var('conversion_events') %}
  {% set rel = source_relation(event_table(ev)) %}
  {% if rel is not none %}{% do parts.append((ev, rel, source_columns(rel))) %}{% endif %}
{% endfor %}
{% if parts | length == 0 %}
select
    null::varchar as conversion_id, null::varchar as conversion_event,
    null::varchar as user_id, null::timestamp_tz as converted_at,
    null::number(38, 2) as revenue, null::varchar as country
where false
{% else %}
with raw as (
{% for ev, rel, cols in parts %}
    select
        c.id::varchar as conversion_id,
        '{{ ev | replace("'", "''") }}'::varchar as conversion_event,
        coalesce({{ first_column(cols, ['revenue', 'total', 'value'], 'number(38, 2)', 'c.') }}, 0)
            as revenue,
        {{ first_column(cols, ['context_location_country'], 'varchar', 'c.') }} as country
    from {{ rel }} as c
    where c.id is not null
    {{ 'union all' if not loop.last }}
{% endfor %}
)
select
    raw.conversion_id,
    raw.conversion_event,
    e.resolved_user_id as user_id,
    e.event_at as converted_at,
    raw.revenue,
    coalesce(raw.country, e.country) as country
from raw
join {{ ref('events_resolved') }} as e
    on e.event_id = raw.conversion_id and e.call_type = 'track'
{% endif %}
