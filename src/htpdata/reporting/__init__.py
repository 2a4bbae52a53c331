"""Usage, quota and traffic reports over the cache tiers.

- :mod:`.collect`: a :class:`Report` from the areas' summaries, quotas and daily traffic
  (folded from reader records by :mod:`htpdata.cache.fold`);
- :mod:`.render`: CSV, Prometheus text, self-contained HTML with SVG charts;
- :mod:`.quota`: setting limits (the tier's owner only).
"""

from .collect import BY, Report, build_report
from .quota import OperatorOnlyError, is_operator, set_quota
from .render import to_csv, to_html, to_prometheus

__all__ = ["BY", "OperatorOnlyError", "Report", "build_report", "is_operator", "set_quota",
           "to_csv", "to_html", "to_prometheus"]
