{#- Each forget (or unsuppress) request of the source, with its receipt, one row per table rows
    were removed from (rows_removed 0 and table_name NULL for a receipt without tables). -#}
{% set deletions = source_relation('_segflow_deletions') %}
{% if deletions is none %}
select
    null::varchar as request_id, null::varchar as action, null::varchar as user_id,
    null::number as linked_identifiers, null::timestamp_tz as requested_at,
    null::timestamp_tz as completed_at, null::varchar as reason, null::varchar as table_name,
    null::number as rows_removed, null::number as rows_removed_total
where false
{% else %}
select
    d.request_id, d.action, d.user_id, d.linked_identifiers, d.requested_at, d.completed_at,
    d.reason, f.key::varchar as table_name, f.value::number as rows_removed,
    d.rows_deleted as rows_removed_total
from {{ deletions }} as d,
    lateral flatten(input => d.tables) as f
union all
select
    d.request_id, d.action, d.user_id, d.linked_identifiers, d.requested_at, d.completed_at,
    d.reason, null::varchar as table_name, 0 as rows_removed, d.rows_deleted as rows_removed_total
from {{ deletions }} as d
where d.tables is null or array_size(object_keys(d.tables)) = 0
{% endif %}
