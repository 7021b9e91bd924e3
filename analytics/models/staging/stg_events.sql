{#- Page, screen and track activity of the source, one row per event (append-only, so built
    incrementally: each run re-reads rows loaded within `incremental_lookback_minutes` of the
    newest row it has and replaces them by id). Rows the sources lost since (`segflow forget`)
    are removed after each incremental run. -#}
{{ config(
    materialized='incremental',
    unique_key='event_id',
    incremental_strategy='delete+insert',
    tmp_relation_type='transient',
    post_hook="{{ remove_forgotten_events() }}"
) }}

{% set tables = {'page': 'pages', 'screen': 'screens', 'track': 'tracks'} %}
{% set parts = [] %}
{% for call_type, table in tables.items() %}
  {% set rel = source_relation(table) %}
  {% if rel is not none %}{% do parts.append((call_type, rel, source_columns(rel))) %}{% endif %}
{% endfor %}

{% if parts | length == 0 %}
select
    null::varchar as event_id, null::varchar as call_type, null::varchar as event_name,
    null::varchar as anonymous_id, null::varchar as user_id, null::varchar as canonical_user_id,
    null::timestamp_tz as event_at, null::timestamp_tz as received_at,
    null::timestamp_tz as loaded_at, null::varchar as page_path, null::varchar as page_referrer,
    null::varchar as utm_source, null::varchar as utm_medium, null::varchar as utm_campaign,
    null::varchar as country
where false
{% else %}
{% for call_type, rel, cols in parts %}
select
    id::varchar as event_id,
    '{{ call_type }}' as call_type,
    {% if call_type == 'track' -%}
    {#- Segment's tracks: `event` is the slug, `event_text` the name as sent -#}
    {{ first_column(cols, ['event_text', 'event'], 'varchar') }} as event_name,
    {%- else -%}
    name::varchar as event_name,
    {%- endif %}
    anonymous_id::varchar as anonymous_id,
    user_id::varchar as user_id,
    {{ column_or_null(cols, 'canonical_user_id', 'varchar') }},
    "TIMESTAMP"::timestamp_tz as event_at,
    received_at::timestamp_tz as received_at,
    loaded_at::timestamp_tz as loaded_at,
    {{ first_column(cols, ['context_page_path', 'path'], 'varchar') }} as page_path,
    {{ first_column(cols, ['context_page_referrer', 'referrer'], 'varchar') }} as page_referrer,
    {{ first_column(cols, ['context_campaign_source'], 'varchar') }} as utm_source,
    {{ first_column(cols, ['context_campaign_medium'], 'varchar') }} as utm_medium,
    {{ first_column(cols, ['context_campaign_name'], 'varchar') }} as utm_campaign,
    {{ first_column(cols, ['context_location_country'], 'varchar') }} as country
from {{ rel }}
where id is not null
{% if is_incremental() %}
  and loaded_at >= (
    select dateadd('minute', -{{ var('incremental_lookback_minutes') }}, max(loaded_at))
    from {{ this }}
  )
{% endif %}
{{ 'union all' if not loop.last }}
{% endfor %}
{% endif %}
