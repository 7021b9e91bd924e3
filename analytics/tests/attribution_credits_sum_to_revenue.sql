-- Under every attribution model, the credits of one conversion sum to its revenue.
select
    conversion_id,
    max(revenue) as revenue,
    sum(credit_first_touch) as first_touch,
    sum(credit_last_touch) as last_touch,
    sum(credit_linear) as linear,
    sum(credit_time_decay) as time_decay
from {{ ref('conversions_attributed') }}
group by conversion_id
having abs(sum(credit_first_touch) - max(revenue)) > 0.01
    or abs(sum(credit_last_touch) - max(revenue)) > 0.01
    or abs(sum(credit_linear) - max(revenue)) > 0.01
    or abs(sum(credit_time_decay) - max(revenue)) > 0.01
