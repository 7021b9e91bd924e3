{#- stg_events with each event's user resolved. Where the sink made the source's
    `identified_events` view, its `resolved_user_id` (the user identity_map resolves the event to
    today, through alias chains; see the README's identity section), else the anonymousId (a
    visitor never identified). Without the view (a warehouse loaded by an older sink): the user
    the processors stitched it to, else its userId, else the user identity_map links its
    anonymousId to, else the anonymousId. Rebuilt each run, as links arrive after the events
    they resolve. -#}
{% set ie = source_relation('identified_events') %}
{% set im = source_relation('identity_map') %}
select
    e.*,
    {% if ie is not none %}
    coalesce(v.resolved_user_id, e.anonymous_id)
    {% elif im is not none %}
    coalesce(e.canonical_user_id, e.user_id, im.canonical_user_id, e.anonymous_id)
    {% else %}
    coalesce(e.canonical_user_id, e.user_id, e.anonymous_id)
    {% endif %} as resolved_user_id,
    e.event_at::date as event_date
from {{ ref('stg_events') }} as e
{% if ie is not none %}
left join {{ ie }} as v
    on v.id = e.event_id
    and v.type = e.call_type
{% elif im is not none %}
left join {{ im }} as im
    on im.identifier = e.anonymous_id
    and im.identifier_type = 'anonymous_id'
{% endif %}
