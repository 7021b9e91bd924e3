{#- Each resolved user's account: the group of their latest group call. -#}
{% set groups = source_relation('groups') %}
{% if groups is none %}
select null::varchar as user_id, null::varchar as account_id where false
{% else %}
{% set im = source_relation('identity_map') %}
select
    {% if im is not none %}
    coalesce(g.canonical_user_id, g.user_id, im.canonical_user_id, g.anonymous_id)
    {% else %}
    coalesce(g.canonical_user_id, g.user_id, g.anonymous_id)
    {% endif %} as user_id,
    g.group_id::varchar as account_id
from {{ groups }} as g
{% if im is not none %}
left join {{ im }} as im
    on im.identifier = g.anonymous_id and im.identifier_type = 'anonymous_id'
{% endif %}
where g.group_id is not null
qualify row_number() over (
    partition by {% if im is not none %}coalesce(g.canonical_user_id, g.user_id, im.canonical_user_id, g.anonymous_id){% else %}coalesce(g.canonical_user_id, g.user_id, g.anonymous_id){% endif %}
    order by g."TIMESTAMP" desc, g.id desc
) = 1
{% endif %}
