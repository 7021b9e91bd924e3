{% macro remove_forgotten_events() %}
  {#- After an incremental run of stg_events: drop rows whose source row is gone (deleted by
      `segflow forget`), so a forgotten user leaves the models too. Only when the source has a
      deletion receipts table (no deletion ever ran: nothing to do). -#}
  {% if not is_incremental() or source_relation('_segflow_deletions') is none %}
    {{ return('select 1') }}
  {% endif %}
  {% set tables = {'page': 'pages', 'screen': 'screens', 'track': 'tracks'} %}
  {% for call_type, table in tables.items() %}
    {% set rel = source_relation(table) %}
    {% if rel is not none %}
      {% do run_query(
        "delete from " ~ this ~ " where call_type = '" ~ call_type ~ "' and event_id not in "
        ~ "(select id from " ~ rel ~ " where id is not null)") %}
    {% endif %}
  {% endfor %}
  {{ return('select 1') }}
{% endmacro %}
