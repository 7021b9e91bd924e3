{#- The feature events: the `features` var, or when it is empty every track event except
    conversions, the signup event and `non_feature_events`. -#}
{% set configured = var('features') %}
{% if configured | length > 0 %}
{% for f in configured %}
select '{{ f | replace("'", "''") }}'::varchar as feature{{ ' union all' if not loop.last }}
{% endfor %}
{% else %}
{% set excluded = var('conversion_events') + [var('signup_event')] + var('non_feature_events') %}
select distinct event_name::varchar as feature
from {{ ref('stg_events') }}
where call_type = 'track'
    and event_name is not null
    and event_name not in {{ sql_list(excluded) }}
{% endif %}
