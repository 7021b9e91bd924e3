{#- Reading the segflow layout of one source (var `source`): tables and columns may not exist yet
    (the sink creates a table on its first row, a column on its first value), so models ask. -#}

{% macro source_relation(table) %}
  {#- The relation of `table` in the source schema, or none when it does not exist (yet). -#}
  {% if not execute %}{{ return(none) }}{% endif %}
  {{ return(adapter.get_relation(database=target.database, schema=var('source'), identifier=table)) }}
{% endmacro %}

{% macro source_columns(relation) %}
  {#- Lower-case names of the columns of `relation` ([] for none). -#}
  {% if relation is none %}{{ return([]) }}{% endif %}
  {% set names = [] %}
  {% for col in adapter.get_columns_in_relation(relation) %}
    {% do names.append(col.name | lower) %}
  {% endfor %}
  {{ return(names) }}
{% endmacro %}

{% macro column_or_null(columns, name, type, alias=none, prefix='') %}
  {#- `name` when the table has it, else a typed NULL; named `alias` (default: `name`). -#}
  {%- if name in columns -%}
    {{ prefix }}{{ name }}::{{ type }} as {{ alias or name }}
  {%- else -%}
    null::{{ type }} as {{ alias or name }}
  {%- endif -%}
{% endmacro %}

{% macro first_column(columns, names, type, prefix='') %}
  {#- COALESCE of those of `names` the table has, as `type`; a typed NULL if none. -#}
  {%- set have = [] -%}
  {%- for n in names if n in columns -%}{% do have.append(prefix ~ n ~ '::' ~ type) %}{%- endfor -%}
  {%- if have | length == 0 -%}null::{{ type }}
  {%- elif have | length == 1 -%}{{ have[0] }}
  {%- else -%}coalesce({{ have | join(', ') }}){%- endif -%}
{% endmacro %}

{% macro event_table(event) %}
  {#- The per-event table of a track event, as the sink names it (schemas/naming.py:
      `Order Completed` -> `order_completed`; ordinary names only). -#}
  {{ return(modules.re.sub('[^a-z0-9]+', '_', event | lower).strip('_')) }}
{% endmacro %}

{% macro sql_list(values) %}
  {#- A SQL list of string literals: ('a', 'b'). -#}
  ({%- for v in values -%}'{{ v | replace("'", "''") }}'{{ ", " if not loop.last }}{%- endfor -%})
{% endmacro %}
