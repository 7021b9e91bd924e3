{#- Each resolved user's account: the group of their latest group call. The user is resolved as
    in events_resolved: through the source's `identified_events` view where the sink made it. -#}
{% set groups = source_relation('groups') %}
{% if groups is none %}
select null::varchar as user_id, null::varchar as account_id where false
{% else %}
{% set ie = source_relation('identified_events') %}
{% set im = source_relation('identity_map') %}
{% if ie is not none %}
  {% set user = 'coalesce(v.resolved_user_id, g.anonymous_id)' %}
{% elif im is not none %}
  {% set user = 'coalesce(g.canonical_user_id, g.user_id, im.canonical_user_id, g.anonymous_id)' %}
{% else %}
  {% set user = 'coalesce(g.canonical_user_id, g.user_id, g.anonymous_id)' %}
{% endif %}
select
    {{ user }} as user_id,
    g.group_id::varchar as account_id
from {{ groups }} as g
{% if ie is not none %}
left join {{ ie }} as v
    on v.id = g.id and v.type = 'group'
{% elif im is not none %}
left join {{ im }} as im
    on im.identifier = g.anonymous_id and im.identifier_type = 'anonymous_id'
{% endif %}
where g.group_id is not null
qualify row_number() over (
    partition by {{ user }}
    order by g."TIMESTAMP" desc, g.id desc
) = 1
{% endif %}
