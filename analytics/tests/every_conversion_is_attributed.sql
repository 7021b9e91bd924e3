-- Every conversion has at least one credited session (its own session at least).
select c.conversion_id
from {{ ref('conversions') }} as c
left join {{ ref('conversions_attributed') }} as a on a.conversion_id = c.conversion_id
where a.conversion_id is null
