{#- stg_events with each event's user resolved: the user the processors stitched it to, else its
    userId, else the user identity_map links its anonymousId to (a link learnt after the event
    was loaded), else the anonymousId itself (a visitor never identified). Rebuilt each run, as
    links arrive after the events they resolve. -#}
{% set im = source_relation('identity_map') %}
select
    e.*,
    {% if im is not none %}
    coalesce(e.canonical_user_id, e.user_id, im.canonical_user_id, e.anonymous_id)
    {% else %}
    coalesce(e.canonical_user_id, e.user_id, e.anonymous_id)
    {% endif %} as resolved_user_id,
    e.event_at::date as event_date
from {{ ref('stg_events') }} as e
{% if im is not none %}
left join {{ im }} as im
    on im.identifier = e.anonymous_id
    and im.identifier_type = 'anonymous_id'
{% endif %}
